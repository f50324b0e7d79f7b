//! Every branch of the apply plan, without a cluster or Baseten.

use std::time::Duration;

use secrecy::SecretString;
use tokio::time::Instant;

use super::*;
use crate::baseten::BasetenClient;
use crate::crd::BasetenSecretSpec;
use crate::credentials::ApiKey;
use crate::error::Error;
use crate::hash::HashKey;
use crate::reconcile::gather::{Inputs, Recall};

const KEY: &str = "test-api-key";

fn object() -> BasetenSecret {
    let mut object = BasetenSecret::new(
        "hf",
        BasetenSecretSpec {
            baseten_name: Some("hf_token".into()),
            deletion_policy: DeletionPolicy::Delete,
            ..BasetenSecretSpec::of("creds", "token")
        },
    );
    object.metadata.namespace = Some("ml".into());
    object.metadata.generation = Some(3);
    object
}

fn seen(recall: Recall) -> Seen {
    Seen {
        recall,
        winner: None,
        inputs: Inputs {
            secret: "creds".into(),
            secret_version: Some("5".into()),
            key_version: Some("operator-0".into()),
            generation: 3,
            force_token: None,
            digest: None,
        },
        now: Instant::now(),
        jitter: 0.0,
    }
}

fn readable(value: &str) -> Readable {
    // Building the (unused) client needs the TLS provider.
    crate::install_crypto_provider();
    let key = SecretString::from(KEY);
    Readable {
        api_key: std::sync::Arc::new(ApiKey {
            client: BasetenClient::new("http://baseten.invalid", &key).unwrap(),
            hash_key: HashKey::derive(&key),
        }),
        value: SecretString::from(value),
        version: Some("6".into()),
        digest: None,
    }
}

/// A status as after writing `value` under `name`.
fn written(name: &str, value: &str) -> BasetenSecretStatus {
    let hash = readable(value)
        .api_key
        .hash_key
        .synced_hash(name, &SecretString::from(value));
    BasetenSecretStatus {
        baseten_name: Some(name.into()),
        synced_hash: Some(hash),
        team_name: Some("Default".into()),
        secret_id: Some("id1".into()),
        ..Default::default()
    }
}

fn recall_with(status: BasetenSecretStatus) -> Recall {
    Recall {
        status,
        ..Recall::default()
    }
}

fn done(next: Next) -> Step {
    match next {
        Next::Done(step) => step,
        other => panic!("expected the reconcile to end before reading, got {other:?}"),
    }
}

fn planned_write(planned: Planned) -> Write {
    match planned {
        Planned::Write(write) => write,
        other => panic!("expected a write, got {other:?}"),
    }
}

fn up_to_date(planned: Planned) -> Step {
    match planned {
        Planned::UpToDate(step) => step,
        other => panic!("expected no write, got {other:?}"),
    }
}

fn waits(planned: Planned) -> (Decision, Step) {
    match planned {
        Planned::Waiting(decision, step) => (decision, step),
        other => panic!("expected a wait, got {other:?}"),
    }
}

fn reason(step: &Step) -> Reason {
    step.outcome.as_ref().expect("an outcome").reason
}

#[test]
fn a_suspended_resource_reads_nothing_and_says_so() {
    let mut object = object();
    object.spec.suspend = true;
    let mut seen = seen(Recall::default());
    seen.winner = Some(Claimant::of(&object));
    let step = done(first(&object, &seen));
    assert_eq!(reason(&step), Reason::Suspended);
    assert_eq!(step.change.settled, Some(None));
    assert_eq!(step.change.failures, Some(0));
    assert!(matches!(step.then, Then::AwaitChange));
}

#[test]
fn a_lost_conflict_names_the_winner_and_writes_nothing() {
    let mut winner = object();
    winner.metadata.name = Some("older".into());
    let mut seen = seen(Recall::default());
    seen.winner = Some(Claimant::of(&winner));
    let step = done(first(&object(), &seen));
    assert_eq!(reason(&step), Reason::Conflict);
    assert!(step.outcome.unwrap().message.contains("ml/older"));
    assert_eq!(step.change.settled, Some(None));
}

