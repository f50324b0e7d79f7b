//! What the operator remembers about each resource between reconciles, in this process only.
//!
//! A reconcile reads its resource's entry once at the start ([`Memories::recall`]) and
//! writes it once at the end ([`Memories::change`]). Entries carry a fingerprint of the
//! object's uid, so a resource recreated under the same name starts afresh.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use tokio::time::Instant;

use crate::crd::{BasetenSecret, BasetenSecretStatus};
use crate::maps::{object_key, shrink};

/// What a drift check found for one resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Drift {
    /// The secret this resource wrote is not in Baseten any more.
    Missing,
    /// The secret exists under another id: someone deleted and recreated it.
    Recreated {
        /// The id in the status.
        was: String,
        /// The id Baseten lists now.
        now: String,
    },
}

/// What a Baseten write attempted. Any change to these makes it a new write that goes
/// ahead at once, even while the previous one waits for its retry time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// Synced hash of name, value and API key.
    pub synced_hash: String,
    /// The resource's generation.
    pub generation: i64,
    /// The force-sync token asked for.
    pub force_token: Option<String>,
}

/// A failed Baseten write waiting for its retry time.
#[derive(Clone, Debug)]
pub struct Retry {
    /// The same write is not tried before this instant.
    pub not_before: Instant,
    /// What was attempted.
    pub attempt: Attempt,
    /// Consecutive failures of this object's writes.
    pub failures: u32,
}

impl Retry {
    /// Time left at `now` until the retry may happen (zero when it may happen now).
    pub fn left_at(&self, now: Instant) -> Duration {
        self.not_before.saturating_duration_since(now)
    }

    /// Time left until the retry may happen.
    pub fn left(&self) -> Duration {
        self.left_at(Instant::now())
    }
}

/// What is remembered about one resource besides its settled inputs. Most resources have
/// nothing here: only a failure, a retry, a status not yet in the cache, drift or a delete.
#[derive(Clone, Debug, Default)]
pub struct Memory {
    /// Consecutive failed reconciles (Kubernetes errors), for exponential backoff.
    pub failures: u32,
    /// A failed Baseten write and when the same write may be tried again.
    pub retry: Option<Box<Retry>>,
    /// The status this process last wrote, until the watch delivers it. The cache can lag
    /// behind our own status patch, and only this operator writes status, so the last one
    /// written is the one to decide from.
    pub written_status: Option<Box<BasetenSecretStatus>>,
    /// Drift found by the last check: the next reconcile pushes the value again.
    pub drift: Option<Box<Drift>>,
    /// The Baseten name the cleanup deleted, so a reconcile that still sees the finalizer
    /// does not delete it twice.
    pub deleted: Option<Box<str>>,
}

impl Memory {
    fn is_empty(&self) -> bool {
        self.failures == 0
            && self.retry.is_none()
            && self.written_status.is_none()
            && self.drift.is_none()
            && self.deleted.is_none()
    }
}

/// What a reconcile finds remembered about its resource.
#[derive(Clone, Debug, Default)]
pub struct Recalled {
    /// Failures, retry, written status, drift, delete.
    pub memory: Memory,
    /// The fingerprint of the inputs of the last reconcile that found Baseten up to date.
    pub settled: Option<u64>,
}

/// What a reconcile changes in its resource's entry; a field left `None` stays as it is.
#[derive(Clone, Debug, Default)]
pub struct Change {
    /// Consecutive failed reconciles.
    pub failures: Option<u32>,
    /// The failed write to retry; `Some(None)` clears it.
    pub retry: Option<Option<Retry>>,
    /// The status just written; `Some(None)` once the cache shows the one written last.
    pub written_status: Option<Option<BasetenSecretStatus>>,
    /// The value was pushed again after drift: the drift flag goes.
    pub drift_repaired: bool,
    /// The Baseten name the cleanup deleted.
    pub deleted: Option<String>,
    /// The settled-inputs fingerprint; `Some(None)` clears it.
    pub settled: Option<Option<u64>>,
}

impl Change {
    /// Whether applying it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.failures.is_none()
            && self.retry.is_none()
            && self.written_status.is_none()
            && !self.drift_repaired
            && self.deleted.is_none()
            && self.settled.is_none()
    }

    fn apply(self, memory: &mut Memory, settled: &mut Option<u64>) {
        if let Some(failures) = self.failures {
            memory.failures = failures;
        }
        if let Some(retry) = self.retry {
            memory.retry = retry.map(Box::new);
        }
        if let Some(status) = self.written_status {
            memory.written_status = status.map(Box::new);
        }
        if self.drift_repaired {
            memory.drift = None;
        }
        if let Some(deleted) = self.deleted {
            memory.deleted = Some(deleted.into_boxed_str());
        }
        if let Some(fingerprint) = self.settled {
            *settled = fingerprint;
        }
    }
}

/// A fingerprint of what a reconcile that found Baseten up to date had read: the Secret and
/// its resourceVersion, the API key's version, the resource's generation and the force-sync
/// token. While none of them changes, a new reconcile (such as the echo of our own status
/// write) has nothing to read.
pub fn settled_inputs(
    secret: &str,
    secret_version: &str,
    key_version: Option<&str>,
    generation: i64,
    force_token: Option<&str>,
) -> u64 {
    fingerprint(&(secret, secret_version, key_version, generation, force_token))
}

