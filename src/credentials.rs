//! Which Baseten API key a resource writes with: the operator's own (from its key file or
//! environment, reloaded when the file changes), or the one in a Secret of the resource's
//! namespace named by `spec.apiKeyRef`, cached by that Secret's resourceVersion.
//!
//! One client per distinct key, shared by every resource using it, so Baseten's 100
//! requests/s per key are paced by one limiter however many namespaces hold the key.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use futures::channel::mpsc::UnboundedSender;
use tracing::{info, warn};

use kube::ResourceExt;
use secrecy::{ExposeSecret, SecretString};

use crate::baseten::{BasetenClient, Transport};
use crate::crd::{BasetenSecret, SecretKeyRef};
use crate::error::Result;
use crate::hash::HashKey;
use crate::index::SecretIndex;
use crate::secrets::{Gated, Unusable, extract_value, get_secret, wipe};
use crate::selector::SecretSelector;
use crate::status::Reason;

/// One API key: its client (with the key's rate limiter) and the key of its synced hashes.
#[derive(Debug)]
pub struct ApiKey {
    /// The Baseten client authenticating with this key.
    pub client: BasetenClient,
    /// Key of the synced-hash HMAC, derived from this API key.
    pub hash_key: HashKey,
}

impl ApiKey {
    fn new(base_url: &str, transport: &Transport, key: &SecretString) -> anyhow::Result<Self> {
        Ok(Self {
            client: BasetenClient::with_transport(base_url, key, transport)?,
            hash_key: HashKey::derive(key),
        })
    }
}

type SecretKey = (String, String, String);

/// How often the operator's API key file is read again for a new key.
pub const KEY_FILE_POLL: Duration = Duration::from_secs(5);

