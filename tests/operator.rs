//! The operator end to end: the real binary against the real control plane and the Baseten
//! emulator. Each test has its own namespace, emulator and operator process.

mod common;

use std::time::{Duration, Instant};

use baseten_secrets_operator::BasetenSecret;
use common::operator::{API_KEY, Harness, OperatorOptions, TENANT_KEY, TENANT_ORG, WAIT, metric};
use kube::api::{Patch, PatchParams};
use serde_json::json;

fn spec(secret: &str, key: &str) -> serde_json::Value {
    json!({"secretRef": {"name": secret, "key": key}})
}

#[tokio::test]
async fn create_syncs_and_a_secret_update_arrives_within_two_seconds() {
    let h = Harness::start("op-create").await;
    h.apply_secret("hf-credentials", &[("token", b"hf_first_value")], json!({}))
        .await;
    h.apply_bts(
        "hf-access-token",
        json!({"secretRef": {"name": "hf-credentials", "key": "token"}, "basetenName": "hf_access_token"}),
        json!({}),
    )
    .await
    .unwrap();

    let synced = h.wait_reason("hf-access-token", "Synced").await;
    let stored = h
        .baseten_secret("hf_access_token")
        .await
        .expect("written to Baseten");
    assert_eq!(stored.value, "hf_first_value");
    assert_eq!(stored.writes, 1);
    let status = synced.status.unwrap();
    assert_eq!(
        status.created_at.as_deref(),
        Some(stored.created_at.as_str())
    );
    assert_eq!(status.secret_id.as_deref(), Some(stored.id.as_str()));
    assert_eq!(status.team_name.as_deref(), Some("Default Team"));
    assert_eq!(status.baseten_name.as_deref(), Some("hf_access_token"));
    assert!(status.last_sync_time.is_some());
    assert!(
        status
            .synced_hash
            .as_deref()
            .unwrap()
            .starts_with("hmac-sha256:")
    );
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "True");
    assert_eq!(status.observed_generation, Some(1));

    let changed_at = Instant::now();
    h.apply_secret(
        "hf-credentials",
        &[("token", b"hf_second_value")],
        json!({}),
    )
    .await;
    let updated = h
        .wait_baseten("hf_access_token", "the new value", |s| {
            s.value == "hf_second_value"
        })
        .await;
    let latency = changed_at.elapsed();
    assert!(
        latency < Duration::from_secs(2),
        "the update took {latency:?}"
    );
    assert_eq!(updated.writes, 2);
    assert_eq!(updated.id, stored.id, "Baseten keeps the id across updates");
    let after = h
        .wait_bts("hf-access-token", "a new syncedHash", |o| {
            o.status.as_ref().unwrap().synced_hash != status.synced_hash
        })
        .await
        .status
        .unwrap();
    assert_eq!(after.created_at, status.created_at);
    assert!(after.last_sync_time.unwrap().0 >= status.last_sync_time.unwrap().0);

    // One event for the transition to Synced; the rotation is no transition.
    h.wait_events("hf-access-token", 1).await;
    h.barrier().await;
    assert_eq!(
        h.wait_events("hf-access-token", 1).await,
        [("Synced".to_string(), "Normal".to_string())]
    );
}

#[tokio::test]
async fn a_push_reads_its_secret_once_and_our_own_status_write_reads_nothing() {
    let h = Harness::start("op-oneread").await;
    h.synced("once", "creds", "token", b"first").await;
    h.barrier().await;
    // Each read of the Secret ends in exactly one decision.
    let reads = || h.logged("once", "decided");
    assert_eq!(reads(), 1, "one read for the first push");
    assert!(
        h.logged("once", "nothing changed since the last read") >= 1,
        "the reconcile our status write caused ran, without a read"
    );

    h.apply_secret("creds", &[("token", b"second")], json!({}))
        .await;
    h.wait_baseten("once", "the second value", |s| s.value == "second")
        .await;
    h.barrier().await;
    assert_eq!(reads(), 2, "one more read for the second push");
    assert!(h.logged("once", "nothing changed since the last read") >= 2);
}

