//! Router-level tests on the embedded mock cluster (no worker): every kind of
//! bad input answers problem+json and produces nothing; a good command is
//! announced by `ACCEPTED` then produced with the contract's headers; keys
//! are replayed, refused when reused, and scoped per tenant; an unreachable
//! broker answers 503 with Retry-After; uploads report bad lines by number.

mod support;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use support::{Topics, ACME, ACME_DELETE_ONLY, GLOBEX};
use tower::ServiceExt;
use writ_codec::{PayloadCodec, SchemaCatalog};
use writ_core::{cloudevents, SubmissionState};
use writ_ingress::IngressConfig;

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn call(
    app: &Router,
    method: Method,
    path: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> Answer {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let response = app
        .clone()
        .oneshot(req.body(body.into()).unwrap())
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

fn customer(id: &str, name: &str) -> String {
    json!({"customer_id": id, "name": name, "email": format!("{id}@example.com")}).to_string()
}

async fn mock_topics(prefix: &str) -> Topics {
    Topics::create(writ_testkit::mock_kafka(1), prefix, 2).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_answers_a_problem_and_produces_nothing() {
    let topics = mock_topics("bad").await;
    let ingress = topics.ingress("").await;
    let app = ingress.router();
    let post = "/v1/commands/customer.upsert.v1";
    let key = &[
        ("idempotency-key", "k-1"),
        ("content-type", "application/json"),
    ][..];
    let good = customer("c-1", "Ada");
    let cases: Vec<(&str, Answer, StatusCode, &str)> = vec![
        (
            "no API key",
            call(&app, Method::POST, post, None, key, good.clone()).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "unknown API key",
            call(&app, Method::POST, post, Some("nope"), key, good.clone()).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "type not allowed",
            call(
                &app,
                Method::POST,
                post,
                Some(ACME_DELETE_ONLY),
                key,
                good.clone(),
            )
            .await,
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            "unknown type",
            call(
                &app,
                Method::POST,
                "/v1/commands/invoice.void.v1",
                Some(ACME),
                key,
                good.clone(),
            )
            .await,
            StatusCode::NOT_FOUND,
            "unknown-type",
        ),
        (
            "missing key",
            call(&app, Method::POST, post, Some(ACME), &[], good.clone()).await,
            StatusCode::BAD_REQUEST,
            "idempotency-key-missing",
        ),
        (
            "invalid JSON",
            call(
                &app,
                Method::POST,
                post,
                Some(ACME),
                key,
                "{\"customer_id\": ",
            )
            .await,
            StatusCode::BAD_REQUEST,
            "invalid-json",
        ),
        (
            "schema violation",
            call(
                &app,
                Method::POST,
                post,
                Some(ACME),
                key,
                json!({"customer_id": "c-1", "name": 42}).to_string(),
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
        ),
        (
            "body over the limit",
            call(
                &app,
                Method::POST,
                post,
                Some(ACME),
                key,
                customer("c-1", &"x".repeat(5000)),
            )
            .await,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
        ),
        (
            "staleness out of bounds",
            call(
                &app,
                Method::POST,
                post,
                Some(ACME),
                &[("idempotency-key", "k-1"), ("staleness-window", "999999")],
                good.clone(),
            )
            .await,
            StatusCode::BAD_REQUEST,
            "staleness-window",
        ),
        (
            "not JSON media type",
            call(
                &app,
                Method::POST,
                post,
                Some(ACME),
                &[("idempotency-key", "k-1"), ("content-type", "text/csv")],
                good.clone(),
            )
            .await,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
        ),
    ];
    for (name, answer, status, slug) in cases {
        assert_eq!(answer.status, status, "{name}: {}", answer.body);
        assert_eq!(
            answer.headers["content-type"], "application/problem+json",
            "{name}"
        );
        assert_eq!(
            answer.body["type"],
            format!("urn:writ:problem:{slug}"),
            "{name}"
        );
        assert_eq!(answer.body["status"], status.as_u16(), "{name}");
    }
    // The schema violation names every offending field by its path.
    let answer = call(
        &app,
        Method::POST,
        post,
        Some(ACME),
        key,
        json!({"customer_id": "c-1", "name": 42}).to_string(),
    )
    .await;
    let paths: Vec<&str> = answer.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"/name") && paths.contains(&"/email"),
        "{paths:?}"
    );

    assert!(
        topics.read_topic(&topics.layout.commands()).is_empty(),
        "no command produced"
    );
    assert!(
        topics.read_topic(&topics.layout.status()).is_empty(),
        "no status produced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_is_announced_then_produced_and_its_key_is_idempotent() {
    let topics = mock_topics("good").await;
    let ingress = topics.ingress("").await;
    let app = ingress.router();
    let post = "/v1/commands/customer.upsert.v1";
    let headers = &[("idempotency-key", "order-7"), ("staleness-window", "30")][..];
    let first = call(
        &app,
        Method::POST,
        post,
        Some(ACME),
        headers,
        customer("c-7", "Ada"),
    )
    .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    let id = first.body["submissionId"].as_str().unwrap().to_owned();
    assert_eq!(
        id,
        writ_core::submission_id("/tenants/acme", "order-7").to_string()
    );
    assert_eq!(first.headers["location"], format!("/v1/submissions/{id}"));
    assert_eq!(first.body["state"], "ACCEPTED");
    assert!(first.headers.get("idempotent-replayed").is_none());

    // The command carries the contract's headers and a payload the worker's codec decodes.
    let commands = topics.read_topic(&topics.layout.commands());
    assert_eq!(commands.len(), 1);
    let envelope = cloudevents::from_headers(&commands[0].headers).unwrap();
    assert_eq!(envelope.source, "/tenants/acme");
    assert_eq!(envelope.id, "order-7");
    assert_eq!(envelope.subject.as_deref(), Some("c-7"));
    assert_eq!(commands[0].key.as_deref(), Some(&b"c-7"[..]));
    let accepted_at = envelope.time.unwrap();
    assert_eq!(
        envelope.stale_after,
        Some(accepted_at + std::time::Duration::from_secs(30))
    );
    let codec = PayloadCodec::new(SchemaCatalog::builtin(), None).unwrap();
    let payload = codec
        .decode(
            "customer.upsert.v1",
            envelope.content_type.as_str(),
            commands[0].value.as_deref().unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(payload["name"], "Ada");
    assert_eq!(payload["tier"], "STANDARD", "defaults are filled");

    // ACCEPTED, with the fingerprint the worker computes from the decoded payload.
    let statuses = topics.statuses().await;
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].state, SubmissionState::Accepted);
    assert_eq!(
        statuses[0].payload_fingerprint,
        writ_core::payload_fingerprint(&payload)
    );

    // Same key, same payload, still pending: answered as replayed and produced again.
    let again = call(
        &app,
        Method::POST,
        post,
        Some(ACME),
        headers,
        customer("c-7", "Ada"),
    )
    .await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body["submissionId"], id.as_str());
    let commands = topics.read_topic(&topics.layout.commands());
    assert_eq!(commands.len(), 2, "a pending command is re-published");
    assert_eq!(
        commands[1].headers.get_str("ce_time"),
        commands[0].headers.get_str("ce_time")
    );

    // Same key, another payload: refused, nothing produced.
    let reused = call(
        &app,
        Method::POST,
        post,
        Some(ACME),
        headers,
        customer("c-7", "Grace"),
    )
    .await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        reused.body["type"],
        "urn:writ:problem:idempotency-key-reused"
    );
    assert_eq!(topics.read_topic(&topics.layout.commands()).len(), 2);

    // The same key of another tenant is another submission; each tenant sees only its own.
    let globex = call(
        &app,
        Method::POST,
        post,
        Some(GLOBEX),
        headers,
        customer("c-7", "Grace"),
    )
    .await;
    assert_eq!(globex.status, StatusCode::ACCEPTED);
    assert_ne!(globex.body["submissionId"], id.as_str());
    let path = format!("/v1/submissions/{id}");
    let mine = call(&app, Method::GET, &path, Some(ACME), &[], Body::empty()).await;
    assert_eq!(mine.status, StatusCode::OK);
    assert_eq!(mine.body["state"], "ACCEPTED");
    assert_eq!(mine.body["idempotencyKey"], "order-7");
    assert_eq!(mine.body["stale"], false);
    let theirs = call(&app, Method::GET, &path, Some(GLOBEX), &[], Body::empty()).await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    let garbage = call(
        &app,
        Method::GET,
        "/v1/submissions/not-a-uuid",
        Some(ACME),
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(garbage.status, StatusCode::NOT_FOUND);

    // A CP-1 wait with no worker running times out into the CP-2 answer, and says it waited.
    let waited = call(
        &app,
        Method::POST,
        post,
        Some(ACME),
        &[("idempotency-key", "order-8"), ("prefer", "wait=1")],
        customer("c-8", "Ada"),
    )
    .await;
    assert_eq!(waited.status, StatusCode::ACCEPTED);
    assert_eq!(waited.headers["preference-applied"], "wait=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_answers_503_with_retry_after_and_writes_nothing() {
    let topics = mock_topics("down").await;
    let ingress = topics.ingress("").await;
    let app = ingress.router();
    topics.kafka.broker_down(1).unwrap();
    let answer = call(
        &app,
        Method::POST,
        "/v1/commands/customer.upsert.v1",
        Some(ACME),
        &[("idempotency-key", "k-down")],
        customer("c-1", "Ada"),
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    assert_eq!(answer.headers["retry-after"], "3");
    assert_eq!(answer.body["type"], "urn:writ:problem:unavailable");
    let ready = call(&app, Method::GET, "/readyz", None, &[], Body::empty()).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    topics.kafka.broker_up(1).unwrap();
    assert!(
        topics.read_topic(&topics.layout.commands()).is_empty(),
        "no command produced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_reports_bad_lines_by_number_and_produces_the_rest() {
    let topics = mock_topics("job").await;
    let ingress = topics.ingress("").await;
    let app = ingress.router();
    let mut body = String::new();
    for i in 1..=1200 {
        match i {
            3 => body.push_str("{not json\n"),
            700 => body.push_str("{\"customer_id\": \"c-700\", \"name\": 7}\n"),
            _ => body.push_str(&format!("{}\n", customer(&format!("c-{i}"), "Ada"))),
        }
    }
    let answer = call(
        &app,
        Method::POST,
        "/v1/jobs?type=customer.upsert.v1",
        Some(ACME),
        &[("idempotency-key", "upload-1")],
        body.clone(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    assert_eq!(answer.body["lines"], 1200);
    assert_eq!(answer.body["produced"], 1198);
    assert_eq!(answer.body["invalid"], 2);
    let job = answer.body["jobId"].as_str().unwrap().to_owned();
    let bulk = topics.read_topic(&topics.layout.bulk());
    assert_eq!(bulk.len(), 1198);
    let line_of = |r: &writ_kafka::ConsumedRecord| cloudevents::from_headers(&r.headers).unwrap();
    let e = line_of(&bulk[0]);
    assert_eq!(e.job_id.as_deref(), Some(job.as_str()));
    assert_eq!(e.id, format!("{job}:{}", e.job_line.unwrap()));
    assert!(topics.read_topic(&topics.layout.commands()).is_empty());

    let errors = call(
        &app,
        Method::GET,
        &format!("/v1/jobs/{job}/errors"),
        Some(ACME),
        &[],
        Body::empty(),
    )
    .await;
    let lines: Vec<(u64, &str)> = errors.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["line"].as_u64().unwrap(), e["code"].as_str().unwrap()))
        .collect();
    assert_eq!(lines, vec![(3, "INVALID_JSON"), (700, "VALIDATION")]);
    let status = call(
        &app,
        Method::GET,
        &format!("/v1/jobs/{job}"),
        Some(ACME),
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(status.body["counts"]["accepted"], 1198);
    assert_eq!(status.body["done"], false);
    let other = call(
        &app,
        Method::GET,
        &format!("/v1/jobs/{job}"),
        Some(GLOBEX),
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);

    // Re-sending a finished upload with its key answers the same job and produces nothing.
    let again = call(
        &app,
        Method::POST,
        "/v1/jobs?type=customer.upsert.v1",
        Some(ACME),
        &[("idempotency-key", "upload-1")],
        body,
    )
    .await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body["jobId"], job.as_str());
    assert_eq!(topics.read_topic(&topics.layout.bulk()).len(), 1198);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operational_endpoints_answer() {
    let topics = mock_topics("ops").await;
    let ingress = topics.ingress("").await;
    let app = ingress.router();
    assert_eq!(
        call(&app, Method::GET, "/healthz", None, &[], Body::empty())
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, Method::GET, "/readyz", None, &[], Body::empty())
            .await
            .status,
        StatusCode::OK
    );
    let doc = call(&app, Method::GET, "/openapi.json", None, &[], Body::empty()).await;
    assert!(doc.body["paths"]["/healthz"]["get"]["responses"]
        .get("503")
        .is_some());
    assert!(doc.body["paths"].get("/v1/commands/{type}").is_some());
    let types = call(
        &app,
        Method::GET,
        "/v1/types",
        Some(ACME_DELETE_ONLY),
        &[],
        Body::empty(),
    )
    .await;
    let names: Vec<&str> = types
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["customer.delete.v1"],
        "only the types the key may use"
    );
    assert_eq!(types.body[0]["schema"]["name"], "CustomerDelete");
    call(
        &app,
        Method::POST,
        "/v1/commands/customer.upsert.v1",
        Some(ACME),
        &[],
        "{}",
    )
    .await;
    let metrics = call(&app, Method::GET, "/metrics", None, &[], Body::empty()).await;
    assert!(
        metrics
            .body
            .as_str()
            .unwrap()
            .contains("writ_ingress_requests_total"),
        "{}",
        metrics.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_survive_a_restart_with_a_file_store_and_pending_past_the_window_is_stale() {
    let topics = mock_topics("restart").await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!(
        "[store]\npath = \"{}\"",
        dir.path().join("view.db").display()
    );
    let post = "/v1/commands/customer.upsert.v1";
    let headers = &[("idempotency-key", "k-restart"), ("staleness-window", "1")][..];
    let id = {
        let ingress = topics.ingress(&store).await;
        let first = call(
            &ingress.router(),
            Method::POST,
            post,
            Some(ACME),
            headers,
            customer("c-1", "Ada"),
        )
        .await;
        assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
        first.body["submissionId"].as_str().unwrap().to_owned()
    };
    // The restarted instance resumes from its stored offsets and still knows the key.
    let ingress = topics.ingress(&store).await;
    let app = ingress.router();
    let reused = call(
        &app,
        Method::POST,
        post,
        Some(ACME),
        headers,
        customer("c-1", "Grace"),
    )
    .await;
    assert_eq!(
        reused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reused.body
    );
    let again = call(
        &app,
        Method::POST,
        post,
        Some(ACME),
        headers,
        customer("c-1", "Ada"),
    )
    .await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body["submissionId"], id.as_str());
    // No worker runs: one second later the submission is past its window.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let view = call(
        &app,
        Method::GET,
        &format!("/v1/submissions/{id}"),
        Some(ACME),
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(view.body["state"], "ACCEPTED");
    assert_eq!(view.body["stale"], true, "{}", view.body);
    assert_eq!(
        topics.statuses().await.len(),
        1,
        "one ACCEPTED, however often the key came"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedders_submit_directly_and_subscribe_to_status_events() {
    let topics = mock_topics("embed").await;
    let ingress = topics.ingress("").await;
    let mut events = ingress.status_view().subscribe();
    let principal = writ_http::Principal::tenant("acme");
    let extras = writ_ingress::SubmitExtras {
        draft_id: Some("draft-1".into()),
        temp_id: Some("tmp-1".into()),
        ..Default::default()
    };
    let payload: Value = serde_json::from_str(&customer("c-1", "Ada")).unwrap();
    let answer = ingress
        .submitter()
        .submit(
            &principal,
            "customer.upsert.v1",
            &payload,
            Some("draft-submit-1"),
            extras,
        )
        .await
        .unwrap();
    assert_eq!(answer.event.state, SubmissionState::Accepted);
    assert!(!answer.replayed);
    let seen = events.recv().await.unwrap();
    assert_eq!(seen.submission_id, answer.event.submission_id);
    assert_eq!(seen.draft_id.as_deref(), Some("draft-1"));
    let commands = topics.read_topic(&topics.layout.commands());
    let envelope = cloudevents::from_headers(&commands[0].headers).unwrap();
    assert_eq!(
        (envelope.draft_id.as_deref(), envelope.temp_id.as_deref()),
        (Some("draft-1"), Some("tmp-1"))
    );
    // Unknown types and keys of the wrong shape are refused before anything is produced.
    let err = ingress
        .submitter()
        .submit(
            &principal,
            "nope.v1",
            &payload,
            Some("k"),
            Default::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status, 404);
    let err = ingress
        .submitter()
        .submit(
            &principal,
            "customer.upsert.v1",
            &payload,
            None,
            Default::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status, 400);
    assert_eq!(topics.read_topic(&topics.layout.commands()).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingress_hosts_draft_submissions() {
    use writ_drafts::Submitter as _;
    let topics = mock_topics("drafts").await;
    let ingress = topics.ingress("").await;
    let host = writ_ingress::DraftHost(ingress.submitter().clone());
    let acme = writ_http::Principal::tenant("acme");
    let submission = writ_drafts::DraftSubmission {
        command_type: "customer.upsert.v1".into(),
        payload: serde_json::from_str(&customer("c-1", "Ada")).unwrap(),
        idempotency_key: "draft:d-1:1:v3".into(),
        draft_id: "d-1".into(),
        wait: None,
    };
    let first = host.submit(&acme, submission.clone()).await.unwrap();
    assert_eq!(
        first.submission_id,
        writ_core::submission_id("/tenants/acme", "draft:d-1:1:v3")
    );
    assert_eq!(first.state, SubmissionState::Accepted);
    assert!(!first.replayed);
    assert!(host.submit(&acme, submission).await.unwrap().replayed);
    let status = host
        .status(&acme, first.submission_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.state, SubmissionState::Accepted);
    let globex = writ_http::Principal::tenant("globex");
    assert_eq!(
        host.status(&globex, first.submission_id).await.unwrap(),
        None
    );
    let envelope =
        cloudevents::from_headers(&topics.read_topic(&topics.layout.commands())[0].headers)
            .unwrap();
    assert_eq!(envelope.draft_id.as_deref(), Some("d-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_producer_error_fails_liveness_so_the_process_is_restarted() {
    let topics = mock_topics("fatal").await;
    let ingress = topics.ingress("").await;
    let app = ingress.router();
    let health = call(&app, Method::GET, "/healthz", None, &[], Body::empty()).await;
    assert_eq!(health.status, StatusCode::OK);

    // librdkafka's own test hook raises the fatal error an idempotent producer
    // gets from, e.g., an out-of-order sequence number.
    use rdkafka::producer::Producer;
    let reason = std::ffi::CString::new("injected by the test").unwrap();
    let rc = unsafe {
        rdkafka::bindings::rd_kafka_test_fatal_error(
            ingress.producer().inner().client().native_ptr(),
            rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
            reason.as_ptr(),
        )
    };
    assert_eq!(
        rc,
        rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
    );
    let health = call(&app, Method::GET, "/healthz", None, &[], Body::empty()).await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        health.body["detail"]
            .as_str()
            .unwrap()
            .contains("restart the process"),
        "{:?}",
        health.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_interrupted_upload_counts_every_line_once() {
    let topics = mock_topics("resume").await;
    // One line per chunk: what was read before the break is in Kafka.
    let config = IngressConfig::from_toml(
        &topics
            .ingress_toml("")
            .replace("upload_chunk_lines = 500", "upload_chunk_lines = 1"),
    )
    .unwrap();
    let ingress = writ_ingress::Ingress::start(config).await.unwrap();
    assert!(ingress.caught_up(std::time::Duration::from_secs(30)).await);
    let app = ingress.router();
    let lines: Vec<String> = (1..=3)
        .map(|i| format!("{}\n", customer(&format!("c-{i}"), "Ada")))
        .collect();
    // The client's connection breaks after two lines.
    let first_two = lines[..2].to_vec();
    let broken = futures::stream::iter(
        first_two
            .into_iter()
            .map(|l| Ok::<_, std::io::Error>(bytes::Bytes::from(l)))
            .chain(std::iter::once(Err(std::io::Error::other(
                "connection reset",
            )))),
    );
    let cut = call(
        &app,
        Method::POST,
        "/v1/jobs?type=customer.upsert.v1",
        Some(ACME),
        &[("idempotency-key", "upload-resume")],
        Body::from_stream(broken),
    )
    .await;
    assert!(cut.status.is_client_error(), "{}", cut.body);
    let bulk = topics.read_topic(&topics.layout.bulk());
    assert_eq!(bulk.len(), 2, "the two lines read were produced");
    // The worker applies them meanwhile.
    let view = ingress.status_view();
    for r in &bulk {
        let id = cloudevents::from_headers(&r.headers)
            .unwrap()
            .submission_id();
        let mut applied = view.get(id).await.unwrap().expect("announced");
        applied.state = SubmissionState::Applied;
        applied.applied_at = Some(time::OffsetDateTime::now_utc());
        view.apply(&[applied], &[]).await.unwrap();
    }

    let again = call(
        &app,
        Method::POST,
        "/v1/jobs?type=customer.upsert.v1",
        Some(ACME),
        &[("idempotency-key", "upload-resume")],
        lines.concat(),
    )
    .await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.body);
    assert_eq!(again.body["lines"], 3);
    assert_eq!(
        (
            again.body["produced"].as_u64(),
            again.body["invalid"].as_u64(),
            again.body["replayed"].as_u64()
        ),
        (Some(3), Some(0), Some(0)),
        "lines = produced + invalid + replayed: {}",
        again.body
    );
    assert_eq!(
        topics.read_topic(&topics.layout.bulk()).len(),
        3,
        "only the missing line was produced again"
    );
}
