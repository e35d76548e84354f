//! The topic layout of a domain: which topics exist, what they are called and
//! how they are configured. Pure data, so the admin helper, the CLI and the
//! tests agree on one definition.

/// A domain name that cannot form legal Kafka topic names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicNameError {
    /// Empty domain.
    #[error("domain name is empty")]
    Empty,
    /// A character Kafka does not allow in topic names.
    #[error("domain `{domain}` contains `{ch}`; use ASCII letters, digits, `.`, `_` or `-`")]
    IllegalCharacter {
        /// The domain as given.
        domain: String,
        /// The first illegal character.
        ch: char,
    },
    /// Topic names would exceed Kafka's 249-character limit.
    #[error("domain `{0}` is too long: topic names are limited to 249 characters")]
    TooLong(String),
}

/// The four topics of one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicLayout {
    domain: String,
}

/// How to create one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// What the topic is for, shown by `writ topics describe`.
    pub role: TopicRole,
    /// Number of partitions.
    pub partitions: i32,
    /// Replication factor.
    pub replication_factor: i32,
    /// Topic-level configs (`cleanup.policy`, `retention.ms`, ...).
    pub configs: Vec<(String, String)>,
}

/// The role a topic plays in the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicRole {
    /// `<domain>.commands`: interactive commands (CP-1, CP-2, CP-4..6).
    Commands,
    /// `<domain>.bulk`: bulk job lines (CP-3).
    Bulk,
    /// `<domain>.status`: compacted status events, the dedupe changelog.
    Status,
    /// `<domain>.dlq`: dead letters.
    Dlq,
}

impl TopicRole {
    /// Lowercase role name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Commands => "commands",
            Self::Bulk => "bulk",
            Self::Status => "status",
            Self::Dlq => "dlq",
        }
    }
}

/// Sizing and retention for a domain's topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSettings {
    /// Partitions of the command and bulk topics (the unit of worker parallelism).
    pub partitions: i32,
    /// Partitions of the status topic.
    pub status_partitions: i32,
    /// Partitions of the DLQ topic.
    pub dlq_partitions: i32,
    /// Replication factor of every topic.
    pub replication_factor: i32,
    /// Retention of command and bulk topics, ms.
    pub command_retention_ms: i64,
    /// Retention of the status topic, ms: this is the dedupe window.
    pub status_retention_ms: i64,
    /// Retention of the DLQ, ms: how long ops have to replay.
    pub dlq_retention_ms: i64,
}

const DAY_MS: i64 = 24 * 3600 * 1000;

/// Kafka's default record limit: broker `message.max.bytes` and topic
/// `max.message.bytes` (1 MiB + 12). Command topics keep it.
pub const KAFKA_DEFAULT_MAX_MESSAGE_BYTES: usize = 1_048_588;

/// Room a DLQ copy needs on top of its original: the `writ.dlq.*` headers
/// (each value sanitized to at most [`crate::dlq::MAX_MESSAGE_LEN`] bytes).
pub const DLQ_HEADROOM_BYTES: usize = 64 * 1024;

/// The record limit of the DLQ topic and of writ's producers. A dead letter
/// is the original record plus headers, so the DLQ and the producer writing
/// it must take more than the largest record a default command topic (or a
/// default librdkafka or Java producer) lets through. Without the headroom a
/// poison record near the limit could never be dead-lettered, and its
/// partition would stop for good.
pub const DLQ_MAX_MESSAGE_BYTES: usize = KAFKA_DEFAULT_MAX_MESSAGE_BYTES + DLQ_HEADROOM_BYTES;

impl Default for TopicSettings {
    fn default() -> Self {
        Self {
            partitions: 6,
            status_partitions: 6,
            dlq_partitions: 1,
            replication_factor: 1,
            command_retention_ms: 7 * DAY_MS,
            status_retention_ms: 7 * DAY_MS,
            dlq_retention_ms: 30 * DAY_MS,
        }
    }
}

