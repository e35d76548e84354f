//! The HTTP surface: routes, request parsing and the mapping of submission
//! answers to status codes. Handlers only translate HTTP to
//! [`Submitter`](crate::submit::Submitter) calls and back; every error leaves
//! as RFC 9457 problem+json through [`Problem`].

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;
use writ_core::cloudevents::format_time;
use writ_core::{StatusEvent, SubmissionState};
use writ_http::{authenticate, ApiKeys, Principal, Problem};
use writ_kafka::RecordProducer;

use crate::config::Limits;
use crate::jobs;
use crate::metrics::IngressMetrics;
use crate::store::JobRecord;
use crate::submit::{store_problem, SubmissionAnswer, SubmitExtras, Submitter};

/// `Idempotent-Replayed` (IETF httpapi idempotency draft).
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// `Preference-Applied` (RFC 7240).
pub const PREFERENCE_APPLIED: HeaderName = HeaderName::from_static("preference-applied");
/// `Idempotency-Key`.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// `Staleness-Window`: the window a client asks for, in seconds.
pub const STALENESS_WINDOW: HeaderName = HeaderName::from_static("staleness-window");

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The submission engine.
    pub submitter: Arc<Submitter>,
    /// The Kafka producer, for the readiness probe.
    pub producer: RecordProducer,
    /// Request limits.
    pub limits: Limits,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// A topic the readiness probe asks metadata for (not the whole cluster's).
    pub probe_topic: String,
}

/// The whole router: a function of its state, testable with `oneshot`.
pub fn router(state: AppState, keys: Arc<ApiKeys>) -> Router {
    let api = Router::new()
        .route("/v1/commands/{type}", post(post_command))
        .route("/v1/submissions/{id}", get(get_submission))
        .route("/v1/jobs", post(post_job))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/errors", get(get_job_errors))
        .route("/v1/types", get(get_types))
        .layer(axum::middleware::from_fn_with_state(keys, authenticate));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .route("/openapi.json", get(openapi))
        .merge(api)
        .with_state(state)
}

/// The OpenAPI document, generated from the handlers and body types.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "writ ingress",
        description = "Safe writes to a system of record over Kafka: CP-1 sync, CP-2 async and CP-3 bulk commands."
    ),
    paths(
        post_command,
        get_submission,
        post_job,
        get_job,
        get_job_errors,
        get_types,
        healthz,
        readyz
    ),
    components(schemas(
        SubmissionBody,
        Links,
        SubmissionView,
        ErrorView,
        JobBody,
        JobView,
        StateCounts,
        JobErrors,
        LineErrorView,
        TypeView,
        StalenessView,
        ProblemDoc
    ))
)]
pub struct ApiDoc;

/// An RFC 9457 problem (documentation of [`Problem`]'s JSON shape).
#[derive(Serialize, ToSchema)]
pub struct ProblemDoc {
    /// `urn:writ:problem:<slug>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Summary of the problem type.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// This occurrence.
    pub detail: Option<String>,
}

/// Links to related resources.
#[derive(Debug, Serialize, ToSchema)]
pub struct Links {
    /// This resource.
    #[serde(rename = "self")]
    pub self_: String,
    /// A job's line errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<String>,
}

/// The answer to `POST /v1/commands/{type}` (`201` or `202`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubmissionBody {
    /// UUIDv5 of (tenant source, Idempotency-Key).
    pub submission_id: String,
    /// `ACCEPTED` (202) or `APPLIED` (201).
    pub state: String,
    /// The master's id of the entity (201).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canonical_id: Option<String>,
    /// The master's version after the apply (201).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_version: Option<i64>,
    /// Pending past this instant is a staleness violation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_after: Option<String>,
    /// Where to read the status.
    pub links: Links,
}

/// Why a submission did not apply.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorView {
    /// Stable code.
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// Whether the same command could succeed later.
    pub retryable: bool,
}

