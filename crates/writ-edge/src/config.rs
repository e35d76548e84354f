//! Edge configuration: embedded defaults, then a TOML file, then
//! `WRIT__SECTION__KEY` environment variables — the worker's pattern. Unknown
//! keys are errors, and settings that contradict each other (a conflict policy
//! that needs the master without a `[master]` section, a key field outside the
//! projection) are refused at start-up rather than found out at the first
//! conflict.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use writ_core::ContentType;
use writ_http::AuthConfig;
use writ_kafka::KafkaSettings;
use writ_store::MasterConfig;

use crate::sync::{ConflictPolicy, Projection, SyncWindow};

/// The edge service's whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// The domain whose `<domain>.commands` the relay publishes to and whose
    /// `<domain>.status` the status consumer reads, e.g. `customers`.
    pub domain: String,
    /// Address of the HTTP API, `/metrics`, `/healthz` and `/readyz`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Consumer group of the status consumer (default `writ-edge-<domain>`).
    /// Edge instances with separate local stores need separate groups.
    #[serde(default)]
    pub status_group_id: Option<String>,
    /// Kafka connection.
    pub kafka: KafkaSettings,
    /// Schema Registry URL (needed when the worker frames status events for one).
    #[serde(default)]
    pub registry_url: Option<String>,
    /// A directory of `.avsc` files to use instead of the built-in schemas.
    #[serde(default)]
    pub schemas_dir: Option<PathBuf>,
    /// How published commands are encoded: `json` (default) or `avro`.
    #[serde(default)]
    pub command_format: CommandFormat,
    /// Largest accepted request body, bytes.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// The local store.
    #[serde(default)]
    pub store: StoreConfig,
    /// API keys and tenants.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Outbox relay tuning.
    #[serde(default)]
    pub relay: RelayConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// The master, read (never written) for `master-wins`, for `local-wins`
    /// when a conflict does not carry the master's version, and for reconcile.
    #[serde(default)]
    pub master: Option<MasterConfig>,
    /// The collections this edge serves, by name (`[collections.customers]`).
    #[serde(default)]
    pub collections: BTreeMap<String, CollectionConfig>,
}

/// Encoding of the commands the relay publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandFormat {
    /// `application/json` (canonical JSON of the validated record).
    #[default]
    Json,
    /// `application/avro` (Confluent framing when a registry is configured).
    Avro,
}

impl CommandFormat {
    /// The content type it maps to.
    pub fn content_type(self) -> ContentType {
        match self {
            Self::Json => ContentType::Json,
            Self::Avro => ContentType::Avro,
        }
    }
}

/// `[store]`: where the local copy and the outbox live.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite://path/edge.db?mode=rwc` (default `sqlite://writ-edge.db?mode=rwc`),
    /// `sqlite::memory:` or `postgres://user:pass@host/db`.
    pub url: String,
    /// Pool size for PostgreSQL; SQLite always uses one connection so that
    /// writes never fail with `SQLITE_BUSY`.
    pub max_connections: u32,
    /// Terminal outbox rows older than this are pruned (the latest row of each
    /// record is kept: reconcile re-enqueues from it), ms. Default 7 days.
    pub outbox_retention_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://writ-edge.db?mode=rwc".to_owned(),
            max_connections: 8,
            outbox_retention_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// `[relay]`: how the outbox is drained.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Most rows published per round.
    pub max_batch: usize,
    /// How often the relay looks at the outbox when not woken by a write, ms.
    pub poll_interval_ms: u64,
    /// First back-off after a failed publish, ms (doubles, with jitter).
    pub initial_backoff_ms: u64,
    /// Longest back-off while the broker is down, ms.
    pub max_backoff_ms: u64,
    /// How often open automatic conflicts are retried when the master was unreachable, ms.
    pub conflict_retry_ms: u64,
    /// A published row with no status answer after this long is published
    /// again (same `ce_id`: the worker re-emits its answer), so a lost status
    /// event or a reset status consumer group never blocks an entity, ms.
    pub republish_after_ms: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            max_batch: 500,
            poll_interval_ms: 250,
            initial_backoff_ms: 200,
            max_backoff_ms: 10_000,
            conflict_retry_ms: 2_000,
            republish_after_ms: 300_000,
        }
    }
}

