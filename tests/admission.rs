//! The admission policy of deploy/base on the real control plane: a BasetenSecret may name
//! only Secrets its author may read. Users are impersonated from the admin kubeconfig;
//! the GitOps account is a ServiceAccount with a token of its own.
//!
//! The policy is cluster-wide once applied, so every test here applies it (idempotently)
//! and writes BasetenSecrets only as someone who may read what they name.

mod common;

use std::time::{Duration, Instant};

use baseten_secrets_operator::BasetenSecret;
use baseten_secrets_operator::crd::CLEANUP_FINALIZER;
use common::manifests::rendered;
use common::operator::{Harness, install_crd};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

/// The kinds of the policy's two objects.
const POLICY_KINDS: [&str; 2] = [
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
];

/// How long the policy, or a new RBAC grant, may take to be enforced.
const WAIT: Duration = Duration::from_secs(30);

/// What every BasetenSecret author here may do with BasetenSecrets in their namespace.
fn author_rules() -> Value {
    json!([{"apiGroups": ["baseten.co"], "resources": ["basetensecrets"],
            "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}])
}

/// Get on exactly the named Secrets.
fn read_rules(secrets: &[&str]) -> Value {
    json!([{"apiGroups": [""], "resources": ["secrets"], "resourceNames": secrets,
            "verbs": ["get"]}])
}

/// Applies the policy and its binding as `deploy/base` renders them, and waits until a
/// create that the policy refuses is refused.
async fn install_policy(admin: &Client) {
    install_crd(admin).await;
    let shipped: Vec<String> = rendered("base")
        .into_iter()
        .filter(|doc| POLICY_KINDS.iter().any(|kind| doc["kind"] == *kind))
        .map(|doc| serde_yaml_ng::to_string(&doc).unwrap())
        .collect();
    assert_eq!(
        shipped.len(),
        4,
        "deploy/base ships the policies of both kinds and their bindings"
    );
    testenv::cluster::apply_yaml(admin, &shipped.join("---\n"), "default")
        .await
        .expect("apply the admission policy");

    // A user who may create BasetenSecrets but read no Secret; dry runs leave nothing behind.
    let ns = common::namespace(admin, "adm-probe").await;
    let user = format!("probe-{ns}");
    grant(admin, &ns, "author", &user_subject(&user), author_rules()).await;
    let probe = bts_api(&client_as(&user).await, &ns);
    let object = bts(
        "probe",
        json!({"secretRef": {"name": "unreadable", "key": "k"}}),
    );
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let deadline = Instant::now() + WAIT;
    loop {
        match probe.create(&dry_run, &object).await {
            Err(kube::Error::Api(status))
                if status.message.contains("ValidatingAdmissionPolicy") =>
            {
                return;
            }
            outcome => assert!(
                Instant::now() < deadline,
                "the policy was not enforced within {WAIT:?}: {outcome:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A client of this test binary's cluster acting as `user` (the admin may impersonate).
async fn client_as(user: &str) -> Client {
    testenv::install_crypto_provider();
    let mut config = match testenv::shared().kubeconfig() {
        Some(path) => kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(path).unwrap(),
            &Default::default(),
        )
        .await
        .unwrap(),
        None => kube::Config::infer().await.unwrap(),
    };
    config.auth_info.impersonate = Some(user.to_string());
    Client::try_from(config).unwrap()
}

fn user_subject(user: &str) -> Value {
    json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user})
}

/// A Role `name` with `rules` in `ns`, bound to `subject`.
async fn grant(admin: &Client, ns: &str, name: &str, subject: &Value, rules: Value) {
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                      "metadata": {"name": name}, "rules": rules});
    bind(admin, ns, name, subject, "Role").await;
    apply(admin, ns, role).await;
}

/// A RoleBinding `name` in `ns` of `subject` to the Role or ClusterRole `name`.
async fn bind(admin: &Client, ns: &str, name: &str, subject: &Value, kind: &str) {
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                         "metadata": {"name": name}, "subjects": [subject],
                         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name}});
    apply(admin, ns, binding).await;
}

async fn apply(admin: &Client, ns: &str, object: Value) {
    testenv::cluster::apply_yaml(admin, &serde_json::to_string(&object).unwrap(), ns)
        .await
        .unwrap();
}

/// A Secret `name` with one key `token`, written by the admin.
async fn secret(admin: &Client, ns: &str, name: &str, value: &str) {
    apply(
        admin,
        ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
               "stringData": {"token": value}}),
    )
    .await;
}

