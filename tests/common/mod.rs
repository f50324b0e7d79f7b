//! Helpers shared by the integration tests: the test binary's cluster and per-test namespaces.
#![allow(dead_code)]

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::Kubeconfig;

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
    testenv::cluster::service_account_token(client, ns, account)
        .await
        .expect("service account token")
}

/// This test binary's kubeconfig with every user replaced by `token`.
pub fn kubeconfig_with_token(token: &str) -> Kubeconfig {
    testenv::cluster::kubeconfig_with_token(testenv::shared().kubeconfig(), token)
        .expect("read kubeconfig")
}

/// A client that authenticates with `token`.
pub async fn client_with_token(token: &str) -> Client {
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig_with_token(token), &Default::default())
            .await
            .expect("kube config");
    Client::try_from(config).expect("kube client")
}

pub mod manifests;
pub mod operator;
pub mod proxy;
