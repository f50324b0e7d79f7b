//! Reading the one value a reconcile needs, wrapped as a secret the moment it is read.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use secrecy::SecretString;
use zeroize::Zeroize;

use crate::crd::SecretKeyRef;
use crate::digests::Digests;
use crate::error::Result;
use crate::selector::SecretSelector;
use crate::status::Reason;

/// Why a value cannot be used: a user's problem to report in status, not an error.
pub type Unusable = (Reason, String);

/// How many of a Secret's key names a KeyNotFound message lists.
const LISTED_KEYS_MAX: usize = 10;

/// The value of a key, or why it cannot be used.
pub fn extract_value(
    secret: &Secret,
    key_ref: &SecretKeyRef,
    namespace: &str,
) -> std::result::Result<SecretString, Unusable> {
    let data: Option<&ByteString> = secret.data.as_ref().and_then(|d| d.get(&key_ref.key));
    let Some(ByteString(bytes)) = data else {
        let mut keys: Vec<&str> = secret
            .data
            .iter()
            .flat_map(|d| d.keys())
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        let listed = match keys.len() {
            0 => "no keys".to_string(),
            n if n <= LISTED_KEYS_MAX => keys.join(", "),
            n => format!(
                "{} and {} more",
                keys[..LISTED_KEYS_MAX].join(", "),
                n - LISTED_KEYS_MAX
            ),
        };
        return Err((
            Reason::KeyNotFound,
            format!(
                "Secret {namespace}/{} has no key {:?} (it has: {}); add the key or fix spec.secretRef.key",
                key_ref.name, key_ref.key, listed
            ),
        ));
    };
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(SecretString::from(text.to_string())),
        Err(_) => Err((
            Reason::InvalidValue,
            format!(
                "the value of key {:?} in Secret {namespace}/{} is not UTF-8 text; Baseten stores text only",
                key_ref.key, key_ref.name
            ),
        )),
    }
}

/// One read of the key's value.
pub struct Read {
    /// The Secret's resourceVersion at the read; `None` when it does not exist.
    pub version: Option<String>,
    /// The value, or a user's problem to report in status.
    pub value: std::result::Result<SecretString, Unusable>,
}

/// Reads the key's value. The Secret is dropped as soon as the value is taken out; with
/// `digests`, the digests of all its values are kept first.
pub async fn read_value(
    client: &kube::Client,
    namespace: &str,
    key_ref: &SecretKeyRef,
    selector: Option<&SecretSelector>,
    digests: Option<&Digests>,
) -> Result<Read> {
    let secret = match get_secret(client, namespace, &key_ref.name, selector).await? {
        Gated::Read(secret) => secret,
        Gated::Refused { version, why } => {
            return Ok(Read {
                version,
                value: Err(why),
            });
        }
        Gated::Missing => {
            return Ok(Read {
                version: None,
                value: Err((
                    Reason::SecretNotFound,
                    format!(
                        "Secret {namespace}/{} does not exist; create it or fix spec.secretRef.name",
                        key_ref.name
                    ),
                )),
            });
        }
    };
    let read = Read {
        version: secret.metadata.resource_version.clone(),
        value: extract_value(&secret, key_ref, namespace),
    };
    if let Some(digests) = digests {
        digests.record(namespace, &secret);
    }
    wipe(*secret);
    Ok(read)
}

/// Brings the digests of Secret `name`, shared by several readers, up to `version` with one
/// read, when they are kept at an older one. Best effort: when the read fails, is refused or
/// finds another version, nothing is recorded at `version` and every reader reads for itself.
pub async fn catch_up_digests(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    version: &str,
    selector: Option<&SecretSelector>,
    digests: &Digests,
) {
    if !digests.behind(namespace, name, version) {
        return;
    }
    if let Ok(Gated::Read(secret)) = get_secret(client, namespace, name, selector).await {
        digests.record(namespace, &secret);
        wipe(*secret);
    }
}

/// Zeroes every value of a Secret read whole, so none outlives the read in freed memory.
pub fn wipe(mut secret: Secret) {
    zero(&mut secret);
}

/// Zeroes every value of `secret` in place and empties it.
fn zero(secret: &mut Secret) {
    for value in secret.data.iter_mut().flat_map(|data| data.values_mut()) {
        value.0.zeroize();
    }
}

/// What a gated read of a Secret found.
pub enum Gated {
    /// The Secret does not exist.
    Missing,
    /// The operator may not read it: its RBAC forbids it, or it fails the label selector.
    Refused {
        /// The Secret's resourceVersion, when its metadata could be read.
        version: Option<String>,
        /// Why, for the resource's status.
        why: Unusable,
    },
    /// The whole Secret, values included (boxed: it is much larger than a refusal).
    Read(Box<Secret>),
}

