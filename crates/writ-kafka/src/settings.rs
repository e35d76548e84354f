//! Client settings: writ's safe defaults, then any librdkafka property the
//! user passes through (SASL, SSL, timeouts, ...), with the few properties
//! that writ's delivery guarantees depend on protected from being weakened.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

/// How to reach and talk to the Kafka cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// `client.id` prefix; the role (`producer`, `consumer`, `admin`) is appended.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Any librdkafka property, passed through verbatim (e.g. `security.protocol`,
    /// `sasl.mechanism`, `ssl.ca.location`, `session.timeout.ms`).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn default_client_id() -> String {
    "writ".to_owned()
}

/// A setting that would break writ's guarantees, or cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A pass-through property tries to weaken a guarantee writ depends on.
    #[error(
        "kafka property `{key}={value}` is not allowed: writ requires `{key}={required}` ({why})"
    )]
    UnsafeOverride {
        /// The property.
        key: String,
        /// The value given.
        value: String,
        /// The only value writ accepts.
        required: &'static str,
        /// Which guarantee depends on it.
        why: &'static str,
    },
    /// `bootstrap.servers` is empty.
    #[error("kafka bootstrap_servers is empty")]
    NoBootstrapServers,
}

/// Producer properties writ pins: (key, required value, why).
const PRODUCER_PINNED: &[(&str, &str, &str)] = &[
    (
        "enable.idempotence",
        "true",
        "retries must not duplicate or reorder records",
    ),
    (
        "acks",
        "all",
        "a status event or DLQ record must survive a broker loss",
    ),
];

/// Consumer properties writ pins: offsets are stored only after a command's effects are acknowledged.
const CONSUMER_PINNED: &[(&str, &str, &str)] = &[
    (
        "enable.auto.offset.store",
        "false",
        "offsets are stored only after the apply is acknowledged",
    ),
    (
        "enable.auto.commit",
        "false",
        "offsets are committed after each batch and on rebalance",
    ),
];

impl KafkaSettings {
    /// Settings for a broker at `bootstrap_servers` with no extra properties.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            client_id: default_client_id(),
            properties: BTreeMap::new(),
        }
    }

    /// Adds a pass-through property (builder style).
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    /// Sets a librdkafka property unless the user already set it: writ's
    /// default for one role, which configuration still overrides.
    pub fn or_with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties
            .entry(key.into())
            .or_insert_with(|| value.into());
        self
    }

    /// Checks the settings for every client role at once, so a tool fails
    /// before connecting rather than halfway through its work.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(SettingsError::NoBootstrapServers);
        }
        check_pinned(&self.properties, PRODUCER_PINNED)?;
        check_pinned(&self.properties, CONSUMER_PINNED)
    }

    /// Base config shared by every client: bootstrap, client id, pass-through properties.
    pub fn base_config(&self, role: &str) -> Result<ClientConfig, SettingsError> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(SettingsError::NoBootstrapServers);
        }
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", format!("{}-{role}", self.client_id));
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        Ok(c)
    }

    /// An idempotent producer: `enable.idempotence=true`, `acks=all`, small linger.
    pub fn producer_config(&self) -> Result<ClientConfig, SettingsError> {
        check_pinned(&self.properties, PRODUCER_PINNED)?;
        let mut c = ClientConfig::new();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set("message.timeout.ms", "30000")
            // librdkafka's default (1 000 000) is below what a command topic
            // accepts, and a DLQ copy is its original plus headers: without
            // room above the command limit, a poison record near it could
            // never be dead-lettered (see `DLQ_MAX_MESSAGE_BYTES`).
            .set(
                "message.max.bytes",
                writ_core::topics::DLQ_MAX_MESSAGE_BYTES.to_string(),
            );
        merge(&mut c, self.base_config("producer")?);
        Ok(c)
    }

    /// A group consumer with manual offset storage and manual commits.
    pub fn consumer_config(&self, group_id: &str) -> Result<ClientConfig, SettingsError> {
        check_pinned(&self.properties, CONSUMER_PINNED)?;
        let mut c = ClientConfig::new();
        c.set("group.id", group_id)
            .set("enable.auto.offset.store", "false")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("enable.partition.eof", "false")
            .set("isolation.level", "read_committed")
            // Prefetch bounds. librdkafka's defaults (64 MiB queue, 50 MiB
            // fetches) are sized for throughput, not a batch worker's memory.
            // Fetch limits count compressed bytes and the queue thresholds
            // are only checked before a fetch, so one response can land several
            // times its size in decompressed messages on top of a full queue:
            // keep both small. Raw consume still runs an order of magnitude
            // faster than any master applies (see the apply benchmark).
            .set("queued.max.messages.kbytes", PREFETCH_KBYTES.to_string())
            .set("queued.min.messages", PREFETCH_MESSAGES.to_string())
            .set("fetch.max.bytes", "2097152")
            // A partition whose queue is over those thresholds is not fetched
            // again for `fetch.queue.backoff.ms` (librdkafka: 1 s), and with
            // thresholds this low one fetch response often crosses them: a
            // consumer then reads one response per second (the apply benchmark
            // on a broker that bounds its responses: 19k commands/s, 45-48k
            // with 50 ms). librdkafka's docs advise lowering it with the
            // thresholds; a queue still holds ~100 ms of work when it re-checks.
            .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS.to_string());
        merge(&mut c, self.base_config("consumer")?);
        Ok(c)
    }

    /// A group-less reader (DLQ listing, status materialization, tail).
    pub fn reader_config(&self) -> Result<ClientConfig, SettingsError> {
        let mut c = ClientConfig::new();
        // librdkafka requires a group.id even for manual assignment; nothing is committed.
        c.set("group.id", "writ-reader")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true");
        merge(&mut c, self.base_config("reader")?);
        Ok(c)
    }

    /// An admin client; describing a topic must never create it.
    pub fn admin_config(&self) -> Result<ClientConfig, SettingsError> {
        let mut c = ClientConfig::new();
        c.set("allow.auto.create.topics", "false");
        merge(&mut c, self.base_config("admin")?);
        Ok(c)
    }
}

