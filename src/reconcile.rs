//! Reconcile one BasetenSecret: read the key's value, decide whether Baseten needs a write,
//! upsert, then record the outcome in status and, on a transition, in an event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use rand::Rng;
use secrecy::SecretString;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::baseten::{BasetenClient, BasetenError};
use crate::crd::{BasetenSecret, BasetenSecretStatus, FORCE_SYNC_ANNOTATION, SecretKeyRef};
use crate::error::{Error, Result};
use crate::hash::HashKey;
use crate::index::SecretIndex;
use crate::status::{Outcome, Reason, Written, next_status};

/// Field manager of the operator's status writes.
pub const FIELD_MANAGER: &str = "baseten-secrets-operator";

/// First retry delay after a transient failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);

/// Longest retry delay after repeated transient failures.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// How long to wait before trying a refused API key again: it rarely fixes itself, and
/// hammering Baseten with a bad key helps nobody. A change to the resource retries at once.
pub const UNAUTHORIZED_RETRY: Duration = Duration::from_secs(300);

/// How long to wait before trying a rejected request again.
pub const REJECTED_RETRY: Duration = Duration::from_secs(600);

/// Everything a reconcile needs.
pub struct Context {
    /// Kubernetes client.
    pub client: kube::Client,
    /// Baseten client for the operator's API key.
    pub baseten: BasetenClient,
    /// Key of the synced-hash HMAC.
    pub hash_key: HashKey,
    /// Which BasetenSecrets read which Secret.
    pub index: SecretIndex,
    /// Publishes Kubernetes events.
    pub recorder: Recorder,
    /// Consecutive failed reconciles per object (Kubernetes errors), for exponential backoff.
    pub failures: Mutex<HashMap<ObjectRef<BasetenSecret>, u32>>,
    /// Failed Baseten writes per object, and when the same write may be tried again.
    pub retries: Mutex<HashMap<ObjectRef<BasetenSecret>, Retry>>,
    /// The status this process last wrote per object (with the object's uid). The watch
    /// cache can lag behind our own status patch; since only this operator writes status,
    /// the last written one wins, so a quick second reconcile never writes twice.
    pub written_status: Mutex<HashMap<ObjectRef<BasetenSecret>, (String, BasetenSecretStatus)>>,
}

impl Context {
    /// The status to decide from: the last one written for this very object, else the
    /// object's own.
    fn current_status(&self, object: &BasetenSecret) -> BasetenSecretStatus {
        let written = self
            .written_status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ObjectRef::from_obj(object))
            .filter(|(uid, _)| object.metadata.uid.as_deref() == Some(uid.as_str()))
            .map(|(_, status)| status.clone());
        written
            .or_else(|| object.status.clone())
            .unwrap_or_default()
    }

    fn remember_status(&self, object: &BasetenSecret, status: BasetenSecretStatus) {
        if let Some(uid) = object.metadata.uid.clone() {
            self.written_status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(ObjectRef::from_obj(object), (uid, status));
        }
    }

    /// Drops what is kept for an object that no longer exists.
    pub fn forget(&self, object: &ObjectRef<BasetenSecret>) {
        self.written_status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(object);
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(object);
        self.retries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(object);
    }

    fn retries(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<BasetenSecret>, Retry>> {
        self.retries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A failed Baseten write waiting for its retry time.
#[derive(Clone, Debug)]
pub struct Retry {
    /// The same write is not tried before this instant.
    pub not_before: Instant,
    /// What was attempted: synced hash (name, value, key), generation and force token.
    /// Any change to these is a new write and goes ahead at once.
    pub attempt: String,
    /// Consecutive failures of this object's writes.
    pub failures: u32,
}

/// How long to wait after the `failures`-th consecutive failure of a write.
pub fn retry_delay(error: &BasetenError, failures: u32) -> Duration {
    match error {
        BasetenError::Unauthorized { .. } => UNAUTHORIZED_RETRY,
        BasetenError::Rejected { .. } => REJECTED_RETRY,
        BasetenError::RateLimited {
            retry_after: Some(after),
        } => *after,
        _ => backoff(failures),
    }
}

/// Whether Baseten needs a write, decided from the status alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Baseten already holds this name and value.
    UpToDate,
    /// Nothing was ever written.
    FirstWrite,
    /// The value or the Baseten name changed since the last write.
    Changed,
    /// A new force-sync token asks for a write.
    Forced,
}

/// Decides whether to write. `synced_hash` covers name and value; `force_token` is the
/// current force-sync annotation.
pub fn decide(
    status: Option<&BasetenSecretStatus>,
    baseten_name: &str,
    synced_hash: &str,
    force_token: Option<&str>,
) -> Decision {
    let Some(status) = status.filter(|s| s.synced_hash.is_some()) else {
        return Decision::FirstWrite;
    };
    if status.synced_hash.as_deref() != Some(synced_hash)
        || status.baseten_name.as_deref() != Some(baseten_name)
    {
        return Decision::Changed;
    }
    match force_token {
        Some(token) if !token.is_empty() && status.force_sync_token.as_deref() != Some(token) => {
            Decision::Forced
        }
        _ => Decision::UpToDate,
    }
}

/// The value of a key, or why it cannot be used (a user's problem, not an error).
pub fn extract_value(
    secret: &Secret,
    key_ref: &SecretKeyRef,
    namespace: &str,
) -> std::result::Result<SecretString, (Reason, String)> {
    let data: Option<&ByteString> = secret.data.as_ref().and_then(|d| d.get(&key_ref.key));
    let Some(ByteString(bytes)) = data else {
        let mut keys: Vec<&str> = secret
            .data
            .iter()
            .flat_map(|d| d.keys())
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        return Err((
            Reason::KeyNotFound,
            format!(
                "Secret {namespace}/{} has no key {:?} (it has: {}); add the key or fix spec.secretRef.key",
                key_ref.name,
                key_ref.key,
                if keys.is_empty() {
                    "no keys".to_string()
                } else {
                    keys.join(", ")
                }
            ),
        ));
    };
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(SecretString::from(text.to_string())),
        Err(_) => Err((
            Reason::InvalidValue,
            format!(
                "the value of key {:?} in Secret {namespace}/{} is not UTF-8 text; Baseten stores text only",
                key_ref.key, key_ref.name
            ),
        )),
    }
}

