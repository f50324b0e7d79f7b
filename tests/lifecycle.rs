//! What happens in Baseten when resources go away, change name, or meet a secret they did
//! not write: deletionPolicy, the cleanup finalizer, the skip-remote-delete way out and
//! updatePolicy IfNotExists. The real operator, control plane and emulator.

mod common;

use baseten_secrets_operator::crd::{DeletionPolicy, SecretKeyRef, UpdatePolicy};
use baseten_secrets_operator::{BasetenSecret, BasetenSecretSpec};
use common::operator::{
    API_KEY, Harness, OPERATOR_ORG, OTHER_TEAM, OperatorOptions, TENANT_KEY, TENANT_ORG,
};
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

const FINALIZER: &str = "baseten.co/cleanup";

fn spec(
    secret: &str,
    baseten_name: &str,
    deletion: DeletionPolicy,
    update: UpdatePolicy,
) -> serde_json::Value {
    spec_in(None, secret, baseten_name, deletion, update)
}

fn spec_in(
    team: Option<&str>,
    secret: &str,
    baseten_name: &str,
    deletion: DeletionPolicy,
    update: UpdatePolicy,
) -> serde_json::Value {
    let mut spec = BasetenSecretSpec {
        secret_ref: SecretKeyRef {
            name: secret.into(),
            key: "token".into(),
        },
        baseten_name: Some(baseten_name.into()),
        suspend: false,
        team: None,
        api_key_ref: None,
        deletion_policy: deletion,
        update_policy: update,
        refresh_interval: None,
    };
    spec.team = team.map(Into::into);
    serde_json::to_value(spec).unwrap()
}

/// A Retain resource reading key "token" of Secret "creds" that checks for drift every second.
fn watched(baseten_name: &str, suspend: bool) -> serde_json::Value {
    serde_json::to_value(BasetenSecretSpec {
        secret_ref: SecretKeyRef {
            name: "creds".into(),
            key: "token".into(),
        },
        baseten_name: Some(baseten_name.into()),
        suspend,
        team: None,
        api_key_ref: None,
        deletion_policy: DeletionPolicy::Retain,
        update_policy: UpdatePolicy::Replace,
        refresh_interval: Some("1s".into()),
    })
    .unwrap()
}

fn has_finalizer(object: &BasetenSecret) -> bool {
    object
        .metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == FINALIZER)
}

/// DELETE requests the emulator answered, as (path, status).
async fn deletes(h: &Harness) -> Vec<(String, u16)> {
    h.baseten_requests()
        .await
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| (r.path, r.status))
        .collect()
}

async fn delete_and_wait_gone(h: &Harness, name: &str) {
    h.bts_api()
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
    h.wait_gone(name).await;
}

#[tokio::test]
async fn retain_is_the_default_keeps_the_baseten_secret_and_adds_no_finalizer() {
    let h = Harness::start("life-retain").await;
    let synced = h.synced("kept", "creds", "token", b"kept-value").await;
    assert!(!has_finalizer(&synced), "Retain adds no finalizer");
    delete_and_wait_gone(&h, "kept").await;
    h.barrier().await;
    let stored = h.baseten_secret("kept").await.expect("still in Baseten");
    assert_eq!(stored.value, "kept-value");
    assert!(deletes(&h).await.is_empty());
}

#[tokio::test]
async fn delete_removes_what_it_wrote_and_renames_delete_the_old_name_only() {
    let h = Harness::start("life-delete").await;
    h.apply_secret("creds", &[("token", b"v1")], json!({}))
        .await;
    h.apply_secret("successor-creds", &[("token", b"successor")], json!({}))
        .await;
    // A name nobody here wrote.
    h.baseten_upsert("written-elsewhere", "not ours").await;
    let delete = |name: &str| spec("creds", name, DeletionPolicy::Delete, UpdatePolicy::Replace);

    h.apply_bts("owned", delete("first-name"), json!({}))
        .await
        .unwrap();
    let synced = h.wait_reason("owned", "Synced").await;
    assert!(has_finalizer(&synced), "Delete adds the cleanup finalizer");

    // A rename writes the new name first, then deletes the old one.
    h.apply_bts("owned", delete("second-name"), json!({}))
        .await
        .unwrap();
    let renamed = h.wait_reason("owned", "Synced").await;
    assert_eq!(
        renamed.status.unwrap().baseten_name.as_deref(),
        Some("second-name")
    );
    assert_eq!(h.baseten_secret("second-name").await.unwrap().value, "v1");
    assert!(h.baseten_secret("first-name").await.is_none());

    // A younger resource waits for second-name; when owned moves on, that name is not
    // deleted but handed over.
    let successor = spec(
        "successor-creds",
        "second_name",
        DeletionPolicy::Retain,
        UpdatePolicy::Replace,
    );
    h.apply_bts("successor", successor, json!({}))
        .await
        .unwrap();
    h.wait_reason("successor", "Conflict").await;
    h.apply_bts("owned", delete("third-name"), json!({}))
        .await
        .unwrap();
    h.wait_reason("successor", "Synced").await;
    h.wait_bts("owned", "status on third-name", |o| {
        o.status.as_ref().and_then(|s| s.baseten_name.as_deref()) == Some("third-name")
    })
    .await;
    h.barrier().await;
    let handed_over = h.baseten_secret("second-name").await.unwrap();
    assert_eq!(
        handed_over.value, "successor",
        "never deleted, now the successor's"
    );

    // Deleting the resource deletes what it wrote last, and nothing else.
    delete_and_wait_gone(&h, "owned").await;
    h.barrier().await;
    assert!(h.baseten_secret("third-name").await.is_none());
    assert!(h.baseten_secret("second-name").await.is_some());
    assert!(h.baseten_secret("written-elsewhere").await.is_some());
    assert_eq!(
        deletes(&h).await,
        [
            ("/v1/secrets/first-name".to_string(), 200),
            ("/v1/secrets/third-name".to_string(), 200),
        ]
    );
}

