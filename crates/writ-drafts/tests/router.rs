//! The drafts HTTP API end to end through the router (`oneshot`), with real
//! API-key auth in front, SQLite in memory behind, and a fake host that
//! records every submit and dedupes by submission id like the ingress.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;
use writ_core::SubmissionState;
use writ_drafts::Settled;
use writ_http::Problem;

use common::{customer, partial_customer, App, Outcome};

#[tokio::test]
async fn create_read_replace_delete_with_etags() {
    let app = App::sqlite().await;
    let created = app
        .put("cart-1", "alice-key", &[], &partial_customer())
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.header("location"), Some("/v1/drafts/cart-1"));
    let v1 = created.etag();
    assert_eq!(created.body["version"], 1);
    assert_eq!(created.body["data"], json!({"name": "Ada"}));
    assert_eq!(created.body["submission"], json!(null));
    assert_eq!(created.body["expiresAt"], "2026-12-01T09:00:00Z");

    let read = app.get("cart-1", "alice-key").await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.etag(), v1);
    assert_eq!(read.body, created.body);

    // Replacing needs If-Match: 428 without, 412 with a wrong tag; nothing changes.
    let body = customer("cust-1");
    let missing = app.put("cart-1", "alice-key", &[], &body).await;
    assert_eq!(missing.status, StatusCode::PRECONDITION_REQUIRED);
    assert_eq!(
        missing.body["type"],
        "urn:writ:problem:precondition-required"
    );
    let wrong = app
        .put("cart-1", "alice-key", &[("if-match", "\"nope-1\"")], &body)
        .await;
    assert_eq!(wrong.status, StatusCode::PRECONDITION_FAILED);
    let weak = app
        .put(
            "cart-1",
            "alice-key",
            &[("if-match", &format!("W/{v1}"))],
            &body,
        )
        .await;
    assert_eq!(
        weak.status,
        StatusCode::PRECONDITION_FAILED,
        "If-Match compares strongly"
    );
    assert_eq!(app.get("cart-1", "alice-key").await.body["version"], 1);

    let replaced = app
        .put("cart-1", "alice-key", &[("if-match", &v1)], &body)
        .await;
    assert_eq!(replaced.status, StatusCode::OK, "{:?}", replaced.body);
    let v2 = replaced.etag();
    assert_ne!(v1, v2);
    assert_eq!(replaced.body["version"], 2);
    assert_eq!(replaced.body["validation"]["complete"], true);
    // A second writer still holding v1 loses.
    let stale = app
        .put(
            "cart-1",
            "alice-key",
            &[("if-match", &v1)],
            &partial_customer(),
        )
        .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);

    let stale_delete = app
        .call(
            "DELETE",
            "/v1/drafts/cart-1",
            "alice-key",
            &[("if-match", &v1)],
            None,
        )
        .await;
    assert_eq!(stale_delete.status, StatusCode::PRECONDITION_FAILED);
    let deleted = app
        .call(
            "DELETE",
            "/v1/drafts/cart-1",
            "alice-key",
            &[("if-match", &v2)],
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get("cart-1", "alice-key").await.status,
        StatusCode::NOT_FOUND
    );
    let again = app
        .call("DELETE", "/v1/drafts/cart-1", "alice-key", &[], None)
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn conditional_header_matrix() {
    let app = App::sqlite().await;
    // If-Match on a draft that does not exist: 412, nothing created.
    let r = app
        .put("d", "alice-key", &[("if-match", "*")], &partial_customer())
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        app.get("d", "alice-key").await.status,
        StatusCode::NOT_FOUND
    );
    // If-None-Match: * creates only.
    let r = app
        .put(
            "d",
            "alice-key",
            &[("if-none-match", "*")],
            &partial_customer(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let tag = r.etag();
    let r = app
        .put(
            "d",
            "alice-key",
            &[("if-none-match", "*")],
            &partial_customer(),
        )
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    // If-Match: * overwrites whatever is there.
    let r = app
        .put("d", "alice-key", &[("if-match", "*")], &customer("c"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_ne!(r.etag(), tag);
    // A list containing the current tag matches.
    let list = format!("\"x-9\", {}", r.etag());
    let r = app
        .put(
            "d",
            "alice-key",
            &[("if-match", &list)],
            &partial_customer(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // GET with the current tag in If-None-Match: 304 and the tag.
    let current = r.etag();
    let r = app
        .call(
            "GET",
            "/v1/drafts/d",
            "alice-key",
            &[("if-none-match", &current)],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert_eq!(r.etag(), current);
    let r = app
        .call(
            "GET",
            "/v1/drafts/d",
            "alice-key",
            &[("if-none-match", &tag)],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // A malformed list is a 400, not a silent mismatch.
    let r = app
        .put("d", "alice-key", &[("if-match", "x-1")], &customer("c"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["type"], "urn:writ:problem:bad-header");
}

#[tokio::test]
async fn concurrent_writers_never_both_win() {
    let app = App::sqlite().await;
    // Two creates of one new id: one 201, the other must not overwrite it.
    let (first, second) = (customer("first"), customer("second"));
    let (a, b) = tokio::join!(
        app.put("d", "alice-key", &[], &first),
        app.put("d", "alice-key", &[], &second)
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::CREATED, StatusCode::PRECONDITION_REQUIRED]
    );
    let winner = if a.status == StatusCode::CREATED {
        &a
    } else {
        &b
    };
    let tag = winner.etag();
    // Two replaces from the same version: one 200, one 412.
    let (x, y) = (customer("x"), customer("y"));
    let if_match = [("if-match", tag.as_str())];
    let (a, b) = tokio::join!(
        app.put("d", "alice-key", &if_match, &x),
        app.put("d", "alice-key", &if_match, &y)
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::PRECONDITION_FAILED]);
    let stored = app.get("d", "alice-key").await;
    assert_eq!(stored.body["version"], 2);
    let winner = if a.status == StatusCode::OK { &a } else { &b };
    assert_eq!(stored.body["data"], winner.body["data"]);
}

#[tokio::test]
async fn a_recreated_draft_never_matches_its_predecessors_tag_or_key() {
    let app = App::sqlite().await;
    app.host.set_outcome(Outcome::Rejected("BAD_DOMAIN"));
    let first = app.put("d", "alice-key", &[], &customer("c-1")).await;
    let old_tag = first.etag();
    let r = app.submit("d", "alice-key", &[("prefer", "wait=5")]).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let deleted = app
        .call("DELETE", "/v1/drafts/d", "alice-key", &[], None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);

    let second = app.put("d", "alice-key", &[], &customer("c-1")).await;
    assert_eq!(second.status, StatusCode::CREATED);
    assert_eq!(second.body["version"], 1);
    assert_ne!(
        second.etag(),
        old_tag,
        "same id and version, new incarnation"
    );
    let r = app
        .put(
            "d",
            "alice-key",
            &[("if-match", &old_tag)],
            &customer("c-2"),
        )
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);

    app.host.set_outcome(Outcome::Applied);
    let r = app.submit("d", "alice-key", &[("prefer", "wait=5")]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let calls = app.host.calls();
    assert_eq!(calls.len(), 2);
    assert_ne!(calls[0].idempotency_key, calls[1].idempotency_key);
    assert_eq!(
        app.host.command_count(),
        2,
        "the new draft is a new command"
    );
}

#[tokio::test]
async fn partial_drafts_are_validated_as_far_as_they_go() {
    let app = App::sqlite().await;
    let r = app.put("d", "alice-key", &[], &partial_customer()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body["validation"]["complete"], false);
    let missing: Vec<_> = r.body["validation"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(missing, ["/data/customer_id", "/data/email"]);

    // Wrong types in present fields: 422 naming each, and nothing stored.
    let bad = json!({"type": "customer.upsert.v1", "data": {
        "name": 5, "address": {"city": 7}, "tier": "GOLDISH", "nickname": "x"}});
    let r = app.put("bad", "alice-key", &[], &bad).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.body["type"], "urn:writ:problem:validation");
    assert_eq!(
        r.paths(),
        [
            "/data/name",
            "/data/address/city",
            "/data/tier",
            "/data/nickname"
        ]
    );
    assert_eq!(
        app.get("bad", "alice-key").await.status,
        StatusCode::NOT_FOUND
    );

    // An invalid replace leaves the stored draft as it was.
    let tag = app.get("d", "alice-key").await.etag();
    let r = app.put("d", "alice-key", &[("if-match", &tag)], &bad).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let kept = app.get("d", "alice-key").await;
    assert_eq!(kept.etag(), tag);
    assert_eq!(kept.body["data"], json!({"name": "Ada"}));

    // The envelope itself.
    let cases = [
        (
            json!({"type": "customer.nope.v1", "data": {}}),
            vec!["/type"],
        ),
        (json!({"type": 3, "data": {}}), vec!["/type"]),
        (json!({"data": {}}), vec!["/type"]),
        (json!({"type": "customer.upsert.v1"}), vec!["/data"]),
        (
            json!({"type": "customer.upsert.v1", "data": [1]}),
            vec!["/data"],
        ),
        (
            json!({"type": "customer.upsert.v1", "data": {}, "x/y": 1}),
            vec!["/x~1y"],
        ),
        (json!([1, 2]), vec!["/"]),
    ];
    for (body, paths) in cases {
        let r = app.put("e", "alice-key", &[], &body).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(r.paths(), paths, "{body}");
    }
    assert_eq!(
        app.get("e", "alice-key").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn malformed_requests_get_clear_problems() {
    let app = App::sqlite().await;
    let send = |content_type: &'static str, body: Vec<u8>| {
        let router = app.router.clone();
        async move {
            let req = axum::http::Request::put("/v1/drafts/d")
                .header("authorization", "Bearer alice-key")
                .header("content-type", content_type)
                .body(axum::body::Body::from(body))
                .unwrap();
            common::Reply::read(tower::ServiceExt::oneshot(router, req).await.unwrap()).await
        }
    };
    let r = send("application/json", b"{\"type\": ".to_vec()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["type"], "urn:writ:problem:invalid-json");
    let r = send("application/json", vec![0xff, 0xfe]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = send("text/plain", customer("c").to_string().into_bytes()).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let big = json!({"type": "customer.upsert.v1", "data": {"name": "x".repeat(5000)}});
    let r = send("application/json", big.to_string().into_bytes()).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.body["limitBytes"], 4096);
    assert_eq!(
        app.get("d", "alice-key").await.status,
        StatusCode::NOT_FOUND
    );

    for id in ["a%20b", "..", "a:b", &"x".repeat(129)] {
        let r = app.put(id, "alice-key", &[], &customer("c")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{id}");
        assert_eq!(r.body["type"], "urn:writ:problem:bad-draft-id", "{id}");
    }
    app.put("d", "alice-key", &[], &customer("c")).await;
    let r = app
        .submit("d", "alice-key", &[("prefer", "wait=soon")])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(app.host.calls().is_empty());
    // No key: the host's auth answers before the drafts router.
    let r = app.call("GET", "/v1/drafts/d", "unknown", &[], None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_router_mounted_without_auth_fails_closed() {
    let app = App::sqlite().await;
    let bare = writ_drafts::router(app.service.clone());
    let req = axum::http::Request::get("/v1/drafts/d")
        .body(axum::body::Body::empty())
        .unwrap();
    let r = common::Reply::read(tower::ServiceExt::oneshot(bare, req).await.unwrap()).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn command_types_the_key_may_not_use_are_forbidden() {
    let app = App::sqlite().await;
    let r = app.put("d", "orders-only", &[], &customer("c")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let order = json!({"type": "order.place.v1", "data": {"order_id": "o-1"}});
    assert_eq!(
        app.put("o", "orders-only", &[], &order).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn drafts_are_private_to_their_tenant_and_owner() {
    let app = App::sqlite().await;
    let mine = app
        .put("cart", "alice-key", &[], &customer("alice-1"))
        .await;
    assert_eq!(mine.status, StatusCode::CREATED);
    for other in ["bob-key", "acme-key", "globex-key"] {
        assert_eq!(
            app.get("cart", other).await.status,
            StatusCode::NOT_FOUND,
            "{other}"
        );
        let r = app
            .call("DELETE", "/v1/drafts/cart", other, &[], None)
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{other}");
        let r = app.submit("cart", other, &[]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{other}");
        let r = app
            .put(
                "cart",
                other,
                &[("if-match", &mine.etag())],
                &partial_customer(),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::PRECONDITION_FAILED,
            "{other}: not alice's draft"
        );
    }
    // The same id under another owner is a separate draft.
    let bobs = app.put("cart", "bob-key", &[], &partial_customer()).await;
    assert_eq!(bobs.status, StatusCode::CREATED);
    let alice = app.get("cart", "alice-key").await;
    assert_eq!(alice.etag(), mine.etag());
    assert_eq!(alice.body["data"]["customer_id"], "alice-1");
    assert!(app.host.calls().is_empty());
}

#[tokio::test]
async fn submitting_an_incomplete_draft_names_the_missing_fields() {
    let app = App::sqlite().await;
    let put = app.put("d", "alice-key", &[], &partial_customer()).await;
    let r = app.submit("d", "alice-key", &[]).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["type"], "urn:writ:problem:validation");
    assert_eq!(r.paths(), ["/data/customer_id", "/data/email"]);
    assert!(app.host.calls().is_empty(), "nothing submitted");
    let kept = app.get("d", "alice-key").await;
    assert_eq!(kept.etag(), put.etag());
    assert_eq!(kept.body["submission"], json!(null));
}

#[tokio::test]
async fn submit_with_wait_applies_and_deletes_the_draft() {
    let app = App::sqlite().await;
    app.host.set_outcome(Outcome::Applied);
    let put = app
        .put("cart-7", "alice-key", &[], &customer("cust-42"))
        .await;
    let tag = put.etag();
    let r = app
        .submit(
            "cart-7",
            "alice-key",
            &[("prefer", "wait=5"), ("if-match", &tag)],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["state"], "APPLIED");
    assert_eq!(r.body["canonicalId"], "cust-42");
    assert_eq!(
        r.body["draft"],
        json!({"id": "cart-7", "version": 1, "deleted": true})
    );
    assert_eq!(r.header("preference-applied"), Some("wait=5"));
    let sid = r.body["submissionId"].as_str().unwrap().to_owned();
    assert_eq!(
        r.header("location").unwrap(),
        format!("/v1/submissions/{sid}")
    );
    assert_eq!(r.header("idempotent-replayed"), None);

    let calls = app.host.calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.command_type, "customer.upsert.v1");
    assert_eq!(call.draft_id, "cart-7");
    assert_eq!(call.wait, Some(Duration::from_secs(5)));
    assert_eq!(call.payload, customer("cust-42")["data"]);
    // draft:<id>:<incarnation>:v<version>, the incarnation being the ETag's.
    let incarnation = tag.trim_matches('"').rsplit_once('-').unwrap().0.to_owned();
    assert_eq!(
        call.idempotency_key,
        format!("draft:cart-7:{incarnation}:v1")
    );
    assert_eq!(
        sid,
        writ_core::submission_id("/tenants/acme", &call.idempotency_key).to_string()
    );
    assert_eq!(
        app.get("cart-7", "alice-key").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.service.store().count().await.unwrap(), 0);
}

#[tokio::test]
async fn a_double_submit_is_one_command() {
    let app = App::sqlite().await;
    app.put("d", "alice-key", &[], &customer("c-1")).await;
    let first = app.submit("d", "alice-key", &[]).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{:?}", first.body);
    assert_eq!(first.body["state"], "ACCEPTED");
    assert_eq!(first.body["draft"]["deleted"], false);
    let second = app.submit("d", "alice-key", &[]).await;
    assert_eq!(second.status, StatusCode::ACCEPTED);
    assert_eq!(second.body["submissionId"], first.body["submissionId"]);
    assert_eq!(second.header("idempotent-replayed"), Some("true"));

    // The contract: the host is called for each submit, with the same key and
    // payload, and its idempotency makes them one command.
    let calls = app.host.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0], calls[1]);
    assert_eq!(app.host.command_count(), 1);

    let draft = app.get("d", "alice-key").await;
    assert_eq!(draft.body["submission"]["state"], "ACCEPTED");
    assert_eq!(draft.body["submission"]["version"], 1);
    assert_eq!(
        draft.body["submission"]["submissionId"],
        first.body["submissionId"]
    );
}

#[tokio::test]
async fn rejected_drafts_are_kept_with_the_error_and_can_be_fixed() {
    let app = App::sqlite().await;
    app.host.set_outcome(Outcome::Rejected("EMAIL_DOMAIN"));
    app.put("d", "alice-key", &[], &customer("c-1")).await;
    let r = app.submit("d", "alice-key", &[("prefer", "wait=5")]).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.body["type"], "urn:writ:problem:rejected");
    assert_eq!(r.body["state"], "REJECTED");
    assert_eq!(r.body["error"]["code"], "EMAIL_DOMAIN");
    assert_eq!(r.body["code"], "EMAIL_DOMAIN");
    assert_eq!(r.body["draft"]["deleted"], false);
    let sid = r.body["submissionId"].as_str().unwrap();
    assert_eq!(
        r.header("location").unwrap(),
        format!("/v1/submissions/{sid}")
    );
    let kept = app.get("d", "alice-key").await;
    assert_eq!(kept.status, StatusCode::OK);
    assert_eq!(kept.body["submission"]["state"], "REJECTED");
    assert_eq!(kept.body["submission"]["error"]["code"], "EMAIL_DOMAIN");

    // Resubmitting unchanged is the same command, answered the same way.
    let again = app.submit("d", "alice-key", &[("prefer", "wait=5")]).await;
    assert_eq!(again.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(app.host.command_count(), 1);

    // Fix it: a new version is a new command, and this one applies.
    let fixed = app
        .put(
            "d",
            "alice-key",
            &[("if-match", &kept.etag())],
            &customer("c-1"),
        )
        .await;
    assert_eq!(fixed.status, StatusCode::OK);
    assert_eq!(
        fixed.body["submission"]["state"], "REJECTED",
        "history kept until resubmit"
    );
    app.host.set_outcome(Outcome::Applied);
    let r = app.submit("d", "alice-key", &[("prefer", "wait=5")]).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body["draft"]["version"], 2);
    assert_eq!(app.host.command_count(), 2);
    assert_eq!(
        app.get("d", "alice-key").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn conflicts_and_dead_letters_keep_the_draft() {
    for (outcome, status, slug) in [
        (Outcome::Conflict, StatusCode::CONFLICT, "conflict"),
        (
            Outcome::DeadLettered,
            StatusCode::BAD_GATEWAY,
            "dead-lettered",
        ),
    ] {
        let app = App::sqlite().await;
        app.host.set_outcome(outcome);
        app.put("d", "alice-key", &[], &customer("c")).await;
        let r = app.submit("d", "alice-key", &[("prefer", "wait=1")]).await;
        assert_eq!(r.status, status);
        assert_eq!(r.body["type"], format!("urn:writ:problem:{slug}"));
        let kept = app.get("d", "alice-key").await;
        assert_eq!(kept.status, StatusCode::OK);
        assert_eq!(kept.body["submission"]["state"], r.body["state"]);
    }
}

#[tokio::test]
async fn a_failed_submit_can_be_retried_with_the_same_key() {
    let app = App::sqlite().await;
    app.put("d", "alice-key", &[], &customer("c")).await;
    *app.host.fail_next.lock().unwrap() = Some(Problem::unavailable(
        "the broker is unreachable; nothing was produced",
        2,
    ));
    let r = app.submit("d", "alice-key", &[]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.header("retry-after"), Some("2"));
    assert_eq!(app.host.command_count(), 0);
    assert_eq!(app.get("d", "alice-key").await.status, StatusCode::OK);

    let r = app.submit("d", "alice-key", &[]).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let calls = app.host.calls();
    assert_eq!(calls[0].idempotency_key, calls[1].idempotency_key);
    assert_eq!(app.host.command_count(), 1);
}

#[tokio::test]
async fn submit_checks_if_match_and_the_keys_types() {
    let app = App::sqlite().await;
    let put = app.put("d", "alice-key", &[], &customer("c")).await;
    let tag = put.etag();
    let newer = app
        .put("d", "alice-key", &[("if-match", &tag)], &customer("c2"))
        .await;
    let r = app.submit("d", "alice-key", &[("if-match", &tag)]).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert!(app.host.calls().is_empty());
    let r = app
        .submit("d", "alice-key", &[("if-match", &newer.etag())])
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(app.host.calls()[0].payload["customer_id"], "c2");
    assert_eq!(
        app.submit("nope", "alice-key", &[]).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn status_events_settle_drafts() {
    let app = App::sqlite().await;
    let svc = &app.service;
    // REJECTED: kept with the error; a repeated event changes nothing.
    app.put("r", "alice-key", &[], &customer("c-r")).await;
    let sid = sid_of(&app.submit("r", "alice-key", &[]).await);
    let rejected = app.host.complete(sid, Outcome::Rejected("NOPE"));
    assert_eq!(
        svc.apply_status(&rejected).await.unwrap(),
        Settled::Recorded
    );
    assert_eq!(
        svc.apply_status(&rejected).await.unwrap(),
        Settled::Unchanged
    );
    let r = app.get("r", "alice-key").await;
    assert_eq!(r.body["submission"]["state"], "REJECTED");
    assert_eq!(
        r.body["submission"]["error"]["message"],
        "the master refused the e-mail domain"
    );
    // A terminal state never changes to another one.
    let mut applied = rejected.clone();
    applied.state = SubmissionState::Applied;
    assert_eq!(svc.apply_status(&applied).await.unwrap(), Settled::Ignored);
    assert_eq!(app.get("r", "alice-key").await.status, StatusCode::OK);

    // APPLIED: deleted.
    app.put("a", "alice-key", &[], &customer("c-a")).await;
    let sid = sid_of(&app.submit("a", "alice-key", &[]).await);
    let accepted = app.host.complete(sid, Outcome::Pending);
    assert_eq!(
        svc.apply_status(&accepted).await.unwrap(),
        Settled::Unchanged
    );
    let event = app.host.complete(sid, Outcome::Applied);
    assert_eq!(svc.apply_status(&event).await.unwrap(), Settled::Deleted);
    assert_eq!(
        app.get("a", "alice-key").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(svc.apply_status(&event).await.unwrap(), Settled::Unknown);

    // APPLIED for a draft edited since: the edit is kept, the outcome recorded.
    let put = app.put("e", "alice-key", &[], &customer("c-e")).await;
    let sid = sid_of(&app.submit("e", "alice-key", &[]).await);
    app.put(
        "e",
        "alice-key",
        &[("if-match", &put.etag())],
        &partial_customer(),
    )
    .await;
    let event = app.host.complete(sid, Outcome::Applied);
    assert_eq!(svc.apply_status(&event).await.unwrap(), Settled::Recorded);
    let e = app.get("e", "alice-key").await;
    assert_eq!(e.body["version"], 2);
    assert_eq!(e.body["submission"]["version"], 1);
    assert_eq!(e.body["submission"]["state"], "APPLIED");
    assert_eq!(e.body["submission"]["canonicalId"], "c-e");

    // DEAD_LETTERED, then replayed from the DLQ (back to ACCEPTED), then applied.
    app.put("x", "alice-key", &[], &customer("c-x")).await;
    let sid = sid_of(&app.submit("x", "alice-key", &[]).await);
    let dead = app.host.complete(sid, Outcome::DeadLettered);
    assert_eq!(svc.apply_status(&dead).await.unwrap(), Settled::Recorded);
    let replayed = app.host.complete(sid, Outcome::Pending);
    assert_eq!(
        svc.apply_status(&replayed).await.unwrap(),
        Settled::Recorded
    );
    let x = app.get("x", "alice-key").await;
    assert_eq!(x.body["submission"]["state"], "ACCEPTED");
    assert_eq!(x.body["submission"]["error"], json!(null));
    let applied = app.host.complete(sid, Outcome::Applied);
    assert_eq!(svc.apply_status(&applied).await.unwrap(), Settled::Deleted);

    // Events that do not belong to the draft never touch it.
    app.put("f", "alice-key", &[], &customer("c-f")).await;
    let sid = sid_of(&app.submit("f", "alice-key", &[]).await);
    let mut forged = app.host.preview(sid, Outcome::Applied);
    forged.source = "/tenants/globex".into();
    assert_eq!(svc.apply_status(&forged).await.unwrap(), Settled::Ignored);
    let mut wrong_draft = app.host.preview(sid, Outcome::Applied);
    wrong_draft.draft_id = Some("other".into());
    assert_eq!(
        svc.apply_status(&wrong_draft).await.unwrap(),
        Settled::Ignored
    );
    assert_eq!(
        app.get("f", "alice-key").await.body["submission"]["state"],
        "ACCEPTED"
    );
    let mut stranger = forged.clone();
    stranger.submission_id = uuid::Uuid::new_v4();
    assert_eq!(svc.apply_status(&stranger).await.unwrap(), Settled::Unknown);
}

#[tokio::test]
async fn a_timed_out_submit_is_settled_when_the_draft_is_read() {
    let app = App::sqlite().await;
    app.put("a", "alice-key", &[], &customer("cust-9")).await;
    let sid = sid_of(&app.submit("a", "alice-key", &[("prefer", "wait=1")]).await);
    // Still pending: GET asks the host, finds nothing new, serves the draft.
    let r = app.get("a", "alice-key").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(app.host.status_calls.lock().unwrap().as_slice(), [sid]);
    // Applied later, and the status event never reached this replica.
    app.host.complete(sid, Outcome::Applied);
    let r = app.get("a", "alice-key").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["state"], "APPLIED");
    assert_eq!(r.body["canonicalId"], "cust-9");
    assert_eq!(r.body["submissionId"], sid.to_string());
    assert_eq!(app.service.store().count().await.unwrap(), 0);

    app.put("r", "alice-key", &[], &customer("c")).await;
    let sid = sid_of(&app.submit("r", "alice-key", &[]).await);
    app.host.complete(sid, Outcome::Rejected("NOPE"));
    let r = app.get("r", "alice-key").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["submission"]["state"], "REJECTED");
    // Settled drafts are not looked up again.
    let lookups = app.host.status_calls.lock().unwrap().len();
    app.get("r", "alice-key").await;
    assert_eq!(app.host.status_calls.lock().unwrap().len(), lookups);
}

#[tokio::test]
async fn old_drafts_are_purged_by_last_change() {
    let app = App::sqlite().await;
    let day = time::Duration::days(1);
    let t0 = app.clock.now();
    app.put("old", "alice-key", &[], &partial_customer()).await;
    let touched = app
        .put("touched", "alice-key", &[], &partial_customer())
        .await;
    app.clock.advance(day * 20);
    app.put("young", "alice-key", &[], &partial_customer())
        .await;
    app.put(
        "touched",
        "alice-key",
        &[("if-match", &touched.etag())],
        &customer("t"),
    )
    .await;

    // Explicit cutoffs: only what changed before the cutoff goes.
    assert_eq!(app.service.purge_older_than(t0).await.unwrap(), 0);
    assert_eq!(app.service.store().count().await.unwrap(), 3);
    // Day 31: "old" (last changed on day 0) is past the 30-day TTL.
    app.clock.advance(day * 11);
    assert_eq!(app.service.purge_expired().await.unwrap(), 1);
    assert_eq!(
        app.get("old", "alice-key").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.get("touched", "alice-key").await.status, StatusCode::OK);
    // Day 51: everything left is past it.
    app.clock.advance(day * 20);
    assert_eq!(app.service.purge_expired().await.unwrap(), 2);
    assert_eq!(app.service.store().count().await.unwrap(), 0);
}

#[tokio::test]
async fn the_purge_task_runs_until_shutdown() {
    let mut config = common::config("sqlite::memory:");
    config.purge_interval_ms = 20;
    let store = writ_drafts::DraftStore::connect(&config.store_url, 1, common::WAIT)
        .await
        .unwrap();
    let app = App::with_store(store, config);
    app.put("old", "alice-key", &[], &partial_customer()).await;
    app.clock.advance(time::Duration::days(31));
    app.put("new", "alice-key", &[], &partial_customer()).await;

    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = app.service.spawn_purge(shutdown.clone());
    tokio::time::timeout(Duration::from_secs(10), async {
        while app.service.store().count().await.unwrap() != 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the purge task removed the expired draft");
    assert_eq!(app.get("new", "alice-key").await.status, StatusCode::OK);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the purge task stops on shutdown")
        .unwrap();
}

fn sid_of(reply: &common::Reply) -> uuid::Uuid {
    reply.body["submissionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no submissionId in {:?}", reply.body))
        .parse()
        .unwrap()
}
