//! Worker configuration: embedded defaults, then a TOML file, then
//! `WRIT__SECTION__KEY` environment variables. Unknown keys are errors, and
//! settings that contradict each other are refused at start-up, not found out
//! in production.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use writ_core::ContentType;
use writ_kafka::{BatchLimits, KafkaSettings};
use writ_store::MasterConfig;

use crate::rate::RateSettings;
use crate::retry::RetryPolicy;

/// Which topic a worker consumes and how it batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// `<domain>.commands`: small batches, short linger (CP-1, CP-2, CP-4..6).
    #[default]
    Interactive,
    /// `<domain>.bulk`: large batches under a strict rate (CP-3).
    Bulk,
}

impl Profile {
    /// Lowercase name, used in group ids, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Interactive => "interactive",
            Self::Bulk => "bulk",
        }
    }

    fn default_limits(self) -> BatchLimits {
        match self {
            Self::Interactive => BatchLimits::INTERACTIVE,
            Self::Bulk => BatchLimits::BULK,
        }
    }
}

/// Batch bounds; unset values come from the profile.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Most records per batch.
    pub max_records: Option<usize>,
    /// Most bytes per batch.
    pub max_bytes: Option<usize>,
    /// Linger after the first record, ms.
    pub linger_ms: Option<u64>,
}

/// How status events are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusFormat {
    /// Avro (`schemas/writ/status-event.avsc`; registry framing when a registry is configured).
    #[default]
    Avro,
    /// JSON.
    Json,
}

impl StatusFormat {
    /// The content type it maps to.
    pub fn content_type(self) -> ContentType {
        match self {
            Self::Avro => ContentType::Avro,
            Self::Json => ContentType::Json,
        }
    }
}

pub use writ_config::{LogConfig, LogFormat};

/// The worker's whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// The domain whose topics are consumed, e.g. `customers`.
    pub domain: String,
    /// `interactive` or `bulk`.
    #[serde(default)]
    pub profile: Profile,
    /// Identifies this worker in DLQ headers and logs (default: host name + pid).
    #[serde(default = "default_worker_id")]
    pub worker_id: String,
    /// Consumer group (default: `writ-<domain>-<profile>`).
    #[serde(default)]
    pub group_id: Option<String>,
    /// Kafka connection.
    pub kafka: KafkaSettings,
    /// Schema Registry URL; without it, schemas come from `schemas_dir` or the built-in set.
    #[serde(default)]
    pub registry_url: Option<String>,
    /// A directory of `.avsc` files to use instead of the built-in schemas.
    #[serde(default)]
    pub schemas_dir: Option<PathBuf>,
    /// Status event encoding.
    #[serde(default)]
    pub status_format: StatusFormat,
    /// Batch bounds.
    #[serde(default)]
    pub batch: BatchConfig,
    /// Rate limit towards the master.
    #[serde(default)]
    pub rate: RateSettings,
    /// Retry policy for retryable master failures.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// How many groups of entities of one batch are applied at once, each in
    /// its own master transaction (an entity's commands share a lane, so its
    /// order holds). Default: 2, or 1 for SQLite (one writer at a time).
    #[serde(default)]
    pub apply_lanes: Option<usize>,
    /// Also dead-letter permanently rejected commands (their status is REJECTED either way).
    #[serde(default)]
    pub dead_letter_rejections: bool,
    /// Reads every partition through a queue of its own, so a batch mixes all
    /// partitions with records waiting instead of holding a run of one: fewer,
    /// wider master statements on a backlog, for more memory (see README).
    #[serde(default)]
    pub partition_queues: bool,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// How long SIGTERM or a revoke may take to finish the in-flight batch, ms.
    #[serde(default = "default_drain_ms")]
    pub drain_timeout_ms: u64,
    /// How often applied offsets are committed, ms (0: after every batch).
    /// Offsets are stored after every batch either way, and committed at once
    /// on revoke, on shutdown and past dead-lettered commands; a crash
    /// replays at most this much, which the inbox turns into no-ops.
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
    /// The dedupe window: inbox entries older than this are deleted, ms (match the status topic retention).
    #[serde(default = "default_dedupe_window_ms")]
    pub dedupe_window_ms: u64,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// The system of record.
    pub master: MasterConfig,
}

fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "writ-worker".to_owned());
    format!("{host}-{}", std::process::id())
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9464))
}

fn default_drain_ms() -> u64 {
    10_000
}

fn default_commit_interval_ms() -> u64 {
    1_000
}

fn default_dedupe_window_ms() -> u64 {
    7 * 24 * 3600 * 1000
}

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The layered sources did not form a valid configuration (all problems listed).
    #[error("invalid worker configuration:\n{0}")]
    Invalid(String),
    /// Values that contradict each other.
    #[error("inconsistent worker configuration: {0}")]
    Inconsistent(String),
}

