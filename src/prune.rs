//! What is pruned from a BasetenSecret before it enters the cache.

use crate::crd::BasetenSecret;
use crate::crd_set::SET_LABEL;

/// Drops what reconciles never read before an object enters the cache: field managers, the
/// resourceVersion (the watch has read it, and no write is conditional on it), labels and
/// owner references (but a BasetenSecretSet's, which the set compares with), other
/// annotations than this operator's, and spare list capacity.
pub fn prune(object: &mut BasetenSecret) {
    let meta = &mut object.metadata;
    meta.managed_fields = None;
    meta.resource_version = None;
    meta.labels = (meta.labels.take())
        .map(|all| {
            all.into_iter()
                .filter(|(key, _)| key == SET_LABEL)
                .collect::<std::collections::BTreeMap<_, _>>()
        })
        .filter(|kept| !kept.is_empty());
    meta.owner_references = (meta.owner_references.take())
        .map(|all| {
            all.into_iter()
                .filter(|r| r.controller == Some(true) && r.kind == "BasetenSecretSet")
                .collect::<Vec<_>>()
        })
        .filter(|kept| !kept.is_empty());
    meta.annotations = meta
        .annotations
        .take()
        .map(|all| {
            all.into_iter()
                .filter(|(key, _)| key.starts_with(ANNOTATION_PREFIX))
                .collect::<std::collections::BTreeMap<_, _>>()
        })
        .filter(|kept| !kept.is_empty());
    if let Some(status) = object.status.as_mut() {
        status.conditions.shrink_to_fit();
    }
}

/// Prefix of the annotations this operator reads.
const ANNOTATION_PREFIX: &str = "baseten.co/";
