//! End-to-end apply semantics on the real broker and PostgreSQL: duplicates,
//! poison isolation, dead letters with reasons, version conflicts.

mod support;

use std::time::Duration;

use serde_json::json;
use support::Stack;
use writ_core::dlq::{self, DlqReason};
use writ_core::{Headers, SubmissionState};
use writ_kafka::OutgoingRecord;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_command_three_times_is_applied_once_and_answered_three_times() {
    let Some(stack) = Stack::new("dup", 2).await else {
        return;
    };
    let (token, handle) = stack.start_worker("").await;
    let record = stack.upsert("dup-key-1", "cust-1", 1, "Ada");
    // Three deliveries of one command: a producer retry, a replay, a double click.
    for _ in 0..3 {
        stack.produce(std::slice::from_ref(&record)).await;
    }
    let statuses = stack.wait_statuses(3, Duration::from_secs(60)).await;
    support::stop_worker(token, handle).await.unwrap();

    assert_eq!(statuses.len(), 3, "{statuses:?}");
    let first = &statuses[0];
    assert_eq!(first.state, SubmissionState::Applied);
    assert_eq!(first.canonical_id.as_deref(), Some("cust-1"));
    assert_eq!(first.master_version, Some(1));
    for s in &statuses {
        assert_eq!(s.submission_id, first.submission_id);
        assert_eq!(
            (s.state, &s.canonical_id, s.master_version, &s.error),
            (
                first.state,
                &first.canonical_id,
                first.master_version,
                &first.error
            )
        );
        assert_eq!(s.payload_fingerprint, first.payload_fingerprint);
    }
    let history: i64 = sqlx::query_scalar("SELECT count(*) FROM customer_history")
        .fetch_one(stack.pool())
        .await
        .unwrap();
    assert_eq!(history, 1, "applied exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_are_isolated_and_the_rest_of_the_batch_applies() {
    let Some(stack) = Stack::new("poison", 1).await else {
        return;
    };
    let mut records = Vec::new();
    for i in 0..10 {
        records.push(stack.upsert(&format!("ok-{i}"), &format!("cust-{i}"), 1, "Good"));
    }
    // Undecodable payload.
    let mut garbage = stack.upsert("bad-json", "cust-x", 1, "x");
    garbage.value = Some(b"{not json".to_vec());
    records.insert(3, garbage);
    // Schema violation: a number where a string belongs.
    records.insert(
        5,
        stack.command(
            "bad-type",
            "customer.upsert.v1",
            "cust-y",
            &json!({"customer_id": "cust-y", "name": 42, "email": "y@example.com"}),
            None,
        ),
    );
    // A type nobody handles.
    records.insert(
        7,
        stack.command(
            "unknown",
            "invoice.void.v1",
            "inv-1",
            &json!({"id": 1}),
            None,
        ),
    );
    // Headers that are not a command at all.
    let mut headers = Headers::new();
    headers.push("ce_specversion", "1.0");
    records.insert(
        8,
        OutgoingRecord::new(stack.layout.commands(), "k", "{}", headers),
    );
    // Violates a master constraint: the master rejects it, the batch is split around it.
    records.insert(9, stack.upsert("rejected", "cust-z", 1, "poison"));
    stack.produce(&records).await;

    let (token, handle) = stack.start_worker("").await;
    // 10 good + 3 dead-lettered with envelopes + 1 rejected = 14 status events.
    let statuses = stack.wait_statuses(14, Duration::from_secs(60)).await;
    let dlq = stack.read_topic(&stack.layout.dlq());
    support::stop_worker(token, handle).await.unwrap();

    let state_of = |id: &str| statuses.iter().find(|s| s.id == id).map(|s| s.state);
    for i in 0..10 {
        assert_eq!(
            state_of(&format!("ok-{i}")),
            Some(SubmissionState::Applied),
            "ok-{i}"
        );
    }
    assert_eq!(state_of("bad-json"), Some(SubmissionState::DeadLettered));
    assert_eq!(state_of("bad-type"), Some(SubmissionState::DeadLettered));
    assert_eq!(state_of("unknown"), Some(SubmissionState::DeadLettered));
    assert_eq!(state_of("rejected"), Some(SubmissionState::Rejected));
    let bad_type = statuses.iter().find(|s| s.id == "bad-type").unwrap();
    assert!(
        bad_type.error.as_ref().unwrap().message.contains("$.name"),
        "{bad_type:?}"
    );

    let mut reasons: Vec<(String, String)> = dlq
        .iter()
        .map(|r| {
            (
                r.headers.get_str("ce_id").unwrap_or("<none>").to_owned(),
                r.headers.get_str(dlq::REASON).unwrap().to_owned(),
            )
        })
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        vec![
            ("<none>".to_owned(), DlqReason::Poison.as_str().to_owned()),
            ("bad-json".to_owned(), DlqReason::Poison.as_str().to_owned()),
            ("bad-type".to_owned(), DlqReason::Poison.as_str().to_owned()),
            (
                "unknown".to_owned(),
                DlqReason::UnknownType.as_str().to_owned()
            ),
        ]
    );
    // The DLQ record is the original, byte for byte, plus writ.dlq.* headers.
    let bad = dlq
        .iter()
        .find(|r| r.headers.get_str("ce_id") == Some("bad-json"))
        .unwrap();
    assert_eq!(bad.key.as_deref(), Some(&b"cust-x"[..]));
    assert_eq!(bad.value.as_deref(), Some(&b"{not json"[..]));
    let failure = dlq::parse_dlq_headers(&bad.headers).unwrap();
    assert_eq!(failure.original_topic, stack.layout.commands());
    assert_eq!(failure.original_offset, 3);

    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM customers")
        .fetch_one(stack.pool())
        .await
        .unwrap();
    assert_eq!(rows, 10, "every good command applied, nothing else");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_mismatch_is_a_conflict_and_leaves_the_master_unchanged() {
    let Some(stack) = Stack::new("conflict", 1).await else {
        return;
    };
    let (token, handle) = stack.start_worker("").await;
    stack
        .produce(&[stack.upsert("v-1", "cust-7", 1, "First")])
        .await;
    stack.wait_statuses(1, Duration::from_secs(60)).await;

    let stale = stack.command(
        "v-2",
        "customer.upsert.v1",
        "cust-7",
        &json!({"customer_id": "cust-7", "name": "Stale", "email": "s@example.com"}),
        Some(5),
    );
    let current = stack.command(
        "v-3",
        "customer.upsert.v1",
        "cust-7",
        &json!({"customer_id": "cust-7", "name": "Second", "email": "s@example.com"}),
        Some(1),
    );
    stack.produce(&[stale, current]).await;
    let statuses = stack.wait_statuses(3, Duration::from_secs(60)).await;
    support::stop_worker(token, handle).await.unwrap();

    let conflict = statuses.iter().find(|s| s.id == "v-2").unwrap();
    assert_eq!(conflict.state, SubmissionState::Conflict);
    assert_eq!(
        conflict.master_version,
        Some(1),
        "the master's current version is reported"
    );
    let applied = statuses.iter().find(|s| s.id == "v-3").unwrap();
    assert_eq!(applied.state, SubmissionState::Applied);
    assert_eq!(applied.master_version, Some(2));
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM customer_history ORDER BY id")
        .fetch_all(stack.pool())
        .await
        .unwrap();
    assert_eq!(
        names,
        vec!["First", "Second"],
        "the conflicting command never touched the master"
    );
}
