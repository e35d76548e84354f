//! Kafka plumbing for writ: client settings with librdkafka pass-through, an
//! idempotent producer, a batch consumer with manual offset storage and
//! rebalance-safe commits, header conversion, and the topic admin helper.
//!
//! Nothing here knows about masters or HTTP; the worker, the ingress, the
//! edge service and the CLI all build their Kafka clients through this crate
//! so that delivery guarantees are configured in exactly one place.

pub mod admin;
pub mod batch;
pub mod consumer;
pub mod error;
pub mod headers;
pub mod producer;
pub mod settings;
pub mod snapshot;

pub use admin::{TopicAdmin, TopicDescription, TopicOutcome};
pub use batch::{BatchBuilder, BatchLimits};
pub use consumer::{BatchConsumer, ConsumedRecord};
pub use error::KafkaClientError;
pub use producer::{Delivered, OutgoingRecord, RecordProducer};
pub use settings::{KafkaSettings, SettingsError};
pub use snapshot::read_until_quiet;
