//! Shared test fixtures: a fake host (the ingress' side of `Submitter`) that
//! records every call and dedupes by submission id like the real ingress, and
//! an app wired like the ingress mounts it (real API-key auth in front).

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value as Json};
use time::OffsetDateTime;
use tower::ServiceExt;
use uuid::Uuid;
use writ_codec::SchemaCatalog;
use writ_core::{StatusError, StatusEvent, SubmissionState};
use writ_drafts::{
    router, DraftService, DraftStore, DraftSubmission, DraftsConfig, SubmissionAnswer, Submitter,
};
use writ_http::{hash_api_key, ApiKeyConfig, ApiKeys, AuthConfig, Principal, Problem};

/// Store connection wait in tests: generous, since CI shares two cores.
pub const WAIT: Duration = Duration::from_secs(10);

/// How the fake host's apply ends when a submit waits.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The wait times out: ACCEPTED.
    Pending,
    /// Applied; the canonical id is the payload's `customer_id`.
    Applied,
    /// Rejected with this code.
    Rejected(&'static str),
    /// The expected version did not match.
    Conflict,
    /// Retries exhausted.
    DeadLettered,
    /// Dead-lettered for good (the command can never apply).
    Poison,
}

/// One command the fake host "produced".
#[derive(Debug, Clone)]
pub struct Command {
    pub source: String,
    pub submission: DraftSubmission,
    pub state: SubmissionState,
    pub canonical_id: Option<String>,
    pub error: Option<StatusError>,
}

/// A host that keeps commands in memory, keyed by submission id.
#[derive(Default)]
pub struct FakeHost {
    /// Every `submit` call, in order.
    pub calls: Mutex<Vec<DraftSubmission>>,
    /// Commands by submission id: one per distinct key.
    pub commands: Mutex<HashMap<Uuid, Command>>,
    /// What a waiting submit ends in.
    pub outcome: Mutex<Option<Outcome>>,
    /// The next `submit` fails with this problem, producing nothing.
    pub fail_next: Mutex<Option<Problem>>,
    /// Every `status` call.
    pub status_calls: Mutex<Vec<Uuid>>,
}

fn resolve(
    outcome: &Outcome,
    payload: &Json,
) -> (SubmissionState, Option<String>, Option<StatusError>) {
    let err = |code: &str, message: &str, retryable| StatusError {
        code: code.into(),
        message: message.into(),
        retryable,
    };
    match outcome {
        Outcome::Pending => (SubmissionState::Accepted, None, None),
        Outcome::Applied => (
            SubmissionState::Applied,
            payload["customer_id"].as_str().map(str::to_owned),
            None,
        ),
        Outcome::Rejected(code) => (
            SubmissionState::Rejected,
            None,
            Some(err(code, "the master refused the e-mail domain", false)),
        ),
        Outcome::Conflict => (
            SubmissionState::Conflict,
            None,
            Some(err(
                "VERSION_MISMATCH",
                "expected version 3, found 4",
                false,
            )),
        ),
        Outcome::DeadLettered => (
            SubmissionState::DeadLettered,
            None,
            Some(err("RETRIES_EXHAUSTED", "master unavailable", true)),
        ),
        Outcome::Poison => (
            SubmissionState::DeadLettered,
            None,
            Some(err("UNKNOWN_TYPE", "no handler for this type", false)),
        ),
    }
}

impl FakeHost {
    pub fn new() -> Arc<Self> {
        let host = Self::default();
        *host.outcome.lock().unwrap() = Some(Outcome::Pending);
        Arc::new(host)
    }

    pub fn set_outcome(&self, outcome: Outcome) {
        *self.outcome.lock().unwrap() = Some(outcome);
    }

    pub fn calls(&self) -> Vec<DraftSubmission> {
        self.calls.lock().unwrap().clone()
    }

    pub fn command_count(&self) -> usize {
        self.commands.lock().unwrap().len()
    }

