//! A set's status from its plan and its children as the cache shows them. Pure: the same
//! inputs give the same status, so an unchanged set writes nothing.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::naming::{Plan, Wanted};
use crate::crd::{BasetenSecret, ready_in};
use crate::crd_set::{BasetenSecretSetStatus, KeyMapping, ReasonCount};
use crate::status::{CONDITION_MESSAGE_MAX_BYTES, READY, truncated};

/// What the set found besides its plan.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// The rules cannot be used: nothing is written.
    InvalidSpec(String),
    /// The Secret named by secretName does not exist (children are kept).
    SecretNotFound(String),
    /// The Secret may not be read (children are kept).
    SecretNotAllowed(String),
    /// The plan over the Secrets read, and children names taken by objects not of this set.
    Planned(Plan, Vec<String>),
}

fn listed(wanted: &[Wanted]) -> String {
    let keys: Vec<String> = wanted
        .iter()
        .map(|w| format!("{}/{}", w.secret, w.key))
        .collect();
    keys.join(", ")
}

/// The Ready reason and message of what was found, with the children as (name, reason,
/// ready).
fn readiness(
    found: &Found,
    children: &[(String, &'static str, bool)],
) -> (bool, &'static str, String) {
    let plan = match found {
        Found::InvalidSpec(why) => return (false, "InvalidSpec", why.clone()),
        Found::SecretNotFound(why) => return (false, "SecretNotFound", why.clone()),
        Found::SecretNotAllowed(why) => return (false, "SecretNotAllowed", why.clone()),
        Found::Planned(plan, _) => plan,
    };
    let problems = problems(found, plan);
    if !problems.is_empty() {
        let reason = if plan.duplicates.is_empty() {
            "InvalidSpec"
        } else {
            "DuplicateNames"
        };
        return (false, reason, problems.join("; "));
    }
    let waiting: Vec<String> = children
        .iter()
        .filter(|(_, _, ready)| !ready)
        .map(|(child, reason, _)| format!("{child} ({reason})"))
        .collect();
    if waiting.is_empty() {
        let message = format!("{} keys are in Baseten", children.len());
        return (true, "Ready", message);
    }
    let message = format!(
        "{} of {} BasetenSecrets are Ready; not Ready: {}",
        children.len() - waiting.len(),
        children.len(),
        waiting.join(", ")
    );
    // Only children without a status yet are on their way; any other stays as it is
    // until something changes.
    let pending = (children.iter()).all(|(_, reason, ready)| *ready || *reason == "Pending");
    let reason = if pending { "Progressing" } else { "NotReady" };
    (false, reason, message)
}

/// What keeps keys of the plan out: duplicates, invalid names, names taken.
fn problems(found: &Found, plan: &Plan) -> Vec<String> {
    let mut problems = Vec::new();
    for group in &plan.duplicates {
        problems.push(format!(
            "keys {} all map to Baseten name {:?} (names that differ only in '-', '.' and '_' are one in Baseten); none of them is written",
            listed(group),
            group[0].baseten_name
        ));
    }
    for (wanted, why) in &plan.invalid {
        problems.push(format!(
            "key {}/{} maps to {:?}, which is not a valid Baseten name ({why}); it is not written",
            wanted.secret, wanted.key, wanted.baseten_name
        ));
    }
    if let Found::Planned(_, taken) = found {
        for name in taken {
            problems.push(format!(
                "BasetenSecret {name} exists and does not belong to this set; its key is not written"
            ));
        }
    }
    problems
}

/// The Ready reason of a child, and whether it is Ready, from the cache (`None`: not there
/// yet).
fn child_state(child: Option<&BasetenSecret>, generation_seen: bool) -> (&'static str, bool) {
    let Some(condition) = child.and_then(BasetenSecret::ready_condition) else {
        return ("Pending", false);
    };
    if !generation_seen {
        return ("Pending", false);
    }
    (reason_name(&condition.reason), condition.status == "True")
}

/// The reason as a static name (the set's counts use a bounded set of them).
fn reason_name(reason: &str) -> &'static str {
    crate::status::Reason::ALL
        .iter()
        .map(|r| r.as_str())
        .find(|r| *r == reason)
        .unwrap_or("Unknown")
}

/// The status of a set of `generation` that found `found`, with its children looked up by
/// `child`, keeping the transition time of `current`'s Ready condition when it is unchanged.
pub fn status_of<'a>(
    generation: Option<i64>,
    found: &Found,
    child: impl Fn(&str) -> Option<&'a BasetenSecret>,
    current: Option<&BasetenSecretSetStatus>,
) -> BasetenSecretSetStatus {
    let planned: &[Wanted] = match found {
        Found::Planned(plan, _) => &plan.children,
        _ => &[],
    };
    let children: Vec<(String, &'static str, bool)> = planned
        .iter()
        .map(|w| {
            let object = child(&w.child);
            let seen = object.is_some_and(|o| {
                let observed = o.status.as_ref().and_then(|s| s.observed_generation);
                observed.is_some() && observed == o.metadata.generation
            });
            let (reason, ready) = child_state(object, seen);
            (w.child.clone(), reason, ready)
        })
        .collect();
    let mut reasons = BTreeMap::new();
    for (_, reason, _) in &children {
        *reasons.entry(reason.to_string()).or_insert(0) += 1;
    }
    let (ready, reason, message) = readiness(found, &children);
    let previous = current.and_then(|s| ready_in(&s.conditions));
    let status = if ready { "True" } else { "False" };
    let unchanged = previous.is_some_and(|p| p.status == status && p.reason == reason);
    let condition = Condition {
        type_: READY.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: truncated(&message, CONDITION_MESSAGE_MAX_BYTES),
        observed_generation: generation,
        last_transition_time: match previous {
            Some(p) if unchanged => p.last_transition_time.clone(),
            _ => Time(Timestamp::now()),
        },
    };
    BasetenSecretSetStatus {
        observed_generation: generation,
        conditions: vec![condition],
        key_count: children.len() as i32,
        ready_count: children.iter().filter(|(_, _, r)| *r).count() as i32,
        reasons: (reasons.into_iter())
            .map(|(reason, count)| ReasonCount { reason, count })
            .collect(),
        keys: planned
            .iter()
            .map(|w| KeyMapping {
                secret: w.secret.clone(),
                key: w.key.clone(),
                baseten_name: w.baseten_name.clone(),
                child: w.child.clone(),
            })
            .collect(),
    }
}
