//! The HTTP master against a real HTTP server (a small fake CRM on axum, bound
//! to 127.0.0.1:0) and a real inbox store (SQLite in a temp dir; PostgreSQL
//! when `tests/run.sh` or Docker provides one): exactly-once, retries, status
//! mapping, claims, ordering and URL encoding.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use serde_json::{json, Value};
use time::OffsetDateTime;
use writ_core::{CommandEnvelope, ContentType};
use writ_store::http::{HttpMaster, HttpMasterConfig};
use writ_store::{Command, Master, MasterConfig, MasterError, Outcome};

const UPSERT: &str = "customer.upsert.v1";
const CREATE: &str = "customer.create.v1";
const DELETE: &str = "customer.delete.v1";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

// ---------------------------------------------------------------- fake CRM

/// A failure the fake CRM produces for the next request.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// 503, with `Retry-After: 1` when `retry_after`.
    Unavailable { retry_after: bool },
    /// 429 with an HTTP-date `Retry-After` ~2 s ahead.
    TooMany,
    /// 500 without `Retry-After`.
    Internal,
    /// Sleep past the client's timeout, then 500 (nothing applied).
    Hang,
    /// 409 with a problem body carrying the current version.
    Conflict,
    /// 422 with a long message.
    Unprocessable,
}

/// One request the CRM received.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    raw_path: String,
    id: String,
    idempotency_key: Option<String>,
    traceparent: Option<String>,
    authorization: Option<String>,
    seq: Option<i64>,
}

#[derive(Default)]
struct Crm {
    records: HashMap<String, (Value, i64)>,
    seen: Vec<Seen>,
    /// Queued behaviours for the next requests: `None` = answer normally.
    faults: VecDeque<Option<Fault>>,
    /// Responses already given per Idempotency-Key (the master's own dedupe).
    replies: HashMap<String, (StatusCode, Value)>,
    in_flight: usize,
    max_in_flight: usize,
    /// Per-request delay, varied by sequence to shuffle concurrent arrivals.
    jitter_ms: u64,
}

type Shared = Arc<Mutex<Crm>>;

struct FakeCrm {
    state: Shared,
    base_url: String,
}

impl FakeCrm {
    async fn start() -> Self {
        let state: Shared = Arc::default();
        let app = Router::new()
            .route("/api/customers/{id}", any(handle))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            state,
            base_url: format!("http://{addr}/api"),
        }
    }

    fn fail_next(&self, faults: &[Fault]) {
        self.state
            .lock()
            .unwrap()
            .faults
            .extend(faults.iter().copied().map(Some));
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    fn calls(&self) -> usize {
        self.state.lock().unwrap().seen.len()
    }
}

async fn handle(
    State(state): State<Shared>,
    method: Method,
    Path(id): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let header = |n: &str| headers.get(n).map(|v| v.to_str().unwrap().to_owned());
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let (fault, key, jitter) = {
        let mut s = state.lock().unwrap();
        let seq = s.seen.len() as u64;
        s.seen.push(Seen {
            method: method.clone(),
            raw_path: uri.path().to_owned(),
            id: id.clone(),
            idempotency_key: header("idempotency-key"),
            traceparent: header("traceparent"),
            authorization: header("authorization"),
            seq: body.get("seq").and_then(Value::as_i64),
        });
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        let jitter = (seq * 7 % 5) * s.jitter_ms;
        (
            s.faults.pop_front().flatten(),
            header("idempotency-key"),
            jitter,
        )
    };
    tokio::time::sleep(Duration::from_millis(jitter)).await;
    let resp = respond(&state, fault, key, method, id, body).await;
    state.lock().unwrap().in_flight -= 1;
    resp
}

