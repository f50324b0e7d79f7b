//! The Argo CD health check (deploy/argocd/health.lua), run with a Lua 5.1 interpreter (Argo
//! CD's gopher-lua speaks Lua 5.1) against statuses the operator really wrote on the control
//! plane, one for each Ready reason.

mod common;

use std::path::PathBuf;

use baseten_secrets_operator::BasetenSecret;
use common::operator::{Harness, OperatorOptions};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use mlua::LuaSerdeExt;
use serde_json::{Value, json};

fn script() -> String {
    std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/argocd/health.lua"),
    )
    .unwrap()
}

/// What the script says of `object`: (status, message).
fn health(object: &Value) -> (String, String) {
    let lua = mlua::Lua::new();
    let options = mlua::SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    lua.globals()
        .set("obj", lua.to_value_with(object, options).unwrap())
        .unwrap();
    let result: mlua::Table = lua.load(script()).eval().unwrap();
    (
        result.get("status").unwrap(),
        result
            .get::<Option<String>>("message")
            .unwrap()
            .unwrap_or_default(),
    )
}

/// The object as the apiserver serves it (what Argo CD hands the script).
async fn live(h: &Harness, name: &str) -> Value {
    let api: Api<DynamicObject> = Api::namespaced_with(
        h.client.clone(),
        &h.ns,
        &ApiResource::erase::<BasetenSecret>(&()),
    );
    serde_json::to_value(api.get(name).await.unwrap()).unwrap()
}

/// Waits for `reason`, then checks the script's verdict on the live object.
async fn judge(h: &Harness, name: &str, reason: &str, status: &str) {
    let object = h.wait_reason(name, reason).await;
    let (got, message) = health(&live(h, name).await);
    assert_eq!(got, status, "{name} ({reason}): {message}");
    let condition = object.ready_condition().unwrap();
    assert!(
        message.starts_with(reason) && message.contains(&condition.message),
        "{name}: the message carries the reason and the condition's message: {message}"
    );
    eprintln!("{reason:>18} -> {got}: {message}");
}

async fn bts(h: &Harness, name: &str, spec: Value) {
    h.apply_bts(name, spec, json!({})).await.unwrap();
}

#[tokio::test]
async fn the_health_script_judges_every_ready_reason_as_argo_cd_should() {
    let mut h = Harness::start("argocd").await;

    // No status yet: Progressing.
    let (status, _) = health(&json!({
        "metadata": {"name": "new", "generation": 1},
        "spec": {"secretRef": {"name": "s", "key": "k"}}
    }));
    assert_eq!(status, "Progressing");

    h.synced("synced", "synced", "token", b"v").await;
    judge(&h, "synced", "Synced", "Healthy").await;

    h.baseten_upsert("theirs", "set-by-hand").await;
    h.apply_secret("mine", &[("token", b"mine")], json!({}))
        .await;
    let mine = json!({"name": "mine", "key": "token"});
    bts(
        &h,
        "exists",
        json!({"secretRef": mine, "basetenName": "theirs", "updatePolicy": "IfNotExists"}),
    )
    .await;
    judge(&h, "exists", "AlreadyExists", "Healthy").await;

    bts(&h, "paused", json!({"secretRef": mine, "suspend": true})).await;
    judge(&h, "paused", "Suspended", "Suspended").await;

    bts(
        &h,
        "no-secret",
        json!({"secretRef": {"name": "missing", "key": "token"}}),
    )
    .await;
    judge(&h, "no-secret", "SecretNotFound", "Degraded").await;

    bts(
        &h,
        "no-key",
        json!({"secretRef": {"name": "mine", "key": "other"}}),
    )
    .await;
    judge(&h, "no-key", "KeyNotFound", "Degraded").await;

    h.apply_secret("binary", &[("token", &[0xff, 0xfe])], json!({}))
        .await;
    bts(
        &h,
        "binary",
        json!({"secretRef": {"name": "binary", "key": "token"}}),
    )
    .await;
    judge(&h, "binary", "InvalidValue", "Degraded").await;

    h.apply_secret("wrong-key", &[("key", b"not-a-baseten-key")], json!({}))
        .await;
    bts(&h, "wrong-key", json!({"secretRef": mine, "basetenName": "w", "apiKeyRef": {"name": "wrong-key", "key": "key"}})).await;
    judge(&h, "wrong-key", "Unauthorized", "Degraded").await;

    bts(&h, "no-api-key", json!({"secretRef": mine, "basetenName": "n", "apiKeyRef": {"name": "absent", "key": "key"}})).await;
    judge(&h, "no-api-key", "ApiKeyNotFound", "Degraded").await;

    bts(
        &h,
        "team",
        json!({"secretRef": mine, "basetenName": "t", "team": "No Such Team"}),
    )
    .await;
    judge(&h, "team", "TeamNotFound", "Degraded").await;

    bts(
        &h,
        "younger",
        json!({"secretRef": mine, "basetenName": "synced"}),
    )
    .await;
    judge(&h, "younger", "Conflict", "Degraded").await;

    // Baseten's answers, one fault at a time.
    let write = json!({"path_prefix": "/v1/secrets", "method": "POST", "count": 1000});
    for (name, status, reason) in [
        ("down", 503, "BasetenUnavailable"),
        ("throttled", 429, "RateLimited"),
        ("rejected", 400, "BasetenRejected"),
    ] {
        let mut fault = write.clone();
        fault["status"] = json!(status);
        h.fault(fault).await;
        bts(&h, name, json!({"secretRef": mine, "basetenName": name})).await;
        judge(&h, name, reason, "Degraded").await;
        h.clear_faults().await;
    }

    let remove = |status: u16| json!({"path_prefix": "/v1/secrets", "method": "DELETE", "count": 1000, "status": status});
    for (name, status, reason) in [
        ("blocked", 503, "DeletionBlocked"),
        ("deleting", 429, "Deleting"),
    ] {
        bts(
            &h,
            name,
            json!({"secretRef": mine, "basetenName": name, "deletionPolicy": "Delete"}),
        )
        .await;
        h.wait_reason(name, "Synced").await;
        h.fault(remove(status)).await;
        h.bts_api().delete(name, &Default::default()).await.unwrap();
        judge(&h, name, reason, "Degraded").await;
        h.clear_faults().await;
    }

    // A spec change the operator has not seen yet: Progressing, whatever the old status.
    h.stop_operator();
    h.bts_api()
        .patch(
            "synced",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"refreshInterval": "1h"}})),
        )
        .await
        .unwrap();
    let (status, message) = health(&live(&h, "synced").await);
    assert_eq!(status, "Progressing", "{message}");
    assert!(message.contains("generation 2"), "{message}");

    // With a label selector, an unlabelled Secret is refused.
    let h = Harness::start_with(
        "argocd-selector",
        OperatorOptions {
            secret_label_selector: Some("baseten.co/push=true".into()),
            ..Default::default()
        },
    )
    .await;
    h.apply_secret("unlabelled", &[("token", b"x")], json!({}))
        .await;
    bts(
        &h,
        "unlabelled",
        json!({"secretRef": {"name": "unlabelled", "key": "token"}}),
    )
    .await;
    judge(&h, "unlabelled", "SecretNotAllowed", "Degraded").await;
}