/// `GET /v1/submissions/{id}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubmissionView {
    /// The submission id.
    pub submission_id: String,
    /// The client's Idempotency-Key (`ce_id`).
    pub idempotency_key: String,
    /// Command type.
    #[serde(rename = "type")]
    pub command_type: String,
    /// Entity key.
    pub subject: Option<String>,
    /// ACCEPTED, APPLIED, REJECTED, CONFLICT or DEAD_LETTERED.
    pub state: String,
    /// The master's id, once applied.
    pub canonical_id: Option<String>,
    /// The master's version after the apply.
    pub master_version: Option<i64>,
    /// Why it did not apply.
    pub error: Option<ErrorView>,
    /// Apply attempts so far.
    pub attempts: u32,
    /// When it was accepted (RFC 3339).
    pub accepted_at: String,
    /// When it reached its terminal state.
    pub applied_at: Option<String>,
    /// Its staleness deadline.
    pub stale_after: Option<String>,
    /// Pending past its deadline.
    pub stale: bool,
    /// Bulk job.
    pub job_id: Option<String>,
    /// Line in the bulk upload.
    pub job_line: Option<i64>,
    /// Draft it came from.
    pub draft_id: Option<String>,
    /// Temporary id handed out for the entity.
    pub temp_id: Option<String>,
    /// Links.
    pub links: Links,
}

impl SubmissionView {
    /// The view of a status event.
    pub fn of(e: &StatusEvent) -> Self {
        Self {
            submission_id: e.submission_id.to_string(),
            idempotency_key: e.id.clone(),
            command_type: e.command_type.clone(),
            subject: e.subject.clone(),
            state: e.state.as_str().to_owned(),
            canonical_id: e.canonical_id.clone(),
            master_version: e.master_version,
            error: e.error.as_ref().map(|x| ErrorView {
                code: x.code.clone(),
                message: x.message.clone(),
                retryable: x.retryable,
            }),
            attempts: e.attempts,
            accepted_at: format_time(e.accepted_at),
            applied_at: e.applied_at.map(format_time),
            stale_after: e.stale_after.map(format_time),
            stale: e.is_stale(time::OffsetDateTime::now_utc()),
            job_id: e.job_id.clone(),
            job_line: e.job_line,
            draft_id: e.draft_id.clone(),
            temp_id: e.temp_id.clone(),
            links: submission_links(e.submission_id),
        }
    }
}

fn submission_links(id: Uuid) -> Links {
    Links {
        self_: format!("/v1/submissions/{id}"),
        errors: None,
    }
}

/// `202` answer to an upload.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobBody {
    /// Job id (`ce_jobid`).
    pub job_id: String,
    /// UPLOADED (every valid line is in Kafka) or FAILED.
    pub state: String,
    /// Non-blank lines read.
    pub lines: u64,
    /// Commands produced (by this upload, or by an interrupted earlier
    /// attempt of the same job): `lines = produced + invalid + replayed`.
    pub produced: u64,
    /// Lines refused by the ingress.
    pub invalid: u64,
    /// Lines already applied earlier with the same key and payload.
    pub replayed: u64,
    /// Links.
    pub links: Links,
}

impl JobBody {
    fn of(job: &JobRecord) -> Self {
        Self {
            job_id: job.job_id.clone(),
            state: job.state.as_str().to_owned(),
            lines: job.lines,
            produced: job.produced,
            invalid: job.invalid,
            replayed: job.replayed,
            links: job_links(&job.job_id),
        }
    }
}

fn job_links(id: &str) -> Links {
    Links {
        self_: format!("/v1/jobs/{id}"),
        errors: Some(format!("/v1/jobs/{id}/errors")),
    }
}

/// Submissions of a job per state.
#[derive(Debug, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StateCounts {
    /// Pending.
    pub accepted: u64,
    /// Applied.
    pub applied: u64,
    /// Rejected by the master.
    pub rejected: u64,
    /// Version conflicts.
    pub conflict: u64,
    /// Dead-lettered.
    pub dead_lettered: u64,
}

