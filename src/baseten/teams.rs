//! The teams of an API key, and the listing of them that the client keeps.

use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

/// How long a listing of teams answers lookups before a name it lacks lists them again.
pub const TEAMS_REFRESH_MIN: Duration = Duration::from_secs(30);

/// The teams of the key as last listed, and when.
pub(super) type TeamsListed = (Instant, Vec<TeamV1>);

/// A team as Baseten describes it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct TeamV1 {
    /// Stable id, used in team-scoped paths.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Whether this is the key's default team (where un-scoped writes go).
    #[serde(default)]
    pub default: bool,
}
