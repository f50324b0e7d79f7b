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

#[tokio::test]
async fn a_server_that_never_completes_the_connection_hits_the_connect_timeout() {
    // Accepts TCP connections and never answers: the TLS handshake, part of connecting,
    // never completes.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let h = Harness::start_with(
        "fault-connect",
        OperatorOptions {
            baseten_url: Some(url),
            ..Default::default()
        },
    )
    .await;
    h.apply_secret("creds", &[("token", b"unsent")], json!({}))
        .await;
    let started = std::time::Instant::now();
    h.apply_bts(
        "stuck",
        json!({"secretRef": {"name": "creds", "key": "token"}}),
        json!({}),
    )
    .await
    .unwrap();
    let unavailable = h.wait_reason("stuck", "BasetenUnavailable").await;
    let waited = started.elapsed();
    let message = &unavailable.ready_condition().unwrap().message;
    assert!(message.contains("timed out"), "{message}");
    // The connect timeout (5 s) ends it, well before the request timeout (15 s).
    assert!(
        waited >= std::time::Duration::from_secs(4) && waited < std::time::Duration::from_secs(14),
        "gave up after {waited:?}"
    );
    held.abort();
}

/// One row of the fault table.
struct Row {
    fault: &'static str,
    resources: usize,
    upserts: usize,
    bound: usize,
    throttled: usize,
    /// Requests the operator's own rate limiter held back (its /metrics).
    limiter_waits: f64,
    seconds: f64,
}

/// Applies `n` Secrets and resources reading them; returns their names.
async fn apply_batch(h: &Harness, prefix: &str, n: usize) -> Vec<String> {
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    for name in &names {
        h.apply_secret(
            name,
            &[("token", format!("value of {name}").as_bytes())],
            json!({}),
        )
        .await;
        h.apply_bts(
            name,
            json!({"secretRef": {"name": name, "key": "token"}}),
            json!({}),
        )
        .await
        .unwrap();
    }
    names
}

/// Waits until every resource is Synced and Baseten holds each Secret's current value.
async fn all_synced(h: &Harness, names: &[String]) {
    for name in names {
        h.wait_reason(name, "Synced").await;
        h.wait_baseten(name, "the current value", |s| {
            s.value == format!("value of {name}")
        })
        .await;
    }
}

async fn throttled(h: &Harness) -> usize {
    h.baseten_requests()
        .await
        .iter()
        .filter(|r| r.status == 429)
        .count()
}

async fn limiter_waits(h: &Harness) -> f64 {
    h.operator_metric("rate_limiter_waits_total").await.unwrap()
}

/// Runs one fault against a fresh world of `n` resources and checks the outcome.
async fn scenario(
    fault: &'static str,
    options: OperatorOptions,
    n: usize,
    bound: usize,
    inject: impl AsyncFnOnce(&mut Harness),
) -> Row {
    let started = std::time::Instant::now();
    let mut h = Harness::start_with("fault-table", options).await;
    inject(&mut h).await;
    let names = apply_batch(&h, "r", n).await;
    all_synced(&h, &names).await;
    let row = Row {
        fault,
        resources: n,
        upserts: h.upsert_requests().await,
        bound,
        throttled: throttled(&h).await,
        limiter_waits: limiter_waits(&h).await,
        seconds: started.elapsed().as_secs_f64(),
    };
    assert!(
        row.upserts <= bound,
        "{fault}: {} upserts, bound {bound}",
        row.upserts
    );
    row
}

