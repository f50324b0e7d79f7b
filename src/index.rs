//! Which BasetenSecrets read which Secret, so a Secret event maps to its readers by lookup
//! instead of a scan of every resource.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::runtime::reflector::ObjectRef;

use crate::crd::BasetenSecret;
use crate::maps::{object_key, shrink};

/// An object of a namespace as one string, `namespace/name`: one allocation per key.
type Key = Box<str>;

fn key(namespace: &str, name: &str) -> Key {
    object_key(namespace, name).into_boxed_str()
}

/// The namespace and name of a key.
fn split(key: &str) -> Option<(&str, &str)> {
    key.split_once('/')
}

fn readers_of(entry: &SecretEntry, namespace: &str) -> Vec<ObjectRef<BasetenSecret>> {
    entry
        .readers
        .iter()
        .map(|name| ObjectRef::new(name).within(namespace))
        .collect()
}

/// What is known of one Secret that has readers.
#[derive(Default)]
struct SecretEntry {
    /// Names of the BasetenSecrets reading it: usually one, so a list, smaller than a set.
    readers: Vec<Box<str>>,
    /// The last resourceVersion the Secret watch delivered (or a read returned first).
    version: Option<Box<str>>,
}

/// What is known of one BasetenSecret.
#[derive(Default)]
struct ReaderEntry {
    /// The Secrets it reads (its value's, and its API key's with apiKeyRef).
    secrets: Box<[Box<str>]>,
}

#[derive(Default)]
struct Maps {
    /// Secret → its readers and last seen version.
    secrets: HashMap<Key, SecretEntry>,
    /// BasetenSecret → what it reads.
    resources: HashMap<Key, ReaderEntry>,
}

impl Maps {
    /// Drops `name` from the readers of `secret`; says whether nobody reads it now.
    fn drop_reader(&mut self, namespace: &str, secret: &str, name: &str) -> bool {
        let key = key(namespace, secret);
        let Some(entry) = self.secrets.get_mut(&key) else {
            return false;
        };
        entry.readers.retain(|reader| reader.as_ref() != name);
        if entry.readers.is_empty() {
            self.secrets.remove(&key);
            shrink(&mut self.secrets);
            return true;
        }
        entry.readers.shrink_to_fit();
        false
    }

