//! The Ready condition's reasons and the pure computation of the next status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::baseten::{BasetenError, SecretV1};
use crate::crd::{BasetenSecretStatus, PendingDeletion};

/// The condition type this operator maintains.
pub const READY: &str = "Ready";

/// Longest Ready message written, in bytes: enough for every message the operator writes;
/// anything built from user data (a Secret's key names) is cut there.
pub const CONDITION_MESSAGE_MAX_BYTES: usize = 1024;

/// `text` cut to at most `max` bytes on a character boundary, ending in "…" when cut.
pub fn truncated(text: &str, max: usize) -> String {
    const MARK: &str = "…";
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub(MARK.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &text[..end])
}

/// Why the Ready condition is what it is. The names are a fixed PascalCase API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Baseten holds the current value.
    Synced,
    /// The referenced Secret does not exist.
    SecretNotFound,
    /// The Secret has no such key.
    KeyNotFound,
    /// The value is not UTF-8 text, which Baseten cannot store.
    InvalidValue,
    /// Baseten refused the API key (401/403).
    Unauthorized,
    /// Baseten rejected the request (another 4xx).
    BasetenRejected,
    /// Baseten answered 5xx or could not be reached.
    BasetenUnavailable,
    /// Baseten throttled the request (429).
    RateLimited,
    /// spec.suspend is true.
    Suspended,
    /// An older resource targets the same Baseten secret; this one writes nothing.
    Conflict,
    /// spec.team names no team the API key can see.
    TeamNotFound,
    /// The Secret lacks the labels `--secret-label-selector` requires; it is not read.
    SecretNotAllowed,
    /// spec.apiKeyRef names a Secret or key that does not exist or holds no usable key.
    ApiKeyNotFound,
    /// `updatePolicy: IfNotExists` and the name exists in Baseten, written by someone else.
    AlreadyExists,
    /// The resource is being deleted and its Baseten secret is being deleted.
    Deleting,
    /// The resource is being deleted, but its Baseten secret cannot be deleted.
    DeletionBlocked,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Reason; 16] = [
        Self::Synced,
        Self::SecretNotFound,
        Self::KeyNotFound,
        Self::InvalidValue,
        Self::Unauthorized,
        Self::BasetenRejected,
        Self::BasetenUnavailable,
        Self::RateLimited,
        Self::Suspended,
        Self::Conflict,
        Self::TeamNotFound,
        Self::ApiKeyNotFound,
        Self::SecretNotAllowed,
        Self::AlreadyExists,
        Self::Deleting,
        Self::DeletionBlocked,
    ];

    /// The reason as written to the condition.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Synced => "Synced",
            Self::SecretNotFound => "SecretNotFound",
            Self::KeyNotFound => "KeyNotFound",
            Self::InvalidValue => "InvalidValue",
            Self::Unauthorized => "Unauthorized",
            Self::BasetenRejected => "BasetenRejected",
            Self::BasetenUnavailable => "BasetenUnavailable",
            Self::RateLimited => "RateLimited",
            Self::Suspended => "Suspended",
            Self::Conflict => "Conflict",
            Self::TeamNotFound => "TeamNotFound",
            Self::ApiKeyNotFound => "ApiKeyNotFound",
            Self::SecretNotAllowed => "SecretNotAllowed",
            Self::AlreadyExists => "AlreadyExists",
            Self::Deleting => "Deleting",
            Self::DeletionBlocked => "DeletionBlocked",
        }
    }

    /// Whether Ready is True under this reason: the secret is in Baseten as asked.
    pub fn is_ready(self) -> bool {
        matches!(self, Self::Synced | Self::AlreadyExists)
    }

    /// The reason a failed Baseten call is reported under.
    pub fn of_baseten_error(error: &BasetenError) -> Self {
        match error {
            BasetenError::Unauthorized { .. } => Self::Unauthorized,
            BasetenError::Rejected { .. } => Self::BasetenRejected,
            BasetenError::RateLimited { .. } => Self::RateLimited,
            BasetenError::TeamNotFound(_) => Self::TeamNotFound,
            BasetenError::Unavailable { .. } | BasetenError::Transport(_) => {
                Self::BasetenUnavailable
            }
        }
    }
}

/// What one reconcile found: the Ready reason, a message for people, and Baseten's answer
/// when a write happened.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The Ready reason.
    pub reason: Reason,
    /// A message that says what to do; never contains a value.
    pub message: String,
    /// The write that happened, with the hash and Baseten name it wrote.
    pub written: Option<Written>,
    /// The force-sync token honoured by this reconcile, if any.
    pub force_sync_token: Option<String>,
    /// A Baseten secret found under the name and left alone (`updatePolicy: IfNotExists`).
    pub found: Option<SecretV1>,
    /// The Baseten secrets still to be deleted after this reconcile, when it retried or
    /// added any; none leaves the list as it was.
    pub pending: Option<Vec<PendingDeletion>>,
}

/// A successful upsert.
#[derive(Clone, Debug, PartialEq)]
pub struct Written {
    /// Baseten's answer.
    pub secret: SecretV1,
    /// The Baseten name written.
    pub baseten_name: String,
    /// Keyed hash of name and value written.
    pub synced_hash: String,
}

