//! Wiring: the BasetenSecret watch, the metadata-only Secret watch mapped through the index,
//! concurrency and shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::utils::Backoff;
use kube::runtime::{Controller, WatchStreamExt, controller, reflector, watcher};
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::context::Context;
use crate::crd::BasetenSecret;
use crate::credentials::Credentials;
use crate::metrics::Metrics;
use crate::reconcile::{error_policy, reconcile};
use crate::server::{self, Health};

/// How both watches list: the most recent state, in pages of 500. (Listing with the "any"
/// semantic, as before, left the operator at 142 MiB after 30 000 Secrets and 10 000
/// resources; paging and the pruning below brought that to 90 MiB, measured together.)
fn watch_config() -> watcher::Config {
    watcher::Config::default().page_size(WATCH_PAGE_SIZE)
}

/// First wait before a failed watch tries again; it doubles up to [`WATCH_RETRY_MAX`].
const WATCH_RETRY_MIN: Duration = Duration::from_millis(250);

/// Longest wait between tries of a failed watch. kube's default (30 s) left changes unseen
/// for most of a minute after a kube-apiserver restart; a relist every 5 s at worst costs
/// the apiserver little.
const WATCH_RETRY_MAX: Duration = Duration::from_secs(5);

/// Retry delays of a failed watch: exponential with jitter, reset by the next event.
struct WatchBackoff {
    next: Duration,
}

impl WatchBackoff {
    fn new() -> Self {
        Self {
            next: WATCH_RETRY_MIN,
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next.mul_f64(rand::random_range(0.5..=1.0));
        self.next = (self.next * 2).min(WATCH_RETRY_MAX);
        Some(delay)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = WATCH_RETRY_MIN;
    }
}

/// Objects per page of a watch's initial list.
const WATCH_PAGE_SIZE: u32 = 500;

/// Drops what reconciles never read before an object enters the cache, and frees what
/// `clear()` would keep: the field managers (a list of about 200-byte entries with room for
/// four), labels, owner references, annotations other than this operator's (a one-entry
/// B-tree allocates room for eleven), and the spare room of the conditions list. Together
/// that is about a kilobyte per resource.
fn prune(object: &mut BasetenSecret) {
    let meta = &mut object.metadata;
    meta.managed_fields = None;
    meta.labels = None;
    meta.owner_references = None;
    meta.annotations = meta
        .annotations
        .take()
        .map(|all| {
            all.into_iter()
                .filter(|(key, _)| key.starts_with(ANNOTATION_PREFIX))
                .collect::<std::collections::BTreeMap<_, _>>()
        })
        .filter(|kept| !kept.is_empty());
    if let Some(status) = object.status.as_mut() {
        status.conditions.shrink_to_fit();
    }
}

/// Prefix of the annotations this operator reads.
const ANNOTATION_PREFIX: &str = "baseten.co/";

/// Runs the operator until `shutdown` completes.
pub async fn run(
    config: Config,
    client: kube::Client,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let (resources, secrets): (Api<BasetenSecret>, Api<PartialObjectMeta<Secret>>) =
        match &config.watch_namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
    // Fail early with a clear message when the CRD is not installed.
    if let Err(error) = resources
        .list(&kube::api::ListParams::default().limit(1))
        .await
    {
        anyhow::bail!(
            "cannot list BasetenSecrets ({error}); is the CRD installed (kubectl apply -k crds/) and may this identity list them?"
        );
    }

    // The resource cache keeps what reconciles read: spec, status, annotations. Field
    // managers and kubectl's last-applied copy are dropped before they are stored.
    let (reader, writer) = reflector::store();
    let (requeue, requeued) = futures::channel::mpsc::unbounded();
    let metrics = Arc::new(Metrics::default());
    let listener = server::bind(config.http_addr).await?;
    let mut transport = config.transport.clone();
    transport.metrics = Some(metrics.clone());
    let ctx = Arc::new(Context::new(
        client.clone(),
        Credentials::new(&config.baseten_url, transport, &config.api_key)?,
        metrics.clone(),
        config.secret_selector.clone(),
        std::env::var("POD_NAME").ok(),
    ));

    let claims_ctx = ctx.clone();
    // Ready once the first list is in the cache. (Set from the stream itself: kube's
    // `Store::wait_until_ready` wakes only one of several waiters, and the controller waits
    // on it too.)
    let ready = Arc::new(AtomicBool::new(false));
    let listed = ready.clone();
    let drift_requeue = requeue.clone();
    let resource_events = watcher(resources, watch_config())
        .backoff(WatchBackoff::new())
        .modify(prune)
        .reflect(writer)
        .inspect_ok(move |event| {
            // Claims follow every event, deletions included; a changed winner requeues
            // the claimants of that secret, so the next in line takes over by itself.
            for object in claims_ctx.claims.observe(event) {
                let _ = requeue.unbounded_send(object);
            }
            if matches!(event, watcher::Event::InitDone) {
                listed.store(true, Ordering::SeqCst);
            }
        })
        .applied_objects();
    let controller = Controller::for_stream(resource_events, reader);
    let store = controller.store();
    let mapper_ctx = ctx.clone();
    let mapper = move |secret: PartialObjectMeta<Secret>| {
        let namespace = secret.namespace().unwrap_or_default();
        let name = secret.name_any();
        mapper_ctx.index.saw(
            &namespace,
            &name,
            secret.metadata.resource_version.as_deref(),
        );
        let readers = mapper_ctx.index.readers(&namespace, &name);
        // Drop index entries of BasetenSecrets that no longer exist.
        readers
            .into_iter()
            .filter(|reader: &ObjectRef<BasetenSecret>| {
                let alive = store.get(reader).is_some();
                if !alive {
                    mapper_ctx.index.forget(&namespace, &reader.name);
                    mapper_ctx.forget(reader);
                }
                alive
            })
            .collect::<Vec<_>>()
    };

    let health = Health {
        ready,
        metrics,
        store: controller.store(),
    };
    let server = tokio::spawn(server::serve(listener, health));
    let (key_changed, key_changes) = futures::channel::mpsc::unbounded();
    let key_file = config.api_key_file.clone().map(|path| {
        tokio::spawn(crate::credentials::follow_key_file(
            path,
            ctx.clone(),
            key_changed,
        ))
    });
    // With a selector, the watch sees only Secrets that may be read.
    let secrets_config = match &config.secret_selector {
        Some(selector) => watch_config().labels(&selector.text),
        None => watch_config(),
    };
    let drift = tokio::spawn(crate::drift::run(
        ctx.clone(),
        controller.store(),
        drift_requeue,
    ));
    info!(
        namespace = config.watch_namespace.as_deref().unwrap_or("*"),
        concurrency = config.concurrency,
        "starting controller"
    );
    controller
        // Secrets are watched by metadata only (the API type is PartialObjectMeta): no
        // payload is ever sent to or cached in this process by the watch.
        .watches_stream(
            watcher(secrets, secrets_config)
                .backoff(WatchBackoff::new())
                .touched_objects(),
            mapper,
        )
        .reconcile_on(requeued)
        .reconcile_all_on(key_changes)
        .with_config(controller::Config::default().concurrency(config.concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => debug!(namespace = object.namespace.as_deref().unwrap_or(""), name = %object.name, "reconciled"),
                Err(controller::Error::ReconcilerFailed(..)) => {}
                Err(error) => warn!(error = %error, "controller error"),
            }
        })
        .await;
    drift.abort();
    server.abort();
    if let Some(key_file) = key_file {
        key_file.abort();
    }
    info!("controller stopped");
    Ok(())
}
