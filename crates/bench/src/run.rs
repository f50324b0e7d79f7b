//! The phases of one bench run, against a control plane and an emulator of its own.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use baseten_emulator::{AdminRequest, AdminSecret};
use baseten_secrets_operator::{BasetenSecret, BasetenSecretSpec};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::{WatchStreamExt, watcher};
use rand::Rng;
use rand::distr::Alphanumeric;
use testenv::Supervised;

use crate::probe::{Scrape, Usage, usage};
use crate::{NOISE_BYTES, Params};

/// The API key of the bench's Baseten organisation.
const API_KEY: &str = "bench-key-3b9f1d";
/// Namespace of the resources and Secrets.
const NAMESPACE: &str = "bench";
/// Namespace of the operator's ServiceAccount, as deploy/base installs it.
const OPERATOR_NAMESPACE: &str = "baseten-secrets-operator";
/// Requests to the apiserver in flight while creating objects.
const CREATE_PARALLELISM: usize = 16;
/// No operator activity for this long counts as idle.
const QUIET: Duration = Duration::from_secs(3);
/// How often activity and usage are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// Pause between two timed updates, so each is measured alone.
const UPDATE_SPACING: Duration = Duration::from_millis(50);

/// Everything measured, before it is judged and written.
pub struct Figures {
    /// Seconds from the first create to the last resource Ready.
    pub convergence_seconds: f64,
    /// Seconds the creates themselves took.
    pub creation_seconds: f64,
    /// 429 answers Baseten gave during the whole run.
    pub throttled: usize,
    /// Ready count over time: (seconds since the first create, resources Ready).
    pub curve: Vec<(f64, f64)>,
    /// Resources whose Baseten value equals their Secret's value at the end.
    pub correct_values: usize,
    /// Propagation latencies in milliseconds, in the order measured.
    pub latencies_ms: Vec<f64>,
    /// How long each update took to be answered by the apiserver, milliseconds.
    pub round_trips_ms: Vec<f64>,
    /// Updates whose value never reached Baseten in time.
    pub missed_updates: usize,
    /// Operator Secret reads per push during propagation.
    pub reads_per_push: f64,
    /// Operator status writes per push during propagation.
    pub status_writes_per_push: f64,
    /// Operator watch connections at rest.
    pub watch_connections: f64,
    /// What the steady state cost.
    pub steady: Activity,
    /// CPU seconds used during the steady state.
    pub steady_cpu_seconds: f64,
    /// What the restart cost until idle.
    pub restart: Activity,
    /// Seconds from the new process's start to its last activity.
    pub restart_to_idle_seconds: f64,
    /// Usage of the first process at its end, and of the restarted one at the end.
    pub first: Usage,
    /// Usage of the restarted process at the end of the run.
    pub second: Usage,
    /// RSS at rest (end of the steady state), bytes.
    pub idle_rss: u64,
    /// RSS of the first process once it watched, before any resource existed, bytes.
    pub empty_rss: u64,
    /// RSS of the restarted process after every resource was deleted, bytes.
    pub deleted_rss: u64,
    /// The BasetenSecretSet phase.
    pub sets: crate::sets::SetFigures,
}

/// How long the bench waits, after the deletions, for freed memory to go back to the system.
const RELEASE_WAIT: Duration = Duration::from_secs(15);

/// Requests the operator caused in a span of time.
#[derive(Clone, Copy, Debug, Default)]
pub struct Activity {
    /// Upserts Baseten received.
    pub upserts: usize,
    /// List calls Baseten received.
    pub list_calls: usize,
    /// Status patches the apiserver received.
    pub status_patches: f64,
    /// Events created or patched.
    pub events: f64,
    /// Secret reads.
    pub secret_reads: f64,
}

/// The apiserver and Baseten counters the operator moves.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Counters {
    secret_reads: f64,
    status_patches: f64,
    events: f64,
    lists: f64,
    baseten_requests: usize,
}

/// A running world: control plane, emulator, admin client, operator process.
struct World {
    _plane: testenv::ControlPlane,
    client: kube::Client,
    emulator: baseten_emulator::Running,
    http: reqwest::Client,
    dir: tempfile::TempDir,
    operator: Option<Supervised>,
    starts: u32,
    usage: Arc<Mutex<Usage>>,
    sampler: Option<tokio::task::JoinHandle<()>>,
}

fn random_value(bytes: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(bytes)
        .map(char::from)
        .collect()
}

fn resource_name(i: usize) -> String {
    format!("bench-{i:05}")
}

fn secret(name: &str, key: &str, value: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        data: Some([(key.to_string(), ByteString(value.as_bytes().to_vec()))].into()),
        ..Default::default()
    }
}

