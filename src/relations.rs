//! Relations between resources, computed from the controller's store: who else uses a
//! Baseten name. Pure functions, so they are tested without a cluster.

use kube::ResourceExt;

use crate::baseten::normalised_name;
use crate::crd::BasetenSecret;

/// Whether `baseten_name` is one Baseten secret with a name `object` reads or wrote.
fn same_secret(object: &BasetenSecret, normalised: &str) -> bool {
    let desired = normalised_name(&object.desired_baseten_name()) == normalised;
    let written = object
        .status
        .as_ref()
        .and_then(|s| s.baseten_name.as_deref())
        .is_some_and(|n| normalised_name(n) == normalised);
    desired || written
}

/// Another live resource (not `me`, not being deleted) that targets or wrote the Baseten
/// secret `baseten_name`, if any: deleting that secret would take it from under them.
pub fn other_claimant<'a>(
    objects: impl IntoIterator<Item = &'a BasetenSecret>,
    me: &BasetenSecret,
    baseten_name: &str,
) -> Option<String> {
    let normalised = normalised_name(baseten_name);
    objects
        .into_iter()
        .filter(|o| o.metadata.uid != me.metadata.uid)
        .filter(|o| o.metadata.deletion_timestamp.is_none())
        .find(|o| same_secret(o, &normalised))
        .map(|o| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{BasetenSecretSpec, BasetenSecretStatus, SecretKeyRef};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn object(name: &str, baseten_name: Option<&str>) -> BasetenSecret {
        let mut object = BasetenSecret::new(
            name,
            BasetenSecretSpec {
                secret_ref: SecretKeyRef {
                    name: "creds".into(),
                    key: "token".into(),
                },
                baseten_name: baseten_name.map(Into::into),
                suspend: false,
                deletion_policy: Default::default(),
                update_policy: Default::default(),
            },
        );
        object.metadata.namespace = Some("ml".into());
        object.metadata.uid = Some(format!("uid-{name}"));
        object
    }

    #[test]
    fn finds_others_that_target_or_wrote_the_same_normalised_name() {
        let me = object("me", Some("hf_token"));
        let alone = [me.clone(), object("b", Some("other"))];
        assert_eq!(other_claimant(&alone, &me, "hf_token"), None);

        let spelled_otherwise = [me.clone(), object("b", Some("hf-token"))];
        assert_eq!(
            other_claimant(&spelled_otherwise, &me, "hf_token").as_deref(),
            Some("ml/b")
        );
        assert_eq!(
            other_claimant(&spelled_otherwise, &me, "HF_TOKEN"),
            None,
            "case counts"
        );

        let mut moved_away = object("c", Some("elsewhere"));
        moved_away.status = Some(BasetenSecretStatus {
            baseten_name: Some("hf.token".into()),
            ..Default::default()
        });
        assert_eq!(
            other_claimant([&me, &moved_away], &me, "hf_token").as_deref(),
            Some("ml/c"),
            "a name another resource still holds in status is theirs too"
        );

        let mut leaving = object("d", Some("hf_token"));
        leaving.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        assert_eq!(other_claimant([&me, &leaving], &me, "hf_token"), None);
    }
}
