//! Reading the one value a reconcile needs, wrapped as a secret the moment it is read.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use secrecy::SecretString;
use zeroize::Zeroize;

use crate::crd::SecretKeyRef;
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

/// Reads the key's value. The Secret is dropped as soon as the value is taken out.
pub async fn read_value(
    client: &kube::Client,
    namespace: &str,
    key_ref: &SecretKeyRef,
    selector: Option<&SecretSelector>,
) -> Result<Read> {
    let secret = match get_secret(client, namespace, &key_ref.name).await? {
        Ok(secret) => secret,
        Err(refused) => {
            return Ok(Read {
                version: None,
                value: Err(refused),
            });
        }
    };
    let Some(secret) = secret else {
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
    };
    if let Some(refused) = not_allowed(selector, &secret, namespace) {
        return Ok(Read {
            version: secret.metadata.resource_version.clone(),
            value: Err(refused),
        });
    }
    let read = Read {
        version: secret.metadata.resource_version.clone(),
        value: extract_value(&secret, key_ref, namespace),
    };
    wipe(secret);
    Ok(read)
}

/// Zeroes every value of a Secret read whole, so none outlives the read in freed memory.
pub fn wipe(mut secret: Secret) {
    for value in secret.data.iter_mut().flat_map(|data| data.values_mut()) {
        value.0.zeroize();
    }
}

/// Reads a Secret of `namespace`; `Ok(Err(..))` when the operator's RBAC forbids it (as in
/// the namespaced install, outside its namespaces), which only the user can change.
pub async fn get_secret(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<std::result::Result<Option<Secret>, Unusable>> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    match secrets.get_opt(name).await {
        Ok(secret) => Ok(Ok(secret)),
        Err(kube::Error::Api(status)) if status.code == 403 => Ok(Err((
            Reason::SecretNotAllowed,
            format!(
                "the operator may not read Secret {namespace}/{name}: its RBAC forbids reading Secrets in namespace {namespace}; with the namespaced install, add the namespace to --watch-namespaces and give it the operator's Role there"
            ),
        ))),
        Err(error) => Err(error.into()),
    }
}

/// Why `secret` may not be read, when the operator requires labels it lacks.
pub fn not_allowed(
    selector: Option<&SecretSelector>,
    secret: &Secret,
    namespace: &str,
) -> Option<Unusable> {
    let selector = selector?;
    (!selector.matches(secret.metadata.labels.as_ref())).then(|| {
        (
            Reason::SecretNotAllowed,
            format!(
                "Secret {namespace}/{} may not be pushed: this operator reads only Secrets matching the label selector {:?}; label the Secret to allow it",
                secret.metadata.name.as_deref().unwrap_or_default(),
                selector.text
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

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
}
