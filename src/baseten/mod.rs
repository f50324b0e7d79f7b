//! The HTTP client for Baseten's management API: typed answers, typed errors that never carry
//! a value or key, and a client-side rate limit below Baseten's 100 requests/s per endpoint.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::time::Instant;

use crate::metrics::Metrics;

/// Baseten's documented base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.baseten.co";

/// Requests per second Baseten allows per API key and per endpoint.
pub const BASETEN_RATE_LIMIT_PER_SECOND: u32 = 100;

/// The span in which this client sends at most [`BASETEN_RATE_LIMIT_PER_SECOND`] requests
/// per endpoint: Baseten's second plus a margin, so that network jitter can never put a
/// 101st request into one of Baseten's one-second windows. 100 requests per 1.025 s is
/// 97.6 % of Baseten's limit.
pub const RATE_WINDOW: Duration = Duration::from_millis(1025);

/// How long an endpoint pauses after a 429 that named no wait.
pub const THROTTLED_PAUSE: Duration = Duration::from_secs(1);

/// Time allowed for one request, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Time allowed to establish a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest wait a 429 can ask for. A larger (or absurd) `retry_after` is cut to this, so
/// that a proxy's typo cannot park a resource for days or overflow a timer.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

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

/// A secret as Baseten describes it. Older answers carry only `name` and `created_at`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct SecretV1 {
    /// The secret's name as Baseten stores it.
    pub name: String,
    /// Creation time as Baseten wrote it.
    pub created_at: String,
    /// Stable id, unchanged across updates.
    #[serde(default)]
    pub id: Option<String>,
    /// The team holding the secret.
    #[serde(default)]
    pub team_name: Option<String>,
}

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
fn transport(error: &reqwest::Error) -> BasetenError {
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

/// Sends at most `limit` requests per endpoint in any [`RATE_WINDOW`], and pauses an
/// endpoint that Baseten throttled. Requests wait for a slot; none is refused.
///
/// A request's slot is dated by when its answer arrived, not when it was sent: Baseten
/// counts it at some moment in between, so a request sent a window after that answer can
/// never share a window with it, however long the requests took.
#[derive(Debug)]
struct RateLimiter {
    limit: usize,
    window: Duration,
    endpoints: std::sync::Mutex<HashMap<&'static str, Endpoint>>,
}

/// One endpoint's recent requests and pause.
#[derive(Debug, Default)]
struct Endpoint {
    /// Requests of the last window: their answer time, `None` while in flight.
    slots: VecDeque<(u64, Option<Instant>)>,
    /// Id of the next slot.
    next_id: u64,
    /// No request is sent before this instant (after a 429).
    paused_until: Option<Instant>,
}

/// How often a full endpoint whose oldest request is still in flight looks again.
const IN_FLIGHT_POLL: Duration = Duration::from_millis(5);

/// A taken slot; dated when dropped (the answer arrived or the request failed).
struct Slot<'a> {
    limiter: &'a RateLimiter,
    endpoint: &'static str,
    id: u64,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut endpoints = self.limiter.endpoints();
        if let Some(state) = endpoints.get_mut(self.endpoint)
            && let Some(slot) = state.slots.iter_mut().find(|(id, _)| *id == self.id)
        {
            slot.1 = Some(Instant::now());
        }
    }
}

