//! The shipped manifests: kubectl, and the objects an overlay renders to.

use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use serde::Deserialize;

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// kubectl from the control-plane build (or the PATH, against an existing cluster), run in
/// the repository's root; its output, or a panic with what it said.
pub fn kubectl(args: &[&str]) -> String {
    let built = testenv::bin_dir().join("kubectl");
    let program = if built.exists() {
        built
    } else {
        PathBuf::from("kubectl")
    };
    let mut command = Command::new(program);
    if let Some(kubeconfig) = testenv::shared().kubeconfig() {
        command.env("KUBECONFIG", kubeconfig);
    }
    let output = command
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run kubectl");
    assert!(
        output.status.success(),
        "kubectl {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The objects `deploy/<overlay>` installs, rendered by kubectl's kustomize.
pub fn rendered(overlay: &str) -> Vec<serde_yaml_ng::Value> {
    let rendered = kubectl(&["kustomize", &format!("deploy/{overlay}")]);
    serde_yaml_ng::Deserializer::from_str(&rendered)
        .map(|doc| serde_yaml_ng::Value::deserialize(doc).unwrap())
        .collect()
}

/// Installs the Prometheus Operator's CRDs that `tests/tools/build.sh` copied.
pub async fn install_prometheus_operator_crds(client: &kube::Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for kind in ["servicemonitors", "prometheusrules"] {
        let path = repo().join(format!(
            "target/tools/crds/monitoring.coreos.com_{kind}.yaml"
        ));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; `make tools` copies it", path.display()));
        let crd: CustomResourceDefinition = serde_yaml_ng::from_str(&text).unwrap();
        let name = crd.metadata.name.clone().unwrap();
        let apply = PatchParams::apply("tests").force();
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