#[tokio::test]
async fn every_fault_ends_with_every_value_in_baseten_within_a_bounded_number_of_writes() {
    const N: usize = 20;
    let mut rows = Vec::new();
    rows.push(
        scenario("429 burst (10, retry_after 1 s)", OperatorOptions::default(), N, N + 10, async |h| {
            h.fault(json!({"path_prefix": "/v1/secrets", "method": "POST", "status": 429, "count": 10,
                           "body": {"error": "Rate limit exceeded. Please try again later.", "retry_after": 1}}))
                .await;
        })
        .await,
    );
    assert!(
        rows[0].limiter_waits >= 1.0,
        "a 429 pauses the endpoint, so the writes behind it wait: {} counted",
        rows[0].limiter_waits
    );
    rows.push(
        scenario("503 burst (10)", OperatorOptions::default(), N, N + 10, async |h| {
            h.fault(json!({"path_prefix": "/v1/secrets", "method": "POST", "status": 503, "count": 10}))
                .await;
        })
        .await,
    );
    rows.push(
        scenario(
            "latency 2.5 s past a 1 s timeout (3)",
            OperatorOptions {
                baseten_timeout_seconds: Some(1),
                ..Default::default()
            },
            N,
            N + 3,
            async |h| {
                h.fault(json!({"path_prefix": "/v1/secrets", "method": "POST", "latency_ms": 2500, "count": 3}))
                    .await;
            },
        )
        .await,
    );
    rows.push(
        scenario("dropped connections (5)", OperatorOptions::default(), N, N + 5, async |h| {
            h.fault(json!({"path_prefix": "/v1/secrets", "method": "POST", "drop_connection": true, "count": 5}))
                .await;
        })
        .await,
    );
    rows.push(
        scenario("HTML 502 from a proxy (5)", OperatorOptions::default(), N, N + 5, async |h| {
            h.fault(json!({"path_prefix": "/v1/secrets", "method": "POST", "status": 502, "count": 5,
                           "raw_body": "<html><body>Bad gateway</body></html>", "content_type": "text/html"}))
                .await;
        })
        .await,
    );

    // SIGKILL in the middle of a batch: at most the writes in flight are repeated.
    let started = std::time::Instant::now();
    let mut h = Harness::start("fault-table").await;
    h.fault(
        json!({"path_prefix": "/v1/secrets", "method": "POST", "latency_ms": 300, "count": 1000}),
    )
    .await;
    let names = apply_batch(&h, "k", N).await;
    while h.upsert_requests().await < 5 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    h.kill_operator();
    h.start_operator();
    all_synced(&h, &names).await;
    let upserts = h.upsert_requests().await;
    // Concurrency 4: the writes in flight at the kill may be sent again.
    assert!(upserts <= N + 4, "SIGKILL: {upserts} upserts");
    rows.push(Row {
        fault: "operator SIGKILLed mid-batch, restarted",
        resources: N,
        upserts,
        bound: N + 4,
        throttled: throttled(&h).await,
        limiter_waits: limiter_waits(&h).await,
        seconds: started.elapsed().as_secs_f64(),
    });
    drop(h);

    // One Secret updated 20 times in quick succession: the last value wins.
    let started = std::time::Instant::now();
    let h = Harness::start("fault-table").await;
    h.synced("hot", "hot", "token", b"value 0").await;
    for i in 1..=20 {
        h.apply_secret(
            "hot",
            &[("token", format!("value {i}").as_bytes())],
            json!({}),
        )
        .await;
    }
    h.wait_baseten("hot", "the last value", |s| s.value == "value 20")
        .await;
    h.barrier().await;
    let stored = h.baseten_secret("hot").await.unwrap();
    assert_eq!(
        stored.value, "value 20",
        "no stale write landed after the last"
    );
    rows.push(Row {
        fault: "one Secret updated 20 times at once",
        resources: 1,
        upserts: stored.writes as usize,
        bound: 21,
        throttled: throttled(&h).await,
        limiter_waits: limiter_waits(&h).await,
        seconds: started.elapsed().as_secs_f64(),
    });
    drop(h);

    // 200 resources against an emulator that allows 20 requests/s: no 429 storm.
    let row = scenario(
        "200 resources, Baseten limited to 20/s",
        OperatorOptions {
            emulator_rate_limit: Some(20),
            ..Default::default()
        },
        200,
        260,
        async |_| {},
    )
    .await;
    assert!(
        row.throttled <= 60,
        "a 429 storm: {} answers 429 for 200 writes",
        row.throttled
    );
    rows.push(row);

    let mut table = String::from(
        "| fault | resources | upserts | bound | 429s | limiter waits | seconds |\n|---|---|---|---|---|---|---|\n",
    );
    for row in &rows {
        table.push_str(&format!(
            "| {} | {} | {} | ≤ {} | {} | {} | {:.1} |\n",
            row.fault,
            row.resources,
            row.upserts,
            row.bound,
            row.throttled,
            row.limiter_waits,
            row.seconds
        ));
    }
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fault-table.md");
    std::fs::write(&out, &table).unwrap();
    println!("{table}");
}

