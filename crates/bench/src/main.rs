//! `make bench`: runs the release operator against a local control plane and the Baseten
//! emulator (at Baseten's real limit of 100 requests/s per key and endpoint), and measures
//! cold convergence, change propagation, the steady state, a restart, the operator's
//! footprint and its load on the apiserver. Writes a table to stdout and
//! `report.json`, `report.md` and PNG plots to the output folder.
//!
//! Parameters come from the environment: `BENCH_N` resources (1000), `BENCH_VALUE_BYTES`
//! (4096), `BENCH_NOISE` unrelated 64 KiB Secrets (2×N), `BENCH_STEADY_SECS` (300),
//! `BENCH_UPDATES` propagation samples (200), `BENCH_OUT` (target/bench), `BENCH_OPERATOR`
//! (the static release binary `make release` builds, the one the image holds:
//! target/<arch>-unknown-linux-musl/release/baseten-secrets-operator), `BENCH_STRICT=1` to fail when a correctness
//! figure (anything that must be zero, every resource Ready) misses.

mod plot;
mod probe;
mod report;
mod run;
mod sets;

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// What one bench run measures, and where it writes.
#[derive(Clone, Debug)]
pub struct Params {
    /// BasetenSecrets, each with a Secret of its own.
    pub n: usize,
    /// Size of each pushed value.
    pub value_bytes: usize,
    /// Unrelated Secrets the operator must not care about.
    pub noise: usize,
    /// How long the steady state is watched.
    pub steady: Duration,
    /// Secret updates timed for propagation.
    pub updates: usize,
    /// Output folder.
    pub out: PathBuf,
    /// The operator binary (a release build).
    pub operator: PathBuf,
    /// Fail on any missed correctness figure.
    pub strict: bool,
}

/// Size of each unrelated Secret's value.
pub const NOISE_BYTES: usize = 64 * 1024;

fn env_or<T: FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Ok(text) if !text.is_empty() => text
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={text:?} is not a valid number")),
        _ => Ok(default),
    }
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

impl Params {
    fn from_env() -> Result<Self> {
        let n: usize = env_or("BENCH_N", 1000)?;
        if n == 0 {
            bail!("BENCH_N must be at least 1");
        }
        let root = workspace_root();
        Ok(Self {
            n,
            value_bytes: env_or("BENCH_VALUE_BYTES", 4096)?,
            noise: env_or("BENCH_NOISE", 2 * n)?,
            steady: Duration::from_secs(env_or("BENCH_STEADY_SECS", 300)?),
            updates: env_or("BENCH_UPDATES", 200)?,
            out: std::env::var_os("BENCH_OUT")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target/bench")),
            operator: std::env::var_os("BENCH_OPERATOR")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    let arch = std::env::consts::ARCH;
                    root.join(format!(
                        "target/{arch}-unknown-linux-musl/release/baseten-secrets-operator"
                    ))
                }),
            strict: env_or("BENCH_STRICT", 0u8)? == 1,
        })
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let params = Params::from_env()?;
    if !params.operator.is_file() {
        bail!(
            "no operator binary at {}; build it with `cargo build --release --locked --bin baseten-secrets-operator` (make bench does)",
            params.operator.display()
        );
    }
    std::fs::create_dir_all(&params.out)
        .with_context(|| format!("creating {}", params.out.display()))?;
    eprintln!(
        "bench: N={} values of {} bytes, {} unrelated Secrets of 64 KiB, {} updates, {} s steady state",
        params.n,
        params.value_bytes,
        params.noise,
        params.updates,
        params.steady.as_secs()
    );
    // Named before the run: the checkout may move while it runs.
    let revision = report::git_revision();
    let figures = run::run(&params).await?;
    let report = report::Report::new(&params, figures, &revision);
    report.write(&params.out)?;
    println!("{}", report.table());
    eprintln!(
        "bench: report in {}",
        params.out.join("report.md").display()
    );
    let failures = report.correctness_failures();
    if params.strict && !failures.is_empty() {
        bail!("correctness figures missed: {}", failures.join("; "));
    }
    Ok(())
}
