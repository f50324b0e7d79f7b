//! BasetenSecretSet end to end: one resource pushing many keys through generated
//! BasetenSecrets. The real operator, control plane and emulator.

mod common;

use baseten_secrets_operator::{BasetenSecret, BasetenSecretSet};
use common::operator::Harness;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

/// The generated BasetenSecrets of set `set`, by name.
async fn children(h: &Harness, set: &str) -> Vec<BasetenSecret> {
    let mut children: Vec<BasetenSecret> = h
        .bts_api()
        .list(&ListParams::default().labels(&format!("baseten.co/set={set}")))
        .await
        .unwrap()
        .items;
    children.sort_by_key(|c| c.name_any());
    children
}

/// The set's key → Baseten name mapping, as its status shows it.
fn mapping(set: &BasetenSecretSet) -> Vec<(String, String)> {
    let keys = set
        .status
        .as_ref()
        .map(|s| s.keys.clone())
        .unwrap_or_default();
    keys.into_iter().map(|k| (k.key, k.baseten_name)).collect()
}

/// The writes (create, update, patch, delete) of BasetenSecrets and sets in `ns` the
/// apiserver audited, but the test barrier's canaries; `None` on a cluster not started here.
fn writes_in(ns: &str) -> Option<Vec<String>> {
    let audit = testenv::shared().audit_log()?;
    let log = std::fs::read_to_string(audit).unwrap_or_default();
    let writes = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| {
            let target = &event["objectRef"];
            event["stage"] == "ResponseComplete"
                && target["apiGroup"] == "baseten.co"
                && target["namespace"] == ns
                && !target["name"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("canary-")
        })
        .map(|event| {
            let target = &event["objectRef"];
            format!(
                "{} {} {}",
                event["verb"], target["resource"], target["name"]
            )
        })
        .collect();
    Some(writes)
}

/// How many DELETE requests the emulator has answered.
async fn baseten_deletes(h: &Harness) -> usize {
    let requests = h.baseten_requests().await;
    requests.iter().filter(|r| r.method == "DELETE").count()
}

