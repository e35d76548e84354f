//! The edge's HTTP API: local records (CP-5/CP-6), conflicts, and the
//! operator endpoints. Writes validate against the collection's command
//! schema and commit locally — they never wait for Kafka or the master — so
//! the API keeps answering through broker and master outages.
//!
//! The router is a function of its state (tested with `oneshot`); every
//! error is an RFC 9457 problem; another tenant's (or owner's) records and
//! conflicts answer 404.

// Handlers answer `Result<_, Problem>`, writ-http's one error response type;
// it is built once per failed request, so its size does not matter here.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Notify;
use tracing::error;
use writ_codec::{CodecError, PayloadCodec};
use writ_core::{Classified, ContentType};
use writ_http::{authenticate, ApiKeys, FieldProblem, Principal, Problem};

use crate::config::CollectionConfig;
use crate::metrics;
use crate::resolver::{ResolveError, Resolver};
use crate::status::edge_source;
use crate::store::{Created, LocalStore, Record, Resolved, Scope, StoreError, Updated, Write};
use crate::sync::{lookup, pointer_path, SyncState, Take};

/// Most records one list call returns.
pub const MAX_LIMIT: u32 = 1000;
const DEFAULT_LIMIT: u32 = 100;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The local store.
    pub store: LocalStore,
    /// Validates writes.
    pub codec: Arc<PayloadCodec>,
    /// The configured collections.
    pub collections: Arc<BTreeMap<String, CollectionConfig>>,
    /// Notified after every write, so the relay publishes without waiting for its poll.
    pub relay_wake: Arc<Notify>,
    /// Resolves conflicts on request.
    pub resolver: Arc<Resolver>,
}

/// The whole router: `/v1/*` behind API-key auth, plus `/healthz`, `/readyz`
/// and (when this process owns the recorder) `/metrics`.
pub fn router(
    state: ApiState,
    keys: Arc<ApiKeys>,
    metrics: Option<PrometheusHandle>,
    max_body_bytes: usize,
) -> Router {
    let api = Router::new()
        .route(
            "/v1/records/{collection}",
            post(create_record).get(list_records),
        )
        .route(
            "/v1/records/{collection}/{id}",
            get(get_record).put(update_record),
        )
        .route("/v1/conflicts", get(list_conflicts))
        .route("/v1/conflicts/{id}/resolve", post(resolve_conflict))
        .layer(axum::middleware::from_fn_with_state(keys, authenticate))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state.clone());
    let ops = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readiness))
        .route(
            "/metrics",
            get(move || {
                let rendered = metrics.as_ref().map(PrometheusHandle::render);
                async move { rendered.unwrap_or_default() }
            }),
        )
        .with_state(state);
    api.merge(ops)
}

async fn readiness(State(s): State<ApiState>) -> Response {
    match s.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => {
            error!(error = %e, "readiness: local store unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "local store unreachable").into_response()
        }
    }
}

fn collection<'a>(s: &'a ApiState, name: &str) -> Result<&'a CollectionConfig, Problem> {
    s.collections
        .get(name)
        .ok_or_else(|| Problem::not_found(format!("no collection {name:?} on this edge")))
}

fn store_problem(e: StoreError) -> Problem {
    error!(error = %e, "local store failure");
    if e.is_retryable() {
        Problem::unavailable("the local store is unreachable; nothing was written", 1)
    } else {
        Problem::internal()
    }
}

/// Validates a write body into a [`Write`]; bad input never reaches the store.
async fn validate(
    s: &ApiState,
    principal: &Principal,
    name: &str,
    c: &CollectionConfig,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Write, Problem> {
    if !principal.may_use(&c.command_type) {
        return Err(Problem::forbidden(format!(
            "this API key may not write {} records",
            c.command_type
        )));
    }
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        if ContentType::parse(ct) != Some(ContentType::Json) {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            )
            .with_detail(format!("send application/json, not {ct:?}")));
        }
    }
    let payload: Value = serde_json::from_slice(body).map_err(|e| {
        Problem::bad_request("malformed-json", format!("the body is not JSON: {e}"))
    })?;
    let encoded = s
        .codec
        .encode(&c.command_type, &payload, ContentType::Json)
        .await
        .map_err(|e| match e {
            CodecError::Validation(v) => Problem::validation(
                format!("the record does not match {}", c.command_type),
                v.errors
                    .iter()
                    .map(|f| FieldProblem {
                        path: pointer_path(&f.path),
                        message: f.message.clone(),
                    })
                    .collect(),
            ),
            other => {
                error!(error = %other, collection = name, "encoding a write failed");
                Problem::internal()
            }
        })?;
    let full: Value = serde_json::from_slice(&encoded.bytes).map_err(|e| {
        error!(error = %e, "canonical JSON does not parse");
        Problem::internal()
    })?;
    let key = match lookup(&full, &c.key_field) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        _ => {
            return Err(Problem::validation(
                "the record has no usable entity key",
                vec![FieldProblem {
                    path: pointer_path(&format!("$.{}", c.key_field)),
                    message: "the key field must be a non-empty string or an integer".into(),
                }],
            ))
        }
    };
    Ok(Write {
        collection: name.to_owned(),
        command_type: c.command_type.clone(),
        key,
        local: c.projection().apply(&full),
        full,
        source: edge_source(&principal.source()),
    })
}

