//! Claims followed through watch events: winners, takeovers, relists.

use super::*;
use crate::crd::{BasetenSecretSpec, BasetenSecretStatus, DeletionPolicy, PendingDeletion};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

fn object(ns: &str, name: &str, created: i64, baseten_name: &str) -> BasetenSecret {
    let mut object = BasetenSecret::new(
        name,
        BasetenSecretSpec {
            baseten_name: Some(baseten_name.into()),
            ..BasetenSecretSpec::of("creds", "token")
        },
    );
    object.metadata.namespace = Some(ns.into());
    object.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
    object
}

fn names(refs: Vec<ObjectRef<BasetenSecret>>) -> Vec<String> {
    refs.into_iter()
        .map(|r| format!("{}/{}", r.namespace.unwrap_or_default(), r.name))
        .collect()
}

fn apply(claims: &Claims, o: &BasetenSecret) -> Vec<String> {
    names(claims.observe(&watcher::Event::Apply(o.clone())))
}

#[test]
fn the_oldest_wins_and_the_next_takes_over_when_it_goes() {
    let claims = Claims::default();
    let old = object("b", "old", 100, "hf_token");
    let young = object("a", "young", 200, "hf-token");
    let same_age = object("a", "twin", 100, "hf.token");
    let target = Target::named("hf_token");
    assert_eq!(apply(&claims, &young), ["a/young"]);
    assert_eq!(apply(&claims, &old), ["a/young", "b/old"]);
    assert_eq!(claims.winner(&target).unwrap().name(), "old");
    // Same second: namespace, then name, decides.
    assert_eq!(apply(&claims, &same_age), ["a/twin", "a/young", "b/old"]);
    assert_eq!(claims.winner(&target).unwrap().name(), "twin");
    // A loser changing nothing that matters requeues nobody.
    assert!(apply(&claims, &young).is_empty());

    // The winner moves to another name: the next in line takes over.
    let moved = object("a", "twin", 100, "other");
    assert_eq!(apply(&claims, &moved), ["a/twin", "a/young", "b/old"]);
    assert_eq!(claims.winner(&target).unwrap().name(), "old");
    // The winner is deleted.
    let requeued = names(claims.observe(&watcher::Event::Delete(old.clone())));
    assert_eq!(requeued, ["a/young"]);
    assert_eq!(claims.winner(&target).unwrap().name(), "young");
    assert_eq!(
        claims.winner(&Target::named("HF_TOKEN")),
        None,
        "case counts"
    );
}

#[test]
fn a_resource_being_deleted_wants_nothing_but_holds_what_it_wrote() {
    let claims = Claims::default();
    let mut leaving = object("ml", "leaving", 1, "shared");
    leaving.status = Some(BasetenSecretStatus {
        baseten_name: Some("shared".into()),
        synced_hash: Some("h".into()),
        ..Default::default()
    });
    let waiting = object("ml", "waiting", 2, "shared");
    apply(&claims, &leaving);
    apply(&claims, &waiting);
    let target = Target::named("shared");
    let me = Claimant::of(&leaving);
    assert_eq!(
        claims.other_claimant(&target, &me).unwrap().name(),
        "waiting"
    );

    leaving.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(5).unwrap()));
    assert_eq!(apply(&claims, &leaving), ["ml/waiting"]);
    assert_eq!(claims.winner(&target).unwrap().name(), "waiting");
    let them = Claimant::of(&waiting);
    assert_eq!(
        claims.other_claimant(&target, &them).unwrap().name(),
        "leaving",
        "what it wrote stays held until it is gone"
    );
}

#[test]
fn pending_deletions_are_held_until_they_leave_the_status() {
    let claims = Claims::default();
    let mut moved = object("ml", "moved", 1, "new-name");
    moved.status = Some(BasetenSecretStatus {
        baseten_name: Some("new-name".into()),
        synced_hash: Some("h".into()),
        pending_deletions: vec![PendingDeletion {
            baseten_name: "old_name".into(),
            team_name: None,
        }],
        ..Default::default()
    });
    let other = object("ml", "other", 2, "elsewhere");
    apply(&claims, &moved);
    apply(&claims, &other);
    let held = Target::named("old-name");
    let them = Claimant::of(&other);
    assert_eq!(
        claims.other_claimant(&held, &them).unwrap().name(),
        "moved",
        "nobody else deletes a name still to be deleted here"
    );
    assert!(
        claims
            .other_claimant(&held, &Claimant::of(&moved))
            .is_none()
    );
    moved.status.as_mut().unwrap().pending_deletions.clear();
    apply(&claims, &moved);
    assert!(claims.other_claimant(&held, &them).is_none());
}

