//! The `BasetenSecret` custom resource: which key of which Secret to push to Baseten, and
//! what Baseten answered. The doc comments here become `kubectl explain basetensecret`.
// Each printcolumn repeats `type_ = ...`, which clippy mistakes for a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// API group of the resource.
pub const GROUP: &str = "baseten.co";

/// The longest refreshInterval: longer ones are refused by the apiserver, and the operator
/// treats any it gets anyway as no drift check.
pub const MAX_REFRESH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The CEL rule bounding refreshInterval to [`MAX_REFRESH_INTERVAL`]; a value the pattern
/// refuses is left to the pattern's message (duration() would fail on it).
const REFRESH_INTERVAL_RULE: &str = r"self == '0' || !self.matches('^([0-9]{1,5}(\\.[0-9]{1,9})?(ns|us|µs|ms|s|m|h)){1,4}$') || duration(self) <= duration('24h')";

/// Annotation whose new value forces one upsert even when nothing changed.
pub const FORCE_SYNC_ANNOTATION: &str = "baseten.co/force-sync";

/// Annotation that, set to "true", lets a resource with `deletionPolicy: Delete` go without
/// deleting its Baseten secret (the way out when Baseten cannot be reached).
pub const SKIP_REMOTE_DELETE_ANNOTATION: &str = "baseten.co/skip-remote-delete";

/// Finalizer that holds a resource with `deletionPolicy: Delete` until the Baseten secret it
/// wrote is deleted.
pub const CLEANUP_FINALIZER: &str = "baseten.co/cleanup";

/// What happens in Baseten when a resource goes away or stops using a name.
#[derive(
    schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum DeletionPolicy {
    /// The Baseten secret stays (the default): models reading it keep working.
    #[default]
    Retain,
    /// The Baseten secret this resource wrote is deleted with the resource, and the old name
    /// after a change of basetenName.
    Delete,
}

/// Whether an existing Baseten secret may be overwritten.
#[derive(
    schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum UpdatePolicy {
    /// Write whenever the value changes (the default).
    #[default]
    Replace,
    /// Never overwrite a Baseten secret that this resource did not create.
    IfNotExists,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// Pushes one key of a Kubernetes Secret to Baseten as a Baseten secret, and keeps it in sync.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "baseten.co",
    version = "v1alpha1",
    kind = "BasetenSecret",
    plural = "basetensecrets",
    singular = "basetensecret",
    shortname = "bts",
    category = "baseten",
    namespaced,
    status = "BasetenSecretStatus",
    doc = "Pushes one key of a Kubernetes Secret to Baseten as a Baseten secret, and keeps it in sync.",
    printcolumn(
        name = "Secret",
        type_ = "string",
        json_path = ".spec.secretRef.name",
        description = "Kubernetes Secret the value is read from"
    ),
    printcolumn(
        name = "Key",
        type_ = "string",
        json_path = ".spec.secretRef.key",
        description = "Key of that Secret"
    ),
    printcolumn(
        name = "Baseten Name",
        type_ = "string",
        json_path = ".status.basetenName",
        description = "Name of the Baseten secret last written"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Reason of the Ready condition"
    ),
    printcolumn(
        name = "Created",
        type_ = "string",
        json_path = ".status.createdAt",
        description = "When Baseten created the secret"
    ),
    printcolumn(
        name = "Last Sync",
        type_ = "date",
        json_path = ".status.lastSyncTime",
        description = "When the value was last written to Baseten"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BasetenSecretSpec {
    /// The key of a Secret in the same namespace whose value is pushed to Baseten.
    pub secret_ref: SecretKeyRef,

    /// Name of the secret in Baseten. Defaults to metadata.name. Letters, digits, '-', '.' and '_' only, at most 253 characters, not "." or "..". Baseten treats every non-alphanumeric character as the same, so "hf_token" and "hf-token" are one secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    #[x_kube(validation = Rule::new("self != '.' && self != '..'").message("basetenName may not be '.' or '..'"))]
    pub baseten_name: Option<String>,

    /// Stops writing to Baseten while true; the status keeps what was last written.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,

    /// A key of a Secret in the same namespace holding the Baseten API key to write with, so each tenant can push to its own Baseten workspace. Absent: the operator's own key. A changed key is picked up without a restart; moving to another key writes the value once (the synced hash is keyed by the API key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_ref: Option<SecretKeyRef>,

    /// The Baseten team to write to, by name or id (resolved with Baseten's team list). Absent: the API key's default team. Resources naming one team by name, by id or (for the default team) not at all target the same Baseten secrets: conflicts compare the team's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub team: Option<String>,

    /// What happens to the Baseten secret this resource wrote when the resource is deleted or basetenName changes. Retain (default): it stays in Baseten. Delete: it is deleted (a finalizer, baseten.co/cleanup, holds the resource until then; the annotation baseten.co/skip-remote-delete: "true" releases it without deleting). A name another resource now uses is never deleted.
    #[serde(default, skip_serializing_if = "is_default")]
    pub deletion_policy: DeletionPolicy,

    /// How often to check that the Baseten secret this resource wrote is still there with the same id, as a Go duration ("30s", "10m", "1h") of at most 24h, each number at most 5 digits, at most 4 parts ("1h30m"); "0" or absent: never. Resources of one team share one list call per interval. A missing secret is pushed again (event Recreated); one with another id was recreated outside this operator and gets our value again (Warning event Replaced). A value changed by hand in Baseten cannot be seen (Baseten never returns values): use the baseten.co/force-sync annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // The pattern's bounds keep every value within what Go's durations hold, so the rule's
    // duration() never overflows; the rule then bounds it to a day.
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^(0|([0-9]{1,5}(\.[0-9]{1,9})?(ns|us|µs|ms|s|m|h)){1,4})$")
    )]
    #[x_kube(validation = Rule::new(REFRESH_INTERVAL_RULE).message("refreshInterval may be at most 24h"))]
    pub refresh_interval: Option<String>,

    /// Replace (default): write whenever the value changes. IfNotExists: if the name already exists in Baseten and this resource did not create it, never write; Ready is True with reason AlreadyExists and the status shows Baseten's id and createdAt.
    #[serde(default, skip_serializing_if = "is_default")]
    pub update_policy: UpdatePolicy,
}