#[tokio::test]
async fn reapplies_label_changes_and_restarts_write_nothing() {
    let mut h = Harness::start("op-idle").await;
    h.apply_secret("creds", &[("token", b"steady")], json!({"team": "a"}))
        .await;
    h.apply_bts("steady", spec("creds", "token"), json!({}))
        .await
        .unwrap();
    let first = h.wait_reason("steady", "Synced").await;
    assert_eq!(h.baseten_secret("steady").await.unwrap().writes, 1);

    // A GitOps tool re-applies the same Secret, then someone changes only its labels.
    h.apply_secret("creds", &[("token", b"steady")], json!({"team": "a"}))
        .await;
    h.apply_secret("creds", &[("token", b"steady")], json!({"team": "b"}))
        .await;
    h.barrier().await;
    // The operator restarts.
    h.start_operator();
    h.barrier().await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    assert_eq!(
        h.baseten_secret("steady").await.unwrap().writes,
        1,
        "no extra upserts"
    );
    let now = h.bts_api().get("steady").await.unwrap();
    assert_eq!(
        now.metadata.resource_version, first.metadata.resource_version,
        "no status write either"
    );
}

#[tokio::test]
async fn a_missing_secret_is_reported_then_synced_once_created() {
    let h = Harness::start("op-missing").await;
    h.apply_bts("later", spec("not-yet", "token"), json!({}))
        .await
        .unwrap();
    let waiting = h.wait_reason("later", "SecretNotFound").await;
    let ready = waiting.ready_condition().unwrap();
    assert_eq!(ready.status, "False");
    assert!(ready.message.contains("not-yet"), "{}", ready.message);
    assert!(h.baseten_secrets().await.is_empty());

    // Creating the Secret is enough; the BasetenSecret is not touched.
    h.apply_secret("not-yet", &[("token", b"arrived")], json!({}))
        .await;
    let synced = h.wait_reason("later", "Synced").await;
    assert_eq!(synced.metadata.generation, waiting.metadata.generation);
    assert_eq!(h.baseten_secret("later").await.unwrap().value, "arrived");
    assert_eq!(
        h.wait_events("later", 2).await,
        [
            ("SecretNotFound".to_string(), "Warning".to_string()),
            ("Synced".to_string(), "Normal".to_string())
        ]
    );
}

#[tokio::test]
async fn a_missing_key_and_a_non_utf8_value_are_conditions_not_writes() {
    let h = Harness::start("op-badvalue").await;
    h.apply_secret(
        "creds",
        &[("other", b"x"), ("binary", &[0xff, 0xfe, 0x00])],
        json!({}),
    )
    .await;
    h.apply_bts("nokey", spec("creds", "token"), json!({}))
        .await
        .unwrap();
    h.apply_bts("binary", spec("creds", "binary"), json!({}))
        .await
        .unwrap();

    let nokey = h.wait_reason("nokey", "KeyNotFound").await;
    let message = &nokey.ready_condition().unwrap().message;
    assert!(
        message.contains("\"token\"") && message.contains("other"),
        "{message}"
    );
    let binary = h.wait_reason("binary", "InvalidValue").await;
    assert!(binary.ready_condition().unwrap().message.contains("UTF-8"));
    assert!(h.baseten_secrets().await.is_empty(), "nothing was written");

    // Fixing the Secret heals both.
    h.apply_secret(
        "creds",
        &[("token", b"t"), ("binary", b"now text")],
        json!({}),
    )
    .await;
    h.wait_reason("nokey", "Synced").await;
    h.wait_reason("binary", "Synced").await;
}

