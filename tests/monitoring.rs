//! Monitoring that ships (deploy/components/monitoring, deploy/components/network-policy,
//! both in deploy/overlays/monitoring): the ServiceMonitor and the PrometheusRule are valid
//! objects of the Prometheus Operator's CRDs, applied to the real apiserver with strict field
//! validation; the NetworkPolicy applies and lets in the metrics port only; and every query of
//! the alerts and the dashboard names only series that a live scrape of the operator shows;
//! promtool (from its Go module) checks the rules, runs their unit tests
//! (tests/monitoring/alerts.test.yaml) and parses every dashboard query.

mod common;

use std::collections::BTreeSet;

use common::manifests::{install_prometheus_operator_crds, rendered, repo};
use common::operator::Harness;
use kube::api::{Api, DynamicObject, Patch, PatchParams, ValidationDirective};
use kube::discovery::{ApiResource, Discovery};
use serde_json::{Value, json};

const NAMESPACE: &str = "baseten-secrets-operator";
const PREFIX: &str = "baseten_secrets_operator_";

/// The objects of the monitoring overlay that base does not install, as JSON.
fn monitoring_objects() -> Vec<Value> {
    let base = rendered("base");
    (rendered("overlays/monitoring").into_iter())
        .filter(|object| !base.contains(object))
        .map(|object| serde_json::to_value(object).unwrap())
        .collect()
}

fn of_kind(objects: &[Value], kind: &str) -> Value {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind}");
    found[0].clone()
}

/// Server-side apply of `object` in dry-run with strict field validation: an unknown or
/// misspelt field is refused, not pruned.
async fn dry_run(client: &kube::Client, object: &Value) -> kube::Result<DynamicObject> {
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let object: DynamicObject = serde_json::from_value(object.clone()).unwrap();
    let types = object.types.clone().unwrap();
    let gvk = kube::api::GroupVersionKind::try_from(&types).unwrap();
    let (resource, _): (ApiResource, _) = discovery.resolve_gvk(&gvk).expect("a known kind");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NAMESPACE, &resource);
    let params = PatchParams::apply("monitoring-test")
        .dry_run()
        .validation(ValidationDirective::Strict);
    let name = object.metadata.name.clone().expect("a name");
    api.patch(&name, &params, &Patch::Apply(&object)).await
}

#[tokio::test]
async fn the_monitoring_objects_are_valid_for_the_prometheus_operator_and_the_apiserver() {
    let client = common::client().await;
    install_prometheus_operator_crds(&client).await;
    testenv::cluster::ensure_namespace(&client, NAMESPACE)
        .await
        .unwrap();
    let objects = monitoring_objects();
    let kinds: BTreeSet<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ConfigMap",
            "NetworkPolicy",
            "PrometheusRule",
            "ServiceMonitor"
        ])
    );
    for object in &objects {
        if let Err(error) = dry_run(&client, object).await {
            panic!("{} refused: {error}", object["kind"]);
        }
    }
    // The positive control: strict validation does refuse a misspelt field.
    let mut misspelt = of_kind(&objects, "ServiceMonitor");
    misspelt["spec"]["endpoint"] = misspelt["spec"]["endpoints"].clone();
    let refused = dry_run(&client, &misspelt).await;
    assert!(refused.is_err(), "a misspelt field was accepted");

    // The ServiceMonitor scrapes the port of the metrics Service.
    let service = (rendered("base").into_iter())
        .map(|o| serde_json::to_value(o).unwrap())
        .find(|o| o["kind"] == "Service")
        .unwrap();
    let monitor = of_kind(&objects, "ServiceMonitor");
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        service["spec"]["ports"][0]["name"]
    );
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"],
        service["metadata"]["labels"]
    );
    // The NetworkPolicy lets in that port alone, to the operator's pods (enforced only by a
    // CNI that enforces NetworkPolicy; the test platform has no pod network).
    let policy = of_kind(&objects, "NetworkPolicy");
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
    assert_eq!(
        policy["spec"]["ingress"],
        json!([{"ports": [{"port": "http", "protocol": "TCP"}]}])
    );
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        service["spec"]["selector"]
    );
}