#[test]
fn the_argocd_cm_patch_carries_the_script_unchanged() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let patch: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root.join("deploy/argocd/argocd-cm-patch.yaml")).unwrap(),
    )
    .unwrap();
    for kind in ["BasetenSecret", "BasetenSecretSet"] {
        let key = format!("resource.customizations.health.baseten.co_{kind}");
        let embedded = patch["data"][key.as_str()].as_str().unwrap();
        assert_eq!(embedded, script(), "{kind}");
    }
}

/// The live set `name` (what Argo CD hands the script).
async fn live_set(h: &Harness, name: &str) -> Value {
    let api: Api<DynamicObject> = Api::namespaced_with(
        h.client.clone(),
        &h.ns,
        &ApiResource::erase::<baseten_secrets_operator::BasetenSecretSet>(&()),
    );
    serde_json::to_value(api.get(name).await.unwrap()).unwrap()
}

/// Waits for the set's `reason`, then checks the script's verdict on the live object.
async fn judge_set(h: &Harness, name: &str, reason: &str, status: &str) {
    let set = h.wait_set_reason(name, reason).await;
    let (got, message) = health(&live_set(h, name).await);
    assert_eq!(got, status, "set {name} ({reason}): {message}");
    let condition = set.ready_condition().unwrap();
    assert!(
        message.starts_with(reason) && message.contains(&condition.message),
        "set {name}: {message}"
    );
}

#[tokio::test]
async fn the_health_script_judges_sets_too() {
    let h = Harness::start("argocd-sets").await;
    h.apply_secret("creds", &[("one", b"1"), ("two", b"2")], json!({}))
        .await;
    h.apply_set("ready", json!({"secretName": "creds"}))
        .await
        .unwrap();
    judge_set(&h, "ready", "Ready", "Healthy").await;
    h.apply_secret("dups", &[("a-b", b"1"), ("a_b", b"2")], json!({}))
        .await;
    h.apply_set("dups", json!({"secretName": "dups"}))
        .await
        .unwrap();
    judge_set(&h, "dups", "DuplicateNames", "Degraded").await;
    h.apply_set("missing", json!({"secretName": "nowhere"}))
        .await
        .unwrap();
    judge_set(&h, "missing", "SecretNotFound", "Degraded").await;
    // A child that cannot be Ready makes its set NotReady, with the child named.
    h.apply_set(
        "waiting",
        json!({"secretName": "creds", "keys": "^one$", "template": {"team": "No Such Team"}}),
    )
    .await
    .unwrap();
    h.wait_set("waiting", "the child's reason in the message", |o| {
        o.ready_condition()
            .is_some_and(|c| c.message.contains("waiting-one (TeamNotFound)"))
    })
    .await;
    judge_set(&h, "waiting", "NotReady", "Degraded").await;
}
