//! `baseten-secrets-operator`: keeps Baseten secrets in sync with Kubernetes Secrets.
#![forbid(unsafe_code)]

use baseten_secrets_operator::config::{Args, Config};
use baseten_secrets_operator::{controller, install_crypto_provider, shutdown_signal, telemetry};
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    install_crypto_provider();
    let config = Config::from_args(Args::parse())?;
    telemetry::init(config.log_format);
    let client = kube::Client::try_default().await?;
    controller::run(config, client, shutdown_signal()).await
}
