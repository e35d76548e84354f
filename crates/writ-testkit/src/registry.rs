//! An in-process Confluent Schema Registry fixture: the REST subset that
//! `schema_registry_converter` 6 calls, so registry framing is tested without
//! a registry container, including the registry being down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::oneshot;

const MEDIA_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Registry state: schemas by id, and each subject's versions (ids in order).
#[derive(Default)]
struct Inner {
    schemas: Vec<String>,
    subjects: HashMap<String, Vec<u32>>,
    failing: Option<StatusCode>,
}

#[derive(Default)]
struct Shared {
    inner: Mutex<Inner>,
    requests: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking handler leaves the maps consistent (single inserts).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running fixture; dropping it stops the server.
pub struct RegistryFixture {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
}

impl RegistryFixture {
    /// Starts the fixture on `127.0.0.1:0`.
    pub async fn start() -> anyhow::Result<Self> {
        let shared = Arc::new(Shared::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = oneshot::channel::<()>();
        let app = router(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self {
            url,
            shared,
            stop: Some(stop),
        })
    }

    /// HTTP requests served so far (failed ones included).
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Makes every request answer `status` (e.g. 500, 503), or heals with `None`.
    pub fn fail_with(&self, status: Option<StatusCode>) {
        self.shared.lock().failing = status;
    }

    /// Stops accepting connections, so clients see "connection refused".
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Registers `schema` under `subject` directly, returning its id.
    pub fn register(&self, subject: &str, schema: &str) -> u32 {
        register(&mut self.shared.lock(), subject, schema)
    }

    /// The subjects registered so far, sorted.
    pub fn subjects(&self) -> Vec<String> {
        let mut s: Vec<_> = self.shared.lock().subjects.keys().cloned().collect();
        s.sort();
        s
    }
}

impl Drop for RegistryFixture {
    fn drop(&mut self) {
        self.stop();
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/subjects/{subject}/versions", post(register_version))
        .route("/subjects/{subject}", post(lookup))
        .route("/subjects/{subject}/versions/{version}", get(by_version))
        .route("/schemas/ids/{id}", get(by_id))
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            count_and_fail,
        ))
        .with_state(shared)
}

/// Counts every request and applies the failure switch before routing.
async fn count_and_fail(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let failing = shared.lock().failing;
    match failing {
        Some(status) => error(status, 50001, "injected failure"),
        None => next.run(req).await,
    }
}

fn reply(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, MEDIA_TYPE)],
        body.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, code: u32, message: &str) -> Response {
    reply(status, json!({"error_code": code, "message": message}))
}

/// Same text -> same id across subjects, as the real registry does.
fn register(inner: &mut Inner, subject: &str, schema: &str) -> u32 {
    let id = match inner.schemas.iter().position(|s| s == schema) {
        Some(i) => i as u32 + 1,
        None => {
            inner.schemas.push(schema.to_string());
            inner.schemas.len() as u32
        }
    };
    let versions = inner.subjects.entry(subject.to_string()).or_default();
    if !versions.contains(&id) {
        versions.push(id);
    }
    id
}

/// Pulls `schema` out of a register/lookup body.
fn schema_of(body: &Value) -> Option<&str> {
    body.get("schema").and_then(Value::as_str)
}

async fn register_version(
    State(shared): State<Arc<Shared>>,
    Path(subject): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    match schema_of(&body) {
        Some(schema) => {
            let id = register(&mut shared.lock(), &subject, schema);
            reply(StatusCode::OK, json!({"id": id}))
        }
        None => error(StatusCode::UNPROCESSABLE_ENTITY, 42201, "Invalid schema"),
    }
}

fn version_body(inner: &Inner, subject: &str, version: usize) -> Value {
    let id = inner.subjects[subject][version - 1];
    json!({
        "subject": subject,
        "version": version,
        "id": id,
        "schemaType": "AVRO",
        "schema": inner.schemas[id as usize - 1],
    })
}

async fn lookup(
    State(shared): State<Arc<Shared>>,
    Path(subject): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let inner = shared.lock();
    let Some(versions) = inner.subjects.get(&subject) else {
        return error(StatusCode::NOT_FOUND, 40401, "Subject not found");
    };
    let found = versions
        .iter()
        .position(|id| Some(inner.schemas[*id as usize - 1].as_str()) == schema_of(&body));
    match found {
        Some(i) => reply(StatusCode::OK, version_body(&inner, &subject, i + 1)),
        None => error(StatusCode::NOT_FOUND, 40403, "Schema not found"),
    }
}

async fn by_version(
    State(shared): State<Arc<Shared>>,
    Path((subject, version)): Path<(String, String)>,
) -> Response {
    let inner = shared.lock();
    let Some(versions) = inner.subjects.get(&subject) else {
        return error(StatusCode::NOT_FOUND, 40401, "Subject not found");
    };
    let n = match version.as_str() {
        "latest" => Some(versions.len()),
        v => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=versions.len()).contains(n)),
    };
    match n {
        Some(n) => reply(StatusCode::OK, version_body(&inner, &subject, n)),
        None => error(StatusCode::NOT_FOUND, 40402, "Version not found"),
    }
}

async fn by_id(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let inner = shared.lock();
    let schema = id
        .parse::<usize>()
        .ok()
        .and_then(|i| i.checked_sub(1))
        .and_then(|i| inner.schemas.get(i));
    match schema {
        Some(s) => reply(StatusCode::OK, json!({"schema": s, "schemaType": "AVRO"})),
        None => error(StatusCode::NOT_FOUND, 40403, "Schema not found"),
    }
}