/// A consumer's total prefetch: librdkafka's thresholds apply to the one
/// shared queue, or to each partition queue when they are split.
pub(crate) const PREFETCH_KBYTES: usize = 4096;
/// See [`PREFETCH_KBYTES`].
pub(crate) const PREFETCH_MESSAGES: usize = 10_000;
/// How soon a partition over the prefetch thresholds is considered for fetching again.
pub(crate) const FETCH_QUEUE_BACKOFF_MS: u64 = 50;

fn check_pinned(
    props: &BTreeMap<String, String>,
    pinned: &[(&str, &'static str, &'static str)],
) -> Result<(), SettingsError> {
    for (key, required, why) in pinned {
        if let Some(value) = props.get(*key) {
            let same =
                value.eq_ignore_ascii_case(required) || (*key == "acks" && value.trim() == "-1");
            if !same {
                return Err(SettingsError::UnsafeOverride {
                    key: (*key).to_owned(),
                    value: value.clone(),
                    required,
                    why,
                });
            }
        }
    }
    Ok(())
}

/// Overlays `top` onto `base` (later wins), since ClientConfig has no merge.
fn merge(base: &mut ClientConfig, top: ClientConfig) {
    // `config_map` masks secrets (`sasl.password`, `ssl.key.password`, ...)
    // with a placeholder: only its keys are used, values come from `get`,
    // or every SASL/TLS password would reach librdkafka as that placeholder.
    for k in top.config_map().into_keys() {
        if let Some(v) = top.get(k) {
            base.set(k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_is_idempotent_and_pass_through_reaches_librdkafka() {
        let s = KafkaSettings::new("k1:9092,k2:9092")
            .with("security.protocol", "SASL_SSL")
            .with("sasl.mechanism", "SCRAM-SHA-512")
            .with("sasl.username", "writ")
            .with("linger.ms", "20");
        let c = s.producer_config().unwrap();
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(
            c.get("linger.ms"),
            Some("20"),
            "user tuning wins over defaults"
        );
        assert_eq!(c.get("client.id"), Some("writ-producer"));
        // Room for a DLQ copy of the largest record a default topic accepts.
        let max: usize = c.get("message.max.bytes").unwrap().parse().unwrap();
        assert!(max >= writ_core::topics::KAFKA_DEFAULT_MAX_MESSAGE_BYTES + 16 * 1024);
    }

    #[test]
    fn weakening_a_guarantee_is_refused_with_the_reason() {
        let err = KafkaSettings::new("k:9092")
            .with("acks", "1")
            .producer_config()
            .unwrap_err();
        assert!(err.to_string().contains("acks=all"), "{err}");
        assert!(KafkaSettings::new("k:9092")
            .with("acks", "-1")
            .producer_config()
            .is_ok());
        let err = KafkaSettings::new("k:9092")
            .with("enable.auto.commit", "true")
            .consumer_config("g")
            .unwrap_err();
        assert!(matches!(err, SettingsError::UnsafeOverride { .. }));
        assert_eq!(
            KafkaSettings::new(" ").admin_config().unwrap_err(),
            SettingsError::NoBootstrapServers
        );
    }

    #[test]
    fn consumer_stores_offsets_manually() {
        let c = KafkaSettings::new("k:9092")
            .consumer_config("writ-customers-interactive")
            .unwrap();
        assert_eq!(c.get("group.id"), Some("writ-customers-interactive"));
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
    }

    #[test]
    fn a_consumer_over_its_prefetch_thresholds_fetches_again_soon_unless_configured() {
        let backoff = |c: &ClientConfig| -> u64 {
            c.get("fetch.queue.backoff.ms")
                .expect("fetch.queue.backoff.ms is set")
                .parse()
                .unwrap()
        };
        let default = KafkaSettings::new("k:9092").consumer_config("g").unwrap();
        // librdkafka's own 1 000 ms would cap a consumer at one response a second.
        assert!(
            backoff(&default) <= 100,
            "{:?}",
            default.get("fetch.queue.backoff.ms")
        );
        let configured = KafkaSettings::new("k:9092")
            .with("fetch.queue.backoff.ms", "400")
            .consumer_config("g")
            .unwrap();
        assert_eq!(backoff(&configured), 400);
    }

    #[test]
    fn settings_reject_unknown_keys() {
        let err = serde_json::from_str::<KafkaSettings>(
            r#"{"bootstrap_servers":"k:9092","bootstrap_server":"typo"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}
