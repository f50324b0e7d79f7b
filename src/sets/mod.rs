//! Reconcile one BasetenSecretSet: read the key names of its Secrets, plan its children
//! (one BasetenSecret per key), apply the ones that differ, delete the ones whose key is
//! gone, and write the status when it changes. Every per-name behaviour is the children's.

pub mod children;
pub mod context;
pub mod naming;
pub mod report;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{Instrument, debug, info_span, warn};

use crate::crd::BasetenSecret;
use crate::crd_set::{BasetenSecretSet, SET_FINALIZER};
use crate::error::{Error, Result};
use children::{SET_MANAGER, apply_child, delete_child, is_child_of, read_keys};
use context::{Listing, SetContext};
use naming::{Rules, plan};
use report::{Found, status_of};

/// Generated BasetenSecrets applied at once.
const PARALLEL_APPLIES: usize = 8;

/// How long a set waits for the BasetenSecret cache to be filled before it compares.
const CACHE_WAIT: Duration = Duration::from_secs(1);

/// Reconciles one set.
pub async fn reconcile(set: Arc<BasetenSecretSet>, ctx: Arc<SetContext>) -> Result<Action> {
    let namespace = set
        .namespace()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    let name = set.name_any();
    let span = info_span!("reconcile_set", namespace = %namespace, name = %name);
    async {
        if !ctx.children_listed.load(Ordering::SeqCst) {
            return Ok(Action::requeue(CACHE_WAIT));
        }
        // Tests count these two lines, as those of the BasetenSecret reconciles.
        debug!("set reconcile started");
        let api: Api<BasetenSecretSet> = Api::namespaced(ctx.client.clone(), &namespace);
        let result = finalizer(&api, SET_FINALIZER, set, |event| async {
            match event {
                Event::Apply(set) => apply(&set, &ctx, &namespace).await,
                Event::Cleanup(set) => cleanup(&set, &ctx, &namespace).await,
            }
        })
        .await
        .map_err(|error| Error::Finalizer(Box::new(error)));
        debug!(ok = result.is_ok(), "set reconcile finished");
        result
    }
    .instrument(span)
    .await
}

/// Retries a failed set reconcile after a while.
pub fn error_policy(set: Arc<BasetenSecretSet>, error: &Error, _ctx: Arc<SetContext>) -> Action {
    warn!(namespace = set.namespace().unwrap_or_default(), name = set.name_any(), error = %error, "set reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// The children of `set` in the cache.
fn children_of(set: &BasetenSecretSet, ctx: &SetContext) -> Vec<Arc<BasetenSecret>> {
    let namespace = set.namespace();
    ctx.children
        .state()
        .into_iter()
        .filter(|o| o.namespace() == namespace && is_child_of(o, set))
        .collect()
}

async fn apply(set: &BasetenSecretSet, ctx: &SetContext, namespace: &str) -> Result<Action> {
    let found = match Rules::of(&set.spec) {
        Err(why) => Found::InvalidSpec(why),
        Ok(rules) => match listed(set, ctx, namespace).await? {
            Err(found) => found,
            Ok(secrets) => {
                let read: Vec<String> = secrets.iter().map(|(s, _)| s.clone()).collect();
                ctx.remember_reads(namespace, &set.name_any(), &read);
                let by_selector = set.spec.secret_selector.is_some();
                let plan = plan(&set.name_any(), &rules, &secrets, by_selector);
                let taken = converge(set, ctx, namespace, &plan.children).await?;
                Found::Planned(plan, taken)
            }
        },
    };
    let held: HashMap<String, Arc<BasetenSecret>> = (children_of(set, ctx).into_iter())
        .map(|child| (child.name_any(), child))
        .collect();
    let by_name = |child: &str| held.get(child).map(Arc::as_ref);
    let status = status_of(set.meta().generation, &found, by_name, set.status.as_ref());
    if set.status.as_ref() != Some(&status) {
        let api: Api<BasetenSecretSet> = Api::namespaced(ctx.client.clone(), namespace);
        let patch = json!({"status": status});
        api.patch_status(
            &set.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    }
    Ok(Action::await_change())
}

/// The Secrets of `set` and their key names: what it read last when none of them changed
/// since (a set woken by its children's statuses), else read now.
async fn listed(
    set: &BasetenSecretSet,
    ctx: &SetContext,
    namespace: &str,
) -> Result<std::result::Result<Vec<(String, Vec<String>)>, Found>> {
    let (name, generation) = (set.name_any(), set.meta().generation);
    if let Some(secrets) = ctx.current_listing(namespace, &name, generation) {
        return Ok(Ok(secrets));
    }
    // Marked current before reading: a change seen meanwhile marks it stale again.
    let mut listing = Listing {
        generation,
        ..Listing::default()
    };
    ctx.keep_listing(namespace, &name, Some(listing.clone()));
    let read = read_keys(set, ctx, namespace).await?;
    match &read {
        Ok(secrets) => {
            listing.secrets = secrets.clone();
            let stale = ctx.current_listing(namespace, &name, generation).is_none();
            listing.stale = stale;
            ctx.keep_listing(namespace, &name, Some(listing));
        }
        Err(_) => ctx.keep_listing(namespace, &name, None),
    }
    Ok(read)
}

/// Applies the children of `wanted` that differ and deletes those whose key is gone;
/// returns the names taken by objects that are not this set's.
async fn converge(
    set: &BasetenSecretSet,
    ctx: &SetContext,
    namespace: &str,
    wanted: &[naming::Wanted],
) -> Result<Vec<String>> {
    let mut taken = Vec::new();
    let mut applies = Vec::new();
    for want in wanted {
        let existing = ctx
            .children
            .get(&ObjectRef::new(&want.child).within(namespace));
        if existing.as_ref().is_some_and(|o| !is_child_of(o, set)) {
            taken.push(want.child.clone());
            continue;
        }
        applies
            .push(async move { apply_child(set, ctx, namespace, want, existing.as_deref()).await });
    }
    // Several at once: one after the other, a thousand applies take about as long as
    // Baseten's rate limit lets a thousand writes through, and the children would trail.
    let wrote = futures::stream::iter(applies)
        .buffer_unordered(PARALLEL_APPLIES)
        .try_fold(0, |wrote, applied| async move {
            Ok(wrote + usize::from(applied))
        })
        .await?;
    let keep: BTreeSet<&str> = wanted.iter().map(|w| w.child.as_str()).collect();
    for child in children_of(set, ctx) {
        let name = child.name_any();
        if !keep.contains(name.as_str()) && child.metadata.deletion_timestamp.is_none() {
            delete_child(ctx, namespace, &name).await?;
        }
    }
    if wrote > 0 {
        debug!(
            applied = wrote,
            manager = SET_MANAGER,
            "applied BasetenSecrets of the set"
        );
    }
    Ok(taken)
}

/// The set is going away: its children go too, and their policy decides what happens in
/// Baseten.
async fn cleanup(set: &BasetenSecretSet, ctx: &SetContext, namespace: &str) -> Result<Action> {
    for child in children_of(set, ctx) {
        if child.metadata.deletion_timestamp.is_none() {
            delete_child(ctx, namespace, &child.name_any()).await?;
        }
    }
    ctx.remember_reads(namespace, &set.name_any(), &[]);
    ctx.keep_listing(namespace, &set.name_any(), None);
    Ok(Action::await_change())
}