fn message(set: &BasetenSecretSet) -> String {
    set.ready_condition()
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// Waits until the set is Ready with exactly `keys` (key, Baseten name) in its status.
async fn ready_with(h: &Harness, set: &str, keys: &[(&str, &str)]) -> BasetenSecretSet {
    let wanted: Vec<(String, String)> = keys
        .iter()
        .map(|(k, n)| (k.to_string(), n.to_string()))
        .collect();
    h.wait_set(set, &format!("Ready with {wanted:?}"), |o| {
        o.ready_condition().is_some_and(|c| c.status == "True")
            && o.status.as_ref().and_then(|s| s.observed_generation) == o.metadata.generation
            && mapping(o) == wanted
    })
    .await
}

#[tokio::test]
async fn a_set_pushes_the_selected_keys_and_follows_keys_added_removed_and_renamed() {
    let h = Harness::start("set-follow").await;
    h.apply_secret(
        "ml-credentials",
        &[
            ("HF_TOKEN", b"hf value"),
            ("OPENAI_API_KEY", b"openai value"),
            ("UNRELATED", b"x"),
        ],
        json!({}),
    )
    .await;
    // The README's example.
    let spec = json!({
        "secretName": "ml-credentials",
        "keys": "^(HF|OPENAI)_",
        "rewrite": [
            {"regexp": {"source": "^HF_(.*)$", "target": "hf_$1"}},
            {"case": "lower"},
        ],
        "template": {"deletionPolicy": "Delete"},
    });
    h.apply_set("ml-keys", spec).await.unwrap();
    let set = ready_with(
        &h,
        "ml-keys",
        &[
            ("HF_TOKEN", "hf_token"),
            ("OPENAI_API_KEY", "openai_api_key"),
        ],
    )
    .await;
    let status = set.status.as_ref().unwrap();
    assert_eq!((status.key_count, status.ready_count), (2, 2));
    let synced = baseten_secrets_operator::crd_set::ReasonCount {
        reason: "Synced".into(),
        count: 2,
    };
    assert_eq!(status.reasons, [synced]);
    assert_eq!(
        h.baseten_secret("hf_token").await.unwrap().value,
        "hf value"
    );
    assert_eq!(
        h.baseten_secret("openai_api_key").await.unwrap().value,
        "openai value"
    );
    assert!(h.baseten_secret("unrelated").await.is_none());
    let generated = children(&h, "ml-keys").await;
    assert_eq!(generated.len(), 2);
    for child in &generated {
        let owner = &child.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("BasetenSecretSet", "ml-keys")
        );
        assert_eq!(owner.controller, Some(true));
        assert!(
            child.name_any().starts_with("ml-keys-"),
            "{}",
            child.name_any()
        );
        assert_eq!(
            child.spec.deletion_policy,
            baseten_secrets_operator::crd::DeletionPolicy::Delete
        );
    }

    // A new key, a removed key, a renamed key.
    h.apply_secret(
        "ml-credentials",
        &[
            ("HF_TOKEN", b"hf value"),
            ("HF_EXTRA", b"extra value"),
            ("UNRELATED", b"x"),
        ],
        json!({}),
    )
    .await;
    ready_with(
        &h,
        "ml-keys",
        &[("HF_EXTRA", "hf_extra"), ("HF_TOKEN", "hf_token")],
    )
    .await;
    h.wait_baseten("hf_extra", "the new key", |s| s.value == "extra value")
        .await;
    h.poll_gone("openai_api_key").await;
    h.apply_secret(
        "ml-credentials",
        &[
            ("HF_TOKEN", b"hf value"),
            ("HF_RENAMED", b"extra value"),
            ("UNRELATED", b"x"),
        ],
        json!({}),
    )
    .await;
    ready_with(
        &h,
        "ml-keys",
        &[("HF_RENAMED", "hf_renamed"), ("HF_TOKEN", "hf_token")],
    )
    .await;
    h.poll_gone("hf_extra").await;
    assert_eq!(children(&h, "ml-keys").await.len(), 2);

    // One value changes: that one secret is written, nothing else.
    h.barrier().await;
    let before = h.upsert_requests().await;
    h.apply_secret(
        "ml-credentials",
        &[
            ("HF_TOKEN", b"rotated"),
            ("HF_RENAMED", b"extra value"),
            ("UNRELATED", b"x"),
        ],
        json!({}),
    )
    .await;
    h.wait_baseten("hf_token", "the rotated value", |s| s.value == "rotated")
        .await;
    h.barrier().await;
    assert_eq!(h.upsert_requests().await, before + 1);

    // Deleting the set deletes its children, and under Delete their Baseten secrets.
    h.sets_api()
        .delete("ml-keys", &DeleteParams::default())
        .await
        .unwrap();
    h.poll_gone("hf_token").await;
    h.poll_gone("hf_renamed").await;
    h.wait_no_set("ml-keys").await;
    assert!(children(&h, "ml-keys").await.is_empty());
}

#[tokio::test]
async fn duplicate_names_and_bad_rules_write_nothing_for_the_keys_concerned() {
    let h = Harness::start("set-bad").await;
    h.apply_secret(
        "creds",
        &[("a-b", b"one"), ("a_b", b"two"), ("fine", b"three")],
        json!({}),
    )
    .await;
    h.apply_set("dups", json!({"secretName": "creds"}))
        .await
        .unwrap();
    let set = h.wait_set_reason("dups", "DuplicateNames").await;
    let text = message(&set);
    assert!(
        text.contains("creds/a-b") && text.contains("creds/a_b"),
        "{text}"
    );
    h.wait_baseten("fine", "the other key", |s| s.value == "three")
        .await;
    h.barrier().await;
    assert!(h.baseten_secret("a-b").await.is_none() && h.baseten_secret("a_b").await.is_none());
    assert_eq!(
        mapping(&h.sets_api().get("dups").await.unwrap()),
        [("fine".to_string(), "fine".to_string())]
    );

    // A regular expression that does not compile.
    h.apply_set(
        "bad-regex",
        json!({"secretName": "creds", "keys": "(unclosed"}),
    )
    .await
    .unwrap();
    let set = h.wait_set_reason("bad-regex", "InvalidSpec").await;
    assert!(message(&set).contains("spec.keys"), "{}", message(&set));
    // A rewrite that makes a name Baseten refuses, for one key.
    let spec = json!({"secretName": "creds", "keys": "^fine$",
                      "rewrite": [{"regexp": {"source": "fine", "target": "no/slash"}}]});
    h.apply_set("bad-name", spec).await.unwrap();
    let set = h.wait_set_reason("bad-name", "InvalidSpec").await;
    assert!(message(&set).contains("no/slash"), "{}", message(&set));
    assert!(
        children(&h, "bad-regex").await.is_empty() && children(&h, "bad-name").await.is_empty()
    );

    // Both sources, or neither: refused at admission.
    let both = h
        .apply_set(
            "both",
            json!({"secretName": "creds", "secretSelector": {"matchLabels": {"a": "b"}}}),
        )
        .await
        .unwrap_err();
    assert!(
        both.to_string()
            .contains("exactly one of secretName and secretSelector"),
        "{both}"
    );
    let rule = h
        .apply_set("rule", json!({"secretName": "creds", "rewrite": [{"case": "lower", "regexp": {"source": "a", "target": "b"}}]}))
        .await
        .unwrap_err();
    assert!(
        rule.to_string().contains("exactly one of regexp and case"),
        "{rule}"
    );
}

