//! Why a Baseten call failed, read from an answer's status, a few documented body fields and
//! the Retry-After header; nothing of a body or a value reaches a message.

use std::time::Duration;

use reqwest::header::RETRY_AFTER;
use serde::Deserialize;

/// The longest wait a 429 can ask for. A larger (or absurd) `retry_after` is cut to this, so
/// that a proxy's typo cannot park a resource for days or overflow a timer.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Why a Baseten call failed. Messages name the status or the cause, never a body or a value.
#[derive(Debug, thiserror::Error)]
pub enum BasetenError {
    /// The API key was refused (401) or lacks the permission (403).
    #[error("Baseten refused the API key (HTTP {status})")]
    Unauthorized {
        /// 401 or 403.
        status: u16,
    },
    /// Baseten rejected the request (another 4xx); retrying the same request will not help.
    #[error("Baseten rejected the request (HTTP {status}{})", code.as_deref().map(|c| format!(", {c}")).unwrap_or_default())]
    Rejected {
        /// The status code.
        status: u16,
        /// Baseten's UPPER_SNAKE error code, when it sent one.
        code: Option<String>,
    },
    /// Baseten throttled the request (429).
    #[error("Baseten rate limit exceeded{}", retry_after.map(|d| format!("; retry after {}s", d.as_secs())).unwrap_or_default())]
    RateLimited {
        /// How long Baseten asked to wait, from the body or the Retry-After header.
        retry_after: Option<Duration>,
    },
    /// Baseten answered with a server error (5xx).
    #[error("Baseten is unavailable (HTTP {status})")]
    Unavailable {
        /// The status code.
        status: u16,
    },
    /// The request did not complete: connection refused or dropped, timeout, bad answer.
    #[error("Baseten could not be reached: {0}")]
    Transport(&'static str),
    /// A secret's team is not among the teams the key can see (renamed, deleted, or a
    /// listing that lags): its secret cannot be found to be deleted.
    #[error("Baseten team {0:?} is not among the teams this API key can see")]
    TeamNotFound(String),
}

impl BasetenError {
    /// Whether retrying later can succeed without any change by the user.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. } | Self::Unavailable { .. } | Self::Transport(_)
        )
    }
}

/// Classifies a reqwest failure by kind only: its text may contain a URL, never a value,
/// but a fixed phrase keeps every message bounded and predictable.
pub(super) fn transport(error: &reqwest::Error) -> BasetenError {
    BasetenError::Transport(if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_decode() {
        "the answer was not the expected JSON"
    } else if error.is_body() {
        "the connection dropped while reading the answer"
    } else {
        "the request failed"
    })
}

#[derive(Deserialize)]
struct ErrorBody {
    code: Option<String>,
}

#[derive(Deserialize)]
struct RateLimitBody {
    retry_after: Option<f64>,
}

/// The error an answer other than 200 stands for.
pub(super) async fn classify(response: reqwest::Response) -> BasetenError {
    let status = response.status();
    let header_retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after_header(v, std::time::SystemTime::now()));
    // Bodies are parsed for the few documented fields and otherwise dropped unread.
    let body = response.bytes().await.unwrap_or_default();
    match status.as_u16() {
        401 | 403 => BasetenError::Unauthorized {
            status: status.as_u16(),
        },
        429 => {
            let from_body = serde_json::from_slice::<RateLimitBody>(&body)
                .ok()
                .and_then(|b| b.retry_after)
                .and_then(retry_after_seconds);
            BasetenError::RateLimited {
                retry_after: from_body.or(header_retry_after),
            }
        }
        // A request timeout says nothing about the request itself: try again later.
        408 => BasetenError::Unavailable {
            status: status.as_u16(),
        },
        400..=499 => BasetenError::Rejected {
            status: status.as_u16(),
            code: serde_json::from_slice::<ErrorBody>(&body)
                .ok()
                .and_then(|b| b.code)
                .filter(|c| is_error_code(c)),
        },
        500..=599 => BasetenError::Unavailable {
            status: status.as_u16(),
        },
        other => BasetenError::Rejected {
            status: other,
            code: None,
        },
    }
}

/// A wait of `seconds`, capped at [`MAX_RETRY_AFTER`]; `None` for a value that is not a
/// finite, non-negative number.
pub fn retry_after_seconds(seconds: f64) -> Option<Duration> {
    if !seconds.is_finite() || seconds < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(
        seconds.min(MAX_RETRY_AFTER.as_secs_f64()),
    ))
}

