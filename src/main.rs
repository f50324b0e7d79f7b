//! `baseten-secrets-operator`: keeps Baseten secrets in sync with Kubernetes Secrets.
#![forbid(unsafe_code)]

use baseten_secrets_operator::config::{Args, Config};
use baseten_secrets_operator::{controller, install_crypto_provider, shutdown_signal, telemetry};
use clap::Parser;

#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// jemalloc: less memory and CPU than glibc's malloc under this workload
/// (docs/benchmarks.md).
#[cfg(not(feature = "dhat-heap"))]
#[global_allocator]
static JEMALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    #[cfg(feature = "dhat-heap")]
    let _profiler = dhat::Profiler::new_heap();
    install_crypto_provider();
    let config = Config::from_args(Args::parse())?;
    telemetry::init(config.log_format);
    let clients = controller::Clients::new(kube::Config::infer().await?, config.kube_timeout)?;
    controller::run(config, clients, shutdown_signal()).await
}
