//! The watches the controller runs on: BasetenSecrets of every watched namespace as one
//! stream (pruned, cached, followed by the claims), and Secrets by metadata only, mapped to
//! their readers through the index.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::channel::mpsc::UnboundedSender;
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};

use crate::context::Context;
use crate::crd::BasetenSecret;
use crate::prune::prune;
use crate::reconcile::gather;
use crate::secrets::catch_up_digests;
use crate::selector::SecretSelector;
use crate::watch::{Events, merge_namespaces, watch_backoff, watch_config};

/// The namespaces to watch: `None` for all of them.
pub type Namespaces = Vec<Option<String>>;

/// `watch_namespaces` as watches: one per namespace, or one over all.
pub fn namespaces(watch_namespaces: &[String]) -> Namespaces {
    if watch_namespaces.is_empty() {
        vec![None]
    } else {
        watch_namespaces.iter().cloned().map(Some).collect()
    }
}

/// The API of `K` in `namespace`, or in every namespace for `None`.
pub fn api_in<K>(client: &kube::Client, namespace: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// Fails early with a clear message when the CRD is not installed or a namespace is not
/// allowed.
pub async fn check_access(client: &kube::Client, namespaces: &Namespaces) -> anyhow::Result<()> {
    for namespace in namespaces {
        let resources: Api<BasetenSecret> = api_in(client, namespace);
        if let Err(error) = resources
            .list(&kube::api::ListParams::default().limit(1))
            .await
        {
            anyhow::bail!(
                "cannot list BasetenSecrets in {} ({error}); is the CRD installed (kubectl apply -k crds/) and may this identity list them there?",
                namespace
                    .as_deref()
                    .map_or("any namespace".to_string(), |ns| format!("namespace {ns}"))
            );
        }
    }
    Ok(())
}

/// The resources as one stream into the cache. The claims follow every event, deletions
/// included: a changed winner requeues the claimants of that secret, so the next in line
/// takes over by itself. `listed` is set once the first list is in the cache (from the
/// stream itself: kube's `Store::wait_until_ready` wakes only one of several waiters, and
/// the controller waits on it too).
pub fn resources(
    client: &kube::Client,
    namespaces: &Namespaces,
    writer: reflector::store::Writer<BasetenSecret>,
    ctx: Arc<Context>,
    requeue: UnboundedSender<ObjectRef<BasetenSecret>>,
    listed: Arc<AtomicBool>,
) -> BoxStream<'static, watcher::Result<BasetenSecret>> {
    let watches = namespaces
        .iter()
        .map(|namespace| {
            let events: Events = watcher(api_in(client, namespace), watch_config())
                .backoff(watch_backoff())
                .boxed();
            (namespace.clone().unwrap_or_default(), events)
        })
        .collect();
    let store = writer.as_reader();
    merge_namespaces(watches, store.clone())
        .modify(prune)
        .reflect(writer)
        .inspect_ok(move |event| {
            for object in ctx.claims.observe(event) {
                let _ = requeue.unbounded_send(object);
            }
            match event {
                watcher::Event::Delete(object) => {
                    forget(&ctx, &ObjectRef::from_obj(object));
                }
                watcher::Event::InitDone => {
                    // A relist drops what went while the watch was down, without events.
                    let alive = |ns: &str, name: &str| {
                        store.get(&ObjectRef::new(name).within(ns)).is_some()
                    };
                    for (namespace, secret) in ctx.index.retain(alive) {
                        ctx.credentials.forget_secret(&namespace, &secret);
                        ctx.digests.forget(&namespace, &secret);
                    }
                    ctx.memories.retain(alive);
                    listed.store(true, Ordering::SeqCst);
                }
                _ => {}
            }
        })
        .applied_objects()
        .boxed()
}

/// Secrets by metadata only (the API type is PartialObjectMeta): no payload is ever sent to
/// or cached in this process by the watch. With a selector, the watch sees only Secrets
/// that may be read.
pub fn secrets(
    client: &kube::Client,
    namespaces: &Namespaces,
    selector: Option<&SecretSelector>,
) -> BoxStream<'static, watcher::Result<PartialObjectMeta<Secret>>> {
    let config = match selector {
        Some(selector) => watch_config().labels(selector.text()),
        None => watch_config(),
    };
    stream::select_all(namespaces.iter().map(|namespace| {
        let secrets: Api<PartialObjectMeta<Secret>> = api_in(client, namespace);
        watcher(secrets, config.clone())
            .backoff(watch_backoff())
            .touched_objects()
            .boxed()
    }))
    .boxed()
}

/// Drops what is kept for a resource that no longer exists: its index and memory entries,
/// and the API keys of Secrets nobody reads now.
fn forget(ctx: &Context, object: &ObjectRef<BasetenSecret>) {
    let namespace = object.namespace.as_deref().unwrap_or_default();
    for unread in ctx.index.forget(namespace, &object.name) {
        ctx.credentials.forget_secret(namespace, &unread);
        ctx.digests.forget(namespace, &unread);
    }
    ctx.memories.forget(object);
}

/// Maps a Secret event to the resources that read it, dropping what is kept for readers
/// that no longer exist (a backstop: deletions are handled on their events).
pub fn readers_of(
    ctx: Arc<Context>,
    store: Store<BasetenSecret>,
) -> impl Fn(PartialObjectMeta<Secret>) -> Vec<ObjectRef<BasetenSecret>> {
    move |secret| {
        let namespace = secret.namespace().unwrap_or_default();
        let version = secret.metadata.resource_version.as_deref();
        let name = secret.name_any();
        let readers = ctx.index.saw(&namespace, &name, version);
        readers
            .into_iter()
            .filter(|reader| {
                let Some(object) = store.get(reader) else {
                    forget(&ctx, reader);
                    return false;
                };
                version.is_none_or(|v| !gather::unchanged_by(&object, &ctx, &name, v))
            })
            .collect()
    }
}

/// The Secrets the resources read, as `secrets` watches them, each one that several
/// resources read read once per new version before its readers are mapped, so that
/// `readers_of` wakes only those whose key changed: one key of a thousand changed then costs
/// one reconcile, not a thousand.
pub fn read_secrets(
    client: &kube::Client,
    namespaces: &Namespaces,
    ctx: Arc<Context>,
) -> BoxStream<'static, watcher::Result<PartialObjectMeta<Secret>>> {
    secrets(client, namespaces, ctx.secret_selector.as_ref())
        .then(move |event| {
            let ctx = ctx.clone();
            async move {
                if let Ok(secret) = &event {
                    catch_up(&ctx, secret).await;
                }
                event
            }
        })
        .boxed()
}

async fn catch_up(ctx: &Context, secret: &PartialObjectMeta<Secret>) {
    let namespace = secret.namespace().unwrap_or_default();
    let name = secret.name_any();
    let Some(version) = secret.metadata.resource_version.as_deref() else {
        return;
    };
    if ctx.index.reader_count(&namespace, &name) > 1 {
        let selector = ctx.secret_selector.as_ref();
        catch_up_digests(
            &ctx.client,
            &namespace,
            &name,
            version,
            selector,
            &ctx.digests,
        )
        .await;
    }
}
