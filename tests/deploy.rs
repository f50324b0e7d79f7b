//! The shipped manifests on the real control plane: each overlay applies server-side with
//! kubectl, and the operator, run with that overlay's Deployment arguments and its
//! ServiceAccount's token, does the whole job (and, with the ha overlay, elects one leader).
//!
//! The overlays install fixed names (the operator's namespace, its ClusterRole, team-a and
//! team-b), so these tests take turns.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::manifests::{kubectl, rendered, repo};
use common::operator::{Deployed, Harness, OperatorOptions, Process};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role};
use kube::api::{Api, Patch, PatchParams};
use serde::Deserialize;
use serde_json::json;

/// The namespace every overlay installs the operator into.
const OPERATOR_NAMESPACE: &str = "baseten-secrets-operator";

/// The namespaces the namespaced overlay watches.
const TEAM_NAMESPACES: [&str; 2] = ["team-a", "team-b"];

/// One overlay test at a time: they share cluster-wide names.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Applies an overlay exactly as the README says, server-side.
fn apply_overlay(overlay: &str) {
    let out = kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-k",
        &format!("deploy/{overlay}"),
    ]);
    assert!(out.contains("serverside-applied"), "{out}");
}

/// The overlay's Deployment.
fn deployment(overlay: &str) -> serde_yaml_ng::Value {
    rendered(overlay)
        .into_iter()
        .find(|doc| doc["kind"] == "Deployment")
        .expect("a Deployment")
}

