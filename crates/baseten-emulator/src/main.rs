//! `baseten-emulator`: serves the emulated Baseten API until interrupted.

use std::net::SocketAddr;

use baseten_emulator::{Config, DEFAULT_RATE_LIMIT_PER_SECOND};
use clap::Parser;

/// A local emulator of Baseten's secret and team management API, for tests and demos.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on; port 0 picks a free port. The bound address is printed.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// An API key that authenticates (repeatable); each key is its own organisation.
    /// Without any, every non-empty key is accepted. Kept out of --help output and logs.
    #[arg(long = "api-key", hide_env_values = true)]
    api_keys: Vec<String>,
    /// A team every organisation has besides "Default Team" (repeatable).
    #[arg(long = "team")]
    teams: Vec<String>,
    /// Requests per second allowed per API key and per endpoint.
    #[arg(long, default_value_t = DEFAULT_RATE_LIMIT_PER_SECOND)]
    rate_limit: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Args {
        listen,
        api_keys,
        teams,
        rate_limit,
    } = Args::parse();
    let config = Config {
        api_keys,
        teams,
        rate_limit_per_second: rate_limit,
    };
    let running = baseten_emulator::spawn(listen, config).await?;
    println!("baseten-emulator listening on {}", running.url());
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    running.stop().await;
    Ok(())
}
