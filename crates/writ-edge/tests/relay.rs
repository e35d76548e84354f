//! The outbox relay on librdkafka's embedded mock cluster with an in-memory
//! SQLite store: what a published command looks like, per-entity order with
//! expected versions, batch sync windows, and rows that survive a broker
//! outage. (End to end with a worker and PostgreSQL: `sync.rs`.)

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use figment::providers::Format as _;
use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::Notify;
use writ_codec::{PayloadCodec, SchemaCatalog};
use writ_core::{StatusEvent, SubmissionState, TopicLayout};
use writ_edge::config::{CollectionConfig, CommandFormat, RelayConfig, StoreConfig};
use writ_edge::relay::Relay;
use writ_edge::store::{Created, Scope, Updated, Write};
use writ_edge::{LocalStore, SyncState};
use writ_kafka::{KafkaSettings, RecordProducer};
use writ_testkit::TestKafka;

struct Fixture {
    kafka: TestKafka,
    settings: KafkaSettings,
    layout: TopicLayout,
    store: LocalStore,
    relay: Relay,
}

async fn fixture(collection: &str) -> Fixture {
    writ_testkit::init_tracing();
    let kafka = writ_testkit::mock_kafka(1);
    let layout = TopicLayout::new(&writ_testkit::unique_name("relay")).unwrap();
    kafka.create_mock_topic(&layout.commands(), 2).unwrap();
    let settings = KafkaSettings::new(kafka.bootstrap_servers());
    let producer =
        RecordProducer::new(&settings.clone().with("message.timeout.ms", "1500")).unwrap();
    let store = LocalStore::connect(&StoreConfig {
        url: "sqlite::memory:".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    #[derive(serde::Deserialize)]
    struct W {
        collections: BTreeMap<String, CollectionConfig>,
    }
    let w: W = figment::Figment::new()
        .merge(figment::providers::Toml::string(collection))
        .extract()
        .unwrap();
    let relay = Relay::new(
        store.clone(),
        producer,
        Arc::new(PayloadCodec::new(SchemaCatalog::builtin(), None).unwrap()),
        layout.clone(),
        Arc::new(w.collections),
        RelayConfig::default(),
        CommandFormat::Json,
        Arc::new(Notify::new()),
        Duration::from_secs(3600),
    );
    Fixture {
        kafka,
        settings,
        layout,
        store,
        relay,
    }
}

const IMMEDIATE: &str = r#"
[collections.customers]
command_type = "customer.upsert.v1"
key_field = "customer_id"
"#;

fn acme() -> Scope {
    Scope {
        tenant: "acme".into(),
        owner: None,
    }
}

fn write(customer: &str, name: &str) -> Write {
    let full = json!({"customer_id": customer, "name": name, "email": format!("{customer}@x"),
                      "phone": null, "address": null, "tier": "STANDARD", "seq": null, "tax_id": null});
    Write {
        collection: "customers".into(),
        command_type: "customer.upsert.v1".into(),
        key: customer.into(),
        local: full.clone(),
        full,
        source: "/tenants/acme/edge".into(),
    }
}

async fn create(f: &Fixture, customer: &str) -> String {
    match f
        .store
        .create(&acme(), &write(customer, "Ada"))
        .await
        .unwrap()
    {
        Created::Record(r) => r.id.clone(),
        other => panic!("{other:?}"),
    }
}

fn applied(event_id: &str, version: i64) -> StatusEvent {
    StatusEvent {
        submission_id: writ_core::submission_id("/tenants/acme/edge", event_id),
        source: "/tenants/acme/edge".into(),
        id: event_id.into(),
        command_type: "customer.upsert.v1".into(),
        subject: None,
        state: SubmissionState::Applied,
        canonical_id: Some("C-1".into()),
        master_version: Some(version),
        error: None,
        attempts: 1,
        payload_fingerprint: String::new(),
        accepted_at: OffsetDateTime::now_utc(),
        applied_at: Some(OffsetDateTime::now_utc()),
        stale_after: None,
        job_id: None,
        job_line: None,
        draft_id: None,
        temp_id: None,
    }
}

async fn event_ids(store: &LocalStore) -> Vec<String> {
    sqlx::query_scalar("SELECT event_id FROM edge_outbox ORDER BY seq")
        .fetch_all(store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn commands_carry_the_edge_identity_and_the_full_write() {
    let f = fixture(IMMEDIATE).await;
    let id = create(&f, "c-1").await;
    let report = f.relay.run_once(OffsetDateTime::now_utc()).await.unwrap();
    assert_eq!((report.published, report.failed), (1, 0));
    assert_eq!(
        f.store.outbox_states().await.unwrap(),
        vec![("PUBLISHED".to_owned(), 1)]
    );
    let records = support::read_topic(&f.settings, &f.layout.commands());
    assert_eq!(records.len(), 1);
    let r = &records[0];
    let h = |name: &str| r.headers.get_str(name).map(str::to_owned);
    assert_eq!(h("ce_id"), Some(event_ids(&f.store).await[0].clone()));
    assert_eq!(h("ce_source").as_deref(), Some("/tenants/acme/edge"));
    assert_eq!(h("ce_type").as_deref(), Some("customer.upsert.v1"));
    assert_eq!(h("ce_subject").as_deref(), Some("c-1"));
    assert_eq!(h("ce_tempid"), Some(id));
    assert_eq!(h("ce_expectedversion"), None, "a create expects nothing");
    assert_eq!(r.key.as_deref(), Some(&b"c-1"[..]));
    let payload: serde_json::Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
    assert_eq!(payload["email"], "c-1@x");
    // Published rows are not published again.
    let again = f.relay.run_once(OffsetDateTime::now_utc()).await.unwrap();
    assert_eq!(again.published, 0);
}

#[tokio::test]
async fn one_entity_is_published_in_order_each_write_based_on_the_last_answer() {
    let f = fixture(IMMEDIATE).await;
    let id = create(&f, "c-1").await;
    create(&f, "c-2").await;
    assert_eq!(
        f.relay
            .run_once(OffsetDateTime::now_utc())
            .await
            .unwrap()
            .published,
        2
    );
    let updated = f
        .store
        .update(&acme(), &id, &write("c-1", "Ada L."))
        .await
        .unwrap();
    assert!(matches!(updated, Updated::Record(_)), "{updated:?}");
    // The first write of c-1 is in flight: the second waits for its answer.
    assert_eq!(
        f.relay
            .run_once(OffsetDateTime::now_utc())
            .await
            .unwrap()
            .published,
        0
    );
    let first = event_ids(&f.store).await[0].clone();
    f.store
        .apply_status(&applied(&first, 1), |_| writ_edge::ConflictPolicy::Manual)
        .await
        .unwrap();
    let record = f
        .store
        .get(&acme(), "customers", &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        record.sync_state,
        SyncState::Pending,
        "the update is still pending"
    );
    assert_eq!(record.master_version, Some(1));
    assert_eq!(record.canonical_id.as_deref(), Some("C-1"));
    assert_eq!(
        f.relay
            .run_once(OffsetDateTime::now_utc())
            .await
            .unwrap()
            .published,
        1
    );
    let records = support::read_topic(&f.settings, &f.layout.commands());
    let update_id = event_ids(&f.store).await[2].clone();
    let update = records
        .iter()
        .find(|r| r.headers.get_str("ce_id") == Some(update_id.as_str()))
        .expect("the update was published");
    assert_eq!(update.headers.get_str("ce_expectedversion"), Some("1"));
    // The same status again changes nothing.
    let effect = f
        .store
        .apply_status(&applied(&first, 1), |_| writ_edge::ConflictPolicy::Manual)
        .await
        .unwrap();
    assert_eq!(effect, writ_edge::store::StatusEffect::Ignored);
}

#[tokio::test]
async fn a_batch_window_holds_changes_until_the_count_or_the_interval() {
    let f = fixture(
        r#"
[collections.customers]
command_type = "customer.upsert.v1"
key_field = "customer_id"
[collections.customers.sync]
interval_ms = 3600000
max_pending = 3
"#,
    )
    .await;
    let now = OffsetDateTime::now_utc();
    create(&f, "c-1").await;
    create(&f, "c-2").await;
    assert_eq!(
        f.relay.run_once(now).await.unwrap().published,
        0,
        "window open"
    );
    create(&f, "c-3").await;
    assert_eq!(
        f.relay.run_once(now).await.unwrap().published,
        3,
        "the count closed the window"
    );
    // The worker answers them (otherwise they would be republished later).
    for event_id in event_ids(&f.store).await {
        f.store
            .apply_status(&applied(&event_id, 1), |_| {
                writ_edge::ConflictPolicy::Manual
            })
            .await
            .unwrap();
    }
    create(&f, "c-4").await;
    assert_eq!(f.relay.run_once(now).await.unwrap().published, 0);
    let later = now + time::Duration::hours(2);
    assert_eq!(
        f.relay.run_once(later).await.unwrap().published,
        1,
        "the interval closed the window"
    );
}

#[tokio::test]
async fn rows_stay_pending_while_the_broker_is_down_and_go_out_when_it_is_back() {
    let f = fixture(IMMEDIATE).await;
    for i in 0..5 {
        create(&f, &format!("c-{i}")).await;
    }
    f.kafka.broker_down(1).unwrap();
    let down = f.relay.run_once(OffsetDateTime::now_utc()).await.unwrap();
    assert_eq!(down.published, 0);
    assert_eq!(down.failed, 5);
    assert_eq!(
        f.store.outbox_states().await.unwrap(),
        vec![("PENDING".to_owned(), 5)]
    );
    f.kafka.broker_up(1).unwrap();
    let mut published = 0;
    for _ in 0..20 {
        published += f
            .relay
            .run_once(OffsetDateTime::now_utc())
            .await
            .unwrap()
            .published;
        if published == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(published, 5);
    let records = support::read_topic(&f.settings, &f.layout.commands());
    let mut ids: Vec<String> = records
        .iter()
        .map(|r| r.headers.get_str("ce_id").unwrap().to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "every row reached the topic");
}

#[tokio::test]
async fn an_unanswered_row_is_published_again_with_the_same_id() {
    let f = fixture(IMMEDIATE).await;
    let id = create(&f, "c-1").await;
    let now = OffsetDateTime::now_utc();
    assert_eq!(f.relay.run_once(now).await.unwrap().published, 1);
    assert_eq!(
        f.relay.run_once(now).await.unwrap().published,
        0,
        "in flight"
    );
    // A later write of the entity waits behind the unanswered one.
    f.store
        .update(&acme(), &id, &write("c-1", "Ada L."))
        .await
        .unwrap();
    let later = now + time::Duration::minutes(10);
    assert_eq!(
        f.relay.run_once(later).await.unwrap().published,
        1,
        "only the unanswered row goes out again"
    );
    let first = event_ids(&f.store).await[0].clone();
    let records = support::read_topic(&f.settings, &f.layout.commands());
    let copies = records
        .iter()
        .filter(|r| r.headers.get_str("ce_id") == Some(first.as_str()))
        .count();
    assert_eq!((records.len(), copies), (2, 2), "the same command twice");
    f.store
        .apply_status(&applied(&first, 1), |_| writ_edge::ConflictPolicy::Manual)
        .await
        .unwrap();
    assert_eq!(
        f.relay.run_once(later).await.unwrap().published,
        1,
        "answered: the next write of the entity goes out"
    );
}