/// The names status.pendingDeletions lists, sorted.
fn pending_names(object: &BasetenSecret) -> Vec<String> {
    let mut names: Vec<String> = (object.status.iter())
        .flat_map(|s| s.pending_deletions.iter().map(|p| p.baseten_name.clone()))
        .collect();
    names.sort();
    names
}

fn status_name(object: &BasetenSecret) -> Option<&str> {
    object.status.as_ref()?.baseten_name.as_deref()
}

/// Every DELETE Baseten gets fails until the faults are cleared.
fn deletes_fail() -> serde_json::Value {
    json!({"path_prefix": "/v1/secrets/", "method": "DELETE", "status": 503, "count": 10_000})
}

#[tokio::test]
async fn a_rename_whose_old_name_delete_fails_records_the_new_name_and_retries_the_delete() {
    let h = Harness::start("life-pending").await;
    h.apply_secret("creds", &[("token", b"v1")], json!({}))
        .await;
    let delete = |name: &str| spec("creds", name, DeletionPolicy::Delete, UpdatePolicy::Replace);
    h.apply_bts("moving", delete("before-rename"), json!({}))
        .await
        .unwrap();
    h.wait_reason("moving", "Synced").await;

    h.fault(deletes_fail()).await;
    h.apply_bts("moving", delete("after-rename"), json!({}))
        .await
        .unwrap();
    let pending = h
        .wait_bts("moving", "the new name written, the old one pending", |o| {
            status_name(o) == Some("after-rename") && pending_names(o) == ["before-rename"]
        })
        .await;
    let ready = pending.ready_condition().unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Synced")
    );
    assert!(ready.message.contains("pending"), "{}", ready.message);
    assert!(h.baseten_secret("before-rename").await.is_some());
    assert_eq!(h.baseten_secret("after-rename").await.unwrap().value, "v1");

    h.clear_faults().await;
    h.wait_bts("moving", "no pending deletions", |o| {
        status_name(o) == Some("after-rename") && pending_names(o).is_empty()
    })
    .await;
    h.barrier().await;
    assert!(h.baseten_secret("before-rename").await.is_none());
    assert_eq!(h.baseten_secret("after-rename").await.unwrap().value, "v1");
}

#[tokio::test]
async fn renamed_back_to_a_pending_name_keeps_it_and_deletes_only_the_other() {
    let h = Harness::start("life-pending-back").await;
    h.apply_secret("creds", &[("token", b"v1")], json!({}))
        .await;
    let delete = |name: &str| spec("creds", name, DeletionPolicy::Delete, UpdatePolicy::Replace);
    h.apply_bts("moving", delete("home"), json!({}))
        .await
        .unwrap();
    h.wait_reason("moving", "Synced").await;

    h.fault(deletes_fail()).await;
    h.apply_bts("moving", delete("away"), json!({}))
        .await
        .unwrap();
    h.wait_bts("moving", "away written, home pending", |o| {
        status_name(o) == Some("away") && pending_names(o) == ["home"]
    })
    .await;
    // Back home: home is wanted again, so it leaves the list; away is pending now.
    h.apply_bts("moving", delete("home"), json!({}))
        .await
        .unwrap();
    h.wait_bts("moving", "home written, away pending", |o| {
        status_name(o) == Some("home") && pending_names(o) == ["away"]
    })
    .await;

    h.clear_faults().await;
    h.wait_bts("moving", "no pending deletions", |o| {
        pending_names(o).is_empty()
    })
    .await;
    h.barrier().await;
    assert!(h.baseten_secret("away").await.is_none());
    assert_eq!(h.baseten_secret("home").await.unwrap().value, "v1");
}

#[tokio::test]
async fn renamed_twice_while_deletes_fail_then_deleted_leaves_none_of_its_names() {
    let h = Harness::start("life-pending-twice").await;
    h.apply_secret("creds", &[("token", b"v1")], json!({}))
        .await;
    let delete = |name: &str| spec("creds", name, DeletionPolicy::Delete, UpdatePolicy::Replace);
    h.apply_bts("moving", delete("name-one"), json!({}))
        .await
        .unwrap();
    h.wait_reason("moving", "Synced").await;

    h.fault(deletes_fail()).await;
    h.apply_bts("moving", delete("name-two"), json!({}))
        .await
        .unwrap();
    h.wait_bts("moving", "name-two written, name-one pending", |o| {
        status_name(o) == Some("name-two") && pending_names(o) == ["name-one"]
    })
    .await;
    h.apply_bts("moving", delete("name-three"), json!({}))
        .await
        .unwrap();
    h.wait_bts("moving", "name-three written, both others pending", |o| {
        status_name(o) == Some("name-three") && pending_names(o) == ["name-one", "name-two"]
    })
    .await;
    for name in ["name-one", "name-two", "name-three"] {
        assert!(h.baseten_secret(name).await.is_some(), "{name}");
    }

    h.bts_api()
        .delete("moving", &DeleteParams::default())
        .await
        .unwrap();
    h.wait_reason("moving", "DeletionBlocked").await;
    h.clear_faults().await;
    // The failed deletes back off (doubling, up to minutes); a change retries at once.
    h.bts_api()
        .patch(
            "moving",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"retry": "now"}}})),
        )
        .await
        .unwrap();
    h.wait_gone("moving").await;
    h.barrier().await;
    for name in ["name-one", "name-two", "name-three"] {
        assert!(
            h.baseten_secret(name).await.is_none(),
            "{name} is left in Baseten"
        );
    }
}

#[tokio::test]
async fn switching_to_retain_drops_the_finalizer_and_keeps_the_secret() {
    let h = Harness::start("life-switch").await;
    h.apply_secret("creds", &[("token", b"v1")], json!({}))
        .await;
    let delete = spec(
        "creds",
        "switched",
        DeletionPolicy::Delete,
        UpdatePolicy::Replace,
    );
    h.apply_bts("switch", delete, json!({})).await.unwrap();
    let synced = h.wait_reason("switch", "Synced").await;
    assert!(has_finalizer(&synced));

    let retain = spec(
        "creds",
        "switched",
        DeletionPolicy::Retain,
        UpdatePolicy::Replace,
    );
    h.apply_bts("switch", retain, json!({})).await.unwrap();
    h.wait_bts("switch", "the finalizer removed", |o| !has_finalizer(o))
        .await;
    delete_and_wait_gone(&h, "switch").await;
    h.barrier().await;
    assert!(h.baseten_secret("switched").await.is_some());
    assert!(deletes(&h).await.is_empty());
}

