//! Keeps Baseten secrets in sync with Kubernetes Secrets.
//!
//! A `BasetenSecret` names a key of a Secret; the operator pushes its value to Baseten's
//! management API when it changes, and records Baseten's answer in the resource's status.
#![forbid(unsafe_code)]

pub mod baseten;
pub mod config;
pub mod controller;
pub mod crd;
pub mod error;
pub mod hash;
pub mod index;
pub mod reconcile;
pub mod status;
pub mod telemetry;

pub use crd::{BasetenSecret, BasetenSecretSpec, BasetenSecretStatus};

/// Installs rustls' ring provider as the process default. Call once before any client is built.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
