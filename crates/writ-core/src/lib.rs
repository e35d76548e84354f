//! writ's wire contract, with no I/O: the command envelope and its CloudEvents
//! Kafka binding, submission identity, status events and their state machine,
//! the error taxonomy, staleness windows, DLQ headers and the topic layout.
//!
//! Every other writ crate speaks in these types, so a record that one
//! component writes is a record every other component (and any producer in
//! any language that follows `DESIGN.md`) can read.

pub mod cloudevents;
pub mod dlq;
pub mod envelope;
pub mod error;
pub mod fingerprint;
pub mod identity;
pub mod staleness;
pub mod status;
pub mod topics;

pub use cloudevents::{HeaderError, Headers};
pub use envelope::{CommandEnvelope, ContentType};
pub use error::{Classified, ErrorDomain, Retryability};
pub use fingerprint::payload_fingerprint;
pub use identity::submission_id;
pub use staleness::{StalenessError, StalenessWindow};
pub use status::{StatusError, StatusEvent, SubmissionState, TransitionError};
pub use topics::{TopicLayout, TopicNameError};
