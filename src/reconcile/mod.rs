//! Reconcile one BasetenSecret. Each branch runs one pass: gather the inputs once, plan
//! purely, act on Baseten, and record the outcome (status, events, memory) once.

pub mod act;
pub mod apply;
pub mod cleanup;
pub mod decide;
pub mod gather;
pub mod identity;
pub mod pending;
pub mod plan;
pub mod record;
pub mod retry;
pub mod step;

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use tracing::{Instrument, debug, info_span, warn};

use crate::context::Context;
use crate::crd::{BasetenSecret, CLEANUP_FINALIZER, DeletionPolicy};
use crate::error::{Error, Result};
use retry::{backoff, jittered};

/// Reconciles one BasetenSecret.
pub async fn reconcile(object: Arc<BasetenSecret>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = object
        .namespace()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    let name = object.name_any();
    let span = info_span!("reconcile", namespace = %namespace, name = %name);
    async {
        // Tests count these two lines to know when every reconcile has run to its end.
        debug!("reconcile started");
        let started = std::time::Instant::now();
        let result = dispatch(object, &ctx, &namespace, &name).await;
        ctx.metrics.reconciled(
            started.elapsed(),
            result.as_ref().err().map(Error::metric_label),
        );
        debug!(ok = result.is_ok(), "reconcile finished");
        result
    }
    .instrument(span)
    .await
}

/// The top-level branch. With `deletionPolicy: Delete` (or while a finalizer added under it
/// is still there) kube's finalizer helper runs apply or cleanup; under Retain no finalizer
/// is kept, and one left from an earlier Delete is removed.
async fn dispatch(
    object: Arc<BasetenSecret>,
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Action> {
    let finalized = object.finalizers().iter().any(|f| f == CLEANUP_FINALIZER);
    let deleting = object.metadata.deletion_timestamp.is_some();
    if object.spec.deletion_policy == DeletionPolicy::Delete || (finalized && deleting) {
        let api: Api<BasetenSecret> = Api::namespaced(ctx.client.clone(), namespace);
        return finalizer(&api, CLEANUP_FINALIZER, object, |event| async move {
            match event {
                Event::Apply(object) => apply::apply(&object, ctx, namespace, name).await,
                Event::Cleanup(object) => cleanup::cleanup(&object, ctx, namespace).await,
            }
        })
        .await
        .map_err(|error| Error::Finalizer(Box::new(error)));
    }
    if finalized {
        // Switched from Delete to Retain: the patch brings the object back without it.
        cleanup::drop_finalizer(&object, ctx, namespace).await?;
        return Ok(Action::await_change());
    }
    if deleting {
        // Retain: the Baseten secret stays, and there is nothing to write.
        return Ok(Action::await_change());
    }
    apply::apply(&object, ctx, namespace, name).await
}

/// Decides when to retry after a failed reconcile: a failed Baseten write at its retry
/// time, anything else with exponential backoff.
pub fn error_policy(object: Arc<BasetenSecret>, error: &Error, ctx: Arc<Context>) -> Action {
    let scheduled = match error.cause() {
        Error::Baseten(_) if object.metadata.deletion_timestamp.is_none() => (ctx.memories)
            .recall(&object)
            .memory
            .retry
            .map(|r| (r.left(), r.failures)),
        _ => None,
    };
    let (delay, failures) = scheduled.unwrap_or_else(|| {
        let mut failures = 0;
        ctx.memories.remember(&object, |memory| {
            memory.failures += 1;
            failures = memory.failures;
        });
        (jittered(backoff(failures)), failures)
    });
    warn!(
        namespace = object.namespace().unwrap_or_default(),
        name = object.name_any(),
        error = %error,
        category = error.metric_label(),
        failures,
        retry_in_ms = delay.as_millis() as u64,
        "reconcile failed; retrying"
    );
    Action::requeue(delay)
}
