//! Status events and the submission state machine.
//!
//! A status event is the answer to a command: the worker emits one per
//! command, keyed by submission id, onto the compacted `<domain>.status`
//! topic. That topic is the changelog of the dedupe table, so the state
//! machine here is what every reader relies on: a terminal state never
//! changes, and a duplicate re-emits its original's terminal event.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// Where a submission is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SubmissionState {
    /// Produced to Kafka; not yet applied.
    Accepted,
    /// Applied to the master.
    Applied,
    /// Permanently refused: validation or a business rule.
    Rejected,
    /// The expected version did not match the master's.
    Conflict,
    /// Poison, or retries exhausted: the record is in the DLQ.
    DeadLettered,
}

/// A state change that the state machine forbids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal status transition {from} -> {to}")]
pub struct TransitionError {
    /// The current state.
    pub from: SubmissionState,
    /// The refused next state.
    pub to: SubmissionState,
}

impl SubmissionState {
    /// Every state, in declaration order.
    pub const ALL: [SubmissionState; 5] = [
        Self::Accepted,
        Self::Applied,
        Self::Rejected,
        Self::Conflict,
        Self::DeadLettered,
    ];

    /// The wire name (`APPLIED`, ...), as in the Avro enum.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "ACCEPTED",
            Self::Applied => "APPLIED",
            Self::Rejected => "REJECTED",
            Self::Conflict => "CONFLICT",
            Self::DeadLettered => "DEAD_LETTERED",
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether no further transition can happen.
    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Accepted)
    }

    /// Checks a transition: `ACCEPTED -> any`, and a terminal state may only be
    /// re-stated (duplicates re-emit their original's terminal status).
    ///
    /// `DEAD_LETTERED -> ACCEPTED` is the one way back: an operator replayed the
    /// record from the DLQ, and it is pending again.
    pub fn transition(self, to: SubmissionState) -> Result<SubmissionState, TransitionError> {
        use SubmissionState::*;
        let allowed = match (self, to) {
            (Accepted, _) => true,
            (from, to) if from == to => true,
            (DeadLettered, Accepted) => true,
            _ => false,
        };
        if allowed {
            Ok(to)
        } else {
            Err(TransitionError { from: self, to })
        }
    }
}

impl std::fmt::Display for SubmissionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a submission did not apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusError {
    /// A stable machine-readable code, e.g. `VALIDATION`, `VERSION_MISMATCH`.
    pub code: String,
    /// A human-readable message; never contains secret field values.
    pub message: String,
    /// Whether retrying the same command could succeed.
    pub retryable: bool,
}

/// One status event on `<domain>.status`, keyed by `submission_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusEvent {
    /// UUIDv5 of (source, id); the record key.
    pub submission_id: Uuid,
    /// `ce_source` of the command.
    pub source: String,
    /// `ce_id` of the command: the producer's idempotency key.
    pub id: String,
    /// `ce_type` of the command.
    pub command_type: String,
    /// `ce_subject`: the entity key, when the command had one.
    pub subject: Option<String>,
    /// The state this event reports.
    pub state: SubmissionState,
    /// The master's id for the entity, once applied.
    pub canonical_id: Option<String>,
    /// The master's version of the entity after the apply.
    pub master_version: Option<i64>,
    /// Why the command did not apply.
    pub error: Option<StatusError>,
    /// How many apply attempts were made.
    pub attempts: u32,
    /// SHA-256 of the canonical payload, to tell a retry from a key reuse.
    pub payload_fingerprint: String,
    /// When the command was accepted (ingress or first seen by the worker).
    #[serde(with = "time::serde::rfc3339")]
    pub accepted_at: OffsetDateTime,
    /// When the command reached its terminal state.
    #[serde(with = "time::serde::rfc3339::option")]
    pub applied_at: Option<OffsetDateTime>,
    /// The explicit staleness window: not terminal past this instant is a violation.
    #[serde(with = "time::serde::rfc3339::option")]
    pub stale_after: Option<OffsetDateTime>,
    /// `ce_jobid` of a bulk command.
    pub job_id: Option<String>,
    /// `ce_jobline`: the line of the bulk upload the command came from.
    pub job_line: Option<i64>,
    /// `ce_draftid` of a submitted draft.
    pub draft_id: Option<String>,
    /// `ce_tempid` of an edge record.
    pub temp_id: Option<String>,
}

impl StatusEvent {
    /// Whether the submission is past its staleness window without a terminal state.
    pub fn is_stale(&self, now: OffsetDateTime) -> bool {
        crate::staleness::is_stale(self.state, self.stale_after, now)
    }
}

#[cfg(test)]
mod tests {
    use super::SubmissionState::*;
    use super::*;

    #[test]
    fn accepted_can_reach_every_state() {
        for to in SubmissionState::ALL {
            assert_eq!(Accepted.transition(to), Ok(to));
        }
    }

    #[test]
    fn terminal_states_only_restate_themselves() {
        for from in [Applied, Rejected, Conflict, DeadLettered] {
            assert!(from.is_terminal());
            for to in SubmissionState::ALL {
                let ok = from == to || (from == DeadLettered && to == Accepted);
                assert_eq!(from.transition(to).is_ok(), ok, "{from} -> {to}");
            }
        }
        assert_eq!(
            Applied.transition(Rejected),
            Err(TransitionError {
                from: Applied,
                to: Rejected
            })
        );
    }

    #[test]
    fn wire_names_round_trip() {
        for s in SubmissionState::ALL {
            assert_eq!(SubmissionState::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(SubmissionState::parse("applied"), None);
    }
}
