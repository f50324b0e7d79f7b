//! Everything a reconcile needs, built once, and what the operator remembers per object.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

use kube::runtime::reflector::ObjectRef;

use crate::claims::Claims;
use crate::crd::{BasetenSecret, BasetenSecretStatus};
use crate::credentials::{ApiKey, Credentials};
use crate::drift::Drift;
use crate::index::SecretIndex;
use crate::metrics::Metrics;
use crate::reconcile::retry::Retry;
use crate::reconcile::value::Unusable;
use crate::selector::SecretSelector;

/// Field manager of the operator's status writes, and the events' reporting controller.
pub const FIELD_MANAGER: &str = "baseten-secrets-operator";

/// What the operator remembers about one object between reconciles. Entries are keyed by
/// object reference and carry a fingerprint of the object's uid: a recreated object with the
/// same name starts afresh. Only objects with something to remember have one (a failure, a
/// retry, a status not yet in the cache, drift, a delete): an entry that becomes empty goes.
/// What every resource needs (its settled inputs) lives in the index instead.
#[derive(Clone, Debug, Default)]
pub struct Memory {
    /// Fingerprint of the uid of the object this entry belongs to.
    uid: u64,
    /// Consecutive failed reconciles (Kubernetes errors), for exponential backoff.
    pub failures: u32,
    /// A failed Baseten write and when the same write may be tried again.
    pub retry: Option<Box<Retry>>,
    /// The status this process last wrote, until the watch delivers it. The cache can lag
    /// behind our own status patch; since only this operator writes status, the last written
    /// one wins, so a quick second reconcile never writes twice.
    pub written_status: Option<Box<BasetenSecretStatus>>,
    /// Drift found by the last check: the next reconcile pushes the value again.
    pub drift: Option<Box<Drift>>,
    /// The Baseten name this object's cleanup deleted, so a reconcile that still sees the
    /// finalizer does not delete it twice.
    pub deleted: Option<Box<str>>,
}

/// A fingerprint of what a reconcile that found Baseten up to date had read: the Secret, its
/// resourceVersion, that of the API key's Secret (with apiKeyRef), the resource's generation and the force-sync token in effect. While none
/// of them changes, a new reconcile (such as the one our own status write triggers) has
/// nothing to read. Fingerprints live in this process only.
pub fn settled_inputs(
    secret: &str,
    secret_version: &str,
    key_version: Option<&str>,
    generation: i64,
    force_token: Option<&str>,
) -> u64 {
    fingerprint(&(secret, secret_version, key_version, generation, force_token))
}

/// A fingerprint of an object's uid, telling a recreated object from the one before it.
pub fn uid_of(object: &BasetenSecret) -> u64 {
    fingerprint(&object.metadata.uid)
}

impl Memory {
    /// Whether there is nothing to remember.
    fn is_empty(&self) -> bool {
        self.failures == 0
            && self.retry.is_none()
            && self.written_status.is_none()
            && self.drift.is_none()
            && self.deleted.is_none()
    }
}

fn fingerprint(value: &impl Hash) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// Everything a reconcile needs.
pub struct Context {
    /// Kubernetes client.
    pub client: kube::Client,
    /// The Baseten API keys in use, with their clients.
    pub credentials: Credentials,
    /// Which BasetenSecrets read which Secret.
    pub index: SecretIndex,
    /// Who claims which Baseten secret.
    pub claims: Claims,
    /// What the operator counts, for /metrics.
    pub metrics: Arc<Metrics>,
    /// Labels a Secret needs to be read (`--secret-label-selector`).
    pub secret_selector: Option<SecretSelector>,
    /// Who publishes the events: this pod's name, else the controller's.
    pub event_instance: String,
    memory: Mutex<HashMap<ObjectRef<BasetenSecret>, Memory>>,
}

impl Context {
    /// Builds the context: the API keys, an empty index, claims and memory; events report `instance` (the pod name) as their
    /// source.
    pub fn new(
        client: kube::Client,
        credentials: Credentials,
        metrics: Arc<Metrics>,
        secret_selector: Option<SecretSelector>,
        instance: Option<String>,
    ) -> Self {
        Self {
            client,
            credentials,
            metrics,
            secret_selector,
            index: SecretIndex::default(),
            claims: Claims::default(),
            event_instance: instance.unwrap_or_else(|| FIELD_MANAGER.to_string()),
            memory: Mutex::new(HashMap::new()),
        }
    }

    fn memories(&self) -> MutexGuard<'_, HashMap<ObjectRef<BasetenSecret>, Memory>> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What is remembered about `object` (empty when nothing is, or when it was about an
    /// earlier object of the same name).
    pub fn recall(&self, object: &BasetenSecret) -> Memory {
        let uid = fingerprint(&object.metadata.uid);
        self.memories()
            .get(&ObjectRef::from_obj(object))
            .filter(|m| m.uid == uid)
            .cloned()
            .unwrap_or_default()
    }

    /// Changes what is remembered about `object`.
    pub fn remember(&self, object: &BasetenSecret, change: impl FnOnce(&mut Memory)) {
        let uid = fingerprint(&object.metadata.uid);
        let mut memories = self.memories();
        let key = ObjectRef::from_obj(object);
        let memory = memories.entry(key.clone()).or_default();
        if memory.uid != uid {
            *memory = Memory {
                uid,
                ..Memory::default()
            };
        }
        change(memory);
        if memory.is_empty() {
            memories.remove(&key);
        }
    }

    /// The status to decide from: the last one written for this very object, else the
    /// object's own.
    pub fn current_status(&self, object: &BasetenSecret) -> BasetenSecretStatus {
        self.recall(object)
            .written_status
            .map(|status| *status)
            .or_else(|| object.status.clone())
            .unwrap_or_default()
    }

    /// Drops the last written status once the cached object shows it.
    pub fn caught_up(&self, object: &BasetenSecret) {
        let uid = fingerprint(&object.metadata.uid);
        let key = ObjectRef::from_obj(object);
        let mut memories = self.memories();
        if let Some(memory) = memories.get_mut(&key)
            && memory.uid == uid
            && memory.written_status.as_deref() == object.status.as_ref()
        {
            memory.written_status = None;
            if memory.is_empty() {
                memories.remove(&key);
            }
        }
    }

    /// The API key `object` writes with, or why it has none.
    pub async fn api_key(
        &self,
        object: &BasetenSecret,
    ) -> crate::error::Result<Result<Arc<ApiKey>, Unusable>> {
        self.credentials
            .for_object(
                &self.client,
                &self.index,
                self.secret_selector.as_ref(),
                object,
            )
            .await
    }

    /// Drops what is kept for an object that no longer exists.
    pub fn forget(&self, object: &ObjectRef<BasetenSecret>) {
        self.memories().remove(object);
    }

    /// How many objects are remembered.
    pub fn remembered(&self) -> usize {
        self.memories().len()
    }
}
