//! Child processes that cannot outlive the process that started them.
//!
//! Each child runs under a small `sh` watchdog: it forwards SIGTERM to the child, stops the
//! child when the starting process disappears (a panic, a kill, a Ctrl-C), and removes the
//! child's data directory afterwards. No `unsafe` (such as `PR_SET_PDEATHSIG`) is needed.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// How long a child gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

const WATCHDOG: &str = r#"
parent=$1; cleanup=$2; shift 2
"$@" &
child=$!
stop() {
  kill -TERM "$child" 2>/dev/null
  i=0
  while kill -0 "$child" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
  kill -KILL "$child" 2>/dev/null
  wait "$child" 2>/dev/null
  rc=$?
  [ -n "$cleanup" ] && rm -rf "$cleanup"
  exit $rc
}
trap stop TERM INT HUP
while kill -0 "$parent" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 0.5; done
stop
"#;

/// A child process under a watchdog; stopped (SIGTERM, then SIGKILL) when dropped. The
/// watchdog exits with the child's exit status (128 + the signal when a signal ended it).
pub struct Supervised {
    watchdog: Child,
    program: std::path::PathBuf,
}

impl Supervised {
    /// Starts `program` with `args`, its output going to `log`; `cleanup` is removed after exit.
    pub fn spawn(
        program: &Path,
        args: &[String],
        log: &Path,
        cleanup: Option<&Path>,
    ) -> Result<Self> {
        Self::spawn_with_env(program, args, &[], log, cleanup)
    }

    /// Like [`Supervised::spawn`], with extra environment variables for the child.
    pub fn spawn_with_env(
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
        log: &Path,
        cleanup: Option<&Path>,
    ) -> Result<Self> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("testenv-watchdog")
            .arg(std::process::id().to_string())
            .arg(
                cleanup
                    .map(|p| p.as_os_str().to_owned())
                    .unwrap_or_default(),
            )
            .arg(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Self {
            watchdog,
            program: program.to_path_buf(),
        })
    }

    /// The pid of the supervised program itself (not its watchdog), once it runs.
    pub fn child_pid(&self) -> Option<u32> {
        let id = self.watchdog.id();
        let children = std::fs::read_to_string(format!("/proc/{id}/task/{id}/children")).ok()?;
        let program = self.program.as_os_str().as_encoded_bytes();
        children
            .split_whitespace()
            .filter_map(|pid| pid.parse::<u32>().ok())
            .find(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|cmdline| cmdline.split(|b| *b == 0).next() == Some(program))
            })
    }

    /// Whether the child (and so its watchdog) has exited.
    pub fn has_exited(&mut self) -> bool {
        matches!(self.watchdog.try_wait(), Ok(Some(_)))
    }

    /// The child's exit status once it has exited (through its watchdog, which notices
    /// within half a second).
    pub fn exit_code(&mut self) -> Option<i32> {
        match self.watchdog.try_wait() {
            Ok(Some(status)) => status.code(),
            _ => None,
        }
    }

    /// Sends SIGTERM to the child itself (not its watchdog, which would SIGKILL it after
    /// five seconds) and waits up to `limit` for it to exit; its exit status, `None` if it
    /// still runs.
    pub fn terminate_child(&mut self, limit: Duration) -> Option<i32> {
        if let Some(pid) = self.child_pid() {
            let _ = Command::new("sh")
                .args(["-c", "kill -TERM \"$0\""])
                .arg(pid.to_string())
                .status();
        }
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(code) = self.exit_code() {
                return Some(code);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Kills the child with SIGKILL, as the kernel's OOM killer or a node failure would, and
    /// waits until its watchdog has noticed.
    pub fn kill_child(&mut self) {
        if let Some(pid) = self.child_pid() {
            let _ = Command::new("sh")
                .args(["-c", "kill -KILL \"$0\""])
                .arg(pid.to_string())
                .status();
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline && !self.has_exited() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the child: SIGTERM, then SIGKILL after a grace period; waits for it.
    pub fn stop(&mut self) {
        if self.has_exited() {
            return;
        }
        // The shell's own `kill`, so no separate kill binary is needed.
        let _ = Command::new("sh")
            .args(["-c", "kill -TERM \"$0\""])
            .arg(self.watchdog.id().to_string())
            .status();
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if self.has_exited() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
    }
}
