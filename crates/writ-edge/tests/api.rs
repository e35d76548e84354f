//! The HTTP API against a real local store (in-memory SQLite), with no broker
//! and no master: writes are accepted and read back with their sync state,
//! bad input is a problem+json that stores nothing, and records are private
//! to their tenant (and owner).

mod support;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::sync::Arc;

use tokio::sync::Notify;
use tower::ServiceExt;
use writ_edge::LocalStore;

use support::{customer_json, ACME_KEY, ALICE_KEY, BOB_KEY, GLOBEX_KEY};

struct Api {
    app: axum::Router,
    store: LocalStore,
    wake: Arc<Notify>,
}

async fn api(collections: &str) -> Api {
    let (app, store, wake) = support::router_for(collections).await;
    Api { app, store, wake }
}

const CUSTOMERS: &str = r#"
[collections.customers]
command_type = "customer.upsert.v1"
key_field = "customer_id"
"#;

impl Api {
    async fn send(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Body>,
        content_type: Option<&str>,
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(k) = key {
            req = req.header(header::AUTHORIZATION, format!("Bearer {k}"));
        }
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let resp = self
            .app
            .clone()
            .oneshot(req.body(body.unwrap_or_else(Body::empty)).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, headers, json)
    }

    async fn json(&self, method: &str, path: &str, key: &str, body: &Value) -> (StatusCode, Value) {
        let (s, _, b) = self
            .send(
                method,
                path,
                Some(key),
                Some(Body::from(body.to_string())),
                Some("application/json"),
            )
            .await;
        (s, b)
    }

    async fn get(&self, path: &str, key: &str) -> (StatusCode, Value) {
        let (s, _, b) = self.send("GET", path, Some(key), None, None).await;
        (s, b)
    }

    async fn counts(&self) -> (i64, i64) {
        let records: i64 = sqlx::query_scalar("SELECT count(*) FROM edge_records")
            .fetch_one(self.store.pool())
            .await
            .unwrap();
        let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM edge_outbox")
            .fetch_one(self.store.pool())
            .await
            .unwrap();
        (records, outbox)
    }
}

#[tokio::test]
async fn a_write_answers_201_pending_at_once_and_is_read_from_the_local_store() {
    let api = api(CUSTOMERS).await;
    let (status, headers, body) = api
        .send(
            "POST",
            "/v1/records/customers",
            Some(ACME_KEY),
            Some(Body::from(customer_json("c-1", "Ada").to_string())),
            Some("application/json"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        headers[header::LOCATION],
        format!("/v1/records/customers/{id}")
    );
    assert_eq!(body["syncState"], "PENDING");
    assert_eq!(body["key"], "c-1");
    assert_eq!(body["canonicalId"], Value::Null);
    assert_eq!(body["masterVersion"], Value::Null);
    assert_eq!(body["lastError"], Value::Null);
    // The local copy is the canonical record: defaults are filled in.
    assert_eq!(body["data"]["tier"], "STANDARD");
    assert_eq!(api.counts().await, (1, 1), "record and outbox row together");
    assert_eq!(
        api.store.outbox_states().await.unwrap(),
        vec![("PENDING".to_owned(), 1)]
    );
    // The relay is woken instead of waiting for its poll.
    tokio::time::timeout(std::time::Duration::from_secs(1), api.wake.notified())
        .await
        .expect("a write wakes the relay");

    let (status, read) = api
        .get(&format!("/v1/records/customers/{id}"), ACME_KEY)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read, body);
    let (_, list) = api
        .get("/v1/records/customers?syncState=pending", ACME_KEY)
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    let (_, none) = api
        .get("/v1/records/customers?syncState=SYNCED", ACME_KEY)
        .await;
    assert!(none["items"].as_array().unwrap().is_empty(), "{none}");
}

#[tokio::test]
async fn updates_queue_a_new_write_and_keep_the_entity_key() {
    let api = api(CUSTOMERS).await;
    let (_, created) = api
        .json(
            "POST",
            "/v1/records/customers",
            ACME_KEY,
            &customer_json("c-1", "Ada"),
        )
        .await;
    let id = created["id"].as_str().unwrap();
    let path = format!("/v1/records/customers/{id}");
    let (status, updated) = api
        .json("PUT", &path, ACME_KEY, &customer_json("c-1", "Ada L."))
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["data"]["name"], "Ada L.");
    assert_eq!(updated["localVersion"], 2);
    assert_eq!(api.counts().await, (1, 2));

    let (status, problem) = api
        .json("PUT", &path, ACME_KEY, &customer_json("c-2", "Other"))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["errors"][0]["path"], "/customer_id");
    let (status, _) = api
        .json(
            "PUT",
            "/v1/records/customers/no-such-id",
            ACME_KEY,
            &customer_json("c-1", "x"),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, problem) = api
        .json(
            "POST",
            "/v1/records/customers",
            ACME_KEY,
            &customer_json("c-1", "Dup"),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["existingId"], id);
    assert_eq!(api.counts().await, (1, 2), "refused writes store nothing");
}

