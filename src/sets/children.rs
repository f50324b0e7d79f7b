//! What a set reads and writes: the key names of its Secrets (values are read with them,
//! then wiped at once), and its generated BasetenSecrets, applied only when they differ
//! from what they should be and deleted when their key is gone.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::{PartialObjectMeta, Selector};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::info;

use super::context::SetContext;
use super::naming::Wanted;
use super::report::Found;
use crate::crd::{BasetenSecret, BasetenSecretSpec, SecretKeyRef};
use crate::crd_set::{BasetenSecretSet, SET_LABEL};
use crate::error::Result;
use crate::secrets::{Gated, get_secret, wipe};

/// Secrets of a selector set read at once.
const PARALLEL_READS: usize = 8;

/// Field manager of the generated BasetenSecrets.
pub const SET_MANAGER: &str = "baseten-secrets-operator-set";

/// The key names of a Secret read whole; the values are wiped before this returns.
fn key_names(secret: Secret) -> Vec<String> {
    let keys = secret
        .data
        .as_ref()
        .map(|data| data.keys().cloned().collect())
        .unwrap_or_default();
    wipe(secret);
    keys
}

/// What the Secrets of `set` hold: each one's name and key names, or why they cannot be
/// read.
pub async fn read_keys(
    set: &BasetenSecretSet,
    ctx: &SetContext,
    namespace: &str,
) -> Result<std::result::Result<Vec<(String, Vec<String>)>, Found>> {
    let selector = ctx.secret_selector.as_ref();
    if let Some(name) = &set.spec.secret_name {
        return Ok(
            match get_secret(&ctx.client, namespace, name, selector).await? {
                Gated::Read(secret) => Ok(vec![(name.clone(), key_names(*secret))]),
                Gated::Missing => Err(Found::SecretNotFound(format!(
                    "Secret {namespace}/{name} does not exist; its BasetenSecrets are kept until it is back"
                ))),
                Gated::Refused { why, .. } => Err(Found::SecretNotAllowed(why.1)),
            },
        );
    }
    let Some(label_selector) = set.spec.secret_selector.clone() else {
        return Ok(Err(Found::InvalidSpec(
            "set exactly one of spec.secretName and spec.secretSelector".into(),
        )));
    };
    let selector_text = match Selector::try_from(label_selector) {
        Ok(selector) => selector.to_string(),
        Err(error) => {
            return Ok(Err(Found::InvalidSpec(format!(
                "spec.secretSelector is not a valid label selector: {error}"
            ))));
        }
    };
    let metadata: Api<PartialObjectMeta<Secret>> = Api::namespaced(ctx.client.clone(), namespace);
    let listed = metadata
        .list_metadata(&ListParams::default().labels(&selector_text))
        .await?;
    // Key names come from the last read of each Secret at its listed resourceVersion; only
    // Secrets that changed since are read again, a few at a time.
    let reads = listed.items.into_iter().map(|item| async move {
        let name = item.name_any();
        let version = item.metadata.resource_version.unwrap_or_default();
        if let Some(keys) = ctx.known_keys(namespace, &name, &version) {
            return Ok::<_, crate::error::Error>(Some((name, keys)));
        }
        // One the operator may not read has no keys here, so no BasetenSecrets.
        match get_secret(&ctx.client, namespace, &name, selector).await? {
            Gated::Read(secret) => {
                let keys = key_names(*secret);
                ctx.keep_keys(namespace, &name, &version, &keys);
                Ok(Some((name, keys)))
            }
            _ => Ok(None),
        }
    });
    let found: Vec<Option<(String, Vec<String>)>> = futures::stream::iter(reads)
        .buffer_unordered(PARALLEL_READS)
        .try_collect()
        .await?;
    let mut secrets: Vec<(String, Vec<String>)> = found.into_iter().flatten().collect();
    secrets.sort();
    Ok(Ok(secrets))
}

/// The label value naming `set` on its children: the name, or a hash of it when it is
/// longer than a label value may be.
pub fn set_label(set: &str) -> String {
    if set.len() <= 63 && !set.contains('.') {
        return set.to_string();
    }
    crate::hash::short_hex(set)
}

