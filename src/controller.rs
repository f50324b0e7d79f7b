//! Wiring: the BasetenSecret watch, the metadata-only Secret watch mapped through the index,
//! concurrency and shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use futures::{FutureExt, StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, WatchStreamExt, controller, reflector, watcher};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tracing::{debug, error, info, warn};

use crate::config::{Config, LeaderElection};
use crate::context::Context;
use crate::crd::BasetenSecret;
use crate::credentials::Credentials;
use crate::metrics::Metrics;
use crate::reconcile::{error_policy, reconcile};
use crate::server::{self, Health};
use crate::watch::{Events, merge_namespaces, prune, watch_backoff, watch_config};

/// Longest wait for in-flight reconciles after the signal to stop, so the process exits
/// within the 10 s a rollout or a drain allows, releasing the Lease on the way out.
const DRAIN_LIMIT: Duration = Duration::from_secs(8);

/// The operator's two connections to the Kubernetes API.
#[derive(Clone)]
pub struct Clients {
    /// For watches: long polls that may stay quiet for minutes (kube's watcher has its own
    /// idle timeout).
    pub watches: kube::Client,
    /// For every other request (reads, status and finalizer patches, events): a connection
    /// silent for longer than the timeout is dropped, so the call fails and is retried
    /// instead of holding its resource forever. (The Lease gets a client of its own, with
    /// a timeout shorter than its renewal grace.)
    pub calls: kube::Client,
    /// The configuration both were made from.
    config: kube::Config,
}

impl Clients {
    /// Both clients from one configuration; `timeout` bounds each silence while a call
    /// waits for its answer.
    pub fn new(config: kube::Config, timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            watches: kube::Client::try_from(config.clone())?,
            calls: calls_within(&config, timeout)?,
            config,
        })
    }
}

/// A client whose calls give up on a connection silent for `timeout`.
fn calls_within(config: &kube::Config, timeout: Duration) -> anyhow::Result<kube::Client> {
    let mut config = config.clone();
    config.read_timeout = Some(timeout);
    // Counted from the request, not from when the pooled connection went idle.
    config.reset_reader_on_write = true;
    Ok(kube::Client::try_from(config)?)
}

/// A stop signal every part of the process can wait on.
type Stop = futures::future::Shared<futures::future::BoxFuture<'static, ()>>;

/// Runs the operator until `shutdown` completes: the HTTP listener at once, then, with
/// leader election, a standby until this process holds the Lease, then the controller.
pub async fn run(
    config: Config,
    clients: Clients,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let shutdown: Stop = shutdown.boxed().shared();
    let metrics = Arc::new(Metrics::default());
    let listener = server::bind(config.http_addr).await?;
    let (reader, writer) = reflector::store();
    let health = Health {
        ready: Arc::new(AtomicBool::new(false)),
        standby: Arc::new(AtomicBool::new(config.leader_election.is_some())),
        metrics: metrics.clone(),
        store: reader.clone(),
    };
    let server = tokio::spawn(server::serve(listener, health.clone()));
    let outcome = match config.leader_election.clone() {
        None => reconcile_until(config, clients, health, writer, shutdown).await,
        Some(election) => run_elected(&election, config, clients, health, writer, shutdown).await,
    };
    server.abort();
    outcome
}

/// Waits as a standby until this process holds the Lease, then runs the controller until
/// `shutdown` (releasing the Lease, so a standby takes over at once) or until the Lease is
/// lost (ending the process with an error, so two leaders never write).
async fn run_elected(
    election: &LeaderElection,
    config: Config,
    clients: Clients,
    health: Health,
    writer: reflector::store::Writer<BasetenSecret>,
    shutdown: Stop,
) -> anyhow::Result<()> {
    // A renewal stuck on a dead connection must fail before the Lease can expire, or
    // another replica could lead while this one still writes.
    let grace = (election.duration_seconds / 3).max(1);
    let lease_client = calls_within(
        &clients.config,
        config.kube_timeout.min(Duration::from_secs(grace)),
    )?;
    let lease = Arc::new(
        LeaseManagerBuilder::new(lease_client, &election.name)
            .with_namespace(&election.namespace)
            .with_identity(&election.identity)
            .with_duration(election.duration_seconds)
            .with_grace(grace)
            .build()
            .await
            .with_context(|| {
                format!(
                    "leader election: cannot use the Lease {}/{} (may this identity get, create and patch leases there?)",
                    election.namespace, election.name
                )
            })?,
    );
    info!(
        lease = %format!("{}/{}", election.namespace, election.name),
        identity = %election.identity,
        "standby: waiting to become the leader"
    );
    tokio::select! {
        _ = shutdown.clone() => {
            info!("stopped while standby");
            return Ok(());
        }
        () = acquire(&lease) => {}
    }
    info!(identity = %election.identity, "became the leader");
    health.standby.store(false, Ordering::SeqCst);

    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<String>();
    let keeper = {
        let lease = lease.clone();
        tokio::spawn(async move {
            let _ = lost_tx.send(keep(&lease).await);
        })
    };
    let lost = async move {
        match lost_rx.await {
            Ok(why) => why,
            Err(_) => futures::future::pending().await,
        }
    };
    // Losing the Lease stops everything at once, in-flight reconciles included (no drain):
    // from now on another replica may lead.
    tokio::select! {
        outcome = reconcile_until(config, clients, health, writer, shutdown) => {
            keeper.abort();
            match lease.release().await {
                Ok(()) => info!("released the leader Lease"),
                Err(error) => {
                    warn!(error = %error, "could not release the leader Lease; a standby takes over when it expires")
                }
            }
            outcome
        }
        why = lost => {
            error!(reason = %why, "lost the leader Lease; stopping so that only one replica writes");
            anyhow::bail!("lost the leader Lease ({why})")
        }
    }
}

