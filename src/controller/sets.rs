//! The BasetenSecretSet controller: one per watched namespace (or one over all), woken by
//! its sets, by their generated BasetenSecrets (metadata only) and by the Secrets they read
//! (metadata only).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::core::{PartialObjectMeta, Selector, SelectorExt};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, controller, watcher};
use tracing::{debug, info, warn};

use super::streams::{Namespaces, api_in, secrets};
use crate::crd::BasetenSecret;
use crate::crd_set::BasetenSecretSet;
use crate::sets::context::SetContext;
use crate::sets::{error_policy, reconcile};
use crate::watch::{watch_backoff, watch_config};

/// Set reconciles wait this long after a trigger, so that a burst of child status changes
/// makes one status write.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Whether the BasetenSecretSet CRD is installed (an older install may lack it): without
/// it the operator runs BasetenSecrets alone and says so.
pub async fn installed(client: &kube::Client, namespaces: &Namespaces) -> bool {
    let Some(namespace) = namespaces.first() else {
        return false;
    };
    let sets: Api<BasetenSecretSet> = api_in(client, namespace);
    match sets.list(&ListParams::default().limit(1)).await {
        Ok(_) => true,
        Err(error) => {
            warn!(error = %error, "cannot list BasetenSecretSets (is crds/basetensecretsets.yaml applied?); running without sets");
            false
        }
    }
}

/// The sets of `namespace` that read Secret `secret`: by name, by selector, or last time.
fn sets_reading(
    sets: &Store<BasetenSecretSet>,
    ctx: &SetContext,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<BasetenSecretSet>> {
    let namespace = secret.namespace().unwrap_or_default();
    let name = secret.name_any();
    let mut found = ctx.readers_of(&namespace, &name);
    for set in sets.state() {
        if set.namespace().as_deref() != Some(namespace.as_str()) {
            continue;
        }
        let by_name = set.spec.secret_name.as_deref() == Some(name.as_str());
        let by_labels = (set.spec.secret_selector.clone())
            .and_then(|s| Selector::try_from(s).ok())
            .is_some_and(|s| s.matches(secret.labels()));
        if by_name || by_labels {
            found.push(ObjectRef::from_obj(set.as_ref()));
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found.dedup();
    // Marked before the reconcile this event wakes, so it reads the Secrets again.
    for set in &found {
        ctx.secrets_changed(&namespace, &set.name);
    }
    found
}

/// Runs the set controllers until `stop` completes.
pub async fn run(
    client: kube::Client,
    namespaces: Namespaces,
    ctx: Arc<SetContext>,
    concurrency: u16,
    stop: impl Future<Output = ()> + Clone + Send + Sync + 'static,
) {
    info!("starting the BasetenSecretSet controller");
    let selector = ctx.secret_selector.clone();
    let controllers = namespaces.into_iter().map(|namespace| {
        let sets: Api<BasetenSecretSet> = api_in(&client, &namespace);
        let children: Api<PartialObjectMeta<BasetenSecret>> = api_in(&client, &namespace);
        let children = watcher(children, watcher::Config::default())
            .backoff(watch_backoff())
            .touched_objects();
        let secrets = secrets(&client, &vec![namespace.clone()], selector.as_ref());
        let controller = Controller::new(sets, watch_config());
        let store = controller.store();
        let mapper_ctx = ctx.clone();
        let config = controller::Config::default()
            .concurrency(concurrency)
            .debounce(DEBOUNCE);
        controller
            .owns_stream(children)
            .watches_stream(secrets, move |secret| {
                sets_reading(&store, &mapper_ctx, &secret)
            })
            .with_config(config)
            .graceful_shutdown_on(stop.clone())
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|result| async move {
                match result {
                    Ok((set, _)) => debug!(name = %set.name, "set reconciled"),
                    Err(controller::Error::ReconcilerFailed(..)) => {}
                    // Woken by a Secret's change after the set's deletion.
                    Err(controller::Error::ObjectNotFound(set)) => {
                        debug!(name = %set.name, "set woken after its deletion")
                    }
                    Err(error) => warn!(error = %error, "set controller error"),
                }
            })
    });
    futures::future::join_all(controllers).await;
    info!("BasetenSecretSet controller stopped");
}