async fn respond(
    state: &Shared,
    fault: Option<Fault>,
    key: Option<String>,
    method: Method,
    id: String,
    body: Value,
) -> Response {
    match fault {
        Some(Fault::Unavailable { retry_after: true }) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [("retry-after", "1")],
                "busy",
            )
                .into_response()
        }
        Some(Fault::Unavailable { retry_after: false }) => {
            return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response()
        }
        Some(Fault::TooMany) => {
            let at = std::time::SystemTime::now() + Duration::from_secs(3);
            let date = httpdate::fmt_http_date(at);
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", date)],
                "slow down",
            )
                .into_response();
        }
        Some(Fault::Internal) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response()
        }
        Some(Fault::Hang) => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        Some(Fault::Conflict) => {
            let v = state.lock().unwrap().records.get(&id).map_or(0, |r| r.1);
            return (
                StatusCode::CONFLICT,
                Json(json!({"title": "Conflict", "detail": "version mismatch", "version": v})),
            )
                .into_response();
        }
        Some(Fault::Unprocessable) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("email is invalid: {}", "x".repeat(2000)),
            )
                .into_response()
        }
        None => {}
    }
    let mut s = state.lock().unwrap();
    if let Some((status, body)) = key.as_ref().and_then(|k| s.replies.get(k)) {
        return (*status, Json(body.clone())).into_response();
    }
    let (status, reply) = match method {
        Method::GET => {
            return match s.records.get(&id) {
                Some((rec, v)) => {
                    let mut rec = rec.clone();
                    rec["version"] = json!(v);
                    Json(rec).into_response()
                }
                None => StatusCode::NOT_FOUND.into_response(),
            }
        }
        Method::PUT | Method::POST => {
            let version = s.records.get(&id).map_or(0, |r| r.1) + 1;
            s.records.insert(id.clone(), (body, version));
            let status = if method == Method::POST {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (
                status,
                json!({"id": format!("crm-{id}"), "version": version}),
            )
        }
        Method::DELETE => {
            s.records.remove(&id);
            (StatusCode::OK, Value::Null)
        }
        _ => return StatusCode::METHOD_NOT_ALLOWED.into_response(),
    };
    if let Some(k) = key {
        s.replies.insert(k, (status, reply.clone()));
    }
    if reply.is_null() {
        status.into_response()
    } else {
        (status, Json(reply)).into_response()
    }
}

// ---------------------------------------------------------------- helpers

fn config(base_url: &str, inbox_url: &str) -> HttpMasterConfig {
    serde_json::from_value(json!({
        "base_url": base_url,
        "timeout_ms": 400,
        "in_progress_expiry_ms": 5000,
        "max_concurrency": 3,
        "headers": {"Authorization": "Bearer test-token"},
        "inbox_url": inbox_url,
        "types": {
            UPSERT: {"method": "PUT", "path": "/customers/{customer_id}",
                     "canonical_id_pointer": "/id", "version_pointer": "/version"},
            CREATE: {"method": "POST", "path": "/customers/{ce.subject}",
                     "canonical_id_pointer": "/id"},
            DELETE: {"method": "DELETE", "path": "/customers/{customer_id}", "body": "none"},
        }
    }))
    .unwrap()
}

struct Setup {
    crm: FakeCrm,
    master: HttpMaster,
    inbox_url: String,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let crm = FakeCrm::start().await;
    let dir = tempfile::tempdir().unwrap();
    let inbox_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("inbox.db").display()
    );
    let master = HttpMaster::connect(&config(&crm.base_url, &inbox_url))
        .await
        .unwrap();
    Setup {
        crm,
        master,
        inbox_url,
        _dir: dir,
    }
}

fn upsert(id: &str, customer: &str, seq: i64) -> Command {
    let payload = json!({"customer_id": customer, "name": "Ada", "seq": seq});
    cmd(UPSERT, id, Some(customer), payload)
}

fn cmd(ty: &str, id: &str, subject: Option<&str>, payload: Value) -> Command {
    let mut envelope = CommandEnvelope::new(id, "/tenants/acme/crm", ty, ContentType::Json);
    envelope.subject = subject.map(str::to_owned);
    Command {
        submission_id: envelope.submission_id(),
        envelope,
        payload,
        fingerprint: format!("fp-{id}"),
    }
}

