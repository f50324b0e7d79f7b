//! The pure half of a reconcile: from what was gathered, what to do; from what was done,
//! what to record, remember and publish. Nothing here reads a clock, a random number or the
//! network, so every branch has a unit test (in `plan/tests.rs`).

use std::time::Duration;

use kube::ResourceExt;

use super::decide::{Decision, decide};
use super::gather::{Readable, Recall, Seen, at_rest};
use super::pending::{self, Failed, is_other};
use super::retry::{jittered_by, retry_delay};
use super::step::{Note, Step, Then, base, concluded, outcome};
use crate::baseten::{BasetenError, SecretV1};
use crate::claims::Claimant;
use crate::crd::{
    BasetenSecret, BasetenSecretStatus, DeletionPolicy, PendingDeletion, UpdatePolicy,
};
use crate::memory::{Attempt, Change, Drift, Retry};
use crate::secrets::Unusable;
use crate::status::{Outcome, Reason, Written};

#[cfg(test)]
mod tests;

/// How often a resource whose team Baseten does not know looks again.
pub const TEAM_NOT_FOUND_RETRY: Duration = Duration::from_secs(300);

/// What to do before anything is read.
// A short-lived return value; boxing the step would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Next {
    /// Nothing to read: the reconcile ends with this step.
    Done(Step),
    /// The inputs are as the last reconcile that found Baseten up to date read them.
    Unchanged(Step),
    /// Read the API key and the value, then plan the write.
    Read,
}

/// Decides whether the reconcile must read at all: a lost conflict, unchanged inputs and
/// suspension end it here.
pub fn first(object: &BasetenSecret, seen: &Seen) -> Next {
    let recall = &seen.recall;
    if object.spec.suspend {
        let message = "spec.suspend is true; nothing is written to Baseten until it is false";
        let suspended = outcome(Reason::Suspended, message.into());
        return Next::Done(Step::record(suspended, concluded(recall, None)));
    }
    if let Some(winner) = &seen.winner {
        return Next::Done(Step::record(
            outcome(Reason::Conflict, conflict_message(object, winner)),
            concluded(recall, None),
        ));
    }
    if at_rest(recall, &seen.inputs) {
        // Typically the echo of our own status write: the Secret is as last read.
        return Next::Unchanged(Step::nothing(base(recall)));
    }
    Next::Read
}

fn conflict_message(object: &BasetenSecret, winner: &Claimant) -> String {
    if winner.is_deleting() {
        return format!(
            "Baseten secret {:?} is being deleted by {winner}, which wrote it and is going away or moved to another name; this resource writes it once that delete is done (a resource going away whose delete is blocked can be annotated baseten.co/skip-remote-delete=true to go without it)",
            object.desired_baseten_name()
        );
    }
    format!(
        "Baseten secret {:?} is also the target of {winner}, which is older and wins; this resource writes nothing until that one is deleted or targets another name",
        object.desired_baseten_name()
    )
}

/// The API key or the value cannot be used: the user's problem goes into the status.
pub fn unusable(seen: &Seen, (reason, message): Unusable) -> Step {
    Step::record(outcome(reason, message), concluded(&seen.recall, None))
}

/// A write to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// Why it is made.
    pub decision: Decision,
    /// What it writes, to tell a retry of it from a new write.
    pub attempt: Attempt,
    /// The name to write.
    pub baseten_name: String,
    /// The team spec.team names, to look up first (none: the key's default team).
    pub team: Option<String>,
    /// `updatePolicy: IfNotExists` on a first write: look for the name first.
    pub unless_exists: bool,
    /// What this resource wrote before, deleted once the write lands under another
    /// name or team (`deletionPolicy: Delete`).
    pub previous: Option<Previous>,
    /// The status's pending deletions, retried once the write lands.
    pub pending: Vec<PendingDeletion>,
}

/// A Baseten secret this resource wrote before.
pub type Previous = PendingDeletion;

/// What planning a write came to.
// A short-lived return value; boxing the step would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Planned {
    /// Baseten holds the name and value already.
    UpToDate(Step),
    /// The same write failed recently and waits for its retry time.
    Waiting(Decision, Step),
    /// Make this write.
    Write(Write),
}

impl Planned {
    /// Why Baseten needs a write, or that it does not.
    pub fn decision(&self) -> Decision {
        match self {
            Self::UpToDate(_) => Decision::UpToDate,
            Self::Waiting(decision, _) => *decision,
            Self::Write(write) => write.decision,
        }
    }
}

