//! The apply branch, in one pass: gather what is known, decide whether to read, read once,
//! plan the write, make it, and record how it ended.

use kube::runtime::controller::Action;
use tracing::debug;

use super::act;
use super::gather::{read, seen};
use super::identity::rival;
use super::pending::{self, to_retry};
use super::plan::{self, Next, Planned};
use super::record::finish;
use crate::context::Context;
use crate::crd::BasetenSecret;
use crate::error::Result;

/// Brings Baseten and the status in line with the resource.
pub async fn apply(
    object: &BasetenSecret,
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Action> {
    let mut seen = seen(object, ctx, namespace, name);
    if seen.winner.is_none() && !object.spec.suspend {
        seen.winner = rival(object, ctx).await?;
    }
    let current = &seen.recall.status;
    match plan::first(object, &seen) {
        Next::Read => {}
        Next::Done(step) => return finish(object, ctx, current, namespace, step).await,
        Next::Unchanged(step) => {
            debug!("nothing changed since the last read");
            return finish(object, ctx, current, namespace, step).await;
        }
    }
    let readable = match read(object, ctx, namespace).await? {
        Ok(readable) => readable,
        Err(unusable) => {
            let step = plan::unusable(&seen, unusable);
            return finish(object, ctx, current, namespace, step).await;
        }
    };
    let planned = plan::write(object, &seen, &readable);
    // Tests count this line: one per read of the value, logged before any Baseten call.
    debug!(decision = ?planned.decision(), "decided");
    let write = match planned {
        Planned::Write(write) => write,
        Planned::UpToDate(step) if current.pending_deletions.is_empty() => {
            return finish(object, ctx, current, namespace, step).await;
        }
        Planned::UpToDate(step) => {
            // Nothing to write, but deletes to retry: the status names what is written.
            let name = current.baseten_name.as_deref().unwrap_or_default();
            let team = current.team_name.as_deref();
            let retry = to_retry(&plan::pending_of(object, current), name, team);
            let failed = act::release_all(object, ctx, &readable.api_key, &retry).await;
            let step = pending::after(step, failed);
            return finish(object, ctx, current, namespace, step).await;
        }
        Planned::Waiting(_, step) => {
            // Our own status write re-triggers a reconcile; the same failed write waits for
            // its retry time instead of hammering Baseten.
            debug!("write waits for its retry time");
            return finish(object, ctx, current, namespace, step).await;
        }
    };
    let acted = act::write(&write, object, ctx, &readable.api_key, &readable.value).await;
    let step = plan::conclude(object, &seen, &readable, write, acted);
    finish(object, ctx, current, namespace, step).await
}
