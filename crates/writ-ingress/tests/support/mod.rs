//! Shared fixtures for the ingress tests: a domain's topics on the test
//! broker (or a mock cluster), ingress and worker configurations, a running
//! ingress on a loopback port, and a topic reader to prove what was (not)
//! produced.

#![allow(dead_code)]

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use writ_codec::{PayloadCodec, SchemaCatalog};
use writ_core::{StatusEvent, TopicLayout};
use writ_http::hash_api_key;
use writ_ingress::{Ingress, IngressConfig};
use writ_kafka::{ConsumedRecord, KafkaSettings};
use writ_testkit::TestKafka;

/// API key of tenant `acme` (all types).
pub const ACME: &str = "acme-test-key";
/// API key of tenant `globex` (all types).
pub const GLOBEX: &str = "globex-test-key";
/// API key of tenant `acme` limited to `customer.delete.v1`.
pub const ACME_DELETE_ONLY: &str = "acme-delete-only-key";

/// The example master (customers + trigger-filled history), shared by all tests.
pub const MASTER_DDL: &str = writ_testkit::CUSTOMERS_MASTER_DDL;

/// Topics of one test domain on one broker.
pub struct Topics {
    pub kafka: TestKafka,
    pub layout: TopicLayout,
    pub settings: KafkaSettings,
}

impl Topics {
    /// A unique domain's topics on `kafka`.
    pub async fn create(kafka: TestKafka, prefix: &str, partitions: i32) -> Topics {
        writ_testkit::init_tracing();
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
        Topics {
            kafka,
            layout,
            settings,
        }
    }

    /// Ingress configuration (TOML) for these topics.
    pub fn ingress_toml(&self, extra: &str) -> String {
        format!(
            r#"
listen = "127.0.0.1:0"
{extra}

[kafka]
bootstrap_servers = "{bootstrap}"

[limits]
body_max_bytes = 4096
produce_timeout_ms = 3000
max_wait_ms = 30000
upload_chunk_lines = 500
retry_after_seconds = 3

[[auth.keys]]
sha256 = "{acme}"
tenant = "acme"

[[auth.keys]]
sha256 = "{globex}"
tenant = "globex"

[[auth.keys]]
sha256 = "{delete_only}"
tenant = "acme"
types = ["customer.delete.v1"]

[types."customer.upsert.v1"]
domain = "{domain}"
entity_key = "customer_id"
staleness = {{ default_ms = 60000, min_ms = 1000, max_ms = 3600000 }}

[types."customer.delete.v1"]
domain = "{domain}"
entity_key = "customer_id"
"#,
            bootstrap = self.kafka.bootstrap_servers(),
            acme = hash_api_key(ACME),
            globex = hash_api_key(GLOBEX),
            delete_only = hash_api_key(ACME_DELETE_ONLY),
            domain = self.layout.domain(),
        )
    }

    /// Starts an ingress and waits until its status view caught up.
    pub async fn ingress(&self, extra: &str) -> Ingress {
        let config = IngressConfig::from_toml(&self.ingress_toml(extra)).unwrap();
        let ingress = Ingress::start(config).await.unwrap();
        assert!(
            ingress.caught_up(Duration::from_secs(30)).await,
            "status view did not catch up"
        );
        ingress
    }

    /// Reads every record of a topic currently present, from the beginning,
    /// until the topic has been quiet for a moment (tansu's high watermarks
    /// are not reliable enough to stop at).
    pub fn read_topic(&self, topic: &str) -> Vec<ConsumedRecord> {
        writ_kafka::snapshot::read_topic(&self.settings, topic).unwrap()
    }

    /// Every status event on the status topic, decoded.
    pub async fn statuses(&self) -> Vec<StatusEvent> {
        let codec = PayloadCodec::new(SchemaCatalog::builtin(), None).unwrap();
        let mut out = Vec::new();
        for r in self.read_topic(&self.layout.status()) {
            let ct = r
                .headers
                .get_str("content-type")
                .unwrap_or("application/avro")
                .to_owned();
            out.push(
                codec
                    .decode_status(&ct, r.value.as_deref().unwrap())
                    .await
                    .unwrap(),
            );
        }
        out
    }

    /// Worker configuration (TOML) for these topics and a PostgreSQL master.
    pub fn worker_toml(&self, profile: &str, pg_url: &str) -> String {
        writ_testkit::customers_worker_toml(
            self.layout.domain(),
            profile,
            self.kafka.bootstrap_servers(),
            pg_url,
            "",
        )
    }
}

/// An ingress serving on a loopback port until dropped.
pub struct Running {
    pub base: String,
    pub view: std::sync::Arc<writ_ingress::StatusView>,
    token: CancellationToken,
    handle: Option<tokio::task::JoinHandle<Result<(), writ_ingress::IngressError>>>,
}

impl Running {
    /// Serves `ingress` in the background.
    pub fn serve(ingress: Ingress) -> Running {
        let addr = ingress.local_addr().unwrap();
        let view = ingress.status_view().clone();
        let token = CancellationToken::new();
        let handle = tokio::spawn(ingress.run(token.clone()));
        Running {
            base: format!("http://{addr}"),
            view,
            token,
            handle: Some(handle),
        }
    }

    /// Stops serving and surfaces any error the ingress stopped with.
    pub async fn stop(mut self) {
        self.token.cancel();
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(20), h)
                .await
                .expect("ingress stops within 20 s")
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.token.cancel();
    }
}
