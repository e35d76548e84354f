//! The contract between the worker runtime and a system of record.
//!
//! The worker hands a master an ordered slice of decoded commands; the master
//! applies them with an exactly-once effect by keeping an inbox keyed by
//! submission id, and answers one [`ApplyResult`] per command. Failures that
//! prevent answering are a [`MasterError`], classified so the worker knows
//! whether to back off and retry, slow down, or split the batch.

use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;
use writ_core::{Classified, CommandEnvelope, ErrorDomain, Retryability, SubmissionState};

/// A decoded, schema-valid command, ready to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// UUIDv5 of (source, id): the inbox key.
    pub submission_id: Uuid,
    /// The CloudEvents attributes.
    pub envelope: CommandEnvelope,
    /// The decoded payload as plain JSON (defaults filled in).
    pub payload: serde_json::Value,
    /// SHA-256 of the canonical payload.
    pub fingerprint: String,
}

/// What the master did with one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied; the master's id and version of the entity afterwards.
    Applied {
        /// The master's id for the entity.
        canonical_id: Option<String>,
        /// The entity's version after the change.
        version: Option<i64>,
    },
    /// Refused permanently (business rule, constraint, 4xx).
    Rejected {
        /// Stable code, e.g. `CONSTRAINT_VIOLATION`, `HTTP_400`.
        code: String,
        /// Human-readable reason; never contains secret field values.
        message: String,
    },
    /// `ce_expectedversion` did not match the master's version.
    Conflict {
        /// Human-readable reason.
        message: String,
        /// The master's current version, when known.
        current_version: Option<i64>,
    },
}

impl Outcome {
    /// The status state this outcome reports.
    pub fn state(&self) -> SubmissionState {
        match self {
            Self::Applied { .. } => SubmissionState::Applied,
            Self::Rejected { .. } => SubmissionState::Rejected,
            Self::Conflict { .. } => SubmissionState::Conflict,
        }
    }
}

/// The answer for one command of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyResult {
    /// The outcome: fresh, or the one recorded in the inbox.
    pub outcome: Outcome,
    /// True when the inbox already held this submission: nothing was applied
    /// now and `outcome` is the originally recorded one (to be re-emitted).
    pub duplicate: bool,
    /// When the outcome was recorded in the inbox.
    pub recorded_at: OffsetDateTime,
}

/// A failure that prevented answering a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MasterError {
    /// Transient: connection lost, timeout, deadlock, 5xx. Retry with backoff.
    #[error("master unavailable: {message}")]
    Unavailable {
        /// What failed.
        message: String,
        /// A minimum delay the master asked for (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// The master asks writ to slow down (429, 503 with `Retry-After`, too many connections).
    #[error("master throttling: {message}")]
    Throttled {
        /// What the master said.
        message: String,
        /// A minimum delay the master asked for.
        retry_after: Option<Duration>,
    },
    /// One or more commands of a multi-command batch failed in a way that
    /// aborted the whole batch (e.g. a constraint violation rolled back the
    /// transaction). Nothing was committed: split the batch and retry halves.
    /// A master never returns this for a single-command batch: it answers
    /// `Outcome::Rejected` (recorded in the inbox) instead.
    #[error("batch failed: {message}")]
    BatchFailed {
        /// What failed.
        message: String,
    },
    /// A configuration or schema problem: no retry helps until an operator acts.
    #[error("master misconfigured: {message}")]
    Misconfigured {
        /// What is wrong.
        message: String,
    },
}

impl Classified for MasterError {
    fn domain(&self) -> ErrorDomain {
        match self {
            Self::Misconfigured { .. } => ErrorDomain::Internal,
            _ => ErrorDomain::Master,
        }
    }

    fn retryability(&self) -> Retryability {
        match self {
            Self::Unavailable { retry_after, .. } | Self::Throttled { retry_after, .. } => {
                Retryability::Retryable {
                    after: *retry_after,
                }
            }
            // Retrying the same batch cannot help; the worker splits it instead.
            Self::BatchFailed { .. } | Self::Misconfigured { .. } => Retryability::Permanent,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Unavailable { .. } => "MASTER_UNAVAILABLE",
            Self::Throttled { .. } => "MASTER_THROTTLED",
            Self::BatchFailed { .. } => "BATCH_FAILED",
            Self::Misconfigured { .. } => "MASTER_MISCONFIGURED",
        }
    }
}

/// A system of record writ applies commands to.
///
/// # Contract
///
/// - `apply` receives commands in offset order; commands of one entity must
///   take effect in slice order.
/// - Exactly-once effect: every answered command's outcome is recorded in an
///   inbox keyed by `submission_id` before `apply` returns; a command whose
///   submission id is already recorded is not applied again and is answered
///   with the recorded outcome and `duplicate: true`.
/// - On `Err`, retrying the same batch must be safe: SQL masters commit
///   nothing; HTTP masters may have applied and recorded a prefix, which the
///   retry then answers as duplicates.
/// - `Ok` holds exactly one result per command, in input order.
#[async_trait]
pub trait Master: Send + Sync + 'static {
    /// A short name for logs and metrics (`postgres`, `sqlite`, `http`).
    fn kind(&self) -> &'static str;

    /// Whether this master has a mapping for the command type.
    fn handles(&self, command_type: &str) -> bool;

    /// Applies an ordered batch with an exactly-once effect.
    async fn apply(&self, batch: &[Command]) -> Result<Vec<ApplyResult>, MasterError>;

    /// Reads the master's current record of an entity (for reconciliation):
    /// the payload-shaped JSON and the version, or None when absent.
    async fn read(
        &self,
        command_type: &str,
        entity_key: &str,
    ) -> Result<Option<(serde_json::Value, Option<i64>)>, MasterError>;

    /// Deletes inbox entries older than `older_than` (the dedupe window);
    /// returns how many were removed.
    async fn expire_inbox(&self, older_than: OffsetDateTime) -> Result<u64, MasterError>;
}
