//! What a set's reconcile needs: the client, the BasetenSecret cache (its children are in
//! it), the operator's Secret selector, and which Secrets each set read last.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use kube::runtime::reflector::{ObjectRef, Store};

use crate::crd::BasetenSecret;
use crate::crd_set::BasetenSecretSet;
use crate::selector::SecretSelector;

/// Everything a set's reconcile needs.
pub struct SetContext {
    /// Kubernetes client.
    pub client: kube::Client,
    /// The BasetenSecrets as the operator's cache holds them (the children among them).
    pub children: Store<BasetenSecret>,
    /// Whether that cache has been filled once.
    pub children_listed: Arc<AtomicBool>,
    /// Labels a Secret needs to be read (`--secret-label-selector`).
    pub secret_selector: Option<SecretSelector>,
    /// Secrets (`namespace/name`) each set read last, so that a Secret that stops
    /// matching a selector still reaches its set.
    pub read_by: Mutex<HashMap<String, BTreeSet<String>>>,
    /// The key names of the Secrets sets read (`namespace/name`), at the resourceVersion
    /// read: names only, never values.
    pub key_names: Mutex<HashMap<String, (String, Vec<String>)>>,
    /// What each set (`namespace/name`) read last, at its generation, and whether one of
    /// its Secrets changed since: a set woken only by its children's statuses reads nothing.
    pub listings: Mutex<HashMap<String, Listing>>,
}

/// What a set read last: its Secrets' names and key names, at its generation.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    /// The set's generation at the read.
    pub generation: Option<i64>,
    /// Each Secret's name and key names.
    pub secrets: Vec<(String, Vec<String>)>,
    /// A Secret of the set changed since.
    pub stale: bool,
}

impl SetContext {
    /// The sets that read Secret `name` of `namespace` last time.
    pub fn readers_of(&self, namespace: &str, name: &str) -> Vec<ObjectRef<BasetenSecretSet>> {
        let key = format!("{namespace}/{name}");
        let read_by = self.read_by.lock().unwrap_or_else(|p| p.into_inner());
        (read_by.get(&key).into_iter().flatten())
            .map(|set| ObjectRef::new(set).within(namespace))
            .collect()
    }

    /// The key names of Secret `name` as read at resourceVersion `version`, if it was.
    pub fn known_keys(&self, namespace: &str, name: &str, version: &str) -> Option<Vec<String>> {
        let known = self.key_names.lock().unwrap_or_else(|p| p.into_inner());
        let (at, keys) = known.get(&format!("{namespace}/{name}"))?;
        (at == version).then(|| keys.clone())
    }

    /// Keeps the key names of Secret `name` read at resourceVersion `version`.
    pub fn keep_keys(&self, namespace: &str, name: &str, version: &str, keys: &[String]) {
        let mut known = self.key_names.lock().unwrap_or_else(|p| p.into_inner());
        let entry = (version.to_string(), keys.to_vec());
        known.insert(format!("{namespace}/{name}"), entry);
    }

    /// Marks what `set` of `namespace` read last as stale: one of its Secrets changed.
    pub fn secrets_changed(&self, namespace: &str, set: &str) {
        let mut listings = self.listings.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(listing) = listings.get_mut(&format!("{namespace}/{set}")) {
            listing.stale = true;
        }
    }

    /// What `set` of `namespace` read last, if it is still current for `generation`.
    pub fn current_listing(
        &self,
        namespace: &str,
        set: &str,
        generation: Option<i64>,
    ) -> Option<Vec<(String, Vec<String>)>> {
        let listings = self.listings.lock().unwrap_or_else(|p| p.into_inner());
        let listing = listings.get(&format!("{namespace}/{set}"))?;
        (!listing.stale && listing.generation == generation).then(|| listing.secrets.clone())
    }

    /// Keeps what `set` of `namespace` read at `generation`; `None` forgets it.
    pub fn keep_listing(&self, namespace: &str, set: &str, listing: Option<Listing>) {
        let mut listings = self.listings.lock().unwrap_or_else(|p| p.into_inner());
        let key = format!("{namespace}/{set}");
        match listing {
            Some(listing) => listings.insert(key, listing),
            None => listings.remove(&key),
        };
    }

    /// Keeps which Secrets `set` read, in place of what it read before.
    pub fn remember_reads(&self, namespace: &str, set: &str, secrets: &[String]) {
        let mut read_by = self.read_by.lock().unwrap_or_else(|p| p.into_inner());
        for readers in read_by.values_mut() {
            readers.remove(set);
        }
        read_by.retain(|_, readers| !readers.is_empty());
        let mut known = self.key_names.lock().unwrap_or_else(|p| p.into_inner());
        known.retain(|secret, _| read_by.contains_key(secret));
        for secret in secrets {
            (read_by.entry(format!("{namespace}/{secret}")).or_default()).insert(set.to_string());
        }
    }
}
