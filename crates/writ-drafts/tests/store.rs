//! The drafts store on both backends: SQLite (a file) always, PostgreSQL when
//! `WRIT_TEST_POSTGRES_URL` is set (tests/run.sh) or Docker answers. The same
//! scenario runs on each, then the service's submit/settle path on PostgreSQL.

mod common;

use axum::http::StatusCode;
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;
use writ_core::{StatusError, SubmissionState};
use writ_drafts::store::Settlement;
use writ_drafts::{DraftKey, DraftRecord, DraftStore, Revision, Settled, StoreError};

use common::{customer, App, Outcome};

fn t0() -> OffsetDateTime {
    time::macros::datetime!(2026-11-01 09:00:00.123 UTC)
}

fn key(tenant: &str, owner: &str, id: &str) -> DraftKey {
    DraftKey {
        tenant: tenant.into(),
        owner: owner.into(),
        id: id.into(),
    }
}

fn record(key: DraftKey, at: OffsetDateTime) -> DraftRecord {
    DraftRecord {
        key,
        revision: Revision {
            incarnation: "0123456789abcdef".into(),
            version: 1,
        },
        command_type: "customer.upsert.v1".into(),
        data: json!({"name": "Ada", "address": {"city": "London", "lines": [1, "two", null]}}),
        created_at: at,
        updated_at: at,
        submission: None,
    }
}

/// Every store operation, including the conditional ones losing.
async fn exercise(store: &DraftStore) {
    let k = key("acme", "alice", "cart-1");
    let r = record(k.clone(), t0());
    assert!(store.insert(&r).await.unwrap());
    assert!(!store.insert(&r).await.unwrap(), "one draft per key");
    assert_eq!(store.get(&k).await.unwrap().unwrap(), r);

    // Other owners and tenants have their own namespace.
    for other in [
        key("acme", "bob", "cart-1"),
        key("acme", "", "cart-1"),
        key("globex", "alice", "cart-1"),
    ] {
        assert_eq!(store.get(&other).await.unwrap(), None);
        assert!(store.insert(&record(other.clone(), t0())).await.unwrap());
        assert!(store.delete(&other, None).await.unwrap());
    }

    // Replace: only at the expected revision.
    let later = t0() + time::Duration::hours(1);
    let stale = Revision {
        version: 7,
        ..r.revision.clone()
    };
    let data = json!({"customer_id": "c-1", "name": "Ada", "email": "ada@example.com"});
    assert!(!store
        .replace(&k, &stale, "customer.upsert.v1", &data, later)
        .await
        .unwrap());
    assert!(store
        .replace(&k, &r.revision, "customer.upsert.v1", &data, later)
        .await
        .unwrap());
    let v2 = store.get(&k).await.unwrap().unwrap();
    assert_eq!(v2.revision.version, 2);
    assert_eq!(v2.data, data);
    assert_eq!(v2.created_at, t0());
    assert_eq!(v2.updated_at, later);

    // A submission is recorded at a revision, found by id, settled by state.
    let sid = Uuid::new_v4();
    assert!(!store
        .record_submission(&k, &r.revision, sid, later)
        .await
        .unwrap());
    assert!(store
        .record_submission(&k, &v2.revision, sid, later)
        .await
        .unwrap());
    let found = store.find_by_submission(sid).await.unwrap().unwrap();
    assert_eq!(found.key, k);
    let sub = found.submission.unwrap();
    assert_eq!(
        (sub.id, sub.version, sub.state),
        (sid, 2, SubmissionState::Accepted)
    );
    assert_eq!(sub.submitted_at, later);
    assert_eq!(
        store.find_by_submission(Uuid::new_v4()).await.unwrap(),
        None
    );

    let rejected = Settlement {
        state: SubmissionState::Rejected,
        canonical_id: None,
        error: Some(StatusError {
            code: "EMAIL_DOMAIN".into(),
            message: "refused".into(),
            retryable: false,
        }),
    };
    assert!(!store
        .settle(&k, sid, SubmissionState::Conflict, &rejected)
        .await
        .unwrap());
    assert!(!store
        .settle(&k, Uuid::new_v4(), SubmissionState::Accepted, &rejected)
        .await
        .unwrap());
    assert!(store
        .settle(&k, sid, SubmissionState::Accepted, &rejected)
        .await
        .unwrap());
    let settled = store.get(&k).await.unwrap().unwrap().submission.unwrap();
    assert_eq!(settled.state, SubmissionState::Rejected);
    assert_eq!(settled.error, rejected.error);

    // Deleting a submitted draft: not once it was edited after the submit.
    assert!(store
        .replace(&k, &v2.revision, "customer.upsert.v1", &data, later)
        .await
        .unwrap());
    assert!(!store.delete_submitted(&k, sid).await.unwrap());
    let v3 = store.get(&k).await.unwrap().unwrap();
    assert_eq!(
        v3.submission.as_ref().unwrap().version,
        2,
        "history kept across edits"
    );
    let sid3 = Uuid::new_v4();
    assert!(store
        .record_submission(&k, &v3.revision, sid3, later)
        .await
        .unwrap());
    let cleared = store.get(&k).await.unwrap().unwrap().submission.unwrap();
    assert_eq!(
        (cleared.state, cleared.error),
        (SubmissionState::Accepted, None)
    );
    assert!(store.delete_submitted(&k, sid3).await.unwrap());
    assert_eq!(store.get(&k).await.unwrap(), None);

    // Delete: conditional and unconditional.
    let r = record(k.clone(), t0());
    assert!(store.insert(&r).await.unwrap());
    assert!(!store.delete(&k, Some(&stale)).await.unwrap());
    assert!(store.delete(&k, Some(&r.revision)).await.unwrap());
    assert!(!store.delete(&k, None).await.unwrap());

    // Purge: more than one batch of old drafts, none of the young ones.
    let old = 1005;
    for i in 0..old {
        let r = record(key("acme", "", &format!("old-{i}")), t0());
        assert!(store.insert(&r).await.unwrap());
    }
    for i in 0..3 {
        let r = record(
            key("globex", "", &format!("young-{i}")),
            t0() + time::Duration::days(2),
        );
        assert!(store.insert(&r).await.unwrap());
    }
    assert_eq!(
        store.purge_older_than(t0()).await.unwrap(),
        0,
        "strictly older"
    );
    let cutoff = t0() + time::Duration::days(1);
    assert_eq!(store.purge_older_than(cutoff).await.unwrap(), old);
    assert_eq!(store.count().await.unwrap(), 3);
    assert_eq!(store.purge_older_than(cutoff).await.unwrap(), 0);
}

