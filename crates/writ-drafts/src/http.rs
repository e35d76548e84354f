//! The drafts HTTP API, as a router the host mounts behind its auth
//! middleware: `PUT`/`GET`/`DELETE /v1/drafts/{id}` and
//! `POST /v1/drafts/{id}/submit`. Handlers only translate between HTTP and
//! [`DraftService`]; every error becomes problem+json in `error.rs`.

use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value as Json};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use writ_core::SubmissionState;
use writ_http::{Principal, Problem};

use crate::error::DraftError;
use crate::precondition::{etag, Preconditions};
use crate::service::{DraftService, Submitted};
use crate::store::DraftRecord;

/// `Idempotent-Replayed`, as the ingress answers it.
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// `Preference-Applied` (RFC 7240).
const PREFERENCE_APPLIED: HeaderName = HeaderName::from_static("preference-applied");
/// `Prefer` (RFC 7240).
const PREFER: HeaderName = HeaderName::from_static("prefer");

/// The drafts API. Expects a [`Principal`] request extension, set by the
/// host's auth middleware (`writ_http::authenticate`).
pub fn router(service: DraftService) -> Router {
    Router::new()
        .route(
            "/v1/drafts/{id}",
            get(get_draft).put(put_draft).delete(delete_draft),
        )
        .route("/v1/drafts/{id}/submit", post(submit_draft))
        .with_state(service)
}

/// The authenticated caller.
struct Caller(Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        parts.extensions.get::<Principal>().cloned().map(Caller).ok_or_else(|| {
            // A wiring bug in the host, never the client's fault.
            tracing::error!("drafts: request without a Principal; mount the router behind the auth middleware");
            Problem::internal()
        })
    }
}

fn draft_id(path: Result<Path<String>, PathRejection>) -> Result<String, DraftError> {
    path.map(|Path(id)| id).map_err(|_| DraftError::InvalidId)
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

fn draft_path(id: &str) -> String {
    format!("/v1/drafts/{id}")
}

fn submission_path(id: uuid::Uuid) -> String {
    format!("/v1/submissions/{id}")
}

/// The JSON representation of a draft.
fn draft_body(service: &DraftService, record: &DraftRecord) -> Json {
    let problems = service.completeness(record);
    let submission = record.submission.as_ref().map(|s| {
        json!({
            "submissionId": s.id,
            "version": s.version,
            "state": s.state,
            "canonicalId": s.canonical_id,
            "error": s.error,
            "submittedAt": rfc3339(s.submitted_at),
        })
    });
    let mut links = json!({
        "self": draft_path(&record.key.id),
        "submit": format!("{}/submit", draft_path(&record.key.id)),
    });
    if let Some(s) = &record.submission {
        links["submission"] = json!(submission_path(s.id));
    }
    json!({
        "id": record.key.id,
        "type": record.command_type,
        "data": record.data,
        "version": record.revision.version,
        "createdAt": rfc3339(record.created_at),
        "updatedAt": rfc3339(record.updated_at),
        "expiresAt": rfc3339(service.expires_at(record.updated_at)),
        "validation": {"complete": problems.is_empty(), "errors": problems
            .iter()
            .map(|p| json!({"path": p.path, "message": p.message}))
            .collect::<Vec<_>>()},
        "submission": submission,
        "links": links,
    })
}

fn json_response(status: StatusCode, body: &Json) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn with_etag(mut response: Response, record: &DraftRecord) -> Response {
    if let Ok(v) = HeaderValue::from_str(&etag(&record.revision)) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

fn preconditions(headers: &HeaderMap) -> Result<Preconditions, DraftError> {
    Preconditions::from_headers(headers).map_err(|e| DraftError::BadHeader(e.to_string()))
}

/// Reads the JSON body, refusing other media types and bodies over `limit`.
async fn read_json(headers: &HeaderMap, body: Body, limit: usize) -> Result<Json, DraftError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let text = ct.to_str().unwrap_or("");
        let mime = text
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if mime != "application/json" && !mime.ends_with("+json") {
            return Err(DraftError::UnsupportedMediaType(text.to_owned()));
        }
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let inner = e.into_inner();
        if inner
            .downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            DraftError::TooLarge(limit)
        } else {
            DraftError::InvalidJson(format!("the body could not be read: {inner}"))
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| DraftError::InvalidJson(e.to_string()))
}

/// `Prefer: wait=N` (RFC 7240), seconds; other preferences are ignored.
fn prefer_wait(headers: &HeaderMap) -> Result<Option<Duration>, DraftError> {
    let bad = || DraftError::BadHeader("Prefer: wait must be a whole number of seconds".into());
    for value in headers.get_all(PREFER) {
        let value = value.to_str().map_err(|_| bad())?;
        for preference in value.split(',') {
            let token = preference.split(';').next().unwrap_or("").trim();
            let Some((name, v)) = token.split_once('=') else {
                continue;
            };
            if name.trim().eq_ignore_ascii_case("wait") {
                let secs: u64 = v.trim().trim_matches('"').parse().map_err(|_| bad())?;
                return Ok(Some(Duration::from_secs(secs)));
            }
        }
    }
    Ok(None)
}

