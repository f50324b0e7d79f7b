//! The emulator's in-memory world: organisations (one per API key), teams, secrets, the
//! request log, rate-limit windows and queued faults.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Config, DEFAULT_TEAM_NAME};

/// The length of one rate-limit window.
pub(crate) const RATE_WINDOW: Duration = Duration::from_secs(1);

/// Baseten treats every non-alphanumeric character as the same character, and keeps case:
/// `hf_access_token`, `hf-access-token` and `hf.access.token` are one secret.
pub fn normalise_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// One secret as the admin API shows it, value included (the admin API is for tests only).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AdminSecret {
    /// Stable, non-secret label of the API key (organisation) that owns the secret.
    pub api_key_id: String,
    /// Id of the team the secret belongs to.
    pub team_id: String,
    /// Name of that team.
    pub team_name: String,
    /// The spelling of the name that created the secret.
    pub name: String,
    /// Baseten's stable id of the secret.
    pub id: String,
    /// Creation time, RFC 3339 UTC.
    pub created_at: String,
    /// The current value.
    pub value: String,
    /// How many upserts wrote this secret.
    pub writes: u64,
}

/// One request the emulator answered on the Baseten API.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AdminRequest {
    /// HTTP method.
    pub method: String,
    /// Request path, as sent (still escaped).
    pub path: String,
    /// Status code answered.
    pub status: u16,
    /// When it was answered, RFC 3339 UTC.
    pub at: String,
    /// When it arrived, RFC 3339 UTC (earlier than `at` by the handling time and any
    /// injected latency).
    pub received_at: String,
    /// The secret name an upsert carried (never its value); absent for other requests.
    #[serde(default)]
    pub name: Option<String>,
}

/// A fault to inject into the next `count` matching requests.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Fault {
    /// Requests whose path starts with this prefix match.
    pub path_prefix: String,
    /// Only requests with this method match; any method when absent.
    #[serde(default)]
    pub method: Option<String>,
    /// Only requests authenticating with this API key match; any key when absent.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Status to answer with; the request is not processed.
    #[serde(default)]
    pub status: Option<u16>,
    /// How many matching requests this fault applies to.
    #[serde(default = "one")]
    pub count: u32,
    /// Delay before answering, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// Close the connection instead of sending a complete answer.
    #[serde(default)]
    pub drop_connection: bool,
    /// Body to answer with; a documented body for the status when absent.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// A body sent verbatim instead (with `content_type`), such as a proxy's HTML page.
    #[serde(default)]
    pub raw_body: Option<String>,
    /// Content type of `raw_body`; `text/html` when absent.
    #[serde(default)]
    pub content_type: Option<String>,
    /// Extra response headers, such as `Retry-After`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

#[derive(Clone)]
pub(crate) struct Team {
    pub id: String,
    pub name: String,
    pub default: bool,
    pub created_at: String,
}

#[derive(Clone)]
pub(crate) struct Secret {
    pub name: String,
    pub id: String,
    pub created_at: String,
    pub value: String,
    pub writes: u64,
}

pub(crate) struct Org {
    pub key_id: String,
    pub teams: Vec<Team>,
    /// Secrets per team id, keyed by normalised name.
    pub secrets: HashMap<String, BTreeMap<String, Secret>>,
}

#[derive(Default)]
struct World {
    /// Organisations keyed by API key.
    orgs: HashMap<String, Org>,
    /// Organisations in the order they were created, by API key.
    org_order: Vec<String>,
    requests: Vec<AdminRequest>,
    faults: Vec<Fault>,
    /// Rate-limit windows keyed by (API key, endpoint).
    windows: HashMap<(String, String), (Instant, u32)>,
}

pub(crate) struct Emulator {
    config: Config,
    world: Mutex<World>,
}

/// Why a rate-limited request was refused: seconds until the window resets.
pub(crate) struct RetryAfter(pub u64);

