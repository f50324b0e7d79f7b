//! `testenv`: starts and stops the local development environment (a real control plane and
//! the Baseten emulator) in the background, for `make env-up`, `make env-down` and `make demo`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use rand::Rng;
use testenv::{ControlPlane, Options};

/// How long `up` waits for the background environment to become ready (a cold build of the
/// control plane happens before, in the foreground).
const UP_TIMEOUT: Duration = Duration::from_secs(180);

/// Starts and stops the local development environment.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Starts the environment in the background and writes DIR/env; does nothing if it runs.
    Up {
        /// Folder for the env file, pid file and log.
        #[arg(long, default_value = "target/dev")]
        dir: PathBuf,
    },
    /// Stops the background environment; does nothing if none runs.
    Down {
        /// Folder given to `up`.
        #[arg(long, default_value = "target/dev")]
        dir: PathBuf,
    },
    /// Runs the environment in the foreground until SIGTERM or Ctrl-C.
    Serve {
        /// Folder for the env file and pid file.
        #[arg(long, default_value = "target/dev")]
        dir: PathBuf,
    },
}

struct Files {
    env: PathBuf,
    pid: PathBuf,
    log: PathBuf,
}

impl Files {
    fn new(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        Ok(Self {
            env: dir.join("env"),
            pid: dir.join("testenv.pid"),
            log: dir.join("testenv.log"),
        })
    }

    /// The pid of a running environment, if its pid file names a live process.
    fn running_pid(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(&self.pid)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    }
}

fn main() -> Result<()> {
    let Args { command } = Args::parse();
    match command {
        Cmd::Up { dir } => up(&Files::new(&dir)?),
        Cmd::Down { dir } => down(&Files::new(&dir)?),
        Cmd::Serve { dir } => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(serve(Files::new(&dir)?))
        }
    }
}

fn up(files: &Files) -> Result<()> {
    if files.running_pid().is_some() && files.env.exists() {
        println!(
            "environment already running; source {}",
            files.env.display()
        );
        return Ok(());
    }
    // Build in the foreground so a person sees the progress of a cold build.
    testenv::ensure_binaries()?;
    let _ = std::fs::remove_file(&files.env);
    let log = std::fs::File::create(&files.log)?;
    let mut child = Command::new(std::env::current_exe()?)
        .arg("serve")
        .arg("--dir")
        .arg(files.env.parent().expect("env file has a folder"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting the background environment")?;
    let deadline = Instant::now() + UP_TIMEOUT;
    while !files.env.exists() {
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(&files.log).unwrap_or_default();
            bail!("the environment exited ({status}) during start-up:\n{log}");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!(
                "the environment was not ready within {UP_TIMEOUT:?}; see {}",
                files.log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "environment running; use it with:\n  source {}",
        files.env.display()
    );
    Ok(())
}

fn down(files: &Files) -> Result<()> {
    let Some(pid) = files.running_pid() else {
        let _ = std::fs::remove_file(&files.env);
        let _ = std::fs::remove_file(&files.pid);
        println!("environment not running");
        return Ok(());
    };
    Command::new("sh")
        .args(["-c", "kill -TERM \"$0\""])
        .arg(pid.to_string())
        .status()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_file(&files.env);
    let _ = std::fs::remove_file(&files.pid);
    println!("environment stopped");
    Ok(())
}

async fn serve(files: Files) -> Result<()> {
    std::fs::write(&files.pid, std::process::id().to_string())?;
    let plane = ControlPlane::start(Options {
        controller_manager: true,
        session: "dev",
        audit: false,
    })
    .await?;
    let api_key: String = {
        let mut rng = rand::rng();
        let suffix: String = (0..24)
            .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)]))
            .collect();
        format!("dev-{suffix}")
    };
    let emulator = baseten_emulator::spawn(
        "127.0.0.1:0".parse()?,
        baseten_emulator::Config {
            api_keys: vec![api_key.clone()],
            ..Default::default()
        },
    )
    .await?;
    let bin = testenv::bin_dir().canonicalize()?;
    let env = format!(
        "# Written by testenv; source it to use the local environment.\n\
         export KUBECONFIG='{}'\n\
         export BASETEN_URL='{}'\n\
         export BASETEN_API_KEY='{api_key}'\n\
         export PATH='{}':\"$PATH\"\n",
        plane.kubeconfig().display(),
        emulator.url(),
        bin.display(),
    );
    // Write then rename, so `up` never reads a half-written file.
    let partial = files.env.with_extension("partial");
    std::fs::write(&partial, env)?;
    std::fs::rename(&partial, &files.env)?;
    println!(
        "control plane at {} (ready in {:.1}s), Baseten emulator at {}",
        plane.server(),
        plane.started_in().as_secs_f64(),
        emulator.url()
    );

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    emulator.stop().await;
    drop(plane);
    let _ = std::fs::remove_file(&files.env);
    let _ = std::fs::remove_file(&files.pid);
    Ok(())
}