impl World {
    async fn start() -> Result<Self> {
        testenv::install_crypto_provider();
        let plane = testenv::ControlPlane::start(testenv::Options::default()).await?;
        let client = plane.client().await?;
        let emulator = baseten_emulator::spawn(
            "127.0.0.1:0".parse()?,
            baseten_emulator::Config {
                api_keys: vec![API_KEY.into()],
                rate_limit_per_second: baseten_emulator::DEFAULT_RATE_LIMIT_PER_SECOND,
                ..Default::default()
            },
        )
        .await?;
        let dir = tempfile::Builder::new().prefix("bench-").tempdir()?;

        // Installed as deploy/base installs it: the committed CRD and RBAC.
        testenv::cluster::apply_yaml(
            &client,
            include_str!("../../../crds/basetensecrets.yaml"),
            NAMESPACE,
        )
        .await?;
        testenv::cluster::apply_yaml(
            &client,
            include_str!("../../../crds/basetensecretsets.yaml"),
            NAMESPACE,
        )
        .await?;
        for crd in ["basetensecrets.baseten.co", "basetensecretsets.baseten.co"] {
            let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
            tokio::time::timeout(
                Duration::from_secs(30),
                await_condition(crds, crd, conditions::is_crd_established()),
            )
            .await
            .context("the CRD was not established in time")??;
        }
        testenv::cluster::ensure_namespace(&client, OPERATOR_NAMESPACE).await?;
        testenv::cluster::apply_yaml(
            &client,
            include_str!("../../../deploy/base/rbac.yaml"),
            OPERATOR_NAMESPACE,
        )
        .await?;
        let token = testenv::cluster::service_account_token(
            &client,
            OPERATOR_NAMESPACE,
            OPERATOR_NAMESPACE,
        )
        .await?;
        let kubeconfig = testenv::cluster::kubeconfig_with_token(Some(plane.kubeconfig()), &token)?;
        std::fs::write(
            dir.path().join("operator.kubeconfig"),
            serde_json::to_string(&kubeconfig)?,
        )?;
        std::fs::write(dir.path().join("api-key"), API_KEY)?;
        testenv::cluster::ensure_namespace(&client, NAMESPACE).await?;
        Ok(Self {
            _plane: plane,
            client,
            emulator,
            http: reqwest::Client::new(),
            dir,
            operator: None,
            starts: 0,
            usage: Arc::default(),
            sampler: None,
        })
    }

    fn log_path(&self, start: u32) -> PathBuf {
        self.dir.path().join(format!("operator-{start}.log"))
    }

