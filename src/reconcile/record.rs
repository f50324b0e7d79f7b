//! Recording how a reconcile ended: the status, written only when it changes, events, and
//! what is remembered.

use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::{debug, warn};

use super::step::{Note, Step, Then};
use crate::context::{Context, FIELD_MANAGER};
use crate::crd::{BasetenSecret, BasetenSecretStatus};
use crate::error::{Error, Result};
use crate::memory::Change;
use crate::status::{Outcome, READY, next_status, truncated};

/// Records how a reconcile ended: the status (written only when it changes) with an event
/// on a change of the Ready reason, any further event, and what to remember, in that order.
pub async fn finish(
    object: &BasetenSecret,
    ctx: &Context,
    current: &BasetenSecretStatus,
    namespace: &str,
    step: Step,
) -> Result<Action> {
    let Step {
        outcome,
        note,
        mut change,
        skipped_write,
        then,
    } = step;
    if skipped_write {
        ctx.metrics.skipped_write();
    }
    if let Some(outcome) = &outcome {
        match write_status(object, ctx, current, namespace, outcome).await {
            Ok(Some(written)) => change.written_status = Some(Some(written)),
            Ok(None) => {}
            Err(Error::Kube(kube::Error::Api(status))) if status.code == 404 => {
                // Deleted while this pass ran (a set dropping a child, say): nothing is left
                // to record, and its delete event forgets what was remembered.
                debug!("the resource is gone; nothing to record");
                return Ok(Action::await_change());
            }
            Err(error) => {
                // A failed write's retry time must survive a failed status patch.
                let retry = Change {
                    retry: change.retry,
                    ..Change::default()
                };
                ctx.memories.change(object, retry);
                return Err(error);
            }
        }
    }
    // Remembered before the drift event goes out, so that drift found meanwhile stays.
    ctx.memories.change(object, change);
    if let Some(note) = &note {
        announce(object, ctx, namespace, note).await;
    }
    match then {
        Then::AwaitChange => Ok(Action::await_change()),
        Then::Requeue(delay) => Ok(Action::requeue(delay)),
        Then::Fail(error) => Err(error),
        Then::Blocked => Err(Error::DeletionBlocked),
    }
}