/// One tenant's throttled key must not hold the reconcile slots other tenants' writes need:
/// a write that would wait long for its key's limiter goes back to the queue instead.
#[tokio::test]
async fn a_throttled_key_never_stalls_the_writes_of_another_key() {
    use common::operator::{TENANT_KEY, TENANT_ORG};
    let h = Harness::start("fault-tenants").await;
    h.apply_secret(
        "tenant-key",
        &[("apiKey", TENANT_KEY.as_bytes())],
        json!({}),
    )
    .await;
    let keys: Vec<String> = (0..20).map(|i| format!("k{i:02}")).collect();
    let values = |value: &'static [u8]| -> Vec<(&str, &[u8])> {
        keys.iter().map(|k| (k.as_str(), value)).collect()
    };
    h.apply_secret("a-creds", &values(b"a1"), json!({})).await;
    for key in &keys {
        let spec = json!({
            "secretRef": {"name": "a-creds", "key": key},
            "apiKeyRef": {"name": "tenant-key", "key": "apiKey"},
        });
        h.apply_bts(&format!("a-{key}"), spec, json!({}))
            .await
            .unwrap();
    }
    for key in &keys {
        h.wait_reason(&format!("a-{key}"), "Synced").await;
    }
    h.synced("b", "b-creds", "token", b"b1").await;

    // Baseten throttles tenant A's key for 90 s at its next write, while all 20 of its
    // resources have a new value to write.
    h.fault(json!({
        "path_prefix": "/v1/secrets", "method": "POST", "api_key": TENANT_KEY,
        "status": 429, "count": 1,
        "body": {"code": "RATE_LIMITED", "message": "Rate limit exceeded.", "retry_after": 90},
    }))
    .await;
    h.apply_secret("a-creds", &values(b"a2"), json!({})).await;
    // Every A resource has handled the change: written before the 429 came back (up to
    // the concurrency), or held back and saying so.
    let deadline = std::time::Instant::now() + common::operator::WAIT;
    let held = loop {
        let (mut held, mut pending) = (0, 0);
        for key in &keys {
            let name = format!("a-{key}");
            let object = h.bts_api().get(&name).await.unwrap();
            let reason = object.ready_condition().map(|c| c.reason.clone());
            let stored = h.baseten_secret_of(TENANT_ORG, &name).await;
            if reason.as_deref() == Some("RateLimited") {
                held += 1;
            } else if stored.is_none_or(|s| s.value != "a2") {
                pending += 1;
            }
        }
        if pending == 0 {
            break held;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{pending} A resources never handled the change"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(held >= 10, "only {held} of 20 A resources were held back");
    let throttled = h.baseten_requests().await;
    assert_eq!(
        throttled.iter().filter(|r| r.status == 429).count(),
        1,
        "one 429; the other writes waited without asking again"
    );

    // Tenant B's key is not throttled: its new value goes at once.
    let changed = std::time::Instant::now();
    h.apply_secret("b-creds", &[("token", b"b2")], json!({}))
        .await;
    h.wait_baseten("b", "tenant B's new value", |s| s.value == "b2")
        .await;
    let took = changed.elapsed();
    eprintln!("tenant B's write took {took:?} while tenant A's key was throttled");
    assert!(
        took < std::time::Duration::from_secs(1),
        "tenant B waited {took:?} behind tenant A's throttled key"
    );
}

#[tokio::test]
async fn a_resource_deleted_while_its_write_is_in_flight_ends_quietly() {
    let h = Harness::start("fault-gone").await;
    h.fault(
        json!({"path_prefix": "/v1/secrets", "method": "POST", "latency_ms": 1500, "count": 1}),
    )
    .await;
    h.apply_secret("creds", &[("token", b"late")], json!({}))
        .await;
    h.apply_bts(
        "brief",
        json!({"secretRef": {"name": "creds", "key": "token"}}),
        json!({}),
    )
    .await
    .unwrap();
    // The write has been decided and is waiting on the slow answer: delete the resource
    // (Retain keeps no finalizer, so it is gone at once).
    h.poll_until_logged("brief", "decision=FirstWrite").await;
    h.bts_api()
        .delete("brief", &Default::default())
        .await
        .unwrap();
    h.wait_baseten("brief", "the slow write", |s| s.value == "late")
        .await;
    h.barrier().await;
    assert_eq!(
        h.logged("brief", "the resource is gone; nothing to record"),
        1,
        "the status write met the deleted resource: {}",
        h.operator_logs()
    );
    let logs = h.operator_logs();
    assert!(
        !logs.contains(" WARN "),
        "a deleted resource is not a failure: {logs}"
    );
}