/// A key of a Secret in the same namespace as the BasetenSecret.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret (a DNS subdomain). It must be in the same namespace.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,

    /// Key within the Secret's data: letters, digits, '-', '_' and '.'.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// What the operator last observed and wrote.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BasetenSecretStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Current state. "Ready" is True when Baseten holds the current value of the key; its reason is Synced or AlreadyExists when True, else one of SecretNotFound, KeyNotFound, InvalidValue, Unauthorized, BasetenRejected, BasetenUnavailable, RateLimited, Suspended, Conflict (an older resource targets the same Baseten secret and wins), TeamNotFound, ApiKeyNotFound, SecretNotAllowed (the Secret lacks the labels the operator requires), Deleting, DeletionBlocked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Name of the Baseten secret last written (with reason AlreadyExists: found and left alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseten_name: Option<String>,

    /// Baseten's stable id of the secret, when Baseten returned one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_id: Option<String>,

    /// Baseten team that holds the secret, when Baseten returned one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_name: Option<String>,

    /// When Baseten created the secret, exactly as Baseten returned it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,

    /// When the value was last written to Baseten (not when it was last checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,

    /// Keyed hash (HMAC-SHA256 under a key derived from the Baseten API key) of the Baseten name and the value last written. It reveals nothing about the value and lets the operator skip writes when nothing changed, also across restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_hash: Option<String>,

    /// The value of the baseten.co/force-sync annotation that was last honoured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_sync_token: Option<String>,

    /// Baseten secrets this resource wrote and no longer wants (deletionPolicy Delete, after a change of basetenName or team) whose delete failed. Every reconcile retries them, and the resource's own deletion deletes them too; a name another resource uses is dropped from the list, not deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_deletions: Vec<PendingDeletion>,
}

/// A Baseten secret still to be deleted.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PendingDeletion {
    /// Name of the Baseten secret.
    pub baseten_name: String,

    /// Baseten team that holds it, as Baseten named it; absent: the API key's default team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_name: Option<String>,
}

impl BasetenSecretSpec {
    /// A spec that pushes `key` of Secret `secret` under the resource's name, with every
    /// other field at its default.
    pub fn of(secret: &str, key: &str) -> Self {
        Self {
            secret_ref: SecretKeyRef {
                name: secret.into(),
                key: key.into(),
            },
            baseten_name: None,
            suspend: false,
            team: None,
            api_key_ref: None,
            deletion_policy: DeletionPolicy::default(),
            update_policy: UpdatePolicy::default(),
            refresh_interval: None,
        }
    }
}

impl BasetenSecret {
    /// The Baseten name this resource targets: spec.basetenName, else metadata.name.
    pub fn desired_baseten_name(&self) -> String {
        self.spec
            .baseten_name
            .clone()
            .or_else(|| self.metadata.name.clone())
            .unwrap_or_default()
    }

    /// The Ready condition, if any.
    pub fn ready_condition(&self) -> Option<&Condition> {
        ready_in(&self.status.as_ref()?.conditions)
    }
}

/// The Ready condition among `conditions`, if any.
pub fn ready_in(conditions: &[Condition]) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == "Ready")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn committed_crd_matches_the_rust_types() {
        let generated = serde_yaml_ng::to_string(&BasetenSecret::crd()).unwrap();
        let committed = include_str!("../crds/basetensecrets.yaml");
        assert!(
            generated == committed,
            "crds/basetensecrets.yaml is stale; run `make crds` and commit the result"
        );
    }

    #[test]
    fn baseten_name_defaults_to_metadata_name() {
        let mut object = BasetenSecret::new(
            "hf-access-token",
            BasetenSecretSpec::of("hf-credentials", "token"),
        );
        assert_eq!(object.desired_baseten_name(), "hf-access-token");
        object.spec.baseten_name = Some("hf_access_token".into());
        assert_eq!(object.desired_baseten_name(), "hf_access_token");
    }
}