/// `GET /v1/jobs/{id}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    /// Job id.
    pub job_id: String,
    /// Command type of the lines.
    #[serde(rename = "type")]
    pub command_type: String,
    /// UPLOADING, UPLOADED or FAILED.
    pub upload_state: String,
    /// Non-blank lines read.
    pub lines: u64,
    /// Commands produced.
    pub produced: u64,
    /// Lines refused by the ingress.
    pub invalid: u64,
    /// Lines replayed from an earlier identical submission.
    pub replayed: u64,
    /// Status of the produced lines.
    pub counts: StateCounts,
    /// Finished lines / lines, 0..=1.
    pub progress: f64,
    /// Upload complete and every produced line terminal.
    pub done: bool,
    /// When the upload started.
    pub created_at: String,
    /// Links.
    pub links: Links,
}

/// One failed line.
#[derive(Debug, Serialize, ToSchema)]
pub struct LineErrorView {
    /// 1-based line number.
    pub line: u64,
    /// Stable code.
    pub code: String,
    /// What is wrong.
    pub message: String,
}

/// `GET /v1/jobs/{id}/errors`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobErrors {
    /// Job id.
    pub job_id: String,
    /// Failed lines, in line order.
    pub errors: Vec<LineErrorView>,
    /// Pass as `after` for the next page, when there may be more.
    pub next_after: Option<u64>,
}

/// A type's staleness bounds, ms.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StalenessView {
    /// Default window.
    pub default_ms: u64,
    /// Shortest allowed.
    pub min_ms: u64,
    /// Longest allowed.
    pub max_ms: u64,
}

/// One entry of `GET /v1/types`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TypeView {
    /// Command type (`ce_type`).
    #[serde(rename = "type")]
    pub command_type: String,
    /// Domain.
    pub domain: String,
    /// JSON pointer of the entity key.
    pub entity_key: Option<String>,
    /// JSON pointer of a bulk line's key.
    pub line_key: Option<String>,
    /// Staleness window.
    pub staleness: StalenessView,
    /// The Avro schema.
    #[schema(value_type = Object)]
    pub schema: serde_json::Value,
}

/// `POST /v1/jobs` query.
#[derive(Debug, Deserialize)]
pub struct JobQuery {
    /// Command type of every line.
    #[serde(rename = "type")]
    pub command_type: String,
}

/// `GET /v1/jobs/{id}/errors` query.
#[derive(Debug, Deserialize)]
pub struct ErrorsQuery {
    /// Only lines after this one.
    #[serde(default)]
    pub after: u64,
    /// Page size (default 1000, at most 10000).
    #[serde(default)]
    pub limit: Option<u32>,
}

fn header_str<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<Option<&'h str>, Problem> {
    headers
        .get(name)
        .map(|v| {
            v.to_str().map_err(|_| {
                Problem::bad_request(
                    "invalid-header",
                    format!("the `{name}` header is not visible ASCII"),
                )
            })
        })
        .transpose()
}

/// `Prefer: wait=N` (RFC 7240), in seconds; other preferences are ignored.
pub fn prefer_wait(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get_all(header::HeaderName::from_static("prefer"))
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|pref| {
            let token = pref.split(';').next()?.trim();
            let (name, value) = token.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("wait")
                .then(|| value.trim().trim_matches('"').parse::<u64>().ok())
                .flatten()
        })
        .next()
        .map(Duration::from_secs)
}

fn extras(headers: &HeaderMap) -> Result<SubmitExtras, Problem> {
    let staleness = header_str(headers, &STALENESS_WINDOW)?
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map(Duration::from_secs)
                .map_err(|_| {
                    Problem::bad_request(
                        "staleness-window",
                        "Staleness-Window must be a whole number of seconds",
                    )
                })
        })
        .transpose()?;
    let expected_version = header_str(headers, &header::IF_MATCH)?
        .map(|v| {
            v.trim().trim_matches('"').parse::<i64>().map_err(|_| {
                Problem::bad_request(
                    "if-match",
                    "If-Match must be the entity's master version, e.g. \"3\"",
                )
            })
        })
        .transpose()?;
    let traceparent = header_str(headers, &HeaderName::from_static("traceparent"))
        .ok()
        .flatten()
        .filter(|v| v.len() <= 128 && v.split('-').count() == 4)
        .map(str::to_owned);
    Ok(SubmitExtras {
        wait: prefer_wait(headers),
        staleness,
        expected_version,
        traceparent,
        ..SubmitExtras::default()
    })
}