impl RateLimiter {
    fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit: limit.max(1) as usize,
            window,
            endpoints: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn endpoints(&self) -> std::sync::MutexGuard<'_, HashMap<&'static str, Endpoint>> {
        self.endpoints.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until this endpoint may send, and takes a slot for the request; says whether
    /// it had to wait.
    async fn acquire(&self, endpoint: &'static str) -> (Slot<'_>, bool) {
        let mut waited = false;
        loop {
            let wait = {
                let mut endpoints = self.endpoints();
                let state = endpoints.entry(endpoint).or_default();
                let now = Instant::now();
                match state.paused_until {
                    Some(until) if until > now => until,
                    _ => {
                        state.slots.retain(|(_, answered)| {
                            !answered.is_some_and(|at| now.duration_since(at) >= self.window)
                        });
                        if state.slots.len() < self.limit {
                            let id = state.next_id;
                            state.next_id += 1;
                            state.slots.push_back((id, None));
                            return (
                                Slot {
                                    limiter: self,
                                    endpoint,
                                    id,
                                },
                                waited,
                            );
                        }
                        // The first answered slot to leave the window frees a place.
                        state
                            .slots
                            .iter()
                            .filter_map(|(_, answered)| *answered)
                            .min()
                            .map_or(now + IN_FLIGHT_POLL, |at| at + self.window)
                    }
                }
            };
            waited = true;
            tokio::time::sleep_until(wait).await;
        }
    }

    /// Holds every request to this endpoint until `until`.
    fn pause(&self, endpoint: &'static str, until: Instant) {
        let mut endpoints = self.endpoints();
        let state = endpoints.entry(endpoint).or_default();
        state.paused_until = Some(state.paused_until.map_or(until, |p| p.max(until)));
    }
}

/// How a client reaches Baseten.
#[derive(Clone, Debug)]
pub struct Transport {
    /// Time allowed for one request, connection included.
    pub request_timeout: Duration,
    /// CA certificates trusted besides the system's (a corporate proxy's, a test CA).
    pub extra_roots: Vec<reqwest::Certificate>,
    /// Where requests are counted, if anywhere.
    pub metrics: Option<Arc<Metrics>>,
}

impl Default for Transport {
    fn default() -> Self {
        Self {
            request_timeout: REQUEST_TIMEOUT,
            extra_roots: Vec::new(),
            metrics: None,
        }
    }
}

/// A client for one Baseten API key.
#[derive(Clone, Debug)]
pub struct BasetenClient {
    http: reqwest::Client,
    base_url: String,
    authorization: HeaderValue,
    limiter: Arc<RateLimiter>,
    metrics: Option<Arc<Metrics>>,
    teams: Arc<std::sync::Mutex<Option<TeamsListed>>>,
}

impl BasetenClient {
    /// Builds a client for `base_url` authenticating with `api_key`.
    pub fn new(base_url: &str, api_key: &SecretString) -> anyhow::Result<Self> {
        Self::with_transport(base_url, api_key, &Transport::default())
    }

    /// Like [`BasetenClient::new`], with transport options.
    pub fn with_transport(
        base_url: &str,
        api_key: &SecretString,
        transport: &Transport,
    ) -> anyhow::Result<Self> {
        let mut authorization = HeaderValue::from_str(&format!(
            "Api-Key {}",
            api_key.expose_secret()
        ))
        .map_err(|_| {
            anyhow::anyhow!("the Baseten API key contains characters not allowed in an HTTP header")
        })?;
        // Keeps the header out of hyper's and reqwest's debug output.
        authorization.set_sensitive(true);
        let http = reqwest::Client::builder()
            .timeout(transport.request_timeout)
            .connect_timeout(CONNECT_TIMEOUT)
            .tls_certs_merge(transport.extra_roots.iter().cloned())
            .user_agent(concat!(
                "baseten-secrets-operator/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            authorization,
            limiter: Arc::new(RateLimiter::new(BASETEN_RATE_LIMIT_PER_SECOND, RATE_WINDOW)),
            metrics: transport.metrics.clone(),
            teams: Arc::default(),
        })
    }

    /// Creates or updates the secret `name` in the key's default team.
    pub async fn upsert(&self, name: &str, value: &SecretString) -> Result<SecretV1, BasetenError> {
        self.upsert_in(None, name, value).await
    }

    /// Creates or updates the secret `name` in team `team_id`, or the key's default team.
    pub async fn upsert_in(
        &self,
        team_id: Option<&str>,
        name: &str,
        value: &SecretString,
    ) -> Result<SecretV1, BasetenError> {
        #[derive(serde::Serialize)]
        struct Upsert<'a> {
            name: &'a str,
            value: &'a str,
        }
        let body = serde_json::to_vec(&Upsert {
            name,
            value: value.expose_secret(),
        })
        .map_err(|_| BasetenError::Transport("the request could not be encoded"))?;
        let (endpoint, path) = match team_id {
            None => ("POST /v1/secrets", "/v1/secrets".to_string()),
            Some(team) => (
                "POST /v1/teams/{team_id}/secrets",
                escaped_path(&["v1", "teams", team, "secrets"])?,
            ),
        };
        let response = self.send(Method::POST, endpoint, &path, Some(body)).await?;
        response.json::<SecretV1>().await.map_err(|e| transport(&e))
    }

