//! Shared fixtures for the edge's tests: a domain's topics on the test broker,
//! a PostgreSQL master with a history trigger (the independent witness of
//! "applied exactly once"), an in-process worker and edge, an HTTP client
//! with API keys, and a topic reader. Adapted from writ-worker's test support.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use writ_core::TopicLayout;
use writ_edge::{Edge, EdgeConfig};
use writ_http::hash_api_key;
use writ_kafka::{ConsumedRecord, KafkaSettings};
use writ_testkit::{TestKafka, TestPostgres};
use writ_worker::{Worker, WorkerConfig};

/// API keys the test configs accept.
pub const ACME_KEY: &str = "acme-secret";
pub const GLOBEX_KEY: &str = "globex-secret";
pub const ALICE_KEY: &str = "acme-alice-secret";
pub const BOB_KEY: &str = "acme-bob-secret";

/// The example master (customers + trigger-filled history), shared by all tests.
pub const MASTER_DDL: &str = writ_testkit::CUSTOMERS_MASTER_DDL;

/// The `[auth]` section every test edge uses.
pub fn auth_toml() -> String {
    format!(
        r#"
[[auth.keys]]
sha256 = "{acme}"
tenant = "acme"

[[auth.keys]]
sha256 = "{globex}"
tenant = "globex"

[[auth.keys]]
sha256 = "{alice}"
tenant = "acme"
owner = "alice"

[[auth.keys]]
sha256 = "{bob}"
tenant = "acme"
owner = "bob"
"#,
        acme = hash_api_key(ACME_KEY),
        globex = hash_api_key(GLOBEX_KEY),
        alice = hash_api_key(ALICE_KEY),
        bob = hash_api_key(BOB_KEY),
    )
}

/// The master mapping (worker writes it, the edge reads it).
pub fn master_toml(url: &str) -> String {
    writ_testkit::customers_master_toml(url, 2)
}

