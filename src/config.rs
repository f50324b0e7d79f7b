//! Command-line flags and environment, parsed and validated once.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use secrecy::SecretString;

use crate::baseten::{DEFAULT_BASE_URL, Transport};
use crate::selector::SecretSelector;

/// Environment variable holding the Baseten API key (used when --api-key-file is not given).
pub const API_KEY_ENV: &str = "BASETEN_API_KEY";

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (for clusters).
    Json,
    /// Human-readable text (for terminals).
    Text,
}

/// Keeps Baseten secrets in sync with Kubernetes Secrets.
///
/// The Baseten API key is read from the file given by --api-key-file, else from the
/// BASETEN_API_KEY environment variable. It is never printed.
#[derive(Parser, Debug)]
#[command(name = "baseten-secrets-operator", version, about, long_about = None)]
pub struct Args {
    /// Base URL of Baseten's management API.
    #[arg(long, env = "BASETEN_URL", default_value = DEFAULT_BASE_URL)]
    pub baseten_url: String,

    /// PEM file of CA certificates to trust for Baseten besides the Mozilla roots compiled into the binary (for example a corporate proxy's).
    #[arg(long, env = "BASETEN_CA_FILE")]
    pub baseten_ca_file: Option<PathBuf>,

    /// Time allowed for one Baseten request, connection included (seconds).
    #[arg(long, env = "BASETEN_TIMEOUT_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub baseten_timeout_seconds: u64,

    /// File holding the Baseten API key (for example a mounted Secret). Overrides BASETEN_API_KEY.
    #[arg(long, env = "BASETEN_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,

    /// Only watch this namespace; all namespaces when absent (kept for compatibility; --watch-namespaces takes a list).
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// Only watch these namespaces (comma-separated); with --watch-namespace, the union. All namespaces when neither is given. The operator then needs Secret access only there (the namespaced overlay's Roles).
    #[arg(long, env = "WATCH_NAMESPACES", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,

    /// Elect one leader among the replicas on a coordination.k8s.io Lease; only the leader watches and writes, the others wait as live, ready standbys.
    #[arg(long, env = "LEADER_ELECT")]
    pub leader_elect: bool,

    /// Namespace of the leader-election Lease (the Deployment sets POD_NAMESPACE from the Downward API).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// Name of the leader-election Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "baseten-secrets-operator")]
    pub lease_name: String,

    /// How long a leader's Lease holds without renewal (seconds): a standby takes over at most this long after the leader dies. The leader renews a third of it before expiry.
    #[arg(long, env = "LEASE_DURATION_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..=300))]
    pub lease_duration_seconds: u64,

    /// Longest silence allowed while waiting for the Kubernetes API to answer a request other than a watch (seconds): the connection is then dropped and the reconcile retried, so a dead connection cannot hold a resource forever.
    #[arg(long, env = "KUBE_TIMEOUT_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub kube_timeout_seconds: u64,

    /// How many BasetenSecrets are reconciled at once.
    #[arg(long, env = "CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,

    /// Only Secrets matching this label selector (such as baseten.co/push=true) are watched and read; a resource naming any other Secret shows SecretNotAllowed. All Secrets when absent.
    #[arg(long, env = "SECRET_LABEL_SELECTOR")]
    pub secret_label_selector: Option<String>,

    /// Address of the HTTP listener serving /metrics, /livez and /readyz (port 0: any free port, logged at start).
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: std::net::SocketAddr,

    /// Log format; json when running in a cluster, text otherwise, unless set.
    #[arg(long, env = "LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

/// Where and how replicas elect their leader.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This process's identity in the Lease (the pod name).
    pub identity: String,
    /// Seconds the Lease holds without renewal.
    pub duration_seconds: u64,
}

