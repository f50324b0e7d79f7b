//! Keyed digests of the values of a Secret that several resources read, at the Secret's last
//! resourceVersion read: once one reader has read a new version, the others can tell
//! whether their own key changed without reading the Secret again (a Secret of a thousand
//! keys, changed in one, is then read once, not a thousand times). A digest is a keyed hash
//! under a random key of this process, never stored or logged, so it tells nothing about a
//! value; only the key names and the digests are kept, never a value.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard};

use k8s_openapi::api::core::v1::Secret;

/// The digests of one Secret at one resourceVersion, by key.
struct AtVersion {
    version: String,
    keys: HashMap<String, u64>,
}

/// The digests of the Secrets several resources read.
#[derive(Default)]
pub struct Digests {
    hasher: RandomState,
    secrets: Mutex<HashMap<String, AtVersion>>,
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

impl Digests {
    fn secrets(&self) -> MutexGuard<'_, HashMap<String, AtVersion>> {
        self.secrets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps the digests of every value of `secret`, read whole, at its resourceVersion.
    pub fn record(&self, namespace: &str, secret: &Secret) {
        let (Some(name), Some(version)) =
            (&secret.metadata.name, &secret.metadata.resource_version)
        else {
            return;
        };
        let keys = (secret.data.iter().flatten())
            .map(|(k, v)| (k.clone(), self.hasher.hash_one(&v.0)))
            .collect();
        let version = version.clone();
        self.secrets()
            .insert(key(namespace, name), AtVersion { version, keys });
    }

    /// The digest of `data_key` of Secret `name` at resourceVersion `version`, if one reader
    /// has read that version.
    pub fn digest(
        &self,
        namespace: &str,
        name: &str,
        version: &str,
        data_key: &str,
    ) -> Option<u64> {
        let secrets = self.secrets();
        let at = secrets.get(&key(namespace, name))?;
        (at.version == version)
            .then(|| at.keys.get(data_key).copied())
            .flatten()
    }

    /// Whether digests of Secret `name` are kept at a version other than `version`: a reader
    /// read it before, so reading it once at `version` tells the others whether their key
    /// changed.
    pub fn behind(&self, namespace: &str, name: &str, version: &str) -> bool {
        (self.secrets().get(&key(namespace, name))).is_some_and(|at| at.version != version)
    }

    /// Drops the digests of a Secret no resource reads any more.
    pub fn forget(&self, namespace: &str, name: &str) {
        let mut secrets = self.secrets();
        secrets.remove(&key(namespace, name));
        crate::maps::shrink(&mut secrets);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(version: &str, data: &[(&str, &str)]) -> Secret {
        let mut secret = Secret::default();
        secret.metadata.name = Some("s".into());
        secret.metadata.resource_version = Some(version.into());
        secret.data = Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        );
        secret
    }

    #[test]
    fn a_key_whose_value_stayed_has_the_same_digest_at_the_next_version() {
        let digests = Digests::default();
        digests.record("ns", &secret("1", &[("a", "one"), ("b", "two")]));
        let a1 = digests.digest("ns", "s", "1", "a").unwrap();
        let b1 = digests.digest("ns", "s", "1", "b").unwrap();
        digests.record("ns", &secret("2", &[("a", "one"), ("b", "changed")]));
        assert_eq!(digests.digest("ns", "s", "2", "a"), Some(a1));
        assert_ne!(digests.digest("ns", "s", "2", "b"), Some(b1));
        assert_eq!(
            digests.digest("ns", "s", "1", "a"),
            None,
            "only the last version"
        );
        assert_eq!(digests.digest("ns", "s", "2", "c"), None);
        assert!(digests.behind("ns", "s", "3") && !digests.behind("ns", "s", "2"));
        digests.forget("ns", "s");
        assert!(
            !digests.behind("ns", "s", "3"),
            "nothing kept: nothing to catch up"
        );
        assert_eq!(digests.digest("ns", "s", "2", "a"), None);
    }
}