#[tokio::test]
async fn bad_input_is_a_problem_and_stores_nothing() {
    let api = api(CUSTOMERS).await;
    let cases: Vec<(Option<&str>, Body, StatusCode, &str)> = vec![
        (
            Some("application/json"),
            Body::from("{not json"),
            StatusCode::BAD_REQUEST,
            "urn:writ:problem:malformed-json",
        ),
        (
            Some("application/json"),
            Body::from(json!({"customer_id": "c-1", "name": 7}).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "urn:writ:problem:validation",
        ),
        (
            Some("text/plain"),
            Body::from(customer_json("c-1", "Ada").to_string()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "urn:writ:problem:unsupported-media-type",
        ),
        (
            Some("application/json"),
            Body::from(json!({"customer_id": "", "name": "n", "email": "e"}).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "urn:writ:problem:validation",
        ),
        (
            Some("application/json"),
            Body::from(vec![b' '; 100 * 1024]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "",
        ),
    ];
    for (ct, body, expected, problem_type) in cases {
        let (status, headers, problem) = api
            .send(
                "POST",
                "/v1/records/customers",
                Some(ACME_KEY),
                Some(body),
                ct,
            )
            .await;
        assert_eq!(status, expected, "{problem}");
        if !problem_type.is_empty() {
            assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
            assert_eq!(problem["type"], problem_type, "{problem}");
        }
    }
    // The validation problem names every bad field by its path.
    let (_, problem) = api
        .json(
            "POST",
            "/v1/records/customers",
            ACME_KEY,
            &json!({"customer_id": "c-1", "name": 7}),
        )
        .await;
    let paths: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"/name") && paths.contains(&"/email"),
        "{problem}"
    );

    let (status, _) = api
        .json(
            "POST",
            "/v1/records/orders",
            ACME_KEY,
            &customer_json("c-1", "Ada"),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "unknown collection");
    let (status, _, _) = api
        .send(
            "POST",
            "/v1/records/customers",
            None,
            Some(Body::from(customer_json("c-1", "Ada").to_string())),
            Some("application/json"),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = api
        .get("/v1/records/customers?syncState=DONE", ACME_KEY)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = api.get("/v1/records/customers?limit=0", ACME_KEY).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(api.counts().await, (0, 0));
}

#[tokio::test]
async fn records_are_private_to_their_tenant_and_owner() {
    let api = api(CUSTOMERS).await;
    let (_, mine) = api
        .json(
            "POST",
            "/v1/records/customers",
            ALICE_KEY,
            &customer_json("c-1", "Ada"),
        )
        .await;
    let id = mine["id"].as_str().unwrap();
    let path = format!("/v1/records/customers/{id}");

    for key in [GLOBEX_KEY, BOB_KEY] {
        let (status, problem) = api.get(&path, key).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{key}: {problem}");
        let (status, _) = api
            .json("PUT", &path, key, &customer_json("c-1", "Mallory"))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{key}");
        let (_, list) = api.get("/v1/records/customers", key).await;
        assert!(
            list["items"].as_array().unwrap().is_empty(),
            "{key}: {list}"
        );
    }
    // The owner and a tenant-wide key of the same tenant see it.
    for key in [ALICE_KEY, ACME_KEY] {
        let (status, _) = api.get(&path, key).await;
        assert_eq!(status, StatusCode::OK, "{key}");
    }
    // Another tenant may hold the same entity key without seeing acme's.
    let (status, body) = api
        .json(
            "POST",
            "/v1/records/customers",
            GLOBEX_KEY,
            &customer_json("c-1", "G"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, conflicts) = api.get("/v1/conflicts", GLOBEX_KEY).await;
    assert!(conflicts["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn a_projection_keeps_only_its_fields_locally_and_the_full_write_in_the_outbox() {
    let api = api(r#"
[collections.customers]
command_type = "customer.upsert.v1"
key_field = "customer_id"
projection = ["customer_id", "name"]
"#)
    .await;
    let (status, body) = api
        .json(
            "POST",
            "/v1/records/customers",
            ACME_KEY,
            &customer_json("c-1", "Ada"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["data"], json!({"customer_id": "c-1", "name": "Ada"}));
    let payload: String = sqlx::query_scalar("SELECT payload FROM edge_outbox")
        .fetch_one(api.store.pool())
        .await
        .unwrap();
    let payload: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(payload["email"], "c-1@example.com");
    assert_eq!(payload["phone"], "+33 1 00 00 00 00");
}

#[tokio::test]
async fn list_pages_in_creation_order() {
    let api = api(CUSTOMERS).await;
    for i in 0..5 {
        let (s, _) = api
            .json(
                "POST",
                "/v1/records/customers",
                ACME_KEY,
                &customer_json(&format!("c-{i}"), "n"),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let (_, first) = api.get("/v1/records/customers?limit=3", ACME_KEY).await;
    let keys: Vec<&str> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["c-0", "c-1", "c-2"]);
    let next = first["next"].as_str().unwrap();
    let (_, second) = api
        .get(
            &format!("/v1/records/customers?limit=3&after={next}"),
            ACME_KEY,
        )
        .await;
    let keys: Vec<&str> = second["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["c-3", "c-4"]);
    assert_eq!(second["next"], Value::Null);
}

#[tokio::test]
async fn operator_endpoints_and_conflict_errors() {
    let api = api(CUSTOMERS).await;
    let (status, _, body) = api.send("GET", "/healthz", None, None, None).await;
    assert_eq!((status, body), (StatusCode::OK, Value::String("ok".into())));
    let (status, _, _) = api.send("GET", "/readyz", None, None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api
        .json(
            "POST",
            "/v1/conflicts/nope/resolve",
            ACME_KEY,
            &json!({"take": "local"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, problem) = api
        .json(
            "POST",
            "/v1/conflicts/nope/resolve",
            ACME_KEY,
            &json!({"take": "both"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    let (status, _) = api.get("/v1/conflicts?state=closed", ACME_KEY).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