/// The PromQL expressions of the alerts and of every dashboard panel.
fn queries(objects: &[Value]) -> (Vec<String>, Vec<(String, String)>) {
    let rule = of_kind(objects, "PrometheusRule");
    let alerts = (rule["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter())
    .map(|r| r["expr"].as_str().unwrap().to_string())
    .collect();
    let config_map = of_kind(objects, "ConfigMap");
    let labels = &config_map["metadata"]["labels"];
    assert_eq!(
        labels["grafana_dashboard"], "1",
        "found by Grafana's sidecar"
    );
    let text = config_map["data"]["baseten-secrets-operator.json"]
        .as_str()
        .unwrap();
    let dashboard: Value = serde_json::from_str(text).unwrap();
    let panels = (dashboard["panels"].as_array().unwrap().iter())
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap().to_string();
            (panel["targets"].as_array().unwrap().iter())
                .map(move |t| (title.clone(), t["expr"].as_str().unwrap().to_string()))
        })
        .collect();
    (alerts, panels)
}

/// The operator's metric names a query reads (a histogram's series by its family's name).
fn metric_names(query: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in query.match_indices(PREFIX) {
        let name: String = query[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name);
        names.insert(family.to_string());
    }
    names
}

#[tokio::test]
async fn every_alert_and_dashboard_query_reads_series_the_operator_serves() {
    let h = Harness::start("monitoring").await;
    h.synced("scraped", "scraped", "token", b"value").await;
    // One failed write too, so that the failure series exist: a family shows in the scrape
    // from its first series on.
    h.fault(json!({"path_prefix": "/v1/secrets", "method": "POST", "status": 503, "count": 1}))
        .await;
    h.apply_secret("scraped", &[("token", b"rotated")], json!({}))
        .await;
    h.wait_baseten("scraped", "the rotation, after the failure", |s| {
        s.value == "rotated"
    })
    .await;
    let (status, scrape) = h.operator_get("/metrics").await;
    assert_eq!(status, 200);
    // Every family the scrape declares, also before its first series (a counter's samples
    // end in _total), and every series it shows.
    let mut served = BTreeSet::new();
    for line in scrape.lines() {
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let mut words = declared.split_whitespace();
            let (Some(name), kind) = (words.next(), words.next()) else {
                continue;
            };
            served.insert(name.to_string());
            if kind == Some("counter") {
                served.insert(format!("{name}_total"));
            }
        } else if !line.starts_with('#') {
            served.extend(metric_names(line));
        }
    }
    assert!(served.len() > 5, "{scrape}");

    let (alerts, panels) = queries(&monitoring_objects());
    assert_eq!(alerts.len(), 4, "the README's four alerts");
    let mut read = BTreeSet::new();
    for (what, query) in (alerts.iter().map(|q| ("an alert".to_string(), q))).chain(
        panels
            .iter()
            .map(|(title, q)| (format!("panel {title:?}"), q)),
    ) {
        let names = metric_names(query);
        assert!(!names.is_empty(), "{what} reads none of ours: {query}");
        for name in names {
            assert!(
                served.contains(name.as_str()),
                "{what} reads {name}, which /metrics does not serve: {query}"
            );
            read.insert(name);
        }
    }
    // The dashboard shows what the README promises.
    for family in [
        "resources",
        "baseten_writes_total",
        "baseten_writes_skipped_total",
        "baseten_requests_total",
        "baseten_request_duration_seconds",
        "rate_limiter_waits_total",
        "leader",
    ] {
        let name = format!("{PREFIX}{family}");
        assert!(
            panels.iter().any(|(_, q)| metric_names(q).contains(&name)),
            "no panel shows {name}"
        );
    }
    eprintln!(
        "{} queries read {} families: {read:?}",
        alerts.len() + panels.len(),
        read.len()
    );
}

