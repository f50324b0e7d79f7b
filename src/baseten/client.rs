//! The HTTP client: one method per request to Baseten's management API, each sent through
//! the rate limiter, its answer typed and its failure classified.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::error::{BasetenError, classify, transport};
use super::limiter::{
    BASETEN_RATE_LIMIT_PER_SECOND, LIMITER_PATIENCE, RATE_WINDOW, RateLimiter, THROTTLED_PAUSE,
};
use super::names::escaped_path;
use super::teams::{Cached, TeamCache, TeamV1, find};
use crate::metrics::Metrics;

/// Baseten's documented base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.baseten.co";

/// Time allowed for one request, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Time allowed to establish a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Baseten's answer to a list of secrets.
#[derive(Deserialize)]
struct SecretList {
    secrets: Vec<SecretV1>,
}

/// Baseten's answer to a list of teams.
#[derive(Deserialize)]
struct TeamList {
    teams: Vec<TeamV1>,
}

/// What a delete found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deleted {
    /// The secret existed and is gone now.
    Deleted,
    /// Baseten had no such secret (404).
    AlreadyGone,
}

/// How a client reaches Baseten.
#[derive(Clone, Debug)]
pub struct Transport {
    /// Time allowed for one request, connection included.
    pub request_timeout: Duration,
    /// CA certificates trusted besides the compiled-in Mozilla roots (a corporate proxy's, a test CA).
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

/// The CAs Baseten's certificate may chain to: Mozilla's roots, compiled into the binary so
/// that it needs no system trust store (its image has none), and the extra ones configured.
fn trusted_roots(extra: &[reqwest::Certificate]) -> Vec<reqwest::Certificate> {
    (webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter())
        .filter_map(|root| reqwest::Certificate::from_der(root).ok())
        .chain(extra.iter().cloned())
        .collect()
}

/// A client for one Baseten API key.
#[derive(Clone, Debug)]
pub struct BasetenClient {
    http: reqwest::Client,
    base_url: String,
    authorization: HeaderValue,
    limiter: Arc<RateLimiter>,
    metrics: Option<Arc<Metrics>>,
    teams: Arc<TeamCache>,
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
            .tls_certs_only(trusted_roots(&transport.extra_roots))
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
        // Sized for the longest escaping at once, so growing leaves no copy of the value
        // behind; zeroed when the request is done with it.
        let value = value.expose_secret();
        let mut body = Zeroizing::new(Vec::with_capacity(64 + 6 * (name.len() + value.len())));
        serde_json::to_writer(&mut *body, &Upsert { name, value })
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
        let (endpoint, path) = match team_id {
            None => ("GET /v1/secrets", "/v1/secrets".to_string()),
            Some(team) => (
                "GET /v1/teams/{team_id}/secrets",
                escaped_path(&["v1", "teams", team, "secrets"])?,
            ),
        };
        let response = self.send(Method::GET, endpoint, &path, None).await?;
        let secrets = response
            .json::<SecretList>()
            .await
            .map_err(|e| transport(&e))?;
        Ok(secrets.secrets)
    }

    /// The teams the key can see.
    pub async fn teams(&self) -> Result<Vec<TeamV1>, BasetenError> {
        let response = self
            .send(Method::GET, "GET /v1/teams", "/v1/teams", None)
            .await?;
        let teams = response
            .json::<TeamList>()
            .await
            .map_err(|e| transport(&e))?;
        Ok(teams.teams)
    }

    /// The team `wanted` names (by id or name), or the key's default team when `None`. Teams
    /// are listed once and cached; a name not in the cache lists them again, at most once per
    /// [`TEAMS_REFRESH_MIN`](super::TEAMS_REFRESH_MIN), so a typo cannot flood Baseten.
    pub async fn team(&self, wanted: Option<&str>) -> Result<Option<TeamV1>, BasetenError> {
        match self.teams.lookup(wanted) {
            Cached::Found(team) => return Ok(Some(team)),
            Cached::Missing => return Ok(None),
            Cached::Stale => {}
        }
        let teams = self.teams().await?;
        let found = find(&teams, wanted);
        self.teams.store(teams);
        Ok(found)
    }

    async fn send(
        &self,
        method: Method,
        endpoint: &'static str,
        path: &str,
        body: Option<Zeroizing<Vec<u8>>>,
    ) -> Result<reqwest::Response, BasetenError> {
        let slot = self.limiter.acquire(endpoint, LIMITER_PATIENCE).await;
        if let Some(metrics) = &self.metrics
            && slot.as_ref().map_or(true, |(_, waited)| *waited)
        {
            metrics.rate_limiter_wait();
        }
        let (slot, _) = slot.map_err(|until| BasetenError::RateLimited {
            retry_after: Some(until.saturating_duration_since(Instant::now())),
        })?;
        let sent = Instant::now();
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url))
            .header(AUTHORIZATION, self.authorization.clone());
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(reqwest::Body::from(bytes::Bytes::from_owner(body)));
        }
        let response = request.send().await.map_err(|e| transport(&e));
        drop(slot);
        if let Some(metrics) = &self.metrics {
            let status = response.as_ref().ok().map(|r| r.status().as_u16());
            metrics.baseten_request(endpoint, status, sent.elapsed());
        }
        let response = response?;
        let status = response.status();
        if status.is_success() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    /// Any JSON document, nested a few levels.
    fn json() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            let keys = prop_oneof![
                Just("secrets".to_string()),
                Just("teams".to_string()),
                Just("name".to_string()),
                Just("id".to_string()),
                Just("created_at".to_string()),
                Just("team_name".to_string()),
                Just("default".to_string()),
                ".{0,8}",
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::btree_map(keys, inner, 0..6)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_answer_body_parses_or_fails_without_panicking(
            document in json(),
            bytes in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let text = serde_json::to_vec(&document).unwrap();
            for body in [&text, &bytes] {
                let _ = serde_json::from_slice::<SecretList>(body);
                let _ = serde_json::from_slice::<TeamList>(body);
                let _ = serde_json::from_slice::<SecretV1>(body);
                let _ = serde_json::from_slice::<TeamV1>(body);
            }
        }

        #[test]
        fn well_formed_lists_keep_every_item(
            names in prop::collection::vec(".{0,20}", 0..8),
            extra in json(),
        ) {
            let secrets: Vec<_> = names.iter().map(|name| serde_json::json!({
                "name": name, "created_at": "2023-11-07T05:31:56Z", "extra": extra,
            })).collect();
            let body = serde_json::to_vec(&serde_json::json!({"secrets": secrets})).unwrap();
            let listed = serde_json::from_slice::<SecretList>(&body).unwrap().secrets;
            prop_assert_eq!(listed.iter().map(|s| &s.name).collect::<Vec<_>>(), names.iter().collect::<Vec<_>>());
            let teams: Vec<_> = names.iter().map(|name| serde_json::json!({"id": name, "name": name})).collect();
            let body = serde_json::to_vec(&serde_json::json!({"teams": teams})).unwrap();
            let teams = serde_json::from_slice::<TeamList>(&body).unwrap().teams;
            prop_assert!(teams.iter().zip(&names).all(|(t, n)| &t.name == n && !t.default));
        }
    }
}