impl WorkerConfig {
    /// Loads defaults → `file` (if given) → `WRIT__*` environment, then checks it.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let config: Self = writ_config::load(file).map_err(ConfigError::Invalid)?;
        config.check()?;
        Ok(config)
    }

    /// Parses a TOML string (tests, `writ dev`), without the environment.
    pub fn from_toml(toml: &str) -> Result<Self, ConfigError> {
        let config: Self = writ_config::from_toml(toml).map_err(ConfigError::Invalid)?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        writ_core::TopicLayout::new(&self.domain)
            .map_err(|e| ConfigError::Inconsistent(e.to_string()))?;
        self.kafka
            .validate()
            .map_err(|e| ConfigError::Inconsistent(e.to_string()))?;
        let session_ms: u64 = self
            .kafka
            .properties
            .get("session.timeout.ms")
            .map(|v| v.parse())
            .transpose()
            .map_err(|_| {
                ConfigError::Inconsistent("kafka session.timeout.ms is not a number".into())
            })?
            .unwrap_or(45_000);
        // A revoke must be answered before the group gives up on this member,
        // or the partition moves while we still apply its batch.
        if self.drain_timeout_ms >= session_ms {
            return Err(ConfigError::Inconsistent(format!(
                "drain_timeout_ms ({}) must be below kafka session.timeout.ms ({session_ms})",
                self.drain_timeout_ms
            )));
        }
        self.retry
            .validate()
            .map_err(|e| ConfigError::Inconsistent(format!("retry: {e}")))?;
        self.rate
            .validate()
            .map_err(|e| ConfigError::Inconsistent(format!("rate: {e}")))?;
        let limits = self.batch_limits();
        if limits.max_records == 0 || limits.max_bytes == 0 {
            return Err(ConfigError::Inconsistent(
                "batch.max_records and batch.max_bytes must be positive".into(),
            ));
        }
        if self.apply_lanes == Some(0) {
            return Err(ConfigError::Inconsistent(
                "apply_lanes must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// Entity groups of a batch applied concurrently (see `apply_lanes`).
    pub fn apply_lanes(&self) -> usize {
        self.apply_lanes.unwrap_or(match self.master {
            writ_store::MasterConfig::Sqlite(_) => 1,
            _ => 2,
        })
    }

    /// Batch limits: configured values over the profile's defaults.
    pub fn batch_limits(&self) -> BatchLimits {
        let d = self.profile.default_limits();
        BatchLimits {
            max_records: self.batch.max_records.unwrap_or(d.max_records),
            max_bytes: self.batch.max_bytes.unwrap_or(d.max_bytes),
            linger: self.batch.linger_ms.map_or(d.linger, Duration::from_millis),
        }
    }

    /// The consumer group: one per domain + profile, shared by all instances.
    pub fn group_id(&self) -> String {
        self.group_id
            .clone()
            .unwrap_or_else(|| format!("writ-{}-{}", self.domain, self.profile.as_str()))
    }

    /// Drain timeout as a duration.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }

    /// Commit interval as a duration.
    pub fn commit_interval(&self) -> Duration {
        Duration::from_millis(self.commit_interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        domain = "customers"
        [kafka]
        bootstrap_servers = "127.0.0.1:9092"
        [master]
        kind = "sqlite"
        url = "sqlite::memory:"
    "#;

    #[test]
    fn minimal_config_gets_profile_defaults() {
        let c = WorkerConfig::from_toml(MINIMAL).unwrap();
        assert_eq!(c.profile, Profile::Interactive);
        assert_eq!(c.group_id(), "writ-customers-interactive");
        assert_eq!(c.batch_limits(), BatchLimits::INTERACTIVE);
        let bulk = WorkerConfig::from_toml(&format!("profile = \"bulk\"\n{MINIMAL}")).unwrap();
        assert_eq!(bulk.batch_limits(), BatchLimits::BULK);
        assert_eq!(bulk.group_id(), "writ-customers-bulk");
    }

    #[test]
    fn apply_lanes_default_by_master_and_zero_is_refused() {
        assert_eq!(WorkerConfig::from_toml(MINIMAL).unwrap().apply_lanes(), 1);
        let pg = MINIMAL.replace(
            "kind = \"sqlite\"\n        url = \"sqlite::memory:\"",
            "kind = \"postgres\"\n        url = \"postgres://h/db\"",
        );
        assert_eq!(WorkerConfig::from_toml(&pg).unwrap().apply_lanes(), 2);
        let four = WorkerConfig::from_toml(&format!("apply_lanes = 4\n{pg}")).unwrap();
        assert_eq!(four.apply_lanes(), 4);
        let err = WorkerConfig::from_toml(&format!("apply_lanes = 0\n{MINIMAL}")).unwrap_err();
        assert!(err.to_string().contains("apply_lanes"), "{err}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = WorkerConfig::from_toml(&format!("profil = \"bulk\"\n{MINIMAL}")).unwrap_err();
        assert!(err.to_string().contains("profil"), "{err}");
        let err =
            WorkerConfig::from_toml(&format!("{MINIMAL}\n[batch]\nmax_record = 3\n")).unwrap_err();
        assert!(err.to_string().contains("max_record"), "{err}");
    }

    #[test]
    fn drain_timeout_must_fit_in_the_session_timeout() {
        let toml = MINIMAL.replace(
            "bootstrap_servers = \"127.0.0.1:9092\"",
            "bootstrap_servers = \"127.0.0.1:9092\"\nproperties = { \"session.timeout.ms\" = \"6000\" }",
        );
        let err = WorkerConfig::from_toml(&toml).unwrap_err();
        assert!(err.to_string().contains("drain_timeout_ms"), "{err}");
        let ok = format!("drain_timeout_ms = 3000\n{toml}");
        assert!(WorkerConfig::from_toml(&ok).is_ok());
    }

    #[test]
    fn shipped_deployment_configs_are_valid() {
        for (name, toml) in [
            (
                "worker-interactive",
                include_str!("../../../deploy/config/worker-interactive.toml"),
            ),
            (
                "worker-bulk",
                include_str!("../../../deploy/config/worker-bulk.toml"),
            ),
        ] {
            let c = WorkerConfig::from_toml(toml).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(c.domain, "customers", "{name}");
        }
    }

    #[test]
    fn weakened_kafka_guarantees_are_refused() {
        let toml = MINIMAL.replace(
            "bootstrap_servers = \"127.0.0.1:9092\"",
            "bootstrap_servers = \"127.0.0.1:9092\"\nproperties = { acks = \"1\" }",
        );
        assert!(WorkerConfig::from_toml(&toml)
            .unwrap_err()
            .to_string()
            .contains("acks"));
    }
}
