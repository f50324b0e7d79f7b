//! Leader election on a coordination.k8s.io Lease: a standby waits, the leader works, and a
//! lost Lease ends the process so that two replicas never write at once.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tracing::{error, info, warn};

use crate::config::LeaderElection;

/// How long a renewal may take: a third of the Lease. A renewal stuck on a dead connection
/// must fail before the Lease can expire, or another replica could lead while this one
/// still writes.
pub fn grace_seconds(election: &LeaderElection) -> u64 {
    (election.duration_seconds / 3).max(1)
}

/// Waits as a standby until this process holds the Lease (or `shutdown`), then runs `work`
/// until it ends (releasing the Lease, so a standby takes over at once) or until the Lease is
/// lost (ending the process with an error, so two leaders never write).
pub async fn run_elected(
    election: &LeaderElection,
    lease_client: kube::Client,
    standby: &AtomicBool,
    shutdown: impl Future<Output = ()>,
    work: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let lease = Arc::new(lease(election, lease_client).await?);
    info!(
        lease = %format!("{}/{}", election.namespace, election.name),
        identity = %election.identity,
        "standby: waiting to become the leader"
    );
    tokio::select! {
        _ = shutdown => {
            info!("stopped while standby");
            return Ok(());
        }
        () = acquire(&lease) => {}
    }
    info!(identity = %election.identity, "became the leader");
    standby.store(false, Ordering::SeqCst);

    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<String>();
    let keeper = {
        let lease = lease.clone();
        tokio::spawn(async move {
            let _ = lost_tx.send(keep(&lease).await);
        })
    };
    let lost = async move {
        match lost_rx.await {
            Ok(why) => why,
            // The keeper went without a word: it panicked, and renews nothing any more.
            Err(_) => "the task renewing it panicked".to_string(),
        }
    };
    // Losing the Lease stops everything at once, in-flight reconciles included (no drain):
    // from now on another replica may lead.
    tokio::select! {
        outcome = work => {
            keeper.abort();
            match lease.release().await {
                Ok(()) => info!("released the leader Lease"),
                Err(error) => {
                    warn!(error = %error, "could not release the leader Lease; a standby takes over when it expires")
                }
            }
            outcome
        }
        why = lost => {
            error!(reason = %why, "lost the leader Lease; stopping so that only one replica writes");
            anyhow::bail!("lost the leader Lease ({why})")
        }
    }
}

/// The Lease of `election`, held under this process's identity.
async fn lease(election: &LeaderElection, client: kube::Client) -> anyhow::Result<LeaseManager> {
    LeaseManagerBuilder::new(client, &election.name)
        .with_namespace(&election.namespace)
        .with_identity(&election.identity)
        .with_duration(election.duration_seconds)
        .with_grace(grace_seconds(election))
        .build()
        .await
        .with_context(|| {
            format!(
                "leader election: cannot use the Lease {}/{} (may this identity get, create and patch leases there?)",
                election.namespace, election.name
            )
        })
}

/// Returns once this process holds the Lease; errors reading or taking it are retried.
async fn acquire(lease: &LeaseManager) {
    loop {
        match lease.changed().await {
            Ok(true) => return,
            Ok(false) => {}
            Err(error) => {
                warn!(error = %error, "leader election: cannot read or take the Lease; trying again");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// Renews the Lease until it is lost; returns why. A failed renewal counts as lost: the
/// Lease may expire before the next try, and then another replica may lead.
async fn keep(lease: &LeaseManager) -> String {
    loop {
        match lease.changed().await {
            Ok(true) => {}
            Ok(false) => return "another replica holds it".into(),
            Err(error) => return format!("renewing it failed: {error}"),
        }
    }
}