async fn read_json(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<serde_json::Value, Problem> {
    if let Some(ct) = header_str(headers, &header::CONTENT_TYPE)? {
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            )
            .with_detail("send the command as application/json"));
        }
    }
    let declared =
        header_str(headers, &header::CONTENT_LENGTH)?.and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Problem::payload_too_large(limit));
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            Problem::payload_too_large(limit)
        } else {
            Problem::bad_request(
                "unreadable-body",
                format!("the body could not be read: {e}"),
            )
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Problem::bad_request("invalid-json", format!("the body is not valid JSON: {e}"))
    })
}

/// Submit one command (CP-2; CP-1 with `Prefer: wait=N`).
#[utoipa::path(
    post, path = "/v1/commands/{type}",
    params(("type" = String, Path, description = "Command type, e.g. customer.upsert.v1"),
           ("Idempotency-Key" = String, Header, description = "Required by default; a retry with the same key is answered, not applied twice"),
           ("Prefer" = Option<String>, Header, description = "wait=N: wait up to N seconds for the outcome (RFC 7240)"),
           ("Staleness-Window" = Option<u64>, Header, description = "Seconds by which the command must be applied")),
    request_body(content = Object, content_type = "application/json", description = "The command payload, per the type's schema"),
    responses(
        (status = 201, description = "Applied (CP-1, or the replay of an applied submission)", body = SubmissionBody),
        (status = 202, description = "Accepted (CP-2, or a CP-1 wait that timed out)", body = SubmissionBody),
        (status = 400, description = "Invalid JSON or a missing Idempotency-Key", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "Unknown command type", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "Version conflict (CP-1), or a request with the same key is in progress", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "Body over the limit", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Schema violation, key reused with another payload, or rejected (CP-1)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Kafka unreachable; retry after Retry-After", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
async fn post_command(
    State(s): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(command_type): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        s.submitter.route(&principal, &command_type)?;
        let key = header_str(&headers, &IDEMPOTENCY_KEY)?;
        s.submitter.idempotency_key(key)?;
        let extras = extras(&headers)?;
        let payload = read_json(&headers, body, s.limits.body_max_bytes).await?;
        s.submitter
            .submit(&principal, &command_type, &payload, key, extras)
            .await
    }
    .await;
    let response = match result {
        Ok(answer) => answer_response(&answer),
        Err(p) => p.into_response(),
    };
    IngressMetrics.request("commands", response.status().as_u16());
    response
}

/// The HTTP answer for a submission's state.
pub fn answer_response(answer: &SubmissionAnswer) -> Response {
    let e = &answer.event;
    let location = format!("/v1/submissions/{}", e.submission_id);
    let mut response = match e.state {
        SubmissionState::Accepted | SubmissionState::Applied => {
            let status = if e.state == SubmissionState::Applied {
                StatusCode::CREATED
            } else {
                StatusCode::ACCEPTED
            };
            let body = SubmissionBody {
                submission_id: e.submission_id.to_string(),
                state: e.state.as_str().to_owned(),
                canonical_id: e.canonical_id.clone(),
                master_version: e.master_version,
                stale_after: e.stale_after.map(format_time),
                links: submission_links(e.submission_id),
            };
            (status, Json(body)).into_response()
        }
        state => outcome_problem(e, state).into_response(),
    };
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, v);
    }
    if answer.replayed {
        headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    if let Some(w) = answer.waited {
        if let Ok(v) = HeaderValue::from_str(&format!("wait={}", w.as_secs())) {
            headers.insert(PREFERENCE_APPLIED, v);
        }
    }
    response
}