#[test]
fn a_relist_forgets_resources_deleted_while_the_watch_was_down() {
    let claims = Claims::default();
    let a = object("ml", "a", 1, "x");
    let b = object("ml", "b", 2, "x");
    apply(&claims, &a);
    apply(&claims, &b);
    assert!(claims.observe(&watcher::Event::Init).is_empty());
    claims.observe(&watcher::Event::InitApply(b.clone()));
    assert_eq!(names(claims.observe(&watcher::Event::InitDone)), ["ml/b"]);
    assert_eq!(claims.winner(&Target::named("x")).unwrap().name(), "b");
    assert_eq!(claims.len(), 1);
}

#[test]
fn a_target_gives_back_its_key_team_and_name() {
    let mut object = object("ml", "a", 1, "HF-token");
    object.spec.team = Some("ML Platform".into());
    object.spec.api_key_ref = Some(crate::crd::SecretKeyRef {
        name: "baseten-key".into(),
        key: "apiKey".into(),
    });
    let target = Target::of(&object);
    assert_eq!(target.key(), "secret:ml/baseten-key/apiKey");
    assert_eq!(target.key_secret(), Some(("ml", "baseten-key", "apiKey")));
    assert_eq!(target.team(), "ML Platform");
    assert_eq!(target.name(), "HF_token");
    let plain = Target::named("x");
    assert_eq!(
        (plain.key(), plain.team(), plain.name()),
        (OPERATOR_KEY, "", "x")
    );
    assert_eq!(plain.key_secret(), None);
}

#[test]
fn other_spellings_of_a_name_are_rivals_and_requeued_together() {
    let claims = Claims::default();
    let mut by_name = object("a", "by-name", 1, "hf_token");
    by_name.spec.team = Some("ML".into());
    let mut by_id = object("b", "by-id", 2, "hf-token");
    by_id.spec.team = Some("team-ml".into());
    let default = object("c", "default", 3, "hf_token");
    let elsewhere = object("d", "elsewhere", 0, "other");
    apply(&claims, &by_name);
    apply(&claims, &elsewhere);
    apply(&claims, &by_id);
    apply(&claims, &default);
    let rivals = |o: &BasetenSecret| -> Vec<String> {
        (claims.rivals(&Target::of(o), &Claimant::of(o)).into_iter())
            .map(|(target, claimant)| format!("{claimant} {}", target.team()))
            .collect()
    };
    assert!(rivals(&by_name).is_empty(), "nobody is before the oldest");
    assert_eq!(rivals(&by_id), ["a/by-name ML"]);
    assert_eq!(rivals(&default), ["a/by-name ML", "b/by-id team-ml"]);
    assert_eq!(
        names(claims.to_recheck(&Target::of(&by_name))),
        ["b/by-id", "c/default"]
    );
    // Its winner goes: every spelling of the name looks again, not only its own.
    let requeued = names(claims.observe(&watcher::Event::Delete(by_name.clone())));
    assert_eq!(requeued, ["b/by-id", "c/default"]);
    let everyone_else = claims.spelled_otherwise(&Target::of(&default), &Claimant::of(&default));
    assert_eq!(everyone_else.len(), 1);
    assert_eq!(everyone_else[0].1.name(), "by-id");
}

#[test]
fn under_delete_a_name_left_behind_is_locked_until_it_is_let_go() {
    let claims = Claims::default();
    let mut renamed = object("ml", "renamed", 1, "new-name");
    renamed.spec.deletion_policy = DeletionPolicy::Delete;
    renamed.status = Some(BasetenSecretStatus {
        baseten_name: Some("old-name".into()),
        synced_hash: Some("h".into()),
        ..Default::default()
    });
    let newcomer = object("ml", "newcomer", 2, "old_name");
    apply(&claims, &renamed);
    apply(&claims, &newcomer);
    let old = Target::named("old-name");
    let winner = claims.winner(&old).unwrap();
    assert!(winner.is_deleting() && winner.is(&Claimant::of(&renamed)));
    assert!(
        claims
            .other_claimant(&old, &Claimant::of(&renamed))
            .is_some_and(|c| c.name() == "newcomer"),
        "its own lock does not stop its own delete"
    );
    // Its status moves on: the newcomer is next.
    renamed.status.as_mut().unwrap().baseten_name = Some("new-name".into());
    assert_eq!(apply(&claims, &renamed), ["ml/newcomer"]);
    assert_eq!(claims.winner(&old).unwrap().name(), "newcomer");

    // Under Retain nothing is deleted, so nothing is locked.
    let mut kept = object("ml", "kept", 0, "elsewhere");
    kept.status = Some(BasetenSecretStatus {
        baseten_name: Some("kept-name".into()),
        synced_hash: Some("h".into()),
        ..Default::default()
    });
    apply(&claims, &kept);
    assert!(claims.winner(&Target::named("kept-name")).is_none());
}
