//! Ingress configuration: embedded defaults, then a TOML file, then
//! `WRIT__SECTION__KEY` environment variables (the worker's pattern). Unknown
//! keys are errors, and settings that contradict each other (a type whose
//! entity key the schema cannot hold, a staleness default outside its bounds)
//! are refused at start-up instead of at the first request.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use writ_core::{ContentType, StalenessWindow, TopicLayout};
use writ_http::AuthConfig;
use writ_kafka::KafkaSettings;

/// The ingress' whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressConfig {
    /// HTTP listen address (API, `/metrics`, `/healthz`, `/readyz`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Kafka connection.
    pub kafka: KafkaSettings,
    /// Where payload schemas come from.
    #[serde(default)]
    pub schemas: SchemaConfig,
    /// How command payloads are encoded on the wire.
    #[serde(default)]
    pub payload_format: WireFormat,
    /// How the ingress' own `ACCEPTED` status events are encoded (match the workers').
    #[serde(default)]
    pub status_format: WireFormat,
    /// API keys and tenants.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Whether `Idempotency-Key` is mandatory (a missing one is a `400`).
    #[serde(default = "default_true")]
    pub idempotency_key_required: bool,
    /// Request and upload limits.
    #[serde(default)]
    pub limits: Limits,
    /// The local status view.
    #[serde(default)]
    pub store: StoreConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// CP-4 drafts (`/v1/drafts`), mounted when this section is present.
    #[serde(default)]
    pub drafts: Option<writ_drafts::DraftsConfig>,
    /// Accepted command types, by `ce_type`.
    pub types: BTreeMap<String, TypeConfig>,
}

/// Schema source: a directory of `.avsc` files (default: the built-in set), and an optional registry.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SchemaConfig {
    /// A directory of `.avsc` files instead of the built-in schemas.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Schema Registry URL; when set, Avro payloads use Confluent framing.
    #[serde(default)]
    pub registry_url: Option<String>,
}

/// A payload encoding on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireFormat {
    /// Avro (registry framing when a registry is configured).
    #[default]
    Avro,
    /// Canonical JSON.
    Json,
}

impl WireFormat {
    /// The content type it maps to.
    pub fn content_type(self) -> ContentType {
        match self {
            Self::Avro => ContentType::Avro,
            Self::Json => ContentType::Json,
        }
    }
}

/// The longest `limits.max_wait_ms` accepted: CP-1 is for answers within a request.
pub const MAX_WAIT_CEILING_MS: u64 = 600_000;

/// Request and upload limits.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest command body, bytes (`413` above it).
    pub body_max_bytes: usize,
    /// Largest bulk upload, bytes (`413` above it; lines before the limit stay produced).
    pub upload_max_bytes: u64,
    /// Largest single line of a bulk upload, bytes (a longer line is a line error).
    pub line_max_bytes: usize,
    /// Lines validated, then produced, together in one step of an upload.
    pub upload_chunk_lines: usize,
    /// Longest `Prefer: wait=N` honoured, ms (longer requests are capped).
    pub max_wait_ms: u64,
    /// Longest a produce may take before the client gets `503`, ms (`message.timeout.ms`).
    pub produce_timeout_ms: u64,
    /// `Retry-After` seconds sent with a `503`.
    pub retry_after_seconds: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_max_bytes: 1024 * 1024,
            upload_max_bytes: 1024 * 1024 * 1024,
            line_max_bytes: 1024 * 1024,
            upload_chunk_lines: 1000,
            max_wait_ms: 30_000,
            produce_timeout_ms: 5_000,
            retry_after_seconds: 2,
        }
    }
}

/// The local status view.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// SQLite file of the view; unset means a private temporary file, deleted
    /// at exit (the view is then rebuilt from the topic at every start).
    pub path: Option<PathBuf>,
    /// How long a submission is kept: match the status topic's retention (the dedupe window), ms.
    pub retention_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: None,
            retention_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

pub use writ_config::{LogConfig, LogFormat};

