//! Payload values of secret-marked fields (`tax_id`, `"writ.secret": true` in
//! customer.upsert.v1) never reach the worker's logs (captured at TRACE, every
//! crate), status events, the inbox's recorded errors or DLQ headers — not
//! when the master refuses the value with a PostgreSQL error whose DETAIL
//! repeats it (UNIQUE and CHECK constraints on the tax_id column), and not
//! when the value breaks the schema and the command is dead-lettered.
//! Its own test binary: the log capture is a process-wide subscriber.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::Stack;
use tokio_util::sync::CancellationToken;
use writ_core::dlq::{self, DlqReason};
use writ_core::SubmissionState;
use writ_worker::{Worker, WorkerConfig};

/// Distinctive tax ids, one per way a value could leak.
const APPLIED: &str = "TAXID-APPLIED-4c7d19e2b0";
const UNIQUE: &str = "TAXID-UNIQUE-5f1e9a77c3";
const CHECK: &str = "TAXID-CHECK-0b6d2e48a9";
const NUMBER: i64 = 7_318_264_095_113;
const OBJECT: &str = "TAXID-OBJECT-93ac1d7e55";
const ARRAY: &str = "TAXID-ARRAY-d2f0c8b417";
const NEIGHBOUR: &str = "TAXID-NEIGHBOUR-61be0a3f9d";

fn secrets() -> Vec<String> {
    [APPLIED, UNIQUE, CHECK, OBJECT, ARRAY, NEIGHBOUR]
        .iter()
        .map(|s| s.to_string())
        .chain([NUMBER.to_string()])
        .collect()
}