/// Reads a Secret of `namespace` through the label-selector and RBAC gates. With a
/// selector, the labels are checked on a metadata-only read first, so the values of a
/// Secret the operator may not push never reach this process.
pub async fn get_secret(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    selector: Option<&SecretSelector>,
) -> Result<Gated> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    if let Some(selector) = selector {
        let meta = match secrets.get_metadata_opt(name).await {
            Ok(Some(meta)) => meta,
            Ok(None) => return Ok(Gated::Missing),
            Err(error) => return refused_by_rbac(error, namespace, name),
        };
        if let Some(why) = not_allowed(selector, meta.metadata.labels.as_ref(), namespace, name) {
            return Ok(Gated::Refused {
                version: meta.metadata.resource_version,
                why,
            });
        }
    }
    let secret = match secrets.get_opt(name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => return Ok(Gated::Missing),
        Err(error) => return refused_by_rbac(error, namespace, name),
    };
    // The labels may have changed between the two reads: the full read decides.
    if let Some(why) =
        selector.and_then(|s| not_allowed(s, secret.metadata.labels.as_ref(), namespace, name))
    {
        let version = secret.metadata.resource_version.clone();
        wipe(secret);
        return Ok(Gated::Refused { version, why });
    }
    Ok(Gated::Read(Box::new(secret)))
}

/// A refusal when the operator's RBAC forbids the read (as in the namespaced install,
/// outside its namespaces), which only the user can change; any other error as it is.
fn refused_by_rbac(error: kube::Error, namespace: &str, name: &str) -> Result<Gated> {
    match error {
        kube::Error::Api(status) if status.code == 403 => Ok(Gated::Refused {
            version: None,
            why: (
                Reason::SecretNotAllowed,
                format!(
                    "the operator may not read Secret {namespace}/{name}: its RBAC forbids reading Secrets in namespace {namespace}; with the namespaced install, add the namespace to --watch-namespaces and give it the operator's Role there"
                ),
            ),
        }),
        error => Err(error.into()),
    }
}

/// Why Secret `name` with `labels` may not be read under `selector`.
fn not_allowed(
    selector: &SecretSelector,
    labels: Option<&BTreeMap<String, String>>,
    namespace: &str,
    name: &str,
) -> Option<Unusable> {
    (!selector.matches(labels)).then(|| {
        (
            Reason::SecretNotAllowed,
            format!(
                "Secret {namespace}/{name} may not be pushed: this operator reads only Secrets matching the label selector {:?}; label the Secret to allow it",
                selector.text()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_wiped_secret_holds_no_value_bytes() {
        let mut secret = secret_with(&[("token", b"s3cr3t"), ("other", b"another value")]);
        zero(&mut secret);
        let data = secret.data.as_ref().unwrap();
        assert_eq!(data.len(), 2, "the keys stay, only the values go");
        // zeroize writes zeros over the whole buffer, then empties it.
        assert!(data.values().all(|v| v.0.is_empty()));
    }

    fn secret_with(data: &[(&str, &[u8])]) -> Secret {
        Secret {
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn missing_key_and_non_utf8_values_are_named_without_values() {
        let key_ref = SecretKeyRef {
            name: "creds".into(),
            key: "token".into(),
        };
        let (reason, message) =
            extract_value(&secret_with(&[("other", b"hunter2")]), &key_ref, "ml").unwrap_err();
        assert_eq!(reason, Reason::KeyNotFound);
        assert!(
            message.contains("other") && !message.contains("hunter2"),
            "{message}"
        );

        let (reason, message) = extract_value(
            &secret_with(&[("token", &[0xff, 0xfe, b'x'])]),
            &key_ref,
            "ml",
        )
        .unwrap_err();
        assert_eq!(reason, Reason::InvalidValue);
        assert!(message.contains("UTF-8"));

        let value = extract_value(&secret_with(&[("token", b"ok")]), &key_ref, "ml").unwrap();
        assert_eq!(secrecy::ExposeSecret::expose_secret(&value), "ok");
    }
    #[test]
    fn a_missing_key_lists_the_first_ten_key_names_and_counts_the_rest() {
        let key_ref = SecretKeyRef {
            name: "many".into(),
            key: "token".into(),
        };
        let names: Vec<String> = (0..500).map(|i| format!("key-{i:03}")).collect();
        let data: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"v"[..])).collect();
        let (_, message) = extract_value(&secret_with(&data), &key_ref, "ml").unwrap_err();
        assert!(
            message.contains("key-000, key-001") && message.contains("key-009 and 490 more"),
            "{message}"
        );
        assert!(!message.contains("key-010"), "{message}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn no_value_reaches_a_message_whatever_the_key_names(
            data in prop::collection::btree_map("[-._a-zA-Z0-9]{1,20}", prop::collection::vec(any::<u8>(), 0..16), 0..30),
            wanted in "[-._a-zA-Z0-9]{1,20}",
        ) {
            // Values are marked so that no key name, which has no spaces, can hold one.
            let data: Vec<(String, Vec<u8>)> = data
                .into_iter()
                .map(|(key, mut value)| {
                    value.splice(0..0, b"VALUE ".iter().copied());
                    (key, value)
                })
                .collect();
            let borrowed: Vec<(&str, &[u8])> = data.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
            let key_ref = SecretKeyRef { name: "creds".into(), key: wanted.clone() };
            match extract_value(&secret_with(&borrowed), &key_ref, "ml") {
                Ok(value) => prop_assert!(data.iter().any(|(k, v)| k == &wanted
                    && v.as_slice() == secrecy::ExposeSecret::expose_secret(&value).as_bytes())),
                Err((_, message)) => prop_assert!(!message.contains("VALUE "), "{}", message),
            }
        }
    }
}