/// One accepted command type.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TypeConfig {
    /// The domain whose topics carry it (`<domain>.commands`, `.bulk`, `.status`).
    pub domain: String,
    /// Where the entity key (`ce_subject`) is in the payload: a top-level field
    /// name or a JSON pointer (`/customer/id`). Unset: commands are keyed by `ce_id`.
    #[serde(default)]
    pub entity_key: Option<String>,
    /// Field holding a bulk line's idempotency key; unset: `<jobId>:<lineNumber>`.
    #[serde(default)]
    pub line_key: Option<String>,
    /// Staleness window, ms.
    #[serde(default)]
    pub staleness: StalenessConfig,
}

/// A type's staleness window and the bounds a client may ask for, ms.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct StalenessConfig {
    /// Window when the client asks for none.
    pub default_ms: u64,
    /// Shortest window a client may ask for.
    pub min_ms: u64,
    /// Longest window a client may ask for.
    pub max_ms: u64,
}

impl Default for StalenessConfig {
    fn default() -> Self {
        let w = StalenessWindow::default();
        Self {
            default_ms: w.default.as_millis() as u64,
            min_ms: w.min.as_millis() as u64,
            max_ms: w.max.as_millis() as u64,
        }
    }
}

impl StalenessConfig {
    /// The window as writ-core's type.
    pub fn window(&self) -> StalenessWindow {
        StalenessWindow {
            default: Duration::from_millis(self.default_ms),
            min: Duration::from_millis(self.min_ms),
            max: Duration::from_millis(self.max_ms),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8080))
}

fn default_true() -> bool {
    true
}

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The layered sources did not form a valid configuration (all problems listed).
    #[error("invalid ingress configuration:\n{0}")]
    Invalid(String),
    /// Values that contradict each other.
    #[error("inconsistent ingress configuration: {0}")]
    Inconsistent(String),
}

impl IngressConfig {
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

    /// Checks what serde cannot: consistency between values.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Inconsistent(m));
        self.kafka
            .validate()
            .map_err(|e| ConfigError::Inconsistent(e.to_string()))?;
        writ_http::ApiKeys::from_config(&self.auth)
            .map_err(|e| ConfigError::Inconsistent(e.to_string()))?;
        if let Some(drafts) = &self.drafts {
            drafts
                .validate()
                .map_err(|e| ConfigError::Inconsistent(e.to_string()))?;
        }
        if self.types.is_empty() {
            return bad("no command types configured under [types]".into());
        }
        for (name, t) in &self.types {
            TopicLayout::new(&t.domain)
                .map_err(|e| ConfigError::Inconsistent(format!("types.\"{name}\": {e}")))?;
            let s = &t.staleness;
            if !(s.min_ms <= s.default_ms && s.default_ms <= s.max_ms) || s.min_ms == 0 {
                return bad(format!(
                    "types.\"{name}\".staleness: need 0 < min_ms <= default_ms <= max_ms, got {}/{}/{}",
                    s.min_ms, s.default_ms, s.max_ms
                ));
            }
            for (what, field) in [("entity_key", &t.entity_key), ("line_key", &t.line_key)] {
                if field.as_deref().is_some_and(|f| f.is_empty() || f == "/") {
                    return bad(format!("types.\"{name}\".{what} must name a field"));
                }
            }
        }
        let l = &self.limits;
        if l.body_max_bytes == 0 || l.line_max_bytes == 0 || l.upload_chunk_lines == 0 {
            return bad(
                "limits: body_max_bytes, line_max_bytes and upload_chunk_lines must be positive"
                    .into(),
            );
        }
        if l.produce_timeout_ms == 0 {
            return bad("limits.produce_timeout_ms must be positive".into());
        }
        if l.upload_max_bytes == 0 {
            return bad("limits.upload_max_bytes must be positive".into());
        }
        // `Retry-After: 0` turns every client of a struggling broker into a busy loop.
        if !(1..=3600).contains(&l.retry_after_seconds) {
            return bad(format!(
                "limits.retry_after_seconds must be between 1 and 3600, got {}",
                l.retry_after_seconds
            ));
        }
        // Every waiting request holds a connection and a status subscription.
        if l.max_wait_ms > MAX_WAIT_CEILING_MS {
            return bad(format!(
                "limits.max_wait_ms must be at most {MAX_WAIT_CEILING_MS} (10 minutes), got {}",
                l.max_wait_ms
            ));
        }
        if self.store.retention_ms == 0 {
            return bad("store.retention_ms must be positive".into());
        }
        Ok(())
    }

    /// Kafka settings for the producer: the produce timeout bounds how long a
    /// request can hang on an unreachable broker before it gets `503`.
    pub fn producer_settings(&self) -> KafkaSettings {
        self.kafka.clone().or_with(
            "message.timeout.ms",
            self.limits.produce_timeout_ms.to_string(),
        )
    }

    /// Every domain some type is produced to, sorted, without repeats.
    pub fn domains(&self) -> Vec<String> {
        let mut d: Vec<String> = self.types.values().map(|t| t.domain.clone()).collect();
        d.sort();
        d.dedup();
        d
    }
}