impl TopicLayout {
    /// The layout of `domain`, checking that its topic names are legal.
    pub fn new(domain: &str) -> Result<Self, TopicNameError> {
        if domain.is_empty() {
            return Err(TopicNameError::Empty);
        }
        if let Some(ch) = domain
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(TopicNameError::IllegalCharacter {
                domain: domain.to_owned(),
                ch,
            });
        }
        if domain.len() + ".commands".len() > 249 {
            return Err(TopicNameError::TooLong(domain.to_owned()));
        }
        Ok(Self {
            domain: domain.to_owned(),
        })
    }

    /// The domain.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// `<domain>.commands`.
    pub fn commands(&self) -> String {
        format!("{}.commands", self.domain)
    }

    /// `<domain>.bulk`.
    pub fn bulk(&self) -> String {
        format!("{}.bulk", self.domain)
    }

    /// `<domain>.status`.
    pub fn status(&self) -> String {
        format!("{}.status", self.domain)
    }

    /// `<domain>.dlq`.
    pub fn dlq(&self) -> String {
        format!("{}.dlq", self.domain)
    }

    /// The topic of a role.
    pub fn topic(&self, role: TopicRole) -> String {
        match role {
            TopicRole::Commands => self.commands(),
            TopicRole::Bulk => self.bulk(),
            TopicRole::Status => self.status(),
            TopicRole::Dlq => self.dlq(),
        }
    }

    /// Creation specs of all four topics.
    pub fn specs(&self, s: &TopicSettings) -> Vec<TopicSpec> {
        let mut common = Vec::new();
        if s.replication_factor >= 3 {
            // acks=all only means something when one lost replica cannot lose a write.
            common.push(("min.insync.replicas".to_owned(), "2".to_owned()));
        }
        let spec = |role: TopicRole, partitions: i32, extra: Vec<(&str, String)>| TopicSpec {
            name: self.topic(role),
            role,
            partitions,
            replication_factor: s.replication_factor,
            configs: common
                .iter()
                .cloned()
                .chain(extra.into_iter().map(|(k, v)| (k.to_owned(), v)))
                .collect(),
        };
        vec![
            spec(
                TopicRole::Commands,
                s.partitions,
                vec![
                    ("cleanup.policy", "delete".into()),
                    ("retention.ms", s.command_retention_ms.to_string()),
                ],
            ),
            spec(
                TopicRole::Bulk,
                s.partitions,
                vec![
                    ("cleanup.policy", "delete".into()),
                    ("retention.ms", s.command_retention_ms.to_string()),
                ],
            ),
            spec(
                TopicRole::Status,
                s.status_partitions,
                vec![
                    ("cleanup.policy", "compact,delete".into()),
                    ("retention.ms", s.status_retention_ms.to_string()),
                ],
            ),
            spec(
                TopicRole::Dlq,
                s.dlq_partitions,
                vec![
                    ("cleanup.policy", "delete".into()),
                    ("retention.ms", s.dlq_retention_ms.to_string()),
                    ("max.message.bytes", DLQ_MAX_MESSAGE_BYTES.to_string()),
                ],
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract() {
        let l = TopicLayout::new("customers").unwrap();
        assert_eq!(l.commands(), "customers.commands");
        assert_eq!(l.bulk(), "customers.bulk");
        assert_eq!(l.status(), "customers.status");
        assert_eq!(l.dlq(), "customers.dlq");
    }

    #[test]
    fn illegal_domains_are_refused() {
        assert_eq!(TopicLayout::new(""), Err(TopicNameError::Empty));
        assert!(matches!(
            TopicLayout::new("cus tomers"),
            Err(TopicNameError::IllegalCharacter { ch: ' ', .. })
        ));
        assert!(matches!(
            TopicLayout::new(&"x".repeat(245)),
            Err(TopicNameError::TooLong(_))
        ));
    }

    #[test]
    fn status_topic_is_compacted_with_the_dedupe_window() {
        let s = TopicSettings {
            status_retention_ms: 123,
            replication_factor: 3,
            ..TopicSettings::default()
        };
        let specs = TopicLayout::new("c").unwrap().specs(&s);
        assert_eq!(specs.len(), 4);
        let status = specs.iter().find(|t| t.role == TopicRole::Status).unwrap();
        let cfg = |k: &str| {
            status
                .configs
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(cfg("cleanup.policy"), Some("compact,delete"));
        assert_eq!(cfg("retention.ms"), Some("123"));
        assert_eq!(cfg("min.insync.replicas"), Some("2"));
        let single = TopicLayout::new("c")
            .unwrap()
            .specs(&TopicSettings::default());
        assert!(single
            .iter()
            .all(|t| t.configs.iter().all(|(k, _)| k != "min.insync.replicas")));
    }

    #[test]
    fn the_dlq_takes_a_dead_letter_of_the_largest_command() {
        let specs = TopicLayout::new("c")
            .unwrap()
            .specs(&TopicSettings::default());
        let max = |role: TopicRole| {
            specs
                .iter()
                .find(|t| t.role == role)
                .unwrap()
                .configs
                .iter()
                .find(|(k, _)| k == "max.message.bytes")
                .map(|(_, v)| v.parse::<usize>().unwrap())
        };
        assert_eq!(max(TopicRole::Commands), None, "commands keep the default");
        // A full set of writ.dlq.* headers with maximal messages fits the headroom.
        let headers = 11 * (64 + crate::dlq::MAX_MESSAGE_LEN);
        assert!(
            max(TopicRole::Dlq).unwrap() >= KAFKA_DEFAULT_MAX_MESSAGE_BYTES + headers,
            "{:?}",
            max(TopicRole::Dlq)
        );
    }
}