pub(crate) fn now_rfc3339() -> String {
    // Whole seconds, as Baseten answers.
    let now = Timestamp::now();
    Timestamp::from_second(now.as_second())
        .map(|t| t.to_string())
        .unwrap_or_else(|_| now.to_string())
}

fn stable_id(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..6])
}

fn random_secret_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    (0..7)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

impl Emulator {
    pub fn new(config: Config) -> Self {
        let emulator = Self {
            config,
            world: Mutex::new(World::default()),
        };
        emulator.reset();
        emulator
    }

    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Forgets every secret, request, fault and rate-limit window; configured keys stay valid.
    pub fn reset(&self) {
        let mut world = self.world();
        *world = World::default();
        for key in self.config.api_keys.clone() {
            self.create_org(&mut world, &key);
        }
    }

    fn create_org(&self, world: &mut World, key: &str) {
        let key_id = format!("key-{}", world.org_order.len() + 1);
        let created_at = now_rfc3339();
        let mut teams = vec![Team {
            id: stable_id(&[&key_id, DEFAULT_TEAM_NAME]),
            name: DEFAULT_TEAM_NAME.to_string(),
            default: true,
            created_at: created_at.clone(),
        }];
        for name in &self.config.teams {
            if name != DEFAULT_TEAM_NAME {
                teams.push(Team {
                    id: stable_id(&[&key_id, name]),
                    name: name.clone(),
                    default: false,
                    created_at: created_at.clone(),
                });
            }
        }
        world.orgs.insert(
            key.to_string(),
            Org {
                key_id,
                teams,
                secrets: HashMap::new(),
            },
        );
        world.org_order.push(key.to_string());
    }

    /// Returns whether `key` authenticates, creating its organisation when any key is accepted.
    pub fn authenticate(&self, key: &str) -> bool {
        if key.is_empty() {
            return false;
        }
        let mut world = self.world();
        if world.orgs.contains_key(key) {
            return true;
        }
        if self.config.api_keys.is_empty() {
            self.create_org(&mut world, key);
            return true;
        }
        false
    }

    /// Counts one request of `key` against `endpoint`; refuses it when the window is full.
    pub fn admit(&self, key: &str, endpoint: &str) -> Result<(), RetryAfter> {
        let limit = self.config.rate_limit_per_second;
        let mut world = self.world();
        let now = Instant::now();
        let window = world
            .windows
            .entry((key.to_string(), endpoint.to_string()))
            .or_insert((now, 0));
        if now.duration_since(window.0) >= RATE_WINDOW {
            *window = (now, 0);
        }
        if window.1 >= limit {
            let reset_in = RATE_WINDOW.saturating_sub(now.duration_since(window.0));
            return Err(RetryAfter(reset_in.as_secs_f64().ceil().max(1.0) as u64));
        }
        window.1 += 1;
        Ok(())
    }

    pub fn record(
        &self,
        method: &str,
        path: &str,
        status: u16,
        received_at: Timestamp,
        name: Option<String>,
    ) {
        self.world().requests.push(AdminRequest {
            method: method.to_string(),
            path: path.to_string(),
            status,
            at: Timestamp::now().to_string(),
            received_at: received_at.to_string(),
            name,
        });
    }