fn outcome_problem(e: &StatusEvent, state: SubmissionState) -> Problem {
    let (code, message, retryable) = e
        .error
        .as_ref()
        .map(|x| (x.code.clone(), x.message.clone(), x.retryable))
        .unwrap_or_else(|| (state.as_str().to_owned(), String::new(), false));
    let problem = match state {
        SubmissionState::Conflict => {
            Problem::new(StatusCode::CONFLICT, "conflict", "Version conflict")
        }
        SubmissionState::Rejected => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "rejected",
            "Rejected by the master",
        ),
        // Retries exhausted against a failing master is the master's fault, not the request's.
        _ if retryable => Problem::new(
            StatusCode::BAD_GATEWAY,
            "dead-lettered",
            "Dead-lettered: the master kept failing",
        ),
        _ => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "dead-lettered",
            "Dead-lettered: the command cannot be applied",
        ),
    };
    let mut problem = problem
        .with_detail(if message.is_empty() {
            code.clone()
        } else {
            message
        })
        .with_extension("submissionId", e.submission_id.to_string())
        .with_extension("state", state.as_str())
        .with_extension("code", code);
    if let Some(v) = e.master_version {
        problem = problem.with_extension("masterVersion", v);
    }
    problem
}

/// Read a submission's current state.
#[utoipa::path(
    get, path = "/v1/submissions/{id}",
    params(("id" = String, Path, description = "Submission id")),
    responses((status = 200, body = SubmissionView), (status = 404, body = ProblemDoc, content_type = "application/problem+json"))
)]
async fn get_submission(
    State(s): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        let not_found = || Problem::not_found(format!("no submission {id}"));
        let uuid = Uuid::parse_str(&id).map_err(|_| not_found())?;
        let event = s
            .submitter
            .view()
            .get(uuid)
            .await
            .map_err(store_problem)?
            .filter(|e| principal.owns_source(&e.source))
            .ok_or_else(not_found)?;
        Ok::<_, Problem>(Json(SubmissionView::of(&event)))
    }
    .await;
    let response = result.into_response();
    IngressMetrics.request("submissions", response.status().as_u16());
    response
}

/// Upload a bulk job: NDJSON, one command per line, streamed.
#[utoipa::path(
    post, path = "/v1/jobs",
    params(("type" = String, Query, description = "Command type of every line"),
           ("Idempotency-Key" = String, Header, description = "Names the job: re-sending the upload with the same key resumes it")),
    request_body(content = String, content_type = "application/x-ndjson"),
    responses(
        (status = 202, description = "Every valid line is durably in Kafka", body = JobBody),
        (status = 413, description = "Upload over the limit", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Kafka unreachable; re-send with the same Idempotency-Key", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
async fn post_job(
    State(s): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<JobQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let route = s.submitter.route(&principal, &q.command_type)?.clone();
        let key = s
            .submitter
            .idempotency_key(header_str(&headers, &IDEMPOTENCY_KEY)?)?;
        let staleness = extras(&headers)?.staleness;
        let declared =
            header_str(&headers, &header::CONTENT_LENGTH)?.and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > s.limits.upload_max_bytes) {
            return Err(Problem::payload_too_large(
                s.limits.upload_max_bytes as usize,
            ));
        }
        s.submitter.ensure_ready()?;
        let job_id = jobs::job_id(&principal.source(), &key);
        let _in_flight = s.submitter.in_flight().claim(format!("job:{job_id}"))?;
        let store = s.submitter.view().store();
        if let Some(done) = store.get_job(&job_id).await.map_err(store_problem)? {
            if done.state == crate::store::JobState::Uploaded {
                return Ok((done, true));
            }
        }
        let stream = body.into_data_stream();
        jobs::upload(
            &s.submitter,
            &principal,
            &q.command_type,
            &route,
            job_id,
            staleness,
            &s.limits,
            stream,
        )
        .await
        .map(|job| (job, false))
        .map_err(|failed| failed.problem)
    }
    .await;
    let response = match result {
        Ok((job, replayed)) => {
            let mut r = (StatusCode::ACCEPTED, Json(JobBody::of(&job))).into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("/v1/jobs/{}", job.job_id)) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            if replayed {
                r.headers_mut()
                    .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
            }
            r
        }
        Err(p) => p.into_response(),
    };
    IngressMetrics.request("jobs", response.status().as_u16());
    response
}

