//! The ingress as the host of CP-4 drafts: `writ_drafts::Submitter` over
//! [`Submitter`], so a submitted draft becomes an ordinary command through the
//! same path as `POST /v1/commands/{type}` (same validation, `ACCEPTED`
//! ordering, idempotency and waits).
//!
//! One difference from the drafts crate's wording: a key still `ACCEPTED` is
//! produced again (answered `replayed: true`), as for every ingress request;
//! the worker's inbox makes that second record a no-op.

use std::sync::Arc;

use uuid::Uuid;
use writ_core::StatusEvent;
use writ_drafts::{DraftSubmission, SubmissionAnswer as DraftAnswer};
use writ_http::{Principal, Problem};

use crate::submit::{store_problem, SubmitExtras, Submitter};

/// Adapts the ingress' [`Submitter`] to the drafts crate's host seam.
#[derive(Debug, Clone)]
pub struct DraftHost(pub Arc<Submitter>);

fn answer(e: StatusEvent, replayed: bool, waited: Option<std::time::Duration>) -> DraftAnswer {
    DraftAnswer {
        submission_id: e.submission_id,
        state: e.state,
        canonical_id: e.canonical_id,
        error: e.error,
        replayed,
        waited,
    }
}

#[async_trait::async_trait]
impl writ_drafts::Submitter for DraftHost {
    async fn submit(
        &self,
        principal: &Principal,
        submission: DraftSubmission,
    ) -> Result<DraftAnswer, Problem> {
        let extras = SubmitExtras {
            draft_id: Some(submission.draft_id),
            wait: submission.wait,
            ..SubmitExtras::default()
        };
        let a = self
            .0
            .submit(
                principal,
                &submission.command_type,
                &submission.payload,
                Some(&submission.idempotency_key),
                extras,
            )
            .await?;
        Ok(answer(a.event, a.replayed, a.waited))
    }

    async fn status(
        &self,
        principal: &Principal,
        submission_id: Uuid,
    ) -> Result<Option<DraftAnswer>, Problem> {
        Ok(self
            .0
            .view()
            .get(submission_id)
            .await
            .map_err(store_problem)?
            .filter(|e| principal.owns_source(&e.source))
            .map(|e| answer(e, false, None)))
    }
}