/// The operator container's arguments in the overlay's Deployment, without the key file
/// (the harness passes its own).
fn deployment_args(overlay: &str) -> Vec<String> {
    deployment(overlay)["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .filter(|a| !a.starts_with("--api-key-file"))
        .collect()
}

/// A kubeconfig file authenticating as the overlay's ServiceAccount.
async fn service_account_kubeconfig(client: &kube::Client, dir: &Path) -> PathBuf {
    let token = common::service_account_token(client, OPERATOR_NAMESPACE, OPERATOR_NAMESPACE).await;
    let path = dir.join("deployed.kubeconfig");
    std::fs::write(
        &path,
        serde_yaml_ng::to_string(&common::kubeconfig_with_token(&token)).unwrap(),
    )
    .unwrap();
    path
}

/// A harness whose operator runs as `overlay` deploys it.
async fn deployed_harness(overlay: &str, prefix: &str, dir: &Path, start: bool) -> Harness {
    let client = common::client().await;
    let deployed = Deployed {
        args: deployment_args(overlay),
        kubeconfig: service_account_kubeconfig(&client, dir).await,
        pod_namespace: OPERATOR_NAMESPACE.into(),
    };
    Harness::start_with(
        prefix,
        OperatorOptions {
            deployed: Some(deployed),
            start,
            ..Default::default()
        },
    )
    .await
}

/// Create, update, and delete with deletionPolicy Delete (the finalizer): every verb the
/// operator uses, in the harness's current namespace.
async fn full_sync(h: &Harness, name: &str) {
    h.apply_secret(name, &[("token", b"first")], json!({}))
        .await;
    h.apply_bts(
        name,
        json!({"secretRef": {"name": name, "key": "token"}, "deletionPolicy": "Delete"}),
        json!({}),
    )
    .await
    .unwrap();
    h.wait_reason(name, "Synced").await;
    h.wait_baseten(name, "the first value", |s| s.value == "first")
        .await;
    h.apply_secret(name, &[("token", b"second")], json!({}))
        .await;
    h.wait_baseten(name, "the second value", |s| s.value == "second")
        .await;
    assert!(!h.events_for(name).await.is_empty(), "events are published");
    h.bts_api().delete(name, &Default::default()).await.unwrap();
    h.wait_gone(name).await;
    assert!(
        h.baseten_secret(name).await.is_none(),
        "deleted from Baseten with the resource"
    );
}

#[tokio::test]
async fn base_applies_server_side_and_its_service_account_does_the_whole_job() {
    let _turn = TURN.lock().await;
    apply_overlay("base");
    let dir = tempfile::tempdir().unwrap();
    let h = deployed_harness("base", "deploy-base", dir.path(), true).await;
    full_sync(&h, "base-sync").await;
}

#[tokio::test]
async fn namespaced_reads_only_its_namespaces_and_says_so_when_refused() {
    let _turn = TURN.lock().await;
    let client = common::client().await;
    for ns in TEAM_NAMESPACES {
        testenv::cluster::ensure_namespace(&client, ns)
            .await
            .unwrap();
    }
    // What base may have installed before: the namespaced overlay has no cluster-wide grant.
    kubectl(&[
        "delete",
        "clusterrolebinding,clusterrole",
        OPERATOR_NAMESPACE,
        "--ignore-not-found",
    ]);
    apply_overlay("overlays/namespaced");
    let dir = tempfile::tempdir().unwrap();
    let mut h =
        deployed_harness("overlays/namespaced", "deploy-namespaced", dir.path(), true).await;
    let outside = h.ns.clone();

    // The ServiceAccount cannot read Secrets anywhere else.
    let token =
        common::service_account_token(&client, OPERATOR_NAMESPACE, OPERATOR_NAMESPACE).await;
    let as_operator = common::client_with_token(&token).await;
    h.apply_secret("elsewhere", &[("token", b"x")], json!({}))
        .await;
    let refused = Api::<Secret>::namespaced(as_operator.clone(), &outside)
        .get("elsewhere")
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, kube::Error::Api(s) if s.code == 403),
        "{refused:?}"
    );
    let refused = Api::<Secret>::all(as_operator)
        .list(&Default::default())
        .await;
    assert!(refused.is_err(), "no cluster-wide Secret list");

    // Both listed namespaces work end to end.
    for (i, ns) in TEAM_NAMESPACES.iter().enumerate() {
        h.ns = ns.to_string();
        full_sync(&h, &format!("team-sync-{i}")).await;
    }

    // When its Role no longer lets it read a Secret there, a resource says so.
    let roles: Api<Role> = Api::namespaced(client.clone(), "team-b");
    let mut role = roles.get(OPERATOR_NAMESPACE).await.unwrap();
    let all_rules = role.rules.clone();
    role.rules = all_rules.clone().map(|rules| {
        rules
            .into_iter()
            .filter(|r| !r.resources.iter().flatten().any(|x| x == "secrets"))
            .collect()
    });
    role.metadata.managed_fields = None;
    roles
        .replace(OPERATOR_NAMESPACE, &Default::default(), &role)
        .await
        .unwrap();
    h.ns = "team-b".into();
    h.apply_secret("refused", &[("token", b"x")], json!({}))
        .await;
    h.apply_bts(
        "refused",
        json!({"secretRef": {"name": "refused", "key": "token"}}),
        json!({}),
    )
    .await
    .unwrap();
    let object = h.wait_reason("refused", "SecretNotAllowed").await;
    let message = object.ready_condition().unwrap().message.clone();
    assert!(
        message.contains("RBAC") && message.contains("team-b/refused"),
        "{message}"
    );
    assert!(h.baseten_secret("refused").await.is_none());
    let mut role = roles.get(OPERATOR_NAMESPACE).await.unwrap();
    role.rules = all_rules;
    roles
        .replace(OPERATOR_NAMESPACE, &Default::default(), &role)
        .await
        .unwrap();
}