#[tokio::test]
async fn children_are_kept_as_the_set_says_and_a_missing_secret_deletes_nothing() {
    let h = Harness::start("set-keep").await;
    h.apply_secret("creds", &[("token", b"v1"), ("other", b"v2")], json!({}))
        .await;
    h.apply_set(
        "keep",
        json!({"secretName": "creds", "template": {"deletionPolicy": "Delete"}}),
    )
    .await
    .unwrap();
    ready_with(&h, "keep", &[("other", "other"), ("token", "token")]).await;
    let child = "keep-token";

    // Edited by hand: put back. Deleted by hand: recreated.
    h.bts_api()
        .patch(
            child,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"basetenName": "hijacked", "suspend": true}})),
        )
        .await
        .unwrap();
    h.wait_bts(child, "the set's spec back", |o| {
        o.spec.baseten_name.as_deref() == Some("token") && !o.spec.suspend
    })
    .await;
    let uid = h.bts_api().get(child).await.unwrap().uid();
    h.bts_api()
        .delete(child, &DeleteParams::default())
        .await
        .unwrap();
    h.wait_bts(child, "recreated", |o| {
        o.uid() != uid && o.metadata.deletion_timestamp.is_none()
    })
    .await;
    ready_with(&h, "keep", &[("other", "other"), ("token", "token")]).await;

    // The Secret goes: the set says so and keeps its children; back, it heals without a
    // delete in Baseten. (The hand-deleted child, under Delete, deleted its secret.)
    h.barrier().await;
    let deletes_before = baseten_deletes(&h).await;
    kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(h.client.clone(), &h.ns)
        .delete("creds", &DeleteParams::default())
        .await
        .unwrap();
    let set = h.wait_set_reason("keep", "SecretNotFound").await;
    assert!(message(&set).contains("creds"), "{}", message(&set));
    assert_eq!(children(&h, "keep").await.len(), 2);
    h.apply_secret("creds", &[("token", b"v1"), ("other", b"v2")], json!({}))
        .await;
    ready_with(&h, "keep", &[("other", "other"), ("token", "token")]).await;
    h.barrier().await;
    assert_eq!(
        baseten_deletes(&h).await,
        deletes_before,
        "nothing was deleted in Baseten"
    );
    assert_eq!(h.baseten_secret("token").await.unwrap().value, "v1");
}

#[tokio::test]
async fn a_selector_set_follows_the_labels_of_secrets() {
    let h = Harness::start("set-selector").await;
    let push = json!({"baseten.co/push": "true"});
    h.apply_secret("team-a", &[("token", b"a")], push.clone())
        .await;
    h.apply_secret("team-b", &[("token", b"b")], json!({}))
        .await;
    let spec = json!({"secretSelector": {"matchLabels": {"baseten.co/push": "true"}}});
    h.apply_set("labelled", spec).await.unwrap();
    ready_with(&h, "labelled", &[("token", "team-a_token")]).await;
    assert_eq!(h.baseten_secret("team-a_token").await.unwrap().value, "a");

    // team-b gains the labels, team-a loses them (Retain: its Baseten secret stays).
    h.apply_secret("team-b", &[("token", b"b")], push.clone())
        .await;
    ready_with(
        &h,
        "labelled",
        &[("token", "team-a_token"), ("token", "team-b_token")],
    )
    .await;
    h.apply_secret("team-a", &[("token", b"a")], json!({}))
        .await;
    ready_with(&h, "labelled", &[("token", "team-b_token")]).await;
    assert_eq!(children(&h, "labelled").await.len(), 1);
    assert_eq!(h.baseten_secret("team-b_token").await.unwrap().value, "b");
    assert!(
        h.baseten_secret("team-a_token").await.is_some(),
        "Retain keeps it"
    );
}