#[test]
fn unchanged_inputs_end_the_reconcile_without_a_read_unless_drift_was_found() {
    let mut seen = seen(Recall::default());
    seen.recall.settled = seen.inputs.seen_fingerprint();
    seen.recall.caught_up = true;
    let Next::Unchanged(step) = first(&object(), &seen) else {
        panic!("expected unchanged inputs");
    };
    assert!(step.outcome.is_none() && step.note.is_none());
    assert_eq!(
        step.change.written_status,
        Some(None),
        "the echo is forgotten"
    );
    assert!(step.change.settled.is_none() && step.change.failures.is_none());

    seen.recall.memory.drift = Some(Box::new(Drift::Missing));
    assert!(matches!(first(&object(), &seen), Next::Read));

    seen.recall.memory.drift = None;
    seen.inputs.generation = 4;
    assert!(
        matches!(first(&object(), &seen), Next::Read),
        "a new generation reads"
    );
    seen.inputs.secret_version = None;
    assert!(
        matches!(first(&object(), &seen), Next::Read),
        "an unknown version reads"
    );
}

#[test]
fn an_unusable_key_or_value_is_the_users_to_fix() {
    let step = unusable(
        &seen(Recall::default()),
        (Reason::KeyNotFound, "no key".into()),
    );
    assert_eq!(reason(&step), Reason::KeyNotFound);
    assert_eq!(step.change.settled, Some(None));
    assert!(matches!(step.then, Then::AwaitChange));
}

#[test]
fn the_same_name_and_value_are_not_written_again() {
    let seen = seen(recall_with(written("hf_token", "v1")));
    let step = up_to_date(write(&object(), &seen, &readable("v1")));
    assert!(step.skipped_write);
    assert_eq!(reason(&step), Reason::Synced);
    assert_eq!(
        step.change.settled,
        Some(Some(seen.inputs.fingerprint("6", None)))
    );
    assert!(step.change.retry.is_none(), "an old retry is left as it is");
}

#[test]
fn a_new_value_a_new_name_a_token_or_drift_writes() {
    let status = written("hf_token", "v1");
    let changed = planned_write(write(
        &object(),
        &seen(recall_with(status.clone())),
        &readable("v2"),
    ));
    assert_eq!(changed.decision, Decision::Changed);
    assert_eq!(changed.baseten_name, "hf_token");
    assert_eq!(changed.attempt.generation, 3);

    let mut renamed = object();
    renamed.spec.baseten_name = Some("other".into());
    let write_renamed = planned_write(write(
        &renamed,
        &seen(recall_with(status.clone())),
        &readable("v1"),
    ));
    assert_eq!(write_renamed.decision, Decision::Changed);
    assert_eq!(
        write_renamed.previous,
        Some(Previous {
            team_name: Some("Default".into()),
            baseten_name: "hf_token".into()
        })
    );

    let mut forced = seen(recall_with(status.clone()));
    forced.inputs.force_token = Some("1".into());
    let write_forced = planned_write(write(&object(), &forced, &readable("v1")));
    assert_eq!(write_forced.decision, Decision::Forced);
    assert_eq!(write_forced.attempt.force_token.as_deref(), Some("1"));

    let mut drifted = seen(recall_with(status));
    drifted.recall.memory.drift = Some(Box::new(Drift::Missing));
    assert_eq!(
        planned_write(write(&object(), &drifted, &readable("v1"))).decision,
        Decision::Drifted
    );
}

#[test]
fn the_team_is_part_of_what_was_written() {
    let mut moved_team = object();
    moved_team.spec.team = Some("ML".into());
    let write = planned_write(write(
        &moved_team,
        &seen(recall_with(written("hf_token", "v1"))),
        &readable("v1"),
    ));
    assert_eq!(write.decision, Decision::Changed);
    assert_eq!(write.team.as_deref(), Some("ML"));
}

#[test]
fn if_not_exists_looks_first_only_on_a_first_write() {
    let mut object = object();
    object.spec.update_policy = UpdatePolicy::IfNotExists;
    let first_write = planned_write(write(&object, &seen(Recall::default()), &readable("v1")));
    assert!(first_write.unless_exists);
    assert_eq!(first_write.previous, None, "nothing was written before");
    let update = planned_write(write(
        &object,
        &seen(recall_with(written("hf_token", "v1"))),
        &readable("v2"),
    ));
    assert!(!update.unless_exists);
}

#[test]
fn retain_never_plans_to_delete_the_previous_name() {
    let mut object = object();
    object.spec.deletion_policy = DeletionPolicy::Retain;
    object.spec.baseten_name = Some("other".into());
    let write = planned_write(write(
        &object,
        &seen(recall_with(written("hf_token", "v1"))),
        &readable("v1"),
    ));
    assert_eq!(write.previous, None);
}

