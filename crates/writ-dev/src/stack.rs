//! The dev stack: every writ component in one process.
//!
//! Each component is started from the same TOML configuration its container
//! would read, so `writ dev` exercises the real code paths (config parsing
//! included); the printed configs are a starting point for a deployment.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use writ_core::TopicLayout;

use crate::mock::{EmbeddedBroker, MockTopic};

/// The example domain every dev component serves.
pub const DOMAIN: &str = "customers";

/// The example master table, in SQLite's dialect (`deploy/config/master.sql` is PostgreSQL's).
pub const MASTER_DDL: &str = "CREATE TABLE IF NOT EXISTS customers (\
    customer_id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL, phone TEXT, \
    tier TEXT, city TEXT, seq INTEGER, version INTEGER NOT NULL DEFAULT 0)";

/// Where and how the dev stack listens.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// Directory for the SQLite files (master, status view, drafts, edge store).
    pub data_dir: PathBuf,
    /// Address every HTTP service binds.
    pub host: IpAddr,
    /// Ingress port (CP-1..CP-4).
    pub ingress_port: u16,
    /// Edge port (CP-5, CP-6).
    pub edge_port: u16,
    /// Metrics/health port of the interactive worker; the bulk worker uses the next one.
    pub worker_port: u16,
    /// Partitions per command topic.
    pub partitions: i32,
}

impl Default for DevOptions {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(".writ-dev"),
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ingress_port: 8080,
            edge_port: 8090,
            worker_port: 9464,
            partitions: 3,
        }
    }
}

/// The TOML configurations of the stack's components.
#[derive(Debug, Clone)]
pub struct DevConfigs {
    /// The interactive worker (`<domain>.commands`).
    pub worker_interactive: String,
    /// The bulk worker (`<domain>.bulk`).
    pub worker_bulk: String,
    /// The ingress.
    pub ingress: String,
    /// The edge service.
    pub edge: String,
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

/// The master mapping shared by the workers and the edge (read-only use there).
fn master_section(master_url: &str) -> String {
    format!(
        r#"[master]
kind = "sqlite"
url = "{master_url}"
max_connections = 1

[master.types."customer.upsert.v1"]
table = "customers"
mode = "upsert"
key_columns = ["customer_id"]
columns = {{ customer_id = "customer_id", name = "name", email = "email", phone = "phone", tier = "tier", city = "address.city", seq = "seq" }}
version_column = "version"
canonical_id_column = "customer_id"

[master.types."customer.delete.v1"]
table = "customers"
mode = "delete"
key_columns = ["customer_id"]
columns = {{ customer_id = "customer_id" }}
version_column = "version"
"#
    )
}

impl DevConfigs {
    /// The configurations for `options` and a broker at `bootstrap`.
    pub fn new(options: &DevOptions, bootstrap: &str) -> Self {
        let data = &options.data_dir;
        let master = master_section(&sqlite_url(&data.join("master.db")));
        let host = options.host;
        let kafka = format!("[kafka]\nbootstrap_servers = \"{bootstrap}\"\n");
        let worker = |profile: &str, port: u16| {
            format!(
                r#"domain = "{DOMAIN}"
profile = "{profile}"
worker_id = "dev-{profile}"
listen = "{host}:{port}"
drain_timeout_ms = 3000
status_format = "avro"

{kafka}
[log]
format = "human"
filter = "info"

{master}"#
            )
        };
        let ingress = format!(
            r#"listen = "{host}:{port}"
payload_format = "avro"
status_format = "avro"

{kafka}
[store]
path = "{status_db}"

[drafts]
store_url = "{drafts_db}"

[log]
format = "human"
filter = "info"

# Local development only: requests without an API key act for tenant "dev".
[auth]
anonymous_tenant = "dev"

[types."customer.upsert.v1"]
domain = "{DOMAIN}"
entity_key = "customer_id"

[types."customer.delete.v1"]
domain = "{DOMAIN}"
entity_key = "customer_id"
"#,
            port = options.ingress_port,
            status_db = data.join("ingress-status.db").display(),
            drafts_db = sqlite_url(&data.join("drafts.db")),
        );
        let edge = format!(
            r#"domain = "{DOMAIN}"
listen = "{host}:{port}"
command_format = "json"

{kafka}
[store]
url = "{edge_db}"

[relay]
poll_interval_ms = 100

[log]
format = "human"
filter = "info"

[auth]
anonymous_tenant = "dev"

{master}
# CP-5: every write is sent at once.
[collections.customers]
command_type = "customer.upsert.v1"
key_field = "customer_id"
versioned = true
conflict = "master-wins"

# CP-6: a partial local copy, synced in windows of 2 s or 20 changes.
[collections.field_customers]
command_type = "customer.upsert.v1"
key_field = "customer_id"
versioned = true
projection = ["customer_id", "name", "tier"]
conflict = "manual"

[collections.field_customers.sync]
interval_ms = 2000
max_pending = 20
"#,
            port = options.edge_port,
            edge_db = sqlite_url(&data.join("edge.db")),
        );
        Self {
            worker_interactive: worker("interactive", options.worker_port),
            // Port 0 (tests) lets the OS pick for both workers.
            worker_bulk: worker(
                "bulk",
                options
                    .worker_port
                    .saturating_add(u16::from(options.worker_port != 0)),
            ),
            ingress,
            edge,
        }
    }
}

/// A started dev stack.
pub struct DevStack {
    broker: EmbeddedBroker,
    ingress_url: String,
    edge_url: String,
    tasks: JoinSet<anyhow::Result<()>>,
    shutdown: CancellationToken,
}

impl DevStack {
    /// Starts the broker, creates the topics and the master table, and starts
    /// every component; returns once all of them accept requests.
    pub async fn start(options: DevOptions) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&options.data_dir)
            .with_context(|| format!("creating {}", options.data_dir.display()))?;
        let layout = TopicLayout::new(DOMAIN)?;
        let topics = [
            layout.commands(),
            layout.bulk(),
            layout.status(),
            layout.dlq(),
        ]
        .into_iter()
        .map(|name| MockTopic {
            name,
            partitions: options.partitions,
        })
        .collect();
        let broker = EmbeddedBroker::start(1, topics)?;
        let configs = DevConfigs::new(&options, broker.bootstrap_servers());

