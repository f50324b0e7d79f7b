//! A harness for one operator test: its own namespace, its own Baseten emulator, and the real
//! operator binary running as a process against the shared control plane.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use baseten_emulator::{AdminRequest, AdminSecret};
use baseten_secrets_operator::{BasetenSecret, BasetenSecretSet};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, CustomResourceExt};
use serde_json::{Value, json};
use testenv::Supervised;

/// The API key the emulator accepts in these tests.
pub const API_KEY: &str = "test-key-5f2c9d7e1a";

/// Another organisation's API key the emulator accepts (a tenant's own workspace).
pub const TENANT_KEY: &str = "tenant-key-8c41e02b93";

/// The emulator's labels of the two organisations.
pub const OPERATOR_ORG: &str = "key-1";
pub const TENANT_ORG: &str = "key-2";

/// A team the emulator has besides the default team.
pub const OTHER_TEAM: &str = "ML Platform";

/// How long waits for the operator may take before a test fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// What the operator logs (at debug level) when a reconcile starts and when it ends.
const RECONCILE_STARTED: &str = "reconcile started";
const RECONCILE_FINISHED: &str = "reconcile finished";

/// Field manager of the tests' own applies (a stand-in for a GitOps tool).
const TEST_MANAGER: &str = "integration-test";