/// Returns once this process holds the Lease; errors reading or taking it are retried.
async fn acquire(lease: &LeaseManager) {
    loop {
        match lease.changed().await {
            Ok(true) => return,
            Ok(false) => {}
            Err(error) => {
                warn!(error = %error, "leader election: cannot read or take the Lease; trying again");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// Renews the Lease until it is lost; returns why. A failed renewal counts as lost: the
/// Lease may expire before the next try, and then another replica may lead.
async fn keep(lease: &LeaseManager) -> String {
    loop {
        match lease.changed().await {
            Ok(true) => {}
            Ok(false) => return "another replica holds it".into(),
            Err(error) => return format!("renewing it failed: {error}"),
        }
    }
}

/// Watches, reconciles and serves until `stop` completes and in-flight reconciles are done
/// (or [`DRAIN_LIMIT`] has passed).
async fn reconcile_until(
    config: Config,
    clients: Clients,
    health: Health,
    writer: reflector::store::Writer<BasetenSecret>,
    stop: Stop,
) -> anyhow::Result<()> {
    let namespaces: Vec<Option<String>> = if config.watch_namespaces.is_empty() {
        vec![None]
    } else {
        config.watch_namespaces.iter().cloned().map(Some).collect()
    };
    let resources_in = |ns: &Option<String>| -> Api<BasetenSecret> {
        match ns {
            Some(ns) => Api::namespaced(clients.watches.clone(), ns),
            None => Api::all(clients.watches.clone()),
        }
    };
    // Fail early with a clear message when the CRD is not installed or a namespace is not
    // allowed.
    for ns in &namespaces {
        if let Err(error) = resources_in(ns)
            .list(&kube::api::ListParams::default().limit(1))
            .await
        {
            anyhow::bail!(
                "cannot list BasetenSecrets in {} ({error}); is the CRD installed (kubectl apply -k crds/) and may this identity list them there?",
                ns.as_deref()
                    .map_or("any namespace".to_string(), |ns| format!("namespace {ns}"))
            );
        }
    }

    let reader = writer.as_reader();
    let (requeue, requeued) = futures::channel::mpsc::unbounded();
    let metrics = health.metrics.clone();
    let mut transport = config.transport.clone();
    transport.metrics = Some(metrics.clone());
    let ctx = Arc::new(Context::new(
        clients.calls.clone(),
        Credentials::new(&config.baseten_url, transport, &config.api_key)?,
        metrics.clone(),
        config.secret_selector.clone(),
        std::env::var("POD_NAME").ok(),
    ));

    let claims_ctx = ctx.clone();
    // Ready once the first list is in the cache. (Set from the stream itself: kube's
    // `Store::wait_until_ready` wakes only one of several waiters, and the controller waits
    // on it too.)
    let listed = health.ready.clone();
    let drift_requeue = requeue.clone();
    let watches = namespaces
        .iter()
        .map(|ns| {
            let events: Events = watcher(resources_in(ns), watch_config())
                .backoff(watch_backoff())
                .boxed();
            (ns.clone().unwrap_or_default(), events)
        })
        .collect();
    let resource_events = merge_namespaces(watches, reader.clone())
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
        let readers = mapper_ctx.index.saw(
            &namespace,
            &name,
            secret.metadata.resource_version.as_deref(),
        );
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
    // With a selector, the watch sees only Secrets that may be read.
    let secret_events = stream::select_all(namespaces.iter().map(|ns| {
        let secrets: Api<PartialObjectMeta<Secret>> = match ns {
            Some(ns) => Api::namespaced(clients.watches.clone(), ns),
            None => Api::all(clients.watches.clone()),
        };
        watcher(secrets, secrets_config.clone())
            .backoff(watch_backoff())
            .touched_objects()
            .boxed()
    }));
    info!(
        namespaces = %if config.watch_namespaces.is_empty() { "*".to_string() } else { config.watch_namespaces.join(",") },
        concurrency = config.concurrency,
        "starting controller"
    );
    let running = controller
        // Secrets are watched by metadata only (the API type is PartialObjectMeta): no
        // payload is ever sent to or cached in this process by the watch.
        .watches_stream(secret_events, mapper)
        .reconcile_on(requeued)
        .reconcile_all_on(key_changes)
        .with_config(controller::Config::default().concurrency(config.concurrency))
        .graceful_shutdown_on(stop.clone())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => debug!(namespace = object.namespace.as_deref().unwrap_or(""), name = %object.name, "reconciled"),
                Err(controller::Error::ReconcilerFailed(..)) => {}
                Err(error) => warn!(error = %error, "controller error"),
            }
        });
    tokio::select! {
        () = running => {}
        () = async {
            stop.await;
            tokio::time::sleep(DRAIN_LIMIT).await;
        } => warn!(limit_seconds = DRAIN_LIMIT.as_secs(), "reconciles still running at the drain limit; stopping without them"),
    }
    drift.abort();
    if let Some(key_file) = key_file {
        key_file.abort();
    }
    info!("controller stopped");
    Ok(())
}
