//! The BasetenSecretSet phase: one set over one Secret of N keys, then one set over N
//! labelled Secrets, each timed from its creation to every generated BasetenSecret Ready,
//! against the same rate-limit floor as plain resources (N / 100 s), with the propagation of
//! a key's change and the operator's RSS holding N generated BasetenSecrets.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Result, bail};
use baseten_secrets_operator::BasetenSecretSet;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::run::{Requests, arrival};

/// What the set phase measured.
#[derive(Clone, Debug, Default)]
pub struct SetFigures {
    /// Seconds from creating the set over one Secret of N keys to all N Ready.
    pub keys_convergence_seconds: f64,
    /// Seconds from creating the set over N labelled Secrets to all N Ready.
    pub selector_convergence_seconds: f64,
    /// Propagation of one key's change of the N-key Secret, milliseconds.
    pub latencies_ms: Vec<f64>,
    /// Key changes that never reached Baseten in time.
    pub missed_updates: usize,
    /// RSS with the N generated BasetenSecrets of the first set, at rest, bytes.
    pub idle_rss: u64,
}

/// What the phase needs of the bench's world.
pub struct Reach<'a> {
    /// Admin client.
    pub client: &'a kube::Client,
    /// The bench namespace.
    pub namespace: &'a str,
    /// The emulator's request log from index `since`.
    pub requests: &'a Requests<'a>,
    /// The operator's RSS now, bytes.
    pub rss: &'a (dyn Fn() -> u64 + Sync),
    /// The names of the N Secrets of the plain phases, which the selector set selects.
    pub secrets: Vec<String>,
}

/// Key `i` of the N-key Secret.
fn key(i: usize) -> String {
    format!("k-{i:05}")
}

fn value(i: usize, round: usize) -> String {
    format!("value {i} round {round} {:08x}", rand::random::<u32>())
}

/// Waits until set `name` has `n` keys Ready; returns when.
async fn ready(
    sets: &Api<BasetenSecretSet>,
    name: &str,
    n: usize,
    limit: Duration,
) -> Result<Instant> {
    let deadline = Instant::now() + limit;
    loop {
        let set = sets.get(name).await?;
        let status = set.status.unwrap_or_default();
        if status.ready_count as usize == n && status.key_count as usize == n {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!(
                "set {name}: only {} of {n} keys Ready within {limit:?}",
                status.ready_count
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Deletes set `name` and waits until it is gone.
async fn delete(sets: &Api<BasetenSecretSet>, name: &str) -> Result<()> {
    sets.delete(name, &DeleteParams::default()).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while sets.get_opt(name).await?.is_some() {
        if Instant::now() > deadline {
            bail!("set {name} was not deleted within 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Times `updates` changes of single keys of Secret `source`, each until Baseten has it.
async fn propagation(
    reach: &Reach<'_>,
    source: &str,
    n: usize,
    updates: usize,
) -> Result<(Vec<f64>, usize)> {
    let secrets: Api<Secret> = Api::namespaced(reach.client.clone(), reach.namespace);
    let mut seen = (reach.requests)(0).await?.len();
    let (mut latencies, mut missed) = (Vec::new(), 0);
    for round in 0..updates {
        let i = rand::random_range(0..n);
        let name = key(i);
        let patch = json!({"data": {&name: ByteString(value(i, round + 1).into_bytes())}});
        secrets
            .patch(source, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        let accepted = jiff::Timestamp::try_from(SystemTime::now())?;
        match arrival(reach.requests, &mut seen, &name, accepted).await? {
            Some(at) => latencies.push(at.duration_since(accepted).as_secs_f64() * 1000.0),
            None => missed += 1,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((latencies, missed))
}

/// Runs the set phase with `n` keys and `updates` timed key changes.
pub async fn run(reach: &Reach<'_>, n: usize, updates: usize) -> Result<SetFigures> {
    let floor = n as f64 / baseten_emulator::DEFAULT_RATE_LIMIT_PER_SECOND as f64;
    let limit = Duration::from_secs_f64((floor * 4.0).max(120.0));
    let secrets: Api<Secret> = Api::namespaced(reach.client.clone(), reach.namespace);
    let sets: Api<BasetenSecretSet> = Api::namespaced(reach.client.clone(), reach.namespace);
    let mut figures = SetFigures::default();

    eprintln!("bench: a set over one Secret of {n} keys");
    let source = Secret {
        metadata: ObjectMeta {
            name: Some("set-source".into()),
            ..Default::default()
        },
        data: Some(
            (0..n)
                .map(|i| (key(i), ByteString(value(i, 0).into_bytes())))
                .collect(),
        ),
        ..Default::default()
    };
    secrets.create(&PostParams::default(), &source).await?;
    let set = |name: &str, spec: serde_json::Value| -> Result<BasetenSecretSet> {
        Ok(serde_json::from_value(json!({
            "apiVersion": "baseten.co/v1alpha1", "kind": "BasetenSecretSet",
            "metadata": {"name": name}, "spec": spec,
        }))?)
    };
    let begun = Instant::now();
    let keys = set("bench-keys", json!({"secretName": "set-source"}))?;
    sets.create(&PostParams::default(), &keys).await?;
    let done = ready(&sets, "bench-keys", n, limit).await?;
    figures.keys_convergence_seconds = done.duration_since(begun).as_secs_f64();
    eprintln!(
        "bench: {n} keys Ready in {:.1} s (floor {floor:.1} s)",
        figures.keys_convergence_seconds
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    (figures.latencies_ms, figures.missed_updates) =
        propagation(reach, "set-source", n, updates).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    figures.idle_rss = (reach.rss)();
    delete(&sets, "bench-keys").await?;

    eprintln!("bench: a set over {} labelled Secrets", reach.secrets.len());
    let label = json!({"metadata": {"labels": {"bench/push": "true"}}});
    for name in &reach.secrets {
        secrets
            .patch(name, &PatchParams::default(), &Patch::Merge(&label))
            .await?;
    }
    let begun = Instant::now();
    let selected = set(
        "bench-selected",
        json!({"secretSelector": {"matchLabels": {"bench/push": "true"}}}),
    )?;
    sets.create(&PostParams::default(), &selected).await?;
    let done = ready(&sets, "bench-selected", reach.secrets.len(), limit).await?;
    figures.selector_convergence_seconds = done.duration_since(begun).as_secs_f64();
    eprintln!(
        "bench: {} labelled Secrets Ready in {:.1} s",
        reach.secrets.len(),
        figures.selector_convergence_seconds
    );
    delete(&sets, "bench-selected").await?;
    Ok(figures)
}
