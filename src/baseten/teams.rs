//! The teams of an API key, and the cache of their listing that the client's team lookups
//! read. The cache is plain data: the client lists the teams and stores them here, so this
//! file needs nothing of the client.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

/// How long a listing of teams answers lookups before a name it lacks lists them again.
pub const TEAMS_REFRESH_MIN: Duration = Duration::from_secs(30);

/// The teams of the key as last listed, and when.
type TeamsListed = (Instant, Vec<TeamV1>);

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

/// The last listing of a key's teams, shared by the clones of one client.
#[derive(Debug, Default)]
pub(super) struct TeamCache {
    listed: Mutex<Option<TeamsListed>>,
}

/// What the cache says about a wanted team.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Cached {
    /// The last listing has it.
    Found(TeamV1),
    /// A listing younger than [`TEAMS_REFRESH_MIN`] lacks it: there is no such team for now.
    Missing,
    /// Nothing listed yet, or a listing old enough to list again.
    Stale,
}

impl TeamCache {
    fn listed(&self) -> MutexGuard<'_, Option<TeamsListed>> {
        self.listed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Looks `wanted` up in the last listing. One lock covers both the lookup and the age,
    /// so a listing stored meanwhile cannot answer one and not the other.
    pub(super) fn lookup(&self, wanted: Option<&str>) -> Cached {
        let listed = self.listed();
        let Some((at, teams)) = listed.as_ref() else {
            return Cached::Stale;
        };
        if let Some(team) = find(teams, wanted) {
            Cached::Found(team)
        } else if at.elapsed() < TEAMS_REFRESH_MIN {
            Cached::Missing
        } else {
            Cached::Stale
        }
    }

    /// Keeps `teams`, listed just now, in place of the last listing.
    pub(super) fn store(&self, teams: Vec<TeamV1>) {
        *self.listed() = Some((Instant::now(), teams));
    }
}

/// The team of `teams` that `wanted` names (by id or name), or the default team for `None`.
pub(super) fn find(teams: &[TeamV1], wanted: Option<&str>) -> Option<TeamV1> {
    teams
        .iter()
        .find(|t| match wanted {
            Some(w) => t.id == w || t.name == w,
            None => t.default,
        })
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn team(id: &str, name: &str, default: bool) -> TeamV1 {
        TeamV1 {
            id: id.to_string(),
            name: name.to_string(),
            default,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_name_the_listing_lacks_lists_again_only_once_it_is_old() {
        let cache = TeamCache::default();
        assert_eq!(cache.lookup(None), Cached::Stale);
        cache.store(vec![team("t1", "ml", true), team("t2", "infra", false)]);
        assert_eq!(cache.lookup(None), Cached::Found(team("t1", "ml", true)));
        assert_eq!(
            cache.lookup(Some("t2")),
            Cached::Found(team("t2", "infra", false))
        );
        assert_eq!(
            cache.lookup(Some("infra")),
            Cached::Found(team("t2", "infra", false))
        );
        assert_eq!(cache.lookup(Some("typo")), Cached::Missing);
        tokio::time::advance(TEAMS_REFRESH_MIN).await;
        assert_eq!(cache.lookup(Some("typo")), Cached::Stale);
        assert_eq!(
            cache.lookup(Some("ml")),
            Cached::Found(team("t1", "ml", true))
        );
    }
}
