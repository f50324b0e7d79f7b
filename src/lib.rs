//! Keeps Baseten secrets in sync with Kubernetes Secrets.
//!
//! A `BasetenSecret` names a key of a Secret; the operator pushes its value to Baseten's
//! management API when it changes, and records Baseten's answer in the resource's status.
#![forbid(unsafe_code)]

pub mod baseten;
pub mod claims;
pub mod config;
pub mod context;
pub mod controller;
pub mod crd;
pub mod crd_set;
pub mod credentials;
pub mod digests;
pub mod drift;
pub mod duration;
pub mod error;
pub mod hash;
pub mod index;
pub mod maps;
pub mod memory;
pub mod metrics;
pub mod process;
pub mod prune;
pub mod reconcile;
pub mod secrets;
pub mod selector;
pub mod server;
pub mod sets;
pub mod status;
pub mod telemetry;
pub mod watch;

pub use crd::{BasetenSecret, BasetenSecretSpec, BasetenSecretStatus};
pub use crd_set::{BasetenSecretSet, BasetenSecretSetSpec, BasetenSecretSetStatus};
pub use process::{install_crypto_provider, shutdown_signal};