    /// Starts the operator as deploy/base runs it: all namespaces, the key from a file, JSON
    /// logs at info. Returns when its process runs, with usage sampling started.
    async fn start_operator(&mut self, params: &Params) -> Result<Instant> {
        self.starts += 1;
        let kubeconfig = self.dir.path().join("operator.kubeconfig");
        let started = Instant::now();
        let operator = Supervised::spawn_with_env(
            &params.operator,
            &[
                format!(
                    "--api-key-file={}",
                    self.dir.path().join("api-key").display()
                ),
                format!("--baseten-url={}", self.emulator.url()),
                "--log-format=json".into(),
                // Any free port: another process may hold the default 8080.
                "--http-addr=127.0.0.1:0".into(),
            ],
            &[
                ("KUBECONFIG", &kubeconfig.display().to_string()),
                ("RUST_LOG", "info"),
                ("POD_NAME", "bench-operator"),
                (testenv::SESSION_ENV, "test"),
            ],
            &self.log_path(self.starts),
            None,
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            if let Some(pid) = operator.child_pid() {
                break pid;
            }
            if Instant::now() > deadline {
                bail!("the operator process did not start");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        self.operator = Some(operator);
        *self.usage.lock().unwrap() = Usage::default();
        let shared = self.usage.clone();
        self.sampler = Some(tokio::spawn(async move {
            while let Ok(now) = usage(pid) {
                *shared.lock().unwrap() = now;
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
        }));
        Ok(started)
    }

    /// The operator's latest usage (kept after it exits).
    fn usage(&self) -> Usage {
        *self.usage.lock().unwrap()
    }

    fn stop_operator(&mut self) {
        if let Some(mut operator) = self.operator.take() {
            operator.stop();
        }
        if let Some(sampler) = self.sampler.take() {
            sampler.abort();
        }
    }

    fn operator_log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path(self.starts)).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    async fn baseten_requests(&self, since: usize) -> Result<Vec<AdminRequest>> {
        Ok(self
            .http
            .get(format!(
                "{}/_admin/requests?since={since}",
                self.emulator.url()
            ))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    async fn baseten_secrets(&self) -> Result<Vec<AdminSecret>> {
        Ok(self
            .http
            .get(format!("{}/_admin/secrets", self.emulator.url()))
            .send()
            .await?
            .json()
            .await?)
    }

    async fn counters(&self) -> Result<Counters> {
        let scrape = Scrape::take(&self.client).await?;
        Ok(Counters {
            secret_reads: scrape.requests("GET", "secrets", ""),
            // Server-side apply is counted under its own verb.
            status_patches: scrape.requests("APPLY", "basetensecrets", "status")
                + scrape.requests("PATCH", "basetensecrets", "status"),
            events: scrape.requests("POST", "events", "") + scrape.requests("PATCH", "events", ""),
            lists: scrape.requests("LIST", "basetensecrets", "")
                + scrape.requests("LIST", "secrets", ""),
            baseten_requests: self.baseten_requests(0).await?.len(),
        })
    }

    /// Waits until the operator has done nothing for [`QUIET`] (after doing something, when
    /// `after_activity`); returns the moment of its last activity.
    async fn wait_quiet(&self, timeout: Duration, after_activity: bool) -> Result<Instant> {
        let deadline = Instant::now() + timeout;
        let first = self.counters().await?;
        let mut last = first;
        let mut last_change = Instant::now();
        let mut active = !after_activity;
        loop {
            tokio::time::sleep(SAMPLE_EVERY).await;
            let now = self.counters().await?;
            if now != last {
                last = now;
                last_change = Instant::now();
                active = true;
            } else if active && last_change.elapsed() >= QUIET {
                return Ok(last_change);
            }
            if Instant::now() > deadline {
                bail!(
                    "the operator did not become idle within {timeout:?} (first {first:?}, last {last:?}); its log ends with:\n{}",
                    self.operator_log_tail()
                );
            }
        }
    }

    async fn activity_since(&self, before: Counters, baseten_since: usize) -> Result<Activity> {
        let after = self.counters().await?;
        let requests = self.baseten_requests(baseten_since).await?;
        Ok(Activity {
            upserts: requests.iter().filter(|r| r.method == "POST").count(),
            list_calls: requests
                .iter()
                .filter(|r| r.method == "GET" && r.path.ends_with("/secrets"))
                .count(),
            status_patches: after.status_patches - before.status_patches,
            events: after.events - before.events,
            secret_reads: after.secret_reads - before.secret_reads,
        })
    }
}

/// The emulator's request log from an index on.
pub type Requests<'a> =
    dyn Fn(usize) -> futures::future::BoxFuture<'a, Result<Vec<AdminRequest>>> + Sync + 'a;

/// When Baseten received the first successful upsert of `name` sent at or after `since`,
/// reading the log from `*seen` on (and moving `seen` past what was read); `None` when none
/// came within 30 s. The emulator's own arrival timestamp, so no polling is measured.
pub async fn arrival(
    requests: &Requests<'_>,
    seen: &mut usize,
    name: &str,
    since: jiff::Timestamp,
) -> Result<Option<jiff::Timestamp>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let new = requests(*seen).await?;
        *seen += new.len();
        let hit = new.iter().find(|r| {
            r.method == "POST"
                && r.status == 200
                && r.name.as_deref() == Some(name)
                && r.received_at
                    .parse::<jiff::Timestamp>()
                    .is_ok_and(|t| t >= since)
        });
        if let Some(hit) = hit {
            return Ok(Some(hit.received_at.parse::<jiff::Timestamp>()?));
        }
        if Instant::now() > deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn create_all<T, F>(items: Vec<T>, create: F) -> Result<()>
where
    F: Fn(T) -> futures::future::BoxFuture<'static, Result<()>>,
{
    futures::stream::iter(items.into_iter().map(create))
        .buffer_unordered(CREATE_PARALLELISM)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// A resource pushing key `value` of the Secret of the same name.
fn spec_for(name: &str) -> BasetenSecretSpec {
    BasetenSecretSpec::of(name, "value")
}

/// Runs every phase and returns what was measured.
pub async fn run(params: &Params) -> Result<Figures> {
    let mut world = World::start().await?;
    let secrets: Api<Secret> = Api::namespaced(world.client.clone(), NAMESPACE);
    let resources: Api<BasetenSecret> = Api::namespaced(world.client.clone(), NAMESPACE);

    eprintln!(
        "bench: creating {} Secrets and {} unrelated ones",
        params.n, params.noise
    );
    let mut values: Vec<String> = (0..params.n)
        .map(|_| random_value(params.value_bytes))
        .collect();
    let noise_value = random_value(NOISE_BYTES);
    let jobs: Vec<Secret> = values
        .iter()
        .enumerate()
        .map(|(i, value)| secret(&resource_name(i), "value", value))
        .chain((0..params.noise).map(|i| secret(&format!("noise-{i:05}"), "blob", &noise_value)))
        .collect();
    let api = secrets.clone();
    create_all(jobs, move |object| {
        let api = api.clone();
        Box::pin(async move {
            api.create(&PostParams::default(), &object).await?;
            Ok(())
        })
    })
    .await?;

    // The first custom resources after a CRD is established are slow to create (the
    // apiserver builds its handler and validation lazily); warm it up before timing.
    let warm_up = Instant::now();
    let object = BasetenSecret::new("warm-up", spec_for("warm-up"));
    resources.create(&PostParams::default(), &object).await?;
    resources.delete("warm-up", &Default::default()).await?;
    eprintln!(
        "bench: first resource created and deleted in {:.1} s",
        warm_up.elapsed().as_secs_f64()
    );

    let baseline_watches = Scrape::take(&world.client).await?.watches();
    world.start_operator(params).await?;
    // The operator is up once it holds its two watches (its resources, Secret metadata).
    let deadline = Instant::now() + Duration::from_secs(60);
    while Scrape::take(&world.client).await?.watches() < baseline_watches + 2.0 {
        if Instant::now() > deadline {
            bail!(
                "the operator did not start watching; its log ends with:\n{}",
                world.operator_log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // What the operator holds with no resource at all, to compare with after deleting them.
    let empty_rss = world.usage().rss;

    // 1. Cold convergence.
    eprintln!("bench: creating {} BasetenSecrets", params.n);
    let ready: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let watch = {
        let ready = ready.clone();
        let stream = watcher(resources.clone(), watcher::Config::default()).applied_objects();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(object)) = stream.next().await {
                let synced = object
                    .ready_condition()
                    .is_some_and(|c| c.reason == "Synced");
                if synced {
                    let name = object.metadata.name.clone().unwrap_or_default();
                    ready
                        .lock()
                        .unwrap()
                        .entry(name)
                        .or_insert_with(Instant::now);
                }
            }
        })
    };
    let begun = Instant::now();
    let api = resources.clone();
    create_all((0..params.n).collect(), move |i| {
        let api = api.clone();
        Box::pin(async move {
            let name = resource_name(i);
            let object = BasetenSecret::new(&name, spec_for(&name));
            api.create(&PostParams::default(), &object).await?;
            Ok(())
        })
    })
    .await?;
    let creation_seconds = begun.elapsed().as_secs_f64();
    let floor = params.n as f64 / baseten_emulator::DEFAULT_RATE_LIMIT_PER_SECOND as f64;
    let deadline = begun + Duration::from_secs_f64((floor * 4.0).max(120.0));
    loop {
        let count = ready.lock().unwrap().len();
        if count >= params.n {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "only {count} of {} resources became Ready; the operator's log ends with:\n{}",
                params.n,
                world.operator_log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watch.abort();
    let mut times: Vec<f64> = ready
        .lock()
        .unwrap()
        .values()
        .map(|t| t.duration_since(begun).as_secs_f64())
        .collect();
    times.sort_by(f64::total_cmp);
    let convergence_seconds = times.last().copied().unwrap_or_default();
    let step = (times.len() / 200).max(1);
    let mut curve: Vec<(f64, f64)> = vec![(0.0, 0.0)];
    curve.extend(
        times
            .iter()
            .enumerate()
            .filter(|(i, _)| i % step == 0 || *i + 1 == times.len())
            .map(|(i, t)| (*t, (i + 1) as f64)),
    );
    eprintln!(
        "bench: {} Ready in {convergence_seconds:.1} s (floor {floor:.1} s)",
        params.n
    );
    world.wait_quiet(Duration::from_secs(120), false).await?;

    // 2. Change propagation.
    eprintln!("bench: timing {} updates", params.updates);
    let before = world.counters().await?;
    let requests = |since| -> futures::future::BoxFuture<'_, Result<Vec<AdminRequest>>> {
        Box::pin(world.baseten_requests(since))
    };
    let mut seen = world.baseten_requests(0).await?.len();
    let mut latencies_ms = Vec::with_capacity(params.updates);
    let mut missed_updates = 0;
    let mut round_trips_ms = Vec::with_capacity(params.updates);
    for _ in 0..params.updates {
        let i = rand::rng().random_range(0..params.n);
        let name = resource_name(i);
        values[i] = random_value(params.value_bytes);
        let sent = SystemTime::now();
        secrets
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&secret(&name, "value", &values[i])),
            )
            .await?;
        // The update counts as accepted when the apiserver's answer arrives; the operator
        // may hear of it a little earlier through its watch.
        let accepted = SystemTime::now();
        round_trips_ms.push(accepted.duration_since(sent)?.as_secs_f64() * 1000.0);
        let sent_at = jiff::Timestamp::try_from(sent)?;
        let accepted_at = jiff::Timestamp::try_from(accepted)?;
        let received = arrival(&requests, &mut seen, &name, sent_at).await?;
        match received {
            Some(at) => {
                let latency = at.duration_since(accepted_at);
                latencies_ms.push(latency.as_secs_f64() * 1000.0);
            }
            None => missed_updates += 1,
        }
        tokio::time::sleep(UPDATE_SPACING).await;
    }
    world.wait_quiet(Duration::from_secs(60), false).await?;
    let after = world.counters().await?;
    let pushes = latencies_ms.len().max(1) as f64;
    let reads_per_push = (after.secret_reads - before.secret_reads) / pushes;
    let status_writes_per_push = (after.status_patches - before.status_patches) / pushes;

    // 3. Steady state.
    eprintln!("bench: steady state for {} s", params.steady.as_secs());
    let watch_connections = Scrape::take(&world.client).await?.watches() - baseline_watches;
    let before = world.counters().await?;
    let since = before.baseten_requests;
    let cpu_before = world.usage().cpu_seconds;
    tokio::time::sleep(params.steady).await;
    let steady = world.activity_since(before, since).await?;
    let at_rest = world.usage();
    let steady_cpu_seconds = at_rest.cpu_seconds - cpu_before;

    // 4. Restart.
    eprintln!("bench: restarting the operator");
    let first = world.usage();
    world.stop_operator();
    let before = world.counters().await?;
    let since = before.baseten_requests;
    let started = world.start_operator(params).await?;
    let idle_at = world.wait_quiet(Duration::from_secs(600), true).await?;
    let restart_to_idle_seconds = idle_at.duration_since(started).as_secs_f64();
    let restart = world.activity_since(before, since).await?;
    let second = world.usage();

    // Every resource still Ready, and Baseten holds every Secret's current value.
    let stored: HashMap<String, String> = world
        .baseten_secrets()
        .await?
        .into_iter()
        .map(|s| (s.name, s.value))
        .collect();
    let list = resources.list(&Default::default()).await?;
    let all_ready = list.items.len() == params.n
        && list
            .items
            .iter()
            .all(|o| o.ready_condition().is_some_and(|c| c.reason == "Synced"));
    let correct_values = if all_ready {
        (0..params.n)
            .filter(|i| stored.get(&resource_name(*i)) == Some(&values[*i]))
            .count()
    } else {
        0
    };
    let throttled = world
        .baseten_requests(0)
        .await?
        .iter()
        .filter(|r| r.status == 429)
        .count();

    // 5. Every resource deleted: what the operator kept for them must go.
    eprintln!("bench: deleting every BasetenSecret");
    resources
        .delete_collection(&Default::default(), &Default::default())
        .await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while !resources.list(&Default::default()).await?.items.is_empty() {
        if Instant::now() > deadline {
            bail!("the BasetenSecrets were not deleted within 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    world.wait_quiet(Duration::from_secs(60), false).await?;
    // jemalloc hands freed pages back to the system after its 10 s decay.
    tokio::time::sleep(RELEASE_WAIT).await;
    let deleted_rss = world.usage().rss;

    // 6. BasetenSecretSets: the same N names through one resource.
    let requests = |since| -> futures::future::BoxFuture<'_, Result<Vec<AdminRequest>>> {
        Box::pin(world.baseten_requests(since))
    };
    let rss = || world.usage().rss;
    let reach = crate::sets::Reach {
        client: &world.client,
        namespace: NAMESPACE,
        requests: &requests,
        rss: &rss,
        secrets: (0..params.n).map(resource_name).collect(),
    };
    let sets = crate::sets::run(&reach, params.n, (params.updates / 10).clamp(5, 20)).await?;
    world.stop_operator();

    Ok(Figures {
        convergence_seconds,
        creation_seconds,
        throttled,
        curve,
        correct_values,
        latencies_ms,
        round_trips_ms,
        missed_updates,
        reads_per_push,
        status_writes_per_push,
        watch_connections,
        steady,
        steady_cpu_seconds,
        restart,
        restart_to_idle_seconds,
        first,
        second,
        idle_rss: at_rest.rss,
        empty_rss,
        deleted_rss,
        sets,
    })
}