/// Decides whether Baseten needs the value, minding the retry time of a recent failure of
/// the very same write.
pub fn write(object: &BasetenSecret, seen: &Seen, read: &Readable) -> Planned {
    let recall = &seen.recall;
    let baseten_name = object.desired_baseten_name();
    let synced_hash = (read.api_key.hash_key).synced_hash(&hashed_name(object), &read.value);
    let force_token = seen.inputs.force_token.clone();
    let decision = match decide(
        Some(&recall.status),
        &baseten_name,
        &synced_hash,
        force_token.as_deref(),
    ) {
        Decision::UpToDate if recall.memory.drift.is_some() => Decision::Drifted,
        decision => decision,
    };
    if decision == Decision::UpToDate {
        let settled = (read.version.as_deref()).map(|v| seen.inputs.fingerprint(v, read.digest));
        return Planned::UpToDate(Step {
            skipped_write: true,
            ..Step::record(synced(object, &baseten_name), concluded(recall, settled))
        });
    }
    let attempt = Attempt {
        synced_hash,
        generation: seen.inputs.generation,
        force_token,
    };
    let waiting = (recall.memory.retry.as_deref())
        .filter(|retry| retry.attempt == attempt)
        .map(|retry| retry.left_at(seen.now))
        .filter(|left| !left.is_zero());
    if let Some(left) = waiting {
        let step = Step::nothing(base(recall)).then(Then::Requeue(left));
        return Planned::Waiting(decision, step);
    }
    Planned::Write(Write {
        decision,
        attempt,
        team: object.spec.team.clone(),
        unless_exists: object.spec.update_policy == UpdatePolicy::IfNotExists
            && decision == Decision::FirstWrite,
        previous: previous(object, &recall.status),
        pending: pending_of(object, &recall.status),
        baseten_name,
    })
}

/// The name the synced hash covers. The team is part of what was written, so moving to
/// another team writes once; without a team the hash is as before teams existed.
fn hashed_name(object: &BasetenSecret) -> String {
    let baseten_name = object.desired_baseten_name();
    match &object.spec.team {
        None => baseten_name,
        Some(team) => format!("{baseten_name}\u{0}team={team}"),
    }
}

fn previous(object: &BasetenSecret, status: &BasetenSecretStatus) -> Option<Previous> {
    if object.spec.deletion_policy != DeletionPolicy::Delete || status.synced_hash.is_none() {
        return None;
    }
    Some(Previous {
        team_name: status.team_name.clone(),
        baseten_name: status.baseten_name.clone()?,
    })
}

/// The pending deletions to retry. Under Retain (the policy switched since) nothing is
/// deleted: the list empties and the names stay in Baseten like any other.
pub fn pending_of(object: &BasetenSecret, status: &BasetenSecretStatus) -> Vec<PendingDeletion> {
    match object.spec.deletion_policy {
        DeletionPolicy::Delete => status.pending_deletions.clone(),
        DeletionPolicy::Retain => Vec::new(),
    }
}

/// Whether a write that landed as `written` under `baseten_name` left `previous` behind:
/// another name (not merely another spelling) or another team.
pub fn moved(previous: &Previous, written: &SecretV1, baseten_name: &str) -> bool {
    is_other(previous, baseten_name, written.team_name.as_deref())
}

fn synced(object: &BasetenSecret, baseten_name: &str) -> Outcome {
    let key_ref = &object.spec.secret_ref;
    let message = format!(
        "key {:?} of Secret {}/{} is in Baseten as {baseten_name:?}",
        key_ref.key,
        object.namespace().unwrap_or_default(),
        key_ref.name
    );
    outcome(Reason::Synced, message)
}

/// What the Baseten calls of a write came to.
#[derive(Debug)]
pub enum Acted {
    /// spec.team names no team the key can see.
    TeamNotFound,
    /// IfNotExists: the name exists and this resource did not write it.
    Exists(SecretV1),
    /// The value is in Baseten; with the deletes of the names it no longer wants.
    Written {
        /// Baseten's answer.
        secret: SecretV1,
        /// The previous and pending names whose delete failed.
        release_failed: Failed,
    },
    /// A Baseten call failed.
    Failed(BasetenError),
}