    /// Takes one use of the first fault matching the request, if any.
    pub fn take_fault(&self, method: &str, path: &str, api_key: Option<&str>) -> Option<Fault> {
        let mut world = self.world();
        let index = world.faults.iter().position(|f| {
            path.starts_with(&f.path_prefix)
                && f.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method))
                && f.api_key.as_deref().is_none_or(|k| Some(k) == api_key)
        })?;
        let fault = world.faults[index].clone();
        world.faults[index].count -= 1;
        if world.faults[index].count == 0 {
            world.faults.remove(index);
        }
        Some(fault)
    }

    pub fn add_fault(&self, fault: Fault) {
        if fault.count > 0 {
            self.world().faults.push(fault);
        }
    }

    pub fn clear_faults(&self) {
        self.world().faults.clear();
    }

    /// The request log without its `since` oldest entries.
    pub fn requests_since(&self, since: usize) -> Vec<AdminRequest> {
        let world = self.world();
        world.requests.get(since..).unwrap_or_default().to_vec()
    }

    pub fn admin_secrets(&self) -> Vec<AdminSecret> {
        let world = self.world();
        let mut out = Vec::new();
        for key in &world.org_order {
            let Some(org) = world.orgs.get(key) else {
                continue;
            };
            for team in &org.teams {
                for secret in org
                    .secrets
                    .get(&team.id)
                    .into_iter()
                    .flat_map(|s| s.values())
                {
                    out.push(AdminSecret {
                        api_key_id: org.key_id.clone(),
                        team_id: team.id.clone(),
                        team_name: team.name.clone(),
                        name: secret.name.clone(),
                        id: secret.id.clone(),
                        created_at: secret.created_at.clone(),
                        value: secret.value.clone(),
                        writes: secret.writes,
                    });
                }
            }
        }
        out
    }

    pub fn teams(&self, key: &str) -> Vec<Team> {
        self.world()
            .orgs
            .get(key)
            .map(|org| org.teams.clone())
            .unwrap_or_default()
    }

    /// Resolves a team of the key's organisation; the default team when `team_id` is `None`.
    pub fn team(&self, key: &str, team_id: Option<&str>) -> Option<Team> {
        self.teams(key).into_iter().find(|team| match team_id {
            Some(id) => team.id == id,
            None => team.default,
        })
    }

    /// Lists a team's secrets as (name, id, created_at), in name order.
    pub fn list(&self, key: &str, team_id: &str) -> Vec<Secret> {
        self.world()
            .orgs
            .get(key)
            .and_then(|org| org.secrets.get(team_id))
            .map(|secrets| secrets.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Creates or updates a secret; an update keeps id, created_at and the first spelling.
    pub fn upsert(&self, key: &str, team_id: &str, name: &str, value: String) -> Secret {
        let mut world = self.world();
        let org = world
            .orgs
            .get_mut(key)
            .expect("authenticated key has an org");
        let secrets = org.secrets.entry(team_id.to_string()).or_default();
        let secret = secrets
            .entry(normalise_name(name))
            .or_insert_with(|| Secret {
                name: name.to_string(),
                id: random_secret_id(),
                created_at: now_rfc3339(),
                value: String::new(),
                writes: 0,
            });
        secret.value = value;
        secret.writes += 1;
        secret.clone()
    }

    /// Deletes a secret; returns the stored spelling, or `None` when there was none.
    pub fn delete(&self, key: &str, team_id: &str, name: &str) -> Option<String> {
        let mut world = self.world();
        let org = world.orgs.get_mut(key)?;
        org.secrets
            .get_mut(team_id)?
            .remove(&normalise_name(name))
            .map(|secret| secret.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_differing_only_in_punctuation_are_one_secret() {
        assert_eq!(
            normalise_name("hf_access_token"),
            normalise_name("hf-access-token")
        );
        assert_eq!(
            normalise_name("hf.access.token"),
            normalise_name("hf-access-token")
        );
        assert_ne!(normalise_name("HF_TOKEN"), normalise_name("hf_token"));
    }

    #[test]
    fn rate_limit_refuses_after_the_limit_within_one_window() {
        let emulator = Emulator::new(Config {
            api_keys: vec!["k".into()],
            rate_limit_per_second: 3,
            ..Config::default()
        });
        for _ in 0..3 {
            assert!(emulator.admit("k", "POST /v1/secrets").is_ok());
        }
        let Err(RetryAfter(seconds)) = emulator.admit("k", "POST /v1/secrets") else {
            panic!("fourth request in one window was admitted");
        };
        assert_eq!(seconds, 1);
        // Another endpoint has its own budget.
        assert!(emulator.admit("k", "GET /v1/secrets").is_ok());
    }
}
