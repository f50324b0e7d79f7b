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

    /// PEM file of CA certificates to trust for Baseten besides the system's (for example a corporate proxy's).
    #[arg(long, env = "BASETEN_CA_FILE")]
    pub baseten_ca_file: Option<PathBuf>,

    /// Time allowed for one Baseten request, connection included (seconds).
    #[arg(long, env = "BASETEN_TIMEOUT_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub baseten_timeout_seconds: u64,

    /// File holding the Baseten API key (for example a mounted Secret). Overrides BASETEN_API_KEY.
    #[arg(long, env = "BASETEN_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,

    /// Only watch this namespace; all namespaces when absent.
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// How many BasetenSecrets are reconciled at once.
    #[arg(long, env = "CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
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
    /// Namespace to watch; all when `None`.
    pub watch_namespace: Option<String>,
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
            .field("watch_namespace", &self.watch_namespace)
            .field("concurrency", &self.concurrency)
            .field("log_format", &self.log_format)
            .field(
                "secret_selector",
                &self.secret_selector.as_ref().map(|s| &s.text),
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
        let api_key = match &api_key_file {
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
        let log_format =
            log_format.unwrap_or(if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
                LogFormat::Json
            } else {
                LogFormat::Text
            });
        let extra_roots = match &baseten_ca_file {
            None => Vec::new(),
            Some(path) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("reading the CA file {}", path.display()))?;
                let roots = reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|_| anyhow::anyhow!("{} holds no PEM certificates", path.display()))?;
                if roots.is_empty() {
                    bail!("{} holds no PEM certificates", path.display());
                }
                roots
            }
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
            watch_namespace: watch_namespace.filter(|ns| !ns.is_empty()),
            concurrency,
            log_format,
            secret_selector,
            http_addr,
        })
    }
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
            watch_namespace: None,
            concurrency: 1,
            log_format: LogFormat::Text,
            secret_selector: None,
            http_addr: "127.0.0.1:8080".parse().unwrap(),
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("sk-very-secret"));
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn help_never_offers_the_api_key_as_a_flag() {
        use clap::CommandFactory;
        let help = Args::command().render_long_help().to_string();
        assert!(!help.contains("--api-key "), "{help}");
        assert!(help.contains("--api-key-file"));
    }
}
