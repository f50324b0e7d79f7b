//! The apply branch: read the key's value, decide whether Baseten needs a write, write it
//! minding the retry time of a recent failure, and record the outcome.

use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use secrecy::SecretString;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::cleanup::release_name;
use super::decide::{Decision, decide};
use super::record::{announce, record};
use super::retry::{Attempt, Retry, jittered, retry_delay};
use super::value::read_value;
use crate::baseten::{BasetenError, SecretV1, TeamV1, normalised_name};
use crate::claims::{Claimant, Target};
use crate::context::{Context, settled_inputs, uid_of};
use crate::crd::{
    BasetenSecret, BasetenSecretStatus, DeletionPolicy, FORCE_SYNC_ANNOTATION, UpdatePolicy,
};
use crate::credentials::ApiKey;
use crate::drift::Drift;
use crate::error::{Error, Result};
use crate::status::{Outcome, Reason, Written};

/// How often a resource whose team Baseten does not know looks again.
const TEAM_NOT_FOUND_RETRY: Duration = Duration::from_secs(300);

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
        found: None,
    }
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

/// The force-sync token of the resource, if any.
fn force_token(object: &BasetenSecret) -> Option<String> {
    object
        .annotations()
        .get(FORCE_SYNC_ANNOTATION)
        .filter(|t| !t.is_empty())
        .cloned()
}

