//! Monitoring that ships (deploy/components/monitoring, deploy/components/network-policy,
//! both in deploy/overlays/monitoring): the ServiceMonitor and the PrometheusRule are valid
//! objects of the Prometheus Operator's CRDs, applied to the real apiserver with strict field
//! validation; the NetworkPolicy applies and lets in the metrics port only; and every query of
//! the alerts and the dashboard names only series that a live scrape of the operator shows.

mod common;

use std::collections::BTreeSet;

use common::manifests::{rendered, repo};
use common::operator::Harness;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, ValidationDirective};
use kube::discovery::{ApiResource, Discovery};
use kube::runtime::wait::{await_condition, conditions};
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

/// Installs the Prometheus Operator's CRDs that `tests/tools/build.sh` copied.
async fn install_prometheus_operator_crds(client: &kube::Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for kind in ["servicemonitors", "prometheusrules"] {
        let path = repo().join(format!(
            "target/tools/crds/monitoring.coreos.com_{kind}.yaml"
        ));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; `make tools` copies it", path.display()));
        let crd: CustomResourceDefinition = serde_yaml_ng::from_str(&text).unwrap();
        let name = crd.metadata.name.clone().unwrap();
        let apply = PatchParams::apply("monitoring-test").force();
        crds.patch(&name, &apply, &Patch::Apply(&crd))
            .await
            .unwrap();
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .expect("CRD established in time")
        .unwrap();
    }
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
