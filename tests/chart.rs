//! The Helm chart (charts/baseten-secrets-operator), with helm built from its pinned Go module
//! (`make tools`): it lints; it is the one source of the kustomize manifests, whose committed
//! render must not drift from it; every documented values file renders objects the real
//! apiserver accepts with strict field validation, and each value does what it says; the
//! schema refuses misspelt and mistyped values; and a release installs, runs the operator as
//! its own ServiceAccount, upgrades and uninstalls.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::manifests::{install_prometheus_operator_crds, kubectl, repo};
use common::operator::{Deployed, Harness, OperatorOptions};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use kube::api::{Api, PostParams};
use serde::Deserialize;
use serde_json::{Value, json};

const CHART: &str = "charts/baseten-secrets-operator";

/// The documented values files: each switches on one way of running it.
const VALUES: [&str; 5] = [
    "ha",
    "namespaced",
    "monitoring",
    "no-admission-policy",
    "scheduling",
];

/// helm, run in the repository's root against this test binary's cluster, with its own
/// config and cache folders.
fn helm(args: &[&str]) -> Output {
    let program = repo().join("target/tools/bin/helm");
    assert!(
        program.exists(),
        "{}: `make tools` builds it",
        program.display()
    );
    let home = std::env::temp_dir().join("baseten-secrets-operator-helm");
    let mut command = Command::new(program);
    for (variable, folder) in [
        ("HELM_CONFIG_HOME", "config"),
        ("HELM_CACHE_HOME", "cache"),
        ("HELM_DATA_HOME", "data"),
    ] {
        command.env(variable, home.join(folder));
    }
    if let Some(kubeconfig) = testenv::shared().kubeconfig() {
        command.env("KUBECONFIG", kubeconfig);
    }
    command
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run helm")
}

/// helm's output, or a panic with what it said.
fn helm_ok(args: &[&str]) -> String {
    let out = helm(args);
    assert!(
        out.status.success(),
        "helm {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn values_file(name: &str) -> String {
    format!("{CHART}/ci/{name}-values.yaml")
}

/// The chart rendered for release `release` in `namespace` with `flags`, as JSON objects.
fn template(release: &str, namespace: &str, flags: &[&str]) -> (String, Vec<Value>) {
    let mut args = vec!["template", release, CHART, "--namespace", namespace];
    args.extend_from_slice(flags);
    let text = helm_ok(&args);
    let objects = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde_yaml_ng::Value::deserialize(doc).unwrap())
        .filter(|doc| !doc.is_null())
        .map(|doc| serde_json::to_value(doc).unwrap())
        .collect();
    (text, objects)
}

fn kinds(objects: &[Value]) -> BTreeSet<String> {
    (objects.iter())
        .map(|o| o["kind"].as_str().unwrap().to_string())
        .collect()
}

fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} in {:?}", kinds(objects));
    found[0]
}

fn container(objects: &[Value]) -> &Value {
    &one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
}

fn args(objects: &[Value]) -> Vec<String> {
    serde_json::from_value(container(objects)["args"].clone()).unwrap()
}

/// Every file under `dir`, relative to it.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(
                files(&path)
                    .into_iter()
                    .map(|f| path.strip_prefix(dir).unwrap().join(f)),
            );
        } else {
            found.push(path.strip_prefix(dir).unwrap().to_path_buf());
        }
    }
    found
}

#[test]
fn the_chart_lints_with_every_documented_values_file() {
    helm_ok(&["lint", "--strict", CHART]);
    for name in VALUES {
        helm_ok(&["lint", "--strict", CHART, "--values", &values_file(name)]);
    }
}

