//! Baseten's management API: the HTTP client ([`BasetenClient`]), its typed errors that never
//! carry a value or key, and its client-side rate limit below Baseten's 100 requests/s per
//! endpoint.
//!
//! Within this folder imports point one way: `client` uses `teams`, `limiter`, `names` and
//! `error`; `names` uses `error`; `teams`, `limiter` and `error` use none of the others.

mod client;
mod error;
mod limiter;
mod names;
mod teams;

pub use client::{
    BasetenClient, CONNECT_TIMEOUT, DEFAULT_BASE_URL, Deleted, REQUEST_TIMEOUT, SecretV1, Transport,
};
pub use error::{BasetenError, MAX_RETRY_AFTER, parse_retry_after_header, retry_after_seconds};
pub use limiter::{BASETEN_RATE_LIMIT_PER_SECOND, LIMITER_PATIENCE, RATE_WINDOW, THROTTLED_PAUSE};
pub use names::normalised_name;
pub use teams::{TEAMS_REFRESH_MIN, TeamV1};