fn fingerprint(value: &impl Hash) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// One resource's entry: `kept` only while there is something besides the fingerprint.
#[derive(Default)]
struct Entry {
    uid: u64,
    settled: Option<u64>,
    kept: Option<Box<Memory>>,
}

/// The entries of every resource, keyed by `namespace/name`.
#[derive(Default)]
pub struct Memories(Mutex<HashMap<Box<str>, Entry>>);

fn key_of(object: &BasetenSecret) -> Box<str> {
    object_key(&object.namespace().unwrap_or_default(), &object.name_any()).into_boxed_str()
}

fn uid_of(object: &BasetenSecret) -> u64 {
    fingerprint(&object.metadata.uid)
}

impl Memories {
    fn entries(&self) -> MutexGuard<'_, HashMap<Box<str>, Entry>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What is remembered about `object` (nothing when the entry was about an earlier object
    /// of the same name).
    pub fn recall(&self, object: &BasetenSecret) -> Recalled {
        let uid = uid_of(object);
        self.entries()
            .get(&key_of(object))
            .filter(|entry| entry.uid == uid)
            .map(|entry| Recalled {
                memory: entry.kept.as_deref().cloned().unwrap_or_default(),
                settled: entry.settled,
            })
            .unwrap_or_default()
    }

    /// Applies what one reconcile of `object` changed.
    pub fn change(&self, object: &BasetenSecret, change: Change) {
        if change.is_empty() {
            return;
        }
        self.update(object, |memory, settled| change.apply(memory, settled));
    }

    /// Changes what is remembered about `object` outside a reconcile (a drift check, the
    /// error policy).
    pub fn remember(&self, object: &BasetenSecret, change: impl FnOnce(&mut Memory)) {
        self.update(object, |memory, _| change(memory));
    }

    fn update(&self, object: &BasetenSecret, change: impl FnOnce(&mut Memory, &mut Option<u64>)) {
        let uid = uid_of(object);
        let key = key_of(object);
        let mut entries = self.entries();
        let entry = entries.entry(key.clone()).or_default();
        if entry.uid != uid {
            *entry = Entry {
                uid,
                ..Entry::default()
            };
        }
        let mut memory = entry.kept.take().map(|m| *m).unwrap_or_default();
        change(&mut memory, &mut entry.settled);
        entry.kept = (!memory.is_empty()).then(|| Box::new(memory));
        if entry.kept.is_none() && entry.settled.is_none() {
            entries.remove(&key);
            shrink(&mut entries);
        }
    }

    /// Drops what is kept for a resource that no longer exists.
    pub fn forget(&self, object: &ObjectRef<BasetenSecret>) {
        let key = object_key(
            object.namespace.as_deref().unwrap_or_default(),
            &object.name,
        );
        let mut entries = self.entries();
        entries.remove(key.as_str());
        shrink(&mut entries);
    }

    /// Drops the entries of resources for which `alive(namespace, name)` is false (after
    /// the watch listed again).
    pub fn retain(&self, alive: impl Fn(&str, &str) -> bool) {
        let mut entries = self.entries();
        entries.retain(|key, _| {
            key.split_once('/')
                .is_some_and(|(namespace, name)| alive(namespace, name))
        });
        shrink(&mut entries);
    }

    /// How many resources have an entry.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Whether no resource has an entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::BasetenSecretSpec;

    fn object(uid: &str) -> BasetenSecret {
        let mut object = BasetenSecret::new("r", BasetenSecretSpec::of("creds", "token"));
        object.metadata.namespace = Some("ml".into());
        object.metadata.uid = Some(uid.into());
        object
    }

    #[test]
    fn entries_belong_to_one_object_and_go_when_empty() {
        let memories = Memories::default();
        let first = object("u1");
        memories.change(
            &first,
            Change {
                failures: Some(2),
                settled: Some(Some(7)),
                ..Change::default()
            },
        );
        let recalled = memories.recall(&first);
        assert_eq!((recalled.memory.failures, recalled.settled), (2, Some(7)));
        assert!(
            memories.recall(&object("u2")).settled.is_none(),
            "a recreated object starts afresh"
        );

        memories.change(
            &first,
            Change {
                failures: Some(0),
                ..Change::default()
            },
        );
        assert_eq!(memories.len(), 1, "the fingerprint stays");
        memories.change(
            &first,
            Change {
                settled: Some(None),
                ..Change::default()
            },
        );
        assert!(memories.is_empty(), "nothing left to remember");

        memories.remember(&first, |m| m.drift = Some(Box::new(Drift::Missing)));
        memories.forget(&ObjectRef::new("r").within("ml"));
        assert!(memories.is_empty());

        memories.remember(&first, |m| m.failures = 1);
        memories.retain(|ns, name| (ns, name) != ("ml", "r"));
        assert!(memories.is_empty(), "gone in a relist");
    }
}
