//! One run's world: a unique domain's topics on the broker, a fresh master
//! database, the configuration files of the worker and ingress processes,
//! and the processes themselves. Shared by the chaos run and the soak.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use writ_core::topics::TopicSettings;
use writ_core::TopicLayout;
use writ_kafka::{KafkaSettings, RecordProducer, TopicAdmin};

use crate::binaries::Binaries;
use crate::error::ChaosError;
use crate::master::Master;
use crate::plan::COMMAND_TYPE;
use crate::procs::{Proc, Role};

/// Where the services are and how the processes are tuned.
#[derive(Debug, Clone)]
pub struct WorldConfig {
    /// Kafka bootstrap servers.
    pub kafka: String,
    /// PostgreSQL URL of a server where databases can be created.
    pub postgres: String,
    /// Partitions of the command and bulk topics.
    pub partitions: i32,
    /// `retry.max_attempts` of the workers (small: some commands exhaust it).
    pub max_attempts: u32,
    /// `retry.max_elapsed_ms` of the workers.
    pub max_elapsed_ms: u64,
    /// Where the binaries are (None: next to this executable).
    pub bin_dir: Option<PathBuf>,
    /// Keep the run directory (configs and process logs) afterwards (always kept when a check fails).
    pub keep_logs: bool,
}

