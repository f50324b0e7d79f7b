//! How the claims name a Baseten secret: the API key as referenced, the team as spelled and
//! the normalised name, in one shared string; and the name alone, as the maps' key.

use std::sync::Arc;

use kube::ResourceExt;

use crate::baseten::normalised_name;
use crate::crd::BasetenSecret;

/// The API key whose secrets a resource writes, as the claims tell keys apart.
pub const OPERATOR_KEY: &str = "operator";

/// How the claims tell API keys apart: the operator's own key, or the Secret key an
/// apiKeyRef names (keys are not read to build the claims, so two Secrets holding one key
/// count as two keys).
pub fn key_identity(object: &BasetenSecret) -> String {
    match &object.spec.api_key_ref {
        None => OPERATOR_KEY.to_string(),
        Some(key_ref) => format!(
            "secret:{}/{}/{}",
            object.namespace().unwrap_or_default(),
            key_ref.name,
            key_ref.key
        ),
    }
}

/// One Baseten secret: which key's organisation, which team, which normalised name. Held as
/// one shared string, since every resource's entry and the maps refer to it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target(Arc<str>);

impl Target {
    /// The secret `baseten_name` of the operator's key and default team.
    pub fn named(baseten_name: &str) -> Self {
        Self::new(OPERATOR_KEY, "", baseten_name)
    }

    /// The secret `object` is to write.
    pub fn of(object: &BasetenSecret) -> Self {
        Self::in_team_of(object, &object.desired_baseten_name())
    }

    /// The secret `baseten_name` in the team `object` names.
    pub fn in_team_of(object: &BasetenSecret, baseten_name: &str) -> Self {
        Self::new(
            &key_identity(object),
            object.spec.team.as_deref().unwrap_or_default(),
            baseten_name,
        )
    }

    /// The secret `baseten_name` of team `team` (empty: the default team) of the API key
    /// identified by `key`.
    pub fn new(key: &str, team: &str, baseten_name: &str) -> Self {
        Self(format!("{key}\u{0}{team}\u{0}{}", normalised_name(baseten_name)).into())
    }

    /// How the API key is named: [`OPERATOR_KEY`], or `secret:namespace/name/key`.
    pub fn key(&self) -> &str {
        self.0.split('\u{0}').next().unwrap_or_default()
    }

    /// The Secret key holding the API key, as (namespace, Secret, key); `None` for the
    /// operator's own key.
    pub fn key_secret(&self) -> Option<(&str, &str, &str)> {
        let mut parts = self.key().strip_prefix("secret:")?.splitn(3, '/');
        Some((parts.next()?, parts.next()?, parts.next()?))
    }

    /// The team as spelled: a name, an id, or empty for the key's default team.
    pub fn team(&self) -> &str {
        let rest = &self.0[self.key().len() + 1..];
        &rest[..rest.len() - self.name().len() - 1]
    }

    /// The normalised name.
    pub fn name(&self) -> &str {
        self.0.rsplit('\u{0}').next().unwrap_or_default()
    }
}

/// A target as a key of the maps of claims: by its name alone, so that every spelling of a
/// key and team that targets one name is in one bucket (see `reconcile/identity.rs`).
#[derive(Clone, Debug)]
pub(super) struct ByName(pub(super) Target);

impl PartialEq for ByName {
    fn eq(&self, other: &Self) -> bool {
        self.0.name() == other.0.name()
    }
}

impl Eq for ByName {}

impl std::hash::Hash for ByName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.name().hash(state);
    }
}

impl std::borrow::Borrow<str> for ByName {
    fn borrow(&self) -> &str {
        self.0.name()
    }
}