    /// The worker finished `submission_id` with `outcome`: the status event it emits.
    pub fn complete(&self, submission_id: Uuid, outcome: Outcome) -> StatusEvent {
        let mut commands = self.commands.lock().unwrap();
        let cmd = commands.get_mut(&submission_id).expect("known submission");
        let (state, canonical_id, error) = resolve(&outcome, &cmd.submission.payload);
        cmd.state = state;
        cmd.canonical_id = canonical_id;
        cmd.error = error;
        event(cmd, submission_id)
    }

    /// The status event `outcome` would give, without changing the command.
    pub fn preview(&self, submission_id: Uuid, outcome: Outcome) -> StatusEvent {
        let commands = self.commands.lock().unwrap();
        let mut cmd = commands
            .get(&submission_id)
            .expect("known submission")
            .clone();
        let (state, canonical_id, error) = resolve(&outcome, &cmd.submission.payload);
        cmd.state = state;
        cmd.canonical_id = canonical_id;
        cmd.error = error;
        event(&cmd, submission_id)
    }

    fn answer(
        cmd: &Command,
        id: Uuid,
        replayed: bool,
        waited: Option<Duration>,
    ) -> SubmissionAnswer {
        SubmissionAnswer {
            submission_id: id,
            state: cmd.state,
            canonical_id: cmd.canonical_id.clone(),
            error: cmd.error.clone(),
            replayed,
            waited,
        }
    }
}

/// The status event a worker would emit for `cmd`.
pub fn event(cmd: &Command, submission_id: Uuid) -> StatusEvent {
    StatusEvent {
        submission_id,
        source: cmd.source.clone(),
        id: cmd.submission.idempotency_key.clone(),
        command_type: cmd.submission.command_type.clone(),
        subject: None,
        state: cmd.state,
        canonical_id: cmd.canonical_id.clone(),
        master_version: None,
        error: cmd.error.clone(),
        attempts: 1,
        payload_fingerprint: writ_core::payload_fingerprint(&cmd.submission.payload),
        accepted_at: OffsetDateTime::now_utc(),
        applied_at: None,
        stale_after: None,
        job_id: None,
        job_line: None,
        draft_id: Some(cmd.submission.draft_id.clone()),
        temp_id: None,
    }
}

#[async_trait::async_trait]
impl Submitter for FakeHost {
    async fn submit(
        &self,
        principal: &Principal,
        submission: DraftSubmission,
    ) -> Result<SubmissionAnswer, Problem> {
        self.calls.lock().unwrap().push(submission.clone());
        if let Some(problem) = self.fail_next.lock().unwrap().take() {
            return Err(problem);
        }
        let source = principal.source();
        let id = writ_core::submission_id(&source, &submission.idempotency_key);
        let mut commands = self.commands.lock().unwrap();
        if let Some(cmd) = commands.get(&id) {
            if cmd.submission.payload != submission.payload {
                return Err(Problem::validation(
                    "idempotency key reused with a different payload",
                    vec![],
                ));
            }
            return Ok(Self::answer(cmd, id, true, None));
        }
        let outcome = if submission.wait.is_some() {
            self.outcome
                .lock()
                .unwrap()
                .clone()
                .unwrap_or(Outcome::Pending)
        } else {
            Outcome::Pending
        };
        let (state, canonical_id, error) = resolve(&outcome, &submission.payload);
        let waited = submission.wait.map(|w| w.min(Duration::from_secs(30)));
        let cmd = Command {
            source,
            submission,
            state,
            canonical_id,
            error,
        };
        let answer = Self::answer(&cmd, id, false, waited);
        commands.insert(id, cmd);
        Ok(answer)
    }

    async fn status(
        &self,
        principal: &Principal,
        submission_id: Uuid,
    ) -> Result<Option<SubmissionAnswer>, Problem> {
        self.status_calls.lock().unwrap().push(submission_id);
        let commands = self.commands.lock().unwrap();
        Ok(commands
            .get(&submission_id)
            .filter(|c| principal.owns_source(&c.source))
            .map(|c| Self::answer(c, submission_id, true, None)))
    }
}

/// API keys of the test app: bearer token → (tenant, owner, types).
pub const KEYS: &[(&str, &str, Option<&str>, &[&str])] = &[
    ("alice-key", "acme", Some("alice"), &[]),
    ("bob-key", "acme", Some("bob"), &[]),
    ("acme-key", "acme", None, &[]),
    ("globex-key", "globex", None, &[]),
    ("orders-only", "acme", Some("carol"), &["order.place.v1"]),
];

