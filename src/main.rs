//! `baseten-secrets-operator`: keeps Baseten secrets in sync with Kubernetes Secrets.
#![forbid(unsafe_code)]

use baseten_secrets_operator::config::{Args, Config};
use baseten_secrets_operator::{controller, install_crypto_provider, shutdown_signal, telemetry};
use clap::Parser;

#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    #[cfg(feature = "dhat-heap")]
    let _profiler = dhat::Profiler::new_heap();
    install_crypto_provider();
    let config = Config::from_args(Args::parse())?;
    telemetry::init(config.log_format);
    let client = kube::Client::try_default().await?;
    controller::run(config, client, shutdown_signal()).await
}