    /// Forgets a BasetenSecret; returns the Secrets nobody reads now.
    fn forget(&mut self, namespace: &str, name: &str) -> Vec<Box<str>> {
        let removed = self.resources.remove(&key(namespace, name));
        shrink(&mut self.resources);
        let secrets = (removed).map(|entry| entry.secrets).unwrap_or_default();
        (secrets.into_vec().into_iter())
            .filter(|secret| self.drop_reader(namespace, secret, name))
            .collect()
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
    /// Returns the Secrets nobody reads now.
    pub fn register(&self, namespace: &str, name: &str, secrets: &[&str]) -> Vec<Box<str>> {
        let mut maps = self.maps();
        let resource = key(namespace, name);
        let previous: Box<[Box<str>]> = match maps.resources.get(&resource) {
            Some(entry)
                if entry
                    .secrets
                    .iter()
                    .map(AsRef::as_ref)
                    .eq(secrets.iter().copied()) =>
            {
                return Vec::new();
            }
            Some(entry) => entry.secrets.clone(),
            None => Box::default(),
        };
        let now_read = |secret: &str| secrets.contains(&secret);
        let read_before = |secret: &str| previous.iter().any(|old| old.as_ref() == secret);
        let orphans: Vec<Box<str>> = (previous.iter())
            .filter(|old| !now_read(old) && maps.drop_reader(namespace, old, name))
            .cloned()
            .collect();
        for secret in secrets.iter().filter(|secret| !read_before(secret)) {
            let entry = maps.secrets.entry(key(namespace, secret)).or_default();
            if !entry.readers.iter().any(|reader| reader.as_ref() == name) {
                entry.readers.push(name.into());
                entry.readers.shrink_to_fit();
            }
        }
        maps.resources.entry(resource).or_default().secrets =
            secrets.iter().map(|s| Box::from(*s)).collect();
        orphans
    }

    /// Forgets BasetenSecret `name` in `namespace`; returns the Secrets nobody reads now.
    pub fn forget(&self, namespace: &str, name: &str) -> Vec<Box<str>> {
        self.maps().forget(namespace, name)
    }

    /// Forgets every BasetenSecret for which `alive(namespace, name)` is false (after the
    /// watch listed again); returns the Secrets nobody reads now, as (namespace, name).
    pub fn retain(&self, alive: impl Fn(&str, &str) -> bool) -> Vec<(String, Box<str>)> {
        let mut maps = self.maps();
        let dead: Vec<Key> = (maps.resources.keys())
            .filter(|key| !split(key).is_some_and(|(ns, name)| alive(ns, name)))
            .cloned()
            .collect();
        let mut orphans = Vec::new();
        for key in dead {
            if let Some((namespace, name)) = split(&key) {
                let gone = maps.forget(namespace, name);
                orphans.extend(gone.into_iter().map(|s| (namespace.to_string(), s)));
            }
        }
        orphans
    }

    /// Records the resourceVersion the Secret watch delivered for Secret `secret` (kept only
    /// while some BasetenSecret reads it) and returns the BasetenSecrets that read it: one
    /// lookup for each Secret event, most of which concern Secrets nobody reads.
    pub fn saw(
        &self,
        namespace: &str,
        secret: &str,
        resource_version: Option<&str>,
    ) -> Vec<ObjectRef<BasetenSecret>> {
        let mut maps = self.maps();
        let Some(entry) = maps.secrets.get_mut(&key(namespace, secret)) else {
            return Vec::new();
        };
        entry.version = resource_version.map(Box::from);
        readers_of(entry, namespace)
    }

    /// Records the resourceVersion a read of Secret `secret` returned, unless the watch has
    /// already delivered one. Never overwriting keeps this safe: a newer event that arrives
    /// later replaces it, and one that arrived earlier is never hidden.
    pub fn read_at(&self, namespace: &str, secret: &str, resource_version: &str) {
        let mut maps = self.maps();
        if let Some(entry) = maps.secrets.get_mut(&key(namespace, secret)) {
            entry.version.get_or_insert_with(|| resource_version.into());
        }
    }

    /// The resourceVersion of Secret `secret` the watch delivered last, if known.
    pub fn seen_version(&self, namespace: &str, secret: &str) -> Option<String> {
        self.maps()
            .secrets
            .get(&key(namespace, secret))
            .and_then(|entry| entry.version.as_deref().map(str::to_string))
    }

    /// The BasetenSecrets that read Secret `secret` in `namespace`.
    pub fn readers(&self, namespace: &str, secret: &str) -> Vec<ObjectRef<BasetenSecret>> {
        self.maps()
            .secrets
            .get(&key(namespace, secret))
            .map(|entry| readers_of(entry, namespace))
            .unwrap_or_default()
    }

    /// How many BasetenSecrets read Secret `secret` in `namespace`.
    pub fn reader_count(&self, namespace: &str, secret: &str) -> usize {
        let maps = self.maps();
        maps.secrets
            .get(&key(namespace, secret))
            .map_or(0, |entry| entry.readers.len())
    }

    /// How many BasetenSecrets are indexed.
    pub fn len(&self) -> usize {
        self.maps().resources.len()
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
        assert_eq!(names(index.saw("ml", "creds", Some("8"))), ["a"]);
        assert_eq!(index.seen_version("ml", "creds").as_deref(), Some("8"));
        assert!(index.saw("ml", "unrelated", Some("9")).is_empty());
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

    #[test]
    fn forgetting_readers_names_the_secrets_nobody_reads_any_more() {
        let index = SecretIndex::default();
        index.register("ml", "a", &["creds", "key"]);
        index.register("ml", "b", &["creds"]);
        assert!(index.forget("ml", "b").is_empty(), "a still reads creds");
        assert_eq!(
            index.register("ml", "a", &["creds"]),
            vec![Box::from("key")],
            "a stopped reading its key Secret"
        );
        index.register("ml", "c", &["other"]);
        index.register("team", "d", &["creds"]);
        let mut orphans = index.retain(|ns, name| ns == "team" || name == "c");
        orphans.sort();
        assert_eq!(orphans, vec![("ml".to_string(), Box::from("creds"))]);
        assert_eq!(index.len(), 2);
        assert!(index.readers("ml", "creds").is_empty());
        assert_eq!(names(index.readers("team", "creds")), ["d"]);
    }
}
