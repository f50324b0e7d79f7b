//! When a failed write or reconcile is tried again.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::baseten::BasetenError;

/// First retry delay after a transient failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);

/// Longest retry delay after repeated transient failures.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// How long to wait before trying a refused API key again: it rarely fixes itself, and
/// hammering Baseten with a bad key helps nobody. A change to the resource retries at once.
pub const UNAUTHORIZED_RETRY: Duration = Duration::from_secs(300);

/// How long to wait before trying a rejected request again.
pub const REJECTED_RETRY: Duration = Duration::from_secs(600);

/// What a Baseten write attempted. Any change to these makes it a new write that goes
/// ahead at once, even while the previous one waits for its retry time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// Synced hash of name, value and API key.
    pub synced_hash: String,
    /// The resource's generation.
    pub generation: i64,
    /// The force-sync token asked for.
    pub force_token: Option<String>,
}

/// A failed Baseten write waiting for its retry time.
#[derive(Clone, Debug)]
pub struct Retry {
    /// The same write is not tried before this instant.
    pub not_before: Instant,
    /// What was attempted.
    pub attempt: Attempt,
    /// Consecutive failures of this object's writes.
    pub failures: u32,
}

impl Retry {
    /// Time left until the retry may happen (zero when it may happen now).
    pub fn left(&self) -> Duration {
        self.not_before.saturating_duration_since(Instant::now())
    }
}

/// How long to wait after the `failures`-th consecutive failure of a write.
pub fn retry_delay(error: &BasetenError, failures: u32) -> Duration {
    match error {
        BasetenError::Unauthorized { .. } => UNAUTHORIZED_RETRY,
        BasetenError::Rejected { .. } => REJECTED_RETRY,
        BasetenError::RateLimited {
            retry_after: Some(after),
        } => *after,
        _ => backoff(failures),
    }
}

/// Adds up to 10% random delay, so that many resources do not retry in lockstep.
pub fn jittered(delay: Duration) -> Duration {
    let spread = delay.as_millis() as u64 / 10 + 50;
    delay + Duration::from_millis(rand::rng().random_range(0..=spread))
}

/// Exponential backoff for the `failures`-th consecutive failure (1-based), capped.
pub fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1 << exponent).min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_follow_the_kind_of_failure() {
        let throttled = BasetenError::RateLimited {
            retry_after: Some(Duration::from_secs(37)),
        };
        assert_eq!(retry_delay(&throttled, 5), Duration::from_secs(37));
        let unknown = BasetenError::RateLimited { retry_after: None };
        assert_eq!(retry_delay(&unknown, 3), Duration::from_secs(4));
        assert_eq!(
            retry_delay(&BasetenError::Unavailable { status: 502 }, 2),
            Duration::from_secs(2)
        );
        assert_eq!(
            retry_delay(&BasetenError::Unauthorized { status: 401 }, 1),
            UNAUTHORIZED_RETRY
        );
        assert_eq!(
            retry_delay(
                &BasetenError::Rejected {
                    status: 400,
                    code: None
                },
                1
            ),
            REJECTED_RETRY
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(40), BACKOFF_MAX);
        let delay = jittered(Duration::from_secs(10));
        assert!(delay >= Duration::from_secs(10) && delay <= Duration::from_millis(11_050));
    }
}
