//! Wiring: the watches, the reconciler, the background tasks (drift checks, the key file),
//! leader election, concurrency and shutdown.

pub mod leader;
pub mod streams;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, controller, reflector};
use tracing::{debug, info, warn};

use crate::config::{Config, LeaderElection};
use crate::context::Context;
use crate::crd::BasetenSecret;
use crate::credentials::{Credentials, follow_key_file};
use crate::drift;
use crate::metrics::Metrics;
use crate::reconcile::{error_policy, reconcile};
use crate::server::{self, Health};

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
        Some(election) => elected(&election, config, clients, health, writer, shutdown).await,
    };
    server.abort();
    outcome
}

/// The controller under leader election; the Lease's calls give up within its renewal grace.
async fn elected(
    election: &LeaderElection,
    config: Config,
    clients: Clients,
    health: Health,
    writer: reflector::store::Writer<BasetenSecret>,
    shutdown: Stop,
) -> anyhow::Result<()> {
    let grace = Duration::from_secs(leader::grace_seconds(election));
    let lease_client = calls_within(&clients.config, config.kube_timeout.min(grace))?;
    let standby = health.standby.clone();
    let work = reconcile_until(config, clients, health, writer, shutdown.clone());
    leader::run_elected(election, lease_client, &standby, shutdown, work).await
}

/// The dependencies of every reconcile; Baseten requests are counted in `metrics`.
fn context(config: &Config, clients: &Clients, metrics: Arc<Metrics>) -> anyhow::Result<Context> {
    let mut transport = config.transport.clone();
    transport.metrics = Some(metrics.clone());
    let credentials = Credentials::new(&config.baseten_url, transport, &config.api_key)?;
    Ok(Context::new(
        clients.calls.clone(),
        Arc::new(credentials),
        metrics,
        config.secret_selector.clone(),
        std::env::var("POD_NAME").ok(),
    ))
}

/// Runs `running` to its end after `stop`, or [`DRAIN_LIMIT`] past `stop` at the most.
async fn drained(running: impl std::future::Future<Output = ()>, stop: Stop) {
    tokio::select! {
        () = running => {}
        () = async {
            stop.await;
            tokio::time::sleep(DRAIN_LIMIT).await;
        } => warn!(limit_seconds = DRAIN_LIMIT.as_secs(), "reconciles still running at the drain limit; stopping without them"),
    }
}

/// What the controller reports of one reconcile.
type Reconciled = Result<
    (ObjectRef<BasetenSecret>, Action),
    controller::Error<crate::error::Error, kube::runtime::watcher::Error>,
>;

fn log_result(result: Reconciled) {
    match result {
        Ok((object, _)) => {
            debug!(namespace = object.namespace.as_deref().unwrap_or(""), name = %object.name, "reconciled")
        }
        // error_policy has logged it.
        Err(controller::Error::ReconcilerFailed(..)) => {}
        Err(error) => warn!(error = %error, "controller error"),
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
    let namespaces = streams::namespaces(&config.watch_namespaces);
    streams::check_access(&clients.watches, &namespaces).await?;
    let ctx = Arc::new(context(&config, &clients, health.metrics.clone())?);
    let (requeue, requeued) = futures::channel::mpsc::unbounded();
    let reader = writer.as_reader();
    let resources = streams::resources(
        &clients.watches,
        &namespaces,
        writer,
        ctx.clone(),
        requeue.clone(),
        health.ready.clone(),
    );
    let controller = Controller::for_stream(resources, reader);
    let readers_of = streams::readers_of(ctx.clone(), controller.store());
    let secrets = streams::secrets(
        &clients.watches,
        &namespaces,
        config.secret_selector.as_ref(),
    );
    let (key_changed, key_changes) = futures::channel::mpsc::unbounded();
    let key_file = (config.api_key_file.clone())
        .map(|path| tokio::spawn(follow_key_file(path, ctx.credentials.clone(), key_changed)));
    let checks = drift::Checks {
        credentials: ctx.credentials.clone(),
        memories: ctx.memories.clone(),
        metrics: ctx.metrics.clone(),
    };
    let drift = tokio::spawn(drift::run(checks, controller.store(), requeue));
    info!(
        namespaces = %if config.watch_namespaces.is_empty() { "*".to_string() } else { config.watch_namespaces.join(",") },
        concurrency = config.concurrency,
        "starting controller"
    );
    let running = controller
        .watches_stream(secrets, readers_of)
        .reconcile_on(requeued)
        .reconcile_all_on(key_changes)
        .with_config(controller::Config::default().concurrency(config.concurrency))
        .graceful_shutdown_on(stop.clone())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move { log_result(result) });
    drained(running, stop).await;
    drift.abort();
    if let Some(key_file) = key_file {
        key_file.abort();
    }
    info!("controller stopped");
    Ok(())
}
