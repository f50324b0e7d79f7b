//! Gathering a reconcile's inputs, once: what is remembered, the claim, the versions the
//! watches saw, and (only when a write may be needed) the API key and the value.

use std::sync::Arc;

use kube::ResourceExt;
use secrecy::SecretString;
use tokio::time::Instant;

use crate::claims::{Claimant, Target};
use crate::context::Context;
use crate::crd::{BasetenSecret, BasetenSecretStatus, FORCE_SYNC_ANNOTATION};
use crate::credentials::ApiKey;
use crate::error::Result;
use crate::memory::{Memory, settled_inputs};
use crate::secrets::{Unusable, read_value};

/// What is remembered about a resource, and the status to decide from.
#[derive(Clone, Debug, Default)]
pub struct Recall {
    /// Failures, retry, written status, drift, delete.
    pub memory: Memory,
    /// Fingerprint of the inputs of the last reconcile that found Baseten up to date.
    pub settled: Option<u64>,
    /// The last status this process wrote for the object, else the object's own.
    pub status: BasetenSecretStatus,
    /// Whether the cache shows the status this process wrote last (it can be forgotten).
    pub caught_up: bool,
}

/// What the reconcile of the apply branch sees before reading anything.
#[derive(Clone, Debug)]
pub struct Seen {
    /// What is remembered.
    pub recall: Recall,
    /// An older resource that targets the same Baseten secret, and so wins it.
    pub winner: Option<Claimant>,
    /// The versions of what a write would read.
    pub inputs: Inputs,
    /// When the reconcile began.
    pub now: Instant,
    /// A random fraction in [0, 1) that spreads retry times.
    pub jitter: f64,
}

/// What a reconcile that writes depends on, as far as it is known without reading.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inputs {
    /// The Secret's name.
    pub secret: String,
    /// The Secret's resourceVersion as the watch (or a read) last saw it.
    pub secret_version: Option<String>,
    /// The version of the API key in use.
    pub key_version: Option<String>,
    /// The resource's generation.
    pub generation: i64,
    /// The force-sync token, if set.
    pub force_token: Option<String>,
    /// The digest of the key's value at `secret_version`, when another reader has read that
    /// version (see `digests.rs`).
    pub digest: Option<u64>,
}

impl Inputs {
    /// The fingerprint of these inputs with the Secret at `secret_version`, or, when the
    /// digest of the key's value there is known, with that digest: a new version of the
    /// Secret that leaves this key as it was then has the same fingerprint.
    pub fn fingerprint(&self, secret_version: &str, digest: Option<u64>) -> u64 {
        let version = match digest {
            Some(digest) => format!("digest:{digest:x}"),
            None => secret_version.to_string(),
        };
        settled_inputs(
            &self.secret,
            &version,
            self.key_version.as_deref(),
            self.generation,
            self.force_token.as_deref(),
        )
    }

    /// The fingerprint of the inputs as last seen, when the Secret's version is known.
    pub fn seen_fingerprint(&self) -> Option<u64> {
        (self.secret_version.as_deref()).map(|v| self.fingerprint(v, self.digest))
    }
}

/// The API key and the value, read once for a write.
pub struct Readable {
    /// The key the write authenticates with.
    pub api_key: Arc<ApiKey>,
    /// The value to write.
    pub value: SecretString,
    /// The Secret's resourceVersion at the read.
    pub version: Option<String>,
    /// The digest of the value there, when the Secret has several readers.
    pub digest: Option<u64>,
}

/// What is remembered about `object` and the status to decide from.
pub fn recall(object: &BasetenSecret, ctx: &Context) -> Recall {
    let recalled = ctx.memories.recall(object);
    let written = recalled.memory.written_status.as_deref();
    let caught_up = written.is_some() && written == object.status.as_ref();
    let status = written
        .cloned()
        .or_else(|| object.status.clone())
        .unwrap_or_default();
    Recall {
        memory: recalled.memory,
        settled: recalled.settled,
        status,
        caught_up,
    }
}