/// The validated configuration.
pub struct Config {
    /// Base URL of Baseten's management API, without a trailing slash.
    pub baseten_url: String,
    /// Timeout and extra trusted CAs for Baseten.
    pub transport: Transport,
    /// The Baseten API key.
    pub api_key: SecretString,
    /// The file it was read from, followed for changes; `None` when it came from the
    /// environment.
    pub api_key_file: Option<PathBuf>,
    /// Namespaces to watch, sorted and without repeats; all when empty.
    pub watch_namespaces: Vec<String>,
    /// Leader election, when on.
    pub leader_election: Option<LeaderElection>,
    /// Longest silence on a Kubernetes API request other than a watch.
    pub kube_timeout: std::time::Duration,
    /// Reconciles at once.
    pub concurrency: u16,
    /// Log format.
    pub log_format: LogFormat,
    /// Labels a Secret needs to be read; any Secret when `None`.
    pub secret_selector: Option<SecretSelector>,
    /// Address of the metrics and health listener.
    pub http_addr: std::net::SocketAddr,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("baseten_url", &self.baseten_url)
            .field("request_timeout", &self.transport.request_timeout)
            .field("extra_roots", &self.transport.extra_roots.len())
            .field("api_key", &"[redacted]")
            .field("watch_namespaces", &self.watch_namespaces)
            .field("leader_election", &self.leader_election)
            .field("kube_timeout", &self.kube_timeout)
            .field("concurrency", &self.concurrency)
            .field("log_format", &self.log_format)
            .field(
                "secret_selector",
                &self.secret_selector.as_ref().map(|s| s.text()),
            )
            .finish()
    }
}

impl Config {
    /// Validates the flags and reads the API key.
    pub fn from_args(args: Args) -> anyhow::Result<Self> {
        let Args {
            baseten_url,
            baseten_ca_file,
            baseten_timeout_seconds,
            api_key_file,
            watch_namespace,
            watch_namespaces,
            leader_elect,
            lease_namespace,
            lease_name,
            lease_duration_seconds,
            kube_timeout_seconds,
            concurrency,
            secret_label_selector,
            http_addr,
            log_format,
        } = args;
        let secret_selector = secret_label_selector
            .filter(|s| !s.trim().is_empty())
            .map(|s| SecretSelector::parse(&s))
            .transpose()
            .map_err(|e| anyhow::anyhow!("--secret-label-selector: {e}"))?;
        if !(baseten_url.starts_with("https://") || baseten_url.starts_with("http://")) {
            bail!("--baseten-url must start with https:// or http://");
        }
        let api_key = read_api_key(api_key_file.as_deref())?;
        let namespaces = namespaces(watch_namespace.into_iter().chain(watch_namespaces));
        let leader_election = leader_elect
            .then(|| leader_election(lease_namespace, lease_name, lease_duration_seconds))
            .transpose()?;
        // JSON in a cluster, text on a terminal.
        let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
        let log_format = log_format.unwrap_or(if in_cluster {
            LogFormat::Json
        } else {
            LogFormat::Text
        });
        let extra_roots = match &baseten_ca_file {
            None => Vec::new(),
            Some(path) => read_roots(path)?,
        };
        Ok(Self {
            baseten_url: baseten_url.trim_end_matches('/').to_string(),
            transport: Transport {
                request_timeout: std::time::Duration::from_secs(baseten_timeout_seconds),
                extra_roots,
                metrics: None,
            },
            api_key: SecretString::from(api_key),
            api_key_file,
            watch_namespaces: namespaces,
            leader_election,
            kube_timeout: std::time::Duration::from_secs(kube_timeout_seconds),
            concurrency,
            log_format,
            secret_selector,
            http_addr,
        })
    }
}

/// The namespaces named, trimmed, sorted and once each.
fn namespaces(named: impl Iterator<Item = String>) -> Vec<String> {
    let mut namespaces: Vec<String> = named
        .map(|ns| ns.trim().to_string())
        .filter(|ns| !ns.is_empty())
        .collect();
    namespaces.sort();
    namespaces.dedup();
    namespaces
}

/// The API key from `path`, else from the environment.
fn read_api_key(path: Option<&std::path::Path>) -> anyhow::Result<String> {
    let api_key = match path {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the API key file {}", path.display()))?,
        None => std::env::var(API_KEY_ENV).map_err(|_| {
            anyhow::anyhow!("no Baseten API key: set {API_KEY_ENV} or pass --api-key-file")
        })?,
    };
    let api_key = api_key.trim().to_string();
    if api_key.is_empty() {
        bail!("the Baseten API key is empty");
    }
    Ok(api_key)
}

