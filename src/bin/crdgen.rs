//! Prints the BasetenSecret CRD as YAML; `crds/basetensecrets.yaml` is its committed output.
#![forbid(unsafe_code)]

use baseten_secrets_operator::BasetenSecret;
use kube::CustomResourceExt;

fn main() -> anyhow::Result<()> {
    print!("{}", serde_yaml_ng::to_string(&BasetenSecret::crd())?);
    Ok(())
}
