//! When a failed write or reconcile is tried again.

use std::time::Duration;

use crate::baseten::BasetenError;
use rand::Rng;

/// First retry delay after a transient failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);

/// Longest retry delay after repeated transient failures.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// How long to wait before trying a refused API key again: it rarely fixes itself, and
/// hammering Baseten with a bad key helps nobody. A change to the resource retries at once.
pub const UNAUTHORIZED_RETRY: Duration = Duration::from_secs(300);

/// How long to wait before trying a rejected request again.
pub const REJECTED_RETRY: Duration = Duration::from_secs(600);

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
    jittered_by(delay, rand::rng().random_range(0.0..=1.0))
}

/// `delay` plus the fraction `jitter` (0 to 1) of a tenth of it and 50 ms.
pub fn jittered_by(delay: Duration, jitter: f64) -> Duration {
    let spread = delay.as_millis() as u64 / 10 + 50;
    delay + Duration::from_millis((spread as f64 * jitter.clamp(0.0, 1.0)) as u64)
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