#[tokio::test]
async fn at_rest_and_after_a_restart_a_set_writes_nothing_and_no_value_is_logged() {
    let mut h = Harness::start_with(
        "set-rest",
        common::operator::OperatorOptions {
            rust_log: "trace".into(),
            ..Default::default()
        },
    )
    .await;
    let values: Vec<(String, String)> = (0..5)
        .map(|i| {
            (
                format!("KEY_{i}"),
                format!("s3cret-value-{i}-{}", rand::random::<u32>()),
            )
        })
        .collect();
    let data: Vec<(&str, &[u8])> = values
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .collect();
    h.apply_secret("many", &data, json!({})).await;
    h.apply_set(
        "rest",
        json!({"secretName": "many", "rewrite": [{"case": "lower"}]}),
    )
    .await
    .unwrap();
    let wanted: Vec<(String, String)> = values
        .iter()
        .map(|(k, _)| (k.clone(), k.to_lowercase()))
        .collect();
    let pairs: Vec<(&str, &str)> = wanted
        .iter()
        .map(|(k, n)| (k.as_str(), n.as_str()))
        .collect();
    ready_with(&h, "rest", &pairs).await;
    h.barrier().await;
    let versions = async |h: &Harness| {
        let set = h.sets_api().get("rest").await.unwrap();
        let mut all = vec![set.resource_version()];
        all.extend(
            children(h, "rest")
                .await
                .iter()
                .map(|c| c.resource_version()),
        );
        all
    };
    let before = versions(&h).await;
    let upserts = h.upsert_requests().await;

    let writes_before = writes_in(&h.ns);
    h.stop_operator();
    h.start_operator();
    h.poll_until_logged("rest", "set reconcile finished").await;
    h.barrier().await;
    assert_eq!(
        versions(&h).await,
        before,
        "nothing was written to the apiserver"
    );
    match (writes_before, writes_in(&h.ns)) {
        (Some(before), Some(after)) => assert_eq!(after, before, "no write after the restart"),
        _ => eprintln!("USE_EXISTING_CLUSTER: no audit log of ours; writes not counted"),
    }
    assert_eq!(
        h.upsert_requests().await,
        upserts,
        "nothing was written to Baseten"
    );

    let logs = h.operator_logs();
    let set = serde_json::to_string(&h.sets_api().get("rest").await.unwrap()).unwrap();
    let kids = serde_json::to_string(&children(&h, "rest").await).unwrap();
    let events = serde_json::to_string(&h.events_for("rest").await).unwrap();
    for (_, value) in &values {
        for (what, text) in [
            ("log", &logs),
            ("set", &set),
            ("children", &kids),
            ("events", &events),
        ] {
            assert!(!text.contains(value.as_str()), "a value in the {what}");
        }
    }
}

#[tokio::test]
async fn a_thousand_keys_under_retain_stay_in_baseten_when_the_set_goes() {
    let mut h = Harness::start("set-thousand").await;
    // Baseten's rate limit alone makes 1000 writes take 10 s; with debug logs and the other
    // tests of this file on the same 2 cores, the whole took up to 35 s.
    h.wait = std::time::Duration::from_secs(120);
    let data: Vec<(String, String)> = (0..1000)
        .map(|i| (format!("key-{i:04}"), format!("value {i}")))
        .collect();
    let pairs: Vec<(&str, &[u8])> = data
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .collect();
    h.apply_secret("big", &pairs, json!({})).await;
    h.apply_set("thousand", json!({"secretName": "big"}))
        .await
        .unwrap();
    h.wait_set("thousand", "1000 keys Ready", |o| {
        o.status
            .as_ref()
            .is_some_and(|s| s.key_count == 1000 && s.ready_count == 1000)
    })
    .await;
    assert_eq!(h.baseten_secrets().await.len(), 1000);
    assert_eq!(
        h.baseten_secret("key-0999").await.unwrap().value,
        "value 999"
    );

    h.sets_api()
        .delete("thousand", &DeleteParams::default())
        .await
        .unwrap();
    h.wait_no_set("thousand").await;
    h.barrier().await;
    assert!(children(&h, "thousand").await.is_empty());
    // Retain (the default): every Baseten secret stays.
    assert_eq!(baseten_deletes(&h).await, 0);
    assert!(h.baseten_secret("key-0000").await.is_some());
}

