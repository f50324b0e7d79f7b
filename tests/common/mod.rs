//! Helpers shared by the integration tests: the test binary's cluster and per-test namespaces.
#![allow(dead_code)]

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{AuthInfo, Kubeconfig};

/// A client for this test binary's cluster (started on first use), bound to the caller's runtime.
pub async fn client() -> Client {
    testenv::shared().client().await.expect("kube client")
}

/// Creates a namespace of its own for one test: `<prefix>-<random>`.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let suffix: u32 = rand::random::<u32>() % 1_000_000;
    let name = format!("{prefix}-{suffix:06}");
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some([("testenv".to_string(), "true".to_string())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("create namespace");
    name
}

/// Ensures ServiceAccount `account` exists in `ns` and returns a fresh token for it.
pub async fn service_account_token(client: &Client, ns: &str, account: &str) -> String {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let object = serde_json::json!({
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}
    });
    accounts
        .patch(
            account,
            &PatchParams::apply("integration-test"),
            &Patch::Apply(&object),
        )
        .await
        .expect("apply ServiceAccount");
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    accounts
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .expect("token request")
        .status
        .expect("token status")
        .token
}

/// This test binary's kubeconfig with every user replaced by `token`.
pub fn kubeconfig_with_token(token: &str) -> Kubeconfig {
    let mut kubeconfig = match testenv::shared().kubeconfig() {
        Some(admin) => Kubeconfig::read_from(admin).expect("read kubeconfig"),
        None => Kubeconfig::read().expect("read kubeconfig"),
    };
    for named in &mut kubeconfig.auth_infos {
        named.auth_info = Some(AuthInfo {
            token: Some(token.to_string().into()),
            ..Default::default()
        });
    }
    kubeconfig
}

/// A client that authenticates with `token`.
pub async fn client_with_token(token: &str) -> Client {
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig_with_token(token), &Default::default())
            .await
            .expect("kube config");
    Client::try_from(config).expect("kube client")
}

pub mod operator;
