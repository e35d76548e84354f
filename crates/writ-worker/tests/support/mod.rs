//! Shared fixtures for the worker's end-to-end tests: a domain's topics on
//! the test broker, a PostgreSQL master with a history trigger that proves
//! exactly-once effect independently of writ's inbox, command producers and
//! a status/DLQ reader.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use writ_codec::{PayloadCodec, SchemaCatalog};
use writ_core::{CommandEnvelope, ContentType, StatusEvent, TopicLayout};
use writ_kafka::{ConsumedRecord, KafkaSettings, OutgoingRecord, RecordProducer};
use writ_testkit::{TestKafka, TestPostgres};

/// The example master (customers + trigger-filled history), shared by all tests.
pub const MASTER_DDL: &str = writ_testkit::CUSTOMERS_MASTER_DDL;

/// One test's world: topics, master database, clients.
pub struct Stack {
    pub kafka: TestKafka,
    pub pg: TestPostgres,
    pub layout: TopicLayout,
    pub settings: KafkaSettings,
    pub producer: RecordProducer,
    pub codec: PayloadCodec,
}

impl Stack {
    /// Creates topics and the master schema; None when PostgreSQL is unavailable.
    pub async fn new(prefix: &str, partitions: i32) -> Option<Stack> {
        writ_testkit::init_tracing();
        let pg = writ_testkit::postgres().await?;
        let kafka = writ_testkit::kafka().await;
        let layout = TopicLayout::new(&writ_testkit::unique_name(prefix)).unwrap();
        let settings =
            KafkaSettings::new(kafka.bootstrap_servers()).with("session.timeout.ms", "6000");
        if kafka.is_mock() {
            for t in [
                layout.commands(),
                layout.bulk(),
                layout.status(),
                layout.dlq(),
            ] {
                kafka.create_mock_topic(&t, partitions).unwrap();
            }
        } else {
            let admin = writ_kafka::TopicAdmin::new(&settings).unwrap();
            let specs = layout.specs(&writ_core::topics::TopicSettings {
                partitions,
                status_partitions: partitions,
                ..Default::default()
            });
            admin.ensure_topics(&specs).await.unwrap();
        }
        sqlx::raw_sql(MASTER_DDL).execute(pg.pool()).await.unwrap();
        let producer = RecordProducer::new(&settings).unwrap();
        let codec = PayloadCodec::new(SchemaCatalog::builtin(), None).unwrap();
        Some(Stack {
            kafka,
            pg,
            layout,
            settings,
            producer,
            codec,
        })
    }

    pub fn pool(&self) -> &PgPool {
        self.pg.pool()
    }

    /// Worker configuration (TOML) for this stack.
    pub fn worker_toml(&self, profile: &str, extra: &str) -> String {
        writ_testkit::customers_worker_toml(
            self.layout.domain(),
            profile,
            self.kafka.bootstrap_servers(),
            self.pg.url(),
            extra,
        )
    }

    /// Writes the worker config to a temp file (for subprocess workers).
    pub fn worker_config_file(&self, profile: &str, extra: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::io::Write::write_all(&mut f, self.worker_toml(profile, extra).as_bytes()).unwrap();
        f
    }

    /// An upsert command record (JSON payload).
    pub fn upsert(&self, id: &str, customer: &str, seq: i64, name: &str) -> OutgoingRecord {
        let payload = serde_json::json!({
            "customer_id": customer, "name": name, "email": format!("{customer}@example.com"), "seq": seq
        });
        self.command(id, "customer.upsert.v1", customer, &payload, None)
    }

    /// Any JSON command record.
    pub fn command(
        &self,
        id: &str,
        command_type: &str,
        subject: &str,
        payload: &Value,
        expected_version: Option<i64>,
    ) -> OutgoingRecord {
        let mut e =
            CommandEnvelope::new(id, "/tenants/acme/tests", command_type, ContentType::Json)
                .with_subject(subject);
        e.expected_version = expected_version;
        OutgoingRecord::command(
            self.layout.commands(),
            &e,
            serde_json::to_vec(payload).unwrap(),
        )
    }

    /// Starts an interactive worker in-process on this stack (`extra`: more
    /// top-level TOML); stop it with [`stop_worker`].
    pub async fn start_worker(
        &self,
        extra: &str,
    ) -> (
        tokio_util::sync::CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    ) {
        let config =
            writ_worker::WorkerConfig::from_toml(&self.worker_toml("interactive", extra)).unwrap();
        let worker = writ_worker::Worker::connect(config).await.unwrap();
        let token = tokio_util::sync::CancellationToken::new();
        let handle = tokio::spawn(worker.run(token.clone()));
        (token, handle)
    }

    /// Produces records and waits for all acknowledgements.
    pub async fn produce(&self, records: &[OutgoingRecord]) {
        for chunk in records.chunks(5000) {
            for r in self.producer.send_all(chunk).await {
                r.expect("produce");
            }
        }
    }

    /// Reads every record of a topic currently present (from the beginning):
    /// polls until the topic has been quiet for a moment. (High watermarks are
    /// not used: tansu reports them per produce batch, not per record.)
    pub fn read_topic(&self, topic: &str) -> Vec<ConsumedRecord> {
        writ_kafka::snapshot::read_topic(&self.settings, topic).unwrap()
    }

    /// Rows in the master's history table: one per applied write.
    pub async fn history_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM customer_history")
            .fetch_one(self.pool())
            .await
            .unwrap()
    }

    /// Polls until the history holds `at_least` rows; panics after `timeout`.
    pub async fn wait_history(&self, at_least: i64, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let applied = self.history_count().await;
            if applied >= at_least {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "stalled at {applied} of {at_least} applied after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// All status events so far, decoded.
    pub async fn statuses(&self) -> Vec<StatusEvent> {
        let mut out = Vec::new();
        for r in self.read_topic(&self.layout.status()) {
            let ct = r
                .headers
                .get_str("content-type")
                .unwrap_or("application/avro")
                .to_owned();
            out.push(
                self.codec
                    .decode_status(&ct, r.value.as_deref().unwrap())
                    .await
                    .unwrap(),
            );
        }
        out
    }

    /// Polls until `count` status events exist (or panics after `timeout`).
    pub async fn wait_statuses(&self, count: usize, timeout: Duration) -> Vec<StatusEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s = self.statuses().await;
            if s.len() >= count {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {count} status events after {timeout:?}",
                s.len()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// The compiled worker binary.
pub fn worker_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_writ-worker"))
}

/// Cancels a worker started by [`Stack::start_worker`] and returns how it
/// ended; panics unless it drains within 20 s.
pub async fn stop_worker(
    token: tokio_util::sync::CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    writ_testkit::cancel_and_join(&token, handle, Duration::from_secs(20)).await
}
