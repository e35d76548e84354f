//! API keys and the values of secret-marked payload fields (`tax_id`,
//! `"writ.secret": true` in customer.upsert.v1) never appear in the ingress's
//! logs (captured at TRACE for every crate: writ, axum, sqlx, librdkafka;
//! requests in-process and over a real socket) nor in its answers
//! (problem+json bodies, headers, job line errors) — for good requests,
//! wrong / foreign / missing / malformed keys, and bad requests whose error
//! could echo the value (tax_id of the wrong type, an over-long body, broken
//! JSON around the value, a schema violation next to it, an Idempotency-Key
//! reused with another tax_id).
//! Its own test binary: the log capture is a process-wide subscriber.
//! Runs on the test broker when `WRIT_TEST_KAFKA` is set, else on the mock.

mod support;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use support::{Running, Topics, ACME, ACME_DELETE_ONLY, GLOBEX};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;
use writ_http::hash_api_key;
use writ_ingress::{Ingress, IngressConfig};

/// Distinctive API keys (the support module's are swapped out for these).
const ACME_KEY: &str = "wk_live_ACME_7d1f0c9be24a53e8";
const GLOBEX_KEY: &str = "wk_live_GLOBEX_a8e6b2d4f1c07b93";
const DELETE_ONLY_KEY: &str = "wk_live_DELONLY_3b95e0a7c6d21f4";
const WRONG_KEY: &str = "wk_live_WRONG_5e3a9c1d7b2f4a60";

/// Distinctive tax ids.
const TAX_OK: &str = "TAXID-ACCEPTED-8e21c4f7a9";
const TAX_GLOBEX: &str = "TAXID-GLOBEX-0d7b3e91c5";
const TAX_AUTH: &str = "TAXID-UNAUTH-b4a90f2e67";
const TAX_NUMBER: i64 = 5_029_384_716_253;
const TAX_OBJECT: &str = "TAXID-OBJECT-6f13d8a2b0";
const TAX_ARRAY: &str = "TAXID-ARRAY-e5c7019b3d";
const TAX_LONG: &str = "TAXID-OVERLONG-29d4b6e8f1";
const TAX_NEIGHBOUR: &str = "TAXID-NEIGHBOUR-7a0c5e3b98";
const TAX_REUSED: &str = "TAXID-REUSED-c81f6a4d02";
const TAX_BROKEN: &str = "TAXID-BROKENJSON-4e9b2d7a13";
const TAX_ESCAPE: &str = "TAXID-BADESCAPE-90a3f5c1e8";
const TAX_UTF8: &str = "TAXID-BADUTF8-1b6e8d3f4c";
const TAX_JOB: &str = "TAXID-JOBLINE-d03a7b5e91";
const TAX_WIRE: &str = "TAXID-WIRE-58f2c9a0e7";