/// Reads the key's value; `Ok(Err(..))` is a user's problem to report in status.
async fn read_value(
    client: &kube::Client,
    namespace: &str,
    key_ref: &SecretKeyRef,
) -> Result<std::result::Result<SecretString, (Reason, String)>> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let Some(secret) = secrets.get_opt(&key_ref.name).await? else {
        return Ok(Err((
            Reason::SecretNotFound,
            format!(
                "Secret {namespace}/{} does not exist; create it or fix spec.secretRef.name",
                key_ref.name
            ),
        )));
    };
    Ok(extract_value(&secret, key_ref, namespace))
}

fn baseten_failure_message(error: &BasetenError, baseten_name: &str) -> String {
    let advice = match error {
        BasetenError::Unauthorized { .. } => {
            "check the operator's Baseten API key; retrying every few minutes"
        }
        BasetenError::Rejected { .. } => "fix the resource; Baseten will not accept it as is",
        BasetenError::RateLimited { .. } => "retrying after the rate-limit window",
        BasetenError::Unavailable { .. } | BasetenError::Transport(_) => "retrying with backoff",
    };
    format!("writing Baseten secret {baseten_name:?} failed: {error}; {advice}")
}

/// Reconciles one BasetenSecret.
pub async fn reconcile(object: Arc<BasetenSecret>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = object
        .namespace()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    let name = object.name_any();
    let span = info_span!("reconcile", namespace = %namespace, name = %name);
    apply(&object, &ctx, &namespace, &name)
        .instrument(span)
        .await
}

/// What the Baseten step of a reconcile came to.
// A short-lived return value; boxing the common variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Pushed {
    /// An outcome to record; with the error when it is worth a retry soon.
    Outcome(Outcome, Option<BasetenError>),
    /// The same write failed recently and waits this long before it is tried again.
    Waiting(Duration),
}

fn outcome(reason: Reason, message: String) -> Outcome {
    Outcome {
        reason,
        message,
        written: None,
        force_sync_token: None,
    }
}