#[test]
fn a_failed_write_waits_for_its_retry_time_and_a_new_write_does_not() {
    let mut waiting = seen(Recall::default());
    let first_try = planned_write(write(&object(), &waiting, &readable("v1")));
    waiting.recall.memory.retry = Some(Box::new(Retry {
        not_before: waiting.now + Duration::from_secs(30),
        attempt: first_try.attempt.clone(),
        failures: 1,
    }));
    let (decision, step) = waits(write(&object(), &waiting, &readable("v1")));
    assert_eq!(decision, Decision::FirstWrite);
    assert!(step.outcome.is_none());
    assert!(matches!(step.then, Then::Requeue(left) if left == Duration::from_secs(30)));
    let other = planned_write(write(&object(), &waiting, &readable("v2")));
    assert_ne!(
        other.attempt, first_try.attempt,
        "another value goes at once"
    );
    waiting.now += Duration::from_secs(31);
    planned_write(write(&object(), &waiting, &readable("v1")));
}

#[test]
fn a_write_moved_only_when_the_name_or_the_team_changed() {
    let previous = Previous {
        team_name: Some("Default".into()),
        baseten_name: "hf_token".into(),
    };
    let answer = |team: Option<&str>| SecretV1 {
        name: "x".into(),
        created_at: "2026-01-01T00:00:00Z".into(),
        id: None,
        team_name: team.map(Into::into),
    };
    assert!(
        !moved(&previous, &answer(Some("Default")), "hf-token"),
        "a respelling"
    );
    assert!(moved(&previous, &answer(Some("Default")), "other"));
    assert!(moved(&previous, &answer(Some("ML")), "hf_token"));
    assert!(
        !moved(&previous, &answer(None), "hf_token"),
        "an old answer names no team"
    );
}

fn planned(seen: &Seen, read: &Readable) -> Write {
    planned_write(write(&object(), seen, read))
}

#[test]
fn an_unknown_team_looks_again_in_minutes() {
    let seen = seen(Recall::default());
    let read = readable("v1");
    let mut team = object();
    team.spec.team = Some("Nope".into());
    let write = planned_write(write(&team, &seen, &read));
    let step = conclude(&team, &seen, &read, write, Acted::TeamNotFound);
    assert_eq!(reason(&step), Reason::TeamNotFound);
    assert!(step.outcome.unwrap().message.contains("\"Nope\""));
    assert!(matches!(step.then, Then::Requeue(d) if d >= TEAM_NOT_FOUND_RETRY));
}

#[test]
fn a_transient_failure_is_retried_by_the_error_policy_at_its_retry_time() {
    let mut seen = seen(Recall::default());
    seen.recall.memory.retry = Some(Box::new(Retry {
        not_before: seen.now,
        attempt: Attempt {
            synced_hash: "old".into(),
            generation: 1,
            force_token: None,
        },
        failures: 2,
    }));
    let read = readable("v1");
    let write = planned(&seen, &read);
    let attempt = write.attempt.clone();
    let failure = Acted::Failed(BasetenError::Unavailable { status: 503 });
    let step = conclude(&object(), &seen, &read, write, failure);
    assert_eq!(reason(&step), Reason::BasetenUnavailable);
    assert!(step.outcome.unwrap().message.contains("HTTP 503"));
    assert!(matches!(
        step.then,
        Then::Fail(Error::Baseten(BasetenError::Unavailable { status: 503 }))
    ));
    let retry = step.change.retry.flatten().expect("a retry time");
    assert_eq!(retry.failures, 3);
    assert_eq!(retry.attempt, attempt);
    assert_eq!(
        retry.not_before,
        seen.now + Duration::from_secs(4),
        "backoff of the third failure"
    );
    assert_eq!(step.change.settled, Some(None));
}

#[test]
fn a_refused_key_is_tried_again_in_minutes() {
    let seen = seen(Recall::default());
    let read = readable("v1");
    let refused = Acted::Failed(BasetenError::Unauthorized { status: 401 });
    let step = conclude(&object(), &seen, &read, planned(&seen, &read), refused);
    assert_eq!(reason(&step), Reason::Unauthorized);
    assert!(matches!(step.then, Then::Requeue(d) if d >= Duration::from_secs(300)));
}

