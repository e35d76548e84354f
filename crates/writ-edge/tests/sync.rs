//! End to end on the real broker (tansu under tests/run.sh, else the mock
//! cluster) and PostgreSQL: the edge in-process with the real worker applying
//! its commands to a PostgreSQL master. Writes made while the broker is down
//! all sync exactly once; each conflict policy; reconcile; a relay crash.

mod support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use support::{customer_json, LocalDb, World, ACME_KEY, GLOBEX_KEY};
use writ_edge::reconcile;
use writ_testkit::BrokerKind;

const SYNC_TIMEOUT: Duration = Duration::from_secs(90);

fn synced(r: &Value) -> bool {
    r["syncState"] == "SYNCED"
}

/// Resumes a suspended broker even when the test fails halfway.
struct Resume<'a>(&'a writ_testkit::TestKafka);

impl Drop for Resume<'_> {
    fn drop(&mut self) {
        let _ = self.0.resume();
    }
}

/// Takes the broker away with `down`, writes through the edge, brings it
/// back with `up`, and checks every write reached the master exactly once.
async fn writes_during_an_outage_sync_once(world: &World, down: impl Fn(), up: impl Fn()) {
    const N: usize = 20;
    down();
    // Writes are answered at once from the local store while Kafka is away.
    let mut ids = Vec::new();
    for i in 0..N {
        ids.push(
            world
                .create(&format!("c-{i}"), &format!("Customer {i}"))
                .await,
        );
    }
    for id in &ids {
        assert_eq!(world.record(id).await["syncState"], "PENDING");
    }
    // Long enough for the relay's publishes to time out (message.timeout.ms
    // = 1.5 s in tests) and back off; short, because a suspended tansu also
    // stalls every other test sharing it. Not an assertion.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for id in &ids {
        assert_eq!(world.record(id).await["syncState"], "PENDING");
    }
    up();
    let items = world.wait_all_synced(N, SYNC_TIMEOUT).await;
    for r in &items {
        assert_eq!(r["canonicalId"], r["key"], "{r}");
        assert_eq!(r["masterVersion"], 1, "applied once: {r}");
        assert_eq!(r["lastError"], Value::Null);
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM customers")
        .fetch_one(world.pool())
        .await
        .unwrap();
    assert_eq!(rows, N as i64, "none lost");
    assert_eq!(world.history_count().await, N as i64, "none applied twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_made_while_the_broker_is_suspended_all_sync_exactly_once() {
    let kafka = writ_testkit::kafka().await;
    if kafka.kind() != BrokerKind::External || std::env::var("WRIT_TEST_TANSU_PID").is_err() {
        eprintln!("skipping: needs the suspendable broker of tests/run.sh");
        return;
    }
    let Some(world) = World::start("edgesusp", kafka, LocalDb::Sqlite, "").await else {
        return;
    };
    let guard = Resume(&world.kafka);
    writes_during_an_outage_sync_once(
        &world,
        || world.kafka.suspend().unwrap(),
        || world.kafka.resume().unwrap(),
    )
    .await;
    drop(guard);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_made_while_the_mock_broker_is_down_all_sync_exactly_once() {
    let kafka = writ_testkit::mock_kafka(1);
    let Some(world) = World::start("edgedown", kafka, LocalDb::Sqlite, "").await else {
        return;
    };
    writes_during_an_outage_sync_once(
        &world,
        || world.kafka.broker_down(1).unwrap(),
        || world.kafka.broker_up(1).unwrap(),
    )
    .await;
    world.stop().await;
}

/// Creates `customer`, waits until it is synced, changes its master row by
/// hand (bumping the version), then updates it at the edge: the update is
/// published expecting version 1 and conflicts with the master's 2.
async fn make_conflict(world: &World, customer: &str) -> String {
    let id = world.create(customer, "Ada").await;
    let r = world.wait_record(&id, SYNC_TIMEOUT, synced).await;
    assert_eq!(r["masterVersion"], 1, "{r}");
    sqlx::query(
        "UPDATE customers SET name = 'By hand', version = version + 1 WHERE customer_id = $1",
    )
    .bind(customer)
    .execute(world.pool())
    .await
    .unwrap();
    let (status, body) = world
        .call(
            Method::PUT,
            &format!("/v1/records/customers/{id}"),
            ACME_KEY,
            Some(&customer_json(customer, "Ada at the edge")),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["syncState"], "PENDING");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_wins_refreshes_the_local_copy_from_the_master() {
    let Some(local) = writ_testkit::postgres().await else {
        return;
    };
    let Some(world) = World::start(
        "edgemw",
        writ_testkit::kafka().await,
        LocalDb::Postgres(Box::new(local)),
        "conflict = \"master-wins\"",
    )
    .await
    else {
        return;
    };
    let id = make_conflict(&world, "c-1").await;
    let r = world
        .wait_record(&id, SYNC_TIMEOUT, |r| {
            synced(r) && r["data"]["name"] == "By hand"
        })
        .await;
    assert_eq!(r["masterVersion"], 2, "{r}");
    assert_eq!(r["lastError"]["code"], "MASTER_WON", "{r}");
    assert_eq!(world.master_row("c-1").await, Some(("By hand".into(), 2)));
    assert_eq!(
        world.history_count().await,
        2,
        "the local write never applied"
    );
    let (_, conflicts) = world
        .call(Method::GET, "/v1/conflicts?state=all", ACME_KEY, None)
        .await;
    let items = conflicts["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{conflicts}");
    assert_eq!(items[0]["resolution"], "master");
    assert_eq!(items[0]["masterVersion"], 2);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_wins_resends_against_the_masters_current_version() {
    let Some(world) = World::start(
        "edgelw",
        writ_testkit::kafka().await,
        LocalDb::Sqlite,
        "conflict = \"local-wins\"",
    )
    .await
    else {
        return;
    };
    let id = make_conflict(&world, "c-1").await;
    let r = world
        .wait_record(&id, SYNC_TIMEOUT, |r| synced(r) && r["masterVersion"] == 3)
        .await;
    assert_eq!(r["data"]["name"], "Ada at the edge");
    assert_eq!(
        world.master_row("c-1").await,
        Some(("Ada at the edge".into(), 3))
    );
    assert_eq!(
        world.history_count().await,
        3,
        "create, by hand, the resend"
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_conflicts_are_parked_until_someone_takes_a_side() {
    let Some(local) = writ_testkit::postgres().await else {
        return;
    };
    let Some(world) = World::start(
        "edgeman",
        writ_testkit::kafka().await,
        LocalDb::Postgres(Box::new(local)),
        "conflict = \"manual\"",
    )
    .await
    else {
        return;
    };
    let keep_local = make_conflict(&world, "c-1").await;
    let keep_master = make_conflict(&world, "c-2").await;
    for id in [&keep_local, &keep_master] {
        let r = world
            .wait_record(id, SYNC_TIMEOUT, |r| r["syncState"] == "CONFLICT")
            .await;
        assert_eq!(r["lastError"]["code"], "VERSION_MISMATCH", "{r}");
    }
    let (status, list) = world
        .call(Method::GET, "/v1/conflicts", ACME_KEY, None)
        .await;
    assert_eq!(status, 200);
    let items = list["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 2, "{list}");
    let conflict_of = |record: &str| {
        items
            .iter()
            .find(|c| c["recordId"] == record)
            .unwrap()
            .clone()
    };
    let c1 = conflict_of(&keep_local);
    assert_eq!(c1["masterVersion"], 2);
    assert_eq!(c1["local"]["name"], "Ada at the edge", "{c1}");
    assert_eq!(c1["state"], "OPEN");
    // Parked: nothing happens until someone decides, and nobody else can.
    let (_, other) = world
        .call(Method::GET, "/v1/conflicts", GLOBEX_KEY, None)
        .await;
    assert!(other["items"].as_array().unwrap().is_empty());
    let resolve = |c: &Value| format!("/v1/conflicts/{}/resolve", c["id"].as_str().unwrap());
    let (status, _) = world
        .call(
            Method::POST,
            &resolve(&c1),
            GLOBEX_KEY,
            Some(&json!({"take": "local"})),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(world.master_row("c-1").await, Some(("By hand".into(), 2)));

    let (status, body) = world
        .call(
            Method::POST,
            &resolve(&c1),
            ACME_KEY,
            Some(&json!({"take": "local"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["syncState"], "PENDING");
    world
        .wait_record(&keep_local, SYNC_TIMEOUT, |r| {
            synced(r) && r["masterVersion"] == 3
        })
        .await;
    assert_eq!(
        world.master_row("c-1").await,
        Some(("Ada at the edge".into(), 3))
    );

    let c2 = conflict_of(&keep_master);
    let (status, body) = world
        .call(
            Method::POST,
            &resolve(&c2),
            ACME_KEY,
            Some(&json!({"take": "master"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["syncState"], "SYNCED");
    assert_eq!(body["data"]["name"], "By hand");
    assert_eq!(body["masterVersion"], 2);
    assert_eq!(world.master_row("c-2").await, Some(("By hand".into(), 2)));
    // Resolved conflicts cannot be resolved again.
    let (status, _) = world
        .call(
            Method::POST,
            &resolve(&c2),
            ACME_KEY,
            Some(&json!({"take": "local"})),
        )
        .await;
    assert_eq!(status, 404);
    let (_, open) = world
        .call(Method::GET, "/v1/conflicts", ACME_KEY, None)
        .await;
    assert!(open["items"].as_array().unwrap().is_empty(), "{open}");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_finds_and_repairs_divergence_made_by_hand_in_the_master() {
    let Some(local) = writ_testkit::postgres().await else {
        return;
    };
    let Some(world) = World::start(
        "edgerec",
        writ_testkit::kafka().await,
        LocalDb::Postgres(Box::new(local)),
        "conflict = \"master-wins\"",
    )
    .await
    else {
        return;
    };
    let mut ids = Vec::new();
    for c in ["c-1", "c-2", "c-3", "c-4"] {
        ids.push(world.create(c, "Ada").await);
    }
    world.wait_all_synced(4, SYNC_TIMEOUT).await;
    let hand = [
        "UPDATE customers SET name = 'Diverged' WHERE customer_id = 'c-1'",
        "UPDATE customers SET name = 'Stale', version = version + 1 WHERE customer_id = 'c-2'",
        "DELETE FROM customers WHERE customer_id = 'c-3'",
    ];
    for sql in hand {
        sqlx::query(sql).execute(world.pool()).await.unwrap();
    }
    let master = writ_store::connect(world.edge_config.master.as_ref().unwrap())
        .await
        .unwrap();
    let collection = world.edge_config.collection("customers").unwrap();
    let report = reconcile::run(
        &world.store,
        master.as_ref(),
        "customers",
        collection,
        false,
    )
    .await
    .unwrap();
    let keys = |f: &[reconcile::Finding]| f.iter().map(|x| x.key.clone()).collect::<Vec<_>>();
    assert_eq!(report.checked, 4);
    assert_eq!(keys(&report.diverged), ["c-1"]);
    assert_eq!(report.diverged[0].fields, ["name"]);
    assert_eq!(keys(&report.stale), ["c-2"]);
    assert_eq!(report.stale[0].master_version, Some(2));
    assert_eq!(keys(&report.missing), ["c-3"]);
    assert_eq!(report.repaired, 0, "a dry run changes nothing");
    assert_eq!(world.record(&ids[0]).await["data"]["name"], "Ada");

    let repaired = reconcile::run(&world.store, master.as_ref(), "customers", collection, true)
        .await
        .unwrap();
    assert_eq!(
        (repaired.repaired, repaired.unrepaired),
        (3, 0),
        "{repaired}"
    );
    assert_eq!(world.record(&ids[0]).await["data"]["name"], "Diverged");
    let c2 = world.record(&ids[1]).await;
    assert_eq!(
        (c2["data"]["name"].clone(), c2["masterVersion"].clone()),
        (json!("Stale"), json!(2))
    );
    // The missing record was queued again and reaches the master.
    world.wait_record(&ids[2], SYNC_TIMEOUT, synced).await;
    assert_eq!(
        world.master_row("c-3").await.map(|r| r.0),
        Some("Ada".into())
    );

    let clean = reconcile::run(
        &world.store,
        master.as_ref(),
        "customers",
        collection,
        false,
    )
    .await
    .unwrap();
    assert!(clean.is_clean(), "{clean}");

    // The operator's command reports the same, from its own process.
    sqlx::query("UPDATE customers SET name = 'Again' WHERE customer_id = 'c-4'")
        .execute(world.pool())
        .await
        .unwrap();
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::io::Write::write_all(&mut file, world.edge_toml.as_bytes()).unwrap();
    let run = |repair: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_writ-edge"));
        cmd.args(["--config", file.path().to_str().unwrap()]).args([
            "reconcile",
            "--collection",
            "customers",
            "--json",
        ]);
        if repair {
            cmd.arg("--repair");
        }
        cmd.output().unwrap()
    };
    let out = run(false);
    assert_eq!(out.status.code(), Some(1), "drift exits 1");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["diverged"][0]["key"], "c-4", "{report}");
    let out = run(true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(world.record(&ids[3]).await["data"]["name"], "Again");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_republish_after_a_relay_crash_is_deduplicated_by_the_worker() {
    let Some(world) = World::start(
        "edgecrash",
        writ_testkit::kafka().await,
        LocalDb::Sqlite,
        "",
    )
    .await
    else {
        return;
    };
    for c in ["c-1", "c-2", "c-3"] {
        world.create(c, "Ada").await;
    }
    world.wait_all_synced(3, SYNC_TIMEOUT).await;
    assert_eq!(world.history_count().await, 3);
    // A relay that crashed after Kafka's ack but before marking its rows
    // leaves them pending: they are published again with the same ce_id.
    sqlx::query("UPDATE edge_outbox SET state = 'PENDING'")
        .execute(world.store.pool())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + SYNC_TIMEOUT;
    loop {
        let states = world.store.outbox_states().await.unwrap();
        if states == vec![("APPLIED".to_owned(), 3)] {
            let commands = support::read_topic(&world.settings, &world.layout.commands());
            if commands.len() == 6 {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stuck at {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let commands = support::read_topic(&world.settings, &world.layout.commands());
    let mut ids: Vec<&str> = commands
        .iter()
        .map(|r| r.headers.get_str("ce_id").unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        3,
        "each write was published twice with one ce_id"
    );
    assert_eq!(world.history_count().await, 3, "and applied once");
    let items = world.wait_all_synced(3, SYNC_TIMEOUT).await;
    assert!(items.iter().all(|r| r["masterVersion"] == 1));
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_write_keeps_its_error_until_a_fix_syncs() {
    let Some(world) =
        World::start("edgerej", writ_testkit::kafka().await, LocalDb::Sqlite, "").await
    else {
        return;
    };
    // The master's CHECK constraint refuses this name: a permanent rejection.
    let id = world.create("c-1", "poison").await;
    let r = world
        .wait_record(&id, SYNC_TIMEOUT, |r| r["syncState"] == "REJECTED")
        .await;
    assert!(r["lastError"]["code"].is_string(), "{r}");
    assert_eq!(r["lastError"]["retryable"], false);
    assert_eq!(world.master_row("c-1").await, None);
    let (status, body) = world
        .call(
            Method::PUT,
            &format!("/v1/records/customers/{id}"),
            ACME_KEY,
            Some(&customer_json("c-1", "Ada")),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let r = world.wait_record(&id, SYNC_TIMEOUT, synced).await;
    assert_eq!(r["lastError"], Value::Null);
    assert_eq!(world.master_row("c-1").await, Some(("Ada".into(), 1)));
    world.stop().await;
}