/// Which of the processes leads, once exactly one does and the other waits as a ready
/// standby.
async fn leader_of(processes: &[&Process], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let mut leaders = Vec::new();
        for (i, p) in processes.iter().enumerate() {
            if p.logs().contains("became the leader") && p.metric("leader").await == 1.0 {
                leaders.push(i);
            }
        }
        if leaders.len() == 1 {
            return leaders[0];
        }
        assert!(
            leaders.len() < 2,
            "two leaders at once:\n{}",
            processes.iter().map(|p| p.logs()).collect::<String>()
        );
        assert!(
            Instant::now() < deadline,
            "no leader within {within:?}:\n{}",
            processes.iter().map(|p| p.logs()).collect::<String>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// Multi-threaded: the emulator runs in this test's runtime and must keep answering while
// the test blocks waiting for the process to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_elects_one_writer_fails_over_hands_over_cleanly_and_stops_when_the_lease_is_lost() {
    let _turn = TURN.lock().await;
    kubectl(&[
        "delete",
        "lease",
        "-n",
        OPERATOR_NAMESPACE,
        OPERATOR_NAMESPACE,
        "--ignore-not-found",
    ]);
    apply_overlay("overlays/ha");
    let dir = tempfile::tempdir().unwrap();
    let mut h = deployed_harness("overlays/ha", "deploy-ha", dir.path(), false).await;
    let mut a = h.spawn("pod-a");
    let mut b = h.spawn("pod-b");
    let first = leader_of(&[&a, &b], Duration::from_secs(30)).await;
    let (leader, standby) = if first == 0 {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let leader_name = if first == 0 { "pod-a" } else { "pod-b" };

    // Only the leader writes; the standby is live, ready and idle.
    for i in 0..3 {
        h.synced(&format!("ha-{i}"), &format!("ha-{i}"), "token", b"v1")
            .await;
    }
    for path in ["/livez", "/readyz"] {
        assert_eq!(standby.get(path).await.0, 200, "standby {path}");
    }
    assert_eq!(standby.metric("reconciles_total").await, 0.0);
    assert_eq!(standby.metric("leader").await, 0.0);
    assert!(leader.metric("reconciles_total").await >= 3.0);
    for event in h.events_for("ha-0").await {
        assert_eq!(event.reporting_instance.as_deref(), Some(leader_name));
    }

    // SIGKILL the leader with work pending: the standby takes over within the Lease
    // duration (15 s) and does it.
    leader.process.kill_child();
    let killed = Instant::now();
    h.apply_secret("ha-1", &[("token", b"v2")], json!({})).await;
    h.wait_baseten("ha-1", "the value written after the leader died", |s| {
        s.value == "v2"
    })
    .await;
    let took_over = killed.elapsed();
    assert!(
        standby.logs().contains("became the leader"),
        "{}",
        standby.logs()
    );
    assert!(
        took_over < Duration::from_secs(15 + 5),
        "takeover took {took_over:?}"
    );
    eprintln!("takeover after SIGKILL: {took_over:?}");

    // A clean handover: the old leader comes back as standby, SIGTERM to the new leader
    // exits 0 within 10 s, and the next leader writes nothing that is already in Baseten.
    let mut revived = h.spawn(&format!("{leader_name}-2"));
    let upserts = h.upsert_requests().await;
    let stopped = Instant::now();
    let code = standby.process.terminate_child(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{}", standby.logs());
    eprintln!("leader exited after SIGTERM in {:?}", stopped.elapsed());
    assert!(standby.logs().contains("released the leader Lease"));
    leader_of(&[&revived], Duration::from_secs(20)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while revived.metric("reconciles_total").await < 3.0 {
        assert!(Instant::now() < deadline, "{}", revived.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        h.upsert_requests().await,
        upserts,
        "a clean handover writes nothing twice"
    );

    // Losing the Lease ends the process instead of leaving two writers.
    let leases: Api<Lease> = Api::namespaced(h.client.clone(), OPERATOR_NAMESPACE);
    leases
        .patch(
            OPERATOR_NAMESPACE,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {
                "holderIdentity": "intruder",
                "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                    k8s_openapi::jiff::Timestamp::now()
                ),
                "leaseDurationSeconds": 60,
            }})),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(code) = revived.process.exit_code() {
            break code;
        }
        assert!(Instant::now() < deadline, "{}", revived.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(code, 0);
    assert!(
        revived.logs().contains("lost the leader Lease"),
        "{}",
        revived.logs()
    );
}

/// The rules of the first `kind` object in a manifest.
fn rules_of(manifest: &str, kind: &str) -> Vec<PolicyRule> {
    serde_yaml_ng::Deserializer::from_str(manifest)
        .map(|doc| serde_yaml_ng::Value::deserialize(doc).unwrap())
        .find(|doc| doc["kind"] == kind)
        .map(|doc| serde_yaml_ng::from_value(doc["rules"].clone()).unwrap())
        .unwrap()
}

/// Every way to take one verb away from `rules`: (what was removed, the rules without it).
fn without_one_verb(rules: &[PolicyRule]) -> Vec<(String, Vec<PolicyRule>)> {
    let mut variants = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        for verb in &rule.verbs {
            let mut fewer = rules.to_vec();
            fewer[i].verbs.retain(|v| v != verb);
            if fewer[i].verbs.is_empty() {
                fewer.remove(i);
            }
            let resources = rule.resources.clone().unwrap_or_default().join(",");
            variants.push((format!("{verb} {resources}"), fewer));
        }
    }
    variants
}

/// One operator whose ServiceAccount has `cluster_rules` cluster-wide (and, with leader
/// election, `lease_rules` in its namespace), watching its own namespace.
async fn with_rules(
    label: &str,
    cluster_rules: Vec<PolicyRule>,
    lease_rules: Option<Vec<PolicyRule>>,
    dir: &Path,
) -> Harness {
    let client = common::client().await;
    let mut h = Harness::start_with(
        "rbac",
        OperatorOptions {
            deployed: Some(Deployed {
                args: Vec::new(),
                kubeconfig: dir.join(format!(
                    "{}.kubeconfig",
                    label.replace([' ', '/', ','], "-")
                )),
                pod_namespace: String::new(),
            }),
            start: false,
            ..Default::default()
        },
    )
    .await;
    let ns = h.ns.clone();
    let account = "operator";
    let token = common::service_account_token(&client, &ns, account).await;
    let subject = json!([{"kind": "ServiceAccount", "name": account, "namespace": ns}]);
    let name = format!("rbac-test-{ns}");
    testenv::cluster::apply_yaml(
        &client,
        &serde_json::to_string(&json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": name}, "rules": cluster_rules,
        }))
        .unwrap(),
        &ns,
    )
    .await
    .unwrap();
    testenv::cluster::apply_yaml(
        &client,
        &serde_json::to_string(&json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name}, "subjects": subject,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        }))
        .unwrap(),
        &ns,
    )
    .await
    .unwrap();
    let deployed = h.options.deployed.as_mut().unwrap();
    deployed.args = vec![format!("--watch-namespace={ns}")];
    deployed.pod_namespace = ns.clone();
    if let Some(rules) = lease_rules {
        deployed.args.push("--leader-elect".into());
        for object in [
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                   "metadata": {"name": "leases"}, "rules": rules}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": "leases"}, "subjects": subject,
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "leases"}}),
        ] {
            testenv::cluster::apply_yaml(&client, &serde_json::to_string(&object).unwrap(), &ns)
                .await
                .unwrap();
        }
    }
    std::fs::write(
        &deployed.kubeconfig,
        serde_yaml_ng::to_string(&common::kubeconfig_with_token(&token)).unwrap(),
    )
    .unwrap();
    h.start_operator();
    h
}