/// How many times Secret `name` of `ns` was read whole (audited gets with data).
fn full_reads(ns: &str, name: &str) -> Option<usize> {
    let audit = testenv::shared().audit_log()?;
    let log = std::fs::read_to_string(audit).unwrap_or_default();
    let reads = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| {
            let target = &event["objectRef"];
            event["stage"] == "ResponseComplete"
                && event["verb"] == "get"
                && target["resource"] == "secrets"
                && target["namespace"] == ns
                && target["name"] == name
                && event["responseObject"].get("data").is_some()
        })
        .count();
    Some(reads)
}

/// Changes key `index` of the hundred-key Secret, waits until Baseten has it and every
/// event is handled, and says which keys' BasetenSecrets were woken, how many times the
/// Secret was read whole, and how many upserts Baseten got.
async fn change_one(h: &Harness, data: &mut [(String, String)], index: usize) -> Changed {
    let kids = children(h, "hundred").await;
    let reconciles = || -> Vec<usize> {
        (kids.iter())
            .map(|c| h.reconciles_of(&c.name_any()))
            .collect()
    };
    let (before, reads, upserts) = (
        reconciles(),
        full_reads(&h.ns, "hundred"),
        h.upsert_requests().await,
    );
    data[index].1 = format!("changed {index}");
    let refs: Vec<(&str, &[u8])> = (data.iter())
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .collect();
    h.apply_secret("hundred", &refs, json!({})).await;
    let (key, value) = data[index].clone();
    h.wait_baseten(&key, "the change", |s| s.value == value)
        .await;
    h.barrier().await;
    let woken = (kids.iter().zip(reconciles().iter().zip(&before)))
        .filter(|(_, (after, before))| after > before)
        .map(|(child, _)| child.spec.secret_ref.key.clone())
        .collect();
    Changed {
        woken,
        reads: full_reads(&h.ns, "hundred")
            .zip(reads)
            .map(|(after, before)| after - before),
        upserts: h.upsert_requests().await - upserts,
    }
}

/// What changing one key did.
struct Changed {
    woken: Vec<String>,
    reads: Option<usize>,
    upserts: usize,
}

#[tokio::test]
async fn one_changed_key_of_a_hundred_wakes_one_resource_and_reads_the_secret_twice_or_so() {
    let h = Harness::start("set-digests").await;
    let mut data: Vec<(String, String)> = (0..100)
        .map(|i| (format!("key-{i:03}"), format!("value {i}")))
        .collect();
    let refs: Vec<(&str, &[u8])> = (data.iter())
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .collect();
    h.apply_secret("hundred", &refs, json!({})).await;
    h.apply_set("hundred", json!({"secretName": "hundred"}))
        .await
        .unwrap();
    h.wait_set("hundred", "100 keys Ready", |o| {
        o.status.as_ref().is_some_and(|s| s.ready_count == 100)
    })
    .await;
    h.barrier().await;

    // The first change may also wake, once, a resource that was settled while it was the
    // Secret's only reader: it knew the version, not yet the digest of its key.
    let first = change_one(&h, &mut data, 41).await;
    assert_eq!(first.upserts, 1, "one write");
    assert!(
        first.woken.contains(&"key-041".to_string()),
        "{:?}",
        first.woken
    );
    assert!(first.woken.len() <= 2, "woken: {:?}", first.woken);

    let second = change_one(&h, &mut data, 42).await;
    assert_eq!(second.upserts, 1, "one write");
    assert_eq!(
        second.woken,
        ["key-042"],
        "only the resource whose key changed was woken"
    );
    let Some(reads) = second.reads else {
        eprintln!("USE_EXISTING_CLUSTER: no audit log of ours; reads not counted");
        return;
    };
    // The Secret's watch reads the new version once and sees from the digests which keys
    // changed; the one resource whose key did reads it, and so does the set, for its keys.
    assert!(
        reads <= 4,
        "the Secret was read whole {reads} times for one changed key"
    );
    eprintln!("one key of 100 changed: {reads} reads of the Secret");
}