#[tokio::test]
async fn invalid_baseten_names_are_rejected_by_the_apiserver() {
    let h = Harness::start("op-names").await;
    for bad in [
        "has/slash",
        ".",
        "..",
        "spaces are bad",
        &"x".repeat(254),
        "",
    ] {
        let result = h
            .apply_bts(
                "bad",
                json!({"secretRef": {"name": "s", "key": "k"}, "basetenName": bad}),
                json!({}),
            )
            .await;
        match result {
            Err(kube::Error::Api(status)) => assert_eq!(status.code, 422, "{bad:?}: {status:?}"),
            other => panic!("{bad:?} was accepted: {:?}", other.map(|_| ())),
        }
    }
    for bad_ref in [
        json!({"name": "Not_A_DNS_Name", "key": "k"}),
        json!({"name": "s", "key": "a/b"}),
    ] {
        let result = h
            .apply_bts("bad", json!({"secretRef": bad_ref}), json!({}))
            .await;
        assert!(
            matches!(result, Err(kube::Error::Api(ref s)) if s.code == 422),
            "{bad_ref}"
        );
    }
    h.apply_bts(
        "good",
        json!({"secretRef": {"name": "s", "key": "k"}, "basetenName": "A-b.c_9"}),
        json!({}),
    )
    .await
    .expect("a valid name is accepted");
}

#[tokio::test]
async fn refresh_intervals_over_a_day_are_rejected_by_the_apiserver() {
    let h = Harness::start("op-intervals").await;
    let apply = |interval: &str| {
        h.apply_bts(
            "interval",
            json!({"secretRef": {"name": "s", "key": "k"}, "refreshInterval": interval}),
            json!({}),
        )
    };
    for (bad, says) in [
        ("25h", "refreshInterval may be at most 24h"),
        ("24h1ns", "refreshInterval may be at most 24h"),
        ("99999h", "refreshInterval may be at most 24h"),
        ("4000000000000000h4000000000000000h", "spec.refreshInterval"),
        ("1s1s1s1s1s", "spec.refreshInterval"),
        ("soon", "spec.refreshInterval"),
    ] {
        match apply(bad).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{bad:?}: {status:?}");
                assert!(status.message.contains(says), "{bad:?}: {}", status.message);
            }
            other => panic!("{bad:?} was accepted: {:?}", other.map(|_| ())),
        }
    }
    for good in ["24h", "0", "1h30m", "1.5h", "300ms", "86400s"] {
        apply(good)
            .await
            .unwrap_or_else(|e| panic!("{good:?} was refused: {e}"));
    }
}

#[tokio::test]
async fn suspend_stops_writes_and_resuming_writes_the_latest_value() {
    let h = Harness::start("op-suspend").await;
    h.synced("paused", "creds", "token", b"one").await;

    let mut suspended = spec("creds", "token");
    suspended["suspend"] = json!(true);
    h.apply_bts("paused", suspended, json!({})).await.unwrap();
    let object = h.wait_reason("paused", "Suspended").await;
    assert!(
        object.status.as_ref().unwrap().secret_id.is_some(),
        "status keeps the last write"
    );
    h.apply_secret("creds", &[("token", b"two")], json!({}))
        .await;
    h.barrier().await;
    let stored = h.baseten_secret("paused").await.unwrap();
    assert_eq!((stored.value.as_str(), stored.writes), ("one", 1));

    h.apply_bts("paused", spec("creds", "token"), json!({}))
        .await
        .unwrap();
    h.wait_reason("paused", "Synced").await;
    let stored = h.baseten_secret("paused").await.unwrap();
    assert_eq!((stored.value.as_str(), stored.writes), ("two", 2));
}

#[tokio::test]
async fn force_sync_annotation_writes_exactly_once_per_value() {
    let h = Harness::start("op-force").await;
    h.synced("forced", "creds", "token", b"same").await;

    let annotate = |value: &str| {
        Patch::Merge(json!({"metadata": {"annotations": {"baseten.co/force-sync": value}}}))
    };
    h.bts_api()
        .patch("forced", &PatchParams::default(), &annotate("1"))
        .await
        .unwrap();
    h.wait_bts("forced", "the force-sync token", |o| {
        o.status.as_ref().unwrap().force_sync_token.as_deref() == Some("1")
    })
    .await;
    h.barrier().await;
    assert_eq!(h.baseten_secret("forced").await.unwrap().writes, 2);

    h.bts_api()
        .patch("forced", &PatchParams::default(), &annotate("2"))
        .await
        .unwrap();
    h.wait_baseten("forced", "a third write", |s| s.writes == 3)
        .await;
    h.barrier().await;
    assert_eq!(h.baseten_secret("forced").await.unwrap().writes, 3);
}

