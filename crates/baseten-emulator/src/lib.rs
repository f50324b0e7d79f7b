//! A local emulator of Baseten's secret and team management API.
//!
//! It answers the same paths, bodies, status codes, auth schemes, rate limits and name
//! normalisation as the real API, and adds an unauthenticated admin API under `/_admin`
//! so that tests can see what was written and inject faults. It never logs secret values.

mod admin;
mod api;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use state::{AdminRequest, AdminSecret, Fault, normalise_name};

/// Requests per second allowed per API key and per endpoint when nothing else is configured.
pub const DEFAULT_RATE_LIMIT_PER_SECOND: u32 = 100;

/// Name of the team every organisation starts with.
pub const DEFAULT_TEAM_NAME: &str = "Default Team";

/// How the emulator behaves.
#[derive(Clone)]
pub struct Config {
    /// API keys that authenticate; each is its own organisation. Empty means any non-empty key
    /// is accepted and becomes a new organisation on first use.
    pub api_keys: Vec<String>,
    /// Extra teams (besides the default team) that every organisation has.
    pub teams: Vec<String>,
    /// Requests per second per key and per endpoint before answering 429.
    pub rate_limit_per_second: u32,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field(
                "api_keys",
                &format_args!("[{} redacted]", self.api_keys.len()),
            )
            .field("teams", &self.teams)
            .field("rate_limit_per_second", &self.rate_limit_per_second)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            api_keys: Vec::new(),
            teams: Vec::new(),
            rate_limit_per_second: DEFAULT_RATE_LIMIT_PER_SECOND,
        }
    }
}

/// Builds the HTTP router of the emulator: the Baseten API plus the admin API.
pub fn router(config: Config) -> Router {
    let state = Arc::new(state::Emulator::new(config));
    api::routes(state.clone()).merge(admin::routes(state))
}

/// An emulator serving on a loopback port in the current process; stops when dropped.
pub struct Running {
    addr: SocketAddr,
    tls: bool,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    /// The address the emulator listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to give a Baseten client, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Stops serving and waits until the server task has finished.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts an emulator on `listen` (use port 0 for a free port) in the current tokio runtime.
pub async fn spawn(listen: SocketAddr, config: Config) -> std::io::Result<Running> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let app = router(config);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
    });
    Ok(Running {
        addr,
        tls: false,
        stop: Some(stop),
        task,
    })
}

/// How long a client has to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Accepts TCP connections and completes their TLS handshake; failed handshakes (such as a
/// client that does not trust the certificate) are dropped.
struct TlsListener {
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, peer)) = self.tcp.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            if let Ok(Ok(tls)) =
                tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, self.acceptor.accept(stream)).await
            {
                return (tls, peer);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Like [`spawn`], serving HTTPS with the PEM certificate chain and private key given.
pub async fn spawn_tls(
    listen: SocketAddr,
    config: Config,
    cert_chain_pem: &str,
    key_pem: &str,
) -> anyhow::Result<Running> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain =
        CertificateDer::pem_slice_iter(cert_chain_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    let tcp = TcpListener::bind(listen).await?;
    let addr = tcp.local_addr()?;
    let listener = TlsListener {
        tcp,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let app = router(config);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
    });
    Ok(Running {
        addr,
        tls: true,
        stop: Some(stop),
        task,
    })
}
