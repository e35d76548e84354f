//! The error taxonomy every writ crate classifies its failures into.
//!
//! Two questions decide what happens to a failed command: whose fault is it
//! (the domain), and could trying again help (the retryability). Retry loops,
//! DLQ routing and HTTP answers are driven by these values, never by matching
//! on error messages.

use std::time::Duration;

/// Whose fault a failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorDomain {
    /// The command itself is bad: malformed, invalid, unknown type.
    Input,
    /// The master refused or failed: business rule, version conflict, outage.
    Master,
    /// Kafka, a database connection, the schema registry.
    Infrastructure,
    /// A bug in writ.
    Internal,
}

impl ErrorDomain {
    /// A low-cardinality label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Input => "input",
            Self::Master => "master",
            Self::Infrastructure => "infrastructure",
            Self::Internal => "internal",
        }
    }
}

/// Whether trying the same thing again could succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retryability {
    /// Try again; `after` is a server-given minimum delay (`Retry-After`).
    Retryable {
        /// The delay the other side asked for, if any.
        after: Option<Duration>,
    },
    /// Never retry: the outcome will not change.
    Permanent,
}

impl Retryability {
    /// Retryable with no server-given delay.
    pub const RETRY: Retryability = Retryability::Retryable { after: None };

    /// Whether a retry could help.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Retryable { .. })
    }
}

/// An error that knows its domain, retryability and stable code.
pub trait Classified: std::error::Error {
    /// Whose fault it is.
    fn domain(&self) -> ErrorDomain;
    /// Whether a retry could help.
    fn retryability(&self) -> Retryability;
    /// A stable SCREAMING_SNAKE code for status events, DLQ headers and metrics.
    fn code(&self) -> &'static str;
    /// Shorthand for `retryability().is_retryable()`.
    fn is_retryable(&self) -> bool {
        self.retryability().is_retryable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("master busy")]
    struct Busy;

    impl Classified for Busy {
        fn domain(&self) -> ErrorDomain {
            ErrorDomain::Master
        }
        fn retryability(&self) -> Retryability {
            Retryability::Retryable {
                after: Some(Duration::from_secs(2)),
            }
        }
        fn code(&self) -> &'static str {
            "MASTER_BUSY"
        }
    }

    #[test]
    fn classification_is_carried_by_value() {
        let e: &dyn Classified = &Busy;
        assert!(e.is_retryable());
        assert_eq!(e.domain().as_str(), "master");
        assert!(!Retryability::Permanent.is_retryable());
    }
}
