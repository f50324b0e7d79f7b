//! A resource as the claims rank it: one deleting its secret first, then the oldest.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::crd::{BasetenSecret, CLEANUP_FINALIZER, DeletionPolicy, SKIP_REMOTE_DELETE_ANNOTATION};
use crate::maps::object_key;

/// A resource in the order that decides conflicts: one deleting the secret first, then the
/// oldest, then `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Claimant {
    /// Whether it is going away and deletes the secret in Baseten first. Until that delete
    /// is done nobody else may write the name, or the delete would remove their value.
    pub standing: Standing,
    /// The resource's creationTimestamp.
    pub created: Option<Timestamp>,
    /// `namespace/name`, also the key of its entry (one string for both).
    pub(super) id: Key,
}

/// How a claimant ranks before age is looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Standing {
    /// Being deleted, and deleting the secret it wrote: it goes first.
    Deleting,
    /// Any other.
    Writing,
}

/// Whether `object` is being deleted and will delete what it wrote in Baseten.
fn deletes_on_cleanup(object: &BasetenSecret) -> bool {
    object.metadata.deletion_timestamp.is_some()
        && deletes_what_it_leaves(object)
        && object.finalizers().iter().any(|f| f == CLEANUP_FINALIZER)
        && !object
            .annotations()
            .get(SKIP_REMOTE_DELETE_ANNOTATION)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Whether `object` deletes in Baseten what it wrote and no longer wants (after a rename or
/// a team move, and its pending deletions).
pub(super) fn deletes_what_it_leaves(object: &BasetenSecret) -> bool {
    object.spec.deletion_policy == DeletionPolicy::Delete
}

impl Claimant {
    /// The claimant `object` is.
    pub fn of(object: &BasetenSecret) -> Self {
        Self {
            standing: if deletes_on_cleanup(object) {
                Standing::Deleting
            } else {
                Standing::Writing
            },
            created: object.metadata.creation_timestamp.as_ref().map(|t| t.0),
            id: key(object),
        }
    }

    /// Whether it is deleting the secret before it goes.
    pub fn is_deleting(&self) -> bool {
        self.standing == Standing::Deleting
    }

    /// Whether both are the same resource, whatever their standing.
    pub fn is(&self, other: &Claimant) -> bool {
        self.id == other.id
    }

    /// Its namespace.
    pub fn namespace(&self) -> &str {
        self.id
            .split_once('/')
            .map_or("", |(namespace, _)| namespace)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        self.id.split_once('/').map_or(&*self.id, |(_, name)| name)
    }

    pub(super) fn object_ref(&self) -> ObjectRef<BasetenSecret> {
        ObjectRef::new(self.name()).within(self.namespace())
    }
}

impl std::fmt::Display for Claimant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.id)
    }
}

/// A resource as `namespace/name` (neither part holds a '/'): one allocation, shared by its
/// entry's key and its claimant.
pub(super) type Key = Arc<str>;

pub(super) fn key(object: &BasetenSecret) -> Key {
    object_key(&object.namespace().unwrap_or_default(), &object.name_any()).into()
}
