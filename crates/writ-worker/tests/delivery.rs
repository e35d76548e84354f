//! What the worker promises about delivery, on the embedded mock cluster with
//! a master of the test's own:
//!
//! - A command dead-lettered because the master stayed unreachable has no
//!   inbox record. Were a later command of the same entity applied before the
//!   dead letter's offset is committed, a crash would redeliver the dead-lettered
//!   one and a recovered master would apply it *after* its successor. So the
//!   worker commits past such a batch before applying the next one (proved with
//!   broker latency, so an unguarded worker would apply first, and a master that
//!   looks at the group's committed offset at the moment it applies).
//! - Dead letters are acknowledged before the statuses announcing them, and a
//!   delivery that fails stops the worker at once (not when the next batch
//!   arrives), offsets uncommitted.
//! - Offsets of applied batches are committed every `commit_interval_ms`
//!   (also when no further batch comes) and at once at shutdown.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use writ_core::dlq::{self, DlqReason};
use writ_core::{CommandEnvelope, ContentType, TopicLayout};
use writ_kafka::{ConsumedRecord, KafkaSettings, OutgoingRecord, RecordProducer};
use writ_store::{ApplyResult, Command, Master, MasterError, Outcome};
use writ_testkit::TestKafka;
use writ_worker::{Worker, WorkerConfig};

/// Refuses (retryably) every batch holding `down_for`; for any other command,
/// records the group's committed offset of partition 0 when it is applied.
struct ProbingMaster {
    down_for: String,
    probe: BaseConsumer,
    topic: String,
    applied: Mutex<Vec<(String, Option<i64>)>>,
}

#[async_trait]
impl Master for ProbingMaster {
    fn kind(&self) -> &'static str {
        "probe"
    }

    fn handles(&self, _command_type: &str) -> bool {
        true
    }

    async fn apply(&self, batch: &[Command]) -> Result<Vec<ApplyResult>, MasterError> {
        if batch.iter().any(|c| c.envelope.id == self.down_for) {
            return Err(MasterError::Unavailable {
                message: "connection refused".into(),
                retry_after: None,
            });
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, 0);
        let committed = self
            .probe
            .committed_offsets(tpl, Duration::from_secs(10))
            .expect("offset fetch")
            .find_partition(&self.topic, 0)
            .and_then(|p| match p.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
        let mut applied = self.applied.lock().unwrap();
        Ok(batch
            .iter()
            .map(|c| {
                applied.push((c.envelope.id.clone(), committed));
                ApplyResult {
                    outcome: Outcome::Applied {
                        canonical_id: c.envelope.subject.clone(),
                        version: Some(1),
                    },
                    duplicate: false,
                    recorded_at: OffsetDateTime::now_utc(),
                }
            })
            .collect())
    }

    async fn read(
        &self,
        _command_type: &str,
        _entity_key: &str,
    ) -> Result<Option<(serde_json::Value, Option<i64>)>, MasterError> {
        Ok(None)
    }

    async fn expire_inbox(&self, _older_than: OffsetDateTime) -> Result<u64, MasterError> {
        Ok(0)
    }
}

fn upsert(layout: &TopicLayout, id: &str, seq: i64) -> OutgoingRecord {
    let envelope = CommandEnvelope::new(
        id,
        "/tenants/acme/tests",
        "customer.upsert.v1",
        ContentType::Json,
    )
    .with_subject("cust-1");
    let payload = serde_json::json!({
        "customer_id": "cust-1", "name": "Ada", "email": "ada@example.com", "seq": seq
    });
    OutgoingRecord::command(
        layout.commands(),
        &envelope,
        serde_json::to_vec(&payload).unwrap(),
    )
}

fn read_all(settings: &KafkaSettings, topic: &str) -> Vec<ConsumedRecord> {
    let consumer: BaseConsumer = settings.reader_config().unwrap().create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push(ConsumedRecord::from_message(&m));
        }
    }
    out
}

/// One record per batch, two quick attempts, JSON statuses.
fn worker_config(kafka: &TestKafka, layout: &TopicLayout, group: &str) -> WorkerConfig {
    worker_config_with(kafka, layout, group, "")
}

