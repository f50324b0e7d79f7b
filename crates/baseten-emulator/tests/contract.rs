//! Contract tests: every endpoint, status code and body shape of the emulator checked against
//! the project's own fixtures of Baseten's published schemas.

use std::sync::Once;

use baseten_emulator::{AdminRequest, AdminSecret, Config, Running};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

const KEY: &str = "contract-key";
const OTHER_KEY: &str = "other-key";

fn schemas() -> Value {
    serde_json::from_str(include_str!("fixtures/baseten-schemas.json")).unwrap()
}

/// Checks `value` against the named fixture schema; panics with the path of the first mismatch.
fn assert_shape(schema_name: &str, value: &Value) {
    let schemas = schemas();
    check(&schemas, &schemas[schema_name], value, schema_name);
}

fn check(schemas: &Value, schema: &Value, value: &Value, at: &str) {
    if let Some(name) = schema.as_str() {
        return check(schemas, &schemas[name], value, at);
    }
    let ok = match schema["type"].as_str().unwrap() {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_u64() || value.is_i64(),
        other => panic!("fixture uses unknown type {other}"),
    };
    assert!(ok, "{at}: expected {}, got {value}", schema["type"]);
    if schema["format"] == "date-time" {
        let text = value.as_str().unwrap();
        assert!(
            text.parse::<jiff::Timestamp>().is_ok() && text.ends_with('Z'),
            "{at}: {text} is not RFC 3339 UTC"
        );
    }
    if schema["pattern"] == "UPPER_SNAKE" {
        let text = value.as_str().unwrap();
        assert!(
            text.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
            "{at}: {text} is not UPPER_SNAKE"
        );
    }
    for field in schema["required"].as_array().into_iter().flatten() {
        let field = field.as_str().unwrap();
        assert!(
            value.get(field).is_some(),
            "{at}: missing required field {field}"
        );
    }
    if let Some(properties) = schema["properties"].as_object() {
        for (field, field_schema) in properties {
            if let Some(inner) = value.get(field) {
                check(schemas, field_schema, inner, &format!("{at}.{field}"));
            }
        }
    }
    if let Some(items) = schema.get("items") {
        for (i, item) in value.as_array().unwrap().iter().enumerate() {
            check(schemas, items, item, &format!("{at}[{i}]"));
        }
    }
}

struct Emu {
    running: Running,
    http: Client,
}