#[tokio::test]
async fn a_blocked_deletion_says_why_and_the_annotation_releases_it() {
    let h = Harness::start("life-blocked").await;
    h.apply_secret("creds", &[("token", b"v1")], json!({}))
        .await;
    let delete = spec(
        "creds",
        "stuck",
        DeletionPolicy::Delete,
        UpdatePolicy::Replace,
    );
    h.apply_bts("stuck", delete, json!({})).await.unwrap();
    h.wait_reason("stuck", "Synced").await;

    h.fault(
        json!({"path_prefix": "/v1/secrets", "method": "DELETE", "status": 503, "count": 1000}),
    )
    .await;
    h.bts_api()
        .delete("stuck", &DeleteParams::default())
        .await
        .unwrap();
    let blocked = h
        .wait_bts("stuck", "DeletionBlocked", |o| {
            o.ready_condition()
                .is_some_and(|c| c.reason == "DeletionBlocked")
        })
        .await;
    let message = blocked.ready_condition().unwrap().message.clone();
    assert!(
        message.contains("HTTP 503") && message.contains("baseten.co/skip-remote-delete=true"),
        "the message names the cause and the way out: {message}"
    );
    assert!(
        h.wait_events("stuck", 2)
            .await
            .contains(&("DeletionBlocked".to_string(), "Warning".to_string()))
    );

    h.bts_api()
        .patch(
            "stuck",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"baseten.co/skip-remote-delete": "true"}}}),
            ),
        )
        .await
        .unwrap();
    h.wait_gone("stuck").await;
    assert!(
        h.baseten_secret("stuck").await.is_some(),
        "released without the remote delete"
    );
    assert!(deletes(&h).await.iter().all(|(_, status)| *status == 503));
}

#[tokio::test]
async fn if_not_exists_never_overwrites_a_secret_it_did_not_create() {
    let h = Harness::start("life-ifnotexists").await;
    let existing = h.baseten_upsert("pre_existing", "set by hand").await;
    h.apply_secret("creds", &[("token", b"from kubernetes")], json!({}))
        .await;
    // Another spelling of the same Baseten name.
    let polite = spec(
        "creds",
        "pre-existing",
        DeletionPolicy::Delete,
        UpdatePolicy::IfNotExists,
    );
    h.apply_bts("polite", polite, json!({})).await.unwrap();
    let found = h.wait_reason("polite", "AlreadyExists").await;
    let ready = found.ready_condition().unwrap();
    assert_eq!(ready.status, "True", "the secret is there, just not ours");
    let status = found.status.clone().unwrap();
    assert_eq!(status.secret_id.as_deref(), Some(existing.id.as_str()));
    assert_eq!(
        status.created_at.as_deref(),
        Some(existing.created_at.as_str())
    );
    assert!(status.synced_hash.is_none() && status.last_sync_time.is_none());

    // A new value still writes nothing; deleting the resource deletes nothing.
    h.apply_secret("creds", &[("token", b"rotated")], json!({}))
        .await;
    h.barrier().await;
    delete_and_wait_gone(&h, "polite").await;
    h.barrier().await;
    let stored = h.baseten_secret("pre_existing").await.unwrap();
    assert_eq!((stored.value.as_str(), stored.writes), ("set by hand", 1));
    assert!(deletes(&h).await.is_empty());

    // A name that does not exist is created, and from then on it is ours to update.
    let fresh = spec(
        "creds",
        "fresh",
        DeletionPolicy::Retain,
        UpdatePolicy::IfNotExists,
    );
    h.apply_bts("fresh", fresh, json!({})).await.unwrap();
    h.wait_reason("fresh", "Synced").await;
    h.apply_secret("creds", &[("token", b"rotated again")], json!({}))
        .await;
    let stored = h
        .wait_baseten("fresh", "the rotated value", |s| s.value == "rotated again")
        .await;
    assert_eq!(stored.writes, 2);
}

#[tokio::test]
async fn two_resources_on_one_name_do_not_fight_and_the_next_takes_over() {
    let h = Harness::start("life-conflict").await;
    h.apply_secret("creds-a", &[("token", b"value-a")], json!({}))
        .await;
    h.apply_secret("creds-b", &[("token", b"value-b")], json!({}))
        .await;
    h.apply_secret("creds-c", &[("token", b"value-c")], json!({}))
        .await;
    let retain = |secret: &str, name: &str| {
        spec(secret, name, DeletionPolicy::Retain, UpdatePolicy::Replace)
    };
    h.apply_bts("first", retain("creds-a", "shared_name"), json!({}))
        .await
        .unwrap();
    h.wait_reason("first", "Synced").await;
    // Created later, and another spelling of the same Baseten secret.
    h.apply_bts("second", retain("creds-b", "shared-name"), json!({}))
        .await
        .unwrap();
    let conflict = h.wait_reason("second", "Conflict").await;
    let ready = conflict.ready_condition().unwrap();
    assert_eq!(ready.status, "False");
    assert!(
        ready.message.contains(&format!("{}/first", h.ns)),
        "names the winner: {}",
        ready.message
    );
    h.barrier().await;
    let stored = h.baseten_secret("shared_name").await.unwrap();
    assert_eq!((stored.value.as_str(), stored.writes), ("value-a", 1));
    assert!(
        h.wait_events("second", 1)
            .await
            .contains(&("Conflict".to_string(), "Warning".to_string()))
    );

    // The winner goes away: the next in line writes by itself.
    h.bts_api()
        .delete("first", &DeleteParams::default())
        .await
        .unwrap();
    h.wait_reason("second", "Synced").await;
    assert_eq!(
        h.baseten_secret("shared_name").await.unwrap().value,
        "value-b"
    );

    // A third waits behind the second, and takes over when the second moves to another name.
    h.apply_bts("third", retain("creds-c", "shared.name"), json!({}))
        .await
        .unwrap();
    h.wait_reason("third", "Conflict").await;
    h.apply_bts("second", retain("creds-b", "elsewhere"), json!({}))
        .await
        .unwrap();
    h.wait_reason("third", "Synced").await;
    h.wait_reason("second", "Synced").await;
    assert_eq!(
        h.baseten_secret("shared_name").await.unwrap().value,
        "value-c"
    );
    assert_eq!(
        h.baseten_secret("elsewhere").await.unwrap().value,
        "value-b"
    );
}