        let master_url = sqlite_url(&options.data_dir.join("master.db"));
        let master = sqlx::SqlitePool::connect(&master_url)
            .await
            .with_context(|| format!("opening the dev master {master_url}"))?;
        sqlx::query(MASTER_DDL)
            .execute(&master)
            .await
            .context("creating the master table")?;
        master.close().await;

        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for (name, toml) in [
            ("interactive worker", &configs.worker_interactive),
            ("bulk worker", &configs.worker_bulk),
        ] {
            let config = writ_worker::config::WorkerConfig::from_toml(toml)
                .with_context(|| format!("{name} configuration"))?;
            let worker = writ_worker::runtime::Worker::connect(config)
                .await
                .with_context(|| format!("starting the {name}"))?;
            let stop = shutdown.clone();
            tasks.spawn(async move { worker.run(stop).await.context(name) });
        }
        let ingress_config = writ_ingress::IngressConfig::from_toml(&configs.ingress)
            .context("ingress configuration")?;
        let ingress = writ_ingress::Ingress::start(ingress_config)
            .await
            .context("starting the ingress")?;
        let ingress_addr = ingress.local_addr()?;
        let stop = shutdown.clone();
        tasks.spawn(async move { ingress.run(stop).await.context("ingress") });

        let edge_config =
            writ_edge::EdgeConfig::from_toml(&configs.edge).context("edge configuration")?;
        let edge = writ_edge::Edge::connect(edge_config)
            .await
            .context("starting the edge service")?;
        let edge_addr = edge.local_addr()?;
        let stop = shutdown.clone();
        tasks.spawn(async move { edge.run(stop).await.context("edge") });

        let stack = Self {
            broker,
            ingress_url: url(ingress_addr),
            edge_url: url(edge_addr),
            tasks,
            shutdown,
        };
        stack.wait_ready(Duration::from_secs(30)).await?;
        Ok(stack)
    }

    async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + timeout;
        for base in [&self.ingress_url, &self.edge_url] {
            loop {
                let ready = client
                    .get(format!("{base}/readyz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ready {
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    anyhow::bail!("{base} did not become ready within {timeout:?}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Base URL of the ingress.
    pub fn ingress_url(&self) -> &str {
        &self.ingress_url
    }

    /// Base URL of the edge service.
    pub fn edge_url(&self) -> &str {
        &self.edge_url
    }

    /// `bootstrap.servers` of the embedded broker (for `writ tail`, raw producers).
    pub fn bootstrap_servers(&self) -> &str {
        self.broker.bootstrap_servers()
    }

    /// Runs until `stop` fires or a component fails, then stops every component.
    pub async fn run(mut self, stop: CancellationToken) -> anyhow::Result<()> {
        let failed = tokio::select! {
            _ = stop.cancelled() => None,
            done = self.tasks.join_next() => Some(match done {
                Some(Ok(Ok(()))) | None => anyhow::anyhow!("a component stopped unexpectedly"),
                Some(Ok(Err(e))) => e,
                Some(Err(e)) => anyhow::anyhow!("a component panicked: {e}"),
            }),
        };
        self.shutdown.cancel();
        let mut errors = Vec::new();
        while let Some(done) = self.tasks.join_next().await {
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(format!("{e:#}")),
                Err(e) => errors.push(format!("a component panicked: {e}")),
            }
        }
        drop(self.broker);
        match failed {
            Some(e) => Err(e),
            None if errors.is_empty() => Ok(()),
            None => anyhow::bail!("stopping: {}", errors.join("; ")),
        }
    }
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}
