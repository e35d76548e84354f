//! The seam between drafts and the service that mounts them: the drafts crate
//! validates and keeps drafts, the host (the ingress) owns Kafka, turns a
//! submitted draft into an ordinary CP-1/CP-2 command and answers its status.

use std::time::Duration;

use uuid::Uuid;
use writ_core::{StatusError, SubmissionState};
use writ_http::{Principal, Problem};

/// A draft turned into a command, handed to the host to produce.
#[derive(Debug, Clone, PartialEq)]
pub struct DraftSubmission {
    /// The command type (`ce_type`), e.g. `customer.upsert.v1`.
    pub command_type: String,
    /// The full record, already validated against the type's schema.
    pub payload: serde_json::Value,
    /// `ce_id`: `draft:<id>:<incarnation>:v<version>` — the same for every
    /// submit of one draft version, so a double submit is one command.
    pub idempotency_key: String,
    /// `ce_draftid`: the draft's id as the client named it.
    pub draft_id: String,
    /// The client's `Prefer: wait=N`, uncapped; the host applies its own cap.
    pub wait: Option<Duration>,
}

/// The host's answer about one submission: what it was after `submit` (and
/// the wait, if any), or what it is now (`status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmissionAnswer {
    /// The submission id: `writ_core::submission_id(principal.source(), idempotency_key)`.
    pub submission_id: Uuid,
    /// Its state.
    pub state: SubmissionState,
    /// The master's id for the entity, once applied.
    pub canonical_id: Option<String>,
    /// Why it did not apply.
    pub error: Option<StatusError>,
    /// Whether the host answered an earlier submission with this key instead
    /// of producing a new command.
    pub replayed: bool,
    /// The wait the host honoured (after its cap), for `Preference-Applied`;
    /// `None` when it did not wait.
    pub waited: Option<Duration>,
}

/// What the host (the ingress) does when a draft is submitted.
///
/// Contract, which the drafts crate relies on:
/// - the command's `ce_source` is `principal.source()` and its `ce_id` is
///   `submission.idempotency_key`, so its submission id is
///   `writ_core::submission_id(&principal.source(), &submission.idempotency_key)`;
/// - a key already seen with the same payload is answered from the original
///   submission (`replayed: true`) and produces nothing. The drafts crate calls
///   `submit` again for every submit request of the same draft version — with
///   the same key and payload — and counts on this to make it one command;
/// - `Err` is a problem the client sees as is (e.g. `503` with `Retry-After`
///   when the broker is unreachable).
#[async_trait::async_trait]
pub trait Submitter: Send + Sync + 'static {
    /// Validates nothing (the drafts crate already validated), produces the command and,
    /// when `wait` is set, waits for its terminal status like `Prefer: wait` (CP-1).
    async fn submit(
        &self,
        principal: &Principal,
        submission: DraftSubmission,
    ) -> Result<SubmissionAnswer, Problem>;

    /// The current status of a submission, if known (used to settle drafts whose submit timed out).
    async fn status(
        &self,
        principal: &Principal,
        submission_id: Uuid,
    ) -> Result<Option<SubmissionAnswer>, Problem>;
}