#[tokio::test]
async fn sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("drafts.db").display());
    let store = DraftStore::connect(&url, 4, common::WAIT).await.unwrap();
    assert_eq!(store.backend(), "sqlite");
    exercise(&store).await;
    // Reopening migrates nothing and finds the data.
    let again = DraftStore::connect(&url, 4, common::WAIT).await.unwrap();
    assert_eq!(again.migrate().await.unwrap(), 0);
    assert_eq!(again.count().await.unwrap(), 3);
}

#[tokio::test]
async fn postgres_store() {
    let Some(pg) = writ_testkit::postgres().await else {
        return;
    };
    // Replicas starting together: each migration runs once.
    let (a, b) = tokio::join!(
        DraftStore::connect(pg.url(), 2, common::WAIT),
        DraftStore::connect(pg.url(), 2, common::WAIT)
    );
    let (store, _) = (a.unwrap(), b.unwrap());
    assert_eq!(store.backend(), "postgres");
    let versions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM writ_drafts_migrations")
        .fetch_one(pg.pool())
        .await
        .unwrap();
    assert_eq!(versions, 1);
    exercise(&store).await;
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_writ_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("drafts.db").display());
    let store = DraftStore::connect(&url, 1, common::WAIT).await.unwrap();
    let DraftStore::Sqlite(pool) = &store else {
        unreachable!()
    };
    sqlx::query("INSERT INTO writ_drafts_migrations VALUES (99, 'future', 0)")
        .execute(pool)
        .await
        .unwrap();
    let err = DraftStore::connect(&url, 1, common::WAIT)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 99,
                known: 1
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn unusable_store_urls_are_refused() {
    let err = DraftStore::connect("mysql://u:pw@h/db", 1, common::WAIT)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Misconfigured(_)));
    assert!(!err.to_string().contains("pw"), "{err}");
    let err = DraftStore::connect(
        "postgres://u:pw@127.0.0.1:1/db",
        1,
        std::time::Duration::from_millis(200),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(!err.to_string().contains("pw"), "{err}");
}

#[tokio::test]
async fn submit_and_settle_on_postgres() {
    let Some(pg) = writ_testkit::postgres().await else {
        return;
    };
    let config = common::config(pg.url());
    let store = DraftStore::connect(pg.url(), 2, common::WAIT)
        .await
        .unwrap();
    let app = App::with_store(store, config);

    // Double submit: one command; APPLIED via the status event deletes the draft.
    app.put("cart", "alice-key", &[], &customer("c-1")).await;
    let first = app.submit("cart", "alice-key", &[]).await;
    let second = app.submit("cart", "alice-key", &[]).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(second.body["submissionId"], first.body["submissionId"]);
    assert_eq!(app.host.command_count(), 1);
    let sid: Uuid = first.body["submissionId"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let event = app.host.complete(sid, Outcome::Applied);
    assert_eq!(
        app.service.apply_status(&event).await.unwrap(),
        Settled::Deleted
    );
    assert_eq!(
        app.get("cart", "alice-key").await.status,
        StatusCode::NOT_FOUND
    );

    // REJECTED with a wait: kept with the error, isolated from other owners.
    app.host.set_outcome(Outcome::Rejected("EMAIL_DOMAIN"));
    app.put("cart", "alice-key", &[], &customer("c-2")).await;
    let r = app
        .submit("cart", "alice-key", &[("prefer", "wait=2")])
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let kept = app.get("cart", "alice-key").await;
    assert_eq!(kept.body["submission"]["error"]["code"], "EMAIL_DOMAIN");
    assert_eq!(kept.body["submission"]["error"]["retryable"], false);
    assert_eq!(
        app.get("cart", "bob-key").await.status,
        StatusCode::NOT_FOUND
    );

    // TTL purge by the service clock.
    app.clock.advance(time::Duration::days(31));
    assert_eq!(app.service.purge_expired().await.unwrap(), 1);
    assert_eq!(
        app.get("cart", "alice-key").await.status,
        StatusCode::NOT_FOUND
    );
}
