//! The ingress half of issue 7's bad-input table: every kind of bad request
//! gets an RFC 9457 problem naming what is wrong, and nothing reaches the
//! command or status topics; afterwards the same ingress still accepts a
//! good command. Transport-level abuse (control bytes, a flood of headers)
//! goes over a real socket, where hyper sees it before the router does.
//! Runs on the test broker when `WRIT_TEST_KAFKA` is set, else on the mock.

mod support;

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use support::{Running, Topics, ACME};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;
use writ_ingress::{Ingress, IngressConfig};

const POST: &str = "/v1/commands/customer.upsert.v1";

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

/// One row of the table: a request and the problem it must get.
struct Case {
    name: &'static str,
    path: &'static str,
    key: Option<&'static str>,
    headers: Vec<(&'static str, HeaderValue)>,
    body: Vec<u8>,
    status: StatusCode,
    slug: &'static str,
    /// Must appear in `detail` (or in a field error's path): the problem is named.
    names: &'static str,
}

fn h(v: &'static str) -> HeaderValue {
    HeaderValue::from_static(v)
}

fn json_headers(key: &'static str) -> Vec<(&'static str, HeaderValue)> {
    vec![
        ("idempotency-key", h(key)),
        ("content-type", h("application/json")),
    ]
}

fn customer(id: &str, name: &str) -> Vec<u8> {
    json!({"customer_id": id, "name": name, "email": format!("{id}@example.com"), "tax_id": "DE-1"})
        .to_string()
        .into_bytes()
}

async fn call(app: &Router, case: &Case) -> Answer {
    let mut req = Request::builder().method(Method::POST).uri(case.path);
    if let Some(k) = case.key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    for (n, v) in &case.headers {
        req = req.header(*n, v.clone());
    }
    let response = app
        .clone()
        .oneshot(req.body(Body::from(case.body.clone())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
    Answer {
        status,
        headers,
        body,
    }
}

/// A Confluent-framed datum: magic byte, 4-byte schema id, Avro bytes.
fn framed(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend_from_slice(&schema_id.to_be_bytes());
    v.extend_from_slice(datum);
    v
}

fn table() -> Vec<Case> {
    let case = |name, status, slug, names, body: Vec<u8>| Case {
        name,
        path: POST,
        key: Some(ACME),
        headers: json_headers("k-bad"),
        body,
        status,
        slug,
        names,
    };
    let bad_request = StatusCode::BAD_REQUEST;
    let invalid = StatusCode::UNPROCESSABLE_ENTITY;
    vec![
        case(
            "malformed JSON",
            bad_request,
            "invalid-json",
            "not valid JSON",
            b"{\"customer_id\": \"c-1\", ".to_vec(),
        ),
        case(
            "wrong field types",
            invalid,
            "validation",
            "/name",
            json!({"customer_id": "c-1", "name": 42, "email": true})
                .to_string()
                .into_bytes(),
        ),
        case(
            "missing required fields",
            invalid,
            "validation",
            "/email",
            json!({"customer_id": "c-1", "name": "Ada"})
                .to_string()
                .into_bytes(),
        ),
        case(
            "missing entity key",
            invalid,
            "validation",
            "/customer_id",
            json!({"name": "Ada", "email": "a@example.com"})
                .to_string()
                .into_bytes(),
        ),
        case(
            "a JSON array, not an object",
            invalid,
            "validation",
            "",
            b"[1, 2, 3]".to_vec(),
        ),
        case(
            "oversize body",
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "4096",
            customer("c-1", &"x".repeat(5000)),
        ),
        case(
            "invalid UTF-8",
            bad_request,
            "invalid-json",
            "not valid JSON",
            b"{\"customer_id\": \"c-1\", \"name\": \"Ad\xff\xfe\", \"email\": \"a@x\"}".to_vec(),
        ),
        case(
            "empty value",
            bad_request,
            "invalid-json",
            "EOF",
            Vec::new(),
        ),
        Case {
            name: "unknown ce_type",
            path: "/v1/commands/invoice.void.v1",
            status: StatusCode::NOT_FOUND,
            slug: "unknown-type",
            names: "invoice.void.v1",
            ..case("", bad_request, "", "", customer("c-1", "Ada"))
        },
        Case {
            name: "missing ce_id (no Idempotency-Key)",
            headers: vec![("content-type", h("application/json"))],
            status: bad_request,
            slug: "idempotency-key-missing",
            names: "Idempotency-Key",
            ..case("", bad_request, "", "", customer("c-1", "Ada"))
        },
        Case {
            // At the ingress, ce_source is the authenticated tenant: no key, no source.
            name: "missing ce_source (no API key)",
            key: None,
            status: StatusCode::UNAUTHORIZED,
            slug: "unauthorized",
            names: "",
            ..case("", bad_request, "", "", customer("c-1", "Ada"))
        },
        Case {
            name: "wrong content-type",
            headers: vec![
                ("idempotency-key", h("k-bad")),
                ("content-type", h("text/csv")),
            ],
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            slug: "unsupported-media-type",
            names: "application/json",
            ..case(
                "",
                bad_request,
                "",
                "",
                b"customer_id,name\nc-1,Ada\n".to_vec(),
            )
        },
        Case {
            // Avro is a Kafka-side encoding; the HTTP API takes JSON only.
            name: "truncated Avro",
            headers: vec![
                ("idempotency-key", h("k-bad")),
                ("content-type", h("application/avro")),
            ],
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            slug: "unsupported-media-type",
            names: "application/json",
            ..case("", bad_request, "", "", vec![0x06, b'c', b'-'])
        },
        case(
            // The same Avro bytes labelled as JSON are just bad JSON.
            "unknown schema id (Confluent framing sent as JSON)",
            bad_request,
            "invalid-json",
            "not valid JSON",
            framed(987_654, &[0x06, b'c', b'-', b'1']),
        ),
        Case {
            name: "control character in the Idempotency-Key",
            headers: vec![
                ("idempotency-key", h("k-\tbad")),
                ("content-type", h("application/json")),
            ],
            status: bad_request,
            slug: "idempotency-key-invalid",
            names: "control character",
            ..case("", bad_request, "", "", customer("c-1", "Ada"))
        },
        Case {
            name: "non-ASCII bytes in the Idempotency-Key",
            headers: vec![
                (
                    "idempotency-key",
                    HeaderValue::from_bytes(b"k-\xff\xfe").unwrap(),
                ),
                ("content-type", h("application/json")),
            ],
            status: bad_request,
            slug: "invalid-header",
            names: "idempotency-key",
            ..case("", bad_request, "", "", customer("c-1", "Ada"))
        },
        Case {
            name: "empty Idempotency-Key",
            headers: vec![("idempotency-key", h(""))],
            status: bad_request,
            slug: "idempotency-key-invalid",
            names: "empty",
            ..case("", bad_request, "", "", customer("c-1", "Ada"))
        },
        Case {
            name: "Idempotency-Key too long",
            headers: vec![(
                "idempotency-key",
                HeaderValue::from_str(&"k".repeat(256)).unwrap(),
            )],
            status: bad_request,
            slug: "idempotency-key-invalid",
            names: "longer than 255 bytes",
            ..case("", bad_request, "", "", customer("c-1", "Ada"))
        },
        Case {
            name: "Staleness-Window not a number",
            headers: vec![
                ("idempotency-key", h("k-bad")),
                ("staleness-window", h("soon")),
            ],
            status: bad_request,
            slug: "staleness-window",
            names: "whole number of seconds",
            ..case("", bad_request, "", "", customer("c-1", "Ada"))
        },
        Case {
            name: "Staleness-Window out of the type's bounds",
            headers: vec![
                ("idempotency-key", h("k-bad")),
                ("staleness-window", h("999999")),
            ],
            status: bad_request,
            slug: "staleness-window",
            names: "",
            ..case("", bad_request, "", "", customer("c-1", "Ada"))
        },
        Case {
            name: "If-Match not a version",
            headers: vec![
                ("idempotency-key", h("k-bad")),
                ("if-match", h("\"v-three\"")),
            ],
            status: bad_request,
            slug: "if-match",
            names: "master version",
            ..case("", bad_request, "", "", customer("c-1", "Ada"))
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_gets_a_problem_and_nothing_is_produced() {
    let topics = Topics::create(writ_testkit::kafka().await, "badin", 2).await;
    let ingress = topics.ingress("").await;
    let app = ingress.router();
    let cases = table();
    assert!(cases.len() >= 15, "the issue asks for at least 15 kinds");
    let mut failures = Vec::new();
    for case in &cases {
        let answer = call(&app, case).await;
        let name = case.name;
        let body = &answer.body;
        let mut check = |ok: bool, what: &str| {
            if !ok {
                failures.push(format!("{name}: {what}; got {} {body}", answer.status));
            }
        };
        check(answer.status == case.status, "status");
        check(
            answer.headers.get("content-type").map(|v| v.as_bytes())
                == Some(&b"application/problem+json"[..]),
            "problem+json media type",
        );
        check(
            body["type"] == format!("urn:writ:problem:{}", case.slug),
            "problem type",
        );
        check(body["status"] == case.status.as_u16(), "status member");
        check(
            body["title"].as_str().is_some_and(|t| !t.is_empty()),
            "a title",
        );
        let detail = body["detail"].as_str().unwrap_or_default();
        let paths: Vec<&str> = body["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["path"].as_str())
            .collect();
        check(
            detail.contains(case.names) || paths.contains(&case.names),
            &format!("the problem names `{}`", case.names),
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    assert!(
        topics.read_topic(&topics.layout.commands()).is_empty(),
        "no command produced"
    );
    assert!(
        topics.read_topic(&topics.layout.status()).is_empty(),
        "no status produced"
    );

    // The ingress is unharmed: a good command is accepted and produced once.
    let good = Case {
        name: "good",
        path: POST,
        key: Some(ACME),
        headers: json_headers("k-good"),
        body: customer("c-1", "Ada"),
        status: StatusCode::ACCEPTED,
        slug: "",
        names: "",
    };
    let answer = call(&app, &good).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    assert_eq!(topics.read_topic(&topics.layout.commands()).len(), 1);
    assert_eq!(topics.statuses().await.len(), 1);
}

/// Sends raw bytes over a socket and returns the status line and the body.
async fn raw_request(base: &str, request: &[u8]) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut response))
        .await
        .expect("the ingress answers and closes")
        .unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

fn raw_post(extra_headers: &[u8], body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {POST} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\nauthorization: Bearer {ACME}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(extra_headers);
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_abuse_on_the_wire_is_refused_before_anything_is_produced() {
    let topics = Topics::create(writ_testkit::kafka().await, "badwire", 2).await;
    let running = Running::serve(topics.ingress("").await);
    let body = customer("c-1", "Ada");

    // A control byte inside a header value: refused by the HTTP parser, since
    // no header may carry one (RFC 9110 §5.5).
    let (status, _) = raw_request(
        &running.base,
        &raw_post(b"idempotency-key: k-\x01-ctl\r\n", &body),
    )
    .await;
    assert_eq!(status, 400, "control byte in a header value");

    // A huge header count: refused with 431 before the router allocates for it.
    let mut many = Vec::new();
    for i in 0..500 {
        many.extend_from_slice(format!("x-filler-{i}: {i}\r\n").as_bytes());
    }
    many.extend_from_slice(b"idempotency-key: k-many\r\n");
    let (status, _) = raw_request(&running.base, &raw_post(&many, &body)).await;
    assert_eq!(status, 431, "500 headers");

    // Obs-text in a header the ingress reads reaches the router: a problem.
    let (status, problem) = raw_request(
        &running.base,
        &raw_post(b"idempotency-key: k-\xff\xfe\r\n", &body),
    )
    .await;
    assert_eq!(status, 400, "{problem}");
    let problem: Value = serde_json::from_str(&problem).unwrap();
    assert_eq!(problem["type"], "urn:writ:problem:invalid-header");

    assert!(
        topics.read_topic(&topics.layout.commands()).is_empty(),
        "no command produced"
    );
    // Still serving: the same request with clean headers is accepted.
    let (status, answer) = raw_request(
        &running.base,
        &raw_post(b"idempotency-key: k-clean\r\n", &body),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(topics.read_topic(&topics.layout.commands()).len(), 1);
    running.stop().await;
}

/// `Prefer` is a preference (RFC 7240): a wait beyond the ingress's maximum
/// is honoured up to that maximum and says so in `Preference-Applied`; a
/// value that is not a whole number of seconds is ignored, not an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_wait_out_of_range_is_capped_and_announced() {
    let topics = Topics::create(writ_testkit::kafka().await, "badwait", 2).await;
    let toml = topics
        .ingress_toml("")
        .replace("max_wait_ms = 30000", "max_wait_ms = 1000");
    let ingress = Ingress::start(IngressConfig::from_toml(&toml).unwrap())
        .await
        .unwrap();
    assert!(ingress.caught_up(Duration::from_secs(30)).await);
    let app = ingress.router();
    let with_prefer = |key: &'static str, prefer: &'static str| Case {
        name: prefer,
        path: POST,
        key: Some(ACME),
        headers: vec![
            ("idempotency-key", h(key)),
            ("content-type", h("application/json")),
            ("prefer", h(prefer)),
        ],
        body: customer(key, "Ada"),
        status: StatusCode::ACCEPTED,
        slug: "",
        names: "",
    };
    // No worker runs: the capped wait times out into the CP-2 answer.
    let capped = call(&app, &with_prefer("w-1", "wait=86400000")).await;
    assert_eq!(capped.status, StatusCode::ACCEPTED, "{}", capped.body);
    assert_eq!(capped.headers["preference-applied"], "wait=1");
    for (key, prefer) in [
        ("w-2", "wait=-5"),
        ("w-3", "wait=soon"),
        ("w-4", "wait=99999999999999999999999"),
    ] {
        let answer = call(&app, &with_prefer(key, prefer)).await;
        assert_eq!(
            answer.status,
            StatusCode::ACCEPTED,
            "{prefer}: {}",
            answer.body
        );
        assert!(
            answer.headers.get("preference-applied").is_none(),
            "{prefer}: ignored, not applied"
        );
    }
    assert_eq!(topics.read_topic(&topics.layout.commands()).len(), 4);
}