/// The spec the child of `wanted` should have.
pub fn child_spec(set: &BasetenSecretSet, wanted: &Wanted) -> BasetenSecretSpec {
    let template = &set.spec.template;
    BasetenSecretSpec {
        secret_ref: SecretKeyRef {
            name: wanted.secret.clone(),
            key: wanted.key.clone(),
        },
        baseten_name: Some(wanted.baseten_name.clone()),
        suspend: template.suspend,
        team: template.team.clone(),
        api_key_ref: template.api_key_ref.clone(),
        deletion_policy: template.deletion_policy.unwrap_or_default(),
        update_policy: template.update_policy.unwrap_or_default(),
        refresh_interval: template.refresh_interval.clone(),
    }
}

/// Whether `object` is a child of `set` (its controller owner reference names the set).
pub fn is_child_of(object: &BasetenSecret, set: &BasetenSecretSet) -> bool {
    let uid = set.metadata.uid.as_deref();
    object
        .owner_references()
        .iter()
        .any(|r| r.controller == Some(true) && Some(r.uid.as_str()) == uid)
}

/// Whether `object`, a child of `set`, is as it should be for `wanted`.
fn is_current(object: &BasetenSecret, set: &BasetenSecretSet, wanted: &Wanted) -> bool {
    let label = object.labels().get(SET_LABEL);
    object.spec == child_spec(set, wanted)
        && label == Some(&set_label(&set.name_any()))
        && is_child_of(object, set)
}

fn owner(set: &BasetenSecretSet) -> OwnerReference {
    OwnerReference {
        api_version: BasetenSecretSet::api_version(&()).into_owned(),
        kind: BasetenSecretSet::kind(&()).into_owned(),
        name: set.name_any(),
        uid: set.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        // The set's finalizer deletes its children; nothing waits on the garbage collector.
        block_owner_deletion: None,
    }
}

/// Server-side applies the child of `wanted`, unless the cache shows it as it should be.
/// Returns whether it wrote.
pub async fn apply_child(
    set: &BasetenSecretSet,
    ctx: &SetContext,
    namespace: &str,
    wanted: &Wanted,
    existing: Option<&BasetenSecret>,
) -> Result<bool> {
    if existing.is_some_and(|o| is_current(o, set, wanted)) {
        return Ok(false);
    }
    let api: Api<BasetenSecret> = Api::namespaced(ctx.client.clone(), namespace);
    let spec = serde_json::to_value(child_spec(set, wanted)).unwrap_or_default();
    let mut body = json!({
        "apiVersion": BasetenSecret::api_version(&()),
        "kind": BasetenSecret::kind(&()),
        "metadata": {
            "name": wanted.child,
            "labels": {SET_LABEL: set_label(&set.name_any())},
            "ownerReferences": [owner(set)],
        },
        "spec": spec,
    });
    // Fields the template leaves out, set by hand, are taken away; the defaults are written
    // out so that a hand-set value of theirs is put back too.
    let spec_of = |b: &mut serde_json::Value| b["spec"].as_object_mut().map(|s| s.clone());
    if let Some(mut fields) = spec_of(&mut body) {
        for (field, default) in [
            ("suspend", json!(false)),
            ("deletionPolicy", json!("Retain")),
            ("updatePolicy", json!("Replace")),
        ] {
            fields.entry(field).or_insert(default);
        }
        body["spec"] = serde_json::Value::Object(fields);
    }
    let params = PatchParams::apply(SET_MANAGER).force();
    api.patch(&wanted.child, &params, &Patch::Apply(&body))
        .await?;
    if let Some(object) = existing {
        clear_foreign_fields(&api, object, &wanted.child, &body).await?;
    }
    Ok(true)
}

/// Removes spec fields that another manager set on a child and the set does not want.
async fn clear_foreign_fields(
    api: &Api<BasetenSecret>,
    object: &BasetenSecret,
    name: &str,
    body: &serde_json::Value,
) -> Result<()> {
    let current = serde_json::to_value(&object.spec).unwrap_or_default();
    let extra: BTreeMap<String, serde_json::Value> = current
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(field, _)| body["spec"].get(field.as_str()).is_none())
        .map(|(field, _)| (field.clone(), serde_json::Value::Null))
        .collect();
    if !extra.is_empty() {
        let patch = json!({"spec": extra});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(())
}

/// Deletes a child whose key is gone; its deletionPolicy decides what happens in Baseten.
pub async fn delete_child(ctx: &SetContext, namespace: &str, name: &str) -> Result<()> {
    let api: Api<BasetenSecret> = Api::namespaced(ctx.client.clone(), namespace);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {
            info!(child = name, "deleted a BasetenSecret whose key is gone");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}
