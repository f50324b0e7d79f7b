//! The dependencies every reconcile shares, built once.

use std::sync::Arc;

use futures::channel::mpsc::UnboundedSender;
use kube::runtime::reflector::ObjectRef;

use crate::claims::Claims;
use crate::crd::BasetenSecret;
use crate::credentials::Credentials;
use crate::digests::Digests;
use crate::index::SecretIndex;
use crate::memory::Memories;
use crate::metrics::Metrics;
use crate::selector::SecretSelector;

/// Field manager of the operator's status writes, and the events' reporting controller.
pub const FIELD_MANAGER: &str = "baseten-secrets-operator";

/// Everything a reconcile needs.
pub struct Context {
    /// Kubernetes client.
    pub client: kube::Client,
    /// The Baseten API keys in use, with their clients.
    pub credentials: Arc<Credentials>,
    /// Which BasetenSecrets read which Secret.
    pub index: SecretIndex,
    /// Who claims which Baseten secret.
    pub claims: Claims,
    /// Digests of the values of Secrets several resources read.
    pub digests: Digests,
    /// What is remembered about each resource between reconciles.
    pub memories: Arc<Memories>,
    /// What the operator counts, for /metrics.
    pub metrics: Arc<Metrics>,
    /// Labels a Secret needs to be read (`--secret-label-selector`).
    pub secret_selector: Option<SecretSelector>,
    /// Who publishes the events: this pod's name, else the controller's.
    pub event_instance: String,
    /// Asks the controller to reconcile another resource.
    pub requeue: UnboundedSender<ObjectRef<BasetenSecret>>,
}

impl Context {
    /// The context with an empty index, claims and memory; events report `instance` (the
    /// pod name) as their source, and `requeue` reaches the controller.
    pub fn new(
        client: kube::Client,
        credentials: Arc<Credentials>,
        metrics: Arc<Metrics>,
        secret_selector: Option<SecretSelector>,
        instance: Option<String>,
        requeue: UnboundedSender<ObjectRef<BasetenSecret>>,
    ) -> Self {
        Self {
            client,
            credentials,
            metrics,
            secret_selector,
            index: SecretIndex::default(),
            claims: Claims::default(),
            digests: Digests::default(),
            memories: Arc::default(),
            event_instance: instance.unwrap_or_else(|| FIELD_MANAGER.to_string()),
            requeue,
        }
    }
}
