//! The admin API for tests, under `/_admin`, without auth. The real Baseten has no such paths.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::state::{Emulator, Fault};

pub(crate) fn routes(state: Arc<Emulator>) -> Router {
    Router::new()
        .route("/_admin/secrets", get(secrets))
        .route("/_admin/requests", get(requests))
        .route("/_admin/faults", post(add_fault).delete(clear_faults))
        .route("/_admin/reset", post(reset))
        .with_state(state)
}

async fn secrets(State(state): State<Arc<Emulator>>) -> Response {
    Json(state.admin_secrets()).into_response()
}

/// Which part of the request log to return.
#[derive(serde::Deserialize)]
struct Since {
    /// Skip this many of the oldest entries, so a poller fetches only what is new.
    #[serde(default)]
    since: usize,
}

async fn requests(
    State(state): State<Arc<Emulator>>,
    Query(Since { since }): Query<Since>,
) -> Response {
    Json(state.requests_since(since)).into_response()
}

async fn add_fault(State(state): State<Arc<Emulator>>, Json(fault): Json<Fault>) -> StatusCode {
    state.add_fault(fault);
    StatusCode::NO_CONTENT
}

async fn clear_faults(State(state): State<Arc<Emulator>>) -> StatusCode {
    state.clear_faults();
    StatusCode::NO_CONTENT
}

async fn reset(State(state): State<Arc<Emulator>>) -> StatusCode {
    state.reset();
    StatusCode::NO_CONTENT
}
