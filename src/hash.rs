//! The keyed hash stored in `status.syncedHash`.
//!
//! It is an HMAC-SHA256 of the Baseten name and the value under a key derived from the
//! Baseten API key. Readers of the status cannot test guesses of the value without the API
//! key, nothing extra has to be stored, and a new API key (maybe another organisation)
//! makes every resource write once.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Eight hex digits of the SHA-256 of `text`: a short, stable tag that keeps generated
/// names apart (not a secret's hash: it is only ever taken of names).
pub fn short_hex(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..4])
}

/// Prefix naming the algorithm, so a later change of scheme is recognisable.
const PREFIX: &str = "hmac-sha256:";

/// Domain separation for deriving the hash key from the API key.
const DERIVATION_LABEL: &[u8] = b"baseten-secrets-operator/synced-hash/v1";

/// The secret key of the synced-hash HMAC.
pub struct HashKey(SecretBox<[u8; 32]>);

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashKey([redacted])")
    }
}

impl HashKey {
    /// Derives the key from the Baseten API key.
    pub fn derive(api_key: &SecretString) -> Self {
        let mut mac = HmacSha256::new_from_slice(api_key.expose_secret().as_bytes())
            .expect("HMAC accepts keys of any length");
        mac.update(DERIVATION_LABEL);
        let derived: [u8; 32] = mac.finalize().into_bytes().into();
        Self(SecretBox::new(Box::new(derived)))
    }

    /// A stable, non-reversible identity of the API key this was derived from, telling keys
    /// apart in this process (never logged or stored).
    pub fn fingerprint(&self) -> String {
        let mut mac = HmacSha256::new_from_slice(self.0.expose_secret())
            .expect("HMAC accepts keys of any length");
        mac.update(b"fingerprint");
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    /// The hash of writing `value` under `baseten_name`.
    pub fn synced_hash(&self, baseten_name: &str, value: &SecretString) -> String {
        let mut mac = HmacSha256::new_from_slice(self.0.expose_secret())
            .expect("HMAC accepts keys of any length");
        // Length-prefix the name so that (name, value) pairs cannot collide by shifting bytes.
        mac.update(&(baseten_name.len() as u64).to_be_bytes());
        mac.update(baseten_name.as_bytes());
        mac.update(value.expose_secret().as_bytes());
        format!("{PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_string())
    }

    #[test]
    fn same_inputs_same_hash() {
        let key = HashKey::derive(&secret("api-key"));
        let a = key.synced_hash("hf_token", &secret("hunter2"));
        assert_eq!(a, key.synced_hash("hf_token", &secret("hunter2")));
        assert!(a.starts_with("hmac-sha256:"));
    }

    #[test]
    fn a_guess_cannot_be_checked_without_the_api_key() {
        // Someone who reads the status and guesses the value can compute every unkeyed
        // digest of it; none of them may match what the status shows.
        let key = HashKey::derive(&secret("api-key"));
        let shown = key.synced_hash("hf_token", &secret("hunter2"));
        let digest = |parts: &[&[u8]]| {
            let mut hasher = <Sha256 as sha2::Digest>::new();
            for part in parts {
                sha2::Digest::update(&mut hasher, part);
            }
            format!("{PREFIX}{}", hex::encode(sha2::Digest::finalize(hasher)))
        };
        let name_len = 8u64.to_be_bytes();
        for guess in [
            digest(&[b"hunter2"]),
            digest(&[b"hf_token", b"hunter2"]),
            digest(&[&name_len, b"hf_token", b"hunter2"]),
            HashKey::derive(&secret("")).synced_hash("hf_token", &secret("hunter2")),
        ] {
            assert_ne!(shown, guess);
        }
    }

    #[test]
    fn value_name_and_api_key_all_change_the_hash() {
        let key = HashKey::derive(&secret("api-key"));
        let base = key.synced_hash("a", &secret("v"));
        assert_ne!(base, key.synced_hash("a", &secret("w")));
        assert_ne!(base, key.synced_hash("b", &secret("v")));
        assert_ne!(
            base,
            HashKey::derive(&secret("other")).synced_hash("a", &secret("v"))
        );
        // Shifting bytes between name and value does not collide.
        assert_ne!(
            key.synced_hash("ab", &secret("c")),
            key.synced_hash("a", &secret("bc"))
        );
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = HashKey::derive(&secret("api-key"));
        assert_eq!(format!("{key:?}"), "HashKey([redacted])");
    }
}