#[tokio::test]
async fn teams_by_name_or_id_moves_between_teams_and_an_unknown_team() {
    let h = Harness::start("life-team").await;
    h.apply_secret("creds", &[("token", b"team value")], json!({}))
        .await;
    let in_team = |team: Option<&str>, name: &str| {
        spec_in(
            team,
            "creds",
            name,
            DeletionPolicy::Delete,
            UpdatePolicy::Replace,
        )
    };

    h.apply_bts(
        "by-name",
        in_team(Some(OTHER_TEAM), "team-token"),
        json!({}),
    )
    .await
    .unwrap();
    let synced = h.wait_reason("by-name", "Synced").await;
    assert_eq!(
        synced.status.unwrap().team_name.as_deref(),
        Some(OTHER_TEAM)
    );
    let stored = h.baseten_secret_in(OTHER_TEAM, "team-token").await.unwrap();
    assert_eq!(stored.value, "team value");
    assert!(h.baseten_secret("team-token").await.is_none());

    let id = h.team_id(OTHER_TEAM).await;
    h.apply_bts("by-id", in_team(Some(&id), "id-token"), json!({}))
        .await
        .unwrap();
    h.wait_reason("by-id", "Synced").await;
    assert!(h.baseten_secret_in(OTHER_TEAM, "id-token").await.is_some());

    h.apply_bts(
        "lost",
        in_team(Some("No Such Team"), "lost-token"),
        json!({}),
    )
    .await
    .unwrap();
    let lost = h.wait_reason("lost", "TeamNotFound").await;
    assert!(
        lost.ready_condition()
            .unwrap()
            .message
            .contains("No Such Team")
    );
    assert!(
        h.baseten_requests()
            .await
            .iter()
            .all(|r| r.name.as_deref() != Some("lost-token")),
        "nothing is written for an unknown team"
    );

    // To the default team: written there, then deleted from the team it was in.
    h.apply_bts("by-name", in_team(None, "team-token"), json!({}))
        .await
        .unwrap();
    h.wait_bts("by-name", "the default team in status", |o| {
        o.status.as_ref().and_then(|s| s.team_name.as_deref()) == Some("Default Team")
    })
    .await;
    assert_eq!(
        h.baseten_secret("team-token").await.unwrap().value,
        "team value"
    );
    assert!(
        h.baseten_secret_in(OTHER_TEAM, "team-token")
            .await
            .is_none()
    );

    // Deleting the one named by id deletes it in that team.
    delete_and_wait_gone(&h, "by-id").await;
    assert!(h.baseten_secret_in(OTHER_TEAM, "id-token").await.is_none());
}

#[tokio::test]
async fn drift_checks_push_again_what_vanished_or_was_recreated_with_one_list_per_team() {
    let h = Harness::start("life-drift").await;
    h.apply_secret("creds", &[("token", b"ours")], json!({}))
        .await;
    h.apply_bts("drift-a", watched("watched-a", false), json!({}))
        .await
        .unwrap();
    h.apply_bts("drift-b", watched("watched-b", false), json!({}))
        .await
        .unwrap();
    h.wait_reason("drift-a", "Synced").await;
    h.wait_reason("drift-b", "Synced").await;

    // Deleted by hand: pushed again.
    h.baseten_delete("watched-a").await;
    let back = h
        .wait_baseten("watched-a", "the value pushed again", |s| s.value == "ours")
        .await;
    assert!(
        h.wait_events("drift-a", 2)
            .await
            .contains(&("Recreated".to_string(), "Normal".to_string()))
    );
    h.wait_bts("drift-a", "the new id in status", |o| {
        o.status.as_ref().and_then(|s| s.secret_id.as_deref()) == Some(back.id.as_str())
    })
    .await;

    // Recreated by hand with another value while the resource is suspended (so no check
    // sees the moment between delete and create): our value goes back, with a warning.
    h.apply_bts("drift-b", watched("watched-b", true), json!({}))
        .await
        .unwrap();
    h.wait_reason("drift-b", "Suspended").await;
    h.baseten_delete("watched-b").await;
    let by_hand = h.baseten_upsert("watched-b", "set by hand").await;
    h.apply_bts("drift-b", watched("watched-b", false), json!({}))
        .await
        .unwrap();
    let repaired = h
        .wait_baseten("watched-b", "our value again", |s| s.value == "ours")
        .await;
    assert_eq!(repaired.id, by_hand.id, "an update, not another recreation");
    assert!(
        // Synced, Suspended, Synced again, then the repair.
        h.wait_events("drift-b", 4)
            .await
            .contains(&("Replaced".to_string(), "Warning".to_string()))
    );
    h.wait_bts("drift-b", "the new id in status", |o| {
        o.status.as_ref().and_then(|s| s.secret_id.as_deref()) == Some(by_hand.id.as_str())
    })
    .await;

    // Both repairs are counted.
    let repairs = h.operator_metric("drift_repairs_total").await.unwrap();
    assert!(repairs >= 2.0, "{repairs} drift repairs counted");

    // Two resources, one team: one list call per interval (1 s, jittered by 10 %).
    let lists = || async {
        h.baseten_requests()
            .await
            .iter()
            .filter(|r| r.method == "GET" && r.path.ends_with("/secrets"))
            .count()
    };
    let before = lists().await;
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let during = lists().await - before;
    assert!(
        (3..=7).contains(&during),
        "{during} list calls in 5 s for two resources checked every second"
    );
}

