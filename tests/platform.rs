//! Proves that the test platform is a real Kubernetes control plane: CRDs become Established,
//! status is a subresource, watches deliver events, server-side apply tracks field owners,
//! finalizers block deletion, and RBAC is enforced for service-account tokens.

mod common;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::watcher;
use kube::{Client, Error};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

fn widget_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.testenv.example.com"},
        "spec": {
            "group": "testenv.example.com",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                        "status": {"type": "object", "properties": {"phase": {"type": "string"}}}
                    }
                }}
            }]
        }
    }))
    .unwrap()
}

async fn install_widget_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "widgets.testenv.example.com",
        &PatchParams::apply("platform-test").force(),
        &Patch::Apply(widget_crd()),
    )
    .await
    .unwrap();
    tokio::time::timeout(
        WAIT,
        await_condition(
            crds,
            "widgets.testenv.example.com",
            conditions::is_crd_established(),
        ),
    )
    .await
    .expect("CRD Established in time")
    .unwrap();
}

#[tokio::test]
async fn crd_is_established_and_status_is_a_subresource() {
    let client = common::client().await;
    install_widget_crd(&client).await;
    let ns = common::namespace(&client, "platform-crd").await;
    let resource = kube::discovery::ApiResource {
        group: "testenv.example.com".into(),
        version: "v1".into(),
        api_version: "testenv.example.com/v1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
    };
    let widgets: Api<kube::api::DynamicObject> = Api::namespaced_with(client, &ns, &resource);
    let created = widgets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "testenv.example.com/v1", "kind": "Widget",
                "metadata": {"name": "w"}, "spec": {"size": 1}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));

    let status = Patch::Merge(json!({"status": {"phase": "Ready"}}));
    let patched = widgets
        .patch_status("w", &PatchParams::default(), &status)
        .await
        .unwrap();
    assert_eq!(patched.data["status"]["phase"], "Ready");
    assert_eq!(
        patched.metadata.generation,
        Some(1),
        "a status patch does not bump generation"
    );

    // Status written through the main resource is ignored, spec written is counted.
    let spec = Patch::Merge(json!({"spec": {"size": 2}, "status": {"phase": "Ignored"}}));
    let patched = widgets
        .patch("w", &PatchParams::default(), &spec)
        .await
        .unwrap();
    assert_eq!(patched.metadata.generation, Some(2));
    assert_eq!(patched.data["status"]["phase"], "Ready");
}

#[tokio::test]
async fn watch_delivers_events() {
    let client = common::client().await;
    let ns = common::namespace(&client, "platform-watch").await;
    let maps: Api<ConfigMap> = Api::namespaced(client, &ns);
    let mut events = watcher(maps.clone(), watcher::Config::default()).boxed();
    // The initial listing ends before the object exists.
    loop {
        match events.try_next().await.unwrap().unwrap() {
            watcher::Event::InitDone => break,
            _ => continue,
        }
    }
    let map: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "watched"}})).unwrap();
    maps.create(&PostParams::default(), &map).await.unwrap();
    let seen = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(watcher::Event::Apply(object)) = events.try_next().await.unwrap() {
                return object.metadata.name;
            }
        }
    })
    .await
    .expect("watch event in time");
    assert_eq!(seen.as_deref(), Some("watched"));
}

#[tokio::test]
async fn server_side_apply_tracks_field_managers() {
    let client = common::client().await;
    let ns = common::namespace(&client, "platform-ssa").await;
    let maps: Api<ConfigMap> = Api::namespaced(client, &ns);
    let apply = |value: &str| {
        Patch::Apply(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "applied"}, "data": {"owner": value}
        }))
    };
    maps.patch("applied", &PatchParams::apply("first"), &apply("first"))
        .await
        .unwrap();
    let conflict = maps
        .patch("applied", &PatchParams::apply("second"), &apply("second"))
        .await;
    match conflict {
        Err(Error::Api(status)) => assert_eq!(status.code, 409),
        other => panic!("expected a field-manager conflict, got {other:?}"),
    }
    let forced = maps
        .patch(
            "applied",
            &PatchParams::apply("second").force(),
            &apply("second"),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["owner"], "second");
    let managers: Vec<String> = forced
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|entry| entry.manager)
        .collect();
    assert!(managers.contains(&"second".to_string()), "{managers:?}");
}

#[tokio::test]
async fn finalizer_blocks_deletion_until_removed() {
    let client = common::client().await;
    let ns = common::namespace(&client, "platform-finalizer").await;
    let maps: Api<ConfigMap> = Api::namespaced(client, &ns);
    let map: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "held", "finalizers": ["testenv.example.com/hold"]}
    }))
    .unwrap();
    maps.create(&PostParams::default(), &map).await.unwrap();
    maps.delete("held", &DeleteParams::default()).await.unwrap();
    let held = maps
        .get("held")
        .await
        .expect("still present while the finalizer is set");
    assert!(held.metadata.deletion_timestamp.is_some());

    let release = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    maps.patch("held", &PatchParams::default(), &release)
        .await
        .unwrap();
    tokio::time::timeout(WAIT, async {
        while maps.get_opt("held").await.unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("deleted once the finalizer is removed");
}

#[tokio::test]
async fn rbac_denies_an_unbound_service_account_and_allows_a_bound_one() {
    let client = common::client().await;
    let ns = common::namespace(&client, "platform-rbac").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "s"}, "stringData": {"k": "v"}
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();

    let role: Role = Role {
        metadata: kube::api::ObjectMeta {
            name: Some("secret-reader".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["".into()]),
            resources: Some(vec!["secrets".into()]),
            verbs: vec!["get".into(), "list".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding = RoleBinding {
        metadata: kube::api::ObjectMeta {
            name: Some("reader".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "secret-reader".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "reader".into(),
            namespace: Some(ns.clone()),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();

    let stranger =
        common::client_with_token(&common::service_account_token(&client, &ns, "stranger").await)
            .await;
    match Api::<Secret>::namespaced(stranger, &ns).get("s").await {
        Err(Error::Api(status)) => assert_eq!(status.code, 403),
        other => panic!(
            "an unbound service account read a Secret: {:?}",
            other.map(|_| ())
        ),
    }

    let reader =
        common::client_with_token(&common::service_account_token(&client, &ns, "reader").await)
            .await;
    let readable = Api::<Secret>::namespaced(reader.clone(), &ns);
    // RBAC changes reach the authorizer's cache quickly, but not synchronously.
    let got = tokio::time::timeout(WAIT, async {
        loop {
            match readable.get("s").await {
                Ok(secret) => return secret,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .expect("the bound service account can read Secrets");
    assert_eq!(got.metadata.name.as_deref(), Some("s"));
    // The binding grants reading only.
    match Api::<ConfigMap>::namespaced(reader, &ns)
        .list(&ListParams::default())
        .await
    {
        Err(Error::Api(status)) => assert_eq!(status.code, 403),
        other => panic!("the reader listed ConfigMaps: {:?}", other.map(|_| ())),
    }
}
