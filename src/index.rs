//! Which BasetenSecrets read which Secret, so a Secret event maps to its readers by lookup
//! instead of a scan of every resource.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::runtime::reflector::ObjectRef;

use crate::crd::BasetenSecret;

#[derive(Default)]
struct Maps {
    /// (namespace, Secret name) → names of BasetenSecrets reading it. Usually one, so a
    /// list rather than a set: 10 000 one-element sets cost a megabyte more.
    readers: HashMap<(String, String), Vec<String>>,
    /// (namespace, BasetenSecret name) → Secrets it reads.
    reads: HashMap<(String, String), Vec<String>>,
    /// (namespace, Secret name) → the last resourceVersion the Secret watch delivered, for
    /// Secrets that have readers.
    versions: HashMap<(String, String), String>,
}

impl Maps {
    fn drop_reader(&mut self, namespace: &str, secret: String, name: &str) {
        let key = (namespace.to_string(), secret);
        if let Some(names) = self.readers.get_mut(&key) {
            names.retain(|n| n != name);
            if names.is_empty() {
                self.readers.remove(&key);
                self.versions.remove(&key);
            }
        }
    }
}

/// A two-way index between BasetenSecrets and the Secrets they reference.
#[derive(Default)]
pub struct SecretIndex(Mutex<Maps>);

impl SecretIndex {
    fn maps(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that BasetenSecret `name` in `namespace` reads the Secrets `secrets` (its
    /// value's, and its API key's with apiKeyRef).
    pub fn register(&self, namespace: &str, name: &str, secrets: &[&str]) {
        let mut maps = self.maps();
        let key = (namespace.to_string(), name.to_string());
        let now: Vec<String> = secrets.iter().map(|s| s.to_string()).collect();
        let previous = maps.reads.get(&key).cloned().unwrap_or_default();
        if previous == now {
            return;
        }
        for old in previous.iter().filter(|old| !now.contains(old)) {
            maps.drop_reader(namespace, old.clone(), name);
        }
        for secret in now.iter().filter(|s| !previous.contains(s)) {
            let names = maps
                .readers
                .entry((namespace.to_string(), secret.clone()))
                .or_default();
            if !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
        }
        maps.reads.insert(key, now);
    }

    /// Forgets BasetenSecret `name` in `namespace`.
    pub fn forget(&self, namespace: &str, name: &str) {
        let mut maps = self.maps();
        for secret in maps
            .reads
            .remove(&(namespace.to_string(), name.to_string()))
            .unwrap_or_default()
        {
            maps.drop_reader(namespace, secret, name);
        }
    }

    /// Records the resourceVersion the Secret watch delivered for Secret `secret` (kept only
    /// while some BasetenSecret reads it).
    pub fn saw(&self, namespace: &str, secret: &str, resource_version: Option<&str>) {
        let mut maps = self.maps();
        let key = (namespace.to_string(), secret.to_string());
        if !maps.readers.contains_key(&key) {
            return;
        }
        match resource_version {
            Some(version) => maps.versions.insert(key, version.to_string()),
            None => maps.versions.remove(&key),
        };
    }

    /// Records the resourceVersion a read of Secret `secret` returned, unless the watch has
    /// already delivered one. Never overwriting keeps this safe: a newer event that arrives
    /// later replaces it, and one that arrived earlier is never hidden.
    pub fn read_at(&self, namespace: &str, secret: &str, resource_version: &str) {
        let mut maps = self.maps();
        let key = (namespace.to_string(), secret.to_string());
        if maps.readers.contains_key(&key) {
            maps.versions
                .entry(key)
                .or_insert_with(|| resource_version.to_string());
        }
    }

    /// The resourceVersion of Secret `secret` the watch delivered last, if known.
    pub fn seen_version(&self, namespace: &str, secret: &str) -> Option<String> {
        self.maps()
            .versions
            .get(&(namespace.to_string(), secret.to_string()))
            .cloned()
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
        index.register("ml", "a", &["creds"]);
        index.register("ml", "b", &["creds"]);
        index.register("other", "a", &["creds"]);
        assert_eq!(names(index.readers("ml", "creds")), ["a", "b"]);
        assert_eq!(names(index.readers("other", "creds")), ["a"]);

        index.register("ml", "a", &["new-creds"]);
        assert_eq!(names(index.readers("ml", "creds")), ["b"]);
        assert_eq!(names(index.readers("ml", "new-creds")), ["a"]);

        index.forget("ml", "b");
        assert!(index.readers("ml", "creds").is_empty());
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn versions_are_kept_for_secrets_with_readers_only() {
        let index = SecretIndex::default();
        index.saw("ml", "creds", Some("7"));
        assert_eq!(
            index.seen_version("ml", "creds"),
            None,
            "nobody reads it yet"
        );
        index.register("ml", "a", &["creds"]);
        index.saw("ml", "creds", Some("8"));
        assert_eq!(index.seen_version("ml", "creds").as_deref(), Some("8"));
        index.saw("ml", "unrelated", Some("9"));
        assert_eq!(index.seen_version("ml", "unrelated"), None);
        index.read_at("ml", "creds", "5");
        assert_eq!(
            index.seen_version("ml", "creds").as_deref(),
            Some("8"),
            "a read never hides what the watch delivered"
        );
        index.register("ml", "a", &["other"]);
        assert_eq!(
            index.seen_version("ml", "creds"),
            None,
            "dropped with its last reader"
        );
        index.read_at("ml", "other", "3");
        assert_eq!(index.seen_version("ml", "other").as_deref(), Some("3"));
    }
}
