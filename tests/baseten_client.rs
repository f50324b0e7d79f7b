//! The operator's Baseten client against the emulator: answers parsed, every failure
//! classified as the controller needs it, and nothing of a value or key in any error.

use std::time::{Duration, Instant};

use baseten_secrets_operator::baseten::{BasetenClient, BasetenError};
use secrecy::SecretString;
use serde_json::{Value, json};

const KEY: &str = "client-test-key-77d1";
const VALUE: &str = "client-test-value-0c4e";

async fn emulator() -> baseten_emulator::Running {
    baseten_secrets_operator::install_crypto_provider();
    baseten_emulator::spawn(
        "127.0.0.1:0".parse().unwrap(),
        baseten_emulator::Config {
            api_keys: vec![KEY.into()],
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

fn client(emulator: &baseten_emulator::Running, key: &str) -> BasetenClient {
    BasetenClient::new(&emulator.url(), &SecretString::from(key.to_string())).unwrap()
}

async fn fault(emulator: &baseten_emulator::Running, fault: Value) {
    reqwest::Client::new()
        .post(format!("{}/_admin/faults", emulator.url()))
        .json(&fault)
        .send()
        .await
        .unwrap();
}

fn value() -> SecretString {
    SecretString::from(VALUE.to_string())
}

fn assert_clean(error: &BasetenError) {
    for text in [error.to_string(), format!("{error:?}")] {
        assert!(!text.contains(VALUE) && !text.contains(KEY), "{text}");
    }
}

#[tokio::test]
async fn upsert_returns_what_baseten_answers() {
    let emulator = emulator().await;
    let baseten = client(&emulator, KEY);
    let created = baseten.upsert("hf_access_token", &value()).await.unwrap();
    assert_eq!(created.name, "hf_access_token");
    assert_eq!(created.team_name.as_deref(), Some("Default Team"));
    let id = created.id.clone().expect("an id");
    let updated = baseten.upsert("hf-access-token", &value()).await.unwrap();
    assert_eq!(updated.id.as_deref(), Some(id.as_str()));
    assert_eq!(updated.created_at, created.created_at);
}

#[tokio::test]
async fn failures_are_classified_for_the_controller() {
    let emulator = emulator().await;
    let wrong = client(&emulator, "not-the-key");
    let error = wrong.upsert("a", &value()).await.unwrap_err();
    assert!(
        matches!(error, BasetenError::Unauthorized { status: 401 }),
        "{error:?}"
    );
    assert_clean(&error);

    let cases = [
        (
            json!({"path_prefix": "/v1/secrets", "status": 503}),
            "unavailable",
        ),
        (
            json!({"path_prefix": "/v1/secrets", "status": 502, "body": {"html": "<h1>Bad gateway</h1>"}}),
            "unavailable",
        ),
        (
            json!({"path_prefix": "/v1/secrets", "status": 400, "body": {"code": "VALIDATION_ERROR", "message": VALUE}}),
            "rejected",
        ),
        (
            json!({"path_prefix": "/v1/secrets", "status": 403}),
            "unauthorized",
        ),
        (
            json!({"path_prefix": "/v1/secrets", "status": 429, "body": {"error": "Rate limit exceeded. Please try again later.", "retry_after": 37}}),
            "throttled",
        ),
        (
            json!({"path_prefix": "/v1/secrets", "drop_connection": true}),
            "transport",
        ),
    ];
    for (injected, expected) in cases {
        // A client of its own each time: a 429 pauses the client's endpoint for its wait.
        let baseten = client(&emulator, KEY);
        fault(&emulator, injected.clone()).await;
        let error = baseten.upsert("a", &value()).await.unwrap_err();
        assert_clean(&error);
        let kind = match &error {
            BasetenError::Unavailable { .. } => "unavailable",
            BasetenError::Rejected { code, .. } => {
                assert_eq!(code.as_deref(), Some("VALIDATION_ERROR"));
                "rejected"
            }
            BasetenError::Unauthorized { status: 403 } => "unauthorized",
            BasetenError::RateLimited { retry_after } => {
                assert_eq!(*retry_after, Some(Duration::from_secs(37)));
                "throttled"
            }
            BasetenError::Transport(_) => "transport",
            other => panic!("{injected}: unexpected {other:?}"),
        };
        assert_eq!(kind, expected, "{injected}");
    }
    assert!(
        client(&emulator, KEY).upsert("a", &value()).await.is_ok(),
        "faults are used up"
    );
}

#[tokio::test]
async fn proxies_timeouts_and_absurd_retry_afters_are_handled_without_panic() {
    let emulator = emulator().await;
    let baseten = client(&emulator, KEY);
    let cases = [
        // A proxy's HTML error page, with a Retry-After header nobody asked for.
        json!({"path_prefix": "/v1/secrets", "status": 502, "raw_body": "<html><body><h1>502 Bad Gateway</h1></body></html>", "headers": {"Retry-After": "5"}}),
        json!({"path_prefix": "/v1/secrets", "status": 408}),
    ];
    for injected in cases {
        fault(&emulator, injected.clone()).await;
        let error = baseten.upsert("a", &value()).await.unwrap_err();
        assert!(
            matches!(error, BasetenError::Unavailable { .. }) && error.is_transient(),
            "{injected}: {error:?}"
        );
    }

    let throttled = |body: Value, headers: Value| json!({"path_prefix": "/v1/secrets", "status": 429, "body": body, "headers": headers});
    let message = "Rate limit exceeded. Please try again later.";
    let cases = [
        // Absurdly large: capped, not a panic.
        (
            throttled(json!({"error": message, "retry_after": 1e300}), json!({})),
            Some(baseten_secrets_operator::baseten::MAX_RETRY_AFTER),
        ),
        // Garbage in the body: the header is used.
        (
            throttled(
                json!({"error": message, "retry_after": "soon"}),
                json!({"Retry-After": "7"}),
            ),
            Some(Duration::from_secs(7)),
        ),
        // Garbage everywhere: no wait is known (the controller backs off by itself).
        (
            throttled(json!({"error": message}), json!({"Retry-After": "NaN"})),
            None,
        ),
        (
            throttled(
                json!({"error": message}),
                json!({"Retry-After": "99999999999999999999999999"}),
            ),
            Some(baseten_secrets_operator::baseten::MAX_RETRY_AFTER),
        ),
    ];
    for (injected, expected) in cases {
        // A client of its own each time: a 429 pauses the client's endpoint for its wait.
        let baseten = client(&emulator, KEY);
        fault(&emulator, injected.clone()).await;
        let error = baseten.upsert("a", &value()).await.unwrap_err();
        match error {
            BasetenError::RateLimited { retry_after } => {
                assert_eq!(retry_after, expected, "{injected}")
            }
            other => panic!("{injected}: unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_slow_baseten_is_waited_for_and_the_rate_limit_is_kept() {
    let emulator = emulator().await;
    let baseten = client(&emulator, KEY);
    fault(
        &emulator,
        json!({"path_prefix": "/v1/secrets", "latency_ms": 300}),
    )
    .await;
    let started = Instant::now();
    baseten.upsert("slow", &value()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));

    // 150 upserts at once never exceed the emulator's 100/s: no 429 comes back, because
    // the 101st waits until a whole window (1.025 s) has passed since the 1st.
    let started = Instant::now();
    let results = futures::future::join_all((0..150).map(|i| {
        let baseten = baseten.clone();
        async move { baseten.upsert(&format!("s{i}"), &value()).await }
    }))
    .await;
    assert!(
        results.iter().all(Result::is_ok),
        "{:?}",
        results.iter().find(|r| r.is_err())
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "150 upserts took only {took:?}"
    );

    // A 429 holds back the whole endpoint for its retry_after, not only the throttled call.
    fault(
        &emulator,
        json!({"path_prefix": "/v1/secrets", "status": 429, "body": {"error": "Rate limit exceeded. Please try again later.", "retry_after": 1}}),
    )
    .await;
    // A fresh window first, so only the pause can make the next call wait.
    tokio::time::sleep(baseten_secrets_operator::baseten::RATE_WINDOW).await;
    let throttled_at = Instant::now();
    assert!(matches!(
        baseten.upsert("t", &value()).await,
        Err(BasetenError::RateLimited { .. })
    ));
    baseten.upsert("u", &value()).await.unwrap();
    let waited = throttled_at.elapsed();
    assert!(
        waited >= Duration::from_secs(1),
        "the next call waited only {waited:?}"
    );
}

#[tokio::test]
async fn every_2xx_answer_is_a_success() {
    let emulator = emulator().await;
    let baseten = client(&emulator, KEY);
    let answer = json!({"name": "created", "created_at": "2026-01-01T00:00:00Z", "id": "x1"});
    fault(
        &emulator,
        json!({"path_prefix": "/v1/secrets", "method": "POST", "status": 201, "body": answer}),
    )
    .await;
    let created = baseten.upsert("created", &value()).await.unwrap();
    assert_eq!(created.id.as_deref(), Some("x1"));
    fault(
        &emulator,
        json!({"path_prefix": "/v1/secrets/", "method": "DELETE", "status": 204, "raw_body": ""}),
    )
    .await;
    assert_eq!(
        baseten.delete("created").await.unwrap(),
        baseten_secrets_operator::baseten::Deleted::Deleted
    );
}
