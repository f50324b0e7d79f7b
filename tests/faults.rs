//! The operator against an emulator that misbehaves the way networks and Baseten do: TLS
//! with a private CA, answers slower than the request timeout. The real operator, control
//! plane and emulator.

mod common;

use common::operator::{Harness, OperatorOptions};
use serde_json::json;

#[tokio::test]
async fn https_to_a_server_signed_by_a_private_ca_needs_that_ca() {
    let mut h = Harness::start_with(
        "fault-tls",
        OperatorOptions {
            tls: true,
            ..Default::default()
        },
    )
    .await;
    assert!(h.emulator.url().starts_with("https://"));
    h.apply_secret("creds", &[("token", b"over tls")], json!({}))
        .await;
    h.apply_bts(
        "tls",
        json!({"secretRef": {"name": "creds", "key": "token"}}),
        json!({}),
    )
    .await
    .unwrap();
    let refused = h.wait_reason("tls", "BasetenUnavailable").await;
    let message = &refused.ready_condition().unwrap().message;
    assert!(message.contains("could not be reached"), "{message}");
    assert_eq!(h.upsert_requests().await, 0, "no request got through");

    // The same operator, told to trust the CA (--baseten-ca-file), as behind a corporate proxy.
    h.options.trust_test_ca = true;
    h.start_operator();
    h.wait_reason("tls", "Synced").await;
    assert_eq!(h.baseten_secret("tls").await.unwrap().value, "over tls");
}

#[tokio::test]
async fn an_answer_slower_than_the_timeout_is_retried() {
    let h = Harness::start_with(
        "fault-timeout",
        OperatorOptions {
            baseten_timeout_seconds: Some(1),
            ..Default::default()
        },
    )
    .await;
    h.fault(
        json!({"path_prefix": "/v1/secrets", "method": "POST", "latency_ms": 2500, "count": 1}),
    )
    .await;
    h.apply_secret("creds", &[("token", b"patient")], json!({}))
        .await;
    h.apply_bts(
        "slow",
        json!({"secretRef": {"name": "creds", "key": "token"}}),
        json!({}),
    )
    .await
    .unwrap();
    let timed_out = h.wait_reason("slow", "BasetenUnavailable").await;
    let message = &timed_out.ready_condition().unwrap().message;
    assert!(message.contains("timed out"), "{message}");
    h.wait_reason("slow", "Synced").await;
    assert_eq!(h.baseten_secret("slow").await.unwrap().value, "patient");
    // The slow request may still land after its timeout; then one retry: at most two.
    assert!(h.upsert_requests().await <= 2);
}
