//! `writ produce`, `writ status`, `writ tail` and `writ auth hash-key` as a
//! script runs them: the compiled binary, JSON on stdin, against the test
//! broker; bad input fails loudly and produces nothing.

mod support;

use support::{writ, Domain};
use time::macros::datetime;
use writ_codec::{PayloadCodec, SchemaCatalog};
use writ_core::{ContentType, Headers, StatusEvent, SubmissionState};
use writ_kafka::OutgoingRecord;

const ADA: &str = r#"{"customer_id":"cust-1","name":"Ada","email":"ada@example.com","seq":1}"#;

#[tokio::test]
async fn produce_writes_a_valid_command_and_refuses_bad_json() {
    let d = Domain::new("cli-produce", 2, 1).await;
    let b = d.bootstrap();
    let run = writ(
        &[
            "produce",
            "--type",
            "customer.upsert.v1",
            "--domain",
            d.domain(),
            "--key",
            "cust-1",
            "--id",
            "ops-1",
            "--source",
            "/tenants/acme/ops",
        ],
        b,
        ADA,
    );
    let id = run.success().trim().to_owned();
    assert_eq!(
        id,
        writ_core::submission_id("/tenants/acme/ops", "ops-1").to_string()
    );

    let bad = [
        ("{\"customer_id\": \"cust-2\"", "not one valid JSON"),
        (
            r#"{"customer_id":"cust-2","name":42,"email":"x@example.com"}"#,
            "$.name",
        ),
        ("", "no command on stdin"),
    ];
    for (input, why) in bad {
        let run = writ(
            &[
                "produce",
                "--type",
                "customer.upsert.v1",
                "--domain",
                d.domain(),
            ],
            b,
            input,
        );
        assert!(run.failure().contains(why), "{input}: {}", run.stderr);
        assert!(run.stdout.is_empty());
    }
    let unknown = writ(
        &[
            "produce",
            "--type",
            "invoice.void.v1",
            "--domain",
            d.domain(),
        ],
        b,
        ADA,
    );
    assert!(
        unknown.failure().contains("unknown command type"),
        "{}",
        unknown.stderr
    );

    let records = d.read_all(&d.layout.commands());
    assert_eq!(records.len(), 1, "only the valid command was produced");
    let r = &records[0];
    assert_eq!(r.key.as_deref(), Some(&b"cust-1"[..]));
    let envelope = writ_core::cloudevents::from_headers(&r.headers).unwrap();
    assert_eq!(envelope.id, "ops-1");
    assert_eq!(envelope.content_type, ContentType::Avro);
    assert_eq!(envelope.submission_id().to_string(), id);
    let codec = PayloadCodec::new(SchemaCatalog::builtin(), None).unwrap();
    let payload = codec
        .decode(
            "customer.upsert.v1",
            "application/avro",
            r.value.as_deref().unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(payload["name"], "Ada");

    // tail shows it decoded, with its headers.
    let tail = writ(
        &["tail", &d.layout.commands(), "--from-beginning", "--json"],
        b,
        "",
    );
    let lines: Vec<serde_json::Value> = tail
        .success()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{}", tail.stdout);
    assert_eq!(lines[0]["payload"]["email"], "ada@example.com");
    assert!(lines[0]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["name"] == "ce_id" && h["value"] == "ops-1"));
    let text = writ(&["tail", &d.layout.commands(), "-n", "5"], b, "");
    assert!(
        text.success().contains("ce_type: customer.upsert.v1"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("\"name\": \"Ada\""), "{}", text.stdout);
    let missing = writ(&["tail", "no.such.topic.here"], b, "");
    assert!(
        missing.failure().contains("does not exist"),
        "{}",
        missing.stderr
    );
}

fn status(d: &Domain, state: SubmissionState, at_ms: i64) -> StatusEvent {
    StatusEvent {
        submission_id: writ_core::submission_id("/tenants/acme/ops", "st-1"),
        source: "/tenants/acme/ops".into(),
        id: "st-1".into(),
        command_type: "customer.upsert.v1".into(),
        subject: Some("cust-9".into()),
        state,
        canonical_id: (state == SubmissionState::Applied).then(|| "cust-9".into()),
        master_version: (state == SubmissionState::Applied).then_some(4),
        error: None,
        attempts: 1,
        payload_fingerprint: format!("fp-{}", d.domain()),
        accepted_at: datetime!(2026-11-27 10:00 UTC),
        applied_at: (state == SubmissionState::Applied)
            .then(|| time::OffsetDateTime::from_unix_timestamp(at_ms / 1000).unwrap()),
        stale_after: None,
        job_id: None,
        job_line: None,
        draft_id: None,
        temp_id: None,
    }
}

#[tokio::test]
async fn status_prints_the_latest_state_of_a_submission() {
    let d = Domain::new("cli-status", 3, 1).await;
    let b = d.bootstrap();
    let codec = PayloadCodec::new(SchemaCatalog::builtin(), None).unwrap();
    let mut records = Vec::new();
    for (event, format) in [
        (status(&d, SubmissionState::Accepted, 0), ContentType::Json),
        (
            status(&d, SubmissionState::Applied, 1_795_000_000_000),
            ContentType::Avro,
        ),
    ] {
        let mut headers = Headers::new();
        headers.push("content-type", format.as_str());
        let value = codec.encode_status(&event, format).await.unwrap();
        records.push(OutgoingRecord::new(
            d.layout.status(),
            event.submission_id.to_string(),
            value,
            headers,
        ));
    }
    // One at a time, so "latest" is unambiguous.
    for r in &records {
        d.produce(std::slice::from_ref(r)).await;
    }
    let id = writ_core::submission_id("/tenants/acme/ops", "st-1").to_string();
    let v = writ(&["status", &id, "--domain", d.domain(), "--json"], b, "").json();
    assert_eq!(v["state"], "APPLIED");
    assert_eq!(v["canonical_id"], "cust-9");
    assert_eq!(v["master_version"], 4);
    assert_eq!(v["_record"]["topic"], d.layout.status());
    let text = writ(&["status", &id, "--domain", d.domain()], b, "");
    assert!(
        text.success().contains("state                APPLIED"),
        "{}",
        text.stdout
    );

    let unknown = uuid::Uuid::new_v4().to_string();
    let run = writ(&["status", &unknown, "--domain", d.domain()], b, "");
    assert!(
        run.failure().contains("no status for submission"),
        "{}",
        run.stderr
    );
    let run = writ(&["status", "not-a-uuid", "--domain", d.domain()], b, "");
    assert!(
        run.failure().contains("not a submission id"),
        "{}",
        run.stderr
    );

    let tail = writ(&["tail", &d.layout.status(), "-n", "1", "--json"], b, "");
    let last: Vec<serde_json::Value> = tail
        .success()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(last.len(), 1, "one partition has records: -n 1 shows one");
    assert_eq!(
        last[0]["payload"]["state"], "APPLIED",
        "status events are decoded"
    );
}

#[test]
fn hash_key_matches_the_services_and_reads_stdin() {
    let direct = writ(&["auth", "hash-key", "s3cret"], "", "");
    assert_eq!(direct.success().trim(), writ_http::hash_api_key("s3cret"));
    let piped = writ(&["auth", "hash-key", "-"], "", "s3cret\n");
    assert_eq!(piped.success(), direct.stdout);
    let empty = writ(&["auth", "hash-key", "-"], "", "");
    assert!(empty.failure().contains("empty"));
}

#[tokio::test]
async fn tail_follow_prints_records_as_they_arrive() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let d = Domain::new("cli-follow", 1, 1).await;
    let first = support::command(&d.layout, "f-1", "cust-1", "Ada");
    d.produce(std::slice::from_ref(&first)).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_writ"))
        .args([
            "tail",
            &d.layout.commands(),
            "--from-beginning",
            "--follow",
            "--json",
        ])
        .args(["--bootstrap-servers", d.bootstrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = || {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("a line within 30 s");
        serde_json::from_str::<serde_json::Value>(&line).unwrap()
    };
    assert_eq!(next()["payload"]["name"], "Ada");
    // Written after tail reached the end: only --follow shows it.
    d.produce(&[support::command(&d.layout, "f-2", "cust-2", "Grace")])
        .await;
    assert_eq!(next()["payload"]["name"], "Grace");
    child.kill().unwrap();
    child.wait().unwrap();
}