/// [`worker_config`] plus top-level `extra` settings.
fn worker_config_with(
    kafka: &TestKafka,
    layout: &TopicLayout,
    group: &str,
    extra: &str,
) -> WorkerConfig {
    WorkerConfig::from_toml(&format!(
        r#"
{extra}
domain = "{domain}"
group_id = "{group}"
listen = "127.0.0.1:0"
drain_timeout_ms = 3000
batch = {{ max_records = 1, linger_ms = 0 }}
retry = {{ max_attempts = 2, initial_backoff_ms = 10, max_backoff_ms = 20, max_elapsed_ms = 1000 }}
status_format = "json"
[kafka]
bootstrap_servers = "{bootstrap}"
properties = {{ "session.timeout.ms" = "6000" }}
[master]
kind = "sqlite"
url = "sqlite::memory:"
"#,
        domain = layout.domain(),
        bootstrap = kafka.bootstrap_servers(),
    ))
    .unwrap()
}

/// A mock cluster with the layout's command, status and DLQ topics.
fn mock_with_topics(prefix: &str) -> (TestKafka, TopicLayout, KafkaSettings) {
    writ_testkit::init_tracing();
    let kafka = writ_testkit::mock_kafka(1);
    let layout = TopicLayout::new(&writ_testkit::unique_name(prefix)).unwrap();
    for topic in [layout.commands(), layout.status(), layout.dlq()] {
        kafka.create_mock_topic(&topic, 1).unwrap();
    }
    let settings = KafkaSettings::new(kafka.bootstrap_servers());
    (kafka, layout, settings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successor_of_an_exhausted_command_applies_only_after_the_commit_past_it() {
    exhausted_then_successor(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commit_past_dead_letters_rides_out_a_rebalance() {
    // The broker refuses the first commits as a group in mid-rebalance does.
    exhausted_then_successor(3).await;
}

/// Runs "first" (dead-lettered after exhausting retries) then "second" on
/// one entity; `refused_commits` OffsetCommit requests fail with
/// REBALANCE_IN_PROGRESS first. The worker must neither apply "second"
/// before the commit past "first" nor give up on the refusals.
async fn exhausted_then_successor(refused_commits: usize) {
    let (kafka, layout, settings) = mock_with_topics("exhausted");
    let producer = RecordProducer::new(&settings).unwrap();
    // The command the master cannot take, then its entity's next command.
    for r in producer
        .send_all(&[upsert(&layout, "first", 1), upsert(&layout, "second", 2)])
        .await
    {
        r.unwrap();
    }

    let group = writ_testkit::unique_name("exhausted-group");
    let config = worker_config(&kafka, &layout, &group);
    let probe: BaseConsumer = settings
        .reader_config()
        .unwrap()
        .set("group.id", &group)
        .create()
        .unwrap();
    let master = Arc::new(ProbingMaster {
        down_for: "first".into(),
        probe,
        topic: layout.commands(),
        applied: Mutex::new(Vec::new()),
    });
    // Every round trip now takes 150 ms: status and dead-letter acks and the
    // commit are slow, so a worker that does not wait for the commit applies
    // the successor long before the commit lands.
    kafka
        .broker_round_trip_time(1, Duration::from_millis(150))
        .unwrap();
    if refused_commits > 0 {
        kafka
            .with_mock(move |m| {
                m.request_errors(
                    rdkafka::types::RDKafkaApiKey::OffsetCommit,
                    &vec![
                        rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS;
                        refused_commits
                    ],
                )
            })
            .unwrap();
    }

    let worker = Worker::with_master(config, master.clone()).await.unwrap();
    let stop = CancellationToken::new();
    let handle = tokio::spawn(worker.run(stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while master.applied.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the successor was never applied");
        if handle.is_finished() {
            panic!("the worker stopped: {:?}", handle.await);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    writ_testkit::cancel_and_join(&stop, handle, Duration::from_secs(30))
        .await
        .unwrap();

    let applied = master.applied.lock().unwrap().clone();
    assert_eq!(
        applied,
        vec![("second".to_owned(), Some(1))],
        "the successor must see the group committed past the dead letter (offset 1) when it applies"
    );
    let dead = read_all(&settings, &layout.dlq());
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].headers.get_str("ce_id"), Some("first"));
    assert_eq!(
        dead[0].headers.get_str(dlq::REASON),
        Some(DlqReason::RetriesExhausted.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_that_cannot_be_written_is_never_announced_and_stops_the_worker() {
    let (kafka, layout, settings) = mock_with_topics("undeliverable");
    // Every produce to the DLQ is refused (permanently) from now on.
    let dlq = layout.dlq();
    kafka
        .with_mock(move |m| {
            m.topic_error(
                &dlq,
                rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
            )
        })
        .unwrap()
        .unwrap();
    let mut poison = upsert(&layout, "poison", 1);
    poison.value = Some(b"{not json".to_vec());
    let producer = RecordProducer::new(&settings).unwrap();
    for r in producer.send_all(&[poison]).await {
        r.unwrap();
    }

    let group = writ_testkit::unique_name("undeliverable-group");
    let master = writ_store::connect(&worker_config(&kafka, &layout, &group).master)
        .await
        .unwrap();
    let worker = Worker::with_master(worker_config(&kafka, &layout, &group), master)
        .await
        .unwrap();
    let stop = CancellationToken::new();
    // Never cancelled: the worker must stop by itself.
    let ended = tokio::time::timeout(Duration::from_secs(30), worker.run(stop.clone()))
        .await
        .expect("a worker whose delivery failed stops without waiting for more records");
    let err = format!("{:#}", ended.expect_err("a failed delivery is an error"));
    assert!(err.contains("dead letters"), "{err}");
    assert!(
        read_all(&settings, &layout.status()).is_empty(),
        "no DEAD_LETTERED status may announce a dead letter that was never written"
    );
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&layout.commands(), 0);
    let probe: BaseConsumer = settings
        .reader_config()
        .unwrap()
        .set("group.id", &group)
        .create()
        .unwrap();
    let committed = probe
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    assert!(
        !matches!(
            committed.find_partition(&layout.commands(), 0).unwrap().offset(),
            Offset::Offset(o) if o > 0
        ),
        "the poison record's offset stays uncommitted"
    );
}

/// The committed offset of partition 0 of `topic` for `group`, if any.
fn committed(settings: &KafkaSettings, group: &str, topic: &str) -> Option<i64> {
    let probe: BaseConsumer = settings
        .reader_config()
        .unwrap()
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    match probe
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap()
        .find_partition(topic, 0)
        .unwrap()
        .offset()
    {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_committed_on_the_interval_when_idle_and_at_shutdown() {
    let (kafka, layout, settings) = mock_with_topics("interval");
    let group = writ_testkit::unique_name("interval-group");
    let config = worker_config_with(&kafka, &layout, &group, "commit_interval_ms = 4000");
    let master = Arc::new(ProbingMaster {
        down_for: "never".into(),
        probe: settings.reader_config().unwrap().create().unwrap(),
        topic: layout.commands(),
        applied: Mutex::new(Vec::new()),
    });
    let worker = Worker::with_master(config, master.clone()).await.unwrap();
    let stop = CancellationToken::new();
    let handle = tokio::spawn(worker.run(stop.clone()));
    let producer = RecordProducer::new(&settings).unwrap();
    // Produces command number `n` and waits until the master applied it.
    let apply = |id: &'static str, n: usize| {
        let (producer, master, record) = (&producer, master.clone(), upsert(&layout, id, n as i64));
        async move {
            producer.send_all(&[record]).await[0].as_ref().unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            while master.applied.lock().unwrap().len() < n {
                assert!(Instant::now() < deadline, "{id} was never applied");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    apply("one", 1).await;
    let topic = layout.commands();
    assert_eq!(
        committed(&settings, &group, &topic),
        None,
        "applied, but its offset waits for the interval"
    );
    // No further batch arrives: the interval alone commits it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while committed(&settings, &group, &topic) != Some(1) {
        assert!(Instant::now() < deadline, "the idle worker never committed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    apply("two", 2).await;
    writ_testkit::cancel_and_join(&stop, handle, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        committed(&settings, &group, &topic),
        Some(2),
        "shutdown commits what was applied, without waiting for the interval"
    );
}
