//! Which BasetenSecrets read which Secret, so a Secret event maps to its readers by lookup
//! instead of a scan of every resource.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use kube::runtime::reflector::ObjectRef;

use crate::crd::BasetenSecret;

#[derive(Default)]
struct Maps {
    /// (namespace, Secret name) → names of BasetenSecrets reading it.
    readers: HashMap<(String, String), HashSet<String>>,
    /// (namespace, BasetenSecret name) → Secret name it reads.
    reads: HashMap<(String, String), String>,
}

/// A two-way index between BasetenSecrets and the Secrets they reference.
#[derive(Default)]
pub struct SecretIndex(Mutex<Maps>);

impl SecretIndex {
    fn maps(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that BasetenSecret `name` in `namespace` reads Secret `secret`.
    pub fn register(&self, namespace: &str, name: &str, secret: &str) {
        let mut maps = self.maps();
        let key = (namespace.to_string(), name.to_string());
        if let Some(previous) = maps.reads.insert(key, secret.to_string()) {
            if previous == secret {
                return;
            }
            let old = (namespace.to_string(), previous);
            if let Some(set) = maps.readers.get_mut(&old) {
                set.remove(name);
                if set.is_empty() {
                    maps.readers.remove(&old);
                }
            }
        }
        maps.readers
            .entry((namespace.to_string(), secret.to_string()))
            .or_default()
            .insert(name.to_string());
    }

    /// Forgets BasetenSecret `name` in `namespace`.
    pub fn forget(&self, namespace: &str, name: &str) {
        let mut maps = self.maps();
        if let Some(secret) = maps
            .reads
            .remove(&(namespace.to_string(), name.to_string()))
        {
            let key = (namespace.to_string(), secret);
            if let Some(set) = maps.readers.get_mut(&key) {
                set.remove(name);
                if set.is_empty() {
                    maps.readers.remove(&key);
                }
            }
        }
    }

    /// The BasetenSecrets that read Secret `secret` in `namespace`.
    pub fn readers(&self, namespace: &str, secret: &str) -> Vec<ObjectRef<BasetenSecret>> {
        self.maps()
            .readers
            .get(&(namespace.to_string(), secret.to_string()))
            .into_iter()
            .flatten()
            .map(|name| ObjectRef::new(name).within(namespace))
            .collect()
    }

    /// How many BasetenSecrets are indexed.
    pub fn len(&self) -> usize {
        self.maps().reads.len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(refs: Vec<ObjectRef<BasetenSecret>>) -> Vec<String> {
        let mut names: Vec<String> = refs.into_iter().map(|r| r.name).collect();
        names.sort();
        names
    }

    #[test]
    fn maps_secrets_to_their_readers_and_follows_changes() {
        let index = SecretIndex::default();
        index.register("ml", "a", "creds");
        index.register("ml", "b", "creds");
        index.register("other", "a", "creds");
        assert_eq!(names(index.readers("ml", "creds")), ["a", "b"]);
        assert_eq!(names(index.readers("other", "creds")), ["a"]);

        index.register("ml", "a", "new-creds");
        assert_eq!(names(index.readers("ml", "creds")), ["b"]);
        assert_eq!(names(index.readers("ml", "new-creds")), ["a"]);

        index.forget("ml", "b");
        assert!(index.readers("ml", "creds").is_empty());
        assert_eq!(index.len(), 2);
    }
}
