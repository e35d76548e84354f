//! End-to-end over real sockets, on the test broker and PostgreSQL, with the
//! real apply worker in-process: CP-1 answers 201 with a canonical id that
//! exists in the master, CP-2 progresses to APPLIED, duplicates are replayed
//! or refused consistently by two ingress instances, tenants are isolated,
//! a 10k-line CP-3 job finishes with exact counts and its bad line named, and
//! a draft submitted twice is one master write and is deleted once applied.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{Running, Topics, ACME, GLOBEX, MASTER_DDL};
use tokio_util::sync::CancellationToken;
use writ_worker::{Worker, WorkerConfig};

struct Stack {
    topics: Topics,
    pg: writ_testkit::TestPostgres,
    http: reqwest::Client,
}

impl Stack {
    async fn new(prefix: &str) -> Option<Stack> {
        let pg = writ_testkit::postgres().await?;
        sqlx::raw_sql(MASTER_DDL).execute(pg.pool()).await.unwrap();
        let topics = Topics::create(writ_testkit::kafka().await, prefix, 2).await;
        Some(Stack {
            topics,
            pg,
            http: reqwest::Client::new(),
        })
    }

    async fn worker(
        &self,
        profile: &str,
    ) -> (
        CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    ) {
        let config =
            WorkerConfig::from_toml(&self.topics.worker_toml(profile, self.pg.url())).unwrap();
        let worker = Worker::connect(config).await.unwrap();
        let token = CancellationToken::new();
        (token.clone(), tokio::spawn(worker.run(token)))
    }

    async fn post(
        &self,
        base: &str,
        api_key: &str,
        idem: &str,
        body: &Value,
        prefer: Option<&str>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut req = self
            .http
            .post(format!("{base}/v1/commands/customer.upsert.v1"))
            .bearer_auth(api_key)
            .header("idempotency-key", idem)
            .json(body);
        if let Some(p) = prefer {
            req = req.header("prefer", p);
        }
        let r = req.send().await.unwrap();
        let (status, headers) = (r.status(), r.headers().clone());
        (status, headers, r.json().await.unwrap())
    }