async fn owned_job(s: &AppState, principal: &Principal, id: &str) -> Result<JobRecord, Problem> {
    s.submitter
        .view()
        .store()
        .get_job(id)
        .await
        .map_err(store_problem)?
        .filter(|j| principal.owns_source(&j.source))
        .ok_or_else(|| Problem::not_found(format!("no job {id}")))
}

/// A job's progress.
#[utoipa::path(
    get, path = "/v1/jobs/{id}",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = JobView), (status = 404, body = ProblemDoc, content_type = "application/problem+json"))
)]
async fn get_job(
    State(s): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        let job = owned_job(&s, &principal, &id).await?;
        let by_state = s
            .submitter
            .view()
            .store()
            .job_counts(&id)
            .await
            .map_err(store_problem)?;
        let n = |st: SubmissionState| by_state.get(&st).copied().unwrap_or(0);
        let counts = StateCounts {
            accepted: n(SubmissionState::Accepted),
            applied: n(SubmissionState::Applied),
            rejected: n(SubmissionState::Rejected),
            conflict: n(SubmissionState::Conflict),
            dead_lettered: n(SubmissionState::DeadLettered),
        };
        let terminal = counts.applied + counts.rejected + counts.conflict + counts.dead_lettered;
        let done = job.state == crate::store::JobState::Uploaded
            && counts.accepted == 0
            && terminal >= job.tracked;
        let finished = terminal + job.invalid + job.replayed;
        let progress = if job.lines == 0 {
            if done {
                1.0
            } else {
                0.0
            }
        } else {
            (finished as f64 / job.lines as f64).min(1.0)
        };
        Ok::<_, Problem>(Json(JobView {
            job_id: job.job_id.clone(),
            command_type: job.command_type.clone(),
            upload_state: job.state.as_str().to_owned(),
            lines: job.lines,
            produced: job.produced,
            invalid: job.invalid,
            replayed: job.replayed,
            counts,
            progress,
            done,
            created_at: format_time(job.created_at),
            links: job_links(&job.job_id),
        }))
    }
    .await;
    let response = result.into_response();
    IngressMetrics.request("jobs", response.status().as_u16());
    response
}

/// A job's failed lines, at the ingress (invalid) or at the worker (rejected, conflict, dead-lettered).
#[utoipa::path(
    get, path = "/v1/jobs/{id}/errors",
    params(("id" = String, Path, description = "Job id"),
           ("after" = Option<u64>, Query, description = "Only lines after this one"),
           ("limit" = Option<u32>, Query, description = "Page size (default 1000)")),
    responses((status = 200, body = JobErrors), (status = 404, body = ProblemDoc, content_type = "application/problem+json"))
)]
async fn get_job_errors(
    State(s): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<ErrorsQuery>,
) -> Response {
    let result = async {
        owned_job(&s, &principal, &id).await?;
        let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
        let errors = s
            .submitter
            .view()
            .store()
            .job_errors(&id, q.after, limit)
            .await
            .map_err(store_problem)?;
        let next_after = (errors.len() == limit as usize)
            .then(|| errors.last().map(|e| e.line))
            .flatten();
        Ok::<_, Problem>(Json(JobErrors {
            job_id: id.clone(),
            errors: errors
                .into_iter()
                .map(|e| LineErrorView {
                    line: e.line,
                    code: e.code,
                    message: e.message,
                })
                .collect(),
            next_after,
        }))
    }
    .await;
    let response = result.into_response();
    IngressMetrics.request("jobs", response.status().as_u16());
    response
}