impl RelayConfig {
    /// The poll interval as a duration.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    /// The republish delay as a duration.
    pub fn republish_after(&self) -> Duration {
        Duration::from_millis(self.republish_after_ms)
    }
}

/// `[collections.<name>]`: one kind of record the edge keeps locally.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CollectionConfig {
    /// The command type a write becomes, e.g. `customer.upsert.v1`; its schema validates writes.
    pub command_type: String,
    /// Payload field holding the entity key (dots for nested fields): `ce_subject`
    /// and the key the master is read by.
    pub key_field: String,
    /// Whether the master keeps a version for this type: writes based on a
    /// known master version then carry `ce_expectedversion`.
    #[serde(default = "default_true")]
    pub versioned: bool,
    /// Fields kept in the local copy (dot paths); empty or absent keeps all.
    /// The command always carries the full write.
    #[serde(default)]
    pub projection: Vec<String>,
    /// What to do when the master reports a version conflict.
    #[serde(default)]
    pub conflict: ConflictPolicy,
    /// The batch sync window.
    #[serde(default)]
    pub sync: SyncConfig,
}

/// `[collections.<name>.sync]`: publish every `interval_ms` or when
/// `max_pending` changes wait, whichever comes first. `interval_ms = 0`
/// (the default) publishes immediately.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// Longest a change waits before it is published, ms; 0 = immediately.
    pub interval_ms: u64,
    /// Publish as soon as this many changes are pending; 0 = only on the interval.
    pub max_pending: u64,
}

impl CollectionConfig {
    /// The sync window.
    pub fn window(&self) -> SyncWindow {
        SyncWindow {
            interval: Duration::from_millis(self.sync.interval_ms),
            max_pending: self.sync.max_pending,
        }
    }

    /// The local-copy projection.
    pub fn projection(&self) -> Projection {
        Projection::new(&self.projection)
    }
}

pub use writ_config::{LogConfig, LogFormat};

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8090))
}

fn default_max_body_bytes() -> usize {
    1 << 20
}

fn default_true() -> bool {
    true
}

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The layered sources did not form a valid configuration (all problems listed).
    #[error("invalid edge configuration:\n{0}")]
    Invalid(String),
    /// Values that contradict each other.
    #[error("inconsistent edge configuration: {0}")]
    Inconsistent(String),
}

impl EdgeConfig {
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
        let bad = |m: String| ConfigError::Inconsistent(m);
        writ_core::TopicLayout::new(&self.domain).map_err(|e| bad(e.to_string()))?;
        self.kafka.validate().map_err(|e| bad(e.to_string()))?;
        writ_http::ApiKeys::from_config(&self.auth).map_err(|e| bad(e.to_string()))?;
        if self.collections.is_empty() {
            return Err(bad(
                "no collections: add at least one [collections.<name>] section".into(),
            ));
        }
        if self.relay.max_batch == 0 || self.relay.poll_interval_ms == 0 {
            return Err(bad(
                "relay.max_batch and relay.poll_interval_ms must be positive".into(),
            ));
        }
        if self.relay.initial_backoff_ms == 0
            || self.relay.initial_backoff_ms > self.relay.max_backoff_ms
        {
            return Err(bad(
                "relay.initial_backoff_ms must be positive and at most relay.max_backoff_ms".into(),
            ));
        }
        if self.relay.republish_after_ms < 1_000 {
            return Err(bad(
                "relay.republish_after_ms must be at least 1000: an answer needs time to arrive"
                    .into(),
            ));
        }
        if self.store.max_connections == 0 {
            return Err(bad("store.max_connections must be positive".into()));
        }
        for (name, c) in &self.collections {
            if !valid_collection_name(name) {
                return Err(bad(format!(
                    "collection name {name:?}: use 1-64 characters of a-z, A-Z, 0-9, '-' or '_'"
                )));
            }
            if c.key_field.trim().is_empty() {
                return Err(bad(format!("collections.{name}.key_field is empty")));
            }
            let projection = c.projection();
            if !projection.keeps(&c.key_field) {
                return Err(bad(format!(
                    "collections.{name}.projection must keep the key field {:?}",
                    c.key_field
                )));
            }
            if c.conflict == ConflictPolicy::MasterWins && self.master.is_none() {
                return Err(bad(format!(
                    "collections.{name}.conflict = \"master-wins\" reads the master: add a [master] section"
                )));
            }
            if c.sync.interval_ms == 0 && c.sync.max_pending > 0 {
                return Err(bad(format!(
                    "collections.{name}.sync.max_pending only makes sense with sync.interval_ms > 0 (0 publishes immediately)"
                )));
            }
        }
        Ok(())
    }

    /// The status consumer's group id.
    pub fn status_group_id(&self) -> String {
        self.status_group_id
            .clone()
            .unwrap_or_else(|| format!("writ-edge-{}", self.domain))
    }

    /// A collection's configuration.
    pub fn collection(&self, name: &str) -> Option<&CollectionConfig> {
        self.collections.get(name)
    }
}