/// The whole job within `limit`: a Secret pushed with deletionPolicy Delete (finalizer),
/// Synced in status, an event, and an update of the Secret pushed. `Err` says what did not
/// happen.
async fn whole_job(h: &Harness, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    h.apply_secret("job", &[("token", b"one")], json!({})).await;
    h.apply_bts(
        "job",
        json!({"secretRef": {"name": "job", "key": "token"}, "deletionPolicy": "Delete"}),
        json!({}),
    )
    .await
    .unwrap();
    let mut stage = "Synced with the first value and an event";
    loop {
        let object = h.bts_api().get("job").await.unwrap();
        let synced = object
            .ready_condition()
            .is_some_and(|c| c.reason == "Synced");
        let value = h.baseten_secret("job").await.map(|s| s.value);
        if stage.starts_with("Synced") && synced && value.as_deref() == Some("one") {
            if !h.events_for("job").await.is_empty() {
                stage = "the update pushed";
                h.apply_secret("job", &[("token", b"two")], json!({})).await;
            }
        } else if !stage.starts_with("Synced") && value.as_deref() == Some("two") {
            let remaining = deadline.saturating_duration_since(Instant::now());
            set_job(h, remaining).await?;
            // Done, and nothing went wrong on the way (a denied watch, say, is retried by
            // listing again, which would get there too, but not without a warning).
            let warnings: Vec<String> = h
                .operator_logs()
                .lines()
                .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
                .map(str::to_string)
                .collect();
            return if warnings.is_empty() {
                Ok(())
            } else {
                Err(format!("done, with warnings: {}", warnings.join("\n")))
            };
        }
        if Instant::now() > deadline {
            return Err(format!("not within {limit:?}: {stage}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A set's part of the job within `limit`: its BasetenSecrets applied (create, patch), its
/// status Ready (its finalizer, its status), and the BasetenSecret of a removed key deleted.
async fn set_job(h: &Harness, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    h.apply_secret("set-job", &[("a", b"1"), ("b", b"2")], json!({}))
        .await;
    h.apply_set("set-job", json!({"secretName": "set-job"}))
        .await
        .map_err(|e| e.to_string())?;
    let mut removed = false;
    loop {
        let set = h
            .sets_api()
            .get("set-job")
            .await
            .map_err(|e| e.to_string())?;
        let ready = set.ready_condition().is_some_and(|c| c.status == "True");
        let children = h
            .bts_api()
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        let generated = children
            .items
            .iter()
            .filter(|c| {
                c.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with("set-job-"))
            })
            .count();
        if !removed && ready && generated == 2 {
            h.apply_secret("set-job", &[("a", b"1")], json!({})).await;
            removed = true;
        } else if removed && generated == 1 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the set's job not done: ready {ready}, {generated} generated, key removed {removed}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn every_rbac_rule_is_needed_removing_any_verb_breaks_the_job() {
    // The base and ha operators watch every namespace: they must not run meanwhile.
    let _turn = TURN.lock().await;
    let cluster = rules_of(include_str!("../deploy/base/rbac.yaml"), "ClusterRole");
    let leases = rules_of(
        include_str!("../deploy/components/ha/lease-rbac.yaml"),
        "Role",
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cases: Vec<(String, Vec<PolicyRule>, Option<Vec<PolicyRule>>)> = vec![
        ("nothing removed".into(), cluster.clone(), None),
        (
            "nothing removed, leader election".into(),
            cluster.clone(),
            Some(leases.clone()),
        ),
    ];
    for (removed, rules) in without_one_verb(&cluster) {
        cases.push((removed, rules, None));
    }
    for (removed, rules) in without_one_verb(&leases) {
        cases.push((removed, cluster.clone(), Some(rules)));
    }
    // All at once: the cases that must fail wait out the same limit together.
    let outcomes = futures::future::join_all(cases.into_iter().map(|(label, rules, lease)| {
        let dir = dir.path().to_path_buf();
        async move {
            let h = with_rules(&label, rules, lease, &dir).await;
            let outcome = whole_job(&h, Duration::from_secs(20)).await;
            (label, outcome, h.operator_logs())
        }
    }))
    .await;
    for (label, outcome, _) in &outcomes {
        eprintln!("{label}: {outcome:?}");
    }
    for (label, outcome, logs) in &outcomes {
        let expected_ok = label.starts_with("nothing removed");
        assert_eq!(outcome.is_ok(), expected_ok, "{label}: {outcome:?}\n{logs}");
    }
}

#[test]
fn every_overlay_runs_a_hardened_pod_with_probes_and_the_key_as_a_file() {
    for overlay in [
        "base",
        "overlays/namespaced",
        "overlays/ha",
        "overlays/no-admission-policy",
    ] {
        let deployment = deployment(overlay);
        let pod = &deployment["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let security = &container["securityContext"];
        let problem = |what: &str| format!("{overlay}: {what}");
        assert_eq!(
            pod["securityContext"]["runAsNonRoot"],
            true,
            "{}",
            problem("runAsNonRoot")
        );
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault",
            "{}",
            problem("seccomp")
        );
        assert_eq!(
            security["allowPrivilegeEscalation"],
            false,
            "{}",
            problem("privilege escalation")
        );
        assert_eq!(
            security["readOnlyRootFilesystem"],
            true,
            "{}",
            problem("read-only root")
        );
        assert_eq!(
            security["capabilities"]["drop"],
            serde_yaml_ng::to_value(["ALL"]).unwrap(),
            "{}",
            problem("capabilities")
        );
        for (kind, what) in [
            ("requests", "cpu"),
            ("requests", "memory"),
            ("limits", "memory"),
        ] {
            assert!(
                !container["resources"][kind][what].is_null(),
                "{}",
                problem(&format!("resources.{kind}.{what}"))
            );
        }
        assert_eq!(
            container["livenessProbe"]["httpGet"]["path"],
            "/livez",
            "{}",
            problem("liveness")
        );
        assert_eq!(
            container["readinessProbe"]["httpGet"]["path"],
            "/readyz",
            "{}",
            problem("readiness")
        );
        // The key is a file from a Secret volume, never an environment variable.
        let args = serde_yaml_ng::to_string(&container["args"]).unwrap();
        assert!(
            args.contains("--api-key-file=/var/run/baseten/api-key"),
            "{}",
            problem("key file")
        );
        assert!(
            pod["volumes"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|v| v["secret"]["secretName"] == "baseten-api-key"),
            "{}",
            problem("key volume")
        );
        let env = serde_yaml_ng::to_string(&container["env"]).unwrap();
        assert!(
            !env.contains("BASETEN_API_KEY"),
            "{}",
            problem("key in env")
        );
        for (name, field) in [
            ("POD_NAME", "metadata.name"),
            ("POD_NAMESPACE", "metadata.namespace"),
        ] {
            assert!(
                container["env"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .any(|e| e["name"] == name && e["valueFrom"]["fieldRef"]["fieldPath"] == field),
                "{}",
                problem(name)
            );
        }
    }
    let ha = rendered("overlays/ha");
    let deployment = ha.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert!(deployment_args("overlays/ha").contains(&"--leader-elect".to_string()));
    assert!(ha.iter().any(|d| d["kind"] == "PodDisruptionBudget"));
    // Only the ha overlay may touch Leases, and only in the operator's namespace.
    for overlay in ["base", "overlays/namespaced", "overlays/ha"] {
        for doc in rendered(overlay) {
            let grants_leases = serde_yaml_ng::to_string(&doc["rules"])
                .unwrap()
                .contains("leases");
            if grants_leases {
                assert_eq!(overlay, "overlays/ha", "{overlay} grants Lease access");
                assert_eq!(doc["kind"], "Role");
                assert_eq!(doc["metadata"]["namespace"], OPERATOR_NAMESPACE);
            }
        }
    }
    let namespaced = rendered("overlays/namespaced");
    assert!(
        !namespaced
            .iter()
            .any(|d| d["kind"] == "ClusterRole" || d["kind"] == "ClusterRoleBinding"),
        "the namespaced overlay grants nothing cluster-wide"
    );
}

#[test]
fn every_overlay_ships_the_admission_policy_but_the_one_for_clusters_before_1_30() {
    let kinds = [
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ];
    for overlay in ["base", "overlays/namespaced", "overlays/ha"] {
        let docs = rendered(overlay);
        for kind in kinds {
            let doc = docs
                .iter()
                .find(|d| d["kind"] == kind)
                .unwrap_or_else(|| panic!("{overlay} installs no {kind}"));
            assert_eq!(doc["apiVersion"], "admissionregistration.k8s.io/v1");
            // Cluster-scoped: a namespace written into it would be wrong (and ignored).
            assert!(
                doc["metadata"]["namespace"].is_null(),
                "{overlay}: {kind} has a namespace"
            );
        }
    }
    // Exactly base without the objects an older cluster refuses.
    let without: Vec<_> = rendered("base")
        .into_iter()
        .filter(|d| !kinds.iter().any(|kind| d["kind"] == *kind))
        .collect();
    assert_eq!(rendered("overlays/no-admission-policy"), without);
}

#[test]
fn the_dockerfile_builds_the_binary_exactly_as_make_release_does() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let makefile = std::fs::read_to_string(repo().join("Makefile")).unwrap();
    // One static binary, for the musl target of the machine's architecture.
    let build = |cargo: &str, target: &str| {
        format!(
            "TARGET_CC=musl-gcc {cargo} build --release --locked --target {target} --bin baseten-secrets-operator"
        )
    };
    assert!(
        dockerfile.contains(&build("cargo", "\"$target\"")),
        "{dockerfile}"
    );
    assert!(dockerfile.contains("target=\"$(uname -m)-unknown-linux-musl\""));
    assert!(makefile.contains("MUSL_TARGET := $(shell uname -m)-unknown-linux-musl"));
    let release: Vec<&str> = (makefile.split("\nrelease:").nth(1).unwrap_or_default())
        .lines()
        .skip(1)
        .take_while(|line| line.starts_with('\t'))
        .map(str::trim)
        .collect();
    assert_eq!(
        release,
        [
            "hack/musl.sh $(MUSL_TARGET)",
            &build("$(CARGO)", "$(MUSL_TARGET)")
        ]
    );
    assert!(makefile.contains("image: release"), "the image holds it");
    assert!(
        makefile.contains("bench-smoke: controlplane release"),
        "make test builds it"
    );
    // The final stage is that binary alone, not root.
    let last_stage = dockerfile.rsplit("\nFROM ").next().unwrap();
    assert!(last_stage.starts_with("scratch\n"), "{last_stage}");
    assert!(last_stage.contains("USER 65532:65532"), "{last_stage}");
    // And `docker build` sends no build output or history to the engine.
    let ignored = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    for folder in ["target/", ".git/"] {
        assert!(ignored.lines().any(|line| line == folder), "{ignored}");
    }
}