#[test]
fn the_committed_manifests_are_the_charts_render_and_its_crds_are_the_generated_ones() {
    let scratch = tempfile::tempdir().unwrap();
    let script = repo().join("hack/render-manifests.sh");
    let helm_path = repo().join("target/tools/bin/helm");
    let out = Command::new("bash")
        .arg(&script)
        .arg(&helm_path)
        .arg(scratch.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = files(scratch.path());
    assert!(rendered.len() >= 10, "{rendered:?}");
    for file in &rendered {
        let fresh = std::fs::read_to_string(scratch.path().join(file)).unwrap();
        let committed = std::fs::read_to_string(repo().join(file)).unwrap_or_default();
        assert!(
            fresh == committed,
            "{} differs from the chart's render; run `make manifests` and commit the result",
            file.display()
        );
    }
    for crd in ["basetensecrets.yaml", "basetensecretsets.yaml"] {
        let generated = std::fs::read_to_string(repo().join("crds").join(crd)).unwrap();
        let chart = std::fs::read_to_string(repo().join(CHART).join("crds").join(crd)).unwrap();
        assert!(
            generated == chart,
            "{CHART}/crds/{crd} differs from crds/{crd}; run `make crds`"
        );
    }
}

#[test]
fn the_schema_refuses_misspelt_and_mistyped_values_by_name() {
    let refused = |flags: &[&str], says: &str| {
        let mut args = vec!["template", "x", CHART];
        args.extend_from_slice(flags);
        let out = helm(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} was accepted");
        assert!(stderr.contains(says), "{flags:?}: {stderr}");
    };
    refused(&["--set", "replica=2"], "replica");
    refused(&["--set", "replicas=two"], "replicas");
    refused(&["--set", "image.digest=latest"], "digest");
    refused(
        &["--set", "metrics.serviceMonitor.interval=often"],
        "interval",
    );
    refused(&["--set", "watchNamespaces={Team_A}"], "watchNamespaces");
    refused(
        &[
            "--set",
            "metrics.serviceMonitor.enabled=true,metrics.service.enabled=false",
        ],
        "needs metrics.service.enabled",
    );
    // The positive control: the same command with good values renders.
    helm_ok(&["template", "x", CHART, "--set", "replicas=2"]);
}

#[tokio::test]
async fn every_documented_values_file_renders_what_it_says_and_the_apiserver_accepts_it() {
    let client = common::client().await;
    install_prometheus_operator_crds(&client).await;
    let ns = common::namespace(&client, "chart").await;
    let teams = [
        common::namespace(&client, "chart-team").await,
        common::namespace(&client, "chart-team").await,
    ];
    let release = ns.clone();
    let watched = format!("watchNamespaces={{{},{}}}", teams[0], teams[1]);
    let cases: Vec<(&str, Vec<String>)> = std::iter::once(("default", vec![]))
        .chain(VALUES.iter().map(|&name| {
            let mut flags = vec!["--values".to_string(), values_file(name)];
            if name == "namespaced" {
                flags.extend(["--set".to_string(), watched.clone()]);
            }
            (name, flags)
        }))
        .collect();
    for (name, flags) in &cases {
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let (text, objects) = template(&release, &ns, &flags);
        says_what_it_does(name, &release, &teams, &objects);
        let file = std::env::temp_dir().join(format!("{release}-{name}.yaml"));
        std::fs::write(&file, &text).unwrap();
        let file = file.to_str().unwrap();
        let applied = kubectl(&[
            "apply",
            "--server-side",
            "--dry-run=server",
            "--validate=strict",
            "-f",
            file,
        ]);
        assert_eq!(
            applied.lines().count(),
            objects.len(),
            "{name}: every object applied:\n{applied}"
        );
    }
}

/// What each values file promises, in the objects it renders.
fn says_what_it_does(name: &str, release: &str, teams: &[String; 2], objects: &[Value]) {
    let fullname = format!("{release}-baseten-secrets-operator");
    let deployment = one(objects, "Deployment");
    assert_eq!(deployment["metadata"]["name"], fullname.as_str());
    let args = args(objects);
    let all = kinds(objects);
    match name {
        "default" => {
            let expected = [
                "ClusterRole",
                "ClusterRoleBinding",
                "Deployment",
                "Service",
                "ServiceAccount",
                "ValidatingAdmissionPolicy",
                "ValidatingAdmissionPolicyBinding",
            ];
            assert_eq!(all, expected.map(String::from).into(), "{name}");
            assert_eq!(args, ["--api-key-file=/var/run/baseten/api-key"]);
            assert_eq!(
                container(objects)["image"],
                "baseten-secrets-operator:0.1.0"
            );
            assert_eq!(deployment["spec"]["replicas"], 1);
        }
        "ha" => {
            assert_eq!(deployment["spec"]["replicas"], 2);
            assert!(args.contains(&"--leader-elect".into()), "{args:?}");
            assert!(
                args.contains(&format!("--lease-name={fullname}")),
                "{args:?}"
            );
            let role = objects.iter().find(|o| o["kind"] == "Role").unwrap();
            assert_eq!(role["rules"][1]["resourceNames"], json!([fullname]));
            assert!(all.contains("PodDisruptionBudget"));
            let spec = &deployment["spec"]["template"]["spec"];
            assert!(spec["affinity"]["podAntiAffinity"].is_object(), "{spec}");
        }
        "namespaced" => {
            assert!(!all.contains("ClusterRole") && !all.contains("ClusterRoleBinding"));
            let roles: BTreeSet<&str> = (objects.iter())
                .filter(|o| o["kind"] == "Role" || o["kind"] == "RoleBinding")
                .map(|o| o["metadata"]["namespace"].as_str().unwrap())
                .collect();
            assert_eq!(roles, teams.iter().map(String::as_str).collect());
            let list = format!("--watch-namespaces={},{}", teams[0], teams[1]);
            assert!(args.contains(&list), "{args:?}");
        }
        "monitoring" => {
            for kind in [
                "ServiceMonitor",
                "PrometheusRule",
                "ConfigMap",
                "NetworkPolicy",
            ] {
                assert!(all.contains(kind), "{name}: no {kind}");
            }
            let monitor = one(objects, "ServiceMonitor");
            assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
            let dashboard = one(objects, "ConfigMap");
            assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
            let json = dashboard["data"]["baseten-secrets-operator.json"].as_str();
            let parsed: Value = serde_json::from_str(json.unwrap()).unwrap();
            assert!(parsed["panels"].as_array().unwrap().len() >= 6);
        }
        "no-admission-policy" => {
            assert!(
                !all.iter()
                    .any(|k| k.starts_with("ValidatingAdmissionPolicy"))
            );
            let selector = "--secret-label-selector=baseten.co/push=true";
            assert!(args.contains(&selector.into()), "{args:?}");
        }
        "scheduling" => {
            let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
            let image = format!("platform/baseten-secrets-operator:0.1.0@{digest}");
            assert_eq!(container(objects)["image"], image.as_str());
            let spec = &deployment["spec"]["template"]["spec"];
            assert_eq!(spec["nodeSelector"]["kubernetes.io/os"], "linux");
            assert_eq!(spec["tolerations"][0]["key"], "dedicated");
            assert!(spec["affinity"]["nodeAffinity"].is_object());
            assert_eq!(spec["priorityClassName"], "system-cluster-critical");
            assert_eq!(spec["imagePullSecrets"][0]["name"], "pull-secret");
            let pod = &deployment["spec"]["template"]["metadata"];
            assert_eq!(pod["labels"]["team"], "platform");
            assert_eq!(pod["annotations"]["example.com/team"], "platform");
            for arg in [
                "--concurrency=8",
                "--log-format=json",
                "--baseten-url=https://baseten.internal.example",
            ] {
                assert!(args.contains(&arg.into()), "{arg}: {args:?}");
            }
            let env = &container(objects)["env"];
            assert!(
                env.as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["name"] == "BASETEN_TIMEOUT_SECONDS")
            );
            assert_eq!(container(objects)["resources"]["limits"]["memory"], "256Mi");
            for object in objects {
                let part_of = &object["metadata"]["labels"]["app.kubernetes.io/part-of"];
                assert_eq!(part_of, "platform", "{}", object["kind"]);
            }
        }
        other => panic!("no expectations for {other}"),
    }
    // Whatever the values, the pod keeps its hardening.
    let security = &container(objects)["securityContext"];
    if name != "scheduling" {
        assert_eq!(security["readOnlyRootFilesystem"], true);
        assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    }
}

