//! The local store itself: a SQLite file keeps records and outbox rows
//! across a restart (the edge's durability), the schema is created
//! idempotently, and the same statements run on PostgreSQL.

use serde_json::json;
use writ_edge::config::StoreConfig;
use writ_edge::store::{Created, Scope, Write};
use writ_edge::{LocalStore, SyncState};

fn write(customer: &str) -> Write {
    let full = json!({"customer_id": customer, "name": "Ada", "email": "a@x"});
    Write {
        collection: "customers".into(),
        command_type: "customer.upsert.v1".into(),
        key: customer.into(),
        local: full.clone(),
        full,
        source: "/tenants/acme/edge".into(),
    }
}

fn acme() -> Scope {
    Scope {
        tenant: "acme".into(),
        owner: None,
    }
}

async fn survives_a_restart(url: &str) {
    let config = StoreConfig {
        url: url.to_owned(),
        ..Default::default()
    };
    let store = LocalStore::connect(&config).await.unwrap();
    let Created::Record(record) = store.create(&acme(), &write("c-1")).await.unwrap() else {
        panic!("created");
    };
    drop(store);
    // A second start finds the schema in place and the data intact.
    let store = LocalStore::connect(&config).await.unwrap();
    let again = store
        .get(&acme(), "customers", &record.id)
        .await
        .unwrap()
        .expect("the record survived");
    assert_eq!(again.sync_state, SyncState::Pending);
    assert_eq!(again.data, record.data);
    assert_eq!(
        store.outbox_states().await.unwrap(),
        vec![("PENDING".to_owned(), 1)],
        "its outbox row too"
    );
    let publishable = store
        .publishable(
            "customers",
            10,
            time::OffsetDateTime::now_utc() - std::time::Duration::from_secs(300),
        )
        .await
        .unwrap();
    assert_eq!(publishable.len(), 1);
    assert_eq!(publishable[0].record_id, record.id);
    assert_eq!(publishable[0].payload["email"], "a@x");
}

#[tokio::test]
async fn a_sqlite_file_keeps_records_and_outbox_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("edge.db").display());
    survives_a_restart(&url).await;
}

#[tokio::test]
async fn a_postgres_store_keeps_records_and_outbox_across_restarts() {
    let Some(pg) = writ_testkit::postgres().await else {
        return;
    };
    survives_a_restart(pg.url()).await;
}

#[tokio::test]
async fn unsupported_urls_are_refused() {
    let err = LocalStore::connect(&StoreConfig {
        url: "mysql://h/db".into(),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("sqlite: or postgres:"), "{err}");
}