#[test]
fn an_existing_name_under_if_not_exists_is_left_alone_and_reported() {
    let seen = seen(Recall::default());
    let read = readable("v1");
    let found = SecretV1 {
        name: "hf-token".into(),
        created_at: "2025-01-01T00:00:00Z".into(),
        id: Some("theirs".into()),
        team_name: None,
    };
    let step = conclude(
        &object(),
        &seen,
        &read,
        planned(&seen, &read),
        Acted::Exists(found),
    );
    assert_eq!(reason(&step), Reason::AlreadyExists);
    let outcome = step.outcome.unwrap();
    assert_eq!(outcome.found.unwrap().id.as_deref(), Some("theirs"));
    assert!(outcome.written.is_none());
    assert_eq!(
        step.change.settled,
        Some(Some(seen.inputs.fingerprint("6", None)))
    );
}

fn answer() -> SecretV1 {
    SecretV1 {
        name: "hf_token".into(),
        created_at: "2026-01-01T00:00:00Z".into(),
        id: Some("id2".into()),
        team_name: Some("Default".into()),
    }
}

#[test]
fn a_write_is_recorded_with_its_hash_and_clears_the_retry() {
    let seen = seen(Recall::default());
    let read = readable("v1");
    let write = planned(&seen, &read);
    let hash = write.attempt.synced_hash.clone();
    let acted = Acted::Written {
        secret: answer(),
        release_failed: Vec::new(),
    };
    let step = conclude(&object(), &seen, &read, write, acted);
    assert_eq!(reason(&step), Reason::Synced);
    let written = step.outcome.unwrap().written.unwrap();
    assert_eq!(
        (written.baseten_name.as_str(), written.synced_hash),
        ("hf_token", hash)
    );
    assert!(matches!(step.change.retry, Some(None)));
    assert!(step.note.is_none() && !step.change.drift_repaired);
    assert!(matches!(step.then, Then::AwaitChange));
}

#[test]
fn a_drift_repair_is_announced_and_forgotten() {
    let mut seen = seen(recall_with(written("hf_token", "v1")));
    seen.recall.memory.drift = Some(Box::new(Drift::Recreated {
        was: "id1".into(),
        now: "id9".into(),
    }));
    let read = readable("v1");
    let acted = Acted::Written {
        secret: answer(),
        release_failed: Vec::new(),
    };
    let step = conclude(&object(), &seen, &read, planned(&seen, &read), acted);
    let note = step.note.expect("an event");
    assert_eq!((note.kind, note.reason), ("Warning", "Replaced"));
    assert!(note.text.contains("id1") && note.text.contains("id9"));
    assert!(step.change.drift_repaired);
}

fn pending(name: &str) -> PendingDeletion {
    PendingDeletion {
        baseten_name: name.into(),
        team_name: Some("Default".into()),
    }
}

#[test]
fn a_failed_delete_of_the_previous_name_records_the_new_write_and_the_pending_delete() {
    let mut renamed = object();
    renamed.spec.baseten_name = Some("new_name".into());
    let seen = seen(recall_with(written("hf_token", "v1")));
    let read = readable("v1");
    let write = planned_write(write(&renamed, &seen, &read));
    let hash = write.attempt.synced_hash.clone();
    let acted = Acted::Written {
        secret: SecretV1 {
            name: "new_name".into(),
            ..answer()
        },
        release_failed: vec![(
            pending("hf_token"),
            BasetenError::Unavailable { status: 502 }.into(),
        )],
    };
    let step = conclude(&renamed, &seen, &read, write, acted);
    // The value is in Baseten as asked: Ready stays True.
    assert_eq!(reason(&step), Reason::Synced);
    let outcome = step.outcome.unwrap();
    let written = outcome.written.expect("the new write is recorded");
    assert_eq!(
        (written.baseten_name.as_str(), written.synced_hash),
        ("new_name", hash)
    );
    assert_eq!(outcome.pending, Some(vec![pending("hf_token")]));
    assert!(outcome.message.contains("\"new_name\"") && outcome.message.contains("\"hf_token\""));
    assert!(outcome.message.contains("pending"), "{}", outcome.message);
    assert!(matches!(step.then, Then::Fail(_)), "retried with backoff");
    assert!(matches!(step.change.retry, Some(None)));
    assert_eq!(
        step.change.settled,
        Some(None),
        "the next reconcile reads again"
    );
}