/// Installs the CRDs generated from the Rust types and waits until they are Established.
pub async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [BasetenSecret::crd(), BasetenSecretSet::crd()] {
        let name = crd.metadata.name.clone().unwrap();
        crds.patch(
            &name,
            &PatchParams::apply(TEST_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("apply CRD");
        tokio::time::timeout(
            WAIT,
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .expect("CRD established in time")
        .unwrap();
    }
}

/// The prefix of every metric the operator serves.
const METRIC_PREFIX: &str = "baseten_secrets_operator_";

/// The value of one series (`name{labels}`, prefix included) in a /metrics text, if present.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Points the kubeconfig at `path` to a relay in front of its server, keeping the server's
/// name for TLS; returns the relay.
async fn relay_kubeconfig(path: &std::path::Path) -> super::proxy::DeadConnectionProxy {
    let mut kubeconfig: kube::config::Kubeconfig =
        serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cluster = kubeconfig.clusters[0].cluster.as_mut().unwrap();
    let server = cluster.server.as_deref().unwrap();
    let authority = server
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap();
    let (host, upstream) = match authority.rsplit_once(':') {
        Some((host, _)) if !host.ends_with(':') => (host, authority.to_string()),
        _ => (authority, format!("{authority}:443")),
    };
    let host = host.trim_matches(['[', ']']).to_string();
    let proxy = super::proxy::DeadConnectionProxy::start(upstream).await;
    if host.parse::<std::net::IpAddr>().is_err() {
        cluster.tls_server_name = Some(host);
    }
    cluster.server = Some(format!("https://{}", proxy.addr));
    std::fs::write(path, serde_yaml_ng::to_string(&kubeconfig).unwrap()).unwrap();
    proxy
}

/// Namespace of the operator's ServiceAccount, as in deploy/base.
const OPERATOR_NAMESPACE: &str = "baseten-secrets-operator";

/// Gives the operator exactly the RBAC of `deploy/base/rbac.yaml` (ServiceAccount,
/// ClusterRole, ClusterRoleBinding) and writes a kubeconfig that authenticates as that
/// ServiceAccount, so every test proves the shipped permissions are enough.
pub async fn least_privilege_kubeconfig(client: &Client, path: &std::path::Path) {
    testenv::cluster::ensure_namespace(client, OPERATOR_NAMESPACE)
        .await
        .unwrap();
    testenv::cluster::apply_yaml(
        client,
        include_str!("../../deploy/base/rbac.yaml"),
        OPERATOR_NAMESPACE,
    )
    .await
    .unwrap();
    let token = super::service_account_token(client, OPERATOR_NAMESPACE, OPERATOR_NAMESPACE).await;
    let kubeconfig = super::kubeconfig_with_token(&token);
    std::fs::write(path, serde_yaml_ng::to_string(&kubeconfig).unwrap()).unwrap();
}

/// Options for the operator process.
pub struct OperatorOptions {
    /// The API key the operator uses.
    pub api_key: String,
    /// RUST_LOG for the operator.
    pub rust_log: String,
    /// --log-format for the operator.
    pub log_format: &'static str,
    /// Pass the API key in a file (--api-key-file) instead of the environment.
    pub key_file: bool,
    /// --secret-label-selector, when set.
    pub secret_label_selector: Option<String>,
    /// The emulator serves HTTPS with a certificate of a fresh test CA.
    pub tls: bool,
    /// The operator trusts that CA (--baseten-ca-file).
    pub trust_test_ca: bool,
    /// --baseten-timeout-seconds, when set.
    pub baseten_timeout_seconds: Option<u64>,
    /// The emulator's requests per second per key and endpoint, when not Baseten's 100.
    pub emulator_rate_limit: Option<u32>,
    /// A Baseten URL to use instead of the emulator's.
    pub baseten_url: Option<String>,
    /// Run the operator as an installed overlay runs it instead of with the test's own
    /// namespace and deploy/base's RBAC.
    pub deployed: Option<Deployed>,
    /// Start the harness's operator process at once (else call `start_operator` or `spawn`).
    pub start: bool,
    /// The operator reaches the apiserver through a relay whose connections the test can
    /// make go dead ([`Harness::kill_kube_connections`]).
    pub kube_proxy: bool,
    /// --kube-timeout-seconds, when set.
    pub kube_timeout_seconds: Option<u64>,
    /// The program (and its first arguments) to run instead of this build's operator
    /// binary: the image's binary, say, under `chroot`.
    pub command: Option<Vec<String>>,
}

/// How an overlay runs the operator: its Deployment's arguments and its ServiceAccount.
#[derive(Clone)]
pub struct Deployed {
    /// The container's arguments, without --api-key-file (the harness mounts its own).
    pub args: Vec<String>,
    /// A kubeconfig authenticating as the overlay's ServiceAccount.
    pub kubeconfig: PathBuf,
    /// The namespace the Downward API would give (POD_NAMESPACE).
    pub pod_namespace: String,
}

/// One operator process started by [`Harness::spawn`], besides the harness's own.
pub struct Process {
    /// The process.
    pub process: Supervised,
    /// Its log.
    pub log: PathBuf,
}

impl Process {
    /// Everything it logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The address of its HTTP listener, once logged.
    pub async fn http_addr(&self) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(addr) = logged_http_addr(&self.logs()) {
                return addr;
            }
            assert!(
                Instant::now() < deadline,
                "no HTTP listener logged:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// GETs `path` from its HTTP listener: (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = reqwest::Client::new()
            .get(format!("http://{}{path}", self.http_addr().await))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// The value of an unlabelled metric (without the prefix), from /metrics.
    pub async fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics").await;
        metric(&text, &format!("{METRIC_PREFIX}{name}"))
            .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
    }
}

/// The address in the operator's "serving /livez, /readyz and /metrics" line (text or JSON).
fn logged_http_addr(log: &str) -> Option<String> {
    log.lines()
        .find(|l| l.contains("serving /livez, /readyz and /metrics"))
        .and_then(|l| {
            let at = l
                .find("addr=")
                .map(|i| i + 5)
                .or_else(|| l.find("\"addr\":\"").map(|i| i + 8))?;
            let rest = &l[at..];
            let end = rest
                .find(|c: char| c.is_whitespace() || c == '"')
                .unwrap_or(rest.len());
            Some(rest[..end].to_string())
        })
}

impl Default for OperatorOptions {
    fn default() -> Self {
        Self {
            api_key: API_KEY.into(),
            rust_log: "info,baseten_secrets_operator=debug".into(),
            log_format: "text",
            key_file: false,
            secret_label_selector: None,
            tls: false,
            trust_test_ca: false,
            baseten_timeout_seconds: None,
            emulator_rate_limit: None,
            baseten_url: None,
            deployed: None,
            start: true,
            kube_proxy: false,
            kube_timeout_seconds: None,
            command: None,
        }
    }
}

/// One test's world.
pub struct Harness {
    pub client: Client,
    pub ns: String,
    pub emulator: baseten_emulator::Running,
    http: reqwest::Client,
    operator: Option<Supervised>,
    pub options: OperatorOptions,
    dir: tempfile::TempDir,
    starts: u32,
    /// The relay between the operator and the apiserver (with `kube_proxy`).
    proxy: Option<super::proxy::DeadConnectionProxy>,
    /// How long each wait may take before the test fails ([`WAIT`] unless changed).
    pub wait: Duration,
}

impl Harness {
    /// A namespace, an emulator and a running operator watching that namespace.
    pub async fn start(prefix: &str) -> Self {
        Self::start_with(prefix, OperatorOptions::default()).await
    }

    /// Like [`Harness::start`] with operator options.
    pub async fn start_with(prefix: &str, options: OperatorOptions) -> Self {
        let client = super::client().await;
        install_crd(&client).await;
        let ns = super::namespace(&client, prefix).await;
        let config = baseten_emulator::Config {
            api_keys: vec![API_KEY.into(), TENANT_KEY.into()],
            teams: vec![OTHER_TEAM.into()],
            rate_limit_per_second: options
                .emulator_rate_limit
                .unwrap_or(baseten_emulator::DEFAULT_RATE_LIMIT_PER_SECOND),
        };
        let dir = tempfile::tempdir().unwrap();
        let listen = "127.0.0.1:0".parse().unwrap();
        let mut http = reqwest::Client::builder();
        let emulator = if options.tls {
            let tls = testenv::test_tls("baseten-emulator").unwrap();
            std::fs::write(dir.path().join("ca.pem"), &tls.ca_pem).unwrap();
            http = http
                .tls_certs_merge([reqwest::Certificate::from_pem(tls.ca_pem.as_bytes()).unwrap()]);
            baseten_emulator::spawn_tls(listen, config, &tls.cert_pem, &tls.key_pem)
                .await
                .unwrap()
        } else {
            baseten_emulator::spawn(listen, config).await.unwrap()
        };
        let kubeconfig = dir.path().join("operator.kubeconfig");
        if options.deployed.is_none() {
            least_privilege_kubeconfig(&client, &kubeconfig).await;
        }
        let proxy = if options.kube_proxy {
            assert!(
                options.deployed.is_none(),
                "a relay for the harness's own kubeconfig only"
            );
            Some(relay_kubeconfig(&kubeconfig).await)
        } else {
            None
        };
        let mut harness = Self {
            client,
            ns,
            emulator,
            http: http.build().unwrap(),
            operator: None,
            options,
            dir,
            starts: 0,
            proxy,
            wait: WAIT,
        };
        if harness.options.start {
            harness.start_operator();
        }
        harness
    }

    /// Starts (or restarts) the operator process.
    pub fn start_operator(&mut self) {
        self.stop_operator();
        self.starts += 1;
        let log = self.log_path(self.starts);
        self.operator = Some(self.spawn_at(&log, None));
    }

    /// Starts one more operator process with pod name `pod_name` (for leader election).
    pub fn spawn(&mut self, pod_name: &str) -> Process {
        let log = self.dir.path().join(format!("{pod_name}.log"));
        Process {
            process: self.spawn_at(&log, Some(pod_name)),
            log,
        }
    }

    fn spawn_at(&self, log: &std::path::Path, pod_name: Option<&str>) -> Supervised {
        let mut env: Vec<(&str, &str)> = vec![
            ("RUST_LOG", &self.options.rust_log),
            (testenv::SESSION_ENV, "test"),
        ];
        let baseten_url = self
            .options
            .baseten_url
            .clone()
            .unwrap_or_else(|| self.emulator.url());
        let mut args = match &self.options.deployed {
            Some(deployed) => {
                env.push(("POD_NAMESPACE", &deployed.pod_namespace));
                deployed.args.clone()
            }
            None => vec![
                format!("--watch-namespace={}", self.ns),
                "--concurrency=4".into(),
            ],
        };
        args.extend([
            format!("--baseten-url={baseten_url}"),
            format!("--log-format={}", self.options.log_format),
            // Tests run side by side: each operator listens on a free port.
            "--http-addr=127.0.0.1:0".into(),
        ]);
        if let Some(pod_name) = pod_name {
            env.push(("POD_NAME", pod_name));
        }
        if self.options.trust_test_ca {
            args.push(format!(
                "--baseten-ca-file={}",
                self.dir.path().join("ca.pem").display()
            ));
        }
        if let Some(seconds) = self.options.kube_timeout_seconds {
            args.push(format!("--kube-timeout-seconds={seconds}"));
        }
        if let Some(seconds) = self.options.baseten_timeout_seconds {
            args.push(format!("--baseten-timeout-seconds={seconds}"));
        }
        if let Some(selector) = &self.options.secret_label_selector {
            args.push(format!("--secret-label-selector={selector}"));
        }
        if self.options.key_file || self.options.deployed.is_some() {
            if !self.key_file_path().exists() {
                self.write_key_file(&self.options.api_key);
            }
            args.push(format!("--api-key-file={}", self.key_file_path().display()));
        } else {
            env.push(("BASETEN_API_KEY", &self.options.api_key));
        }
        let kubeconfig = match &self.options.deployed {
            Some(deployed) => deployed.kubeconfig.display().to_string(),
            None => self
                .dir
                .path()
                .join("operator.kubeconfig")
                .display()
                .to_string(),
        };
        env.push(("KUBECONFIG", &kubeconfig));
        let (program, args) = match &self.options.command {
            Some(command) => (PathBuf::from(&command[0]), [&command[1..], &args].concat()),
            None => (
                PathBuf::from(env!("CARGO_BIN_EXE_baseten-secrets-operator")),
                args,
            ),
        };
        Supervised::spawn_with_env(&program, &args, &env, log, None).expect("start operator")
    }

    /// The folder of this test's files: the operator's kubeconfig, key file and CA.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    fn key_file_path(&self) -> PathBuf {
        self.dir.path().join("api-key")
    }

    /// Writes the operator's API key file (with `key_file`), replacing it atomically as a
    /// mounted Secret is.
    pub fn write_key_file(&self, key: &str) {
        let staged = self.dir.path().join("api-key.new");
        std::fs::write(&staged, format!("{key}\n")).unwrap();
        std::fs::rename(&staged, self.key_file_path()).unwrap();
    }

    /// The address of the running operator's metrics and health listener, from its log.
    pub async fn http_addr(&self) -> String {
        self.poll_until("the operator's HTTP listener", async || {
            let log = std::fs::read_to_string(self.log_path(self.starts)).unwrap_or_default();
            (logged_http_addr(&log), "no listener logged yet".to_string())
        })
        .await
    }

    /// GETs `path` from the operator's HTTP listener: (status, body).
    pub async fn operator_get(&self, path: &str) -> (u16, String) {
        let response = reqwest::Client::new()
            .get(format!("http://{}{path}", self.http_addr().await))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// One series of the operator's /metrics: its name without the prefix, with its labels
    /// (`resources{reason="Synced"}`); `None` when it is not there.
    pub async fn operator_metric(&self, series: &str) -> Option<f64> {
        let (_, text) = self.operator_get("/metrics").await;
        metric(&text, &format!("{METRIC_PREFIX}{series}"))
    }

    /// Every connection the operator holds to the apiserver now goes dead: no bytes pass,
    /// nothing closes (needs `kube_proxy`).
    pub fn kill_kube_connections(&self) {
        self.proxy
            .as_ref()
            .expect("started with kube_proxy")
            .kill_open_connections();
    }

    /// Whether the operator process is still running.
    pub fn operator_running(&mut self) -> bool {
        self.operator.as_mut().is_some_and(|o| !o.has_exited())
    }

    /// Kills the operator process with SIGKILL: no graceful shutdown.
    pub fn kill_operator(&mut self) {
        if let Some(mut operator) = self.operator.take() {
            operator.kill_child();
        }
    }

    /// Sends SIGTERM to the operator process itself and waits up to `limit`: its exit
    /// status (`None` if still running) and how long it took.
    pub fn terminate_operator(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let started = Instant::now();
        let code = self
            .operator
            .as_mut()
            .and_then(|o| o.terminate_child(limit));
        (code, started.elapsed())
    }

    /// Stops the operator process (SIGTERM), waiting for it to exit.
    pub fn stop_operator(&mut self) {
        if let Some(mut operator) = self.operator.take() {
            operator.stop();
        }
    }

    fn log_path(&self, start: u32) -> PathBuf {
        self.dir.path().join(format!("operator-{start}.log"))
    }

    /// Everything every operator process of this test has logged so far.
    pub fn operator_logs(&self) -> String {
        (1..=self.starts)
            .map(|i| std::fs::read_to_string(self.log_path(i)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Applies a Secret with server-side apply, as a GitOps tool would.
    pub async fn apply_secret(&self, name: &str, data: &[(&str, &[u8])], labels: Value) {
        use base64::Engine;
        let data: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    Value::String(base64::engine::general_purpose::STANDARD.encode(v)),
                )
            })
            .collect();
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "labels": labels},
            "data": data,
        });
        Api::<Secret>::namespaced(self.client.clone(), &self.ns)
            .patch(
                name,
                &PatchParams::apply(TEST_MANAGER).force(),
                &Patch::Apply(&secret),
            )
            .await
            .expect("apply Secret");
    }

    /// Applies a BasetenSecret with server-side apply.
    pub async fn apply_bts(
        &self,
        name: &str,
        spec: Value,
        annotations: Value,
    ) -> kube::Result<BasetenSecret> {
        let object = json!({
            "apiVersion": "baseten.co/v1alpha1", "kind": "BasetenSecret",
            "metadata": {"name": name, "annotations": annotations},
            "spec": spec,
        });
        self.bts_api()
            .patch(
                name,
                &PatchParams::apply(TEST_MANAGER).force(),
                &Patch::Apply(&object),
            )
            .await
    }

    /// The BasetenSecret API of this test's namespace.
    pub fn bts_api(&self) -> Api<BasetenSecret> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// The BasetenSecretSet API of this test's namespace.
    pub fn sets_api(&self) -> Api<BasetenSecretSet> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Server-side applies BasetenSecretSet `name` with `spec`, as a user would.
    pub async fn apply_set(&self, name: &str, spec: Value) -> kube::Result<BasetenSecretSet> {
        let object = json!({
            "apiVersion": "baseten.co/v1alpha1", "kind": "BasetenSecretSet",
            "metadata": {"name": name}, "spec": spec,
        });
        self.sets_api()
            .patch(
                name,
                &PatchParams::apply(TEST_MANAGER).force(),
                &Patch::Apply(&object),
            )
            .await
    }

    /// Polls the BasetenSecretSet until `check` holds.
    pub async fn wait_set(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&BasetenSecretSet) -> bool,
    ) -> BasetenSecretSet {
        self.poll_until(&format!("{what} on set {}/{name}", self.ns), async || {
            let current = self.sets_api().get_opt(name).await.unwrap();
            let state = format!("{:?}", current.as_ref().and_then(|o| o.status.as_ref()));
            (current.filter(|o| check(o)), state)
        })
        .await
    }

    /// Waits until BasetenSecretSet `name` no longer exists.
    pub async fn wait_no_set(&self, name: &str) {
        self.poll_until(&format!("set {name} to be gone"), async || {
            let current = self.sets_api().get_opt(name).await.unwrap();
            let state = format!("{:?}", current.as_ref().map(|o| &o.metadata.finalizers));
            (current.is_none().then_some(()), state)
        })
        .await
    }

    /// Waits until the set's Ready reason is `reason`, for its current generation.
    pub async fn wait_set_reason(&self, name: &str, reason: &str) -> BasetenSecretSet {
        self.wait_set(name, &format!("Ready reason {reason}"), |o| {
            let status = o.status.as_ref();
            o.ready_condition().is_some_and(|c| c.reason == reason)
                && status.and_then(|s| s.observed_generation) == o.metadata.generation
        })
        .await
    }

    /// Probes every 20 ms until the probe finds something; panics after `wait` with the
    /// last state the probe described and the operator's logs.
    async fn poll_until<T>(
        &self,
        what: &str,
        mut probe: impl AsyncFnMut() -> (Option<T>, String),
    ) -> T {
        let deadline = Instant::now() + self.wait;
        loop {
            let (found, state) = probe().await;
            if let Some(found) = found {
                return found;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; last state: {state}\noperator logs:\n{}",
                    self.operator_logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls the BasetenSecret until `check` holds.
    pub async fn wait_bts(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&BasetenSecret) -> bool,
    ) -> BasetenSecret {
        self.poll_until(&format!("{what} on {}/{name}", self.ns), async || {
            let current = self.bts_api().get_opt(name).await.unwrap();
            let state = format!("{:?}", current.as_ref().and_then(|o| o.status.as_ref()));
            (current.filter(|o| check(o)), state)
        })
        .await
    }

    /// Applies Secret `secret` holding `key`, and BasetenSecret `name` reading it; waits for
    /// Synced.
    pub async fn synced(&self, name: &str, secret: &str, key: &str, value: &[u8]) -> BasetenSecret {
        self.apply_secret(secret, &[(key, value)], json!({})).await;
        self.apply_bts(
            name,
            json!({"secretRef": {"name": secret, "key": key}}),
            json!({}),
        )
        .await
        .unwrap();
        self.wait_reason(name, "Synced").await
    }

    /// Waits until the Ready condition has `reason` for the current generation.
    pub async fn wait_reason(&self, name: &str, reason: &str) -> BasetenSecret {
        self.wait_bts(name, &format!("Ready reason {reason}"), |object| {
            object.ready_condition().is_some_and(|c| {
                c.reason == reason && c.observed_generation == object.metadata.generation
            })
        })
        .await
    }

    /// Polls until the BasetenSecret no longer exists.
    pub async fn wait_gone(&self, name: &str) {
        self.poll_until(&format!("{}/{name} to be gone", self.ns), async || {
            let current = self.bts_api().get_opt(name).await.unwrap();
            let state = format!(
                "finalizers {:?}, status {:?}",
                current.as_ref().map(|o| o.metadata.finalizers.clone()),
                current.as_ref().and_then(|o| o.status.as_ref())
            );
            (current.is_none().then_some(()), state)
        })
        .await
    }

    /// Upserts a Baseten secret through the public API with the test key, as someone using
    /// Baseten directly would; returns what the emulator then holds.
    pub async fn baseten_upsert(&self, name: &str, value: &str) -> AdminSecret {
        let response = self
            .http
            .post(format!("{}/v1/secrets", self.emulator.url()))
            .header("Authorization", format!("Api-Key {API_KEY}"))
            .json(&json!({"name": name, "value": value}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        self.baseten_secret(name).await.expect("just written")
    }

    /// Deletes a Baseten secret of the default team through the public API, as someone using
    /// Baseten directly would.
    pub async fn baseten_delete(&self, name: &str) {
        let response = self
            .http
            .delete(format!("{}/v1/secrets/{name}", self.emulator.url()))
            .header("Authorization", format!("Api-Key {API_KEY}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    /// What the emulator holds.
    pub async fn baseten_secrets(&self) -> Vec<AdminSecret> {
        self.admin_get("/_admin/secrets").await
    }

    /// The emulator's request log.
    pub async fn baseten_requests(&self) -> Vec<AdminRequest> {
        self.admin_get("/_admin/requests").await
    }

    /// The emulator's record of one secret of the operator's default team, by exact name.
    pub async fn baseten_secret(&self, name: &str) -> Option<AdminSecret> {
        self.baseten_secret_of(OPERATOR_ORG, name).await
    }

    /// The emulator's record of one secret of team `team_name`, by exact name.
    pub async fn baseten_secret_in(&self, team_name: &str, name: &str) -> Option<AdminSecret> {
        self.baseten_secrets()
            .await
            .into_iter()
            .find(|s| s.name == name && s.team_name == team_name && s.api_key_id == OPERATOR_ORG)
    }

    /// The emulator's record of one secret of organisation `org` (default team), by name.
    pub async fn baseten_secret_of(&self, org: &str, name: &str) -> Option<AdminSecret> {
        self.baseten_secrets()
            .await
            .into_iter()
            .find(|s| s.name == name && s.api_key_id == org && s.team_name == "Default Team")
    }

    /// The id of team `team_name` in the emulator.
    pub async fn team_id(&self, team_name: &str) -> String {
        let teams: Value = self
            .http
            .get(format!("{}/v1/teams", self.emulator.url()))
            .header("Authorization", format!("Api-Key {API_KEY}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        teams["teams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == team_name)
            .and_then(|t| t["id"].as_str())
            .expect("team exists")
            .to_string()
    }

    /// Polls the emulator until `check` holds for the named secret.
    pub async fn wait_baseten(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&AdminSecret) -> bool,
    ) -> AdminSecret {
        self.poll_until(&format!("{what} of Baseten secret {name}"), async || {
            let current = self.baseten_secret(name).await;
            let state = format!("{:?}", current.as_ref().map(|s| (&s.name, s.writes)));
            (current.filter(|s| check(s)), state)
        })
        .await
    }

    /// Polls the emulator until `check` holds for the named secret of team `team_name`.
    pub async fn wait_baseten_in(
        &self,
        team_name: &str,
        name: &str,
        what: &str,
        check: impl Fn(&AdminSecret) -> bool,
    ) -> AdminSecret {
        self.poll_until(&format!("{what} of Baseten secret {name}"), async || {
            let current = self.baseten_secret_in(team_name, name).await;
            let state = format!("{:?}", current.as_ref().map(|s| (&s.name, s.writes)));
            (current.filter(|s| check(s)), state)
        })
        .await
    }

    /// Polls the emulator until the operator's default team has no secret `name`.
    pub async fn poll_gone(&self, name: &str) {
        self.poll_until(
            &format!("Baseten secret {name} to be deleted"),
            async || {
                let current = self.baseten_secret(name).await;
                (current.is_none().then_some(()), "still there".to_string())
            },
        )
        .await
    }

    /// Events published about the named BasetenSecret.
    pub async fn events_for(&self, name: &str) -> Vec<k8s_openapi::api::events::v1::Event> {
        Api::<k8s_openapi::api::events::v1::Event>::namespaced(self.client.clone(), &self.ns)
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect()
    }

    /// Waits until at least `count` events about `name` exist; returns their (reason, type)
    /// pairs, sorted. Events are published just after the status write, so a test that has
    /// seen the status must still wait for them.
    pub async fn wait_events(&self, name: &str, count: usize) -> Vec<(String, String)> {
        self.poll_until(&format!("{count} events about {name}"), async || {
            let mut reasons: Vec<(String, String)> = self
                .events_for(name)
                .await
                .into_iter()
                .map(|e| (e.reason.unwrap_or_default(), e.type_.unwrap_or_default()))
                .collect();
            reasons.sort();
            let state = format!("{reasons:?}");
            ((reasons.len() >= count).then_some(reasons), state)
        })
        .await
    }

    /// Injects a fault into the emulator.
    pub async fn fault(&self, fault: Value) {
        let response = self
            .http
            .post(format!("{}/_admin/faults", self.emulator.url()))
            .json(&fault)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }

    /// Removes every fault of the emulator.
    pub async fn clear_faults(&self) {
        self.http
            .delete(format!("{}/_admin/faults", self.emulator.url()))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
    }

    /// Upserts counted by the emulator (POST requests answered, any status), the barrier's
    /// canaries left out.
    pub async fn upsert_requests(&self) -> usize {
        self.baseten_requests()
            .await
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/secrets"))
            .filter(|r| r.name.as_deref().is_none_or(|n| !n.starts_with("canary-")))
            .count()
    }

    /// Proves the operator has handled every event up to now. A fresh canary BasetenSecret
    /// (and its Secret) must reach Synced, and a change of that Secret must reach Baseten:
    /// every earlier event of either watch was delivered and queued before the canary's. Then every reconcile the running operator started must have
    /// finished (it logs both ends at debug level), so a reconcile of an earlier event that
    /// is slower than the canary's is waited for, not raced.
    pub async fn barrier(&self) {
        let canary = format!("canary-{}", rand::random::<u32>() % 1_000_000);
        self.synced(&canary, &canary, "v", b"canary").await;
        // The canary's Secret changing in Baseten proves the Secret watch, too, has delivered
        // every earlier event, not only the resource watch.
        self.apply_secret(&canary, &[("v", b"canary, changed")], json!({}))
            .await;
        self.wait_baseten(&canary, "the canary's change", |s| {
            s.value == "canary, changed"
        })
        .await;
        self.poll_until("every started reconcile to finish", async || {
            let log = std::fs::read_to_string(self.log_path(self.starts)).unwrap_or_default();
            let started = log.matches(RECONCILE_STARTED).count();
            let finished = log.matches(RECONCILE_FINISHED).count();
            (
                (started > 0 && started == finished).then_some(()),
                format!("{started} started, {finished} finished"),
            )
        })
        .await;
    }

    /// How many reconciles of BasetenSecret `name` the operator has started, over all its
    /// runs in this test (text or JSON logs).
    pub fn reconciles_of(&self, name: &str) -> usize {
        self.logged(name, RECONCILE_STARTED)
    }

    /// Waits until the operator's current run logged `message` for object `name`.
    pub async fn poll_until_logged(&self, name: &str, message: &str) {
        let text_span = format!("name={name}}}");
        self.poll_until(&format!("{message:?} logged for {name}"), async || {
            let log = std::fs::read_to_string(self.log_path(self.starts)).unwrap_or_default();
            let found = log
                .lines()
                .any(|line| line.contains(message) && line.contains(&text_span));
            (found.then_some(()), String::new())
        })
        .await
    }

    /// How many times the operator logged `message` in a reconcile of BasetenSecret `name`.
    pub fn logged(&self, name: &str, message: &str) -> usize {
        let text_span = format!("name={name}}}");
        let json_span = format!("\"name\":\"{name}\"");
        self.operator_logs()
            .lines()
            .filter(|line| line.contains(message))
            .filter(|line| line.contains(&text_span) || line.contains(&json_span))
            .count()
    }

    async fn admin_get<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        self.http
            .get(format!("{}{path}", self.emulator.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop_operator();
    }
}
