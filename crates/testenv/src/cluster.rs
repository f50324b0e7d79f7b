//! Helpers for what tests and tools do to a cluster: apply manifests as a GitOps tool would,
//! and act as a ServiceAccount.

use std::path::Path;

use anyhow::{Context, Result};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{AuthInfo, Kubeconfig};
use kube::discovery::{ApiResource, Discovery, Scope};

/// Field manager of what testenv applies.
pub const FIELD_MANAGER: &str = "integration-test";

/// Ensures namespace `name` exists.
pub async fn ensure_namespace(client: &kube::Client, name: &str) -> Result<()> {
    let object = serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
    });
    Api::<Namespace>::all(client.clone())
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
        .with_context(|| format!("applying namespace {name}"))?;
    Ok(())
}

/// Applies every document of a multi-document YAML with server-side apply; namespaced
/// objects without a namespace go to `namespace`.
pub async fn apply_yaml(client: &kube::Client, yaml: &str, namespace: &str) -> Result<()> {
    use serde::Deserialize;
    let discovery = Discovery::new(client.clone()).run().await?;
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    for document in serde_yaml_ng::Deserializer::from_str(yaml) {
        let object = DynamicObject::deserialize(document)?;
        let types = object.types.clone().context("a document without a kind")?;
        let gvk = kube::api::GroupVersionKind::try_from(&types)?;
        let (resource, capabilities): (ApiResource, _) = discovery
            .resolve_gvk(&gvk)
            .with_context(|| format!("unknown kind {gvk:?}"))?;
        let api: Api<DynamicObject> = match capabilities.scope {
            Scope::Namespaced => Api::namespaced_with(
                client.clone(),
                object.metadata.namespace.as_deref().unwrap_or(namespace),
                &resource,
            ),
            Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        let name = object
            .metadata
            .name
            .clone()
            .context("a document without a name")?;
        api.patch(&name, &apply, &Patch::Apply(&object))
            .await
            .with_context(|| format!("applying {} {name}", types.kind))?;
    }
    Ok(())
}

/// Ensures ServiceAccount `account` exists in `ns` and returns a fresh token for it.
pub async fn service_account_token(
    client: &kube::Client,
    ns: &str,
    account: &str,
) -> Result<String> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let object = serde_json::json!({
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}
    });
    accounts
        .patch(
            account,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&object),
        )
        .await?;
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600 * 12),
            ..Default::default()
        },
        ..Default::default()
    };
    accounts
        .create_token_request(account, &PostParams::default(), &request)
        .await?
        .status
        .context("a token request without status")
        .map(|status| status.token)
}

/// The kubeconfig at `admin` (the environment's when `None`) with every user replaced by
/// `token`.
pub fn kubeconfig_with_token(admin: Option<&Path>, token: &str) -> Result<Kubeconfig> {
    let mut kubeconfig = match admin {
        Some(path) => Kubeconfig::read_from(path)?,
        None => Kubeconfig::read()?,
    };
    for named in &mut kubeconfig.auth_infos {
        named.auth_info = Some(AuthInfo {
            token: Some(token.to_string().into()),
            ..Default::default()
        });
    }
    Ok(kubeconfig)
}