/// Brings Baseten and the status in line with the resource.
pub async fn apply(
    object: &BasetenSecret,
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Action> {
    let key_ref = &object.spec.secret_ref;
    let api_key_secret = object.spec.api_key_ref.as_ref().map(|r| r.name.as_str());
    // Registered before the reads, so a change of either Secret after them always triggers
    // a reconcile.
    let read_secrets: Vec<&str> = std::iter::once(key_ref.name.as_str())
        .chain(api_key_secret)
        .collect();
    ctx.index.register(namespace, name, &read_secrets);
    if !object.spec.suspend
        && let Some(winner) = ctx
            .claims
            .winner(&Target::of(object))
            .filter(|winner| *winner != Claimant::of(object))
    {
        // Checked before anything else: a new older claimant changes none of our inputs.
        let message = format!(
            "Baseten secret {:?} is also the target of {winner}, which is older and wins; this resource writes nothing until that one is deleted or targets another name",
            object.desired_baseten_name()
        );
        let current = ctx.current_status(object);
        record(
            object,
            ctx,
            &current,
            namespace,
            name,
            &outcome(Reason::Conflict, message),
        )
        .await?;
        ctx.remember(object, |memory| memory.failures = 0);
        ctx.index.set_settled(namespace, name, uid_of(object), None);
        // The claims requeue this resource when the winner changes.
        return Ok(Action::await_change());
    }
    let generation = object.metadata.generation.unwrap_or_default();
    let force_token = force_token(object);
    ctx.caught_up(object);
    let key_version = ctx.credentials.key_version(&ctx.index, object);
    let inputs_unchanged = |settled: u64| {
        ctx.index
            .seen_version(namespace, &key_ref.name)
            .is_some_and(|version| {
                settled
                    == settled_inputs(
                        &key_ref.name,
                        &version,
                        key_version.as_deref(),
                        generation,
                        force_token.as_deref(),
                    )
            })
    };
    let drift = ctx.recall(object).drift.map(|d| *d);
    if !object.spec.suspend
        && drift.is_none()
        && ctx
            .index
            .settled(namespace, name, uid_of(object))
            .is_some_and(inputs_unchanged)
    {
        // Typically the echo of our own status write: the Secret is as last read.
        debug!("nothing changed since the last read");
        return Ok(Action::await_change());
    }
    let current = ctx.current_status(object);

    let (pushed, secret_version) = if object.spec.suspend {
        let suspended = outcome(
            Reason::Suspended,
            "spec.suspend is true; nothing is written to Baseten until it is false".into(),
        );
        (Pushed::Outcome(suspended, None), None)
    } else {
        match ctx.api_key(object).await? {
            Err((reason, message)) => (Pushed::Outcome(outcome(reason, message), None), None),
            Ok(api_key) => {
                let read = read_value(
                    &ctx.client,
                    namespace,
                    key_ref,
                    ctx.secret_selector.as_ref(),
                )
                .await?;
                if let Some(version) = &read.version {
                    // The watch may have delivered this Secret before this resource read it.
                    ctx.index.read_at(namespace, &key_ref.name, version);
                }
                let pushed = match read.value {
                    Err((reason, message)) => Pushed::Outcome(outcome(reason, message), None),
                    Ok(value) => {
                        push(
                            object,
                            ctx,
                            &api_key,
                            &current,
                            &value,
                            force_token.clone(),
                            drift.is_some(),
                        )
                        .await
                    }
                };
                (pushed, read.version)
            }
        }
    };
    let (outcome, transient) = match pushed {
        Pushed::Waiting(left) => return Ok(Action::requeue(left)),
        Pushed::Outcome(outcome, transient) => (outcome, transient),
    };

    record(object, ctx, &current, namespace, name, &outcome).await?;
    if let (Some(drift), Some(written)) = (&drift, &outcome.written) {
        ctx.remember(object, |memory| memory.drift = None);
        let (kind, reason, note) = match drift {
            Drift::Missing => (
                "Normal",
                "Recreated",
                format!(
                    "Baseten secret {:?} was missing; pushed the value again",
                    written.baseten_name
                ),
            ),
            Drift::Recreated { was, now } => (
                "Warning",
                "Replaced",
                format!(
                    "Baseten secret {:?} was deleted and created again outside this operator (id {was} became {now}); pushed our value again",
                    written.baseten_name
                ),
            ),
        };
        announce(object, ctx, namespace, kind, reason, &note).await;
    }

    ctx.remember(object, |memory| memory.failures = 0);
    let settled = match (outcome.reason, secret_version) {
        (reason, Some(secret_version)) if reason.is_ready() => Some(settled_inputs(
            &key_ref.name,
            &secret_version,
            key_version.as_deref(),
            generation,
            force_token.as_deref(),
        )),
        _ => None,
    };
    ctx.index
        .set_settled(namespace, name, uid_of(object), settled);
    if let Some(error) = transient {
        // error_policy requeues at the write's retry time.
        return Err(Error::Baseten(error));
    }
    let retry_in = ctx.recall(object).retry.map(|r| r.left());
    Ok(match (outcome.reason, retry_in) {
        (Reason::Unauthorized | Reason::BasetenRejected, Some(left)) => Action::requeue(left),
        // A team created later in Baseten is found on the next look.
        (Reason::TeamNotFound, _) => Action::requeue(jittered(TEAM_NOT_FOUND_RETRY)),
        // Everything else waits for a change of the resource or of its Secret.
        _ => Action::await_change(),
    })
}

/// Decides whether Baseten needs the value and writes it if so, minding the retry time of a
/// recent failure of the very same write.
async fn push(
    object: &BasetenSecret,
    ctx: &Context,
    api_key: &ApiKey,
    current: &BasetenSecretStatus,
    value: &SecretString,
    force_token: Option<String>,
    drifted: bool,
) -> Pushed {
    let namespace = object.namespace().unwrap_or_default();
    let key_ref = &object.spec.secret_ref;
    let baseten_name = object.desired_baseten_name();
    // The team is part of what was written: moving to another team writes once. Without a
    // team the hash is the same as before teams existed, so upgrades write nothing.
    let hashed_name = match &object.spec.team {
        None => baseten_name.clone(),
        Some(team) => format!("{baseten_name}\u{0}team={team}"),
    };
    let synced_hash = api_key.hash_key.synced_hash(&hashed_name, value);
    let decision = decide(
        Some(current),
        &baseten_name,
        &synced_hash,
        force_token.as_deref(),
    );
    let decision = match decision {
        Decision::UpToDate if drifted => Decision::Drifted,
        decision => decision,
    };
    debug!(?decision, "decided");
    let synced = outcome(
        Reason::Synced,
        format!(
            "key {:?} of Secret {namespace}/{} is in Baseten as {baseten_name:?}",
            key_ref.key, key_ref.name
        ),
    );
    if decision == Decision::UpToDate {
        ctx.metrics.skipped_write();
        return Pushed::Outcome(synced, None);
    }

    let attempt = Attempt {
        synced_hash: synced_hash.clone(),
        generation: object.metadata.generation.unwrap_or_default(),
        force_token: force_token.clone(),
    };
    let waiting = ctx
        .recall(object)
        .retry
        .filter(|r| r.attempt == attempt)
        .map(|r| r.left())
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

    let team = match &object.spec.team {
        None => None,
        Some(wanted) => match api_key.client.team(Some(wanted)).await {
            Ok(Some(team)) => Some(team),
            Ok(None) => {
                let message = format!(
                    "Baseten team {wanted:?} is not among the teams this API key can see (by name or id); retrying every few minutes"
                );
                return Pushed::Outcome(outcome(Reason::TeamNotFound, message), None);
            }
            Err(error) => return failed(object, ctx, attempt, error, &baseten_name),
        },
    };
    let team_id = team.as_ref().map(|t| t.id.as_str());

    if object.spec.update_policy == UpdatePolicy::IfNotExists && decision == Decision::FirstWrite {
        match find(api_key, team.as_ref(), &baseten_name).await {
            Ok(Some(found)) => {
                debug!("IfNotExists: the name exists in Baseten and was not written here");
                let message = format!(
                    "Baseten secret {:?} already exists and this resource did not create it; updatePolicy IfNotExists leaves it alone",
                    found.name
                );
                return Pushed::Outcome(
                    Outcome {
                        found: Some(found),
                        ..outcome(Reason::AlreadyExists, message)
                    },
                    None,
                );
            }
            Ok(None) => {}
            Err(error) => return failed(object, ctx, attempt, error, &baseten_name),
        }
    }

    match api_key
        .client
        .upsert_in(team_id, &baseten_name, value)
        .await
    {
        Ok(secret) => {
            ctx.remember(object, |memory| memory.retry = None);
            ctx.metrics.wrote();
            info!(?decision, baseten_name = %baseten_name, "wrote secret to Baseten");
            if let Some((old_team, old)) = abandoned(object, current, &secret, &baseten_name)
                && let Err(error) =
                    release_name(object, ctx, api_key, old_team.as_deref(), &old).await
            {
                // The status keeps the old name, so the next attempt deletes it again.
                warn!(error = %error, "deleting the previous Baseten name failed");
                let message = format!(
                    "wrote Baseten secret {baseten_name:?}, but deleting the previous name {old:?} failed: {error}; retrying"
                );
                return Pushed::Outcome(
                    outcome(Reason::of_baseten_error(&error), message),
                    Some(error),
                );
            }
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
        Err(error) => failed(object, ctx, attempt, error, &baseten_name),
    }
}

/// Records a failed Baseten call of `attempt` and when the same attempt may run again.
fn failed(
    object: &BasetenSecret,
    ctx: &Context,
    attempt: Attempt,
    error: BasetenError,
    baseten_name: &str,
) -> Pushed {
    warn!(error = %error, "Baseten write failed");
    ctx.remember(object, |memory| {
        let failures = memory.retry.as_ref().map_or(0, |r| r.failures) + 1;
        memory.retry = Some(Box::new(Retry {
            not_before: Instant::now() + jittered(retry_delay(&error, failures)),
            attempt,
            failures,
        }));
    });
    let failed = outcome(
        Reason::of_baseten_error(&error),
        baseten_failure_message(&error, baseten_name),
    );
    Pushed::Outcome(failed, error.is_transient().then_some(error))
}

/// The Baseten secret named `baseten_name` (in Baseten's normalised sense) in `team`, or the
/// key's default team, if it exists.
async fn find(
    api_key: &ApiKey,
    team: Option<&TeamV1>,
    baseten_name: &str,
) -> Result<Option<SecretV1>, BasetenError> {
    let scope = match team {
        Some(team) => Some(team.clone()),
        None => api_key.client.team(None).await?,
    };
    let wanted = normalised_name(baseten_name);
    Ok(api_key
        .client
        .list_in(scope.as_ref().map(|t| t.id.as_str()))
        .await?
        .into_iter()
        .find(|s| normalised_name(&s.name) == wanted))
}

/// The secret this resource wrote before and no longer wants, as (team name, name), when its
/// policy deletes it: another name (not merely another spelling) or another team than the
/// write that just happened (`written` under `baseten_name`).
fn abandoned(
    object: &BasetenSecret,
    current: &BasetenSecretStatus,
    written: &SecretV1,
    baseten_name: &str,
) -> Option<(Option<String>, String)> {
    if object.spec.deletion_policy != DeletionPolicy::Delete || current.synced_hash.is_none() {
        return None;
    }
    let old = current.baseten_name.clone()?;
    let other_team = current.team_name.is_some()
        && written.team_name.is_some()
        && current.team_name != written.team_name;
    (other_team || normalised_name(&old) != normalised_name(baseten_name))
        .then(|| (current.team_name.clone(), old))
}