/// The command types this API key may submit, with their schemas.
#[utoipa::path(get, path = "/v1/types", responses((status = 200, body = Vec<TypeView>)))]
async fn get_types(
    State(s): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Json<Vec<TypeView>> {
    let mut out: Vec<TypeView> = s
        .submitter
        .routes()
        .iter()
        .filter(|(name, _)| principal.may_use(name))
        .map(|(name, route)| TypeView {
            command_type: name.clone(),
            domain: route.layout.domain().to_owned(),
            entity_key: route.entity_key.clone(),
            line_key: route.line_key.clone(),
            staleness: StalenessView {
                default_ms: route.staleness.default.as_millis() as u64,
                min_ms: route.staleness.min.as_millis() as u64,
                max_ms: route.staleness.max.as_millis() as u64,
            },
            schema: s
                .submitter
                .codec()
                .catalog()
                .get(name)
                .and_then(|c| serde_json::from_str(c.raw()).ok())
                .unwrap_or(serde_json::Value::Null),
        })
        .collect();
    out.sort_by(|a, b| a.command_type.cmp(&b.command_type));
    Json(out)
}

/// Liveness.
/// Liveness: the process answers and its producer can still produce. An
/// idempotent producer that hit a fatal error (e.g. an out-of-order sequence)
/// refuses every later record; only a new process recovers, so say so to the
/// orchestrator instead of answering `503` to every client forever.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "The process is alive"), (status = 503, body = ProblemDoc, content_type = "application/problem+json")))]
async fn healthz(State(s): State<AppState>) -> Response {
    use rdkafka::producer::Producer;
    match s.producer.inner().client().fatal_error() {
        None => "ok".into_response(),
        Some((code, reason)) => {
            tracing::error!(?code, %reason, "the Kafka producer hit a fatal error; this process must be restarted");
            Problem::unavailable(
                format!("the Kafka producer hit a fatal error ({code:?}); restart the process"),
                s.limits.retry_after_seconds,
            )
            .into_response()
        }
    }
}

/// Readiness: the status view caught up and the broker answers.
#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "Ready"), (status = 503, body = ProblemDoc, content_type = "application/problem+json")))]
async fn readyz(State(s): State<AppState>) -> Response {
    if !s.submitter.view().is_caught_up() {
        return Problem::unavailable(
            "the status view is catching up",
            s.limits.retry_after_seconds,
        )
        .into_response();
    }
    let producer = s.producer.clone();
    let topic = s.probe_topic.clone();
    let reachable = tokio::task::spawn_blocking(move || {
        use rdkafka::producer::Producer;
        producer
            .inner()
            .client()
            .fetch_metadata(Some(&topic), Duration::from_secs(2))
            .is_ok()
    })
    .await
    .unwrap_or(false);
    if reachable {
        "ready".into_response()
    } else {
        Problem::unavailable(
            "the Kafka cluster is unreachable",
            s.limits.retry_after_seconds,
        )
        .into_response()
    }
}

async fn render_metrics(State(s): State<AppState>) -> String {
    s.metrics.render()
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefer_wait_is_parsed_per_rfc_7240() {
        let mut h = HeaderMap::new();
        assert_eq!(prefer_wait(&h), None);
        h.insert("prefer", HeaderValue::from_static("respond-async, wait=10"));
        assert_eq!(prefer_wait(&h), Some(Duration::from_secs(10)));
        h.insert(
            "prefer",
            HeaderValue::from_static("handling=strict; foo=bar, WAIT=\"3\""),
        );
        assert_eq!(prefer_wait(&h), Some(Duration::from_secs(3)));
        h.insert("prefer", HeaderValue::from_static("wait=soon"));
        assert_eq!(prefer_wait(&h), None);
    }

    #[test]
    fn the_openapi_document_lists_every_endpoint() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        for path in [
            "/v1/commands/{type}",
            "/v1/submissions/{id}",
            "/v1/jobs",
            "/v1/jobs/{id}",
            "/v1/jobs/{id}/errors",
            "/v1/types",
            "/readyz",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path} missing");
        }
        assert!(doc["components"]["schemas"].get("SubmissionBody").is_some());
    }
}