fn valid_collection_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        domain = "customers"
        [kafka]
        bootstrap_servers = "127.0.0.1:9092"
        [collections.customers]
        command_type = "customer.upsert.v1"
        key_field = "customer_id"
    "#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = EdgeConfig::from_toml(MINIMAL).unwrap();
        assert_eq!(c.status_group_id(), "writ-edge-customers");
        let col = c.collection("customers").unwrap();
        assert!(col.versioned);
        assert_eq!(col.conflict, ConflictPolicy::Manual);
        assert_eq!(col.window().interval, Duration::ZERO);
        assert!(col.projection().is_all());
        assert_eq!(c.command_format, CommandFormat::Json);
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = EdgeConfig::from_toml(&format!("listn = \"x\"\n{MINIMAL}")).unwrap_err();
        assert!(err.to_string().contains("listn"), "{err}");
        let err =
            EdgeConfig::from_toml(&format!("{MINIMAL}\nconflcit = \"manual\"\n")).unwrap_err();
        assert!(err.to_string().contains("conflcit"), "{err}");
    }

    #[test]
    fn contradictions_are_refused_with_the_reason() {
        let master_wins = format!("{MINIMAL}\nconflict = \"master-wins\"\n");
        let err = EdgeConfig::from_toml(&master_wins).unwrap_err();
        assert!(err.to_string().contains("[master]"), "{err}");
        let projection = format!("{MINIMAL}\nprojection = [\"name\"]\n");
        let err = EdgeConfig::from_toml(&projection).unwrap_err();
        assert!(err.to_string().contains("key field"), "{err}");
        let window = format!("{MINIMAL}\n[collections.customers.sync]\nmax_pending = 5\n");
        let err = EdgeConfig::from_toml(&window).unwrap_err();
        assert!(err.to_string().contains("interval_ms"), "{err}");
        let err =
            EdgeConfig::from_toml("domain = \"c\"\n[kafka]\nbootstrap_servers = \"k:9092\"\n")
                .unwrap_err();
        assert!(err.to_string().contains("no collections"), "{err}");
        let err = EdgeConfig::from_toml(&MINIMAL.replace(
            "bootstrap_servers = \"127.0.0.1:9092\"",
            "bootstrap_servers = \"127.0.0.1:9092\"\nproperties = { acks = \"1\" }",
        ))
        .unwrap_err();
        assert!(err.to_string().contains("acks"), "{err}");
    }

    #[test]
    fn unknown_conflict_policies_are_refused() {
        let err =
            EdgeConfig::from_toml(&format!("{MINIMAL}\nconflict = \"last-wins\"\n")).unwrap_err();
        assert!(err.to_string().contains("last-wins"), "{err}");
    }

    #[test]
    fn the_shipped_deployment_config_is_valid() {
        let c = EdgeConfig::from_toml(include_str!("../../../deploy/config/edge.toml"))
            .unwrap_or_else(|e| panic!("deploy/config/edge.toml: {e}"));
        assert_eq!(c.domain, "customers");
        assert!(c.master.is_some());
        assert!(!c.collections.is_empty());
    }
}