#[tokio::test]
async fn each_namespace_can_push_with_its_own_api_key() {
    let h = Harness::start("life-apikey").await;
    h.apply_secret("creds", &[("token", b"tenant value")], json!({}))
        .await;
    let mut spec = BasetenSecretSpec {
        secret_ref: SecretKeyRef {
            name: "creds".into(),
            key: "token".into(),
        },
        baseten_name: Some("tenant-token".into()),
        suspend: false,
        team: None,
        api_key_ref: None,
        deletion_policy: DeletionPolicy::Retain,
        update_policy: UpdatePolicy::Replace,
        refresh_interval: None,
    };
    spec.api_key_ref = Some(SecretKeyRef {
        name: "baseten-key".into(),
        key: "apiKey".into(),
    });
    h.apply_bts("tenant", serde_json::to_value(&spec).unwrap(), json!({}))
        .await
        .unwrap();
    let missing = h.wait_reason("tenant", "ApiKeyNotFound").await;
    let message = &missing.ready_condition().unwrap().message;
    assert!(message.contains("baseten-key"), "{message}");

    // The key Secret appears: picked up by itself, written to the tenant's organisation.
    h.apply_secret(
        "baseten-key",
        &[("apiKey", TENANT_KEY.as_bytes())],
        json!({}),
    )
    .await;
    h.wait_reason("tenant", "Synced").await;
    let stored = h
        .baseten_secret_of(TENANT_ORG, "tenant-token")
        .await
        .unwrap();
    assert_eq!((stored.value.as_str(), stored.writes), ("tenant value", 1));
    assert!(
        h.baseten_secret_of(OPERATOR_ORG, "tenant-token")
            .await
            .is_none()
    );

    // Another key in the same Secret: written once with it, without a restart.
    h.apply_secret("baseten-key", &[("apiKey", API_KEY.as_bytes())], json!({}))
        .await;
    h.wait_baseten("tenant-token", "the write with the new key", |s| {
        s.value == "tenant value"
    })
    .await;
    h.barrier().await;
    assert_eq!(
        h.baseten_secret_of(TENANT_ORG, "tenant-token")
            .await
            .unwrap()
            .writes,
        1
    );

    // A key Baseten refuses.
    h.apply_secret("baseten-key", &[("apiKey", b"not-a-key")], json!({}))
        .await;
    h.wait_reason("tenant", "Unauthorized").await;
    let logs = h.operator_logs();
    assert!(!logs.contains(TENANT_KEY) && !logs.contains("not-a-key"));
}

#[tokio::test]
async fn a_new_operator_key_file_is_used_without_a_restart() {
    let mut h = Harness::start_with(
        "life-keyfile",
        OperatorOptions {
            api_key: "refused-key".into(),
            key_file: true,
            ..Default::default()
        },
    )
    .await;
    h.apply_secret("creds", &[("token", b"v")], json!({})).await;
    h.apply_bts(
        "keyed",
        spec(
            "creds",
            "keyed",
            DeletionPolicy::Retain,
            UpdatePolicy::Replace,
        ),
        json!({}),
    )
    .await
    .unwrap();
    h.wait_reason("keyed", "Unauthorized").await;
    h.write_key_file(API_KEY);
    h.wait_reason("keyed", "Synced").await;
    assert_eq!(h.baseten_secret("keyed").await.unwrap().value, "v");
    assert!(h.operator_running(), "no restart");
    assert!(!h.operator_logs().contains("refused-key"));
}

#[tokio::test]
async fn with_a_label_selector_only_opted_in_secrets_are_read() {
    let h = Harness::start_with(
        "life-selector",
        OperatorOptions {
            secret_label_selector: Some("baseten.co/push=true".into()),
            ..Default::default()
        },
    )
    .await;
    h.apply_secret("private", &[("token", b"never pushed")], json!({}))
        .await;
    h.apply_bts(
        "curious",
        spec(
            "private",
            "curious",
            DeletionPolicy::Retain,
            UpdatePolicy::Replace,
        ),
        json!({}),
    )
    .await
    .unwrap();
    let refused = h.wait_reason("curious", "SecretNotAllowed").await;
    let message = &refused.ready_condition().unwrap().message;
    assert!(message.contains("baseten.co/push=true"), "{message}");
    assert_eq!(h.upsert_requests().await, 0);
    // The same for a Secret named as the API key to write with.
    let opted_in = json!({"baseten.co/push": "true"});
    h.apply_secret("pushed", &[("token", b"v")], opted_in).await;
    h.apply_secret("their-key", &[("apiKey", TENANT_KEY.as_bytes())], json!({}))
        .await;
    let mut keyed = spec(
        "pushed",
        "keyed",
        DeletionPolicy::Retain,
        UpdatePolicy::Replace,
    );
    keyed["apiKeyRef"] = json!({"name": "their-key", "key": "apiKey"});
    h.apply_bts("keyed", keyed, json!({})).await.unwrap();
    let refused = h.wait_reason("keyed", "SecretNotAllowed").await;
    let message = &refused.ready_condition().unwrap().message;
    assert!(message.contains("their-key"), "{message}");
    assert_eq!(h.upsert_requests().await, 0);

    let audit = testenv::shared().audit_log();
    if let Some(audit) = audit {
        // Their labels were read, and their values never reached the operator.
        for name in ["private", "their-key"] {
            let reads = reads_of(audit, &h.ns, name, |_| true).await;
            // Named by verb and kind only: the failure message must not repeat the values.
            let shown: Vec<String> = reads
                .iter()
                .map(|read| format!("{} {}", read["verb"], read["responseObject"]["kind"]))
                .collect();
            assert!(
                reads.iter().all(|read| !has_values(read)),
                "Secret {name}, failing the selector, was read with its values: {shown:?}"
            );
        }
    } else {
        eprintln!("USE_EXISTING_CLUSTER: no audit log of ours; not checking which reads happened");
    }

    // Opting the Secret in is a change the operator sees by itself.
    h.apply_secret(
        "private",
        &[("token", b"now allowed")],
        json!({"baseten.co/push": "true"}),
    )
    .await;
    h.wait_reason("curious", "Synced").await;
    assert_eq!(
        h.baseten_secret("curious").await.unwrap().value,
        "now allowed"
    );
    if let Some(audit) = audit {
        let full = reads_of(audit, &h.ns, "private", has_values).await;
        assert!(!full.is_empty(), "a matching Secret is read in full");
    }
}

