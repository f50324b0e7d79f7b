//! Whether Baseten needs a write, decided from the status alone.

use crate::crd::BasetenSecretStatus;

/// Whether Baseten needs a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Baseten already holds this name and value.
    UpToDate,
    /// Nothing was ever written.
    FirstWrite,
    /// The value or the Baseten name changed since the last write.
    Changed,
    /// A new force-sync token asks for a write.
    Forced,
    /// A drift check found the secret missing in Baseten, or recreated by someone else.
    Drifted,
}

/// Decides whether to write. `synced_hash` covers name and value; `force_token` is the
/// current force-sync annotation.
pub fn decide(
    status: Option<&BasetenSecretStatus>,
    baseten_name: &str,
    synced_hash: &str,
    force_token: Option<&str>,
) -> Decision {
    let Some(status) = status.filter(|s| s.synced_hash.is_some()) else {
        return Decision::FirstWrite;
    };
    if status.synced_hash.as_deref() != Some(synced_hash)
        || status.baseten_name.as_deref() != Some(baseten_name)
    {
        return Decision::Changed;
    }
    match force_token {
        Some(token) if !token.is_empty() && status.force_sync_token.as_deref() != Some(token) => {
            Decision::Forced
        }
        _ => Decision::UpToDate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(hash: &str, name: &str, token: Option<&str>) -> BasetenSecretStatus {
        BasetenSecretStatus {
            synced_hash: Some(hash.into()),
            baseten_name: Some(name.into()),
            force_sync_token: token.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn writes_only_when_something_changed() {
        assert_eq!(decide(None, "a", "h1", None), Decision::FirstWrite);
        let synced = status("h1", "a", None);
        assert_eq!(decide(Some(&synced), "a", "h1", None), Decision::UpToDate);
        assert_eq!(decide(Some(&synced), "a", "h2", None), Decision::Changed);
        assert_eq!(decide(Some(&synced), "b", "h1", None), Decision::Changed);
    }

    #[test]
    fn a_new_force_sync_token_writes_once() {
        let synced = status("h1", "a", None);
        assert_eq!(
            decide(Some(&synced), "a", "h1", Some("1")),
            Decision::Forced
        );
        let honoured = status("h1", "a", Some("1"));
        assert_eq!(
            decide(Some(&honoured), "a", "h1", Some("1")),
            Decision::UpToDate
        );
        assert_eq!(
            decide(Some(&honoured), "a", "h1", Some("2")),
            Decision::Forced
        );
        assert_eq!(
            decide(Some(&honoured), "a", "h1", Some("")),
            Decision::UpToDate
        );
    }
}
