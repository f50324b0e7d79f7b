//! Drift repair at the cost of one list call per (API key, team) and interval. Baseten never
//! returns values, but its list shows names and ids: a secret this operator wrote that is
//! missing was deleted behind its back, and one whose id changed was recreated. Either way
//! the resource is reconciled with a flag that makes it push its value again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc::UnboundedSender;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use rand::Rng;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::baseten::{SecretV1, normalised_name};
use crate::claims::key_identity;
use crate::crd::{BasetenSecret, MAX_REFRESH_INTERVAL};
use crate::credentials::Credentials;
use crate::duration::parse_duration;
use crate::maps::object_key;
use crate::memory::{Drift, Memories};
use crate::metrics::Metrics;

/// How often the drift loop looks for groups it does not know yet.
pub const DRIFT_TICK: Duration = Duration::from_secs(5);

/// How long a group whose list failed waits before it tries again (at most its interval).
pub const DRIFT_RETRY: Duration = Duration::from_secs(30);

/// What `object` asks of drift checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interval {
    /// None ("0" or absent).
    Never,
    /// One every so often.
    Every(Duration),
    /// Its refreshInterval is no duration of at most [`MAX_REFRESH_INTERVAL`] (the CRD
    /// refuses such values, but an older CRD may have let one in): no drift checks.
    Invalid,
}

/// The refresh interval of `object`.
pub fn refresh_interval(object: &BasetenSecret) -> Interval {
    let Some(text) = object.spec.refresh_interval.as_deref() else {
        return Interval::Never;
    };
    match parse_duration(text) {
        Some(interval) if interval.is_zero() => Interval::Never,
        Some(interval) if interval <= MAX_REFRESH_INTERVAL => Interval::Every(interval),
        _ => Interval::Invalid,
    }
}

/// Compares what `object` wrote (its status) with Baseten's list of its team.
pub fn drift_of(object: &BasetenSecret, listed: &[SecretV1]) -> Option<Drift> {
    let status = object.status.as_ref()?;
    status.synced_hash.as_ref()?;
    let written = normalised_name(status.baseten_name.as_deref()?);
    match listed.iter().find(|s| normalised_name(&s.name) == written) {
        None => Some(Drift::Missing),
        Some(found) => match (&status.secret_id, &found.id) {
            (Some(was), Some(now)) if was != now => Some(Drift::Recreated {
                was: was.clone(),
                now: now.clone(),
            }),
            _ => None,
        },
    }
}

/// A group of resources checked with one list call: the API key (as the claims tell keys
/// apart) and the team as resources name it (empty for the key's default team).
type Group = (String, String);

fn first_check(interval: Duration) -> Duration {
    // Spread over the interval, so checks do not line up after a restart.
    interval.mul_f64(rand::rng().random_range(0.5..=1.0))
}

fn next_check(interval: Duration) -> Duration {
    interval.mul_f64(rand::rng().random_range(0.9..=1.1))
}

/// What the drift checks use: the API keys, where drift is remembered, what is counted.
pub struct Checks {
    /// The API keys in use.
    pub credentials: Arc<Credentials>,
    /// Where a drifted resource is flagged for a push.
    pub memories: Arc<Memories>,
    /// Counts drift repairs.
    pub metrics: Arc<Metrics>,
}

/// Checks each group of resources when due, and requeues the drifted ones flagged for a push.
pub async fn run(
    checks: Checks,
    store: Store<BasetenSecret>,
    requeue: UnboundedSender<ObjectRef<BasetenSecret>>,
) {
    let mut due: HashMap<Group, Instant> = HashMap::new();
    // Resources told about an invalid refreshInterval, with it, so each is told once.
    let mut warned: HashSet<(String, String)> = HashSet::new();
    loop {
        // Wakes when the next group is due, and at least every tick to find new groups.
        let wake = due
            .values()
            .copied()
            .chain([Instant::now() + DRIFT_TICK])
            .min()
            .unwrap_or_else(Instant::now);
        tokio::time::sleep_until(wake).await;
        let now = Instant::now();
        // Group the resources that ask for drift checks and hold a write of their own.
        let mut groups: HashMap<Group, (Duration, Vec<Arc<BasetenSecret>>)> = HashMap::new();
        let mut invalid = HashSet::new();
        for object in store.state() {
            let interval = match refresh_interval(&object) {
                Interval::Every(interval) => interval,
                Interval::Never => continue,
                Interval::Invalid => {
                    invalid.insert(warn_invalid(&object, &warned));
                    continue;
                }
            };
            if object.spec.suspend || object.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let group = (
                key_identity(&object),
                object.spec.team.clone().unwrap_or_default(),
            );
            let entry = groups
                .entry(group)
                .or_insert_with(|| (interval, Vec::new()));
            entry.0 = entry.0.min(interval);
            entry.1.push(object);
        }
        warned = invalid;
        due.retain(|group, _| groups.contains_key(group));
        for (group, (interval, members)) in groups {
            let when = *due
                .entry(group.clone())
                .or_insert_with(|| now + first_check(interval));
            if when > now {
                continue;
            }
            let next = match check(&checks, &group, &members, &requeue).await {
                Ok(()) => next_check(interval),
                Err(()) => interval.min(DRIFT_RETRY),
            };
            due.insert(group, Instant::now() + next);
        }
    }
}