#[tokio::test]
async fn every_selector_the_operator_takes_selects_in_the_apiserver_what_it_selects() {
    use baseten_secrets_operator::selector::SecretSelector;
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, ListParams, PostParams};
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;

    let client = common::client().await;
    let ns = common::namespace(&client, "life-selectors").await;
    let secrets: Api<Secret> = Api::namespaced(client, &ns);
    let labelled: [&[(&str, &str)]; 6] = [
        &[],
        &[("a", "x")],
        &[("a", "y"), ("b", "")],
        &[("b", "x"), ("example.com/c", "y")],
        &[("a", ""), ("example.com/c", "x")],
        &[("a", "x"), ("b", "y"), ("example.com/c", "")],
    ];
    let mut all = Vec::new();
    for (i, labels) in labelled.iter().enumerate() {
        let labels: std::collections::BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut secret = Secret::default();
        secret.metadata.name = Some(format!("s{i}"));
        secret.metadata.labels = Some(labels.clone());
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        all.push((format!("s{i}"), labels));
    }

    // Terms over the labels above, spaced as people write them, and near-miss junk.
    let key = prop_oneof![Just("a"), Just("b"), Just("example.com/c"), Just("d")];
    let value = prop_oneof![Just("x"), Just("y"), Just("")];
    let term = prop_oneof![
        (
            key.clone(),
            prop_oneof![Just(" = "), Just("=="), Just("!=")],
            value.clone()
        )
            .prop_map(|(k, op, v)| format!("{k}{op}{v}")),
        (
            key.clone(),
            prop_oneof![Just(" in "), Just(" notin ")],
            prop::collection::vec(value.clone(), 1..3)
        )
            .prop_map(|(k, op, v)| format!("{k}{op}({})", v.join(", "))),
        key.clone().prop_map(str::to_string),
        key.prop_map(|k| format!("!{k}")),
    ];
    let selector = prop_oneof![
        prop::collection::vec(term, 1..4).prop_map(|terms| terms.join(",")),
        "[abcxy=!(), /.]{1,14}",
    ];
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut taken = 0;
    for _ in 0..150 {
        let text = selector.new_tree(&mut runner).unwrap().current();
        let Ok(parsed) = SecretSelector::parse(&text) else {
            continue;
        };
        taken += 1;
        let listed = secrets
            .list_metadata(&ListParams::default().labels(parsed.text()))
            .await
            .unwrap_or_else(|e| panic!("{text:?} as {:?} was refused: {e}", parsed.text()));
        let mut by_apiserver: Vec<String> = listed
            .items
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect();
        by_apiserver.sort();
        let by_operator: Vec<String> = all
            .iter()
            .filter(|(_, labels)| parsed.matches(Some(labels)))
            .map(|(name, _)| name.clone())
            .collect();
        assert_eq!(by_apiserver, by_operator, "{text:?} as {:?}", parsed.text());
    }
    assert!(taken >= 50, "only {taken} selectors parsed");
}

/// Whether an audit event's response holds a Secret's values (a list's items included).
fn has_values(event: &serde_json::Value) -> bool {
    let response = &event["responseObject"];
    let items = response["items"].as_array().into_iter().flatten();
    std::iter::once(response)
        .chain(items)
        .any(|object| object.get("data").is_some() || object.get("stringData").is_some())
}

/// The audited reads (get or list) of Secret `name` of `ns` that `wanted` picks, once at
/// least one of them is in the log: events are written after their answer.
async fn reads_of(
    audit: &std::path::Path,
    ns: &str,
    name: &str,
    wanted: impl Fn(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    let names = |event: &serde_json::Value| {
        let target = &event["objectRef"];
        let response = &event["responseObject"];
        let listed = response["items"].as_array().into_iter().flatten();
        target["namespace"] == ns
            && (target["name"] == name
                || listed.clone().any(|item| item["metadata"]["name"] == name))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(audit).unwrap_or_default();
        let reads: Vec<serde_json::Value> = log
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .filter(|event: &serde_json::Value| {
                event["stage"] == "ResponseComplete" && names(event) && wanted(event)
            })
            .collect();
        if !reads.is_empty() {
            return reads;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no audited read of Secret {ns}/{name}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_deletion_that_lost_its_api_key_says_so_instead_of_hanging() {
    let h = Harness::start("life-lostkey").await;
    h.apply_secret("creds", &[("token", b"v")], json!({})).await;
    h.apply_secret(
        "baseten-key",
        &[("apiKey", TENANT_KEY.as_bytes())],
        json!({}),
    )
    .await;
    let mut spec = BasetenSecretSpec {
        secret_ref: SecretKeyRef {
            name: "creds".into(),
            key: "token".into(),
        },
        baseten_name: Some("keyed-delete".into()),
        suspend: false,
        team: None,
        api_key_ref: None,
        deletion_policy: DeletionPolicy::Delete,
        update_policy: UpdatePolicy::Replace,
        refresh_interval: None,
    };
    spec.api_key_ref = Some(SecretKeyRef {
        name: "baseten-key".into(),
        key: "apiKey".into(),
    });
    h.apply_bts("keyed", serde_json::to_value(&spec).unwrap(), json!({}))
        .await
        .unwrap();
    h.wait_reason("keyed", "Synced").await;

    // As in a namespace deletion, the key Secret goes first.
    kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(h.client.clone(), &h.ns)
        .delete("baseten-key", &DeleteParams::default())
        .await
        .unwrap();
    // Seen by the operator before the resource goes (the two watches are not ordered).
    h.wait_reason("keyed", "ApiKeyNotFound").await;
    h.bts_api()
        .delete("keyed", &DeleteParams::default())
        .await
        .unwrap();
    let blocked = h
        .wait_bts("keyed", "DeletionBlocked", |o| {
            o.ready_condition()
                .is_some_and(|c| c.reason == "DeletionBlocked")
        })
        .await;
    let message = &blocked.ready_condition().unwrap().message;
    assert!(
        message.contains("baseten-key") && message.contains("baseten.co/skip-remote-delete"),
        "{message}"
    );
    h.bts_api()
        .patch(
            "keyed",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"baseten.co/skip-remote-delete": "true"}}}),
            ),
        )
        .await
        .unwrap();
    h.wait_gone("keyed").await;
    assert!(
        h.baseten_secret_of(TENANT_ORG, "keyed-delete")
            .await
            .is_some()
    );
}

