//! Recording an outcome: the status, written only when it changes, and an event when the
//! Ready reason changes.

use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use tracing::warn;

use crate::context::{Context, FIELD_MANAGER};
use crate::crd::{BasetenSecret, BasetenSecretStatus};
use crate::error::Result;
use crate::status::{Outcome, READY, Reason, next_status};

/// Writes the status if it changed and publishes an event when the Ready reason changes.
pub async fn record(
    object: &BasetenSecret,
    ctx: &Context,
    current: &BasetenSecretStatus,
    namespace: &str,
    name: &str,
    outcome: &Outcome,
) -> Result<()> {
    let next = next_status(
        current,
        object.metadata.generation,
        outcome,
        Timestamp::now(),
    );
    if &next == current {
        return Ok(());
    }
    let api: Api<BasetenSecret> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = serde_json::json!({
        "apiVersion": BasetenSecret::api_version(&()),
        "kind": BasetenSecret::kind(&()),
        "status": next,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    ctx.remember(object, |memory| memory.written_status = Some(next));

    let previous_reason = current
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .map(|c| c.reason.as_str());
    // Events mark transitions of the Ready reason only; lastSyncTime records every write.
    if let Some(event) = event_for(previous_reason, outcome)
        && let Err(error) = ctx.recorder.publish(&event, &object.object_ref(&())).await
    {
        warn!(error = %error, "could not publish event");
    }
    Ok(())
}

/// The event for an outcome, when the Ready reason changed.
pub fn event_for(previous_reason: Option<&str>, outcome: &Outcome) -> Option<Event> {
    if previous_reason == Some(outcome.reason.as_str()) {
        return None;
    }
    Some(Event {
        type_: if outcome.reason == Reason::Synced {
            EventType::Normal
        } else {
            EventType::Warning
        },
        reason: outcome.reason.as_str().to_string(),
        note: Some(outcome.message.clone()),
        action: if outcome.written.is_some() {
            "Upsert"
        } else {
            "Reconcile"
        }
        .to_string(),
        secondary: None,
    })
}