impl Emu {
    async fn start(rate_limit: u32) -> Self {
        static PROVIDER: Once = Once::new();
        PROVIDER.call_once(|| {
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        let config = Config {
            api_keys: vec![KEY.into(), OTHER_KEY.into()],
            teams: vec!["Research".into()],
            rate_limit_per_second: rate_limit,
        };
        let running = baseten_emulator::spawn("127.0.0.1:0".parse().unwrap(), config)
            .await
            .unwrap();
        Self {
            running,
            http: Client::new(),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.running.url()));
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn api(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call(method, path, Some(&format!("Api-Key {KEY}")), body)
            .await
    }

    async fn admin_secrets(&self) -> Vec<AdminSecret> {
        let (_, body) = self.call(Method::GET, "/_admin/secrets", None, None).await;
        serde_json::from_value(body).unwrap()
    }
}

#[tokio::test]
async fn upsert_creates_then_updates_keeping_id_created_at_and_first_spelling() {
    let emu = Emu::start(100).await;
    let (status, created) = emu
        .api(
            Method::POST,
            "/v1/secrets",
            Some(json!({"name": "hf_access_token", "value": "v1"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_shape("SecretV1", &created);
    assert_eq!(created["name"], "hf_access_token");
    assert_eq!(created["team_name"], "Default Team");

    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, updated) = emu
        .api(
            Method::POST,
            "/v1/secrets",
            Some(json!({"name": "hf-access-token", "value": "second-value-never-listed"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(updated["id"], created["id"]);
    assert_eq!(updated["created_at"], created["created_at"]);
    assert_eq!(
        updated["name"], "hf_access_token",
        "the first spelling stays"
    );

    let secrets = emu.admin_secrets().await;
    assert_eq!(secrets.len(), 1);
    assert_eq!(secrets[0].value, "second-value-never-listed");
    assert_eq!(secrets[0].writes, 2);
    assert_eq!(secrets[0].api_key_id, "key-1");

    // Case is significant: another secret.
    let (_, upper) = emu
        .api(
            Method::POST,
            "/v1/secrets",
            Some(json!({"name": "HF_ACCESS_TOKEN", "value": "x"})),
        )
        .await;
    assert_ne!(upper["id"], created["id"]);

    let (status, list) = emu.api(Method::GET, "/v1/secrets", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_shape("SecretsV1", &list);
    assert_eq!(list["secrets"].as_array().unwrap().len(), 2);
    assert!(
        !list.to_string().contains("second-value-never-listed"),
        "listing never returns values"
    );
}

#[tokio::test]
async fn auth_accepts_both_schemes_and_isolates_organisations() {
    let emu = Emu::start(100).await;
    for auth in [format!("Api-Key {KEY}"), format!("Bearer {KEY}")] {
        let (status, _) = emu
            .call(Method::GET, "/v1/secrets", Some(&auth), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{auth:?} is accepted");
    }
    for auth in [
        None,
        Some("Api-Key wrong"),
        Some(&*format!("Basic {KEY}")),
        Some(KEY),
    ] {
        let (status, body) = emu.call(Method::GET, "/v1/secrets", auth, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_shape("Error", &body);
        assert!(
            !body.to_string().contains(KEY),
            "error bodies never echo the key"
        );
    }
    emu.api(
        Method::POST,
        "/v1/secrets",
        Some(json!({"name": "a", "value": "1"})),
    )
    .await;
    let (_, other) = emu
        .call(
            Method::GET,
            "/v1/secrets",
            Some(&format!("Bearer {OTHER_KEY}")),
            None,
        )
        .await;
    assert_eq!(
        other["secrets"],
        json!([]),
        "another key is another organisation"
    );
}

#[tokio::test]
async fn delete_answers_a_tombstone_then_404() {
    let emu = Emu::start(100).await;
    emu.api(
        Method::POST,
        "/v1/secrets",
        Some(json!({"name": "my.secret", "value": "1"})),
    )
    .await;
    let (status, tombstone) = emu.api(Method::DELETE, "/v1/secrets/my_secret", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_shape("SecretTombstoneV1", &tombstone);
    assert_eq!(tombstone["name"], "my.secret");
    let (status, body) = emu.api(Method::DELETE, "/v1/secrets/my_secret", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_shape("Error", &body);
    assert_eq!(body["code"], "NOT_FOUND");
}

#[tokio::test]
async fn malformed_or_incomplete_bodies_are_validation_errors() {
    let emu = Emu::start(100).await;
    for body in [
        json!({"name": "a"}),
        json!({"value": "a"}),
        json!("text"),
        json!({"name": 1, "value": "a"}),
    ] {
        let (status, answer) = emu.api(Method::POST, "/v1/secrets", Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_shape("Error", &answer);
        assert_eq!(answer["code"], "VALIDATION_ERROR");
    }
    let raw = emu
        .http
        .post(format!("{}/v1/secrets", emu.running.url()))
        .header("Authorization", format!("Api-Key {KEY}"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    assert!(emu.admin_secrets().await.is_empty(), "nothing was written");
}

#[tokio::test]
async fn teams_and_team_scoped_secrets() {
    let emu = Emu::start(100).await;
    let (status, teams) = emu.api(Method::GET, "/v1/teams", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_shape("TeamsV1", &teams);
    let teams = teams["teams"].as_array().unwrap().clone();
    assert_eq!(teams.len(), 2);
    let default = teams.iter().find(|t| t["default"] == true).unwrap();
    assert_eq!(default["name"], "Default Team");
    let research = teams.iter().find(|t| t["name"] == "Research").unwrap();
    let research_id = research["id"].as_str().unwrap();

    let (status, team) = emu
        .api(Method::GET, &format!("/v1/teams/{research_id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_shape("TeamV1", &team);

    let path = format!("/v1/teams/{research_id}/secrets");
    let (status, secret) = emu
        .api(
            Method::POST,
            &path,
            Some(json!({"name": "s", "value": "1"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_shape("SecretV1", &secret);
    assert_eq!(secret["team_name"], "Research");
    let (_, scoped) = emu.api(Method::GET, &path, None).await;
    assert_shape("SecretsV1", &scoped);
    assert_eq!(scoped["secrets"].as_array().unwrap().len(), 1);
    let (_, default_team) = emu
        .api(
            Method::GET,
            &format!("/v1/teams/{}/secrets", default["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(
        default_team["secrets"],
        json!([]),
        "the default team is another team"
    );
    emu.api(
        Method::POST,
        "/v1/secrets",
        Some(json!({"name": "d", "value": "2"})),
    )
    .await;
    let (_, unscoped) = emu.api(Method::GET, "/v1/secrets", None).await;
    assert_shape("SecretsV1", &unscoped);
    let mut listed: Vec<(String, String)> = unscoped["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["team_name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            ("d".to_string(), "Default Team".to_string()),
            ("s".to_string(), "Research".to_string())
        ],
        "un-scoped, every team the key can see is listed, each item naming its team"
    );

    let (status, tombstone) = emu.api(Method::DELETE, &format!("{path}/s"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_shape("SecretTombstoneV1", &tombstone);

    let (status, body) = emu.api(Method::GET, "/v1/teams/nope/secrets", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_shape("Error", &body);

    // Team ids are stable across restarts.
    let again = Emu::start(100).await;
    let (_, teams_again) = again.api(Method::GET, "/v1/teams", None).await;
    assert!(
        teams_again["teams"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == research_id)
    );
}

#[tokio::test]
async fn rate_limit_is_per_key_and_per_endpoint_with_the_documented_body() {
    let emu = Emu::start(5).await;
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(emu.api(Method::GET, "/v1/secrets", None).await);
    }
    let limited: Vec<_> = statuses
        .iter()
        .filter(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert!(
        !limited.is_empty(),
        "more than 5 requests in a second are throttled"
    );
    assert!(limited.len() <= 2);
    assert_shape("RateLimitError", &limited[0].1);
    assert_eq!(
        limited[0].1["error"],
        "Rate limit exceeded. Please try again later."
    );
    assert!(limited[0].1["retry_after"].as_u64().unwrap() >= 1);
    // The POST endpoint and another key have budgets of their own.
    let (status, _) = emu
        .api(
            Method::POST,
            "/v1/secrets",
            Some(json!({"name": "a", "value": "b"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = emu
        .call(
            Method::GET,
            "/v1/secrets",
            Some(&format!("Api-Key {OTHER_KEY}")),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn faults_fail_the_next_matching_requests_then_clear() {
    let emu = Emu::start(100).await;
    let fault = json!({"path_prefix": "/v1/secrets", "method": "POST", "status": 503, "count": 2});
    let (status, _) = emu
        .call(Method::POST, "/_admin/faults", None, Some(fault))
        .await;
    assert!(status.is_success());
    let upsert = || {
        emu.api(
            Method::POST,
            "/v1/secrets",
            Some(json!({"name": "a", "value": "b"})),
        )
    };
    assert_eq!(
        emu.api(Method::GET, "/v1/secrets", None).await.0,
        StatusCode::OK,
        "GET does not match"
    );
    assert_eq!(upsert().await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(upsert().await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(upsert().await.0, StatusCode::OK);

    let throttle = json!({"path_prefix": "/v1/", "status": 429, "count": 1});
    emu.call(Method::POST, "/_admin/faults", None, Some(throttle))
        .await;
    let (status, body) = upsert().await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_shape("RateLimitError", &body);

    let dropped = json!({"path_prefix": "/v1/secrets", "drop_connection": true, "count": 1});
    emu.call(Method::POST, "/_admin/faults", None, Some(dropped))
        .await;
    let outcome = emu
        .http
        .get(format!("{}/v1/secrets", emu.running.url()))
        .header("Authorization", format!("Api-Key {KEY}"))
        .send()
        .await;
    let failed = match outcome {
        Err(_) => true,
        Ok(response) => response.bytes().await.is_err(),
    };
    assert!(
        failed,
        "a dropped connection never yields a complete answer"
    );

    let lasting = json!({"path_prefix": "/v1/", "status": 500, "count": 100});
    emu.call(Method::POST, "/_admin/faults", None, Some(lasting))
        .await;
    emu.call(Method::DELETE, "/_admin/faults", None, None).await;
    assert_eq!(
        upsert().await.0,
        StatusCode::OK,
        "cleared faults no longer apply"
    );

    let requests: Vec<AdminRequest> = serde_json::from_value(
        emu.call(Method::GET, "/_admin/requests", None, None)
            .await
            .1,
    )
    .unwrap();
    let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
    assert_eq!(&statuses[..4], &[200, 503, 503, 200], "oldest first");
    assert!(requests.iter().all(|r| r.path.starts_with("/v1/")));
    // Upserts are logged with their name (never the value), and when they arrived.
    assert_eq!(requests[0].name, None, "a GET carries no name");
    assert_eq!(requests[1].name.as_deref(), Some("a"));
    for request in &requests {
        let received: jiff::Timestamp = request.received_at.parse().unwrap();
        let answered: jiff::Timestamp = request.at.parse().unwrap();
        assert!(received <= answered, "{request:?}");
    }
    let log = serde_json::to_string(&requests).unwrap();
    assert!(!log.contains("\"b\""), "no value in the request log: {log}");

    // A proxy's page: any status, a non-JSON body and extra headers.
    let proxy = json!({"path_prefix": "/v1/secrets", "status": 502, "count": 1,
        "raw_body": "<html>Bad gateway</html>", "headers": {"Retry-After": "3"}});
    emu.call(Method::POST, "/_admin/faults", None, Some(proxy))
        .await;
    let response = emu
        .http
        .get(format!("{}/v1/secrets", emu.running.url()))
        .header("Authorization", format!("Api-Key {KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(response.headers()["retry-after"], "3");
    assert_eq!(response.headers()["content-type"], "text/html");
    assert_eq!(response.text().await.unwrap(), "<html>Bad gateway</html>");

    emu.call(Method::POST, "/_admin/reset", None, None).await;
    assert!(emu.admin_secrets().await.is_empty());
    let (_, requests) = emu.call(Method::GET, "/_admin/requests", None, None).await;
    assert_eq!(requests, json!([]));
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_error_bodies() {
    let emu = Emu::start(100).await;
    let (status, body) = emu.api(Method::GET, "/v1/nothing", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_shape("Error", &body);
    let (status, body) = emu.api(Method::PUT, "/v1/secrets", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_shape("Error", &body);
}