async fn apply(
    object: &BasetenSecret,
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Action> {
    let key_ref = &object.spec.secret_ref;
    // Registered before the read, so a Secret change after it always triggers a reconcile.
    ctx.index.register(namespace, name, &key_ref.name);
    let current = ctx.current_status(object);

    let pushed = if object.spec.suspend {
        Pushed::Outcome(
            outcome(
                Reason::Suspended,
                "spec.suspend is true; nothing is written to Baseten until it is false".into(),
            ),
            None,
        )
    } else {
        match read_value(&ctx.client, namespace, key_ref).await? {
            Err((reason, message)) => Pushed::Outcome(outcome(reason, message), None),
            Ok(value) => push(object, ctx, &current, namespace, &value).await,
        }
    };
    let (outcome, transient) = match pushed {
        Pushed::Waiting(left) => return Ok(Action::requeue(left)),
        Pushed::Outcome(outcome, transient) => (outcome, transient),
    };

    record(object, ctx, &current, namespace, name, &outcome).await?;

    let key = ObjectRef::from_obj(object);
    ctx.failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&key);
    if let Some(error) = transient {
        // error_policy requeues at the write's retry time.
        return Err(Error::Baseten(error));
    }
    let retry_in = ctx
        .retries()
        .get(&key)
        .map(|r| r.not_before.saturating_duration_since(Instant::now()));
    Ok(match (outcome.reason, retry_in) {
        (Reason::Unauthorized | Reason::BasetenRejected, Some(left)) => Action::requeue(left),
        // Everything else waits for a change of the resource or of its Secret.
        _ => Action::await_change(),
    })
}

/// Decides whether Baseten needs the value and writes it if so, minding the retry time of a
/// recent failure of the very same write.
async fn push(
    object: &BasetenSecret,
    ctx: &Context,
    current: &BasetenSecretStatus,
    namespace: &str,
    value: &SecretString,
) -> Pushed {
    let key_ref = &object.spec.secret_ref;
    let baseten_name = object.desired_baseten_name();
    let synced_hash = ctx.hash_key.synced_hash(&baseten_name, value);
    let force_token = object
        .annotations()
        .get(FORCE_SYNC_ANNOTATION)
        .filter(|t| !t.is_empty())
        .cloned();
    let decision = decide(
        Some(current),
        &baseten_name,
        &synced_hash,
        force_token.as_deref(),
    );
    debug!(?decision, "decided");
    let synced = outcome(
        Reason::Synced,
        format!(
            "key {:?} of Secret {namespace}/{} is in Baseten as {baseten_name:?}",
            key_ref.key, key_ref.name
        ),
    );
    if decision == Decision::UpToDate {
        return Pushed::Outcome(synced, None);
    }

    let key = ObjectRef::from_obj(object);
    let attempt = format!(
        "{synced_hash}/{}/{}",
        object.metadata.generation.unwrap_or_default(),
        force_token.as_deref().unwrap_or_default()
    );
    let waiting = ctx
        .retries()
        .get(&key)
        .filter(|r| r.attempt == attempt)
        .map(|r| r.not_before.saturating_duration_since(Instant::now()))
        .filter(|left| !left.is_zero());
    if let Some(left) = waiting {
        // Our own status write re-triggers a reconcile; the same failed write waits for
        // its retry time instead of hammering Baseten.
        debug!(
            retry_in_ms = left.as_millis() as u64,
            "write waits for its retry time"
        );
        return Pushed::Waiting(left);
    }

    match ctx.baseten.upsert(&baseten_name, value).await {
        Ok(secret) => {
            ctx.retries().remove(&key);
            info!(?decision, baseten_name = %baseten_name, "wrote secret to Baseten");
            Pushed::Outcome(
                Outcome {
                    written: Some(Written {
                        secret,
                        baseten_name,
                        synced_hash,
                    }),
                    force_sync_token: force_token,
                    ..synced
                },
                None,
            )
        }
        Err(error) => {
            warn!(error = %error, "Baseten write failed");
            let mut retries = ctx.retries();
            let failures = retries.get(&key).map(|r| r.failures).unwrap_or(0) + 1;
            let delay = jittered(retry_delay(&error, failures));
            retries.insert(
                key,
                Retry {
                    not_before: Instant::now() + delay,
                    attempt,
                    failures,
                },
            );
            drop(retries);
            let failed = outcome(
                Reason::of_baseten_error(&error),
                baseten_failure_message(&error, &baseten_name),
            );
            Pushed::Outcome(failed, error.is_transient().then_some(error))
        }
    }
}

/// Writes the status if it changed and publishes an event when the Ready reason changes.
async fn record(
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
    ctx.remember_status(object, next);

    let previous_reason = current
        .conditions
        .iter()
        .find(|c| c.type_ == crate::status::READY)
        .map(|c| c.reason.as_str());
    // Events mark transitions of the Ready reason only; lastSyncTime records every write.
    if previous_reason != Some(outcome.reason.as_str()) {
        let event = Event {
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
        };
        if let Err(error) = ctx.recorder.publish(&event, &object.object_ref(&())).await {
            warn!(error = %error, "could not publish event");
        }
    }
    Ok(())
}