/// The API keys in use.
pub struct Credentials {
    base_url: String,
    transport: Transport,
    operator: RwLock<Arc<ApiKey>>,
    /// Counts changes of the operator's key; part of what a settled reconcile had read.
    operator_generation: AtomicU64,
    /// Live keys by their hash key's fingerprint, so equal keys share one client.
    live: Mutex<HashMap<String, Weak<ApiKey>>>,
    /// (namespace, Secret, key) → the Secret's resourceVersion when read, and its key.
    from_secrets: Mutex<HashMap<SecretKey, (String, Arc<ApiKey>)>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Credentials {
    /// Credentials with the operator's own key.
    pub fn new(
        base_url: &str,
        transport: Transport,
        operator_key: &SecretString,
    ) -> anyhow::Result<Self> {
        let operator = Arc::new(ApiKey::new(base_url, &transport, operator_key)?);
        // An apiKeyRef holding the operator's key shares its client and limiter.
        let live = HashMap::from([(operator.hash_key.fingerprint(), Arc::downgrade(&operator))]);
        Ok(Self {
            base_url: base_url.to_string(),
            operator: RwLock::new(operator),
            transport,
            operator_generation: AtomicU64::new(0),
            live: Mutex::new(live),
            from_secrets: Mutex::default(),
        })
    }

    /// The operator's own key.
    pub fn operator(&self) -> Arc<ApiKey> {
        self.operator
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the operator's own key (its file changed).
    pub fn set_operator(&self, key: &SecretString) -> anyhow::Result<()> {
        let key = self.shared(key)?;
        *self.operator.write().unwrap_or_else(|p| p.into_inner()) = key;
        self.operator_generation.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Which version of its key `object` uses, for the settled-inputs fingerprint: the
    /// key Secret's resourceVersion as the watch saw it, or the operator key's generation.
    pub fn key_version(&self, index: &SecretIndex, object: &BasetenSecret) -> Option<String> {
        match &object.spec.api_key_ref {
            Some(key_ref) => {
                index.seen_version(&object.namespace().unwrap_or_default(), &key_ref.name)
            }
            None => Some(format!(
                "operator-{}",
                self.operator_generation.load(Ordering::SeqCst)
            )),
        }
    }

    /// The one live `ApiKey` for `key`.
    fn shared(&self, key: &SecretString) -> anyhow::Result<Arc<ApiKey>> {
        let id = HashKey::derive(key).fingerprint();
        let mut live = lock(&self.live);
        live.retain(|_, weak| weak.strong_count() > 0);
        if let Some(existing) = live.get(&id).and_then(Weak::upgrade) {
            return Ok(existing);
        }
        let created = Arc::new(ApiKey::new(&self.base_url, &self.transport, key)?);
        live.insert(id, Arc::downgrade(&created));
        Ok(created)
    }

    /// The key `object` writes with, or why it has none (reason ApiKeyNotFound). A key from
    /// a Secret is read again only when the Secret watch saw a new version of it.
    pub async fn for_object(
        &self,
        client: &kube::Client,
        index: &SecretIndex,
        selector: Option<&SecretSelector>,
        object: &BasetenSecret,
    ) -> Result<std::result::Result<Arc<ApiKey>, Unusable>> {
        match &object.spec.api_key_ref {
            None => Ok(Ok(self.operator())),
            Some(key_ref) => {
                let namespace = object.namespace().unwrap_or_default();
                self.for_ref(client, index, selector, &namespace, key_ref)
                    .await
            }
        }
    }

    /// The key in `key_ref` of a Secret of `namespace`, or why it cannot be used.
    pub async fn for_ref(
        &self,
        client: &kube::Client,
        index: &SecretIndex,
        selector: Option<&SecretSelector>,
        namespace: &str,
        key_ref: &SecretKeyRef,
    ) -> Result<std::result::Result<Arc<ApiKey>, Unusable>> {
        let cache_key = (
            namespace.to_string(),
            key_ref.name.clone(),
            key_ref.key.clone(),
        );
        let seen = index.seen_version(namespace, &key_ref.name);
        if let Some((version, key)) = lock(&self.from_secrets).get(&cache_key)
            && seen.as_deref() == Some(version.as_str())
        {
            return Ok(Ok(key.clone()));
        }
        let (version, key) = match read_key(client, index, selector, namespace, key_ref).await? {
            Some(Ok(read)) => read,
            Some(Err(unusable)) => return Ok(Err(unusable)),
            None => {
                lock(&self.from_secrets).remove(&cache_key);
                return Ok(Err((
                    Reason::ApiKeyNotFound,
                    format!(
                        "Secret {namespace}/{} named by spec.apiKeyRef does not exist; create it with the Baseten API key under {:?}",
                        key_ref.name, key_ref.key
                    ),
                )));
            }
        };
        let key = match self.shared(&key) {
            Ok(key) => key,
            Err(_) => {
                return Ok(Err((
                    Reason::ApiKeyNotFound,
                    format!(
                        "key {:?} of Secret {namespace}/{} (spec.apiKeyRef) is not a usable API key (characters not allowed in an HTTP header)",
                        key_ref.key, key_ref.name
                    ),
                )));
            }
        };
        lock(&self.from_secrets).insert(cache_key, (version, key.clone()));
        Ok(Ok(key))
    }

    /// Drops the keys read from Secret `secret` of `namespace`, which no resource reads any
    /// more; their clients and limiters go with the last resource using them.
    pub fn forget_secret(&self, namespace: &str, secret: &str) {
        lock(&self.from_secrets).retain(|(ns, name, _), _| !(ns == namespace && name == secret));
    }

    /// The key a drift check of `object` uses: the operator's, or the cached one of its
    /// `apiKeyRef` (`None` until a reconcile has read it).
    pub fn cached_for(&self, object: &BasetenSecret) -> Option<Arc<ApiKey>> {
        let Some(key_ref) = &object.spec.api_key_ref else {
            return Some(self.operator());
        };
        let cache_key = (
            object.namespace().unwrap_or_default(),
            key_ref.name.clone(),
            key_ref.key.clone(),
        );
        lock(&self.from_secrets)
            .get(&cache_key)
            .map(|(_, key)| key.clone())
    }
}

/// Reads the API key `key_ref` names: the Secret's resourceVersion and the key, or why it
/// cannot be used; `None` when the Secret does not exist.
async fn read_key(
    client: &kube::Client,
    index: &SecretIndex,
    selector: Option<&SecretSelector>,
    namespace: &str,
    key_ref: &SecretKeyRef,
) -> Result<Option<std::result::Result<(String, SecretString), Unusable>>> {
    let secret = match get_secret(client, namespace, &key_ref.name, selector).await? {
        Gated::Read(secret) => secret,
        Gated::Missing => return Ok(None),
        Gated::Refused { version, why } => {
            if let Some(version) = version {
                index.read_at(namespace, &key_ref.name, &version);
            }
            return Ok(Some(Err(why)));
        }
    };
    let version = secret.metadata.resource_version.clone().unwrap_or_default();
    index.read_at(namespace, &key_ref.name, &version);
    let unusable = |message: String| Ok(Some(Err((Reason::ApiKeyNotFound, message))));
    let extracted = extract_value(&secret, key_ref, namespace);
    wipe(*secret);
    match extracted {
        Ok(key) if !key.expose_secret().trim().is_empty() => Ok(Some(Ok((
            version,
            SecretString::from(key.expose_secret().trim().to_string()),
        )))),
        Ok(_) => unusable(format!(
            "key {:?} of Secret {namespace}/{} (spec.apiKeyRef) is empty",
            key_ref.key, key_ref.name
        )),
        Err((_, message)) => unusable(format!("spec.apiKeyRef: {message}")),
    }
}

/// Reads the operator's API key file every [`KEY_FILE_POLL`]; a new key replaces the old one
/// and every resource is reconciled (each writes once: its synced hash is keyed by the key).
/// A mounted Secret's file changes in place when the Secret does, without a restart.
pub async fn follow_key_file(
    path: PathBuf,
    credentials: Arc<Credentials>,
    changed: UnboundedSender<()>,
) {
    let mut current = credentials.operator().hash_key.fingerprint();
    loop {
        tokio::time::sleep(KEY_FILE_POLL).await;
        let Ok(text) = tokio::fs::read_to_string(&path).await else {
            warn!(path = %path.display(), "cannot read the API key file; keeping the current key");
            continue;
        };
        let key = SecretString::from(text.trim().to_string());
        if key.expose_secret().is_empty() {
            warn!(path = %path.display(), "the API key file is empty; keeping the current key");
            continue;
        }
        let fingerprint = HashKey::derive(&key).fingerprint();
        if fingerprint == current {
            continue;
        }
        match credentials.set_operator(&key) {
            Ok(()) => {
                current = fingerprint;
                info!(path = %path.display(), "the API key file changed; writing with the new key");
                let _ = changed.unbounded_send(());
            }
            Err(_) => warn!(
                path = %path.display(),
                "the new API key has characters not allowed in an HTTP header; keeping the current key"
            ),
        }
    }
}
