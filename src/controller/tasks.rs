//! The process's background tasks (the HTTP server, drift checks, the key file), watched: a
//! task that panics or ends ends the process with an error naming it, so the Deployment
//! restarts the operator instead of leaving it running without, say, its metrics or drift
//! checks.

use std::future::Future;

use futures::future::{pending, select_all};
use tokio::task::JoinHandle;

/// Background tasks that must run as long as the process; aborted when dropped.
#[derive(Default)]
pub struct Tasks {
    running: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)>,
}

#[cfg(test)]
thread_local! {
    /// Test hook (unit tests only): the name of a task that panics as it starts.
    pub static PANICS_AT_START: std::cell::Cell<Option<&'static str>> =
        const { std::cell::Cell::new(None) };
}

impl Tasks {
    /// Runs `task`, named `name` in the error its end causes.
    pub fn spawn(
        &mut self,
        name: &'static str,
        task: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        #[cfg(test)]
        let task = {
            let panics = PANICS_AT_START.with(|p| p.get()) == Some(name);
            async move {
                assert!(!panics, "{name} panics at start (test hook)");
                task.await
            }
        };
        self.running.push((name, tokio::spawn(task)));
    }

    /// Waits until a task ends (none ever should), and says which and how. Never returns
    /// while every task runs, nor when there are none.
    pub async fn died(&mut self) -> anyhow::Error {
        if self.running.is_empty() {
            return pending().await;
        }
        let (ended, at, _) = select_all(self.running.iter_mut().map(|(_, task)| task)).await;
        let (name, _) = self.running.swap_remove(at);
        // A panic's payload is not repeated: the panic hook has printed it already.
        let how = match ended {
            Ok(Ok(())) => "ended".to_string(),
            Ok(Err(error)) => format!("failed: {error:#}"),
            Err(error) if error.is_panic() => "panicked".to_string(),
            Err(_) => "was cancelled".to_string(),
        };
        anyhow::anyhow!(
            "the {name} task {how}; stopping the operator so that it is restarted whole"
        )
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for (_, task) in &self.running {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_task_to_end_is_named_with_how_it_ended() {
        let mut tasks = Tasks::default();
        tasks.spawn("forever", pending());
        tasks.spawn("failing", async {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            anyhow::bail!("port taken")
        });
        let error = tasks.died().await.to_string();
        assert!(
            error.contains("the failing task failed: port taken"),
            "{error}"
        );

        let mut tasks = Tasks::default();
        tasks.spawn("quitter", async { Ok(()) });
        assert!(
            tasks
                .died()
                .await
                .to_string()
                .contains("the quitter task ended")
        );

        let mut tasks = Tasks::default();
        tasks.spawn("forever", pending());
        let nothing = tokio::time::timeout(std::time::Duration::from_millis(50), tasks.died());
        assert!(nothing.await.is_err(), "no task ended");
    }
}