/// The Lease to lead by; this process is named by its pod, else by host and pid.
fn leader_election(
    namespace: Option<String>,
    name: String,
    duration_seconds: u64,
) -> anyhow::Result<LeaderElection> {
    let Some(namespace) = namespace.filter(|ns| !ns.is_empty()) else {
        bail!(
            "--leader-elect needs the Lease's namespace: pass --lease-namespace or set POD_NAMESPACE"
        );
    };
    let identity = std::env::var("POD_NAME")
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
    Ok(LeaderElection {
        namespace,
        name,
        identity,
        duration_seconds,
    })
}

/// The CA certificates of a PEM bundle.
fn read_roots(path: &std::path::Path) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let pem =
        std::fs::read(path).with_context(|| format!("reading the CA file {}", path.display()))?;
    let roots = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|_| anyhow::anyhow!("{} holds no PEM certificates", path.display()))?;
    if roots.is_empty() {
        bail!("{} holds no PEM certificates", path.display());
    }
    Ok(roots)
}

/// The machine's host name, for a Lease identity outside a pod.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "operator".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_api_key() {
        let config = Config {
            baseten_url: DEFAULT_BASE_URL.into(),
            transport: Transport::default(),
            api_key: SecretString::from("sk-very-secret".to_string()),
            api_key_file: None,
            watch_namespaces: Vec::new(),
            leader_election: None,
            kube_timeout: std::time::Duration::from_secs(30),
            concurrency: 1,
            log_format: LogFormat::Text,
            secret_selector: None,
            http_addr: "127.0.0.1:8080".parse().unwrap(),
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("sk-very-secret"));
        assert!(shown.contains("[redacted]"));
    }

    fn parse(args: &[&str]) -> anyhow::Result<Config> {
        let mut all = vec!["baseten-secrets-operator"];
        all.extend_from_slice(args);
        Config::from_args(Args::try_parse_from(all)?)
    }

    #[test]
    fn namespaces_come_from_both_flags_sorted_without_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "k\n").unwrap();
        let key_arg = format!("--api-key-file={}", key.display());
        let config =
            parse(&[&key_arg, "--watch-namespace=b", "--watch-namespaces=c,a,,b"]).unwrap();
        assert_eq!(config.watch_namespaces, ["a", "b", "c"]);
        let config = parse(&[&key_arg]).unwrap();
        assert!(config.watch_namespaces.is_empty());
        assert!(config.leader_election.is_none());
    }

    #[test]
    fn leader_election_needs_a_lease_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "k").unwrap();
        let key_arg = format!("--api-key-file={}", key.display());
        let error = parse(&[&key_arg, "--leader-elect", "--lease-namespace="])
            .err()
            .unwrap();
        assert!(error.to_string().contains("POD_NAMESPACE"), "{error}");
        let config = parse(&[&key_arg, "--leader-elect", "--lease-namespace=ops"]).unwrap();
        let election = config.leader_election.unwrap();
        assert_eq!(
            (election.namespace.as_str(), election.duration_seconds),
            ("ops", 15)
        );
        assert!(!election.identity.is_empty());
    }

    #[test]
    fn a_selector_the_apiserver_would_refuse_stops_the_operator_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "k").unwrap();
        let key_arg = format!("--api-key-file={}", key.display());
        let error = parse(&[&key_arg, "--secret-label-selector=a=b=c"])
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.starts_with("--secret-label-selector: ") && error.contains("\"a=b=c\""),
            "{error}"
        );
        let config = parse(&[&key_arg, "--secret-label-selector=baseten.co/push == true"]).unwrap();
        assert_eq!(
            config.secret_selector.unwrap().text(),
            "baseten.co/push=true"
        );
    }

    #[test]
    fn help_never_offers_the_api_key_as_a_flag() {
        use clap::CommandFactory;
        let help = Args::command().render_long_help().to_string();
        assert!(!help.contains("--api-key "), "{help}");
        assert!(help.contains("--api-key-file"));
    }
}