fn secrets() -> Vec<String> {
    [
        ACME_KEY,
        GLOBEX_KEY,
        DELETE_ONLY_KEY,
        WRONG_KEY,
        TAX_OK,
        TAX_GLOBEX,
        TAX_AUTH,
        TAX_OBJECT,
        TAX_ARRAY,
        TAX_LONG,
        TAX_NEIGHBOUR,
        TAX_REUSED,
        TAX_BROKEN,
        TAX_ESCAPE,
        TAX_UTF8,
        TAX_JOB,
        TAX_WIRE,
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([TAX_NUMBER.to_string()])
    .collect()
}

const POST: &str = "/v1/commands/customer.upsert.v1";

fn customer(id: &str, tax_id: Value) -> Vec<u8> {
    json!({"customer_id": id, "name": "Ada", "email": format!("{id}@example.com"), "tax_id": tax_id})
        .to_string()
        .into_bytes()
}

/// One answer: its status and everything the client sees as text.
struct Answer {
    status: StatusCode,
    body: Value,
    text: String,
}

async fn call(
    app: &Router,
    method: Method,
    path: &str,
    authorization: Option<String>,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Answer {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let response = app
        .clone()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let mut text = String::new();
    for (n, v) in response.headers() {
        text.push_str(&format!("{n}: {}\n", String::from_utf8_lossy(v.as_bytes())));
    }
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    text.push_str(&String::from_utf8_lossy(&bytes));
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer { status, body, text }
}

fn bearer(key: &str) -> Option<String> {
    Some(format!("Bearer {key}"))
}

/// Sends raw bytes over a socket; returns the whole response as text.
async fn raw_request(base: &str, request: &[u8]) -> String {
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut response))
        .await
        .expect("the ingress answers and closes")
        .unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

fn raw_post(authorization: &str, key: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {POST} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\
         authorization: {authorization}\r\nidempotency-key: {key}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_and_secret_fields_never_reach_logs_or_answers() {
    let capture = writ_testkit::LogCapture::install();
    let started = std::time::Instant::now();
    let topics = Topics::create(writ_testkit::kafka().await, "secrets", 1).await;
    let toml = topics
        .ingress_toml("")
        .replace(&hash_api_key(ACME), &hash_api_key(ACME_KEY))
        .replace(&hash_api_key(GLOBEX), &hash_api_key(GLOBEX_KEY))
        .replace(
            &hash_api_key(ACME_DELETE_ONLY),
            &hash_api_key(DELETE_ONLY_KEY),
        );
    let ingress = Ingress::start(IngressConfig::from_toml(&toml).unwrap())
        .await
        .unwrap();
    assert!(ingress.caught_up(Duration::from_secs(30)).await);
    let app = ingress.router();
    let running = Running::serve(ingress);

    let json_key = |k: &'static str| [("idempotency-key", k), ("content-type", "application/json")];
    let mut answers: Vec<(&str, Answer, StatusCode)> = Vec::new();
    let post = |name, auth: Option<String>, key: &'static str, body: Vec<u8>, want| {
        let app = app.clone();
        async move {
            let a = call(&app, Method::POST, POST, auth, &json_key(key), body).await;
            (name, a, want)
        }
    };

    // A good submission, then the same key with another tax id.
    answers.push(
        post(
            "good submission",
            bearer(ACME_KEY),
            "k-good",
            customer("c-1", json!(TAX_OK)),
            StatusCode::ACCEPTED,
        )
        .await,
    );
    let submission = answers[0].1.body["submissionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no submission id: {}", answers[0].1.text))
        .to_owned();
    answers.push(
        post(
            "Idempotency-Key reused with another tax_id",
            bearer(ACME_KEY),
            "k-good",
            customer("c-1", json!(TAX_REUSED)),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await,
    );
    // Keys: another tenant's (its own submission is fine), wrong, missing, malformed, not allowed.
    answers.push(
        post(
            "another tenant's key",
            bearer(GLOBEX_KEY),
            "k-globex",
            customer("c-1", json!(TAX_GLOBEX)),
            StatusCode::ACCEPTED,
        )
        .await,
    );
    for (name, auth, status) in [
        ("wrong API key", bearer(WRONG_KEY), StatusCode::UNAUTHORIZED),
        ("no API key", None, StatusCode::UNAUTHORIZED),
        (
            "API key in the wrong scheme",
            Some(format!("Basic {ACME_KEY}")),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "API key without a scheme",
            Some(WRONG_KEY.to_owned()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "API key limited to other types",
            bearer(DELETE_ONLY_KEY),
            StatusCode::FORBIDDEN,
        ),
    ] {
        answers.push(
            post(
                name,
                auth,
                "k-auth",
                customer("c-2", json!(TAX_AUTH)),
                status,
            )
            .await,
        );
    }
    // Bad requests whose error could echo the value.
    for (name, key, body, status) in [
        (
            "tax_id a number",
            "k-number",
            customer("c-3", json!(TAX_NUMBER)),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "tax_id an object",
            "k-object",
            customer("c-3", json!({"value": TAX_OBJECT})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "tax_id an array",
            "k-array",
            customer("c-3", json!([TAX_ARRAY])),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "over-long body",
            "k-long",
            customer("c-3", json!(format!("{TAX_LONG}{}", "x".repeat(5000)))),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "schema violation next to tax_id",
            "k-neighbour",
            json!({"customer_id": "c-3", "name": 42, "email": "c@example.com", "tax_id": TAX_NEIGHBOUR})
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "unknown field holding the value",
            "k-unknown",
            json!({"customer_id": "c-3", "name": "Ada", "email": "c@example.com", "tax_number": TAX_NEIGHBOUR})
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "JSON cut off after tax_id",
            "k-broken",
            format!("{{\"customer_id\": \"c-3\", \"tax_id\": \"{TAX_BROKEN}\", \"name\": ").into_bytes(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "invalid escape in tax_id",
            "k-escape",
            format!("{{\"customer_id\": \"c-3\", \"tax_id\": \"{TAX_ESCAPE}\\q\"}}").into_bytes(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "invalid UTF-8 in tax_id",
            "k-utf8",
            [
                format!("{{\"customer_id\": \"c-3\", \"tax_id\": \"{TAX_UTF8}").as_bytes(),
                b"\xff\xfe\"}",
            ]
            .concat(),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        answers.push(post(name, bearer(ACME_KEY), key, body, status).await);
    }
    // Reading a submission: its tenant may, another tenant may not.
    let path = format!("/v1/submissions/{submission}");
    let own = call(&app, Method::GET, &path, bearer(ACME_KEY), &[], Vec::new()).await;
    answers.push(("status read by its tenant", own, StatusCode::OK));
    let foreign = call(
        &app,
        Method::GET,
        &path,
        bearer(GLOBEX_KEY),
        &[],
        Vec::new(),
    )
    .await;
    answers.push((
        "status read by another tenant",
        foreign,
        StatusCode::NOT_FOUND,
    ));
    // A bulk job whose bad lines carry tax ids.
    let job_body = [
        String::from_utf8(customer("c-10", json!(TAX_JOB))).unwrap(),
        format!("{{\"customer_id\": \"c-11\", \"tax_id\": \"{TAX_JOB}"),
        String::from_utf8(customer("c-12", json!({"v": TAX_JOB}))).unwrap(),
        json!({"customer_id": "c-13", "name": 7, "email": "e@x", "tax_id": TAX_JOB}).to_string(),
    ]
    .join("\n")
        + "\n";
    let job = call(
        &app,
        Method::POST,
        "/v1/jobs?type=customer.upsert.v1",
        bearer(ACME_KEY),
        &[("idempotency-key", "upload-secrets")],
        job_body.into_bytes(),
    )
    .await;
    assert_eq!(job.body["invalid"], 3, "{}", job.text);
    let job_id = job.body["jobId"].as_str().unwrap_or_default().to_owned();
    answers.push(("bulk job with bad lines", job, StatusCode::ACCEPTED));
    let errors = call(
        &app,
        Method::GET,
        &format!("/v1/jobs/{job_id}/errors"),
        bearer(ACME_KEY),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(
        errors.body["errors"].as_array().map(Vec::len),
        Some(3),
        "{}",
        errors.text
    );
    answers.push(("bulk job line errors", errors, StatusCode::OK));

    // Over a real socket too: the serving stack sees the raw header bytes.
    let wire_body = customer("c-20", json!(TAX_WIRE));
    let mut wire = Vec::new();
    for (name, auth, status) in [
        ("socket: good key", format!("Bearer {ACME_KEY}"), 202),
        ("socket: wrong key", format!("Bearer {WRONG_KEY}"), 401),
        (
            "socket: key in the wrong scheme",
            format!("Basic {GLOBEX_KEY}"),
            401,
        ),
    ] {
        let text = raw_request(&running.base, &raw_post(&auth, "k-wire", &wire_body)).await;
        let got = text.split_whitespace().nth(1).unwrap_or("");
        assert_eq!(got, status.to_string(), "{name}: {text}");
        wire.push((name, text));
    }

    // Every answer was the one expected: the paths under test were taken.
    let mut failures = Vec::new();
    for (name, a, want) in &answers {
        if a.status != *want {
            failures.push(format!("{name}: {} (expected {want}) {}", a.status, a.text));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The search would find a leak: the good command carries its tax id to Kafka.
    let commands: String = topics
        .read_topic(&topics.layout.commands())
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect();
    for s in [TAX_OK, TAX_GLOBEX, TAX_WIRE] {
        assert!(commands.contains(s), "the produced command keeps {s}");
    }
    running.stop().await;

    let logs = capture.text();
    for expected in ["ingress started", "request refused", "unknown API key"] {
        assert!(logs.contains(expected), "captured logs lack `{expected}`");
    }
    let mut leaks = Vec::new();
    for secret in secrets() {
        if let Some(at) = logs.find(&secret) {
            leaks.push(format!("logs: {}", writ_testkit::line_at(&logs, at)));
        }
        for (name, a, _) in &answers {
            if a.text.contains(&secret) {
                leaks.push(format!("answer to `{name}` contains {secret}: {}", a.text));
            }
        }
        for (name, text) in &wire {
            if text.contains(&secret) {
                leaks.push(format!("answer to `{name}` contains {secret}: {text}"));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
    println!(
        "{} answers and {} bytes of TRACE logs checked for {} secrets in {:?}",
        answers.len() + wire.len(),
        logs.len(),
        secrets().len(),
        started.elapsed()
    );
}