    async fn get(&self, base: &str, api_key: &str, path: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(format!("{base}{path}"))
            .bearer_auth(api_key)
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap())
    }

    /// Polls `path` until `done` holds for its body; panics after `timeout`.
    async fn poll(
        &self,
        base: &str,
        path: &str,
        timeout: Duration,
        done: impl Fn(StatusCode, &Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (status, body) = self.get(base, ACME, path).await;
            if done(status, &body) {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path} stuck at {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn stop_worker(
    token: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    writ_testkit::cancel_and_join(&token, handle, Duration::from_secs(30))
        .await
        .unwrap();
}

fn customer(id: &str, name: &str) -> Value {
    json!({"customer_id": id, "name": name, "email": format!("{id}@example.com")})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_async_duplicates_replicas_and_tenants() {
    let Some(stack) = Stack::new("e2e").await else {
        return;
    };
    let (wt, wh) = stack.worker("interactive").await;
    let a = Running::serve(stack.topics.ingress("").await);

    // CP-1: 201 with the canonical id, which exists in the master.
    let (status, headers, body) = stack
        .post(
            &a.base,
            ACME,
            "sync-1",
            &customer("c-1", "Ada"),
            Some("wait=25"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["canonicalId"], "c-1");
    assert_eq!(body["state"], "APPLIED");
    assert_eq!(headers["preference-applied"], "wait=25");
    let name: String = sqlx::query_scalar("SELECT name FROM customers WHERE customer_id = $1")
        .bind(body["canonicalId"].as_str().unwrap())
        .fetch_one(stack.pg.pool())
        .await
        .unwrap();
    assert_eq!(name, "Ada");

    // CP-2: 202, then the status progresses to APPLIED.
    let (status, headers, body) = stack
        .post(&a.base, ACME, "async-1", &customer("c-2", "Grace"), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let location = headers["location"].to_str().unwrap().to_owned();
    let done = stack
        .poll(&a.base, &location, Duration::from_secs(60), |s, b| {
            s == StatusCode::OK && b["state"] == "APPLIED"
        })
        .await;
    assert_eq!(done["canonicalId"], "c-2");
    assert_eq!(done["masterVersion"], 1);
    assert!(done["appliedAt"].is_string());

    // Duplicates: same payload → the stored answer, replayed, nothing produced; another payload → 422.
    let commands_before = stack
        .topics
        .read_topic(&stack.topics.layout.commands())
        .len();
    let (status, headers, body) = stack
        .post(&a.base, ACME, "sync-1", &customer("c-1", "Ada"), None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(body["canonicalId"], "c-1");
    let (status, _, body) = stack
        .post(&a.base, ACME, "sync-1", &customer("c-1", "Eve"), None)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["type"], "urn:writ:problem:idempotency-key-reused");
    assert_eq!(
        stack
            .topics
            .read_topic(&stack.topics.layout.commands())
            .len(),
        commands_before
    );
    let version: i64 =
        sqlx::query_scalar("SELECT version FROM customers WHERE customer_id = 'c-1'")
            .fetch_one(stack.pg.pool())
            .await
            .unwrap();
    assert_eq!(version, 1, "applied once");

    // A second instance with its own (fresh) view answers every key the same way.
    let b = Running::serve(stack.topics.ingress("").await);
    let (status, view) = stack.get(&b.base, ACME, &location).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["state"], "APPLIED");
    let (status, headers, body) = stack
        .post(&b.base, ACME, "async-1", &customer("c-2", "Grace"), None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(headers["idempotent-replayed"], "true");
    let (status, _, _) = stack
        .post(&b.base, ACME, "async-1", &customer("c-2", "Mallory"), None)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // ... and a key first seen on B is known to A once A read B's status.
    let (status, _, body) = stack
        .post(
            &b.base,
            ACME,
            "via-b",
            &customer("c-3", "Bob"),
            Some("wait=25"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let path = format!("/v1/submissions/{}", body["submissionId"].as_str().unwrap());
    stack
        .poll(&a.base, &path, Duration::from_secs(30), |s, b| {
            s == StatusCode::OK && b["state"] == "APPLIED"
        })
        .await;
    let (status, headers, _) = stack
        .post(&a.base, ACME, "via-b", &customer("c-3", "Bob"), None)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["idempotent-replayed"], "true");

    // Tenancy: another tenant's submission does not exist for it.
    let (status, body) = stack.get(&a.base, GLOBEX, &location).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = stack.get(&b.base, GLOBEX, &path).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // A master rejection is answered inline by CP-1.
    let (status, _, body) = stack
        .post(
            &a.base,
            ACME,
            "poison-1",
            &customer("c-9", "poison"),
            Some("wait=25"),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["state"], "REJECTED");

    a.stop().await;
    b.stop().await;
    stop_worker(wt, wh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_thousand_line_job_finishes_with_exact_counts() {
    let Some(stack) = Stack::new("job").await else {
        return;
    };
    let (wt, wh) = stack.worker("bulk").await;
    let a = Running::serve(stack.topics.ingress("").await);
    const LINES: usize = 10_000;
    const BAD: usize = 4321;
    let mut body = String::with_capacity(LINES * 90);
    for i in 1..=LINES {
        if i == BAD {
            body.push_str("{\"customer_id\": \"c-bad\", \"email\": \"x@example.com\"}\n");
        } else {
            body.push_str(&customer(&format!("c-{i}"), "Ada").to_string());
            body.push('\n');
        }
    }
    // Sent in pieces, as a client streaming a file would.
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = body
        .into_bytes()
        .chunks(64 * 1024)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let r = stack
        .http
        .post(format!("{}/v1/jobs?type=customer.upsert.v1", a.base))
        .bearer_auth(ACME)
        .header("idempotency-key", "big-upload")
        .header("content-type", "application/x-ndjson")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let job: Value = r.json().await.unwrap();
    assert_eq!(job["lines"], LINES);
    assert_eq!(job["produced"], LINES - 1);
    assert_eq!(job["invalid"], 1);
    let id = job["jobId"].as_str().unwrap().to_owned();

    let done = stack
        .poll(
            &a.base,
            &format!("/v1/jobs/{id}"),
            Duration::from_secs(180),
            |s, b| s == StatusCode::OK && b["done"] == true,
        )
        .await;
    assert_eq!(done["counts"]["applied"], LINES - 1, "{done}");
    assert_eq!(done["counts"]["accepted"], 0);
    assert_eq!(done["counts"]["rejected"], 0);
    assert_eq!(done["progress"], 1.0);
    let (_, errors) = stack
        .get(&a.base, ACME, &format!("/v1/jobs/{id}/errors"))
        .await;
    let errors = errors["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["line"], BAD);
    assert_eq!(errors[0]["code"], "VALIDATION");
    assert!(
        errors[0]["message"].as_str().unwrap().contains("/name"),
        "{errors:?}"
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM customers")
        .fetch_one(stack.pg.pool())
        .await
        .unwrap();
    assert_eq!(rows, (LINES - 1) as i64);

    a.stop().await;
    stop_worker(wt, wh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draft_submitted_twice_is_one_master_write_and_then_gone() {
    let Some(stack) = Stack::new("e2e-drafts").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (wt, wh) = stack.worker("interactive").await;
    let extra = format!(
        "[drafts]\nstore_url = \"sqlite://{}?mode=rwc\"\n",
        dir.path().join("drafts.db").display()
    );
    let a = Running::serve(stack.topics.ingress(&extra).await);
    let draft = format!("{}/v1/drafts/cart-1", a.base);

    let saved = stack
        .http
        .put(&draft)
        .bearer_auth(ACME)
        .json(&json!({"type": "customer.upsert.v1", "data": customer("d-1", "Linus")}))
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), StatusCode::CREATED);

    // A double click: the same draft version submitted twice, the second
    // while the first may still be in flight.
    let mut answers = Vec::new();
    for _ in 0..2 {
        let r = stack
            .http
            .post(format!("{draft}/submit"))
            .bearer_auth(ACME)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert!(
            status == StatusCode::ACCEPTED || status == StatusCode::CREATED,
            "{status} {body}"
        );
        answers.push(body["submissionId"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        answers[0], answers[1],
        "one draft version is one submission"
    );

    // Applied → the draft is deleted (by the status event, or on this read).
    stack
        .poll(
            &a.base,
            "/v1/drafts/cart-1",
            Duration::from_secs(60),
            |s, _| s == StatusCode::NOT_FOUND,
        )
        .await;
    let (rows, version): (i64, i64) =
        sqlx::query_as("SELECT count(*), max(version) FROM customers WHERE customer_id = 'd-1'")
            .fetch_one(stack.pg.pool())
            .await
            .unwrap();
    assert_eq!((rows, version), (1, 1), "applied exactly once");

    a.stop().await;
    stop_worker(wt, wh).await;
}
