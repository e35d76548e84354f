//! CP-4 drafts (the "shopping cart" pattern): clients save partial commands,
//! resume them later, and submit each once; a submitted draft becomes an
//! ordinary CP-1/CP-2 command through the host (the ingress), is deleted once
//! applied, and is kept with the error when rejected so the user can fix it.
//!
//! The host mounts [`router`] behind its auth middleware, implements
//! [`Submitter`] (produce + wait), forwards status events carrying a draft id
//! to [`DraftService::apply_status`], and runs [`DraftService::spawn_purge`].
//! See the crate's README for the HTTP API with examples.

pub mod config;
mod error;
mod http;
pub mod precondition;
mod service;
pub mod store;
mod submitter;

pub use config::{DraftsConfig, DraftsConfigError};
pub use error::DraftError;
pub use http::router;
pub use service::{
    idempotency_key, valid_draft_id, Clock, DraftService, Settled, SetupError, Submitted,
    MAX_DRAFT_ID_LEN,
};
pub use store::{DraftKey, DraftRecord, DraftStore, Revision, StoreError, SubmissionRecord};
pub use submitter::{DraftSubmission, SubmissionAnswer, Submitter};
