//! How a reconcile ends: what the plan hands to the recording, the same for both branches.

use std::time::Duration;

use super::gather::Recall;
use crate::error::Error;
use crate::memory::Change;
use crate::status::{Outcome, Reason};

/// How a reconcile ends.
#[derive(Debug)]
pub struct Step {
    /// The outcome to record in the status (and, when the Ready reason changes, in an event).
    pub outcome: Option<Outcome>,
    /// An event to publish besides the Ready transition.
    pub note: Option<Note>,
    /// What changes in the memory.
    pub change: Change,
    /// The reconcile found Baseten up to date and wrote nothing.
    pub skipped_write: bool,
    /// When to reconcile again.
    pub then: Then,
}

/// An event that is not a Ready transition (a drift repair).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// "Normal" or "Warning".
    pub kind: &'static str,
    /// The event's reason.
    pub reason: &'static str,
    /// What happened.
    pub text: String,
}

/// When to reconcile again.
#[derive(Debug)]
pub enum Then {
    /// On the next change of the resource or of a Secret it reads.
    AwaitChange,
    /// After this long.
    Requeue(Duration),
    /// A call failed: the error policy retries (a Baseten write at its retry time).
    Fail(Error),
    /// The remote delete cannot run; the status says why.
    Blocked,
}

impl Step {
    /// Ends with nothing to record, on the next change.
    pub fn nothing(change: Change) -> Self {
        Self {
            outcome: None,
            note: None,
            change,
            skipped_write: false,
            then: Then::AwaitChange,
        }
    }

    /// Ends recording `outcome`, on the next change.
    pub fn record(outcome: Outcome, change: Change) -> Self {
        Self {
            outcome: Some(outcome),
            ..Self::nothing(change)
        }
    }

    /// The same step, ending with `then`.
    pub fn then(self, then: Then) -> Self {
        Self { then, ..self }
    }
}

/// An outcome with only a reason and a message.
pub fn outcome(reason: Reason, message: String) -> Outcome {
    Outcome {
        reason,
        message,
        written: None,
        force_sync_token: None,
        found: None,
        pending: None,
    }
}

/// The change every reconcile makes: forget the written status once the cache shows it.
pub fn base(recall: &Recall) -> Change {
    Change {
        written_status: recall.caught_up.then_some(None),
        ..Change::default()
    }
}

/// A change that ends a reconcile which reached Baseten's answer or a user's problem: the
/// failure count starts over, and the settled fingerprint is `settled`.
pub fn concluded(recall: &Recall, settled: Option<u64>) -> Change {
    Change {
        failures: Some(0),
        settled: Some(settled),
        ..base(recall)
    }
}