/// Topics, master, configs and processes of one run.
pub struct World {
    /// The domain's topics.
    pub layout: TopicLayout,
    /// Client settings for the harness' own clients.
    pub settings: KafkaSettings,
    /// The harness' producer.
    pub producer: RecordProducer,
    /// The master database.
    pub master: Master,
    /// Binaries spawned.
    pub binaries: Binaries,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT` of the ingress.
    pub ingress_base: String,
    /// The ingress' API key.
    pub api_key: String,
    /// Interactive workers.
    pub workers: Vec<Proc>,
    /// The bulk worker.
    pub bulk_worker: Option<Proc>,
    /// The ingress.
    pub ingress: Option<Proc>,
    worker_config: PathBuf,
    bulk_config: PathBuf,
    ingress_config: PathBuf,
    /// Processes that exited without being killed by the harness.
    pub unexpected_exits: Vec<String>,
}

/// A name unique enough for a topic prefix and a database.
pub fn unique_name(prefix: &str) -> String {
    let u = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}_{}", &u[..10])
}

impl World {
    /// Creates topics, the master database and the process configs.
    pub async fn create(c: &WorldConfig, prefix: &str) -> Result<Self, ChaosError> {
        let binaries = Binaries::locate(c.bin_dir.as_deref())?;
        let name = unique_name(prefix);
        let layout = TopicLayout::new(&name).map_err(|e| ChaosError::Config(e.to_string()))?;
        let settings = KafkaSettings::new(&c.kafka).with("session.timeout.ms", "6000");
        let admin = TopicAdmin::new(&settings)?;
        admin
            .ensure_topics(&layout.specs(&TopicSettings {
                partitions: c.partitions,
                status_partitions: c.partitions,
                ..TopicSettings::default()
            }))
            .await?;
        let master = Master::create(&c.postgres, &name).await?;
        let producer = RecordProducer::new(&settings)?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir()
            .map_err(|e| ChaosError::io("creating the run directory", e))?;
        let port = free_port()?;
        let api_key = format!("chaos-{}", uuid::Uuid::new_v4().simple());
        let write = |file: &str, text: String| -> Result<PathBuf, ChaosError> {
            let p = dir.path().join(file);
            std::fs::write(&p, text)
                .map_err(|e| ChaosError::io(format!("writing {}", p.display()), e))?;
            Ok(p)
        };
        let worker_config = write(
            "worker.toml",
            worker_toml(c, &layout, master.url(), "interactive"),
        )?;
        let bulk_config = write("bulk.toml", worker_toml(c, &layout, master.url(), "bulk"))?;
        let ingress_config = write(
            "ingress.toml",
            ingress_toml(
                c,
                &layout,
                port,
                &writ_http::hash_api_key(&api_key),
                dir.path(),
            ),
        )?;
        Ok(Self {
            layout,
            settings,
            producer,
            master,
            binaries,
            dir,
            ingress_base: format!("http://127.0.0.1:{port}"),
            api_key,
            workers: Vec::new(),
            bulk_worker: None,
            ingress: None,
            worker_config,
            bulk_config,
            ingress_config,
            unexpected_exits: Vec::new(),
        })
    }

    /// Starts one more interactive worker (same consumer group).
    pub fn add_worker(&mut self) -> Result<(), ChaosError> {
        let name = format!("worker-{}", self.workers.len() + 1);
        let p = Proc::spawn(
            &name,
            Role::Worker,
            &self.binaries.worker,
            &self.worker_config,
            self.dir.path(),
        )?;
        self.workers.push(p);
        Ok(())
    }

    /// Starts the bulk worker.
    pub fn start_bulk_worker(&mut self) -> Result<(), ChaosError> {
        self.bulk_worker = Some(Proc::spawn(
            "bulk-worker",
            Role::BulkWorker,
            &self.binaries.worker,
            &self.bulk_config,
            self.dir.path(),
        )?);
        Ok(())
    }

    /// Starts the ingress and waits until it answers `/readyz`.
    pub async fn start_ingress(&mut self, timeout: Duration) -> Result<(), ChaosError> {
        self.ingress = Some(Proc::spawn(
            "ingress",
            Role::Ingress,
            &self.binaries.ingress,
            &self.ingress_config,
            self.dir.path(),
        )?);
        self.wait_ingress_ready(timeout).await
    }

    /// Polls `/readyz` until `200`; fails with the log tail if the process exits or the time runs out.
    pub async fn wait_ingress_ready(&mut self, timeout: Duration) -> Result<(), ChaosError> {
        let http = reqwest::Client::new();
        let url = format!("{}/readyz", self.ingress_base);
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = http.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            let p = self
                .ingress
                .as_mut()
                .ok_or_else(|| ChaosError::Process("no ingress".into()))?;
            if let Some(status) = p.exited() {
                return Err(ChaosError::Process(format!(
                    "writ-ingress exited ({status}) before it was ready:\n{}",
                    p.log_tail(20)
                )));
            }
            if Instant::now() > deadline {
                return Err(ChaosError::Process(format!(
                    "writ-ingress not ready after {timeout:?}:\n{}",
                    p.log_tail(20)
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every process, for sampling and checks.
    pub fn procs(&self) -> impl Iterator<Item = &Proc> {
        self.workers
            .iter()
            .chain(self.bulk_worker.iter())
            .chain(self.ingress.iter())
    }

    /// Restarts any process that exited on its own, remembering that it did.
    pub async fn reap_unexpected(&mut self) -> Result<(), ChaosError> {
        let procs = self
            .workers
            .iter_mut()
            .chain(self.bulk_worker.iter_mut())
            .chain(self.ingress.iter_mut());
        for p in procs {
            if let Some(status) = p.exited() {
                self.unexpected_exits.push(format!(
                    "{} exited on its own ({status}): {}",
                    p.name,
                    p.log_tail(5)
                ));
                p.kill_and_restart().await?;
            }
        }
        Ok(())
    }

    /// Stops every process with SIGTERM; returns those that did not exit 0.
    pub async fn stop_all(&mut self) -> Result<Vec<String>, ChaosError> {
        let mut unclean = Vec::new();
        let procs = self
            .workers
            .iter_mut()
            .chain(self.bulk_worker.iter_mut())
            .chain(self.ingress.iter_mut());
        for p in procs {
            if !p.terminate(Duration::from_secs(15)).await? {
                unclean.push(p.name.clone());
            }
        }
        Ok(unclean)
    }

    /// Keeps the run directory (configs, process logs) after the run, and says where.
    pub fn keep_dir_if(&mut self, keep: bool) {
        if keep {
            self.dir.disable_cleanup(true);
            eprintln!(
                "configs and process logs kept in {}",
                self.dir.path().display()
            );
        }
    }

    /// The run directory (configs, process logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Which of the `lost` commands the broker never delivered to a worker
    /// (from the processes' gap logs and the command topics).
    pub async fn explain_losses(
        &self,
        lost: &[(String, i64)],
    ) -> Result<crate::gaps::LossEvidence, ChaosError> {
        crate::gaps::explain(
            &self.settings,
            self.dir(),
            &[self.layout.commands(), self.layout.bulk()],
            lost,
        )
        .await
    }
}

/// A worker's TOML configuration.
pub fn worker_toml(
    c: &WorldConfig,
    layout: &TopicLayout,
    master_url: &str,
    profile: &str,
) -> String {
    format!(
        r#"domain = "{domain}"
profile = "{profile}"
listen = "127.0.0.1:0"
drain_timeout_ms = 4000
status_format = "json"

[kafka]
bootstrap_servers = "{bootstrap}"
properties = {{ "session.timeout.ms" = "6000" }}

[retry]
max_attempts = {attempts}
initial_backoff_ms = 20
max_backoff_ms = 200
max_elapsed_ms = {elapsed}

[master]
kind = "postgres"
url = "{master_url}"
max_connections = 4

[master.types."{COMMAND_TYPE}"]
table = "customers"
mode = "upsert"
key_columns = ["customer_id"]
columns = {{ customer_id = "customer_id", name = "name", email = "email", tier = "tier", seq = "seq" }}
version_column = "version"
canonical_id_column = "customer_id"
"#,
        domain = layout.domain(),
        bootstrap = c.kafka,
        attempts = c.max_attempts,
        elapsed = c.max_elapsed_ms,
    )
}

/// The ingress' TOML configuration.
pub fn ingress_toml(
    c: &WorldConfig,
    layout: &TopicLayout,
    port: u16,
    key_sha256: &str,
    dir: &Path,
) -> String {
    format!(
        r#"listen = "127.0.0.1:{port}"
payload_format = "avro"
status_format = "json"
idempotency_key_required = true

[kafka]
bootstrap_servers = "{bootstrap}"
properties = {{ "session.timeout.ms" = "6000" }}

[store]
path = "{store}"

[log]
filter = "warn"

[[auth.keys]]
sha256 = "{key_sha256}"
tenant = "chaos"

[types."{COMMAND_TYPE}"]
domain = "{domain}"
entity_key = "customer_id"
"#,
        bootstrap = c.kafka,
        store = dir.join("ingress-status.db").display(),
        domain = layout.domain(),
    )
}

/// A loopback port that was free a moment ago (the ingress binds it; restarts reuse it).
pub fn free_port() -> Result<u16, ChaosError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| ChaosError::io("finding a free port", e))?;
    Ok(l.local_addr()
        .map_err(|e| ChaosError::io("finding a free port", e))?
        .port())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> WorldConfig {
        WorldConfig {
            kafka: "127.0.0.1:9092".into(),
            postgres: "postgres://p@h/db".into(),
            partitions: 6,
            max_attempts: 3,
            max_elapsed_ms: 5000,
            bin_dir: None,
            keep_logs: false,
        }
    }

    #[test]
    fn generated_configs_name_the_domain_and_budget() {
        let l = TopicLayout::new("chaos_x").unwrap();
        let w = worker_toml(&cfg(), &l, "postgres://p@h/chaos_x", "bulk");
        assert!(w.contains("domain = \"chaos_x\"") && w.contains("profile = \"bulk\""));
        assert!(w.contains("max_attempts = 3"));
        let i = ingress_toml(&cfg(), &l, 8123, &"ab".repeat(32), Path::new("/tmp/r"));
        assert!(i.contains("127.0.0.1:8123") && i.contains("/tmp/r/ingress-status.db"));
        assert!(i.contains(&"ab".repeat(32)));
        assert_ne!(unique_name("c"), unique_name("c"));
    }
}