#[tokio::test]
async fn a_wrong_api_key_is_unauthorized_without_hot_looping() {
    let h = Harness::start_with(
        "op-badkey",
        OperatorOptions {
            api_key: "wrong-key".into(),
            ..Default::default()
        },
    )
    .await;
    h.apply_secret("creds", &[("token", b"v")], json!({})).await;
    h.apply_bts("denied", spec("creds", "token"), json!({}))
        .await
        .unwrap();
    let object = h.wait_reason("denied", "Unauthorized").await;
    let message = &object.ready_condition().unwrap().message;
    assert!(
        message.contains("API key") && !message.contains("wrong-key"),
        "{message}"
    );
    let seen = h.upsert_requests().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let later = h.upsert_requests().await;
    assert_eq!(
        later,
        seen,
        "{} more upserts in 4 s with a refused key",
        later - seen
    );
    assert_eq!(later, 1, "one attempt, then a wait of minutes");
}

#[tokio::test]
async fn baseten_outages_and_throttling_are_retried_until_synced() {
    let mut h = Harness::start("op-outage").await;
    h.fault(json!({"path_prefix": "/v1/secrets", "method": "POST", "status": 503, "count": 2}))
        .await;
    h.apply_secret("creds", &[("token", b"eventually")], json!({}))
        .await;
    h.apply_bts("flaky", spec("creds", "token"), json!({}))
        .await
        .unwrap();
    h.wait_bts("flaky", "BasetenUnavailable", |o| {
        o.ready_condition()
            .is_some_and(|c| c.reason == "BasetenUnavailable")
    })
    .await;
    h.wait_reason("flaky", "Synced").await;
    assert_eq!(h.baseten_secret("flaky").await.unwrap().value, "eventually");

    h.fault(json!({"path_prefix": "/v1/secrets", "method": "POST", "status": 429, "count": 1,
                   "body": {"error": "Rate limit exceeded. Please try again later.", "retry_after": 2}}))
        .await;
    let throttled_at = Instant::now();
    h.apply_secret("creds", &[("token", b"after throttling")], json!({}))
        .await;
    h.wait_bts("flaky", "RateLimited", |o| {
        o.ready_condition()
            .is_some_and(|c| c.reason == "RateLimited")
    })
    .await;
    h.wait_baseten("flaky", "the value after throttling", |s| {
        s.value == "after throttling"
    })
    .await;
    assert!(
        throttled_at.elapsed() >= Duration::from_secs(2),
        "the retry honoured retry_after"
    );
    h.wait_reason("flaky", "Synced").await;

    // An absurd retry_after does not crash the operator: the wait is cut to 5 minutes
    // (for the whole endpoint, as Baseten counts per key).
    h.fault(json!({"path_prefix": "/v1/secrets", "method": "POST", "status": 429, "count": 1,
                   "body": {"error": "Rate limit exceeded. Please try again later.", "retry_after": 1e300}}))
        .await;
    h.apply_secret("creds", &[("token", b"absurd wait")], json!({}))
        .await;
    let throttled = h.wait_reason("flaky", "RateLimited").await;
    assert!(
        throttled
            .ready_condition()
            .unwrap()
            .message
            .contains("retry after 300s"),
        "{:?}",
        throttled.ready_condition()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(h.operator_running(), "the operator is still running");
    assert!(!h.operator_logs().contains("panicked"));
}

#[tokio::test]
async fn no_value_or_api_key_reaches_logs_status_or_events_even_at_trace() {
    let value = "sv-9c1f3b7a-unique-secret-value";
    let second = "sv-2e8d4a61-rotated-secret-value";
    let mut h = Harness::start_with(
        "op-hygiene",
        OperatorOptions {
            rust_log: "trace".into(),
            log_format: "json",
            ..Default::default()
        },
    )
    .await;
    h.apply_secret("creds", &[("token", value.as_bytes())], json!({}))
        .await;
    h.apply_bts("hygiene", spec("creds", "token"), json!({}))
        .await
        .unwrap();
    h.wait_reason("hygiene", "Synced").await;
    h.fault(json!({"path_prefix": "/v1/secrets", "status": 500, "count": 1}))
        .await;
    h.apply_secret("creds", &[("token", second.as_bytes())], json!({}))
        .await;
    h.wait_baseten("hygiene", "the rotated value", |s| s.value == second)
        .await;
    h.wait_reason("hygiene", "Synced").await;
    h.start_operator();
    h.barrier().await;
    h.stop_operator();

    assert_nothing_secret_anywhere(&h, &[value, second, API_KEY]).await;
}

/// No `needles` (values, keys) in the operator's JSON trace log, in plain or base64 form,
/// nor in any resource or event of the test's namespace.
async fn assert_nothing_secret_anywhere(h: &Harness, needles: &[&str]) {
    use base64::Engine;
    let logs = h.operator_logs();
    assert!(
        logs.len() > 10_000,
        "trace logging produced output ({} bytes)",
        logs.len()
    );
    assert!(logs.contains("wrote secret to Baseten"));
    for line in logs.lines().filter(|l| !l.is_empty()) {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not a JSON log line: {line}"
        );
    }
    for needle in needles {
        let b64 = base64::engine::general_purpose::STANDARD.encode(needle);
        for form in [needle.to_string(), b64[..b64.len() - 4].to_string()] {
            assert!(!logs.contains(&form), "the logs contain {form:?}");
        }
    }
    let objects =
        serde_json::to_string(&h.bts_api().list(&Default::default()).await.unwrap()).unwrap();
    let events =
        kube::Api::<k8s_openapi::api::events::v1::Event>::namespaced(h.client.clone(), &h.ns)
            .list(&Default::default())
            .await
            .unwrap();
    assert!(!events.items.is_empty(), "events were published");
    let events = serde_json::to_string(&events).unwrap();
    for needle in needles {
        assert!(!objects.contains(needle), "a resource contains a secret");
        assert!(!events.contains(needle), "an event contains a secret");
    }
}

