//! A real, local Kubernetes control plane for tests and demos.
//!
//! [`ControlPlane::start`] runs etcd and kube-apiserver (built from upstream sources by
//! `tests/controlplane/build.sh`) on free loopback ports, with a fresh CA, serving
//! certificate, service-account signing key, RBAC authorization and an admin kubeconfig, all
//! in a temporary directory. Every process runs under a small watchdog that stops it when the
//! process that started it goes away, so a panicking or killed test run leaves nothing behind.
//!
//! [`shared`] gives each test binary one environment: the local control plane (with an audit
//! log of Secret reads), or with `USE_EXISTING_CLUSTER=1` the cluster of the current
//! kubeconfig context.

mod certs;
pub use certs::{TestTls, test_tls};
pub mod cluster;
mod process;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kube::config::{KubeConfigOptions, Kubeconfig};

pub use process::Supervised;

/// How long the control plane may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// How often [`shared`] tries to start the control plane before giving up.
pub const START_ATTEMPTS: u32 = 3;

/// Namespace-free name of the admin user in the generated kubeconfig.
pub const ADMIN_USER: &str = "testenv-admin";

/// The workspace root, for locating the control-plane build script and cache.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where the control-plane binaries live: `CONTROLPLANE_BIN_DIR`, else `target/controlplane/bin`.
pub fn bin_dir() -> PathBuf {
    std::env::var_os("CONTROLPLANE_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/controlplane/bin"))
}

/// Builds the control-plane binaries when they are missing (a cold build takes minutes).
pub fn ensure_binaries() -> Result<PathBuf> {
    let dir = bin_dir();
    let present = ["etcd", "kube-apiserver"]
        .iter()
        .all(|name| dir.join(name).is_file());
    if !present {
        let script = workspace_root().join("tests/controlplane/build.sh");
        eprintln!(
            "testenv: control-plane binaries missing in {}; building them",
            dir.display()
        );
        let status = std::process::Command::new("bash")
            .arg(&script)
            .arg(&dir)
            .status()
            .with_context(|| format!("running {}", script.display()))?;
        if !status.success() {
            bail!("{} failed with {status}", script.display());
        }
    }
    Ok(dir)
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A running etcd + kube-apiserver. Stops both (and deletes their data) when dropped.
pub struct ControlPlane {
    root: PathBuf,
    kubeconfig: PathBuf,
    server: String,
    // Dropped in order: the apiserver stops before etcd.
    apiserver: std::sync::Mutex<Option<Supervised>>,
    /// How the apiserver was started, to start it again.
    apiserver_command: (PathBuf, Vec<String>, &'static str),
    etcd: Option<Supervised>,
    controller_manager: Option<Supervised>,
    audit_log: Option<PathBuf>,
    started_in: Duration,
}

/// Environment variable set on every process testenv starts, naming who started it, so that
/// a check can find processes a test run left behind (`make test` does).
pub const SESSION_ENV: &str = "TESTENV_SESSION";

/// What to start besides etcd and kube-apiserver.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Also run kube-controller-manager with the namespace and garbage-collector controllers,
    /// so that deleted namespaces go away and owner references are honoured.
    pub controller_manager: bool,
    /// Value of [`SESSION_ENV`] for the started processes: "test" or "dev".
    pub session: &'static str,
    /// Write an audit log of every get and list of Secrets, responses included, and of the
    /// writes of the operator's resources ([`ControlPlane::audit_log`]), so tests can see
    /// what was read and written.
    pub audit: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            controller_manager: false,
            session: "test",
            audit: false,
        }
    }
}

/// The audit policy of [`Options::audit`]: reads of Secrets with their responses, writes
/// of the operator's resources (who wrote what, without bodies), and nothing else, so the
/// log stays small and costs other requests nothing.
const AUDIT_POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
omitManagedFields: true
rules:
  - level: RequestResponse
    verbs: ["get", "list"]
    resources:
      - group: ""
        resources: ["secrets"]
  - level: Metadata
    verbs: ["create", "update", "patch", "delete"]
    resources:
      - group: "baseten.co"
        resources: ["basetensecrets", "basetensecrets/status", "basetensecretsets", "basetensecretsets/status"]
  - level: None
"#;