/// Writes the status `outcome` leads to, if it differs from `current`, and publishes an
/// event when the Ready reason changes; returns the status written.
async fn write_status(
    object: &BasetenSecret,
    ctx: &Context,
    current: &BasetenSecretStatus,
    namespace: &str,
    outcome: &Outcome,
) -> Result<Option<BasetenSecretStatus>> {
    let next = next_status(
        current,
        object.metadata.generation,
        outcome,
        Timestamp::now(),
    );
    if &next == current {
        return Ok(None);
    }
    let api: Api<BasetenSecret> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = serde_json::json!({
        "apiVersion": BasetenSecret::api_version(&()),
        "kind": BasetenSecret::kind(&()),
        "status": next,
    });
    api.patch_status(
        &object.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    let previous_reason = current
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .map(|c| c.reason.as_str());
    // Events mark transitions of the Ready reason only; lastSyncTime records every write.
    // They are created directly: kube's Recorder keeps every event it published for minutes
    // to count repeats, which transitions never are.
    if let Some(event) = event_for(
        object,
        &ctx.event_instance,
        previous_reason,
        outcome,
        Timestamp::now(),
    ) {
        publish(ctx, namespace, &event).await;
    }
    Ok(Some(next))
}

/// Publishes an event about `object` that is not a Ready transition (a drift repair).
async fn announce(object: &BasetenSecret, ctx: &Context, namespace: &str, note: &Note) {
    let event = event(
        object,
        &ctx.event_instance,
        note.kind,
        note.reason,
        "Upsert",
        &note.text,
        Timestamp::now(),
    );
    publish(ctx, namespace, &event).await;
}

async fn publish(ctx: &Context, namespace: &str, event: &Event) {
    if let Err(error) = Api::<Event>::namespaced(ctx.client.clone(), namespace)
        .create(&PostParams::default(), event)
        .await
    {
        warn!(error = %error, "could not publish event");
    }
}

/// Longest event note the apiserver accepts, in bytes.
pub const EVENT_NOTE_MAX_BYTES: usize = 1024;

/// The event about `object` for an outcome, when the Ready reason changed.
pub fn event_for(
    object: &BasetenSecret,
    instance: &str,
    previous_reason: Option<&str>,
    outcome: &Outcome,
    now: Timestamp,
) -> Option<Event> {
    if previous_reason == Some(outcome.reason.as_str()) {
        return None;
    }
    let kind = if outcome.reason.is_ready() {
        "Normal"
    } else {
        "Warning"
    };
    let action = if outcome.written.is_some() {
        "Upsert"
    } else {
        "Reconcile"
    };
    Some(event(
        object,
        instance,
        kind,
        outcome.reason.as_str(),
        action,
        &outcome.message,
        now,
    ))
}

/// Longest object name Kubernetes accepts (a DNS subdomain).
const NAME_MAX: usize = 253;

/// A name of its own for an event about the resource named `name`: the name, cut so that the
/// whole fits in [`NAME_MAX`] (an event with a longer name is refused, and lost), then
/// `random` in hex. The cut never leaves a '.' or '-' before the suffix's '.', which a DNS
/// subdomain may not hold.
fn event_name(name: &str, random: u64) -> String {
    let suffix = format!(".{random:016x}");
    let room = NAME_MAX - suffix.len();
    // Resource names are ASCII; counting chars keeps any other text whole.
    let cut = name
        .char_indices()
        .nth(room)
        .map_or(name.len(), |(at, _)| at);
    let kept = name[..cut].trim_end_matches(['.', '-']);
    format!("{kept}{suffix}")
}

/// An event about `object`; the note is cut to [`EVENT_NOTE_MAX_BYTES`].
fn event(
    object: &BasetenSecret,
    instance: &str,
    kind: &str,
    reason: &str,
    action: &str,
    note: &str,
    now: Timestamp,
) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some(event_name(&object.name_any(), rand::random::<u64>())),
            namespace: object.namespace(),
            ..Default::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some(kind.into()),
        reason: Some(reason.into()),
        note: Some(truncated(note, EVENT_NOTE_MAX_BYTES)),
        action: Some(action.into()),
        regarding: Some(object.object_ref(&())),
        reporting_controller: Some(FIELD_MANAGER.into()),
        reporting_instance: Some(instance.into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::BasetenSecretSpec;
    use crate::status::Reason;

    fn object() -> BasetenSecret {
        let mut object = BasetenSecret::new("hf", BasetenSecretSpec::of("creds", "token"));
        object.metadata.namespace = Some("ml".into());
        object
    }

    fn outcome(reason: Reason, message: &str) -> Outcome {
        Outcome {
            reason,
            message: message.into(),
            written: None,
            force_sync_token: None,
            found: None,
            pending: None,
        }
    }

    #[test]
    fn event_names_fit_the_apiserver_for_the_longest_resource_names() {
        let dns_subdomain = |name: &str| {
            name.len() <= 253
                && name.split('.').all(|part| {
                    part.starts_with(|c: char| c.is_ascii_alphanumeric())
                        && part.ends_with(|c: char| c.is_ascii_alphanumeric())
                })
        };
        // Cut at 236 characters, these end in '-' and in '.' there.
        let dash = format!("{}-{}", "a".repeat(235), "b".repeat(17));
        let dot = format!("{}.{}", "a".repeat(235), "b".repeat(17));
        for name in [dash.as_str(), dot.as_str(), &"c".repeat(253)] {
            assert_eq!(name.len(), 253);
            let mut long = object();
            long.metadata.name = Some(name.into());
            let event = event_for(
                &long,
                "pod",
                None,
                &outcome(Reason::Synced, "ok"),
                Timestamp::now(),
            )
            .unwrap();
            let event_name = event.metadata.name.unwrap();
            assert!(dns_subdomain(&event_name), "{event_name}");
            assert!(event_name.starts_with(&name[..235]), "{event_name}");
        }
        let short = event_name("hf", 0xab);
        assert_eq!(short, "hf.00000000000000ab");
    }

    #[test]
    fn events_mark_transitions_only() {
        let now = Timestamp::now();
        let synced = outcome(Reason::Synced, "fine");
        assert!(event_for(&object(), "pod", Some("Synced"), &synced, now).is_none());
        let event = event_for(&object(), "pod", Some("SecretNotFound"), &synced, now).unwrap();
        assert_eq!(event.type_.as_deref(), Some("Normal"));
        assert_eq!(event.reason.as_deref(), Some("Synced"));
        assert_eq!(event.reporting_instance.as_deref(), Some("pod"));
        assert_eq!(event.metadata.namespace.as_deref(), Some("ml"));
        assert_eq!(event.regarding.and_then(|r| r.name).as_deref(), Some("hf"));
        let missing = outcome(Reason::SecretNotFound, &"é".repeat(1000));
        let event = event_for(&object(), "pod", None, &missing, now).unwrap();
        assert_eq!(event.type_.as_deref(), Some("Warning"));
        let note = event.note.unwrap();
        assert!(note.len() <= EVENT_NOTE_MAX_BYTES && note.len() >= EVENT_NOTE_MAX_BYTES - 4);
        assert!(note.ends_with('…'), "{note}");
    }
}