fn bts(name: &str, spec: Value) -> BasetenSecret {
    serde_json::from_value(json!({
        "apiVersion": "baseten.co/v1alpha1", "kind": "BasetenSecret",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

fn bts_api(client: &Client, ns: &str) -> Api<BasetenSecret> {
    Api::namespaced(client.clone(), ns)
}

/// Whether an error is RBAC refusing the request itself ("User … cannot create …"), which a
/// grant made a moment ago can still cause: the policy's own refusals never say "cannot".
fn rbac_lag<T>(outcome: &kube::Result<T>) -> bool {
    matches!(outcome, Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains(" cannot "))
}

/// Runs `op` again while RBAC still refuses it (a grant not yet in the authorizer's cache).
async fn settled<T>(mut op: impl AsyncFnMut() -> kube::Result<T>) -> kube::Result<T> {
    let deadline = Instant::now() + WAIT;
    loop {
        let outcome = op().await;
        if !rbac_lag(&outcome) || Instant::now() > deadline {
            return outcome;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `op` until it succeeds (a new grant reaches the policy's authorizer checks too).
async fn eventually<T>(mut op: impl AsyncFnMut() -> kube::Result<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        match op().await {
            Ok(value) => return value,
            Err(error) if Instant::now() > deadline => {
                panic!("still refused after {WAIT:?}: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The message of the policy's refusal of `outcome`, which must name `ns/secret` and the
/// missing permission.
fn refusal<T: std::fmt::Debug>(outcome: kube::Result<T>, ns: &str, secret: &str) -> String {
    let status = match outcome {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected the policy to refuse naming {ns}/{secret}, got {other:?}"),
    };
    assert_eq!(status.code, 403, "{status:?}");
    assert_eq!(status.reason, "Forbidden", "{status:?}");
    let message = status.message;
    assert!(
        message.contains("ValidatingAdmissionPolicy"),
        "refused by the policy: {message}"
    );
    assert!(
        message.contains(&format!("Secret {ns}/{secret},")),
        "names the Secret: {message}"
    );
    assert!(
        message.contains("get secrets"),
        "names the permission: {message}"
    );
    message
}

#[tokio::test]
async fn naming_a_secret_one_may_not_read_is_refused_with_the_secret_and_the_permission() {
    let admin = common::client().await;
    install_policy(&admin).await;
    let ns = common::namespace(&admin, "adm-refused").await;
    secret(&admin, &ns, "db-password", "hunter2").await;
    secret(&admin, &ns, "own-key", "tenant-key").await;
    let user = format!("alice-{ns}");
    grant(&admin, &ns, "author", &user_subject(&user), author_rules()).await;
    let alice = bts_api(&client_as(&user).await, &ns);

    let spec = json!({"secretRef": {"name": "db-password", "key": "token"}});
    let outcome = settled(async || {
        alice
            .create(&PostParams::default(), &bts("push", spec.clone()))
            .await
    })
    .await;
    let message = refusal(outcome, &ns, "db-password");
    assert!(message.contains("spec.secretRef"), "{message}");
    assert!(message.contains(&user), "says who may not: {message}");
    assert!(!message.contains("hunter2"), "no value in the refusal");
    assert!(
        bts_api(&admin, &ns)
            .get_opt("push")
            .await
            .unwrap()
            .is_none(),
        "nothing was created"
    );

    // Her own API key does not help: the value's Secret is still unreadable to her.
    grant(
        &admin,
        &ns,
        "own-key",
        &user_subject(&user),
        read_rules(&["own-key"]),
    )
    .await;
    let with_own_key = json!({"secretRef": {"name": "db-password", "key": "token"},
                              "apiKeyRef": {"name": "own-key", "key": "token"}});
    let outcome = alice
        .create(&PostParams::default(), &bts("push", with_own_key))
        .await;
    refusal(outcome, &ns, "db-password");

    // Nor does naming a readable value with someone else's key.
    let other_key = json!({"secretRef": {"name": "own-key", "key": "token"},
                           "apiKeyRef": {"name": "db-password", "key": "token"}});
    let outcome = past_the_secret_ref(async || {
        alice
            .create(&PostParams::default(), &bts("push", other_key.clone()))
            .await
    })
    .await;
    let message = refusal(outcome, &ns, "db-password");
    assert!(message.contains("spec.apiKeyRef"), "{message}");
}

/// Runs `op` until neither RBAC nor the policy's check of `spec.secretRef` refuses it: a
/// grant made a moment ago may not have reached either yet.
async fn past_the_secret_ref<T>(mut op: impl AsyncFnMut() -> kube::Result<T>) -> kube::Result<T> {
    let deadline = Instant::now() + WAIT;
    loop {
        let outcome = op().await;
        let secret_ref_refused = matches!(
            &outcome,
            Err(kube::Error::Api(s)) if s.message.contains("spec.secretRef names")
        );
        if !(secret_ref_refused || rbac_lag(&outcome)) || Instant::now() > deadline {
            return outcome;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn get_on_exactly_that_secret_is_enough_and_no_other_secret_comes_with_it() {
    let admin = common::client().await;
    install_policy(&admin).await;
    let ns = common::namespace(&admin, "adm-granted").await;
    secret(&admin, &ns, "hf-credentials", "hf_value").await;
    secret(&admin, &ns, "neighbour", "other").await;
    let user = format!("bob-{ns}");
    grant(&admin, &ns, "author", &user_subject(&user), author_rules()).await;
    grant(
        &admin,
        &ns,
        "reader",
        &user_subject(&user),
        read_rules(&["hf-credentials"]),
    )
    .await;
    let bob = bts_api(&client_as(&user).await, &ns);

    let spec = json!({"secretRef": {"name": "hf-credentials", "key": "token"}});
    let created = eventually(async || {
        bob.create(&PostParams::default(), &bts("hf", spec.clone()))
            .await
    })
    .await;
    assert_eq!(created.spec.secret_ref.name, "hf-credentials");

    // An explicit null apiKeyRef is no reference at all.
    let null_key =
        json!({"secretRef": {"name": "hf-credentials", "key": "token"}, "apiKeyRef": null});
    bob.create(&PostParams::default(), &bts("hf-null-key", null_key))
        .await
        .expect("a null apiKeyRef names nothing");

    let outcome = bob
        .create(
            &PostParams::default(),
            &bts(
                "next-door",
                json!({"secretRef": {"name": "neighbour", "key": "token"}}),
            ),
        )
        .await;
    refusal(outcome, &ns, "neighbour");
}

/// Makes `role` hold the rules of the ClusterRoles its aggregation rule selects, as
/// kube-controller-manager's clusterrole-aggregation controller does: the tests' control
/// plane runs no controller manager, which leaves the built-in `admin`, `edit` and `view`
/// empty. On a cluster that aggregates, the rules are there already and nothing changes.
async fn aggregated(admin: &Client, role: &str) {
    let roles: Api<ClusterRole> = Api::all(admin.clone());
    let mut target = roles.get(role).await.unwrap();
    if target.rules.as_ref().is_some_and(|r| !r.is_empty()) {
        return;
    }
    let selectors = target
        .aggregation_rule
        .as_ref()
        .and_then(|a| a.cluster_role_selectors.clone())
        .expect("an aggregated ClusterRole");
    let mut rules = Vec::new();
    for selector in selectors {
        let labels = selector
            .match_labels
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let parts = roles
            .list(&kube::api::ListParams::default().labels(&labels))
            .await
            .unwrap();
        for part in parts.items {
            rules.extend(part.rules.unwrap_or_default());
        }
    }
    target.rules = Some(rules);
    target.metadata.managed_fields = None;
    roles
        .replace(role, &PostParams::default(), &target)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_gitops_service_account_with_the_edit_role_pushes_the_secrets_of_its_namespace() {
    let admin = common::client().await;
    install_policy(&admin).await;
    let ns = common::namespace(&admin, "adm-gitops").await;
    secret(&admin, &ns, "hf-credentials", "hf_value").await;
    secret(&admin, &ns, "tenant-key", "key").await;
    let account = json!({"kind": "ServiceAccount", "name": "gitops", "namespace": ns});
    // `edit` reads and writes Secrets (`view` reads none); BasetenSecrets are not in it, as
    // no custom resource is unless its installer aggregates a role into it.
    aggregated(&admin, "edit").await;
    bind(&admin, &ns, "edit", &account, "ClusterRole").await;
    grant(&admin, &ns, "author", &account, author_rules()).await;
    let token = common::service_account_token(&admin, &ns, "gitops").await;
    let gitops = bts_api(&common::client_with_token(&token).await, &ns);

    let spec = json!({"secretRef": {"name": "hf-credentials", "key": "token"},
                      "apiKeyRef": {"name": "tenant-key", "key": "token"}});
    let object = bts("hf", spec);
    // Server-side apply, as a GitOps tool writes: a create, then an update of the same.
    let apply = PatchParams::apply("gitops").force();
    eventually(async || gitops.patch("hf", &apply, &Patch::Apply(&object)).await).await;
    let mut relabelled = object.clone();
    relabelled
        .labels_mut()
        .insert("revision".into(), "2".into());
    let applied = gitops
        .patch("hf", &apply, &Patch::Apply(&relabelled))
        .await
        .unwrap();
    assert_eq!(
        applied.labels().get("revision").map(String::as_str),
        Some("2")
    );
}

#[tokio::test]
async fn retargeting_a_reference_needs_read_access_and_other_edits_do_not() {
    let admin = common::client().await;
    install_policy(&admin).await;
    let ns = common::namespace(&admin, "adm-retarget").await;
    for name in ["allowed", "own-key", "private"] {
        secret(&admin, &ns, name, "v").await;
    }
    let user = format!("carol-{ns}");
    grant(&admin, &ns, "author", &user_subject(&user), author_rules()).await;
    grant(
        &admin,
        &ns,
        "reader",
        &user_subject(&user),
        read_rules(&["allowed", "own-key"]),
    )
    .await;
    let carol = bts_api(&client_as(&user).await, &ns);
    let spec = json!({"secretRef": {"name": "allowed", "key": "token"}});
    eventually(async || {
        carol
            .create(&PostParams::default(), &bts("mine", spec.clone()))
            .await
    })
    .await;
    let merge = |patch: Value| Patch::Merge(patch);
    let params = PatchParams::default();

    // Her own resource, pointed at a Secret she may not read: refused, and left as it was.
    let outcome = carol
        .patch(
            "mine",
            &params,
            &merge(json!({"spec": {"secretRef": {"name": "private"}}})),
        )
        .await;
    refusal(outcome, &ns, "private");
    let outcome = carol
        .patch(
            "mine",
            &params,
            &merge(json!({"spec": {"apiKeyRef": {"name": "private", "key": "token"}}})),
        )
        .await;
    refusal(outcome, &ns, "private");
    let mine = bts_api(&admin, &ns).get("mine").await.unwrap();
    assert_eq!(mine.spec.secret_ref.name, "allowed");
    assert!(mine.spec.api_key_ref.is_none());

    // A full replace counts as much as a patch.
    let mut replaced = mine.clone();
    replaced.spec.secret_ref.name = "private".into();
    replaced.metadata.managed_fields = None;
    let outcome = carol
        .replace("mine", &PostParams::default(), &replaced)
        .await;
    refusal(outcome, &ns, "private");

    // A resource the admin made, naming a Secret she may not read: she may label it and
    // change fields other than the references...
    let theirs = json!({"secretRef": {"name": "private", "key": "token"}});
    bts_api(&admin, &ns)
        .create(&PostParams::default(), &bts("theirs", theirs))
        .await
        .unwrap();
    let labelled = carol
        .patch(
            "theirs",
            &params,
            &merge(json!({"metadata": {"labels": {"owner": "carol"}}, "spec": {"suspend": true}})),
        )
        .await
        .expect("an edit that keeps both references passes");
    assert_eq!(
        labelled.labels().get("owner").map(String::as_str),
        Some("carol")
    );
    assert!(labelled.spec.suspend);

    // ...but pointing it at her own API key would send its value to her organisation.
    let outcome = carol
        .patch(
            "theirs",
            &params,
            &merge(json!({"spec": {"apiKeyRef": {"name": "own-key", "key": "token"}}})),
        )
        .await;
    let message = refusal(outcome, &ns, "private");
    assert!(message.contains("spec.secretRef"), "{message}");
    let theirs = bts_api(&admin, &ns).get("theirs").await.unwrap();
    assert!(theirs.spec.api_key_ref.is_none(), "left as it was");

    // Deleting is not a read: she may delete it.
    carol
        .delete("theirs", &DeleteParams::default())
        .await
        .expect("deletes are not checked");
}

#[tokio::test]
async fn the_operator_syncs_and_finalizes_a_resource_of_a_permitted_user_with_the_policy_on() {
    let h = Harness::start("adm-operator").await;
    install_policy(&h.client).await;
    h.apply_secret("hf-credentials", &[("token", b"hf_value")], json!({}))
        .await;
    let user = format!("dave-{}", h.ns);
    grant(
        &h.client,
        &h.ns,
        "author",
        &user_subject(&user),
        author_rules(),
    )
    .await;
    grant(
        &h.client,
        &h.ns,
        "reader",
        &user_subject(&user),
        read_rules(&["hf-credentials"]),
    )
    .await;
    let dave = bts_api(&client_as(&user).await, &h.ns);
    let spec = json!({"secretRef": {"name": "hf-credentials", "key": "token"},
                      "deletionPolicy": "Delete"});
    eventually(async || {
        dave.create(&PostParams::default(), &bts("hf", spec.clone()))
            .await
    })
    .await;

    // The status write and the finalizer patch both get through.
    let synced = h.wait_reason("hf", "Synced").await;
    assert!(
        synced.finalizers().iter().any(|f| f == CLEANUP_FINALIZER),
        "the operator added its finalizer: {:?}",
        synced.finalizers()
    );
    h.wait_baseten("hf", "the value", |s| s.value == "hf_value")
        .await;

    // Deleting it: the operator deletes the Baseten secret and removes its finalizer.
    dave.delete("hf", &DeleteParams::default()).await.unwrap();
    h.wait_gone("hf").await;
    assert!(
        h.baseten_secret("hf").await.is_none(),
        "deleted from Baseten"
    );
    let logs = h.operator_logs();
    assert!(!logs.contains("ValidatingAdmissionPolicy"), "{logs}");
}

fn set(name: &str, spec: Value) -> baseten_secrets_operator::BasetenSecretSet {
    serde_json::from_value(json!({
        "apiVersion": "baseten.co/v1alpha1", "kind": "BasetenSecretSet",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

#[tokio::test]
async fn a_set_needs_the_right_to_read_what_it_names_or_selects() {
    let admin = common::client().await;
    install_policy(&admin).await;
    let ns = common::namespace(&admin, "adm-sets").await;
    secret(&admin, &ns, "ml-credentials", "hunter2").await;
    secret(&admin, &ns, "own-key", "tenant-key").await;
    let user = format!("bob-{ns}");
    let set_rules = json!([{"apiGroups": ["baseten.co"], "resources": ["basetensecretsets"],
                            "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}]);
    grant(&admin, &ns, "set-author", &user_subject(&user), set_rules).await;
    let bob: Api<baseten_secrets_operator::BasetenSecretSet> =
        Api::namespaced(client_as(&user).await, &ns);
    let by_name = json!({"secretName": "ml-credentials"});
    let outcome = settled(async || {
        bob.create(&PostParams::default(), &set("by-name", by_name.clone()))
            .await
    })
    .await;
    let message = refusal(outcome, &ns, "ml-credentials");
    assert!(
        message.contains("spec.secretName") && !message.contains("hunter2"),
        "{message}"
    );

    // Get on that Secret is enough; its API key Secret needs get too.
    grant(
        &admin,
        &ns,
        "read",
        &user_subject(&user),
        read_rules(&["ml-credentials"]),
    )
    .await;
    eventually(async || {
        bob.create(&PostParams::default(), &set("by-name", by_name.clone()))
            .await
    })
    .await;
    let keyed = json!({"secretName": "ml-credentials",
                       "template": {"apiKeyRef": {"name": "own-key", "key": "token"}}});
    let outcome = bob
        .create(&PostParams::default(), &set("keyed", keyed))
        .await;
    let message = refusal(outcome, &ns, "own-key");
    assert!(message.contains("spec.template.apiKeyRef"), "{message}");

    // A selector needs list on Secrets of the namespace.
    let selected = json!({"secretSelector": {"matchLabels": {"baseten.co/push": "true"}}});
    let outcome = bob
        .create(&PostParams::default(), &set("selected", selected.clone()))
        .await;
    let Err(kube::Error::Api(status)) = outcome else {
        panic!("a selector without list on Secrets was let through: {outcome:?}")
    };
    assert!(
        status.message.contains("ValidatingAdmissionPolicy")
            && status.message.contains("list secrets"),
        "{}",
        status.message
    );
    let list = json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}]);
    grant(&admin, &ns, "list", &user_subject(&user), list).await;
    eventually(async || {
        bob.create(&PostParams::default(), &set("selected", selected.clone()))
            .await
    })
    .await;
}
