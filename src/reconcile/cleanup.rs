//! The cleanup branch: a resource with `deletionPolicy: Delete` is going away, so the Baseten
//! secret it wrote goes too, unless another resource uses that name now.

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use tracing::{info, warn};

use super::record::record;
use crate::baseten::{BasetenError, Deleted};
use crate::claims::{Claimant, Target};
use crate::context::Context;
use crate::crd::{BasetenSecret, CLEANUP_FINALIZER, DeletionPolicy, SKIP_REMOTE_DELETE_ANNOTATION};
use crate::credentials::ApiKey;
use crate::error::{Error, Result};
use crate::status::{Outcome, Reason};

/// What became of a Baseten name this resource no longer wants.
#[derive(Debug)]
pub enum Released {
    /// Deleted now, or Baseten had no such secret.
    Deleted(Deleted),
    /// Another resource targets or holds the name; it stays.
    Claimed(String),
}

/// Deletes the Baseten secret `baseten_name` that `object` wrote, unless another resource
/// claims it.
pub async fn release_name(
    object: &BasetenSecret,
    ctx: &Context,
    api_key: &ApiKey,
    team_name: Option<&str>,
    baseten_name: &str,
) -> Result<Released, BasetenError> {
    if let Some(other) = ctx.claims.other_claimant(
        &Target::in_team_of(object, baseten_name),
        &Claimant::of(object),
    ) {
        info!(baseten_name = %baseten_name, claimed_by = %other, "Baseten secret kept: another resource uses the name");
        return Ok(Released::Claimed(other.to_string()));
    }
    // The team the name was written to, as Baseten named it in its answer.
    let team_id = match team_name {
        None => None,
        Some(team_name) => match api_key.client.team(Some(team_name)).await? {
            Some(team) if team.default => None,
            Some(team) => Some(team.id),
            // A team that is gone took its secrets with it.
            None => return Ok(Released::Deleted(Deleted::AlreadyGone)),
        },
    };
    let deleted = api_key
        .client
        .delete_in(team_id.as_deref(), baseten_name)
        .await?;
    info!(baseten_name = %baseten_name, ?deleted, "deleted secret in Baseten");
    Ok(Released::Deleted(deleted))
}

/// Whether the annotation asks to let the resource go without the remote delete.
fn skips_remote_delete(object: &BasetenSecret) -> bool {
    object
        .annotations()
        .get(SKIP_REMOTE_DELETE_ANNOTATION)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Runs while the resource is being deleted and still carries the cleanup finalizer; the
/// finalizer is removed when this returns `Ok`.
pub async fn cleanup(
    object: &BasetenSecret,
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Action> {
    if object.spec.deletion_policy == DeletionPolicy::Retain {
        info!("deletionPolicy is Retain: the Baseten secret stays");
        return Ok(Action::await_change());
    }
    if skips_remote_delete(object) {
        info!(
            annotation = SKIP_REMOTE_DELETE_ANNOTATION,
            "released without deleting the Baseten secret"
        );
        return Ok(Action::await_change());
    }
    let current = ctx.current_status(object);
    let Some(written) = current
        .baseten_name
        .clone()
        .filter(|_| current.synced_hash.is_some())
    else {
        info!("nothing was written to Baseten; nothing to delete");
        return Ok(Action::await_change());
    };
    if ctx.recall(object).deleted.as_deref() == Some(written.as_str()) {
        // A reconcile that saw the object before the finalizer's removal reached the cache.
        return Ok(Action::await_change());
    }
    let api_key = match ctx.api_key(object).await? {
        Ok(api_key) => api_key,
        Err((_, cause)) => {
            let outcome = Outcome {
                reason: Reason::DeletionBlocked,
                message: format!(
                    "deleting Baseten secret {written:?} needs the API key: {cause}. To let the resource go without deleting it, annotate it {SKIP_REMOTE_DELETE_ANNOTATION}=true"
                ),
                written: None,
                force_sync_token: None,
                found: None,
            };
            record(object, ctx, &current, namespace, name, &outcome).await?;
            return Err(Error::DeletionBlocked);
        }
    };
    match release_name(
        object,
        ctx,
        &api_key,
        current.team_name.as_deref(),
        &written,
    )
    .await
    {
        Ok(_) => {
            ctx.remember(object, |memory| {
                memory.deleted = Some(written.into_boxed_str())
            });
            Ok(Action::await_change())
        }
        Err(error) => {
            warn!(error = %error, "deleting the Baseten secret failed");
            let reason = if matches!(error, BasetenError::RateLimited { .. }) {
                Reason::Deleting
            } else {
                Reason::DeletionBlocked
            };
            let outcome = Outcome {
                reason,
                message: format!(
                    "deleting Baseten secret {written:?} failed: {error}; retrying. To let the resource go without deleting it, annotate it {SKIP_REMOTE_DELETE_ANNOTATION}=true"
                ),
                written: None,
                force_sync_token: None,
                found: None,
            };
            record(object, ctx, &current, namespace, name, &outcome).await?;
            Err(Error::Baseten(error))
        }
    }
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
    let path = format!("/metadata/finalizers/{index}");
    let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
        {"op": "test", "path": path, "value": CLEANUP_FINALIZER},
        {"op": "remove", "path": path},
    ]))
    .map_err(|_| Error::MissingObjectKey("finalizer path"))?;
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
