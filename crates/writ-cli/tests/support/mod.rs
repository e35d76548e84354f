//! Shared fixtures for the CLI's end-to-end tests: the compiled `writ`
//! binary run as an operator runs it (no terminal attached), a domain's
//! topics on the test broker, DLQ records built as the worker builds them,
//! and a raw reader that sees exact bytes.

#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use time::macros::datetime;
use writ_core::dlq::{self, DlqFailure, DlqReason};
use writ_core::{CommandEnvelope, ContentType, Headers, TopicLayout};
use writ_kafka::{ConsumedRecord, KafkaSettings, OutgoingRecord, RecordProducer};
use writ_testkit::TestKafka;

/// What a `writ` run left behind.
#[derive(Debug)]
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Stdout as JSON; panics with both streams when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Asserts success and returns stdout.
    pub fn success(&self) -> &str {
        assert!(
            self.ok,
            "writ failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        &self.stdout
    }

    /// Asserts failure and returns stderr.
    pub fn failure(&self) -> &str {
        assert!(
            !self.ok,
            "writ should have failed:\nstdout:\n{}",
            self.stdout
        );
        &self.stderr
    }
}

/// Runs the compiled binary with `stdin` piped (never a terminal); an
/// empty `bootstrap` passes no broker (for commands without one).
pub fn writ(args: &[&str], bootstrap: &str, stdin: &str) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_writ"));
    cmd.args(args);
    if !bootstrap.is_empty() {
        cmd.args(["--bootstrap-servers", bootstrap]);
    }
    let mut child = cmd
        .env_remove("WRIT__SOURCE")
        .env("WRIT_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run writ");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A domain with its four topics on the test broker.
pub struct Domain {
    pub kafka: TestKafka,
    pub layout: TopicLayout,
    pub settings: KafkaSettings,
    pub producer: RecordProducer,
}

impl Domain {
    /// Creates the topics (`partitions` each; the DLQ gets `dlq_partitions`).
    pub async fn new(prefix: &str, partitions: i32, dlq_partitions: i32) -> Domain {
        Self::on(
            writ_testkit::kafka().await,
            prefix,
            partitions,
            dlq_partitions,
        )
        .await
    }

    /// Like [`Domain::new`], on a given broker.
    pub async fn on(
        kafka: TestKafka,
        prefix: &str,
        partitions: i32,
        dlq_partitions: i32,
    ) -> Domain {
        let layout = TopicLayout::new(&writ_testkit::unique_name(prefix)).unwrap();
        let settings =
            KafkaSettings::new(kafka.bootstrap_servers()).with("session.timeout.ms", "6000");
        if kafka.is_mock() {
            for t in [layout.commands(), layout.bulk(), layout.status()] {
                kafka.create_mock_topic(&t, partitions).unwrap();
            }
            kafka
                .create_mock_topic(&layout.dlq(), dlq_partitions)
                .unwrap();
        } else {
            let admin = writ_kafka::TopicAdmin::new(&settings).unwrap();
            let specs = layout.specs(&writ_core::topics::TopicSettings {
                partitions,
                status_partitions: partitions,
                dlq_partitions,
                ..Default::default()
            });
            admin.ensure_topics(&specs).await.unwrap();
        }
        let producer = RecordProducer::new(&settings).unwrap();
        Domain {
            kafka,
            layout,
            settings,
            producer,
        }
    }

    pub fn bootstrap(&self) -> &str {
        self.kafka.bootstrap_servers()
    }

    pub fn domain(&self) -> &str {
        self.layout.domain()
    }

    /// Produces and waits for every acknowledgement.
    pub async fn produce(&self, records: &[OutgoingRecord]) {
        for r in self.producer.send_all(records).await {
            r.expect("produce");
        }
    }

    /// Every record of `topic` now, exact bytes, in offset order per partition.
    pub fn read_all(&self, topic: &str) -> Vec<ConsumedRecord> {
        let consumer: BaseConsumer = self.settings.reader_config().unwrap().create().unwrap();
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        let partitions = md.topics()[0].partitions().len();
        for p in md.topics()[0].partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let mut out = Vec::new();
        let mut eof = std::collections::BTreeSet::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while eof.len() < partitions {
            assert!(
                std::time::Instant::now() < deadline,
                "reading {topic} stalled"
            );
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => out.push(ConsumedRecord::from_message(&m)),
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    eof.insert(p);
                }
                _ => {}
            }
        }
        out
    }
}

/// A JSON `customer.upsert.v1` command as any producer would write it, with a binary header.
pub fn command(layout: &TopicLayout, id: &str, customer: &str, name: &str) -> OutgoingRecord {
    let envelope = CommandEnvelope::new(
        id,
        "/tenants/acme/tests",
        "customer.upsert.v1",
        ContentType::Json,
    )
    .with_subject(customer);
    let payload = serde_json::json!({
        "customer_id": customer, "name": name, "email": format!("{customer}@example.com"), "seq": 1
    });
    let mut r = OutgoingRecord::command(
        layout.commands(),
        &envelope,
        serde_json::to_vec(&payload).unwrap(),
    );
    r.headers.push("x-binary", vec![0u8, 0xff, 0x10]);
    r
}

/// The DLQ record a worker writes for `original` (read from `original_partition:original_offset`).
pub fn dead_letter(
    layout: &TopicLayout,
    original: &OutgoingRecord,
    original_partition: i32,
    original_offset: i64,
    reason: DlqReason,
    error_class: &str,
    dlq_partition: i32,
) -> OutgoingRecord {
    let failure = DlqFailure {
        reason,
        error_class: error_class.into(),
        error_message: format!("{error_class} happened"),
        attempts: 3,
        original_topic: original.topic.clone(),
        original_partition,
        original_offset,
        original_timestamp_ms: Some(1_795_000_000_000),
        first_failure_at: datetime!(2026-11-27 10:00 UTC),
        last_failure_at: datetime!(2026-11-27 10:01 UTC),
        worker_id: "worker-test".into(),
    };
    OutgoingRecord {
        topic: layout.dlq(),
        key: original.key.clone(),
        value: original.value.clone(),
        headers: dlq::dlq_headers(&original.headers, &failure),
        partition: Some(dlq_partition),
    }
}

/// Headers without the `writ.replay.*` lineage.
pub fn without_lineage(h: &Headers) -> Headers {
    let mut h = h.clone();
    h.remove_where(|n| n.starts_with(dlq::REPLAY_PREFIX));
    h
}
