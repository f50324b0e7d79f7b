//! The apply branch, in one pass: gather what is known, decide whether to read, read once,
//! plan the write, make it, and record how it ended.

use kube::runtime::controller::Action;

use super::act;
use super::gather::{read, seen};
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
    let seen = seen(object, ctx, namespace, name);
    let current = &seen.recall.status;
    if let Next::Done(step) = plan::first(object, &seen) {
        return finish(object, ctx, current, namespace, step).await;
    }
    let readable = match read(object, ctx, namespace).await? {
        Ok(readable) => readable,
        Err(unusable) => {
            let step = plan::unusable(&seen, unusable);
            return finish(object, ctx, current, namespace, step).await;
        }
    };
    let write = match plan::write(object, &seen, &readable) {
        Planned::Done(step) => return finish(object, ctx, current, namespace, step).await,
        Planned::Write(write) => write,
    };
    let acted = act::write(&write, object, ctx, &readable.api_key, &readable.value).await;
    let step = plan::conclude(object, &seen, &readable, write, acted);
    finish(object, ctx, current, namespace, step).await
}