/// The next status from the current one: fields of the last write are kept unless a new write
/// replaces them; lastTransitionTime moves only when the condition's status flips. Times are
/// in whole seconds, as the apiserver stores them, so the status written compares equal to
/// the one the watch brings back.
pub fn next_status(
    current: &BasetenSecretStatus,
    generation: Option<i64>,
    outcome: &Outcome,
    now: Timestamp,
) -> BasetenSecretStatus {
    let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let mut next = current.clone();
    next.observed_generation = generation;
    if let Some(written) = &outcome.written {
        next.baseten_name = Some(written.baseten_name.clone());
        next.secret_id = written.secret.id.clone();
        next.team_name = written.secret.team_name.clone();
        next.created_at = Some(written.secret.created_at.clone());
        next.last_sync_time = Some(Time(now));
        next.synced_hash = Some(written.synced_hash.clone());
    }
    if let Some(found) = &outcome.found {
        next.baseten_name = Some(found.name.clone());
        next.secret_id = found.id.clone();
        next.team_name = found.team_name.clone();
        next.created_at = Some(found.created_at.clone());
    }
    if let Some(pending) = &outcome.pending {
        next.pending_deletions = pending.clone();
    }
    if let Some(token) = &outcome.force_sync_token {
        next.force_sync_token = Some(token.clone());
    }
    let status = if outcome.reason.is_ready() {
        "True"
    } else {
        "False"
    };
    let previous = current.conditions.iter().find(|c| c.type_ == READY);
    let last_transition_time = match previous {
        Some(previous) if previous.status == status => previous.last_transition_time.clone(),
        _ => Time(now),
    };
    let ready = Condition {
        type_: READY.to_string(),
        status: status.to_string(),
        reason: outcome.reason.as_str().to_string(),
        message: truncated(&outcome.message, CONDITION_MESSAGE_MAX_BYTES),
        observed_generation: generation,
        last_transition_time,
    };
    next.conditions.retain(|c| c.type_ != READY);
    next.conditions.push(ready);
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(reason: Reason) -> Outcome {
        Outcome {
            reason,
            message: "m".into(),
            written: None,
            force_sync_token: None,
            found: None,
            pending: None,
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    #[test]
    fn a_long_message_is_cut_on_a_character_boundary_and_marked() {
        assert_eq!(truncated("short", 1024), "short");
        let mut long = outcome(Reason::KeyNotFound);
        long.message = format!("a{}", "é".repeat(2000));
        let status = next_status(&BasetenSecretStatus::default(), Some(1), &long, at(1));
        let message = &status.conditions[0].message;
        assert!(
            message.len() <= CONDITION_MESSAGE_MAX_BYTES,
            "{}",
            message.len()
        );
        assert!(message.len() >= CONDITION_MESSAGE_MAX_BYTES - 4);
        assert!(message.starts_with("aé") && message.ends_with('…'));
    }

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let empty = BasetenSecretStatus::default();
        let missing = next_status(&empty, Some(1), &outcome(Reason::SecretNotFound), at(10));
        let ready = |s: &BasetenSecretStatus| s.conditions[0].clone();
        assert_eq!(ready(&missing).last_transition_time, Time(at(10)));
        // Another False reason keeps the time.
        let no_key = next_status(&missing, Some(1), &outcome(Reason::KeyNotFound), at(20));
        assert_eq!(ready(&no_key).last_transition_time, Time(at(10)));
        assert_eq!(ready(&no_key).reason, "KeyNotFound");
        // Flipping to True moves it.
        let synced = next_status(&no_key, Some(1), &outcome(Reason::Synced), at(30));
        assert_eq!(ready(&synced).last_transition_time, Time(at(30)));
        assert_eq!(ready(&synced).status, "True");
    }

    #[test]
    fn the_same_outcome_gives_the_same_status() {
        let first = next_status(
            &BasetenSecretStatus::default(),
            Some(2),
            &outcome(Reason::Synced),
            at(10),
        );
        let again = next_status(&first, Some(2), &outcome(Reason::Synced), at(99));
        assert_eq!(
            first, again,
            "a no-op reconcile changes nothing, not even a timestamp"
        );
    }

    #[test]
    fn failures_keep_what_was_last_written() {
        let written = Outcome {
            written: Some(Written {
                secret: SecretV1 {
                    name: "a".into(),
                    created_at: "2026-01-01T00:00:00Z".into(),
                    id: Some("id1".into()),
                    team_name: Some("Default Team".into()),
                },
                baseten_name: "a".into(),
                synced_hash: "hmac-sha256:00".into(),
            }),
            ..outcome(Reason::Synced)
        };
        let synced = next_status(&BasetenSecretStatus::default(), Some(1), &written, at(10));
        let failed = next_status(
            &synced,
            Some(1),
            &outcome(Reason::BasetenUnavailable),
            at(20),
        );
        assert_eq!(failed.secret_id.as_deref(), Some("id1"));
        assert_eq!(failed.created_at.as_deref(), Some("2026-01-01T00:00:00Z"));
        assert_eq!(failed.last_sync_time, Some(Time(at(10))));
        assert_eq!(failed.synced_hash.as_deref(), Some("hmac-sha256:00"));
        assert_eq!(failed.conditions.len(), 1);
    }

    #[test]
    fn a_written_status_equals_what_the_apiserver_sends_back() {
        // The operator keeps the status it wrote until the watch shows it; with sub-second
        // times the two never compared equal and every written status stayed in memory.
        let written = Outcome {
            written: Some(Written {
                secret: SecretV1 {
                    name: "a".into(),
                    created_at: "2026-01-01T00:00:00Z".into(),
                    id: None,
                    team_name: None,
                },
                baseten_name: "a".into(),
                synced_hash: "hmac-sha256:00".into(),
            }),
            ..outcome(Reason::Synced)
        };
        let now =
            Timestamp::from_second(1_800_000_000).unwrap() + std::time::Duration::from_millis(987);
        let next = next_status(&BasetenSecretStatus::default(), Some(1), &written, now);
        let echoed: BasetenSecretStatus =
            serde_json::from_value(serde_json::to_value(&next).unwrap()).unwrap();
        assert_eq!(echoed, next);
    }
}
