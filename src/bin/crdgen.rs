//! Prints a CRD as YAML: `crdgen` the BasetenSecret CRD (`crds/basetensecrets.yaml` is its
//! committed output), `crdgen sets` the BasetenSecretSet CRD (`crds/basetensecretsets.yaml`).
#![forbid(unsafe_code)]

use baseten_secrets_operator::{BasetenSecret, BasetenSecretSet};
use kube::CustomResourceExt;

fn main() -> anyhow::Result<()> {
    let crd = match std::env::args().nth(1).as_deref() {
        None => BasetenSecret::crd(),
        Some("sets") => BasetenSecretSet::crd(),
        Some(other) => anyhow::bail!("unknown CRD {other:?}; say nothing or `sets`"),
    };
    print!("{}", serde_yaml_ng::to_string(&crd)?);
    Ok(())
}
