//! Wiring: the BasetenSecret watch, the metadata-only Secret watch mapped through the index,
//! concurrency and shutdown.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, controller, watcher};
use tracing::{debug, info, warn};

use crate::baseten::BasetenClient;
use crate::config::Config;
use crate::context::Context;
use crate::crd::BasetenSecret;
use crate::hash::HashKey;
use crate::reconcile::{error_policy, reconcile};

/// Runs the operator until `shutdown` completes.
pub async fn run(
    config: Config,
    client: kube::Client,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let (resources, secrets): (Api<BasetenSecret>, Api<PartialObjectMeta<Secret>>) =
        match &config.watch_namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
    // Fail early with a clear message when the CRD is not installed.
    if let Err(error) = resources
        .list(&kube::api::ListParams::default().limit(1))
        .await
    {
        anyhow::bail!(
            "cannot list BasetenSecrets ({error}); is the CRD installed (kubectl apply -k crds/) and may this identity list them?"
        );
    }

    let ctx = Arc::new(Context::new(
        client.clone(),
        BasetenClient::new(&config.baseten_url, &config.api_key)?,
        HashKey::derive(&config.api_key),
        std::env::var("POD_NAME").ok(),
    ));

    let controller = Controller::new(resources, watcher::Config::default().any_semantic());
    let store = controller.store();
    let mapper_ctx = ctx.clone();
    let mapper = move |secret: PartialObjectMeta<Secret>| {
        let namespace = secret.namespace().unwrap_or_default();
        let name = secret.name_any();
        mapper_ctx.index.saw(
            &namespace,
            &name,
            secret.metadata.resource_version.as_deref(),
        );
        let readers = mapper_ctx.index.readers(&namespace, &name);
        // Drop index entries of BasetenSecrets that no longer exist.
        readers
            .into_iter()
            .filter(|reader: &ObjectRef<BasetenSecret>| {
                let alive = store.get(reader).is_some();
                if !alive {
                    mapper_ctx.index.forget(&namespace, &reader.name);
                    mapper_ctx.forget(reader);
                }
                alive
            })
            .collect::<Vec<_>>()
    };

    info!(
        namespace = config.watch_namespace.as_deref().unwrap_or("*"),
        concurrency = config.concurrency,
        "starting controller"
    );
    controller
        // Secrets are watched by metadata only (the API type is PartialObjectMeta): no
        // payload is ever sent to or cached in this process by the watch.
        .watches(secrets, watcher::Config::default().any_semantic(), mapper)
        .with_config(controller::Config::default().concurrency(config.concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => debug!(namespace = object.namespace.as_deref().unwrap_or(""), name = %object.name, "reconciled"),
                Err(controller::Error::ReconcilerFailed(..)) => {}
                Err(error) => warn!(error = %error, "controller error"),
            }
        })
        .await;
    info!("controller stopped");
    Ok(())
}