fn applied(canonical_id: &str, version: Option<i64>) -> Outcome {
    Outcome::Applied {
        canonical_id: Some(canonical_id.into()),
        version,
    }
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn applies_once_and_answers_the_duplicate_from_the_inbox() {
    let s = setup().await;
    let mut c = upsert("k1", "c1", 1);
    c.envelope.traceparent = Some(TRACEPARENT.into());
    let first = s.master.apply(std::slice::from_ref(&c)).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].outcome, applied("crm-c1", Some(1)));
    assert!(!first[0].duplicate);

    let again = s.master.apply(std::slice::from_ref(&c)).await.unwrap();
    assert_eq!(again[0].outcome, first[0].outcome);
    assert!(again[0].duplicate);
    assert_eq!(again[0].recorded_at, first[0].recorded_at);
    assert_eq!(s.crm.calls(), 1, "the duplicate must not reach the master");

    let seen = &s.crm.seen()[0];
    assert_eq!(seen.method, Method::PUT);
    assert_eq!(
        seen.idempotency_key.as_deref(),
        Some(c.submission_id.to_string().as_str())
    );
    assert_eq!(seen.traceparent.as_deref(), Some(TRACEPARENT));
    assert_eq!(seen.authorization.as_deref(), Some("Bearer test-token"));
    assert_eq!(s.master.kind(), "http");
    assert!(s.master.handles(UPSERT) && !s.master.handles("other.v1"));
}

#[tokio::test]
async fn throttling_and_outages_carry_retry_after_and_a_retry_succeeds() {
    let s = setup().await;
    let c = upsert("k-throttle", "c2", 1);
    let batch = std::slice::from_ref(&c);

    s.crm.fail_next(&[Fault::Unavailable { retry_after: true }]);
    match s.master.apply(batch).await {
        Err(MasterError::Throttled { retry_after, .. }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(1)))
        }
        other => panic!("503 + Retry-After: {other:?}"),
    }
    s.crm.fail_next(&[Fault::TooMany]);
    match s.master.apply(batch).await {
        Err(MasterError::Throttled { retry_after, .. }) => {
            let d = retry_after.expect("an HTTP-date Retry-After is parsed");
            assert!(d > Duration::ZERO && d <= Duration::from_secs(3), "{d:?}");
        }
        other => panic!("429: {other:?}"),
    }
    s.crm
        .fail_next(&[Fault::Unavailable { retry_after: false }]);
    assert!(matches!(
        s.master.apply(batch).await,
        Err(MasterError::Unavailable {
            retry_after: None,
            ..
        })
    ));
    s.crm.fail_next(&[Fault::Internal]);
    assert!(matches!(
        s.master.apply(batch).await,
        Err(MasterError::Unavailable { .. })
    ));

    // The claim was released each time: the retry is not blocked and applies.
    let ok = s.master.apply(batch).await.unwrap();
    assert_eq!(ok[0].outcome, applied("crm-c2", Some(1)));
    assert!(!ok[0].duplicate);
    let keys: Vec<_> = s
        .crm
        .seen()
        .into_iter()
        .map(|x| x.idempotency_key)
        .collect();
    assert_eq!(keys.len(), 5);
    assert!(keys
        .iter()
        .all(|k| k.as_deref() == Some(c.submission_id.to_string().as_str())));
}

