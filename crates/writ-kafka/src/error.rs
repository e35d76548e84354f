//! Kafka client errors, classified explicitly: librdkafka error codes are
//! sorted into "keep the record and back off", "never retry" and "retry",
//! instead of treating every failure alike.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use writ_core::{Classified, ErrorDomain, Retryability};

use crate::settings::SettingsError;

/// A failure of a Kafka client operation.
#[derive(Debug, thiserror::Error)]
pub enum KafkaClientError {
    /// The settings were refused before any client was built.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// librdkafka reported an error.
    #[error("kafka {operation} failed: {source}")]
    Kafka {
        /// What writ was doing (`produce`, `commit`, `create topics`, ...).
        operation: &'static str,
        /// The librdkafka error.
        #[source]
        source: KafkaError,
    },
    /// An admin or metadata call finished with a per-item error.
    #[error("kafka {operation} for `{item}` failed: {code:?}")]
    Item {
        /// What writ was doing.
        operation: &'static str,
        /// The topic or resource.
        item: String,
        /// The broker's error code.
        code: RDKafkaErrorCode,
    },
}

impl KafkaClientError {
    /// Wraps a librdkafka error with the operation that failed.
    pub fn kafka(operation: &'static str, source: KafkaError) -> Self {
        Self::Kafka { operation, source }
    }

    /// The librdkafka error code, when there is one.
    pub fn code(&self) -> Option<RDKafkaErrorCode> {
        match self {
            Self::Kafka { source, .. } => source.rdkafka_error_code(),
            Self::Item { code, .. } => Some(*code),
            Self::Settings(_) => None,
        }
    }
}

/// Whether a librdkafka error code can clear by itself.
///
/// Queue full means "keep the record, back off, try again"; the listed codes
/// describe the record, the request or the credentials and will not change;
/// everything else (timeouts, leader moves, transport) is retried.
pub fn retryability_of(code: RDKafkaErrorCode) -> Retryability {
    use RDKafkaErrorCode::*;
    match code {
        QueueFull => Retryability::Retryable {
            after: Some(std::time::Duration::from_millis(100)),
        },
        MessageSizeTooLarge
        | InvalidMessageSize
        | MessageBatchTooLarge
        | InvalidTopic
        | TopicAuthorizationFailed
        | ClusterAuthorizationFailed
        | GroupAuthorizationFailed
        | TransactionalIdAuthorizationFailed
        | SaslAuthenticationFailed
        | InvalidRequiredAcks
        | InvalidRecord
        | InvalidConfig
        | InvalidArgument
        | UnsupportedVersion
        | UnsupportedForMessageFormat
        | PolicyViolation
        | InvalidReplicationFactor
        | InvalidPartitions
        | Fatal
        | Authentication
        | UnsupportedSASLMechanism
        | IllegalSASLState
        | Conflict => Retryability::Permanent,
        _ => Retryability::RETRY,
    }
}

impl Classified for KafkaClientError {
    fn domain(&self) -> ErrorDomain {
        match self {
            Self::Settings(_) => ErrorDomain::Internal,
            _ => ErrorDomain::Infrastructure,
        }
    }

    fn retryability(&self) -> Retryability {
        match self {
            Self::Settings(_) => Retryability::Permanent,
            Self::Kafka { source, .. } => match source {
                // librdkafka already retried these internally; they are pure config/usage errors.
                KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_) => {
                    Retryability::Permanent
                }
                other => other
                    .rdkafka_error_code()
                    .map(retryability_of)
                    .unwrap_or(Retryability::RETRY),
            },
            Self::Item { code, .. } => retryability_of(*code),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Settings(_) => "KAFKA_SETTINGS",
            _ if self.code() == Some(RDKafkaErrorCode::QueueFull) => "KAFKA_QUEUE_FULL",
            _ if self.is_retryable() => "KAFKA_UNAVAILABLE",
            _ => "KAFKA_REFUSED",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_sorted_into_the_three_outcomes() {
        assert_eq!(
            retryability_of(RDKafkaErrorCode::QueueFull),
            Retryability::Retryable {
                after: Some(std::time::Duration::from_millis(100))
            }
        );
        assert_eq!(
            retryability_of(RDKafkaErrorCode::MessageSizeTooLarge),
            Retryability::Permanent
        );
        assert_eq!(
            retryability_of(RDKafkaErrorCode::TopicAuthorizationFailed),
            Retryability::Permanent
        );
        assert!(retryability_of(RDKafkaErrorCode::MessageTimedOut).is_retryable());
        assert!(retryability_of(RDKafkaErrorCode::NotLeaderForPartition).is_retryable());
        assert!(retryability_of(RDKafkaErrorCode::BrokerTransportFailure).is_retryable());
    }

    #[test]
    fn client_errors_carry_their_classification() {
        let e = KafkaClientError::kafka(
            "produce",
            KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
        );
        assert!(e.is_retryable());
        assert_eq!(Classified::code(&e), "KAFKA_QUEUE_FULL");
        let e = KafkaClientError::kafka(
            "produce",
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
        );
        assert!(!e.is_retryable());
        assert_eq!(Classified::code(&e), "KAFKA_REFUSED");
    }
}