/// The same over HTTPS, and with a tenant's own API key from a Secret (apiKeyRef).
#[tokio::test]
async fn no_value_or_key_reaches_logs_over_https_or_with_a_tenant_key_at_trace() {
    let value = "sv-4b7e0c93-unique-tenant-value";
    let mut h = Harness::start_with(
        "op-hygiene-tls",
        OperatorOptions {
            rust_log: "trace".into(),
            log_format: "json",
            tls: true,
            trust_test_ca: true,
            ..Default::default()
        },
    )
    .await;
    h.apply_secret("creds", &[("token", value.as_bytes())], json!({}))
        .await;
    h.apply_secret(
        "tenant-key",
        &[("apiKey", TENANT_KEY.as_bytes())],
        json!({}),
    )
    .await;
    let tenant = json!({
        "secretRef": {"name": "creds", "key": "token"},
        "apiKeyRef": {"name": "tenant-key", "key": "apiKey"},
    });
    h.apply_bts("tenant", tenant, json!({})).await.unwrap();
    h.apply_bts("operator", spec("creds", "token"), json!({}))
        .await
        .unwrap();
    h.wait_reason("tenant", "Synced").await;
    h.wait_reason("operator", "Synced").await;
    let stored = h.baseten_secret_of(TENANT_ORG, "tenant").await.unwrap();
    assert_eq!(stored.value, value, "written with the tenant's key");
    h.start_operator();
    h.barrier().await;
    h.stop_operator();
    assert!(
        h.operator_logs().contains("https://"),
        "the operator spoke HTTPS"
    );
    assert_nothing_secret_anywhere(&h, &[value, TENANT_KEY, API_KEY]).await;
}