/// The API router over an in-memory SQLite store, with no broker and no
/// master; `collections` is TOML with `[collections.<name>]` sections.
pub async fn router_for(
    collections: &str,
) -> (
    axum::Router,
    writ_edge::LocalStore,
    std::sync::Arc<tokio::sync::Notify>,
) {
    use figment::providers::Format as _;
    use std::sync::Arc;
    #[derive(serde::Deserialize)]
    struct Sections {
        #[serde(default)]
        collections: std::collections::BTreeMap<String, writ_edge::config::CollectionConfig>,
        #[serde(default)]
        auth: writ_http::AuthConfig,
    }
    let sections: Sections = figment::Figment::new()
        .merge(figment::providers::Toml::string(collections))
        .merge(figment::providers::Toml::string(&auth_toml()))
        .extract()
        .unwrap();
    let store = writ_edge::LocalStore::connect(&writ_edge::config::StoreConfig {
        url: "sqlite::memory:".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let collections = Arc::new(sections.collections);
    let wake = Arc::new(tokio::sync::Notify::new());
    let resolver = Arc::new(writ_edge::resolver::Resolver::new(
        store.clone(),
        Arc::new(writ_edge::resolver::MasterHandle::new(None)),
        collections.clone(),
        Arc::new(tokio::sync::Notify::new()),
    ));
    let app = writ_edge::api::router(
        writ_edge::api::ApiState {
            store: store.clone(),
            codec: Arc::new(
                writ_codec::PayloadCodec::new(writ_codec::SchemaCatalog::builtin(), None).unwrap(),
            ),
            collections,
            relay_wake: wake.clone(),
            resolver,
        },
        Arc::new(writ_http::ApiKeys::from_config(&sections.auth).unwrap()),
        None,
        64 * 1024,
    );
    (app, store, wake)
}

/// Creates the four topics of `layout` on `kafka`.
pub async fn create_topics(kafka: &TestKafka, settings: &KafkaSettings, layout: &TopicLayout) {
    if kafka.is_mock() {
        for t in [
            layout.commands(),
            layout.bulk(),
            layout.status(),
            layout.dlq(),
        ] {
            kafka.create_mock_topic(&t, 2).unwrap();
        }
    } else {
        let admin = writ_kafka::TopicAdmin::new(settings).unwrap();
        let specs = layout.specs(&writ_core::topics::TopicSettings {
            partitions: 2,
            status_partitions: 2,
            ..Default::default()
        });
        admin.ensure_topics(&specs).await.unwrap();
    }
}

/// Reads every record of a topic currently present (from the beginning),
/// polling until the topic has been quiet for a moment (tansu's high
/// watermarks are not reliable).
pub fn read_topic(settings: &KafkaSettings, topic: &str) -> Vec<ConsumedRecord> {
    writ_kafka::snapshot::read_topic(settings, topic).unwrap()
}

/// Which local store an edge under test uses.
pub enum LocalDb {
    /// In-memory SQLite.
    Sqlite,
    /// A fresh PostgreSQL database.
    Postgres(Box<TestPostgres>),
}

impl LocalDb {
    fn url(&self) -> String {
        match self {
            Self::Sqlite => "sqlite::memory:".to_owned(),
            Self::Postgres(pg) => pg.url().to_owned(),
        }
    }
}

/// One end-to-end world: broker, master, worker, edge.
pub struct World {
    pub kafka: TestKafka,
    pub master: TestPostgres,
    pub layout: TopicLayout,
    pub settings: KafkaSettings,
    pub edge_addr: SocketAddr,
    pub store: writ_edge::LocalStore,
    pub edge_config: EdgeConfig,
    /// The edge's configuration as TOML (for running the binary against the same stores).
    pub edge_toml: String,
    http: reqwest::Client,
    /// Keeps a PostgreSQL local store's database alive with the world.
    _local: LocalDb,
    shutdown: CancellationToken,
    edge: Option<JoinHandle<Result<(), writ_edge::EdgeError>>>,
    worker: Option<JoinHandle<anyhow::Result<()>>>,
}

impl World {
    /// Starts everything; None (with a printed reason) without PostgreSQL.
    /// `collection` is the `[collections.customers]` body.
    pub async fn start(
        prefix: &str,
        kafka: TestKafka,
        local: LocalDb,
        collection: &str,
    ) -> Option<World> {
        writ_testkit::init_tracing();
        let master = writ_testkit::postgres().await?;
        sqlx::raw_sql(MASTER_DDL)
            .execute(master.pool())
            .await
            .unwrap();
        let layout = TopicLayout::new(&writ_testkit::unique_name(prefix)).unwrap();
        let settings =
            KafkaSettings::new(kafka.bootstrap_servers()).with("session.timeout.ms", "6000");
        create_topics(&kafka, &settings, &layout).await;

        let worker_toml = writ_testkit::customers_worker_toml(
            layout.domain(),
            "interactive",
            kafka.bootstrap_servers(),
            master.url(),
            &format!(
                "group_id = \"{}\"\nstatus_format = \"avro\"",
                writ_testkit::unique_group("edge-worker")
            ),
        );
        let worker = Worker::connect(WorkerConfig::from_toml(&worker_toml).unwrap())
            .await
            .unwrap();

        let edge_toml = format!(
            r#"
domain = "{domain}"
listen = "127.0.0.1:0"
status_group_id = "{group}"

[kafka]
bootstrap_servers = "{bootstrap}"
properties = {{ "session.timeout.ms" = "6000", "message.timeout.ms" = "1500" }}

[store]
url = "{store}"

[relay]
poll_interval_ms = 100
initial_backoff_ms = 100
max_backoff_ms = 1000
conflict_retry_ms = 300
{auth}
{master}

[collections.customers]
command_type = "customer.upsert.v1"
key_field = "customer_id"
{collection}
"#,
            domain = layout.domain(),
            group = writ_testkit::unique_group("edge-status"),
            bootstrap = kafka.bootstrap_servers(),
            store = local.url(),
            auth = auth_toml(),
            master = master_toml(master.url()),
        );
        let edge_config = EdgeConfig::from_toml(&edge_toml).unwrap();
        let edge = Edge::connect(edge_config.clone()).await.unwrap();
        let edge_addr = edge.local_addr().unwrap();
        let store = edge.store().clone();
        let shutdown = CancellationToken::new();
        let worker = tokio::spawn(worker.run(shutdown.clone()));
        let edge = tokio::spawn(edge.run(shutdown.clone()));
        Some(World {
            kafka,
            master,
            layout,
            settings,
            edge_addr,
            store,
            edge_config,
            edge_toml,
            http: reqwest::Client::new(),
            _local: local,
            shutdown,
            edge: Some(edge),
            worker: Some(worker),
        })
    }

    pub fn pool(&self) -> &PgPool {
        self.master.pool()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.edge_addr)
    }

    /// Sends a request with an API key; returns (status, JSON body).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(key);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json)
    }

    /// Creates a customer record through the API; returns its temp id.
    pub async fn create(&self, customer: &str, name: &str) -> String {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/v1/records/customers",
                ACME_KEY,
                Some(&customer_json(customer, name)),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["syncState"], "PENDING", "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Reads a record through the API.
    pub async fn record(&self, id: &str) -> Value {
        let (status, body) = self
            .call(
                reqwest::Method::GET,
                &format!("/v1/records/customers/{id}"),
                ACME_KEY,
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Polls a record until `pred` holds; panics with the last state after `timeout`.
    pub async fn wait_record(
        &self,
        id: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let r = self.record(id).await;
            if pred(&r) {
                return r;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "record {id} never reached the expected state; last: {r}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Polls until every record listed by the API is SYNCED.
    pub async fn wait_all_synced(&self, count: usize, timeout: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (status, body) = self
                .call(
                    reqwest::Method::GET,
                    "/v1/records/customers?syncState=SYNCED&limit=1000",
                    ACME_KEY,
                    None,
                )
                .await;
            assert_eq!(status, 200, "{body}");
            let items = body["items"].as_array().unwrap().clone();
            if items.len() >= count {
                return items;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {count} records synced after {timeout:?}; outbox: {:?}",
                items.len(),
                self.store.outbox_states().await.unwrap()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// The master row of a customer: (name, version).
    pub async fn master_row(&self, customer: &str) -> Option<(String, i64)> {
        sqlx::query_as("SELECT name, version FROM customers WHERE customer_id = $1")
            .bind(customer)
            .fetch_optional(self.pool())
            .await
            .unwrap()
    }

    /// Writes applied to the master so far (one history row per write).
    pub async fn history_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM customer_history")
            .fetch_one(self.pool())
            .await
            .unwrap()
    }

    /// Stops the edge and the worker; both must stop cleanly.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(e) = self.edge.take() {
            e.await.unwrap().unwrap();
        }
        if let Some(w) = self.worker.take() {
            w.await.unwrap().unwrap();
        }
    }
}

/// A valid customer record.
pub fn customer_json(customer: &str, name: &str) -> Value {
    serde_json::json!({
        "customer_id": customer,
        "name": name,
        "email": format!("{customer}@example.com"),
        "phone": "+33 1 00 00 00 00",
    })
}
