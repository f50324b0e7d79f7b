//! Baseten secrets a resource wrote and no longer wants, whose delete failed: which of them
//! to retry, and what a reconcile records after retrying them.

use super::step::{Step, Then};
use crate::baseten::normalised_name;
use crate::crd::PendingDeletion;
use crate::error::Error;

/// The deletes that failed in one reconcile, each with its error.
pub type Failed = Vec<(PendingDeletion, Error)>;

/// Whether `pending` is another Baseten secret than `baseten_name` in team `team_name` (as
/// Baseten named it): another name (not merely another spelling) or another team.
pub fn is_other(pending: &PendingDeletion, baseten_name: &str, team_name: Option<&str>) -> bool {
    let other_team = pending.team_name.is_some()
        && team_name.is_some()
        && pending.team_name.as_deref() != team_name;
    other_team || normalised_name(&pending.baseten_name) != normalised_name(baseten_name)
}

/// The pending deletions to retry: all but a name the resource wants again, which is
/// simply dropped (deleting it would delete the value just written).
pub fn to_retry(
    pending: &[PendingDeletion],
    baseten_name: &str,
    team_name: Option<&str>,
) -> Vec<PendingDeletion> {
    pending
        .iter()
        .filter(|p| is_other(p, baseten_name, team_name))
        .cloned()
        .collect()
}

/// `step` after the deletes of this reconcile: the ones that failed are the pending list,
/// the message says so, and the reconcile ends in the first error, so the error policy
/// retries with a growing backoff. The inputs are not settled while a delete is pending, so the next
/// reconcile reads and retries again.
pub fn after(mut step: Step, failed: Failed) -> Step {
    let names: Vec<PendingDeletion> = failed.iter().map(|(p, _)| p.clone()).collect();
    if let Some(outcome) = step.outcome.as_mut() {
        outcome.pending = Some(names.clone());
    }
    let Some((_, error)) = failed.into_iter().next() else {
        return step;
    };
    if let Some(outcome) = step.outcome.as_mut() {
        let listed: Vec<String> = names
            .iter()
            .map(|p| format!("{:?}", p.baseten_name))
            .collect();
        let (noun, verb) = match listed.len() {
            1 => ("name", "delete is"),
            _ => ("names", "deletes are"),
        };
        outcome.message = format!(
            "{}; deleting the previous Baseten {noun} {} failed: {error}; the {verb} pending and retried",
            outcome.message,
            listed.join(", ")
        );
    }
    step.change.settled = Some(None);
    // The failures go on counting, so the error policy backs off while deletes fail.
    step.change.failures = None;
    step.then(Then::Fail(error))
}