/// A `Retry-After` header: delay seconds or an HTTP date, capped; `None` when it is neither.
pub fn parse_retry_after_header(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return retry_after_seconds(seconds);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

/// Only short UPPER_SNAKE codes are repeated in messages, so a body can never smuggle text in.
fn is_error_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 64
        && code
            .chars()
            .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn only_upper_snake_codes_are_repeated() {
        assert!(is_error_code("VALIDATION_ERROR"));
        assert!(!is_error_code("value was hunter2"));
        assert!(!is_error_code(""));
    }

    #[test]
    fn absurd_or_garbage_retry_after_is_capped_or_ignored() {
        assert_eq!(retry_after_seconds(37.0), Some(Duration::from_secs(37)));
        assert_eq!(retry_after_seconds(0.5), Some(Duration::from_millis(500)));
        assert_eq!(retry_after_seconds(1e300), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after_seconds(f64::MAX), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after_seconds(f64::INFINITY), None);
        assert_eq!(retry_after_seconds(f64::NAN), None);
        assert_eq!(retry_after_seconds(-1.0), None);

        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            parse_retry_after_header(" 12 ", now),
            Some(Duration::from_secs(12))
        );
        assert_eq!(
            parse_retry_after_header("99999999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(parse_retry_after_header("soon", now), None);
        assert_eq!(parse_retry_after_header("NaN", now), None);
        let in_a_minute = httpdate::fmt_http_date(now + Duration::from_secs(60));
        assert_eq!(
            parse_retry_after_header(&in_a_minute, now),
            Some(Duration::from_secs(60))
        );
        let in_a_year = httpdate::fmt_http_date(now + Duration::from_secs(31_536_000));
        assert_eq!(
            parse_retry_after_header(&in_a_year, now),
            Some(MAX_RETRY_AFTER)
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(60));
        assert_eq!(parse_retry_after_header(&past, now), Some(Duration::ZERO));
    }

    #[test]
    fn transient_errors_are_the_retryable_ones() {
        assert!(BasetenError::Unavailable { status: 503 }.is_transient());
        assert!(BasetenError::RateLimited { retry_after: None }.is_transient());
        assert!(BasetenError::Transport("timed out").is_transient());
        assert!(!BasetenError::Unauthorized { status: 401 }.is_transient());
        assert!(
            !BasetenError::Rejected {
                status: 400,
                code: None
            }
            .is_transient()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_retry_after_is_ignored_or_capped(seconds in any::<f64>()) {
            match retry_after_seconds(seconds) {
                None => prop_assert!(!seconds.is_finite() || seconds < 0.0),
                Some(wait) => prop_assert!(seconds >= 0.0 && wait <= MAX_RETRY_AFTER),
            }
        }

        #[test]
        fn any_retry_after_header_is_ignored_or_capped(
            value in prop_oneof![".*", "[0-9.eE+-]{1,30}", "[A-Za-z0-9 ,:]{0,40}"],
            now_secs in any::<u32>(),
        ) {
            let now = std::time::UNIX_EPOCH + Duration::from_secs(now_secs.into());
            if let Some(wait) = parse_retry_after_header(&value, now) {
                prop_assert!(wait <= MAX_RETRY_AFTER);
            }
        }

        #[test]
        fn only_short_upper_snake_codes_are_error_codes(code in prop_oneof![".*", "[A-Z0-9_]{0,70}"]) {
            let upper_snake = code.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            prop_assert_eq!(is_error_code(&code), upper_snake && (1..=64).contains(&code.len()));
        }

        #[test]
        fn any_error_body_parses_or_fails_without_panicking(
            bytes in prop::collection::vec(any::<u8>(), 0..64),
            code in ".*",
            retry in any::<f64>(),
        ) {
            let shaped = [
                serde_json::to_vec(&serde_json::json!({"code": code, "retry_after": code})).unwrap(),
                serde_json::to_vec(&serde_json::json!({"code": retry, "retry_after": retry})).unwrap(),
                bytes,
            ];
            for body in &shaped {
                if let Ok(ErrorBody { code: Some(code) }) = serde_json::from_slice(body) {
                    let _ = is_error_code(&code);
                }
                if let Ok(RateLimitBody { retry_after: Some(seconds) }) = serde_json::from_slice(body) {
                    let _ = retry_after_seconds(seconds);
                }
            }
        }
    }
}
