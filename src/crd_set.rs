//! The `BasetenSecretSet` custom resource: every selected key of one Secret, or of every
//! labelled Secret, pushed to Baseten through one generated BasetenSecret per key, with
//! names mapped by a template and rewrite rules. The doc comments here become
//! `kubectl explain basetensecretset`.
// Each printcolumn repeats `type_ = ...`, which clippy mistakes for a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::crd::{DeletionPolicy, SecretKeyRef, UpdatePolicy, ready_in};

/// Label on every generated BasetenSecret naming its set (a hash of the name when the name
/// is longer than a label value may be).
pub const SET_LABEL: &str = "baseten.co/set";

/// Finalizer that holds a set until its generated BasetenSecrets are deleted.
pub const SET_FINALIZER: &str = "baseten.co/set-cleanup";

/// Pushes every selected key of a Secret (or of every Secret matching a selector) to Baseten, through one generated BasetenSecret per key.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "baseten.co",
    version = "v1alpha1",
    kind = "BasetenSecretSet",
    plural = "basetensecretsets",
    singular = "basetensecretset",
    shortname = "btss",
    category = "baseten",
    namespaced,
    status = "BasetenSecretSetStatus",
    doc = "Pushes every selected key of a Secret (or of every Secret matching a selector) to Baseten, through one generated BasetenSecret per key.",
    printcolumn(
        name = "Secret",
        type_ = "string",
        json_path = ".spec.secretName",
        description = "The one Secret whose keys are pushed (absent with secretSelector)"
    ),
    printcolumn(
        name = "Keys",
        type_ = "integer",
        json_path = ".status.keyCount",
        description = "How many keys have a generated BasetenSecret"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyCount",
        description = "How many generated BasetenSecrets are Ready"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Reason of the Ready condition"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("has(self.secretName) != has(self.secretSelector)").message("set exactly one of secretName and secretSelector"))]
#[serde(rename_all = "camelCase")]
pub struct BasetenSecretSetSpec {
    /// The one Secret of this namespace whose keys are pushed. Set exactly one of secretName and secretSelector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub secret_name: Option<String>,

    /// Every Secret of this namespace with these labels has its keys pushed; a Secret that gains the labels gets BasetenSecrets, one that loses them loses its BasetenSecrets. Set exactly one of secretName and secretSelector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_selector: Option<LabelSelector>,

    /// A regular expression (RE2 syntax, unanchored: use ^ and $) over key names; only matching keys are pushed. Absent: every key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub keys: Option<String>,

    /// The Baseten name of each key before the rewrite rules: a template where {secret} is the Secret's name and {key} the key. Default "{key}" with secretName, "{secret}_{key}" with secretSelector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub baseten_name: Option<String>,

    /// Rules applied in order to the name the template gave. Each is either regexp (replace every match of source by target, where $1 or ${name} refer to groups) or case (lower or upper). The result must be a valid Baseten name: letters, digits, '-', '.' and '_', at most 253 characters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub rewrite: Vec<Rewrite>,

    /// Copied into the spec of every generated BasetenSecret.
    #[serde(default, skip_serializing_if = "is_empty_template")]
    pub template: SetTemplate,
}

fn is_empty_template(template: &SetTemplate) -> bool {
    *template == SetTemplate::default()
}

/// One rewrite rule: set exactly one of regexp and case.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("has(self.regexp) != has(self.case)").message("a rewrite rule sets exactly one of regexp and case"))]
#[serde(rename_all = "camelCase")]
pub struct Rewrite {
    /// Replace every match of a regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regexp: Option<RegexpRewrite>,

    /// Change the case of the whole name: lower or upper.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case: Option<Case>,
}

/// Replaces every match of `source` in the name by `target`.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RegexpRewrite {
    /// Regular expression (RE2 syntax) to look for.
    #[schemars(length(min = 1, max = 1024))]
    pub source: String,

    /// What each match becomes; $1 or ${1} is the first group, ${name} a named group.
    #[schemars(length(max = 253))]
    pub target: String,
}

/// A change of case.
#[derive(schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Case {
    /// Every letter in lower case.
    Lower,
    /// Every letter in upper case.
    Upper,
}

/// The fields every generated BasetenSecret gets; see `kubectl explain basetensecret.spec`.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SetTemplate {
    /// Retain (default) or Delete: what happens in Baseten when a key's BasetenSecret goes (the key was removed, the Secret lost its labels, or the set was deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,

    /// Replace (default) or IfNotExists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_policy: Option<UpdatePolicy>,

    /// How often each generated BasetenSecret checks for drift (a Go duration of at most 24h); absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub refresh_interval: Option<String>,

    /// The Baseten team to write to, by name or id; absent: the API key's default team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub team: Option<String>,

    /// A key of a Secret in this namespace holding the Baseten API key to write with; absent: the operator's own key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_ref: Option<SecretKeyRef>,

    /// Stops writing to Baseten while true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
}

/// What the operator last observed of the set and its generated BasetenSecrets.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BasetenSecretSetStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Current state. "Ready" is True when every generated BasetenSecret is Ready (reason Ready); else its reason is one of InvalidSpec (a regular expression that does not compile, or a name a rule makes invalid), SecretNotFound, DuplicateNames (two keys map to one Baseten name, in Baseten's sense; neither is written), Progressing (a generated BasetenSecret has no status yet), NotReady (a generated BasetenSecret is not Ready; the message names it and its reason).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// How many keys have a generated BasetenSecret.
    #[serde(default)]
    pub key_count: i32,

    /// How many generated BasetenSecrets are Ready.
    #[serde(default)]
    pub ready_count: i32,

    /// How many generated BasetenSecrets there are by the reason of their Ready condition ("Pending" before their first status), by reason name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<ReasonCount>,

    /// Each pushed key, its Baseten name and its BasetenSecret. Names only, never values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyMapping>,
}

/// How many generated BasetenSecrets have one Ready reason.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReasonCount {
    /// The reason.
    pub reason: String,
    /// How many.
    pub count: i32,
}

/// One key of one Secret and where it goes.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KeyMapping {
    /// The Secret.
    pub secret: String,
    /// The key.
    pub key: String,
    /// The Baseten name the key is pushed as.
    pub baseten_name: String,
    /// The generated BasetenSecret.
    pub child: String,
}

impl BasetenSecretSet {
    /// The Ready condition, if any.
    pub fn ready_condition(&self) -> Option<&Condition> {
        ready_in(&self.status.as_ref()?.conditions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn committed_crd_matches_the_rust_types() {
        let generated = serde_yaml_ng::to_string(&BasetenSecretSet::crd()).unwrap();
        let committed = include_str!("../crds/basetensecretsets.yaml");
        assert!(
            generated == committed,
            "crds/basetensecretsets.yaml is stale; run `make crds` and commit the result"
        );
    }
}