fn record_response(status: StatusCode, record: &Record) -> Response {
    let location = format!("/v1/records/{}/{}", record.collection, record.id);
    let mut response = (status, Json(record)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

async fn create_record(
    State(s): State<ApiState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let c = collection(&s, &name)?;
    let write = validate(&s, &principal, &name, c, &headers, &body).await?;
    match s
        .store
        .create(&Scope::of(&principal), &write)
        .await
        .map_err(store_problem)?
    {
        Created::Record(record) => {
            metrics::write(&name, "create");
            s.relay_wake.notify_one();
            Ok(record_response(StatusCode::CREATED, &record))
        }
        Created::KeyExists { id } => Err(Problem::new(
            StatusCode::CONFLICT,
            "record-exists",
            "A record with this key exists",
        )
        .with_detail(format!(
            "{} {:?} already exists; update it with PUT /v1/records/{name}/{id}",
            c.key_field, write.key
        ))
        .with_extension("existingId", id)),
    }
}

async fn update_record(
    State(s): State<ApiState>,
    Extension(principal): Extension<Principal>,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let c = collection(&s, &name)?;
    let write = validate(&s, &principal, &name, c, &headers, &body).await?;
    match s
        .store
        .update(&Scope::of(&principal), &id, &write)
        .await
        .map_err(store_problem)?
    {
        Updated::Record(record) => {
            metrics::write(&name, "update");
            s.relay_wake.notify_one();
            Ok(record_response(StatusCode::OK, &record))
        }
        Updated::NotFound => Err(Problem::not_found(format!("no record {id:?} in {name}"))),
        Updated::KeyChanged { key } => Err(Problem::validation(
            "the entity key of a record cannot change",
            vec![FieldProblem {
                path: pointer_path(&format!("$.{}", c.key_field)),
                message: format!("must stay {key:?}"),
            }],
        )),
    }
}

async fn get_record(
    State(s): State<ApiState>,
    Extension(principal): Extension<Principal>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response, Problem> {
    collection(&s, &name)?;
    match s
        .store
        .get(&Scope::of(&principal), &name, &id)
        .await
        .map_err(store_problem)?
    {
        Some(record) => Ok(record_response(StatusCode::OK, &record)),
        None => Err(Problem::not_found(format!("no record {id:?} in {name}"))),
    }
}

/// `GET /v1/records/{collection}` query.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListQuery {
    sync_state: Option<String>,
    limit: Option<u32>,
    after: Option<String>,
}

async fn list_records(
    State(s): State<ApiState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    collection(&s, &name)?;
    let Query(q) = query.map_err(|e| Problem::bad_request("bad-query", e.body_text()))?;
    let state = q
        .sync_state
        .as_deref()
        .map(|v| {
            SyncState::parse(v).ok_or_else(|| {
                Problem::bad_request(
                    "bad-query",
                    format!("syncState must be PENDING, SYNCED, REJECTED or CONFLICT, not {v:?}"),
                )
            })
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(Problem::bad_request(
            "bad-query",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let items = s
        .store
        .list(
            &Scope::of(&principal),
            &name,
            state,
            q.after.as_deref(),
            limit,
        )
        .await
        .map_err(store_problem)?;
    let next = (items.len() == limit as usize)
        .then(|| items.last().map(|r| r.id.clone()))
        .flatten();
    Ok(Json(json!({ "items": items, "next": next })).into_response())
}

/// `GET /v1/conflicts` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConflictQuery {
    collection: Option<String>,
    state: Option<String>,
}

async fn list_conflicts(
    State(s): State<ApiState>,
    Extension(principal): Extension<Principal>,
    query: Result<Query<ConflictQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let Query(q) = query.map_err(|e| Problem::bad_request("bad-query", e.body_text()))?;
    let all = match q.state.as_deref() {
        None | Some("open") | Some("OPEN") => false,
        Some("all") | Some("ALL") => true,
        Some(other) => {
            return Err(Problem::bad_request(
                "bad-query",
                format!("state must be open or all, not {other:?}"),
            ))
        }
    };
    let items = s
        .store
        .list_conflicts(&Scope::of(&principal), q.collection.as_deref(), all)
        .await
        .map_err(store_problem)?;
    Ok(Json(json!({ "items": items })).into_response())
}

/// `POST /v1/conflicts/{id}/resolve` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    take: Take,
}

async fn resolve_conflict(
    State(s): State<ApiState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    let body: ResolveBody = serde_json::from_slice(&body).map_err(|e| {
        Problem::bad_request(
            "bad-resolution",
            format!("send {{\"take\": \"local\"}} or {{\"take\": \"master\"}}: {e}"),
        )
    })?;
    let scope = Scope::of(&principal);
    let conflict = s
        .store
        .open_conflict(Some(&scope), &id)
        .await
        .map_err(store_problem)?
        .ok_or_else(|| Problem::not_found(format!("no open conflict {id:?}")))?;
    match s.resolver.resolve(&conflict, body.take).await {
        Ok(Resolved::Record(record)) => {
            s.relay_wake.notify_one();
            Ok(record_response(StatusCode::OK, &record))
        }
        Ok(Resolved::NotFound) => Err(Problem::not_found(format!("no open conflict {id:?}"))),
        Err(ResolveError::Store(e)) => Err(store_problem(e)),
        Err(e) if e.is_retryable() => Err(Problem::unavailable(
            format!("{e}; nothing was changed, try again"),
            2,
        )),
        Err(e) => Err(Problem::new(
            StatusCode::CONFLICT,
            "cannot-resolve",
            "The conflict cannot be resolved this way",
        )
        .with_detail(e.to_string())),
    }
}
