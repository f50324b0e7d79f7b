//! One HTTP listener for operations: `/livez` (the process serves), `/readyz` (the caches
//! are synced, or a standby waits) and `/metrics` (Prometheus text format).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use kube::runtime::reflector::Store;
use tokio::net::TcpListener;
use tracing::info;

use crate::crd::BasetenSecret;
use crate::metrics::{CONTENT_TYPE, Metrics};

/// What the endpoints report on.
#[derive(Clone)]
pub struct Health {
    /// Set once the resource cache has been listed.
    pub ready: Arc<AtomicBool>,
    /// Set while this process waits for the leader Lease (live, ready, and idle).
    pub standby: Arc<AtomicBool>,
    /// The operator's counters.
    pub metrics: Arc<Metrics>,
    /// The resource cache, for resources by Ready reason.
    pub store: Store<BasetenSecret>,
}

async fn livez() -> &'static str {
    "ok"
}

async fn readyz(State(health): State<Health>) -> impl IntoResponse {
    if health.standby.load(Ordering::SeqCst) {
        // A standby is ready: it serves its purpose by waiting, and counting it keeps
        // rollouts and PodDisruptionBudgets moving.
        (StatusCode::OK, "ok (standby)")
    } else if health.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches are not synced yet")
    }
}

async fn metrics(State(health): State<Health>) -> impl IntoResponse {
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for object in health.store.state() {
        let reason = object
            .ready_condition()
            .map_or("Unknown", |c| c.reason.as_str())
            .to_string();
        *reasons.entry(reason).or_default() += 1;
    }
    (
        [("content-type", CONTENT_TYPE)],
        health
            .metrics
            .render(&reasons, !health.standby.load(Ordering::SeqCst)),
    )
}

/// Binds `addr` and logs the address actually bound (useful with port 0).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on --http-addr {addr}: {e}"))?;
    info!(addr = %listener.local_addr()?, "serving /livez, /readyz and /metrics");
    Ok(listener)
}

/// Serves the endpoints until the task is dropped; returns only when serving fails.
pub async fn serve(listener: TcpListener, health: Health) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health);
    axum::serve(listener, app)
        .await
        .map_err(|e| anyhow::anyhow!("serving /livez, /readyz and /metrics: {e}"))
}