    /// Deletes the secret `name` of the key's default team. A name Baseten does not know
    /// counts as deleted: the answer is [`Deleted::AlreadyGone`].
    pub async fn delete(&self, name: &str) -> Result<Deleted, BasetenError> {
        self.delete_in(None, name).await
    }

    /// Deletes the secret `name` of team `team_id`, or of the key's default team.
    pub async fn delete_in(
        &self,
        team_id: Option<&str>,
        name: &str,
    ) -> Result<Deleted, BasetenError> {
        let (endpoint, path) = match team_id {
            None => (
                "DELETE /v1/secrets/{secret_name}",
                escaped_path(&["v1", "secrets", name])?,
            ),
            Some(team) => (
                "DELETE /v1/teams/{team_id}/secrets/{secret_name}",
                escaped_path(&["v1", "teams", team, "secrets", name])?,
            ),
        };
        match self.send(Method::DELETE, endpoint, &path, None).await {
            Ok(_) => Ok(Deleted::Deleted),
            Err(BasetenError::Rejected { status: 404, .. }) => Ok(Deleted::AlreadyGone),
            Err(error) => Err(error),
        }
    }

    /// Lists the secrets (names, ids, never values) of team `team_id`; without a team, of
    /// every team the key can see (each item names its team).
    pub async fn list_in(&self, team_id: Option<&str>) -> Result<Vec<SecretV1>, BasetenError> {
        #[derive(Deserialize)]
        struct Secrets {
            secrets: Vec<SecretV1>,
        }
        let (endpoint, path) = match team_id {
            None => ("GET /v1/secrets", "/v1/secrets".to_string()),
            Some(team) => (
                "GET /v1/teams/{team_id}/secrets",
                escaped_path(&["v1", "teams", team, "secrets"])?,
            ),
        };
        let response = self.send(Method::GET, endpoint, &path, None).await?;
        let secrets = response
            .json::<Secrets>()
            .await
            .map_err(|e| transport(&e))?;
        Ok(secrets.secrets)
    }

    /// The teams the key can see.
    pub async fn teams(&self) -> Result<Vec<TeamV1>, BasetenError> {
        #[derive(Deserialize)]
        struct Teams {
            teams: Vec<TeamV1>,
        }
        let response = self
            .send(Method::GET, "GET /v1/teams", "/v1/teams", None)
            .await?;
        let teams = response.json::<Teams>().await.map_err(|e| transport(&e))?;
        Ok(teams.teams)
    }

    /// The team `wanted` names (by id or name), or the key's default team when `None`. Teams
    /// are listed once and cached; a name not in the cache lists them again, at most once per
    /// [`TEAMS_REFRESH_MIN`], so a typo cannot flood Baseten.
    pub async fn team(&self, wanted: Option<&str>) -> Result<Option<TeamV1>, BasetenError> {
        let find = |teams: &[TeamV1]| {
            teams
                .iter()
                .find(|t| match wanted {
                    Some(w) => t.id == w || t.name == w,
                    None => t.default,
                })
                .cloned()
        };
        let fresh_enough = {
            let cache = self.teams.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, teams)) = cache.as_ref()
                && let Some(team) = find(teams)
            {
                return Ok(Some(team));
            }
            cache
                .as_ref()
                .is_some_and(|(at, _)| at.elapsed() < TEAMS_REFRESH_MIN)
        };
        if fresh_enough {
            return Ok(None);
        }
        let teams = self.teams().await?;
        let found = find(&teams);
        *self.teams.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), teams));
        Ok(found)
    }

    async fn send(
        &self,
        method: Method,
        endpoint: &'static str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response, BasetenError> {
        let (slot, waited) = self.limiter.acquire(endpoint).await;
        if waited && let Some(metrics) = &self.metrics {
            metrics.rate_limiter_wait();
        }
        let sent = Instant::now();
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url))
            .header(AUTHORIZATION, self.authorization.clone());
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let response = request.send().await.map_err(|e| transport(&e));
        drop(slot);
        if let Some(metrics) = &self.metrics {
            let status = response.as_ref().ok().map(|r| r.status().as_u16());
            metrics.baseten_request(endpoint, status, sent.elapsed());
        }
        let response = response?;
        let status = response.status();
        if status == StatusCode::OK {
            return Ok(response);
        }
        let error = classify(response).await;
        if let BasetenError::RateLimited { retry_after } = &error {
            // The whole endpoint waits, not only this request: Baseten counts per key.
            let pause = retry_after.unwrap_or(THROTTLED_PAUSE);
            self.limiter.pause(endpoint, Instant::now() + pause);
        }
        Err(error)
    }
}