/// The master holds tax ids: unique, and at most 40 characters.
const TAX_ID_DDL: &str =
    "ALTER TABLE customers ADD COLUMN tax_id text CONSTRAINT customers_tax_id_key UNIQUE \
     CONSTRAINT customers_tax_id_check CHECK (length(tax_id) <= 40)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_field_values_never_reach_logs_statuses_or_dlq_headers() {
    let capture = writ_testkit::LogCapture::install();
    let Some(stack) = Stack::new("secrets", 1).await else {
        eprintln!("skipping: the worker secrets test needs PostgreSQL");
        return;
    };
    let started = std::time::Instant::now();
    sqlx::raw_sql(TAX_ID_DDL)
        .execute(stack.pool())
        .await
        .unwrap();

    let upsert = |id: &str, customer: &str, name: Value, tax_id: Value| {
        stack.command(
            id,
            "customer.upsert.v1",
            customer,
            &json!({"customer_id": customer, "name": name,
                    "email": format!("{customer}@example.com"), "tax_id": tax_id}),
            None,
        )
    };
    let long_check = format!("{CHECK}-{}", "z".repeat(40));
    let records = vec![
        upsert("s-applied", "cust-1", json!("Ada"), json!(APPLIED)),
        upsert("s-first", "cust-2", json!("Bea"), json!(UNIQUE)),
        // Same tax id as cust-2: `Key (tax_id)=(…) already exists.`
        upsert("s-unique", "cust-3", json!("Cy"), json!(UNIQUE)),
        // Too long: `Failing row contains (…, TAXID-CHECK-…)`.
        upsert("s-check", "cust-4", json!("Di"), json!(long_check)),
        upsert("s-number", "cust-5", json!("Ed"), json!(NUMBER)),
        upsert("s-object", "cust-6", json!("Fay"), json!({"value": OBJECT})),
        upsert("s-array", "cust-7", json!("Gus"), json!([ARRAY])),
        // A schema violation next to a valid secret.
        upsert("s-neighbour", "cust-8", json!(42), json!(NEIGHBOUR)),
    ];
    stack.produce(&records).await;

    let toml = stack
        .worker_toml(
            "interactive",
            "dead_letter_rejections = true\nstatus_format = \"json\"",
        )
        .replace("seq = \"seq\" }", "seq = \"seq\", tax_id = \"tax_id\" }");
    assert!(toml.contains("tax_id = \"tax_id\""), "tax_id is mapped");
    let config = WorkerConfig::from_toml(&toml).unwrap();
    let worker = Worker::connect(config).await.unwrap();
    let token = CancellationToken::new();
    let handle = tokio::spawn(worker.run(token.clone()));
    let statuses = stack
        .wait_statuses(records.len(), Duration::from_secs(90))
        .await;
    // Rejections (2) and schema violations (4) are dead-lettered.
    let dlq = {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let dlq = stack.read_topic(&stack.layout.dlq());
            if dlq.len() >= 6 || std::time::Instant::now() > deadline {
                break dlq;
            }
        }
    };
    support::stop_worker(token, handle).await.unwrap();

    // The paths under test were really taken.
    let state = |id: &str| {
        let s = statuses
            .iter()
            .find(|s| s.id == id)
            .unwrap_or_else(|| panic!("no status for {id}"));
        (
            s.state,
            s.error.as_ref().map(|e| e.code.clone()),
            s.error.as_ref().map(|e| e.message.clone()),
        )
    };
    assert_eq!(state("s-applied").0, SubmissionState::Applied);
    assert_eq!(state("s-first").0, SubmissionState::Applied);
    let (st, code, message) = state("s-unique");
    assert_eq!(
        (st, code.as_deref()),
        (SubmissionState::Rejected, Some("UNIQUE_VIOLATION"))
    );
    assert!(
        message.unwrap().contains("customers_tax_id_key"),
        "the constraint is named"
    );
    let (st, code, message) = state("s-check");
    assert_eq!(
        (st, code.as_deref()),
        (SubmissionState::Rejected, Some("CHECK_VIOLATION"))
    );
    assert!(
        message.unwrap().contains("customers_tax_id_check"),
        "the constraint is named"
    );
    for (id, path) in [
        ("s-number", "$.tax_id"),
        ("s-object", "$.tax_id"),
        ("s-array", "$.tax_id"),
        ("s-neighbour", "$.name"),
    ] {
        let (st, code, message) = state(id);
        assert_eq!(
            (st, code.as_deref()),
            (SubmissionState::DeadLettered, Some("VALIDATION")),
            "{id}"
        );
        assert!(message.unwrap().contains(path), "{id}: the field is named");
    }
    let stored: Vec<(String, String)> = sqlx::query_as(
        "SELECT customer_id, tax_id FROM customers WHERE tax_id IS NOT NULL ORDER BY customer_id",
    )
    .fetch_all(stack.pool())
    .await
    .unwrap();
    assert_eq!(
        stored,
        vec![
            ("cust-1".to_owned(), APPLIED.to_owned()),
            ("cust-2".to_owned(), UNIQUE.to_owned())
        ]
    );
    let reasons: Vec<(&str, &str)> = dlq
        .iter()
        .map(|r| {
            (
                r.headers.get_str("ce_id").unwrap_or("?"),
                r.headers.get_str(dlq::REASON).unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(dlq.len(), 6, "{reasons:?}");
    for id in ["s-unique", "s-check"] {
        assert!(
            reasons.contains(&(id, DlqReason::Rejected.as_str())),
            "{id}: {reasons:?}"
        );
    }

    let logs = capture.text();
    // The capture works and saw the failures: the dead letters, the refused
    // commands and the master's error on the batch that had to be split.
    for expected in [
        "record dead-lettered",
        "command not applied",
        "batch failed; splitting",
        "customers_tax_id_key",
    ] {
        assert!(
            logs.contains(expected),
            "captured logs lack `{expected}` (the four decodable commands are one batch)"
        );
    }
    // And the search would find a leak: the DLQ keeps the original payload.
    let dlq_values: String = dlq
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect();
    for s in [UNIQUE, CHECK, OBJECT, ARRAY, NEIGHBOUR] {
        assert!(dlq_values.contains(s), "the DLQ value keeps {s}");
    }

    let mut leaks = Vec::new();
    let inbox: Vec<(Option<String>, Option<String>)> =
        sqlx::query_as("SELECT error_code, error_message FROM writ_inbox")
            .fetch_all(stack.pool())
            .await
            .unwrap();
    let raw_statuses: Vec<String> = stack
        .read_topic(&stack.layout.status())
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect();
    assert_eq!(raw_statuses.len(), records.len());
    for secret in secrets() {
        if let Some(at) = logs.find(&secret) {
            leaks.push(format!(
                "logs contain {secret}: {}",
                writ_testkit::line_at(&logs, at)
            ));
        }
        for s in &statuses {
            let message = s.error.as_ref().map(|e| e.message.as_str()).unwrap_or("");
            if message.contains(&secret) {
                leaks.push(format!("status of {} says {message}", s.id));
            }
        }
        for raw in &raw_statuses {
            if raw.contains(&secret) {
                leaks.push(format!("status event contains {secret}: {raw}"));
            }
        }
        for (code, message) in &inbox {
            if message.as_deref().unwrap_or("").contains(&secret) {
                leaks.push(format!("inbox error {code:?} records {message:?}"));
            }
        }
        for r in &dlq {
            for (name, value) in r.headers.iter() {
                let value = String::from_utf8_lossy(value.unwrap_or_default());
                if value.contains(&secret) {
                    leaks.push(format!("DLQ header {name} = {value}"));
                }
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "secret values leaked:\n{}",
        leaks.join("\n")
    );
    eprintln!(
        "secrets: {} bytes of TRACE logs, {} statuses, {} dead letters checked for {} values in {:?}",
        logs.len(),
        statuses.len(),
        dlq.len(),
        secrets().len(),
        started.elapsed()
    );
}