/// Resolves a configured field (`name` or JSON pointer `/a/b`) in a payload.
pub fn field_pointer(field: &str) -> String {
    if field.starts_with('/') {
        field.to_owned()
    } else {
        format!("/{}", field.replace('~', "~0").replace('/', "~1"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [kafka]
        bootstrap_servers = "127.0.0.1:9092"
        [types."customer.upsert.v1"]
        domain = "customers"
        entity_key = "customer_id"
    "#;

    #[test]
    fn limits_that_cannot_work_are_refused_with_their_name() {
        for (setting, needle) in [
            ("upload_max_bytes = 0", "upload_max_bytes"),
            ("retry_after_seconds = 0", "retry_after_seconds"),
            ("retry_after_seconds = 86400", "retry_after_seconds"),
            ("max_wait_ms = 3600000", "max_wait_ms"),
            ("body_max_bytes = 0", "body_max_bytes"),
            ("produce_timeout_ms = 0", "produce_timeout_ms"),
        ] {
            let toml = format!("{MINIMAL}\n[limits]\n{setting}\n");
            let err = IngressConfig::from_toml(&toml).unwrap_err().to_string();
            assert!(err.contains(needle), "{setting}: {err}");
        }
        let ok = format!("{MINIMAL}\n[limits]\nmax_wait_ms = 0\nretry_after_seconds = 1\n");
        IngressConfig::from_toml(&ok).expect("no waiting at all is a valid choice");
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = IngressConfig::from_toml(MINIMAL).unwrap();
        assert!(c.idempotency_key_required);
        assert_eq!(c.limits.body_max_bytes, 1024 * 1024);
        assert_eq!(c.domains(), vec!["customers".to_owned()]);
        assert_eq!(
            c.producer_settings().properties["message.timeout.ms"],
            "5000"
        );
        assert_eq!(c.store.path, None);
    }

    #[test]
    fn unknown_keys_and_contradictions_are_named() {
        let err = IngressConfig::from_toml(&format!("idempotency_key_requird = false\n{MINIMAL}"))
            .unwrap_err();
        assert!(err.to_string().contains("idempotency_key_requird"), "{err}");
        let err = IngressConfig::from_toml(&format!(
            "{MINIMAL}\n[types.\"customer.upsert.v1\".staleness]\ndefault_ms = 10\nmin_ms = 100\n"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("staleness"), "{err}");
        let err =
            IngressConfig::from_toml(&MINIMAL.replace("customers", "bad domain")).unwrap_err();
        assert!(err.to_string().contains("bad domain"), "{err}");
        let err = IngressConfig::from_toml(&format!(
            "{MINIMAL}\n[[auth.keys]]\nsha256 = \"abc\"\ntenant = \"acme\"\n"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("sha256"), "{err}");
    }

    #[test]
    fn field_names_become_json_pointers() {
        assert_eq!(field_pointer("customer_id"), "/customer_id");
        assert_eq!(field_pointer("/address/city"), "/address/city");
        assert_eq!(field_pointer("a/b"), "/a~1b");
    }

    #[test]
    fn the_shipped_deployment_config_is_valid() {
        let c =
            IngressConfig::from_toml(include_str!("../../../deploy/config/ingress.toml")).unwrap();
        assert!(c.types.contains_key("customer.upsert.v1"));
        assert!(c.store.path.is_some());
    }
}