/// A path of `segments`, each escaped as a single path segment.
fn escaped_path(segments: &[&str]) -> Result<String, BasetenError> {
    let encoding = || BasetenError::Transport("the request could not be encoded");
    let mut url = reqwest::Url::parse("http://path.invalid/").map_err(|_| encoding())?;
    url.path_segments_mut()
        .map_err(|_| encoding())?
        .clear()
        .extend(segments);
    Ok(url.path().to_string())
}

/// What a delete found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deleted {
    /// The secret existed and is gone now.
    Deleted,
    /// Baseten had no such secret (404).
    AlreadyGone,
}

/// Baseten's identity of a secret name: every character that is not an ASCII letter or digit
/// is the same character, and case counts, so `hf_token`, `hf-token` and `hf.token` are one
/// secret.
pub fn normalised_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

async fn classify(response: reqwest::Response) -> BasetenError {
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

    #[test]
    fn old_and_new_secret_shapes_both_parse() {
        let old: SecretV1 =
            serde_json::from_str(r#"{"name":"a","created_at":"2023-11-07T05:31:56Z"}"#).unwrap();
        assert_eq!(old.id, None);
        let new: SecretV1 = serde_json::from_str(
            r#"{"id":"3kZ9xqd","name":"a","team_name":"T","created_at":"2023-11-07T05:31:56Z","extra":1}"#,
        )
        .unwrap();
        assert_eq!(new.id.as_deref(), Some("3kZ9xqd"));
        assert_eq!(new.team_name.as_deref(), Some("T"));
    }

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

    #[tokio::test(start_paused = true)]
    async fn limiter_keeps_any_window_at_the_limit() {
        let limiter = RateLimiter::new(100, RATE_WINDOW);
        let start = Instant::now();
        for _ in 0..100 {
            drop(limiter.acquire("POST /v1/secrets").await);
        }
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "a full budget goes at once"
        );
        drop(limiter.acquire("POST /v1/secrets").await);
        assert_eq!(
            start.elapsed(),
            RATE_WINDOW,
            "the 101st waits for the window"
        );
        for _ in 0..99 {
            drop(limiter.acquire("POST /v1/secrets").await);
        }
        assert_eq!(start.elapsed(), RATE_WINDOW);
        drop(limiter.acquire("POST /v1/secrets").await);
        assert_eq!(start.elapsed(), RATE_WINDOW * 2);
        let other = Instant::now();
        drop(limiter.acquire("GET /v1/secrets").await);
        assert_eq!(
            other.elapsed(),
            Duration::ZERO,
            "endpoints have their own budget"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_counts_from_the_answer_of_a_slow_request() {
        let limiter = RateLimiter::new(2, RATE_WINDOW);
        let start = Instant::now();
        let slow = limiter.acquire("POST /v1/secrets").await;
        drop(limiter.acquire("POST /v1/secrets").await);
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(slow);
        // The slow request was answered at 300 ms: its slot frees a window after that.
        drop(limiter.acquire("POST /v1/secrets").await);
        assert_eq!(start.elapsed(), RATE_WINDOW);
        drop(limiter.acquire("POST /v1/secrets").await);
        assert_eq!(start.elapsed(), RATE_WINDOW + Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_endpoint_waits_then_resumes() {
        let limiter = RateLimiter::new(100, RATE_WINDOW);
        let start = Instant::now();
        limiter.pause("POST /v1/secrets", start + Duration::from_secs(37));
        drop(limiter.acquire("GET /v1/secrets").await);
        assert_eq!(start.elapsed(), Duration::ZERO);
        drop(limiter.acquire("POST /v1/secrets").await);
        assert_eq!(start.elapsed(), Duration::from_secs(37));
    }
}