#[tokio::test]
async fn a_timeout_is_unavailable_and_the_retry_goes_through() {
    let s = setup().await;
    let c = upsert("k-hang", "c3", 1);
    s.crm.fail_next(&[Fault::Hang]);
    let started = std::time::Instant::now();
    match s.master.apply(std::slice::from_ref(&c)).await {
        Err(MasterError::Unavailable { message, .. }) => {
            assert!(message.contains("timed out"), "{message}");
            assert!(
                !message.contains("c3"),
                "no URL (payload values) in errors: {message}"
            );
        }
        other => panic!("timeout: {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    let ok = s.master.apply(std::slice::from_ref(&c)).await.unwrap();
    assert_eq!(ok[0].outcome, applied("crm-c3", Some(1)));
}

#[tokio::test]
async fn a_conflict_is_recorded_and_re_emitted() {
    let s = setup().await;
    s.master.apply(&[upsert("k-c-1", "c4", 1)]).await.unwrap();
    let c = upsert("k-c-2", "c4", 2);
    s.crm.fail_next(&[Fault::Conflict]);
    let r = s.master.apply(std::slice::from_ref(&c)).await.unwrap();
    let want = Outcome::Conflict {
        message: "version mismatch".into(),
        current_version: Some(1),
    };
    assert_eq!(r[0].outcome, want);
    assert!(!r[0].duplicate);
    let again = s.master.apply(std::slice::from_ref(&c)).await.unwrap();
    assert_eq!((again[0].outcome.clone(), again[0].duplicate), (want, true));
    assert_eq!(s.crm.calls(), 2);
}

#[tokio::test]
async fn a_rejection_is_recorded_truncated_and_re_emitted_as_a_duplicate() {
    let s = setup().await;
    let c = upsert("k-422", "c5", 1);
    s.crm.fail_next(&[Fault::Unprocessable]);
    let r = s.master.apply(std::slice::from_ref(&c)).await.unwrap();
    let Outcome::Rejected { code, message } = &r[0].outcome else {
        panic!("{:?}", r[0].outcome)
    };
    assert_eq!(code, "HTTP_422");
    assert!(message.starts_with("email is invalid"));
    assert!(message.len() <= 512, "{}", message.len());
    let again = s.master.apply(std::slice::from_ref(&c)).await.unwrap();
    assert_eq!(again[0].outcome, r[0].outcome);
    assert!(again[0].duplicate);
    assert_eq!(s.crm.calls(), 1);
}

#[tokio::test]
async fn a_failed_batch_keeps_its_prefix_and_the_retry_answers_it_as_duplicates() {
    let s = setup().await;
    let batch = [
        upsert("b1", "c6", 1),
        upsert("b2", "c6", 2),
        upsert("b3", "c6", 3),
    ];
    // The first request succeeds, the second gets a 500: b3 is never sent.
    s.crm
        .state
        .lock()
        .unwrap()
        .faults
        .extend([None, Some(Fault::Internal)]);
    assert!(matches!(
        s.master.apply(&batch).await,
        Err(MasterError::Unavailable { .. })
    ));
    let r = s.master.apply(&batch).await.unwrap();
    assert_eq!(
        r.iter().map(|x| x.duplicate).collect::<Vec<_>>(),
        [true, false, false]
    );
    assert_eq!(r[0].outcome, applied("crm-c6", Some(1)));
    assert_eq!(r[2].outcome, applied("crm-c6", Some(3)));
    let seqs: Vec<_> = s.crm.seen().iter().map(|x| x.seq).collect();
    assert_eq!(seqs, [Some(1), Some(2), Some(2), Some(3)]);
}

#[tokio::test]
async fn same_entity_order_is_kept_under_concurrency() {
    let s = setup().await;
    s.crm.state.lock().unwrap().jitter_ms = 3;
    let entities = ["e/1", "e 2", "e3", "e4", "e5"];
    let mut batch = Vec::new();
    for seq in 0..6 {
        for e in entities {
            batch.push(upsert(&format!("{e}-{seq}"), e, seq));
        }
    }
    let r = s.master.apply(&batch).await.unwrap();
    assert_eq!(r.len(), batch.len());
    for (c, res) in batch.iter().zip(&r) {
        let seq = c.payload["seq"].as_i64().unwrap();
        let cust = c.envelope.subject.as_deref().unwrap();
        assert_eq!(
            res.outcome,
            applied(&format!("crm-{cust}"), Some(seq + 1)),
            "input order"
        );
    }
    let seen = s.crm.seen();
    for e in entities {
        let order: Vec<_> = seen
            .iter()
            .filter(|x| x.id == e)
            .map(|x| x.seq.unwrap())
            .collect();
        assert_eq!(order, (0..6).collect::<Vec<_>>(), "arrival order of {e}");
    }
    let max = s.crm.state.lock().unwrap().max_in_flight;
    assert!(max > 1, "entities ran concurrently (max in flight {max})");
    assert!(max <= 3, "max_concurrency respected (max in flight {max})");
}

#[tokio::test]
async fn url_templates_encode_keys_and_read_uses_them() {
    let s = setup().await;
    let key = "ACME/42 north";
    let r = s.master.apply(&[upsert("k-enc", key, 1)]).await.unwrap();
    assert_eq!(r[0].outcome, applied("crm-ACME/42 north", Some(1)));
    let seen = &s.crm.seen()[0];
    assert_eq!(seen.raw_path, "/api/customers/ACME%2F42%20north");
    assert_eq!(seen.id, key);

    // {ce.subject} template, POST, canonical id from the body.
    let c = cmd(CREATE, "k-create", Some("new one"), json!({"name": "Bo"}));
    let r = s.master.apply(&[c]).await.unwrap();
    assert_eq!(r[0].outcome, applied("crm-new one", None));

    let (rec, version) = s.master.read(UPSERT, key).await.unwrap().unwrap();
    assert_eq!(rec["name"], "Ada");
    assert_eq!(version, Some(1));
    assert_eq!(s.master.read(UPSERT, "nobody").await.unwrap(), None);

    // DELETE without a body; no canonical id in the response: falls back to the subject.
    let d = cmd(DELETE, "k-del", Some(key), json!({"customer_id": key}));
    let r = s.master.apply(&[d]).await.unwrap();
    assert_eq!(r[0].outcome, applied(key, None));
    assert_eq!(s.master.read(UPSERT, key).await.unwrap(), None);

    // A key that would change the path is rejected (and recorded), never sent.
    let bad = upsert("k-dots", "..", 1);
    let r = s.master.apply(&[bad]).await.unwrap();
    assert!(
        matches!(&r[0].outcome, Outcome::Rejected { code, .. } if code == "INVALID_PATH_VALUE")
    );
    assert!(s.crm.seen().iter().all(|x| x.id != ".."));
}

#[tokio::test]
async fn expire_inbox_deletes_old_done_rows_only() {
    let s = setup().await;
    s.master.apply(&[upsert("x1", "c7", 1)]).await.unwrap();
    assert_eq!(
        s.master
            .expire_inbox(OffsetDateTime::now_utc() - time::Duration::hours(1))
            .await
            .unwrap(),
        0
    );
    let n = s
        .master
        .expire_inbox(OffsetDateTime::now_utc() + time::Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(n, 1);
    // Expired: the next delivery is applied again (outside the dedupe window).
    let r = s.master.apply(&[upsert("x1", "c7", 1)]).await.unwrap();
    assert!(!r[0].duplicate);
}

/// Claims on SQLite: a crashed worker's stale IN_PROGRESS row is taken over; a fresh one is busy.
#[tokio::test]
async fn claims_on_sqlite_take_over_stale_rows_and_respect_fresh_ones() {
    let s = setup().await;
    let pool = sqlx::SqlitePool::connect(&s.inbox_url).await.unwrap();
    let now_ms = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let stale = upsert("stale", "c8", 1);
    let fresh = upsert("fresh", "c9", 1);
    for (c, at) in [(&stale, now_ms - 3_600_000), (&fresh, now_ms)] {
        sqlx::query(
            "INSERT INTO writ_http_inbox (submission_id, status, claimed_at, claimed_by, fingerprint)
             VALUES (?1, 'IN_PROGRESS', ?2, 'crashed-worker', ?3)",
        )
        .bind(c.submission_id.to_string())
        .bind(at)
        .bind(&c.fingerprint)
        .execute(&pool)
        .await
        .unwrap();
    }
    check_claims(&s.master, &s.crm, &stale, &fresh).await;
}

/// The same claim protocol on a real PostgreSQL inbox.
#[tokio::test]
async fn claims_on_postgres_take_over_stale_rows_and_respect_fresh_ones() {
    let Some(pg) = writ_testkit::postgres().await else {
        return;
    };
    let crm = FakeCrm::start().await;
    let master = HttpMaster::connect(&config(&crm.base_url, pg.url()))
        .await
        .unwrap();
    // A second connect is idempotent (the table exists).
    let master2 = HttpMaster::connect(&config(&crm.base_url, pg.url()))
        .await
        .unwrap();
    let stale = upsert("pg-stale", "p1", 1);
    let fresh = upsert("pg-fresh", "p2", 1);
    for (c, age) in [(&stale, "1 hour"), (&fresh, "0 seconds")] {
        sqlx::query(&format!(
            "INSERT INTO writ_http_inbox (submission_id, status, claimed_at, claimed_by, fingerprint)
             VALUES ($1, 'IN_PROGRESS', now() - interval '{age}', 'crashed-worker', $2)"
        ))
        .bind(c.submission_id)
        .bind(&c.fingerprint)
        .execute(pg.pool())
        .await
        .unwrap();
    }
    check_claims(&master, &crm, &stale, &fresh).await;

    // The other worker sees the DONE row as a duplicate; expiry works on PostgreSQL too.
    let r = master2.apply(std::slice::from_ref(&stale)).await.unwrap();
    assert!(r[0].duplicate);
    let n = master
        .expire_inbox(OffsetDateTime::now_utc() + time::Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(n, 1);
    let (left,): (i64,) = sqlx::query_as("SELECT count(*) FROM writ_http_inbox")
        .fetch_one(pg.pool())
        .await
        .unwrap();
    assert_eq!(left, 1, "the fresh IN_PROGRESS claim is not expired");
}

async fn check_claims(master: &HttpMaster, crm: &FakeCrm, stale: &Command, fresh: &Command) {
    let r = master.apply(std::slice::from_ref(stale)).await.unwrap();
    assert!(!r[0].duplicate);
    assert!(matches!(r[0].outcome, Outcome::Applied { .. }));
    assert_eq!(crm.calls(), 1);
    match master.apply(std::slice::from_ref(fresh)).await {
        Err(MasterError::Unavailable { message, .. }) => {
            assert!(message.contains("in progress"), "{message}")
        }
        other => panic!("fresh claim: {other:?}"),
    }
    assert_eq!(crm.calls(), 1, "a busy submission is not sent");
}

#[tokio::test]
async fn config_parses_from_toml_and_bad_configs_are_misconfigured() {
    use figment::providers::{Format, Toml};
    let toml = r#"
        [master]
        kind = "http"
        base_url = "https://crm.example.com/api"
        timeout_ms = 10000
        headers = { Authorization = "Bearer ${CRM_TOKEN}" }
        inbox_url = "sqlite://writ-inbox.db?mode=rwc"
        in_progress_expiry_ms = 300000
        max_concurrency = 8
        [master.types."customer.upsert.v1"]
        method = "PUT"
        path = "/customers/{customer_id}"
        canonical_id_pointer = "/id"
        version_pointer = "/version"
        body = "payload"
    "#;
    let cfg: MasterConfig = figment::Figment::from(Toml::string(toml))
        .extract_inner("master")
        .unwrap();
    let MasterConfig::Http(http) = &cfg else {
        panic!("{cfg:?}")
    };
    assert_eq!(http.max_concurrency, 8);
    assert!(!format!("{cfg:?}").contains("${CRM_TOKEN}"));

    let bad = toml.replace("max_concurrency = 8", "max_concurency = 8");
    assert!(figment::Figment::from(Toml::string(&bad))
        .extract_inner::<MasterConfig>("master")
        .is_err());

    let mut c = config("http://127.0.0.1:9", "sqlite::memory:");
    c.headers
        .insert("X-Secret".into(), "${WRIT_TEST_SURELY_UNSET_VAR}".into());
    match HttpMaster::connect(&c).await {
        Err(MasterError::Misconfigured { message }) => {
            assert!(message.contains("WRIT_TEST_SURELY_UNSET_VAR"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}