#[tokio::test]
async fn a_release_installs_runs_as_its_service_account_upgrades_and_uninstalls() {
    let client = common::client().await;
    let ns = common::namespace(&client, "chart-release").await;
    let release = ns.clone();
    let fullname = format!("{release}-baseten-secrets-operator");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let key = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("baseten-api-key".into()),
            ..Default::default()
        },
        string_data: Some([("api-key".to_string(), "unused".to_string())].into()),
        ..Default::default()
    };
    secrets.create(&PostParams::default(), &key).await.unwrap();
    helm_ok(&["install", &release, CHART, "--namespace", &ns]);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let deployment = deployments.get(&fullname).await.unwrap();
    let container = &deployment.spec.unwrap().template.spec.unwrap().containers[0];
    let args: Vec<String> = (container.args.clone().unwrap().into_iter())
        .filter(|a| !a.starts_with("--api-key-file"))
        .collect();

    // The operator, run with the release's arguments as the release's ServiceAccount, does
    // the job: the chart's RBAC is enough.
    let token = common::service_account_token(&client, &ns, &fullname).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("release.kubeconfig");
    let config = common::kubeconfig_with_token(&token);
    std::fs::write(&kubeconfig, serde_yaml_ng::to_string(&config).unwrap()).unwrap();
    let h = Harness::start_with(
        "chart-sync",
        OperatorOptions {
            deployed: Some(Deployed {
                args,
                kubeconfig,
                pod_namespace: ns.clone(),
            }),
            ..Default::default()
        },
    )
    .await;
    h.synced("released", "released", "token", b"from the chart")
        .await;
    drop(h);

    // An upgrade to two replicas brings leader election and its Lease permissions.
    helm_ok(&[
        "upgrade",
        &release,
        CHART,
        "--namespace",
        &ns,
        "--set",
        "replicas=2",
    ]);
    let upgraded = deployments.get(&fullname).await.unwrap();
    assert_eq!(upgraded.spec.as_ref().unwrap().replicas, Some(2));
    let roles: Api<Role> = Api::namespaced(client.clone(), &ns);
    roles
        .get(&format!("{fullname}-leader-election"))
        .await
        .unwrap();
    let history = helm_ok(&["history", &release, "--namespace", &ns]);
    assert_eq!(history.lines().count(), 3, "two revisions:\n{history}");

    // Uninstalling removes what the release made, cluster-wide objects included; the CRDs
    // stay, as Helm keeps crds/, so no BasetenSecret anywhere is lost.
    helm_ok(&["uninstall", &release, "--namespace", &ns, "--wait"]);
    assert!(deployments.get_opt(&fullname).await.unwrap().is_none());
    let cluster_roles: Api<ClusterRole> = Api::all(client.clone());
    assert!(cluster_roles.get_opt(&fullname).await.unwrap().is_none());
    assert!(
        roles
            .get_opt(&format!("{fullname}-leader-election"))
            .await
            .unwrap()
            .is_none()
    );
    let crds = kubectl(&["get", "crd", "basetensecrets.baseten.co", "-o", "name"]);
    assert!(crds.contains("basetensecrets.baseten.co"), "{crds}");
}