pub fn api_keys() -> Arc<ApiKeys> {
    let config = AuthConfig {
        anonymous_tenant: None,
        keys: KEYS
            .iter()
            .map(|(key, tenant, owner, types)| ApiKeyConfig {
                sha256: hash_api_key(key),
                tenant: (*tenant).into(),
                owner: owner.map(Into::into),
                types: types.iter().map(|t| (*t).to_owned()).collect(),
            })
            .collect(),
    };
    Arc::new(ApiKeys::from_config(&config).unwrap())
}

/// Test clock: starts at a fixed instant, moved by the test.
#[derive(Clone)]
pub struct TestClock(Arc<Mutex<OffsetDateTime>>);

impl TestClock {
    pub fn new() -> Self {
        Self(Arc::new(Mutex::new(
            time::macros::datetime!(2026-11-01 09:00:00 UTC),
        )))
    }
    pub fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap()
    }
    pub fn advance(&self, by: time::Duration) {
        *self.0.lock().unwrap() += by;
    }
}

/// A service, its fake host and clock, and the router behind real auth.
pub struct App {
    pub service: DraftService,
    pub host: Arc<FakeHost>,
    pub clock: TestClock,
    pub router: Router,
}

pub fn config(store_url: &str) -> DraftsConfig {
    DraftsConfig {
        store_url: store_url.to_owned(),
        max_body_bytes: 4096,
        ..DraftsConfig::default()
    }
}

impl App {
    pub async fn sqlite() -> Self {
        Self::with_store_url("sqlite::memory:").await
    }

    pub async fn with_store_url(url: &str) -> Self {
        let config = config(url);
        let store = DraftStore::connect(&config.store_url, 2, WAIT)
            .await
            .unwrap();
        Self::with_store(store, config)
    }

    pub fn with_store(store: DraftStore, config: DraftsConfig) -> Self {
        let host = FakeHost::new();
        let clock = TestClock::new();
        let c = clock.clone();
        let service = DraftService::new(
            store,
            Arc::new(SchemaCatalog::builtin()),
            host.clone(),
            config,
        )
        .with_clock(move || c.now());
        let router = router(service.clone()).layer(axum::middleware::from_fn_with_state(
            api_keys(),
            writ_http::authenticate,
        ));
        Self {
            service,
            host,
            clock,
            router,
        }
    }

    /// Sends one request; `headers` as (name, value).
    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        key: &str,
        headers: &[(&str, &str)],
        body: Option<&Json>,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {key}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        Reply::read(
            self.router
                .clone()
                .oneshot(req.body(body).unwrap())
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn put(&self, id: &str, key: &str, headers: &[(&str, &str)], body: &Json) -> Reply {
        self.call("PUT", &format!("/v1/drafts/{id}"), key, headers, Some(body))
            .await
    }

    pub async fn get(&self, id: &str, key: &str) -> Reply {
        self.call("GET", &format!("/v1/drafts/{id}"), key, &[], None)
            .await
    }

    pub async fn submit(&self, id: &str, key: &str, headers: &[(&str, &str)]) -> Reply {
        self.call(
            "POST",
            &format!("/v1/drafts/{id}/submit"),
            key,
            headers,
            None,
        )
        .await
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Json,
}

impl Reply {
    pub async fn read(response: Response<Body>) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Json::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)))
        };
        Self {
            status,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    pub fn etag(&self) -> String {
        self.header("etag").expect("an ETag").to_owned()
    }

    /// The field paths of a problem's `errors`.
    pub fn paths(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e["path"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A complete customer.
pub fn customer(id: &str) -> Json {
    json!({"type": "customer.upsert.v1", "data": {"customer_id": id, "name": "Ada Lovelace", "email": "ada@example.com"}})
}

/// A partial customer: only the name.
pub fn partial_customer() -> Json {
    json!({"type": "customer.upsert.v1", "data": {"name": "Ada"}})
}