/// Everything the apply branch can know without reading a Secret. Registers first which
/// Secrets the resource reads, so a change of either after this always triggers a reconcile.
pub fn seen(object: &BasetenSecret, ctx: &Context, namespace: &str, name: &str) -> Seen {
    let secret = object.spec.secret_ref.name.as_str();
    let api_key_secret = object.spec.api_key_ref.as_ref().map(|r| r.name.as_str());
    let read: Vec<&str> = std::iter::once(secret).chain(api_key_secret).collect();
    for unread in ctx.index.register(namespace, name, &read) {
        ctx.credentials.forget_secret(namespace, &unread);
        ctx.digests.forget(namespace, &unread);
    }
    let secret_version = ctx.index.seen_version(namespace, secret);
    let winner = ctx
        .claims
        .winner(&Target::of(object))
        .filter(|winner| !winner.is(&Claimant::of(object)));
    Seen {
        recall: recall(object, ctx),
        winner,
        inputs: inputs(object, ctx, namespace, secret_version),
        now: Instant::now(),
        jitter: rand::random_range(0.0..1.0),
    }
}

/// The inputs of `object` with its Secret at `secret_version`.
fn inputs(
    object: &BasetenSecret,
    ctx: &Context,
    namespace: &str,
    secret_version: Option<String>,
) -> Inputs {
    let key_ref = &object.spec.secret_ref;
    let digest = (secret_version.as_deref())
        .and_then(|v| (ctx.digests).digest(namespace, &key_ref.name, v, &key_ref.key));
    Inputs {
        secret: key_ref.name.clone(),
        secret_version,
        key_version: ctx.credentials.key_version(&ctx.index, object),
        generation: object.metadata.generation.unwrap_or_default(),
        force_token: force_token(object),
        digest,
    }
}

/// Whether a resource is at rest with these inputs: the last reconcile that found Baseten up
/// to date saw the same ones, and nothing is left to do. Pending deletions are retried by
/// every reconcile, and drift waits for its repair, so neither ever counts as at rest.
pub fn at_rest(recall: &Recall, inputs: &Inputs) -> bool {
    let fingerprint = inputs.seen_fingerprint();
    fingerprint.is_some()
        && recall.settled == fingerprint
        && recall.status.pending_deletions.is_empty()
        && recall.memory.drift.is_none()
}

/// Whether version `version` of Secret `secret` leaves `object` at rest: the resource reads
/// only its value from that Secret (not its API key), the digest of its key there is known
/// and is the one it was last settled with. Its reconcile would then read nothing and write
/// nothing, so the Secret's watch need not wake it.
pub fn unchanged_by(object: &BasetenSecret, ctx: &Context, secret: &str, version: &str) -> bool {
    let spec = &object.spec;
    let api_key_here = (spec.api_key_ref.as_ref()).is_some_and(|r| r.name == secret);
    if spec.secret_ref.name != secret || api_key_here {
        return false;
    }
    let namespace = object.namespace().unwrap_or_default();
    let inputs = inputs(object, ctx, &namespace, Some(version.to_string()));
    inputs.digest.is_some() && at_rest(&recall(object, ctx), &inputs)
}

/// The force-sync token of the resource, if any.
fn force_token(object: &BasetenSecret) -> Option<String> {
    object
        .annotations()
        .get(FORCE_SYNC_ANNOTATION)
        .filter(|t| !t.is_empty())
        .cloned()
}

/// The API key `object` writes with, or why it has none.
pub async fn api_key(
    object: &BasetenSecret,
    ctx: &Context,
) -> Result<std::result::Result<Arc<ApiKey>, Unusable>> {
    ctx.credentials
        .for_object(
            &ctx.client,
            &ctx.index,
            ctx.secret_selector.as_ref(),
            object,
        )
        .await
}

/// Reads the API key and then the value, or says why one cannot be used.
pub async fn read(
    object: &BasetenSecret,
    ctx: &Context,
    namespace: &str,
) -> Result<std::result::Result<Readable, Unusable>> {
    let api_key = match api_key(object, ctx).await? {
        Ok(api_key) => api_key,
        Err(unusable) => return Ok(Err(unusable)),
    };
    let key_ref = &object.spec.secret_ref;
    // Digests pay off only when another resource reads the same Secret.
    let shared = ctx.index.reader_count(namespace, &key_ref.name) > 1;
    let digests = shared.then_some(&ctx.digests);
    let selector = ctx.secret_selector.as_ref();
    let read = read_value(&ctx.client, namespace, key_ref, selector, digests).await?;
    if let Some(version) = &read.version {
        // The watch may have delivered this Secret before this resource read it.
        ctx.index.read_at(namespace, &key_ref.name, version);
    }
    let digest = (read.version.as_deref()).and_then(|v| {
        ctx.digests
            .digest(namespace, &key_ref.name, v, &key_ref.key)
    });
    Ok(read.value.map(|value| Readable {
        api_key,
        value,
        version: read.version,
        digest,
    }))
}
