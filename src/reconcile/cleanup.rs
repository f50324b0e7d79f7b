//! The cleanup branch: a resource with `deletionPolicy: Delete` is going away, so the Baseten
//! secret it wrote goes too, unless another resource uses that name now. Also the finalizer's
//! removal when the policy turns to Retain.

use json_patch::jsonptr::PointerBuf;
use json_patch::{PatchOperation, RemoveOperation, TestOperation};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use tracing::info;

use super::act::release_all;
use super::gather::{Recall, api_key, recall};
use super::record::finish;
use super::step::{Step, Then, base, outcome};
use crate::baseten::BasetenError;
use crate::context::Context;
use crate::crd::{
    BasetenSecret, CLEANUP_FINALIZER, DeletionPolicy, PendingDeletion,
    SKIP_REMOTE_DELETE_ANNOTATION,
};
use crate::error::{Error, Result};
use crate::memory::Change;
use crate::status::Reason;

/// Whether the annotation asks to let the resource go without the remote delete.
fn skips_remote_delete(object: &BasetenSecret) -> bool {
    object
        .annotations()
        .get(SKIP_REMOTE_DELETE_ANNOTATION)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Runs while the resource is being deleted and still carries the cleanup finalizer; the
/// finalizer is removed when this returns `Ok`.
pub async fn cleanup(object: &BasetenSecret, ctx: &Context, namespace: &str) -> Result<Action> {
    let recall = recall(object, ctx);
    let names = match removal(object, &recall) {
        Removal::Keep(why) => {
            info!("{why}");
            return Ok(Action::await_change());
        }
        Removal::Delete(names) => names,
    };
    // The first name (removal never returns none) is what the deleted-already check
    // remembers.
    let first = names[0].baseten_name.clone();
    let step = match api_key(object, ctx).await? {
        Err((_, cause)) => blocked(&recall, &first, &cause),
        Ok(api_key) => match release_all(object, ctx, &api_key, &names).await.pop() {
            None => Step::nothing(Change {
                deleted: Some(first),
                ..base(&recall)
            }),
            Some((name, error)) => failed(&recall, &name.baseten_name, error),
        },
    };
    finish(object, ctx, &recall.status, namespace, step).await
}

/// What the cleanup of a resource does in Baseten.
#[derive(Debug, PartialEq, Eq)]
enum Removal {
    /// Nothing, for this reason.
    Keep(&'static str),
    /// Delete these: the secret it wrote last, then its pending deletions.
    Delete(Vec<PendingDeletion>),
}

fn removal(object: &BasetenSecret, recall: &Recall) -> Removal {
    if object.spec.deletion_policy == DeletionPolicy::Retain {
        return Removal::Keep("deletionPolicy is Retain: the Baseten secret stays");
    }
    if skips_remote_delete(object) {
        return Removal::Keep("released without deleting the Baseten secret");
    }
    let status = &recall.status;
    let written = (status.baseten_name.clone())
        .filter(|_| status.synced_hash.is_some())
        .map(|baseten_name| PendingDeletion {
            baseten_name,
            team_name: status.team_name.clone(),
        });
    let names: Vec<PendingDeletion> = written
        .into_iter()
        .chain(status.pending_deletions.iter().cloned())
        .collect();
    let Some(first) = names.first() else {
        return Removal::Keep("nothing was written to Baseten; nothing to delete");
    };
    if recall.memory.deleted.as_deref() == Some(first.baseten_name.as_str()) {
        // A reconcile that saw the object before the finalizer's removal reached the cache;
        // it deleted every name.
        return Removal::Keep("the Baseten secret is deleted already");
    }
    Removal::Delete(names)
}

/// The delete needs the API key, and it cannot be used.
fn blocked(recall: &Recall, written: &str, cause: &str) -> Step {
    let message = format!(
        "deleting Baseten secret {written:?} needs the API key: {cause}. To let the resource go without deleting it, annotate it {SKIP_REMOTE_DELETE_ANNOTATION}=true"
    );
    Step::record(outcome(Reason::DeletionBlocked, message), base(recall)).then(Then::Blocked)
}

/// The delete failed; a throttled one is still under way.
fn failed(recall: &Recall, written: &str, error: Error) -> Step {
    let reason = if matches!(error, Error::Baseten(BasetenError::RateLimited { .. })) {
        Reason::Deleting
    } else {
        Reason::DeletionBlocked
    };
    let message = format!(
        "deleting Baseten secret {written:?} failed: {error}; retrying. To let the resource go without deleting it, annotate it {SKIP_REMOTE_DELETE_ANNOTATION}=true"
    );
    Step::record(outcome(reason, message), base(recall)).then(Then::Fail(error))
}

/// Removes the cleanup finalizer from a resource whose policy is Retain now. The JSON patch
/// tests the entry first, so a concurrent change of the list makes it fail and retry.
pub async fn drop_finalizer(object: &BasetenSecret, ctx: &Context, namespace: &str) -> Result<()> {
    let Some(index) = object
        .finalizers()
        .iter()
        .position(|f| f == CLEANUP_FINALIZER)
    else {
        return Ok(());
    };
    let path = PointerBuf::from_tokens([
        "metadata".to_string(),
        "finalizers".into(),
        index.to_string(),
    ]);
    let patch = json_patch::Patch(vec![
        PatchOperation::Test(TestOperation {
            path: path.clone(),
            value: CLEANUP_FINALIZER.into(),
        }),
        PatchOperation::Remove(RemoveOperation { path }),
    ]);
    Api::<BasetenSecret>::namespaced(ctx.client.clone(), namespace)
        .patch(
            &object.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await?;
    info!("deletionPolicy is Retain: finalizer removed");
    Ok(())
}
