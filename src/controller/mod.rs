//! Wiring: the watches, the reconciler, the background tasks (drift checks, the key file),
//! leader election, concurrency and shutdown.

pub mod leader;
mod sets;
pub mod streams;
pub mod tasks;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use futures::channel::mpsc::UnboundedSender;
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
use crate::sets::context::SetContext;
use tasks::Tasks;

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
    let mut background = Tasks::default();
    background.spawn("HTTP server", server::serve(listener, health.clone()));
    let work = async {
        match config.leader_election.clone() {
            None => reconcile_until(config, clients, health, writer, shutdown).await,
            Some(election) => elected(&election, config, clients, health, writer, shutdown).await,
        }
    };
    // The server is stopped when `background` is dropped, however this ends.
    tokio::select! {
        outcome = work => outcome,
        died = background.died() => Err(died),
    }
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
fn context(
    config: &Config,
    clients: &Clients,
    metrics: Arc<Metrics>,
    requeue: UnboundedSender<ObjectRef<BasetenSecret>>,
) -> anyhow::Result<Context> {
    let mut transport = config.transport.clone();
    transport.metrics = Some(metrics.clone());
    let credentials = Credentials::new(&config.baseten_url, transport, &config.api_key)?;
    Ok(Context::new(
        clients.calls.clone(),
        Arc::new(credentials),
        metrics,
        config.secret_selector.clone(),
        std::env::var("POD_NAME").ok(),
        requeue,
    ))
}

/// The set controller, when its CRD is installed, over the resource cache `children`
/// (filled once `health.ready` is set), until `stop`.
fn sets_controller(
    config: &Config,
    clients: &Clients,
    namespaces: &streams::Namespaces,
    children: reflector::Store<BasetenSecret>,
    health: &Health,
    stop: Stop,
) -> impl std::future::Future<Output = ()> + use<> {
    let ctx = Arc::new(SetContext {
        client: clients.calls.clone(),
        children,
        children_listed: health.ready.clone(),
        secret_selector: config.secret_selector.clone(),
        read_by: Default::default(),
        key_names: Default::default(),
        listings: Default::default(),
    });
    let (client, namespaces) = (clients.watches.clone(), namespaces.clone());
    let concurrency = config.concurrency;
    async move {
        if sets::installed(&client, &namespaces).await {
            sets::run(client, namespaces, ctx, concurrency, stop).await;
        }
    }
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
        // A wake-up (a requeue, a Secret's change) for a resource deleted meanwhile.
        Err(controller::Error::ObjectNotFound(object)) => {
            debug!(namespace = object.namespace.as_deref().unwrap_or(""), name = %object.name, "woken after its deletion")
        }
        Err(error) => warn!(error = %error, "controller error"),
    }
}

/// The controller's background tasks: the key file's reload (with a key file) and the
/// drift checks.
fn background_tasks(
    config: &Config,
    ctx: &Context,
    store: reflector::Store<BasetenSecret>,
    requeue: UnboundedSender<ObjectRef<BasetenSecret>>,
    key_changed: UnboundedSender<()>,
) -> Tasks {
    let mut background = Tasks::default();
    if let Some(path) = config.api_key_file.clone() {
        let credentials = ctx.credentials.clone();
        background.spawn("API key file", async move {
            follow_key_file(path, credentials, key_changed).await;
            Ok(())
        });
    }
    let checks = drift::Checks {
        credentials: ctx.credentials.clone(),
        memories: ctx.memories.clone(),
        metrics: ctx.metrics.clone(),
    };
    background.spawn("drift checks", async move {
        drift::run(checks, store, requeue).await;
        Ok(())
    });
    background
}

fn log_start(config: &Config) {
    info!(
        namespaces = %if config.watch_namespaces.is_empty() { "*".to_string() } else { config.watch_namespaces.join(",") },
        concurrency = config.concurrency,
        "starting controller"
    );
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
    let (requeue, requeued) = futures::channel::mpsc::unbounded();
    let ctx = Arc::new(context(
        &config,
        &clients,
        health.metrics.clone(),
        requeue.clone(),
    )?);
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
    let secrets = streams::read_secrets(&clients.watches, &namespaces, ctx.clone());
    let (key_changed, key_changes) = futures::channel::mpsc::unbounded();
    let mut background = background_tasks(&config, &ctx, controller.store(), requeue, key_changed);
    log_start(&config);
    let sets_running = sets_controller(
        &config,
        &clients,
        &namespaces,
        controller.store(),
        &health,
        stop.clone(),
    );
    let running = controller
        .watches_stream(secrets, readers_of)
        .reconcile_on(requeued)
        .reconcile_all_on(key_changes)
        .with_config(controller::Config::default().concurrency(config.concurrency))
        .graceful_shutdown_on(stop.clone())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move { log_result(result) });
    let running = futures::future::join(running, sets_running).map(|_| ());
    // The background tasks stop when `background` is dropped, after the drain.
    tokio::select! {
        () = drained(running, stop) => {}
        died = background.died() => return Err(died),
    }
    info!("controller stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers every request with an empty list: enough for the access check to pass and the
    /// controller to start (its watches fail and back off).
    async fn empty_apiserver() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let empty = serde_json::json!({
            "apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []
        });
        let app = axum::Router::new().fallback(move || {
            let empty = empty.clone();
            async move { axum::Json(empty) }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    fn config(key_file: &std::path::Path) -> Config {
        Config {
            baseten_url: "http://127.0.0.1:9".into(),
            transport: crate::baseten::Transport::default(),
            api_key: secrecy::SecretString::from("k".to_string()),
            api_key_file: Some(key_file.to_path_buf()),
            watch_namespaces: vec!["ml".into()],
            leader_election: None,
            kube_timeout: Duration::from_secs(30),
            concurrency: 1,
            log_format: crate::config::LogFormat::Text,
            secret_selector: None,
            http_addr: "127.0.0.1:0".parse().unwrap(),
        }
    }

    #[tokio::test]
    async fn a_background_task_that_dies_ends_run_with_an_error_naming_it() {
        crate::process::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("key");
        std::fs::write(&key_file, "k").unwrap();
        let url = empty_apiserver().await;
        for task in ["HTTP server", "drift checks", "API key file"] {
            tasks::PANICS_AT_START.with(|p| p.set(Some(task)));
            let kube = kube::Config::new(url.parse().unwrap());
            let clients = Clients::new(kube, Duration::from_secs(5)).unwrap();
            let ended = tokio::time::timeout(
                Duration::from_secs(10),
                run(config(&key_file), clients, futures::future::pending()),
            )
            .await
            .unwrap_or_else(|_| panic!("run went on without the {task} task"));
            let error = ended.expect_err(task).to_string();
            assert!(
                error.contains(&format!("the {task} task panicked")),
                "{error}"
            );
        }
    }
}
