//! The shipped manifests: kubectl, and the objects an overlay renders to.

use std::path::PathBuf;
use std::process::Command;

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