/// Logs, once per resource and value, that an invalid refreshInterval turns drift checks
/// off; returns what identifies the warning.
fn warn_invalid(object: &BasetenSecret, warned: &HashSet<(String, String)>) -> (String, String) {
    let namespace = object.namespace().unwrap_or_default();
    let told = (
        object_key(&namespace, &object.name_any()),
        object.spec.refresh_interval.clone().unwrap_or_default(),
    );
    if !warned.contains(&told) {
        warn!(
            namespace,
            name = object.name_any(),
            refresh_interval = %told.1,
            max = "24h",
            "refreshInterval is not a duration of at most 24h; no drift checks for this resource"
        );
    }
    told
}

/// Lists one group's team once and flags each drifted member.
async fn check(
    checks: &Checks,
    (_, team): &Group,
    members: &[Arc<BasetenSecret>],
    requeue: &UnboundedSender<ObjectRef<BasetenSecret>>,
) -> Result<(), ()> {
    // A key from a Secret is known once a reconcile has read it.
    let Some(api_key) = members
        .first()
        .and_then(|o| checks.credentials.cached_for(o))
    else {
        return Ok(());
    };
    let wanted = (!team.is_empty()).then_some(team.as_str());
    let team = match api_key.client.team(wanted).await {
        Ok(Some(team)) => team,
        // An unknown team shows as TeamNotFound on its resources.
        Ok(None) => return Ok(()),
        Err(error) => {
            warn!(error = %error, "drift check could not list teams");
            return Err(());
        }
    };
    let listed = match api_key.client.list_in(Some(&team.id)).await {
        Ok(listed) => listed,
        Err(error) => {
            warn!(error = %error, "drift check could not list secrets");
            return Err(());
        }
    };
    debug!(
        resources = members.len(),
        listed = listed.len(),
        "drift check"
    );
    for object in members {
        if let Some(drift) = drift_of(object, &listed) {
            info!(
                namespace = object.namespace().unwrap_or_default(),
                name = object.name_any(),
                ?drift,
                "drift found; pushing the value again"
            );
            checks
                .memories
                .remember(object, |memory| memory.drift = Some(Box::new(drift)));
            checks.metrics.drift_repair();
            let _ = requeue.unbounded_send(ObjectRef::from_obj(object.as_ref()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{BasetenSecretSpec, BasetenSecretStatus};

    fn written(name: &str, id: &str) -> BasetenSecret {
        let mut object = BasetenSecret::new(
            "r",
            BasetenSecretSpec {
                baseten_name: Some(name.into()),
                refresh_interval: Some("1m".into()),
                ..BasetenSecretSpec::of("creds", "token")
            },
        );
        object.status = Some(BasetenSecretStatus {
            baseten_name: Some(name.into()),
            secret_id: Some(id.into()),
            synced_hash: Some("h".into()),
            ..Default::default()
        });
        object
    }

    fn listed(name: &str, id: &str) -> SecretV1 {
        SecretV1 {
            name: name.into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            id: Some(id.into()),
            team_name: None,
        }
    }

    #[test]
    fn finds_missing_and_recreated_secrets_by_normalised_name() {
        let object = written("hf_token", "id1");
        assert_eq!(drift_of(&object, &[listed("hf-token", "id1")]), None);
        assert_eq!(drift_of(&object, &[]), Some(Drift::Missing));
        assert_eq!(
            drift_of(&object, &[listed("hf_token", "id2")]),
            Some(Drift::Recreated {
                was: "id1".into(),
                now: "id2".into()
            })
        );
        let mut never_written = object.clone();
        never_written.status.as_mut().unwrap().synced_hash = None;
        assert_eq!(drift_of(&never_written, &[]), None, "not ours to repair");
        assert_eq!(
            refresh_interval(&object),
            Interval::Every(Duration::from_secs(60))
        );
    }

    #[test]
    fn an_interval_out_of_range_means_no_drift_checks() {
        let mut object = written("hf", "id1");
        for (text, expected) in [
            ("24h", Interval::Every(MAX_REFRESH_INTERVAL)),
            ("0", Interval::Never),
            ("24h1ns", Interval::Invalid),
            ("4000000000000000h", Interval::Invalid),
            ("4000000000000000h4000000000000000h", Interval::Invalid),
            ("soon", Interval::Invalid),
        ] {
            object.spec.refresh_interval = Some(text.into());
            assert_eq!(refresh_interval(&object), expected, "{text}");
        }
        object.spec.refresh_interval = None;
        assert_eq!(refresh_interval(&object), Interval::Never);
    }

    /// The CRD's pattern for refreshInterval, anchors removed.
    fn crd_pattern() -> String {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(BasetenSecret::crd()).unwrap();
        let pattern = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["refreshInterval"]["pattern"];
        let pattern = pattern.as_str().unwrap();
        pattern
            .trim_start_matches('^')
            .trim_end_matches('$')
            .to_string()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn what_the_crd_lets_in_parses_and_never_panics_a_check(
            text in proptest::string::string_regex(&crd_pattern()).unwrap(),
        ) {
            let mut object = written("hf", "id1");
            object.spec.refresh_interval = Some(text.clone());
            proptest::prop_assert!(parse_duration(&text).is_some(), "{}", text);
            if let Interval::Every(interval) = refresh_interval(&object) {
                // What a check does with it: no overflow.
                let _ = Instant::now() + first_check(interval) + next_check(interval);
            }
        }
    }
}