#[test]
fn a_write_carries_the_pending_deletions_and_a_clean_retry_empties_them() {
    let mut status = written("hf_token", "v1");
    status.pending_deletions = vec![pending("old")];
    let seen = seen(recall_with(status));
    let read = readable("v2");
    let write = planned(&seen, &read);
    assert_eq!(write.pending, vec![pending("old")]);
    let acted = Acted::Written {
        secret: answer(),
        release_failed: Vec::new(),
    };
    let step = conclude(&object(), &seen, &read, write, acted);
    let outcome = step.outcome.unwrap();
    assert_eq!(
        outcome.pending,
        Some(Vec::new()),
        "every delete went through"
    );
    assert!(!outcome.message.contains("pending"));
    assert!(matches!(step.then, Then::AwaitChange));
}

#[test]
fn retain_deletes_no_pending_name_and_empties_the_list() {
    let mut status = written("hf_token", "v1");
    status.pending_deletions = vec![pending("old")];
    let mut retain = object();
    retain.spec.deletion_policy = DeletionPolicy::Retain;
    let write = planned_write(write(
        &retain,
        &seen(recall_with(status.clone())),
        &readable("v2"),
    ));
    assert!(write.pending.is_empty());
    assert!(pending_of(&retain, &status).is_empty());
    assert_eq!(pending_of(&object(), &status), [pending("old")]);
}

#[test]
fn pending_deletions_keep_a_resource_from_settling() {
    let mut status = written("hf_token", "v1");
    let mut recall = recall_with(status.clone());
    recall.settled = seen(Recall::default()).inputs.seen_fingerprint();
    assert!(matches!(
        first(&object(), &seen(recall.clone())),
        Next::Unchanged(_)
    ));
    status.pending_deletions = vec![pending("old")];
    recall.status = status;
    assert!(matches!(first(&object(), &seen(recall)), Next::Read));
}

#[test]
fn an_up_to_date_resource_retries_its_pending_deletes_until_they_go() {
    let mut status = written("hf_token", "v1");
    status.pending_deletions = vec![pending("old"), pending("older")];
    let seen = seen(recall_with(status));
    let step = up_to_date(write(&object(), &seen, &readable("v1")));
    let failed = vec![(
        pending("older"),
        BasetenError::Unavailable { status: 503 }.into(),
    )];
    let step = crate::reconcile::pending::after(step, failed);
    assert_eq!(reason(&step), Reason::Synced);
    let outcome = step.outcome.as_ref().unwrap();
    assert_eq!(outcome.pending, Some(vec![pending("older")]));
    assert!(outcome.message.contains("\"older\"") && !outcome.message.contains("\"old\""));
    assert!(matches!(step.then, Then::Fail(_)));
    assert_eq!(step.change.settled, Some(None));
    assert_eq!(step.change.failures, None, "failures go on counting");

    let step = up_to_date(write(&object(), &seen, &readable("v1")));
    let step = crate::reconcile::pending::after(step, Vec::new());
    assert_eq!(step.outcome.unwrap().pending, Some(Vec::new()));
    assert!(matches!(step.then, Then::AwaitChange));
}

#[test]
fn a_pending_name_wanted_again_is_dropped_not_deleted() {
    use crate::reconcile::pending::to_retry;
    let list = [pending("hf_token"), pending("old")];
    // A respelling of the wanted name is the wanted secret.
    assert_eq!(
        to_retry(&list, "hf-token", Some("Default")),
        [pending("old")]
    );
    assert_eq!(
        to_retry(&list, "hf_token", Some("ML")),
        list,
        "in another team it is another secret"
    );
}

#[test]
fn a_new_version_of_a_shared_secret_that_keeps_this_key_is_unchanged() {
    let mut read = readable("v1");
    read.digest = Some(42);
    let mut recall = recall_with(written("hf_token", "v1"));
    let settled_at_6 = seen(recall.clone()).inputs.fingerprint("6", read.digest);
    recall.settled = Some(settled_at_6);
    // Version 7: another reader read it, and this key's digest is the same.
    let mut later = seen(recall.clone());
    later.inputs.secret_version = Some("7".into());
    later.inputs.digest = Some(42);
    assert!(matches!(first(&object(), &later), Next::Unchanged(_)));
    // Its digest changed, or is not known yet: read.
    later.inputs.digest = Some(43);
    assert!(matches!(first(&object(), &later), Next::Read));
    later.inputs.digest = None;
    assert!(matches!(first(&object(), &later), Next::Read));
}
