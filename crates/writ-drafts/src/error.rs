//! What can go wrong with a draft request, as values, and the one place they
//! become RFC 9457 problems: every status code the drafts API answers with is
//! decided here.

use axum::http::StatusCode;
use uuid::Uuid;
use writ_codec::ValidationErrors;
use writ_core::Classified;
use writ_http::{FieldProblem, Problem};

use crate::store::StoreError;

/// Why a draft request failed.
#[derive(Debug, thiserror::Error)]
pub enum DraftError {
    /// The draft id in the path is not usable.
    #[error("draft ids are 1-128 characters of A-Z a-z 0-9 . _ ~ - and not only dots")]
    InvalidId,
    /// The body is not JSON.
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    /// The body is not sent as JSON.
    #[error("send the draft as application/json (got {0:?})")]
    UnsupportedMediaType(String),
    /// The body is over the configured limit.
    #[error("the body exceeds {0} bytes")]
    TooLarge(usize),
    /// A request header is malformed (`If-Match`, `Prefer`).
    #[error("{0}")]
    BadHeader(String),
    /// No such draft for this caller (also another tenant's or owner's).
    #[error("no such draft")]
    NotFound,
    /// The draft was submitted, applied and therefore deleted.
    #[error("the draft was submitted and applied")]
    Applied {
        /// The submission that applied it.
        submission_id: Uuid,
        /// The master's id for the entity.
        canonical_id: Option<String>,
    },
    /// `If-Match` / `If-None-Match` do not hold.
    #[error("{0}")]
    PreconditionFailed(&'static str),
    /// Replacing an existing draft needs `If-Match`.
    #[error("replacing a draft needs If-Match with its current ETag (or * to overwrite)")]
    PreconditionRequired,
    /// The draft body or its data violates the schema as far as it goes;
    /// paths are JSON pointers into the `PUT` body (`/data/email`).
    #[error("the draft does not match the schema ({} invalid fields)", .0.len())]
    Invalid(Vec<FieldProblem>),
    /// Submit: the record is not complete or not valid; paths point into the
    /// draft (`/data/email`).
    #[error("the draft is not a complete record ({} invalid fields)", .0.len())]
    Incomplete(Vec<FieldProblem>),
    /// The API key may not use this command type.
    #[error("this API key may not use command type {0:?}")]
    TypeNotAllowed(String),
    /// The draft changed while it was being submitted.
    #[error("the draft changed while it was being submitted; read it and submit again")]
    Changed,
    /// The host could not submit (e.g. the broker is unreachable).
    #[error("submit failed: {0}")]
    Submitter(Box<Problem>),
    /// The drafts store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One JSON-pointer reference token: `~` and `/` escaped (RFC 6901).
pub(crate) fn pointer_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// `$.a.b[2]["x/y"]` (a codec path) as a JSON pointer below `prefix` (`/data/a/b/2/x~1y`).
pub(crate) fn pointer(prefix: &str, path: &str) -> String {
    let mut out = String::from(prefix);
    let Some(mut rest) = path.strip_prefix('$') else {
        // Not a codec path: keep it readable rather than guess.
        out.push('/');
        out.push_str(path);
        return out;
    };
    let push = |out: &mut String, token: &str| {
        out.push('/');
        out.push_str(&pointer_token(token));
    };
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            push(&mut out, &r[..end]);
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix("[\"") {
            // A quoted key: a JSON string, which may itself contain `"]`.
            let mut strings = serde_json::Deserializer::from_str(&rest[1..]).into_iter::<String>();
            match strings.next() {
                Some(Ok(key)) => {
                    let used = strings.byte_offset();
                    push(&mut out, &key);
                    rest = rest[1 + used..].strip_prefix(']').unwrap_or("");
                }
                _ => {
                    push(&mut out, r);
                    break;
                }
            }
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').unwrap_or(r.len());
            push(&mut out, &r[..end]);
            rest = r.get(end + 1..).unwrap_or("");
        } else {
            push(&mut out, rest);
            break;
        }
    }
    out
}

/// Field problems of `errors`, as pointers below `prefix`.
pub(crate) fn field_problems(prefix: &str, errors: &ValidationErrors) -> Vec<FieldProblem> {
    errors
        .errors
        .iter()
        .map(|e| FieldProblem {
            path: pointer(prefix, &e.path),
            message: e.message.clone(),
        })
        .collect()
}

fn count(errors: &[FieldProblem]) -> String {
    match errors.len() {
        1 => "1 field is invalid".to_owned(),
        n => format!("{n} fields are invalid"),
    }
}

impl From<DraftError> for Problem {
    fn from(e: DraftError) -> Self {
        let detail = e.to_string();
        match e {
            DraftError::InvalidId => Problem::bad_request("bad-draft-id", detail),
            DraftError::InvalidJson(_) => Problem::bad_request("invalid-json", detail),
            DraftError::UnsupportedMediaType(_) => Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            )
            .with_detail(detail),
            DraftError::TooLarge(limit) => Problem::payload_too_large(limit),
            DraftError::BadHeader(_) => Problem::bad_request("bad-header", detail),
            DraftError::NotFound => Problem::not_found("no draft with this id"),
            DraftError::Applied {
                submission_id,
                canonical_id,
            } => Problem::not_found("the draft was submitted and applied, so it no longer exists")
                .with_extension("submissionId", submission_id.to_string())
                .with_extension("state", "APPLIED")
                .with_extension("canonicalId", canonical_id),
            DraftError::PreconditionFailed(_) => Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition-failed",
                "Precondition failed",
            )
            .with_detail(detail),
            DraftError::PreconditionRequired => Problem::new(
                StatusCode::PRECONDITION_REQUIRED,
                "precondition-required",
                "Precondition required",
            )
            .with_detail(detail),
            DraftError::Invalid(errors) => Problem::validation(count(&errors), errors),
            DraftError::Incomplete(errors) => Problem::validation(
                format!("the draft cannot be submitted: {}", count(&errors)),
                errors,
            ),
            DraftError::TypeNotAllowed(_) => Problem::forbidden(detail),
            DraftError::Changed => {
                Problem::new(StatusCode::CONFLICT, "draft-changed", "Draft changed")
                    .with_detail(detail)
            }
            DraftError::Submitter(problem) => *problem,
            DraftError::Store(e) => {
                if e.is_retryable() {
                    tracing::warn!(error = %e, "drafts store unavailable");
                    Problem::unavailable("the drafts store is unavailable; nothing was changed", 1)
                } else {
                    tracing::error!(error = %e, code = e.code(), "drafts store failed");
                    Problem::internal()
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_paths_become_pointers() {
        assert_eq!(pointer("/data", "$"), "/data");
        assert_eq!(pointer("/data", "$.email"), "/data/email");
        assert_eq!(
            pointer("/data", "$.lines[2].quantity"),
            "/data/lines/2/quantity"
        );
        assert_eq!(pointer("", r#"$["a b"]"#), "/a b");
        assert_eq!(pointer("", r#"$["x/y~z"].k"#), "/x~1y~0z/k");
        assert_eq!(pointer("", r#"$["q\"]"][0]"#), "/q\"]/0");
    }

    #[test]
    fn store_failures_hide_their_cause() {
        let p: Problem = DraftError::Store(StoreError::Query("secret sql".into())).into();
        assert_eq!(p.status, 500);
        assert!(!p.to_string().contains("secret"));
        let p: Problem = DraftError::Store(StoreError::Unavailable("down".into())).into();
        assert_eq!(p.status, 503);
        assert_eq!(p.retry_after, Some(1));
    }
}