/// Adds up to 10% random delay, so that many resources do not retry in lockstep.
pub fn jittered(delay: Duration) -> Duration {
    let spread = delay.as_millis() as u64 / 10 + 50;
    delay + Duration::from_millis(rand::rng().random_range(0..=spread))
}

/// Exponential backoff for the `failures`-th consecutive failure (1-based), capped.
pub fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1 << exponent).min(BACKOFF_MAX)
}

/// Decides when to retry after a failed reconcile: a failed Baseten write at its retry
/// time, anything else with exponential backoff.
pub fn error_policy(object: Arc<BasetenSecret>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = ObjectRef::from_obj(&*object);
    let scheduled = match error {
        Error::Baseten(_) => ctx.retries().get(&key).map(|r| {
            (
                r.not_before.saturating_duration_since(Instant::now()),
                r.failures,
            )
        }),
        _ => None,
    };
    let (delay, failures) = scheduled.unwrap_or_else(|| {
        let mut failures = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
        let count = failures.entry(key).or_insert(0);
        *count += 1;
        (jittered(backoff(*count)), *count)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn status(hash: &str, name: &str, token: Option<&str>) -> BasetenSecretStatus {
        BasetenSecretStatus {
            synced_hash: Some(hash.into()),
            baseten_name: Some(name.into()),
            force_sync_token: token.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn writes_only_when_something_changed() {
        assert_eq!(decide(None, "a", "h1", None), Decision::FirstWrite);
        let synced = status("h1", "a", None);
        assert_eq!(decide(Some(&synced), "a", "h1", None), Decision::UpToDate);
        assert_eq!(decide(Some(&synced), "a", "h2", None), Decision::Changed);
        assert_eq!(decide(Some(&synced), "b", "h1", None), Decision::Changed);
    }

    #[test]
    fn a_new_force_sync_token_writes_once() {
        let synced = status("h1", "a", None);
        assert_eq!(
            decide(Some(&synced), "a", "h1", Some("1")),
            Decision::Forced
        );
        let honoured = status("h1", "a", Some("1"));
        assert_eq!(
            decide(Some(&honoured), "a", "h1", Some("1")),
            Decision::UpToDate
        );
        assert_eq!(
            decide(Some(&honoured), "a", "h1", Some("2")),
            Decision::Forced
        );
        assert_eq!(
            decide(Some(&honoured), "a", "h1", Some("")),
            Decision::UpToDate
        );
    }

    fn secret_with(data: &[(&str, &[u8])]) -> Secret {
        Secret {
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn missing_key_and_non_utf8_values_are_named_without_values() {
        let key_ref = SecretKeyRef {
            name: "creds".into(),
            key: "token".into(),
        };
        let (reason, message) =
            extract_value(&secret_with(&[("other", b"hunter2")]), &key_ref, "ml").unwrap_err();
        assert_eq!(reason, Reason::KeyNotFound);
        assert!(
            message.contains("other") && !message.contains("hunter2"),
            "{message}"
        );

        let (reason, message) = extract_value(
            &secret_with(&[("token", &[0xff, 0xfe, b'x'])]),
            &key_ref,
            "ml",
        )
        .unwrap_err();
        assert_eq!(reason, Reason::InvalidValue);
        assert!(message.contains("UTF-8"));

        let value = extract_value(&secret_with(&[("token", b"ok")]), &key_ref, "ml").unwrap();
        assert_eq!(secrecy::ExposeSecret::expose_secret(&value), "ok");
    }

    #[test]
    fn retry_delays_follow_the_kind_of_failure() {
        let throttled = BasetenError::RateLimited {
            retry_after: Some(Duration::from_secs(37)),
        };
        assert_eq!(retry_delay(&throttled, 5), Duration::from_secs(37));
        let unknown = BasetenError::RateLimited { retry_after: None };
        assert_eq!(retry_delay(&unknown, 3), Duration::from_secs(4));
        assert_eq!(
            retry_delay(&BasetenError::Unavailable { status: 502 }, 2),
            Duration::from_secs(2)
        );
        assert_eq!(
            retry_delay(&BasetenError::Unauthorized { status: 401 }, 1),
            UNAUTHORIZED_RETRY
        );
        assert_eq!(
            retry_delay(
                &BasetenError::Rejected {
                    status: 400,
                    code: None
                },
                1
            ),
            REJECTED_RETRY
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(40), BACKOFF_MAX);
        let delay = jittered(Duration::from_secs(10));
        assert!(delay >= Duration::from_secs(10) && delay <= Duration::from_millis(11_050));
    }
}
