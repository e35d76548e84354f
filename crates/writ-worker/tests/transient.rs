//! Injected transient master failures on real components: PostgreSQL
//! connections killed under load, and an HTTP master answering 503/429 with
//! Retry-After. Everything applies eventually, exactly once, and the worker
//! slows down while the master pushes back.

mod support;

use std::time::Duration;

use support::Stack;
use tokio_util::sync::CancellationToken;
use writ_worker::{Worker, WorkerConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connection_drops_are_retried_until_everything_applies_once() {
    let Some(stack) = Stack::new("pgdrop", 2).await else {
        return;
    };
    const N: i64 = 2000;
    let records: Vec<_> = (0..N)
        .map(|i| {
            stack.upsert(
                &format!("d-{i}"),
                &format!("cust-{}", i % 40),
                i / 40 + 1,
                "n",
            )
        })
        .collect();
    stack.produce(&records).await;

    let config = WorkerConfig::from_toml(&stack.worker_toml("interactive", "")).unwrap();
    let worker = Worker::connect(config).await.unwrap();
    let metrics_addr = worker.local_addr().unwrap();
    let token = CancellationToken::new();
    let handle = tokio::spawn(worker.run(token.clone()));

    // Kill the worker's connections in the middle of its transactions: hold a
    // table lock so its apply waits inside a transaction, terminate the
    // waiting sessions, release, repeat. (Killing idle connections proves
    // nothing: the pool pings and replaces them before use.)
    let killer = {
        let pool = stack.pool().clone();
        tokio::spawn(async move {
            let mut killed = 0i64;
            // Until three in-flight transactions were killed (bounded).
            for _ in 0..100 {
                if killed >= 3 {
                    break;
                }
                let mut lock = pool.begin().await.unwrap();
                sqlx::query("LOCK TABLE customers IN EXCLUSIVE MODE")
                    .execute(&mut *lock)
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(400)).await;
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE datname = current_database() AND pid <> pg_backend_pid() \
                     AND wait_event_type = 'Lock'",
                )
                .fetch_one(&mut *lock)
                .await
                .unwrap_or(0);
                killed += n;
                lock.rollback().await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            killed
        })
    };

    stack.wait_history(N, Duration::from_secs(120)).await;
    let killed = killer.await.unwrap();
    let metrics = reqwest_get(&format!("http://{metrics_addr}/metrics")).await;
    token.cancel();
    handle.await.unwrap().unwrap();

    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT (customer_id, seq)) FROM customer_history")
            .fetch_one(stack.pool())
            .await
            .unwrap();
    assert_eq!(
        (rows, distinct),
        (N, N),
        "exactly once despite {killed} killed connections"
    );
    assert!(killed > 0, "the test must actually have killed connections");
    assert!(
        metrics.contains("writ_apply_retries_total"),
        "retries are counted:\n{metrics}"
    );
}

async fn reqwest_get(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// A tiny CRM over real HTTP: fails its first requests with 503 + Retry-After
/// and 429, then applies; counts how often each idempotency key was applied.
mod crm {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::put;
    use axum::{Json, Router};

    #[derive(Default)]
    pub struct Crm {
        pub failures_left: u32,
        pub requests: u32,
        pub applied_per_key: HashMap<String, u32>,
        pub versions: HashMap<String, i64>,
    }

    pub async fn start(failures: u32) -> (String, Arc<Mutex<Crm>>) {
        let state = Arc::new(Mutex::new(Crm {
            failures_left: failures,
            ..Crm::default()
        }));
        let app = Router::new()
            .route("/customers/{id}", put(upsert))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, state)
    }

    async fn upsert(
        State(crm): State<Arc<Mutex<Crm>>>,
        Path(id): Path<String>,
        headers: HeaderMap,
        Json(_body): Json<serde_json::Value>,
    ) -> Response {
        let mut crm = crm.lock().unwrap();
        crm.requests += 1;
        if crm.failures_left > 0 {
            crm.failures_left -= 1;
            return if crm.failures_left % 2 == 0 {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [("retry-after", "1")],
                    "busy",
                )
                    .into_response()
            } else {
                (StatusCode::TOO_MANY_REQUESTS, "slow down").into_response()
            };
        }
        let key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        *crm.applied_per_key.entry(key).or_default() += 1;
        let v = crm.versions.entry(id.clone()).or_default();
        *v += 1;
        let version = *v;
        (
            StatusCode::OK,
            Json(serde_json::json!({"id": id, "version": version})),
        )
            .into_response()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_503_and_429_slow_the_worker_down_and_everything_applies_once() {
    let Some(stack) = Stack::new("http", 2).await else {
        return;
    };
    const N: usize = 300;
    let (crm_url, crm) = crm::start(40).await;
    let inbox = tempfile::tempdir().unwrap();
    let records: Vec<_> = (0..N)
        .map(|i| {
            stack.upsert(
                &format!("h-{i}"),
                &format!("cust-{}", i % 30),
                (i / 30) as i64 + 1,
                "n",
            )
        })
        .collect();
    stack.produce(&records).await;

    let toml = format!(
        r#"
domain = "{domain}"
listen = "127.0.0.1:0"
drain_timeout_ms = 4000
[kafka]
bootstrap_servers = "{bootstrap}"
properties = {{ "session.timeout.ms" = "6000" }}
[rate]
records_per_second = 200
burst = 20
[retry]
max_attempts = 100
initial_backoff_ms = 20
max_backoff_ms = 300
max_elapsed_ms = 60000
[master]
kind = "http"
base_url = "{crm_url}"
timeout_ms = 2000
inbox_url = "sqlite://{inbox}/inbox.db?mode=rwc"
[master.types."customer.upsert.v1"]
method = "PUT"
path = "/customers/{{customer_id}}"
canonical_id_pointer = "/id"
version_pointer = "/version"
"#,
        domain = stack.layout.domain(),
        bootstrap = stack.kafka.bootstrap_servers(),
        inbox = inbox.path().display(),
    );
    let worker = Worker::connect(WorkerConfig::from_toml(&toml).unwrap())
        .await
        .unwrap();
    let metrics_url = format!("http://{}/metrics", worker.local_addr().unwrap());
    let token = CancellationToken::new();
    let handle = tokio::spawn(worker.run(token.clone()));

    // Watch the limiter's effective rate while the master pushes back.
    let mut lowest_rate = f64::MAX;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let text = reqwest_get(&metrics_url).await;
        if let Some(rate) = text
            .lines()
            .find(|l| l.starts_with("writ_rate_limit_records_per_second"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
        {
            if rate > 0.0 {
                lowest_rate = lowest_rate.min(rate);
            }
        }
        let applied: u32 = crm.lock().unwrap().applied_per_key.values().sum();
        if applied as usize >= N {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stalled at {applied}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let statuses = stack.wait_statuses(N, Duration::from_secs(60)).await;
    token.cancel();
    handle.await.unwrap().unwrap();

    let crm = crm.lock().unwrap();
    assert_eq!(
        crm.applied_per_key.len(),
        N,
        "every command reached the master"
    );
    assert!(
        crm.applied_per_key.values().all(|&n| n == 1),
        "none applied twice"
    );
    assert!(
        crm.requests as usize >= N + 40,
        "the failures really happened"
    );
    assert!(statuses
        .iter()
        .all(|s| s.state == writ_core::SubmissionState::Applied));
    assert!(
        lowest_rate < 200.0,
        "the worker slowed down while throttled (lowest effective rate {lowest_rate})"
    );
}