async fn get_draft(
    State(service): State<DraftService>,
    Caller(principal): Caller,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let id = draft_id(path)?;
    let pre = preconditions(&headers)?;
    let record = service.get(&principal, &id).await?;
    if pre
        .if_none_match
        .is_some_and(|l| l.matches_weak(&etag(&record.revision)))
    {
        return Ok(with_etag(StatusCode::NOT_MODIFIED.into_response(), &record));
    }
    let body = draft_body(&service, &record);
    Ok(with_etag(json_response(StatusCode::OK, &body), &record))
}

async fn put_draft(
    State(service): State<DraftService>,
    Caller(principal): Caller,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let id = draft_id(path)?;
    let pre = preconditions(&headers)?;
    let document = read_json(&headers, body, service.config().max_body_bytes).await?;
    let (record, created) = service.put(&principal, &id, &document, &pre).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = with_etag(
        json_response(status, &draft_body(&service, &record)),
        &record,
    );
    if created {
        if let Ok(v) = HeaderValue::from_str(&draft_path(&id)) {
            response.headers_mut().insert(header::LOCATION, v);
        }
    }
    Ok(response)
}

async fn delete_draft(
    State(service): State<DraftService>,
    Caller(principal): Caller,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let id = draft_id(path)?;
    let pre = preconditions(&headers)?;
    service.delete(&principal, &id, &pre).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn submit_draft(
    State(service): State<DraftService>,
    Caller(principal): Caller,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let id = draft_id(path)?;
    let pre = preconditions(&headers)?;
    let wait = prefer_wait(&headers)?;
    let submitted = service.submit(&principal, &id, &pre, wait).await?;
    Ok(submit_response(&id, submitted))
}

/// Answers like the ingress: 201 applied, 202 accepted, 422 rejected,
/// 409 conflict, dead-lettered 502 when the master kept failing (retryable)
/// and 422 when the command can never apply.
fn submit_response(id: &str, submitted: Submitted) -> Response {
    let answer = &submitted.answer;
    let status_url = submission_path(answer.submission_id);
    let draft = json!({
        "id": id,
        "version": submitted.version,
        "deleted": submitted.deleted,
    });
    let mut links = json!({"status": status_url});
    if !submitted.deleted {
        links["draft"] = json!(draft_path(id));
    }
    let failed = |status: StatusCode, slug: &str, title: &str| {
        let (code, detail) = match &answer.error {
            Some(e) => (e.code.clone(), e.message.clone()),
            None => (answer.state.as_str().to_owned(), title.to_owned()),
        };
        Problem::new(status, slug, title)
            .with_detail(detail)
            .with_extension("submissionId", answer.submission_id.to_string())
            .with_extension("state", answer.state.as_str())
            .with_extension("code", code)
            .with_extension("error", json!(answer.error))
            .with_extension("draft", draft.clone())
            .with_extension("links", links.clone())
            .into_response()
    };
    let mut response = match answer.state {
        SubmissionState::Applied | SubmissionState::Accepted => {
            let status = if answer.state == SubmissionState::Applied {
                StatusCode::CREATED
            } else {
                StatusCode::ACCEPTED
            };
            let body = json!({
                "submissionId": answer.submission_id,
                "state": answer.state,
                "canonicalId": answer.canonical_id,
                "draft": draft,
                "links": links,
            });
            json_response(status, &body)
        }
        SubmissionState::Rejected => failed(
            StatusCode::UNPROCESSABLE_ENTITY,
            "rejected",
            "Rejected by the master",
        ),
        SubmissionState::Conflict => failed(StatusCode::CONFLICT, "conflict", "Version conflict"),
        // Retries exhausted against a failing master is the master's fault, not the draft's.
        SubmissionState::DeadLettered if answer.error.as_ref().is_some_and(|e| e.retryable) => {
            failed(
                StatusCode::BAD_GATEWAY,
                "dead-lettered",
                "Dead-lettered: the master kept failing",
            )
        }
        SubmissionState::DeadLettered => failed(
            StatusCode::UNPROCESSABLE_ENTITY,
            "dead-lettered",
            "Dead-lettered: the command cannot be applied",
        ),
    };
    if let Ok(v) = HeaderValue::from_str(&status_url) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    let headers = response.headers_mut();
    if answer.replayed {
        headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    if let Some(waited) = answer.waited {
        if let Ok(v) = HeaderValue::from_str(&format!("wait={}", waited.as_secs())) {
            headers.insert(PREFERENCE_APPLIED, v);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn prefer_wait_is_parsed_among_other_preferences() {
        assert_eq!(prefer_wait(&headers(&[])).unwrap(), None);
        assert_eq!(
            prefer_wait(&headers(&[("prefer", "respond-async, wait=10")])).unwrap(),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            prefer_wait(&headers(&[
                ("prefer", "handling=lenient"),
                ("prefer", "WAIT=\"3\"")
            ]))
            .unwrap(),
            Some(Duration::from_secs(3))
        );
        for bad in ["wait=soon", "wait=-1", "wait=1.5"] {
            assert!(prefer_wait(&headers(&[("prefer", bad)])).is_err(), "{bad}");
        }
    }
}