impl ControlPlane {
    /// Starts etcd and kube-apiserver and waits until the apiserver is ready.
    pub async fn start(options: Options) -> Result<Self> {
        let begun = Instant::now();
        let bin = ensure_binaries()?;
        let root = tempfile::Builder::new()
            .prefix("testenv-")
            .tempdir()
            .context("creating the control plane's temporary directory")?
            .keep();
        let pki = certs::write(&root)?;

        let etcd_port = free_port()?;
        let peer_port = free_port()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let session = [(SESSION_ENV, options.session)];
        let etcd = Supervised::spawn_with_env(
            &bin.join("etcd"),
            &[
                "--name=testenv".into(),
                format!("--data-dir={}", root.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=testenv={peer_url}"),
                "--unsafe-no-fsync=true".into(),
                // Benchmarks store tens of thousands of 64 KiB Secrets; the default 2 GiB
                // quota would turn etcd read-only part-way.
                "--quota-backend-bytes=8589934592".into(),
                "--log-level=warn".into(),
            ],
            &session,
            &root.join("etcd.log"),
            Some(&root),
        )?;

        let port = free_port()?;
        let server = format!("https://127.0.0.1:{port}");
        let mut apiserver_args = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--secure-port={port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            // The kubernetes Service endpoint may not be a loopback address; none is needed.
            "--endpoint-reconciler-type=none".into(),
            format!("--cert-dir={}", root.join("apiserver-certs").display()),
            format!("--tls-cert-file={}", pki.serving_cert.display()),
            format!("--tls-private-key-file={}", pki.serving_key.display()),
            format!("--client-ca-file={}", pki.ca_cert.display()),
            format!("--token-auth-file={}", pki.token_file.display()),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", pki.sa_public_key.display()),
            format!(
                "--service-account-signing-key-file={}",
                pki.sa_key.display()
            ),
            "--authorization-mode=RBAC".into(),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--disable-admission-plugins=ServiceAccount".into(),
            "--allow-privileged=true".into(),
            "--profiling=false".into(),
            "--v=0".into(),
        ];
        let audit_log = options.audit.then(|| root.join("audit.log"));
        if let Some(audit_log) = &audit_log {
            let policy = root.join("audit-policy.yaml");
            std::fs::write(&policy, AUDIT_POLICY)?;
            apiserver_args.extend([
                format!("--audit-policy-file={}", policy.display()),
                format!("--audit-log-path={}", audit_log.display()),
                "--audit-log-format=json".into(),
            ]);
        }
        let apiserver = Supervised::spawn_with_env(
            &bin.join("kube-apiserver"),
            &apiserver_args,
            &session,
            &root.join("kube-apiserver.log"),
            None,
        )?;

        let kubeconfig = root.join("kubeconfig");
        std::fs::write(&kubeconfig, certs::kubeconfig(&server, &pki)?)?;

        let mut plane = Self {
            root,
            kubeconfig,
            server,
            apiserver: std::sync::Mutex::new(Some(apiserver)),
            apiserver_command: (bin.join("kube-apiserver"), apiserver_args, options.session),
            etcd: Some(etcd),
            controller_manager: None,
            audit_log,
            started_in: Duration::ZERO,
        };
        plane.wait_ready().await?;
        if options.controller_manager {
            plane.start_controller_manager(&bin, options.session)?;
        }
        plane.started_in = begun.elapsed();
        Ok(plane)
    }

    fn start_controller_manager(&mut self, bin: &Path, session: &str) -> Result<()> {
        let manager = Supervised::spawn_with_env(
            &bin.join("kube-controller-manager"),
            &[
                format!("--kubeconfig={}", self.kubeconfig.display()),
                "--controllers=namespace,garbagecollector".into(),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                "--secure-port=0".into(),
                "--use-service-account-credentials=false".into(),
                "--v=0".into(),
            ],
            &[(SESSION_ENV, session)],
            &self.root.join("kube-controller-manager.log"),
            None,
        )?;
        self.controller_manager = Some(manager);
        Ok(())
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let client = self.client().await?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let request = http::Request::get("/readyz").body(Vec::new())?;
            match client.request_text(request).await {
                Ok(text) if text.trim() == "ok" => return Ok(()),
                _ if Instant::now() > deadline => {
                    bail!(
                        "kube-apiserver was not ready within {READY_TIMEOUT:?}; its log ends with:\n{}",
                        log_tail(&self.root.join("kube-apiserver.log"))
                    )
                }
                _ => {
                    let apiserver_exited = self
                        .apiserver
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .as_mut()
                        .is_some_and(|p| p.has_exited());
                    let etcd_exited = self.etcd.as_mut().is_some_and(|p| p.has_exited());
                    for (name, exited) in
                        [("etcd", etcd_exited), ("kube-apiserver", apiserver_exited)]
                    {
                        if exited {
                            bail!(
                                "{name} exited during start-up; its log ends with:\n{}",
                                log_tail(&self.root.join(format!("{name}.log")))
                            );
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Stops kube-apiserver (SIGTERM) and starts it again on the same port with the same
    /// data, as an upgrade or a crash of the control plane would; returns once it is ready.
    pub async fn restart_apiserver(&self) -> Result<()> {
        let previous = self
            .apiserver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(previous);
        let (program, args, session) = &self.apiserver_command;
        let apiserver = Supervised::spawn_with_env(
            program,
            args,
            &[(SESSION_ENV, *session)],
            &self.root.join("kube-apiserver.log"),
            None,
        )?;
        *self.apiserver.lock().unwrap_or_else(|p| p.into_inner()) = Some(apiserver);
        let client = self.client().await?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let request = http::Request::get("/readyz").body(Vec::new())?;
            if let Ok(text) = client.request_text(request).await
                && text.trim() == "ok"
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("kube-apiserver was not ready again within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Path of the admin kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The apiserver URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The audit log of Secret reads (JSON lines), when started with [`Options::audit`].
    pub fn audit_log(&self) -> Option<&Path> {
        self.audit_log.as_deref()
    }

    /// How long start-up took, binaries already built.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// A client with admin rights, bound to the calling tokio runtime.
    pub async fn client(&self) -> Result<kube::Client> {
        client_from(Some(&self.kubeconfig)).await
    }

    /// Stops every process and deletes the data directory.
    pub fn stop(&mut self) {
        drop(self.controller_manager.take());
        drop(
            self.apiserver
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        drop(self.etcd.take());
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last lines of a log, preferring klog's error and fatal lines (`E…`, `F…`).
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let errors: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with('E') || line.starts_with('F') || line.contains("error"))
        .collect();
    let lines: Vec<&str> = if errors.is_empty() {
        text.lines().collect()
    } else {
        errors
    };
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Builds a client from a kubeconfig file, or from the environment's current context.
pub async fn client_from(kubeconfig: Option<&Path>) -> Result<kube::Client> {
    install_crypto_provider();
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}

/// Installs rustls' ring provider as the process default (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The Kubernetes a test binary runs against.
pub struct Environment {
    local: Option<ControlPlane>,
    kubeconfig: Option<PathBuf>,
}

impl Environment {
    /// Whether the tests run against an existing cluster (`USE_EXISTING_CLUSTER=1`).
    pub fn is_existing_cluster(&self) -> bool {
        self.local.is_none()
    }

    /// The kubeconfig to hand to subprocesses (`None`: the user's own, from the environment).
    pub fn kubeconfig(&self) -> Option<&Path> {
        self.kubeconfig.as_deref()
    }

    /// A client bound to the calling tokio runtime.
    pub async fn client(&self) -> Result<kube::Client> {
        client_from(self.kubeconfig()).await
    }

    /// The audit log of Secret reads: `None` on an existing cluster, whose log is not ours.
    pub fn audit_log(&self) -> Option<&Path> {
        self.local.as_ref().and_then(ControlPlane::audit_log)
    }

    /// The local control plane, when one was started.
    pub fn control_plane(&self) -> Option<&ControlPlane> {
        self.local.as_ref()
    }
}

/// Whether `USE_EXISTING_CLUSTER` asks for the current kubeconfig context.
pub fn use_existing_cluster() -> bool {
    matches!(
        std::env::var("USE_EXISTING_CLUSTER").as_deref(),
        Ok("1") | Ok("true") | Ok("yes")
    )
}

/// The one environment of this test binary, started on first use. Its processes stop when the
/// test binary exits (the watchdog sees the parent go).
pub fn shared() -> &'static Environment {
    static SHARED: OnceLock<Environment> = OnceLock::new();
    SHARED.get_or_init(|| {
        // Start on a thread of its own: the caller may already be inside a tokio runtime.
        std::thread::spawn(|| {
            if use_existing_cluster() {
                return Environment {
                    local: None,
                    kubeconfig: None,
                };
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            // Free ports are found by binding and releasing them; another process can take
            // one in between, so a failed start is tried again on fresh ports.
            let mut attempt = 1;
            let plane = loop {
                // Tests may look at which Secrets were read, and how.
                let options = Options {
                    audit: true,
                    ..Options::default()
                };
                match runtime.block_on(ControlPlane::start(options)) {
                    Ok(plane) => break plane,
                    Err(error) if attempt < START_ATTEMPTS => {
                        eprintln!("testenv: start attempt {attempt} failed, retrying: {error:#}");
                        attempt += 1;
                    }
                    Err(error) => panic!("starting the local control plane: {error:#}"),
                }
            };
            eprintln!(
                "testenv: control plane ready at {} in {:.1}s",
                plane.server(),
                plane.started_in().as_secs_f64()
            );
            Environment {
                kubeconfig: Some(plane.kubeconfig().to_path_buf()),
                local: Some(plane),
            }
        })
        .join()
        .expect("control plane start-up thread")
    })
}