#[tokio::test]
async fn one_secret_read_by_two_resources_updates_both() {
    let h = Harness::start("op-shared").await;
    h.apply_secret("creds", &[("token", b"v1"), ("other", b"o1")], json!({}))
        .await;
    h.apply_bts("first", spec("creds", "token"), json!({}))
        .await
        .unwrap();
    h.apply_bts("second", spec("creds", "other"), json!({}))
        .await
        .unwrap();
    h.wait_reason("first", "Synced").await;
    h.wait_reason("second", "Synced").await;

    h.apply_secret("creds", &[("token", b"v2"), ("other", b"o2")], json!({}))
        .await;
    h.wait_baseten("first", "v2", |s| s.value == "v2").await;
    h.wait_baseten("second", "o2", |s| s.value == "o2").await;

    // Pointing one resource at another Secret moves its trigger there.
    h.apply_secret("moved", &[("token", b"m1")], json!({}))
        .await;
    h.apply_bts("second", spec("moved", "token"), json!({}))
        .await
        .unwrap();
    h.wait_baseten("second", "m1", |s| s.value == "m1").await;
    h.apply_secret("moved", &[("token", b"m2")], json!({}))
        .await;
    h.wait_baseten("second", "m2", |s| s.value == "m2").await;
    // The old Secret no longer triggers the moved resource: a change to it reconciles
    // only `first` (a stale index entry would reconcile `second` too).
    h.barrier().await;
    let before = h.reconciles_of("second");
    assert!(before > 0, "reconciles are counted");
    h.apply_secret("creds", &[("token", b"v3"), ("other", b"o3")], json!({}))
        .await;
    h.wait_baseten("first", "v3", |s| s.value == "v3").await;
    h.barrier().await;
    assert_eq!(
        h.reconciles_of("second"),
        before,
        "a change of the old Secret reconciled the moved resource"
    );
    assert_eq!(h.baseten_secret("second").await.unwrap().value, "m2");
}