#[tokio::test]
async fn a_secret_already_gone_from_baseten_counts_as_deleted() {
    let h = Harness::start("life-gone").await;
    h.apply_secret("creds", &[("token", b"v")], json!({})).await;
    let delete = spec(
        "creds",
        "gone-by-hand",
        DeletionPolicy::Delete,
        UpdatePolicy::Replace,
    );
    h.apply_bts("gone", delete, json!({})).await.unwrap();
    h.wait_reason("gone", "Synced").await;
    h.baseten_delete("gone-by-hand").await;
    delete_and_wait_gone(&h, "gone").await;
    assert_eq!(
        deletes(&h).await,
        [
            ("/v1/secrets/gone-by-hand".to_string(), 200),
            ("/v1/secrets/gone-by-hand".to_string(), 404),
        ],
        "the test's own delete, then the operator's, answered 404 and taken as done"
    );
}

/// A resource that takes a name over while the previous owner's delete of it is still on
/// its way to Baseten waits for that delete, so the delete can never remove its value.
#[tokio::test]
async fn a_successor_never_loses_its_value_to_a_delete_in_flight() {
    let h = Harness::start("life-successor").await;
    h.apply_secret("old-creds", &[("token", b"old value")], json!({}))
        .await;
    let spec = json!({
        "secretRef": {"name": "old-creds", "key": "token"},
        "basetenName": "shared-name", "deletionPolicy": "Delete",
    });
    h.apply_bts("old", spec, json!({})).await.unwrap();
    h.wait_reason("old", "Synced").await;

    // Baseten answers the next delete after 3 s: the successor arrives meanwhile.
    h.fault(json!({"path_prefix": "/v1/secrets", "method": "DELETE", "latency_ms": 3000}))
        .await;
    h.bts_api()
        .delete("old", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    h.apply_secret("new-creds", &[("token", b"new value")], json!({}))
        .await;
    let spec =
        json!({"secretRef": {"name": "new-creds", "key": "token"}, "basetenName": "shared-name"});
    h.apply_bts("new", spec, json!({})).await.unwrap();
    let waiting = h.wait_reason("new", "Conflict").await;
    let message = &waiting.ready_condition().unwrap().message;
    assert!(
        message.contains("being deleted by") && message.contains("/old"),
        "{message}"
    );

    h.wait_gone("old").await;
    h.wait_reason("new", "Synced").await;
    h.wait_baseten("shared-name", "the successor's value", |s| {
        s.value == "new value"
    })
    .await;
    h.barrier().await;
    assert_eq!(
        h.baseten_secret("shared-name").await.map(|s| s.value),
        Some("new value".to_string()),
        "the delete in flight removed the successor's value"
    );
}

fn with_key_ref(mut spec: serde_json::Value, secret: &str) -> serde_json::Value {
    spec["apiKeyRef"] = json!({"name": secret, "key": "apiKey"});
    spec
}

#[tokio::test]
async fn one_baseten_secret_has_one_writer_however_its_team_and_key_are_spelled() {
    let h = Harness::start("life-identity").await;
    for (secret, value) in [("a", "value-a"), ("b", "value-b"), ("c", "value-c")] {
        h.apply_secret(secret, &[("token", value.as_bytes())], json!({}))
            .await;
    }
    h.apply_secret("same-key", &[("apiKey", API_KEY.as_bytes())], json!({}))
        .await;
    h.apply_secret(
        "tenant-key",
        &[("apiKey", TENANT_KEY.as_bytes())],
        json!({}),
    )
    .await;
    let retain = |team: Option<&str>, secret: &str, name: &str| {
        spec_in(
            team,
            secret,
            name,
            DeletionPolicy::Retain,
            UpdatePolicy::Replace,
        )
    };
    let conflicts_with = async |name: &str, winner: &str| {
        let lost = h.wait_reason(name, "Conflict").await;
        let message = &lost.ready_condition().unwrap().message;
        assert!(message.contains(&format!("{}/{winner}", h.ns)), "{message}");
    };

    // A team by name, then the same team by id. (Created in one second, the name decides
    // who is first: the names sort in the order of creation.)
    h.apply_bts(
        "one-by-name",
        retain(Some(OTHER_TEAM), "a", "in-team"),
        json!({}),
    )
    .await
    .unwrap();
    h.wait_reason("one-by-name", "Synced").await;
    let id = h.team_id(OTHER_TEAM).await;
    h.apply_bts("two-by-id", retain(Some(&id), "b", "in_team"), json!({}))
        .await
        .unwrap();
    conflicts_with("two-by-id", "one-by-name").await;

    // No team (the key's default), then the default team by name, then the operator's own
    // key read from a Secret: all one secret.
    h.apply_bts("p1-plain", retain(None, "a", "plain"), json!({}))
        .await
        .unwrap();
    h.wait_reason("p1-plain", "Synced").await;
    h.apply_bts(
        "p2-default-by-name",
        retain(Some("Default Team"), "b", "plain"),
        json!({}),
    )
    .await
    .unwrap();
    conflicts_with("p2-default-by-name", "p1-plain").await;
    let same_key = with_key_ref(retain(None, "c", "plain"), "same-key");
    h.apply_bts("p3-same-key", same_key, json!({}))
        .await
        .unwrap();
    conflicts_with("p3-same-key", "p1-plain").await;
    // Another organisation's key: another secret, no conflict.
    let tenant = with_key_ref(retain(None, "c", "plain"), "tenant-key");
    h.apply_bts("p4-tenant", tenant, json!({})).await.unwrap();
    h.wait_reason("p4-tenant", "Synced").await;

    h.barrier().await;
    let in_team = h.baseten_secret_in(OTHER_TEAM, "in-team").await.unwrap();
    assert_eq!((in_team.value.as_str(), in_team.writes), ("value-a", 1));
    let plain = h.baseten_secret("plain").await.unwrap();
    assert_eq!((plain.value.as_str(), plain.writes), ("value-a", 1));
    let theirs = h.baseten_secret_of(TENANT_ORG, "plain").await.unwrap();
    assert_eq!(theirs.value, "value-c");

    // The winner goes: the other spelling takes over by itself.
    h.bts_api()
        .delete("one-by-name", &DeleteParams::default())
        .await
        .unwrap();
    h.wait_reason("two-by-id", "Synced").await;
    h.wait_baseten_in(OTHER_TEAM, "in-team", "the successor's value", |s| {
        s.value == "value-b"
    })
    .await;
}

#[tokio::test]
async fn a_team_move_under_delete_leaves_the_old_name_to_the_one_that_took_it_over() {
    let h = Harness::start("life-team-move").await;
    h.apply_secret("x", &[("token", b"x value")], json!({}))
        .await;
    h.apply_secret("y", &[("token", b"y value")], json!({}))
        .await;
    let delete = |team: Option<&str>, secret: &str| {
        spec_in(
            team,
            secret,
            "moving",
            DeletionPolicy::Delete,
            UpdatePolicy::Replace,
        )
    };
    h.apply_bts("mover", delete(Some(OTHER_TEAM), "x"), json!({}))
        .await
        .unwrap();
    h.wait_reason("mover", "Synced").await;
    h.apply_bts("stayer", delete(Some(OTHER_TEAM), "y"), json!({}))
        .await
        .unwrap();
    h.wait_reason("stayer", "Conflict").await;

    // The mover leaves the team: the stayer takes the name over there, and the mover's
    // delete of what it left behind must see that.
    h.apply_bts("mover", delete(None, "x"), json!({}))
        .await
        .unwrap();
    h.wait_bts("mover", "the move to the default team", |o| {
        o.status.as_ref().and_then(|s| s.team_name.as_deref()) == Some("Default Team")
    })
    .await;
    h.wait_reason("stayer", "Synced").await;
    h.barrier().await;
    let id = h.team_id(OTHER_TEAM).await;
    let team_deletes: Vec<_> = deletes(&h)
        .await
        .into_iter()
        .filter(|(path, _)| path.contains(&id))
        .collect();
    assert!(
        team_deletes.is_empty(),
        "the old team's name was deleted from under its new writer: {team_deletes:?}"
    );
    let kept = h.baseten_secret_in(OTHER_TEAM, "moving").await.unwrap();
    assert_eq!(kept.value, "y value");
    assert_eq!(h.baseten_secret("moving").await.unwrap().value, "x value");
}

#[tokio::test]
async fn a_successor_to_a_renamed_away_name_waits_for_its_delete() {
    let h = Harness::start("life-rename-successor").await;
    h.apply_secret("old-creds", &[("token", b"old value")], json!({}))
        .await;
    h.apply_secret("new-creds", &[("token", b"new value")], json!({}))
        .await;
    let delete = |secret: &str, name: &str| {
        spec(secret, name, DeletionPolicy::Delete, UpdatePolicy::Replace)
    };
    h.apply_bts("renamed", delete("old-creds", "left-name"), json!({}))
        .await
        .unwrap();
    h.wait_reason("renamed", "Synced").await;

    // Baseten answers the old name's delete after 3 s: the successor arrives meanwhile.
    h.fault(json!({"path_prefix": "/v1/secrets", "method": "DELETE", "latency_ms": 3000}))
        .await;
    h.apply_bts("renamed", delete("old-creds", "next-name"), json!({}))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    h.apply_bts("successor", delete("new-creds", "left-name"), json!({}))
        .await
        .unwrap();
    let waiting = h.wait_reason("successor", "Conflict").await;
    let message = &waiting.ready_condition().unwrap().message;
    assert!(
        message.contains("being deleted by") && message.contains("/renamed"),
        "{message}"
    );
    h.wait_reason("successor", "Synced").await;
    h.barrier().await;
    assert_eq!(
        h.baseten_secret("left-name").await.map(|s| s.value),
        Some("new value".to_string()),
        "the delete in flight removed the successor's value"
    );
    assert_eq!(
        h.baseten_secret("next-name").await.map(|s| s.value),
        Some("old value".to_string())
    );
}

#[tokio::test]
async fn a_team_the_listing_lacks_never_counts_as_deleted() {
    let mut h = Harness::start("life-team-miss").await;
    h.apply_secret("creds", &[("token", b"team value")], json!({}))
        .await;
    let spec = spec_in(
        Some(OTHER_TEAM),
        "creds",
        "teamed",
        DeletionPolicy::Delete,
        UpdatePolicy::Replace,
    );
    h.apply_bts("teamed", spec, json!({})).await.unwrap();
    h.wait_reason("teamed", "Synced").await;

    // As after a rename of the team in Baseten: a fresh process's listing lacks it.
    h.stop_operator();
    let default_only =
        json!({"teams": [{"id": "default-id", "name": "Default Team", "default": true}]});
    h.fault(json!({"path_prefix": "/v1/teams", "method": "GET", "status": 200, "count": 1000, "body": default_only}))
        .await;
    h.start_operator();
    h.bts_api()
        .delete("teamed", &DeleteParams::default())
        .await
        .unwrap();
    let blocked = h
        .wait_bts("teamed", "DeletionBlocked", |o| {
            o.ready_condition()
                .is_some_and(|c| c.reason == "DeletionBlocked")
        })
        .await;
    let message = &blocked.ready_condition().unwrap().message;
    assert!(message.contains(OTHER_TEAM), "{message}");
    assert!(has_finalizer(&blocked), "the finalizer stays");
    assert!(
        h.baseten_secret_in(OTHER_TEAM, "teamed").await.is_some(),
        "the secret is still in Baseten"
    );
    assert!(deletes(&h).await.is_empty(), "no delete was sent");
}
