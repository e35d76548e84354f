//! The codec's one error type, classified so the worker and the ingress decide
//! retry / reject / dead-letter from the variant, never from the message.

use writ_core::{Classified, ErrorDomain, Retryability};

use crate::json::ValidationErrors;

/// Why a payload could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// No schema for this command type (`ce_type`).
    #[error("unknown command type {0:?}")]
    UnknownType(String),
    /// The payload does not match its schema; every field problem is listed.
    #[error("payload does not match its schema: {0}")]
    Validation(ValidationErrors),
    /// The `content-type` is neither JSON nor Avro.
    #[error("unsupported content type {0:?} (expected application/json or application/avro)")]
    UnsupportedContentType(String),
    /// The bytes cannot be decoded at all: truncated, garbage, bad framing.
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// The registry framing names a schema id the registry does not know.
    #[error("schema id {0} is unknown to the schema registry")]
    UnknownSchemaId(u32),
    /// The schema registry could not be reached or failed; retrying may help.
    #[error("schema registry unavailable: {0}")]
    RegistryUnavailable(String),
    /// The registry answered, but refused the schema or returned an unusable one.
    #[error("schema registry refused: {0}")]
    RegistryRejected(String),
    /// A schema file is missing or invalid (a deployment bug, not bad input).
    #[error("schema catalog: {0}")]
    Schema(String),
}

impl CodecError {
    /// Whether the payload can never be decoded, so it belongs in the DLQ as `POISON`.
    pub fn is_poison(&self) -> bool {
        matches!(
            self,
            Self::Malformed(_) | Self::UnknownSchemaId(_) | Self::UnsupportedContentType(_)
        )
    }

    /// The field problems, when this is a validation error.
    pub fn validation_errors(&self) -> Option<&ValidationErrors> {
        match self {
            Self::Validation(v) => Some(v),
            _ => None,
        }
    }
}

impl From<ValidationErrors> for CodecError {
    fn from(v: ValidationErrors) -> Self {
        Self::Validation(v)
    }
}

impl Classified for CodecError {
    fn domain(&self) -> ErrorDomain {
        match self {
            Self::UnknownType(_)
            | Self::Validation(_)
            | Self::UnsupportedContentType(_)
            | Self::Malformed(_)
            | Self::UnknownSchemaId(_) => ErrorDomain::Input,
            Self::RegistryUnavailable(_) | Self::RegistryRejected(_) => ErrorDomain::Infrastructure,
            Self::Schema(_) => ErrorDomain::Internal,
        }
    }

    fn retryability(&self) -> Retryability {
        match self {
            Self::RegistryUnavailable(_) => Retryability::RETRY,
            _ => Retryability::Permanent,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::UnknownType(_) => "UNKNOWN_TYPE",
            Self::Validation(_) => "VALIDATION",
            Self::UnsupportedContentType(_) => "UNSUPPORTED_CONTENT_TYPE",
            Self::Malformed(_) => "POISON",
            Self::UnknownSchemaId(_) => "UNKNOWN_SCHEMA_ID",
            Self::RegistryUnavailable(_) => "REGISTRY_UNAVAILABLE",
            Self::RegistryRejected(_) => "REGISTRY_REJECTED",
            Self::Schema(_) => "SCHEMA",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_registry_unavailable_is_retryable() {
        let all = [
            CodecError::UnknownType("x".into()),
            CodecError::Validation(ValidationErrors::single("$", "bad")),
            CodecError::UnsupportedContentType("text/plain".into()),
            CodecError::Malformed("short".into()),
            CodecError::UnknownSchemaId(7),
            CodecError::RegistryUnavailable("down".into()),
            CodecError::RegistryRejected("incompatible".into()),
            CodecError::Schema("missing".into()),
        ];
        for e in &all {
            let retry = matches!(e, CodecError::RegistryUnavailable(_));
            assert_eq!(e.is_retryable(), retry, "{e}");
            assert!(e.code().chars().all(|c| c.is_ascii_uppercase() || c == '_'));
        }
        assert_eq!(all[1].code(), "VALIDATION");
        assert_eq!(all[3].code(), "POISON");
        assert!(all[3].is_poison() && all[4].is_poison() && !all[1].is_poison());
    }
}