#[tokio::test]
async fn health_and_metrics_move_as_the_operator_works() {
    let h = Harness::start("op-metrics").await;
    assert_eq!(h.operator_get("/livez").await, (200, "ok".to_string()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.operator_get("/readyz").await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "never ready: {:?}\n{}",
            h.operator_get("/readyz").await,
            h.operator_logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let value = "metric-test-value-7d1c";
    h.synced("measured", "creds", "token", value.as_bytes())
        .await;
    h.barrier().await;
    let (status, text) = h.operator_get("/metrics").await;
    assert_eq!(status, 200);
    let p = "baseten_secrets_operator";
    let post =
        format!("{p}_baseten_requests_total{{endpoint=\"POST /v1/secrets\",status=\"2xx\"}}");
    // The test's resource, and the barrier's canary written and then changed.
    assert_eq!(metric(&text, &post), Some(3.0), "{text}");
    assert_eq!(
        metric(&text, &format!("{p}_baseten_writes_total")),
        Some(3.0)
    );
    assert_eq!(
        metric(&text, &format!("{p}_resources{{reason=\"Synced\"}}")),
        Some(2.0)
    );
    let reconciles = metric(&text, &format!("{p}_reconciles_total")).unwrap();
    assert!(reconciles >= 2.0);
    assert_eq!(metric(&text, &format!("{p}_leader")), Some(1.0));
    // Every reconcile and every request is timed.
    assert_eq!(
        metric(&text, &format!("{p}_reconcile_duration_seconds_count")),
        Some(reconciles)
    );
    assert!(
        metric(
            &text,
            &format!("{p}_baseten_request_duration_seconds_count")
        )
        .unwrap()
            >= 2.0
    );

    // The Secret changes but its value does not: read, compared, nothing written.
    let skipped = metric(&text, &format!("{p}_baseten_writes_skipped_total")).unwrap();
    h.apply_secret(
        "creds",
        &[("token", value.as_bytes())],
        json!({"touched": "yes"}),
    )
    .await;
    let deadline = Instant::now() + WAIT;
    while h
        .operator_metric("baseten_writes_skipped_total")
        .await
        .unwrap()
        <= skipped
    {
        assert!(Instant::now() < deadline, "{}", h.operator_logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        h.operator_metric("baseten_writes_total").await,
        Some(3.0),
        "a write of an unchanged value"
    );

    // A 503 then a retry: the failure and the 5xx are counted, by fixed labels only.
    h.fault(json!({"path_prefix": "/v1/secrets", "method": "POST", "status": 503, "count": 1}))
        .await;
    h.apply_secret("creds", &[("token", b"rotated-metric-value")], json!({}))
        .await;
    h.wait_baseten("measured", "the rotated value", |s| {
        s.value == "rotated-metric-value"
    })
    .await;
    h.barrier().await;
    let (_, text) = h.operator_get("/metrics").await;
    let failed =
        format!("{p}_baseten_requests_total{{endpoint=\"POST /v1/secrets\",status=\"5xx\"}}");
    assert_eq!(metric(&text, &failed), Some(1.0), "{text}");
    assert_eq!(
        metric(
            &text,
            &format!("{p}_reconcile_failures_total{{reason=\"baseten_unavailable\"}}")
        ),
        Some(1.0)
    );
    assert!(metric(&text, &format!("{p}_reconciles_total")).unwrap() > reconciles);
    for secret in [value, "rotated-metric-value", API_KEY, "measured", &h.ns] {
        assert!(!text.contains(secret), "{secret:?} in /metrics");
    }
}

// Multi-threaded: the emulator runs in this test's runtime and must keep answering while
// the test blocks waiting for the process to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_write_in_flight_and_exits_0_within_10_seconds() {
    let mut h = Harness::start("drain").await;
    let before = h.synced("drain", "drain", "token", b"v1").await;
    let writes = h.logged("drain", "decision=Changed");
    // Baseten answers the next write after 3 s: SIGTERM arrives while it is in flight.
    h.fault(json!({"path_prefix": "/v1/secrets", "method": "POST", "latency_ms": 3000}))
        .await;
    h.apply_secret("drain", &[("token", b"v2")], json!({}))
        .await;
    let deadline = Instant::now() + WAIT;
    while h.logged("drain", "decision=Changed") == writes {
        assert!(Instant::now() < deadline, "{}", h.operator_logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        h.baseten_secret("drain").await.unwrap().value,
        "v1",
        "the write is still in flight"
    );
    let (code, took) = h.terminate_operator(Duration::from_secs(10));
    assert_eq!(code, Some(0), "exit status; {}", h.operator_logs());
    eprintln!("exited {took:?} after SIGTERM");
    // It stopped because the write was done, not because the drain limit ran out.
    assert!(
        !h.operator_logs().contains("drain limit"),
        "{}",
        h.operator_logs()
    );
    assert_eq!(
        h.baseten_secret("drain").await.unwrap().value,
        "v2",
        "{}",
        h.operator_logs()
    );
    let after = h.bts_api().get("drain").await.unwrap();
    let hash = |o: &BasetenSecret| o.status.as_ref().unwrap().synced_hash.clone();
    assert_ne!(
        hash(&after),
        hash(&before),
        "the status records the finished write before the process exits"
    );
}

// Multi-threaded: the relay and the emulator run in this test's runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_apiserver_connection_fails_the_call_and_the_retry_gets_through() {
    let h = Harness::start_with(
        "dead-conn",
        OperatorOptions {
            kube_proxy: true,
            kube_timeout_seconds: Some(3),
            ..Default::default()
        },
    )
    .await;
    let before = h.synced("dead", "dead", "token", b"v1").await;
    let decided = h.logged("dead", "decision=Changed");
    // Baseten holds the next write 1 s; meanwhile every connection the operator has to the
    // apiserver goes dead, the one its status patch will reuse included (idle for less than
    // the 3 s timeout, so still in the pool).
    h.fault(
        json!({"path_prefix": "/v1/secrets", "method": "POST", "latency_ms": 1000, "count": 1}),
    )
    .await;
    h.apply_secret("dead", &[("token", b"v2")], json!({})).await;
    let deadline = Instant::now() + WAIT;
    while h.logged("dead", "decision=Changed") == decided {
        assert!(Instant::now() < deadline, "{}", h.operator_logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.kill_kube_connections();
    h.wait_baseten("dead", "the new value", |s| s.value == "v2")
        .await;
    // The status patch on the dead connection fails after 3 s of silence and the retry, on
    // a new connection, records the write.
    let hash = |o: &BasetenSecret| o.status.as_ref().unwrap().synced_hash.clone();
    let after = h
        .wait_bts("dead", "the write recorded in status", |o| {
            hash(o) != hash(&before)
        })
        .await;
    assert_eq!(after.ready_condition().unwrap().reason, "Synced");
    assert!(
        h.operator_logs().contains("Kubernetes API request failed"),
        "{}",
        h.operator_logs()
    );
}
