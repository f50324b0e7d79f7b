//! Reconcile one BasetenSecret: read the key's value, decide whether Baseten needs a write,
//! upsert, then record the outcome in status and, on a transition, in an event.

pub mod apply;
pub mod decide;
pub mod record;
pub mod retry;
pub mod value;

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use tracing::{Instrument, debug, info_span, warn};

use crate::context::Context;
use crate::crd::BasetenSecret;
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
        let result = apply::apply(&object, &ctx, &namespace, &name).await;
        debug!(ok = result.is_ok(), "reconcile finished");
        result
    }
    .instrument(span)
    .await
}

/// Decides when to retry after a failed reconcile: a failed Baseten write at its retry
/// time, anything else with exponential backoff.
pub fn error_policy(object: Arc<BasetenSecret>, error: &Error, ctx: Arc<Context>) -> Action {
    let scheduled = match error {
        Error::Baseten(_) => ctx.recall(&object).retry.map(|r| (r.left(), r.failures)),
        _ => None,
    };
    let (delay, failures) = scheduled.unwrap_or_else(|| {
        let mut failures = 0;
        ctx.remember(&object, |memory| {
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