/// What to record, remember and publish after the write's calls.
pub fn conclude(
    object: &BasetenSecret,
    seen: &Seen,
    read: &Readable,
    write: Write,
    acted: Acted,
) -> Step {
    let recall = &seen.recall;
    let settled = (read.version.as_deref()).map(|v| seen.inputs.fingerprint(v, read.digest));
    let name = write.baseten_name.clone();
    match acted {
        Acted::TeamNotFound => {
            let team = write.team.unwrap_or_default();
            let message = format!(
                "Baseten team {team:?} is not among the teams this API key can see (by name or id); retrying every few minutes"
            );
            // A team created later in Baseten is found on the next look.
            let again = jittered_by(TEAM_NOT_FOUND_RETRY, seen.jitter);
            Step::record(
                outcome(Reason::TeamNotFound, message),
                concluded(recall, None),
            )
            .then(Then::Requeue(again))
        }
        Acted::Failed(error) => failed(seen, write.attempt, &name, error),
        Acted::Exists(found) => {
            let message = format!(
                "Baseten secret {:?} already exists and this resource did not create it; updatePolicy IfNotExists leaves it alone",
                found.name
            );
            let exists = Outcome {
                found: Some(found),
                ..outcome(Reason::AlreadyExists, message)
            };
            Step::record(exists, concluded(recall, settled))
        }
        // The write is recorded even when a delete failed: the new name is in Baseten, and
        // the old one stays in the status's pending deletions, so nothing is forgotten.
        Acted::Written {
            secret,
            release_failed,
        } => pending::after(
            written(object, recall, write, secret, settled),
            release_failed,
        ),
    }
}

/// The write landed: Baseten's answer goes into the status, and a drift repair is announced.
fn written(
    object: &BasetenSecret,
    recall: &Recall,
    write: Write,
    secret: SecretV1,
    settled: Option<u64>,
) -> Step {
    let name = write.baseten_name;
    let repaired = (recall.memory.drift.as_deref()).map(|drift| repair_note(drift, &name));
    let outcome = Outcome {
        force_sync_token: write.attempt.force_token,
        written: Some(Written {
            secret,
            synced_hash: write.attempt.synced_hash,
            baseten_name: name.clone(),
        }),
        ..synced(object, &name)
    };
    let change = Change {
        retry: Some(None),
        drift_repaired: repaired.is_some(),
        ..concluded(recall, settled)
    };
    Step {
        note: repaired,
        ..Step::record(outcome, change)
    }
}

/// A failed Baseten call of `attempt`, and when the same attempt may run again.
fn failed(seen: &Seen, attempt: Attempt, name: &str, error: BasetenError) -> Step {
    let failures = seen.recall.memory.retry.as_ref().map_or(0, |r| r.failures) + 1;
    let delay = jittered_by(retry_delay(&error, failures), seen.jitter);
    let change = Change {
        retry: Some(Some(Retry {
            not_before: seen.now + delay,
            attempt,
            failures,
        })),
        ..concluded(&seen.recall, None)
    };
    let failure = outcome(
        Reason::of_baseten_error(&error),
        failure_message(&error, name),
    );
    // A refused key or request is tried again at its retry time, or on a change.
    let then = if error.is_transient() {
        Then::Fail(error.into())
    } else {
        Then::Requeue(delay)
    };
    Step::record(failure, change).then(then)
}

fn failure_message(error: &BasetenError, baseten_name: &str) -> String {
    let advice = match error {
        BasetenError::Unauthorized { .. } => {
            "check the operator's Baseten API key; retrying every few minutes"
        }
        BasetenError::Rejected { .. } => "fix the resource; Baseten will not accept it as is",
        BasetenError::RateLimited { .. } => "retrying after the rate-limit window",
        BasetenError::Unavailable { .. } | BasetenError::Transport(_) => "retrying with backoff",
        BasetenError::TeamNotFound(_) => "retrying every few minutes",
    };
    format!("writing Baseten secret {baseten_name:?} failed: {error}; {advice}")
}

fn repair_note(drift: &Drift, name: &str) -> Note {
    match drift {
        Drift::Missing => Note {
            kind: "Normal",
            reason: "Recreated",
            text: format!("Baseten secret {name:?} was missing; pushed the value again"),
        },
        Drift::Recreated { was, now } => Note {
            kind: "Warning",
            reason: "Replaced",
            text: format!(
                "Baseten secret {name:?} was deleted and created again outside this operator (id {was} became {now}); pushed our value again"
            ),
        },
    }
}