/// promtool, built from its Go module by `make tools`: its output, and whether it passed.
fn promtool(args: &[&str], dir: &std::path::Path) -> (bool, String) {
    let program = repo().join("target/tools/bin/promtool");
    assert!(
        program.exists(),
        "{}: `make tools` builds it",
        program.display()
    );
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// Writes the PrometheusRule's groups as a plain Prometheus rules file.
fn write_rules(dir: &std::path::Path, spec: &Value) {
    let text = serde_yaml_ng::to_string(spec).unwrap();
    std::fs::write(dir.join("rules.yaml"), text).unwrap();
}

#[test]
fn the_alerts_pass_promtool_and_fire_and_clear_on_synthetic_series() {
    let rule = of_kind(&monitoring_objects(), "PrometheusRule");
    let dir = tempfile::tempdir().unwrap();
    write_rules(dir.path(), &rule["spec"]);
    let (ok, said) = promtool(&["check", "rules", "rules.yaml"], dir.path());
    assert!(ok && said.contains("SUCCESS: 4 rules found"), "{said}");

    let tests = std::fs::read_to_string(repo().join("tests/monitoring/alerts.test.yaml")).unwrap();
    std::fs::write(dir.path().join("alerts.test.yaml"), &tests).unwrap();
    // Every alert has unit tests that see it fire.
    for alert in rule["spec"]["groups"][0]["rules"].as_array().unwrap() {
        let name = alert["alert"].as_str().unwrap();
        assert!(
            tests.contains(&format!("alertname: {name}")),
            "{name} untested"
        );
    }
    let (ok, said) = promtool(&["test", "rules", "alerts.test.yaml"], dir.path());
    assert!(ok, "promtool test rules:\n{said}");

    // The positive control: an alert that waits longer than the tests expect fails them.
    let mut slow = rule["spec"].clone();
    slow["groups"][0]["rules"][0]["for"] = json!("30m");
    write_rules(dir.path(), &slow);
    let (ok, said) = promtool(&["test", "rules", "alerts.test.yaml"], dir.path());
    assert!(!ok, "a 30 m alert passed tests written for 15 m:\n{said}");
}

#[test]
fn every_dashboard_query_parses_as_promql() {
    let (_, panels) = queries(&monitoring_objects());
    let as_rules = |queries: Vec<String>| {
        let rules: Vec<Value> = (queries.iter().enumerate())
            .map(|(i, expr)| json!({"record": format!("dashboard:query_{i}"), "expr": expr}))
            .collect();
        json!({"groups": [{"name": "dashboard", "rules": rules}]})
    };
    let dir = tempfile::tempdir().unwrap();
    let count = panels.len();
    assert!(count >= 9, "{panels:?}");
    write_rules(
        dir.path(),
        &as_rules(panels.into_iter().map(|(_, q)| q).collect()),
    );
    let (ok, said) = promtool(&["check", "rules", "rules.yaml"], dir.path());
    assert!(
        ok && said.contains(&format!("SUCCESS: {count} rules found")),
        "{said}"
    );
    // The positive control: a query that does not parse is refused.
    write_rules(dir.path(), &as_rules(vec!["sum(rate(x[5m])".into()]));
    let (ok, said) = promtool(&["check", "rules", "rules.yaml"], dir.path());
    assert!(!ok, "an unbalanced query passed: {said}");
}

#[test]
fn the_readme_shows_the_alerts_the_prometheus_rule_ships() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let block = readme
        .split("```promql\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README's alert block");
    let shown: Vec<(String, String)> = (block.lines())
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            let (expr, wait) = line
                .split_once("# for:")
                .expect("an expression and its for");
            (expr.trim().to_string(), wait.trim().to_string())
        })
        .collect();
    let rule = of_kind(&monitoring_objects(), "PrometheusRule");
    let shipped: Vec<(String, String)> = (rule["spec"]["groups"][0]["rules"].as_array().unwrap())
        .iter()
        .map(|r| {
            let expr = r["expr"].as_str().unwrap().to_string();
            (expr, r["for"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(shown, shipped);
}
