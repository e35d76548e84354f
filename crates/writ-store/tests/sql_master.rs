//! The SQL master against real databases: every scenario runs on SQLite (a
//! temp file) and on PostgreSQL (`writ_testkit::postgres()`, skipped without one).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::Connection;
use time::OffsetDateTime;
use writ_core::{CommandEnvelope, ContentType};
use writ_store::sql::{Dialect, SqlMaster, SqlMasterConfig, TypeMapping, WriteMode};
use writ_store::{Command, Master, MasterError, Outcome};

const SOURCE: &str = "/tenants/acme/crm";

/// A database for one scenario; keep it alive while the scenario runs.
struct Env {
    dialect: Dialect,
    url: String,
    _pg: Option<writ_testkit::TestPostgres>,
    _dir: Option<tempfile::TempDir>,
}

const CUSTOMERS: &str = "CREATE TABLE customers (\
    customer_id TEXT PRIMARY KEY, \
    name TEXT NOT NULL, \
    email TEXT UNIQUE, \
    tier TEXT, \
    city TEXT, \
    seq BIGINT CHECK (seq IS NULL OR seq >= 0), \
    version BIGINT)";

impl Env {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("master.db").display()
        );
        let env = Self {
            dialect: Dialect::Sqlite,
            url,
            _pg: None,
            _dir: Some(dir),
        };
        env.exec(CUSTOMERS).await;
        env
    }

    async fn postgres() -> Option<Self> {
        let pg = writ_testkit::postgres().await?;
        let env = Self {
            dialect: Dialect::Postgres,
            url: pg.url().to_owned(),
            _pg: Some(pg),
            _dir: None,
        };
        env.exec(CUSTOMERS).await;
        Some(env)
    }

    async fn exec(&self, sql: &str) {
        match self.dialect {
            Dialect::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query(sql).execute(&mut c).await.unwrap();
            }
            Dialect::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query(sql).execute(&mut c).await.unwrap();
            }
        }
    }

    async fn count(&self, sql: &str) -> i64 {
        match self.dialect {
            Dialect::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
            }
            Dialect::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
            }
        }
    }

    fn config(&self) -> SqlMasterConfig {
        let mut c = SqlMasterConfig::new(&self.url);
        c.max_connections = 4;
        let columns: BTreeMap<String, String> = [
            ("customer_id", "customer_id"),
            ("name", "name"),
            ("email", "email"),
            ("tier", "tier"),
            ("city", "address.city"),
            ("seq", "seq"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        for (ty, mode) in [
            ("customer.upsert.v1", WriteMode::Upsert),
            ("customer.insert.v1", WriteMode::Insert),
            ("customer.update.v1", WriteMode::Update),
            ("customer.delete.v1", WriteMode::Delete),
        ] {
            c.types.insert(
                ty.to_owned(),
                TypeMapping {
                    table: "customers".into(),
                    mode,
                    key_columns: vec!["customer_id".into()],
                    columns: if mode == WriteMode::Delete {
                        BTreeMap::new()
                    } else {
                        columns.clone()
                    },
                    version_column: Some("version".into()),
                    canonical_id_column: None,
                },
            );
        }
        c.types.insert(
            "ghost.upsert.v1".into(),
            TypeMapping {
                table: "no_such_table".into(),
                mode: WriteMode::Upsert,
                key_columns: vec!["id".into()],
                columns: BTreeMap::new(),
                version_column: None,
                canonical_id_column: None,
            },
        );
        c
    }

    async fn master(&self) -> SqlMaster {
        SqlMaster::connect(self.dialect, &self.config())
            .await
            .unwrap()
    }
}

/// Runs a scenario on SQLite, then on PostgreSQL when one is available.
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(super::Env::sqlite().await).await;
            }
            #[tokio::test]
            async fn postgres() {
                let Some(env) = super::Env::postgres().await else {
                    return;
                };
                super::$name(env).await;
            }
        }
    };
}

fn cmd(id: &str, ty: &str, payload: Value, expected_version: Option<i64>) -> Command {
    let mut envelope = CommandEnvelope::new(id, SOURCE, ty, ContentType::Json);
    envelope.expected_version = expected_version;
    Command {
        submission_id: envelope.submission_id(),
        envelope,
        payload,
        fingerprint: format!("fp-{id}"),
    }
}

fn customer(key: &str, name: &str) -> Value {
    json!({"customer_id": key, "name": name, "email": format!("{key}@example.com"),
           "tier": "gold", "address": {"city": "Oslo"}, "seq": 1})
}

fn applied(version: i64, id: &str) -> Outcome {
    Outcome::Applied {
        canonical_id: Some(id.to_owned()),
        version: Some(version),
    }
}

fn code(o: &Outcome) -> &str {
    match o {
        Outcome::Rejected { code, .. } => code,
        Outcome::Conflict { .. } => "CONFLICT",
        Outcome::Applied { .. } => "APPLIED",
    }
}

async fn version_of(m: &SqlMaster, key: &str) -> Option<i64> {
    m.read("customer.upsert.v1", key)
        .await
        .unwrap()
        .and_then(|(_, v)| v)
}

both!(applies_once_and_answers_duplicates_from_the_inbox);
async fn applies_once_and_answers_duplicates_from_the_inbox(env: Env) {
    let m = env.master().await;
    let c = cmd("k1", "customer.upsert.v1", customer("c1", "Ada"), None);
    let first = m.apply(std::slice::from_ref(&c)).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].outcome, applied(1, "c1"));
    assert!(!first[0].duplicate);
    let again = m.apply(std::slice::from_ref(&c)).await.unwrap();
    assert_eq!(again[0].outcome, first[0].outcome);
    assert!(again[0].duplicate);
    // No second write: the version would be 2.
    assert_eq!(version_of(&m, "c1").await, Some(1));
    // A new master (e.g. after a restart) answers the same from the inbox.
    let m2 = env.master().await;
    let third = m2.apply(&[c]).await.unwrap();
    assert!(third[0].duplicate);
    assert_eq!(third[0].outcome, applied(1, "c1"));
    assert_eq!(
        m.kind(),
        if env.dialect == Dialect::Postgres {
            "postgres"
        } else {
            "sqlite"
        }
    );
}

both!(keeps_per_entity_order_inside_a_batch);
async fn keeps_per_entity_order_inside_a_batch(env: Env) {
    let m = env.master().await;
    let batch = vec![
        cmd("o1", "customer.upsert.v1", customer("c1", "First"), None),
        cmd("o2", "customer.upsert.v1", customer("c2", "Other"), None),
        cmd(
            "o3",
            "customer.update.v1",
            customer("c1", "Second"),
            Some(1),
        ),
        cmd("o4", "customer.upsert.v1", customer("c1", "Last"), None),
        // The same submission again inside the batch: answered like the first.
        cmd("o2", "customer.upsert.v1", customer("c2", "Other"), None),
    ];
    let r = m.apply(&batch).await.unwrap();
    assert_eq!(r[0].outcome, applied(1, "c1"));
    assert_eq!(r[1].outcome, applied(1, "c2"));
    assert_eq!(r[2].outcome, applied(2, "c1"));
    assert_eq!(r[3].outcome, applied(3, "c1"));
    assert_eq!(r[4].outcome, applied(1, "c2"));
    assert_eq!(
        r.iter().map(|r| r.duplicate).collect::<Vec<_>>(),
        [false, false, false, false, true]
    );
    let (row, version) = m.read("customer.upsert.v1", "c1").await.unwrap().unwrap();
    assert_eq!(version, Some(3));
    assert_eq!(row["name"], "Last");
    assert_eq!(row["address"]["city"], "Oslo");
    assert_eq!(row["seq"], 1);
    assert_eq!(m.read("customer.upsert.v1", "nobody").await.unwrap(), None);
}

both!(version_mismatch_is_a_conflict_and_leaves_the_row);
async fn version_mismatch_is_a_conflict_and_leaves_the_row(env: Env) {
    let m = env.master().await;
    let r = m
        .apply(&[cmd(
            "v0",
            "customer.upsert.v1",
            customer("c1", "Ada"),
            Some(0),
        )])
        .await
        .unwrap();
    assert_eq!(r[0].outcome, applied(1, "c1"));
    let batch = vec![
        cmd("v1", "customer.upsert.v1", customer("c1", "Stale"), Some(5)),
        cmd(
            "v2",
            "customer.update.v1",
            customer("c2", "Missing"),
            Some(3),
        ),
        cmd("v3", "customer.upsert.v1", customer("c3", "New"), Some(0)),
    ];
    let r = m.apply(&batch).await.unwrap();
    match &r[0].outcome {
        Outcome::Conflict {
            current_version, ..
        } => assert_eq!(*current_version, Some(1)),
        other => panic!("{other:?}"),
    }
    match &r[1].outcome {
        Outcome::Conflict {
            current_version, ..
        } => assert_eq!(*current_version, None),
        other => panic!("{other:?}"),
    }
    assert_eq!(r[2].outcome, applied(1, "c3"));
    let (row, v) = m.read("customer.upsert.v1", "c1").await.unwrap().unwrap();
    assert_eq!((row["name"].as_str(), v), (Some("Ada"), Some(1)));
    // The conflict is recorded: a redelivery answers it again.
    let again = m.apply(&batch[..1]).await.unwrap();
    assert!(again[0].duplicate);
    assert_eq!(again[0].outcome, r[0].outcome);
    // The right version applies.
    let ok = m
        .apply(&[cmd(
            "v4",
            "customer.upsert.v1",
            customer("c1", "Fresh"),
            Some(1),
        )])
        .await
        .unwrap();
    assert_eq!(ok[0].outcome, applied(2, "c1"));
}

both!(mode_rules_reject_with_stable_codes);
async fn mode_rules_reject_with_stable_codes(env: Env) {
    let m = env.master().await;
    let batch = vec![
        cmd("m1", "customer.insert.v1", customer("c1", "Ada"), None),
        cmd("m2", "customer.insert.v1", customer("c1", "Again"), None),
        cmd("m3", "customer.update.v1", customer("c9", "Nobody"), None),
        cmd(
            "m4",
            "customer.delete.v1",
            json!({"customer_id": "c1"}),
            None,
        ),
        cmd(
            "m5",
            "customer.delete.v1",
            json!({"customer_id": "c1"}),
            None,
        ),
        cmd("m6", "customer.upsert.v1", json!({"name": "no key"}), None),
    ];
    let r = m.apply(&batch).await.unwrap();
    let codes: Vec<&str> = r.iter().map(|r| code(&r.outcome)).collect();
    assert_eq!(
        codes,
        [
            "APPLIED",
            "DUPLICATE_KEY",
            "NOT_FOUND",
            "APPLIED",
            "NOT_FOUND",
            "MISSING_KEY"
        ]
    );
    // A delete reports the version it retired the entity at.
    assert_eq!(r[3].outcome, applied(2, "c1"));
    assert_eq!(m.read("customer.upsert.v1", "c1").await.unwrap(), None);
}

both!(a_constraint_violation_fails_the_batch_then_rejects_the_single_command);
async fn a_constraint_violation_fails_the_batch_then_rejects_the_single_command(env: Env) {
    let m = env.master().await;
    let mut bad = customer("c3", "Bad");
    bad["seq"] = json!(-1);
    let batch: Vec<Command> = (1..=5)
        .map(|n| {
            let p = if n == 3 {
                bad.clone()
            } else {
                customer(&format!("c{n}"), "Ok")
            };
            cmd(&format!("b{n}"), "customer.upsert.v1", p, None)
        })
        .collect();
    match m.apply(&batch).await {
        Err(MasterError::BatchFailed { message }) => {
            assert!(message.contains("CHECK_VIOLATION"), "{message}");
            assert!(
                !message.contains("-1"),
                "no payload values in errors: {message}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(env.count("SELECT COUNT(*) FROM customers").await, 0);
    assert_eq!(env.count("SELECT COUNT(*) FROM writ_inbox").await, 0);
    let single = m.apply(&batch[2..3]).await.unwrap();
    assert_eq!(code(&single[0].outcome), "CHECK_VIOLATION");
    assert!(!single[0].duplicate);
    let again = m.apply(&batch[2..3]).await.unwrap();
    assert!(again[0].duplicate);
    assert_eq!(again[0].outcome, single[0].outcome);
    // The rest of the batch applies, and the rejected one stays rejected.
    let rest = m.apply(&batch).await.unwrap();
    assert_eq!(
        rest.iter().map(|r| r.duplicate).collect::<Vec<_>>(),
        [false, false, true, false, false]
    );
    assert_eq!(env.count("SELECT COUNT(*) FROM customers").await, 4);
}

both!(a_missing_table_is_misconfigured);
async fn a_missing_table_is_misconfigured(env: Env) {
    let m = env.master().await;
    assert!(m.handles("ghost.upsert.v1"));
    assert!(!m.handles("unknown.v1"));
    let r = m
        .apply(&[cmd("g1", "ghost.upsert.v1", json!({"id": 1}), None)])
        .await;
    assert!(matches!(r, Err(MasterError::Misconfigured { .. })), "{r:?}");
    let r = m
        .apply(&[cmd("u1", "unknown.v1", json!({"id": 1}), None)])
        .await;
    assert!(matches!(r, Err(MasterError::Misconfigured { .. })), "{r:?}");
    // Nothing was recorded for the failed command.
    assert_eq!(env.count("SELECT COUNT(*) FROM writ_inbox").await, 0);
}

both!(expire_inbox_deletes_old_rows_only);
async fn expire_inbox_deletes_old_rows_only(env: Env) {
    let m = env.master().await;
    let old: Vec<Command> = (0..3)
        .map(|n| {
            cmd(
                &format!("e{n}"),
                "customer.upsert.v1",
                customer(&format!("c{n}"), "A"),
                None,
            )
        })
        .collect();
    m.apply(&old).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let cutoff = OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::from_millis(50)).await;
    m.apply(&[cmd("e9", "customer.upsert.v1", customer("c9", "B"), None)])
        .await
        .unwrap();
    assert_eq!(
        m.expire_inbox(cutoff - Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    assert_eq!(m.expire_inbox(cutoff).await.unwrap(), 3);
    assert_eq!(env.count("SELECT COUNT(*) FROM writ_inbox").await, 1);
    // Past the dedupe window a redelivery is new again (that is the window's meaning).
    let r = m.apply(&old[..1]).await.unwrap();
    assert!(!r[0].duplicate);
    assert_eq!(r[0].outcome, applied(2, "c0"));
}

/// Applies as the worker does: a retryable failure is retried after a pause.
/// Two transactions upserting the same new rows can deadlock in PostgreSQL
/// (its speculative insertions wait on each other), which is retryable.
async fn apply_retrying(m: &SqlMaster, batch: &[Command]) -> Vec<writ_store::ApplyResult> {
    use writ_core::Classified;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match m.apply(batch).await {
            Ok(results) => return results,
            Err(e) if e.is_retryable() && attempt < 10 => {
                tokio::time::sleep(Duration::from_millis(20 * attempt)).await
            }
            Err(e) => panic!("attempt {attempt}: {e:?}"),
        }
    }
}

both!(two_racing_workers_apply_exactly_once);
async fn two_racing_workers_apply_exactly_once(env: Env) {
    let a = env.master().await;
    let b = env.master().await;
    let batch: Vec<Command> = (0..200)
        .map(|n| {
            cmd(
                &format!("r{n}"),
                "customer.upsert.v1",
                customer(&format!("c{}", n % 50), "Racer"),
                None,
            )
        })
        .collect();
    let (ra, rb) = tokio::join!(apply_retrying(&a, &batch), apply_retrying(&b, &batch));
    for (x, y) in ra.iter().zip(&rb) {
        assert!(
            x.duplicate != y.duplicate,
            "exactly one applies: {x:?} {y:?}"
        );
        assert_eq!(x.outcome, y.outcome);
    }
    // Each of the 50 customers got exactly its 4 commands.
    for n in 0..50 {
        assert_eq!(version_of(&a, &format!("c{n}")).await, Some(4));
    }
    assert_eq!(env.count("SELECT COUNT(*) FROM writ_inbox").await, 200);
}

#[tokio::test]
async fn postgres_connection_failure_is_unavailable() {
    // Nothing listens on port 1: no server needed.
    let mut c = SqlMasterConfig::new("postgres://writ@127.0.0.1:1/writ");
    c.acquire_timeout_ms = 2_000;
    let started = Instant::now();
    let r = SqlMaster::connect(Dialect::Postgres, &c).await;
    assert!(matches!(r, Err(MasterError::Unavailable { .. })), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn invalid_identifiers_are_refused_at_connect() {
    let env = Env::sqlite().await;
    let mut c = env.config();
    c.types.get_mut("customer.upsert.v1").unwrap().table = "customers; DROP TABLE x".into();
    let r = SqlMaster::connect(Dialect::Sqlite, &c).await;
    assert!(matches!(r, Err(MasterError::Misconfigured { .. })), "{r:?}");
    let mut c = env.config();
    c.inbox_table = "inbox\"".into();
    let r = SqlMaster::connect(Dialect::Sqlite, &c).await;
    assert!(matches!(r, Err(MasterError::Misconfigured { .. })), "{r:?}");
}

/// Throughput on PostgreSQL: 50k upserts over 1k entities in batches of
/// 1000, against a minimal loop (one set-based inbox insert + one set-based
/// upsert per batch). Run: `tests/run.sh cargo test --release -p writ-store
/// --test sql_master -- --ignored --nocapture throughput`.
#[tokio::test]
#[ignore]
async fn throughput_postgres() {
    let Some(env) = Env::postgres().await else {
        return;
    };
    const TOTAL: usize = 50_000;
    const BATCH: usize = 1_000;
    let m = env.master().await;
    let commands: Vec<Command> = (0..TOTAL)
        .map(|n| {
            let mut p = customer(&format!("c{}", n % 1_000), "Name");
            p["email"] = json!(null);
            p["seq"] = json!(n);
            cmd(&format!("t{n}"), "customer.upsert.v1", p, None)
        })
        .collect();
    // Warm up the pool and statement caches.
    m.apply(&commands[..BATCH]).await.unwrap();
    let started = Instant::now();
    for chunk in commands[BATCH..].chunks(BATCH) {
        m.apply(chunk).await.unwrap();
    }
    let writ_rate = (TOTAL - BATCH) as f64 / started.elapsed().as_secs_f64();

    // The minimal loop: no claim/duplicate logic, no outcomes recorded.
    env.exec("CREATE TABLE bench_inbox (id uuid PRIMARY KEY, recorded_at timestamptz NOT NULL DEFAULT now())")
        .await;
    env.exec("CREATE TABLE bench (customer_id text PRIMARY KEY, name text, tier text, city text, seq bigint, version bigint)")
        .await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&env.url)
        .await
        .unwrap();
    let minimal = |chunk: &[Command]| {
        let pool = pool.clone();
        let ids: Vec<uuid::Uuid> = chunk.iter().map(|c| c.submission_id).collect();
        let keys: Vec<String> = chunk
            .iter()
            .map(|c| c.payload["customer_id"].as_str().unwrap().to_owned())
            .collect();
        let names: Vec<String> = chunk
            .iter()
            .map(|c| c.payload["name"].as_str().unwrap().to_owned())
            .collect();
        let tiers: Vec<String> = chunk
            .iter()
            .map(|c| c.payload["tier"].as_str().unwrap().to_owned())
            .collect();
        let cities: Vec<String> = chunk
            .iter()
            .map(|c| c.payload["address"]["city"].as_str().unwrap().to_owned())
            .collect();
        let seqs: Vec<i64> = chunk
            .iter()
            .map(|c| c.payload["seq"].as_i64().unwrap())
            .collect();
        async move {
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("INSERT INTO bench_inbox (id) SELECT * FROM UNNEST($1::uuid[])")
                .bind(&ids)
                .execute(&mut *tx)
                .await
                .unwrap();
            // One row per key per statement: take the last command of each key.
            let mut last = std::collections::HashMap::new();
            for (i, k) in keys.iter().enumerate() {
                last.insert(k.clone(), i);
            }
            let idx: Vec<usize> = last.into_values().collect();
            let pick = |v: &Vec<String>| idx.iter().map(|&i| v[i].clone()).collect::<Vec<_>>();
            let seqs: Vec<i64> = idx.iter().map(|&i| seqs[i]).collect();
            sqlx::query(
                "INSERT INTO bench (customer_id, name, tier, city, seq, version) \
                 SELECT k, n, t, c, s, 1 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[]) AS u(k, n, t, c, s) \
                 ON CONFLICT (customer_id) DO UPDATE SET name = EXCLUDED.name, tier = EXCLUDED.tier, \
                 city = EXCLUDED.city, seq = EXCLUDED.seq, version = bench.version + 1",
            )
            .bind(pick(&keys))
            .bind(pick(&names))
            .bind(pick(&tiers))
            .bind(pick(&cities))
            .bind(seqs)
            .execute(&mut *tx)
            .await
            .unwrap();
            tx.commit().await.unwrap();
        }
    };
    minimal(&commands[..BATCH]).await;
    let started = Instant::now();
    for chunk in commands[BATCH..].chunks(BATCH) {
        minimal(chunk).await;
    }
    let minimal_rate = (TOTAL - BATCH) as f64 / started.elapsed().as_secs_f64();
    println!(
        "throughput: writ SqlMaster {writ_rate:.0} commands/s, minimal loop {minimal_rate:.0} commands/s ({:.0}%)",
        100.0 * writ_rate / minimal_rate
    );
}

/// The PostgreSQL fast path (unversioned upserts as typed arrays) writes the
/// same rows and answers the same outcomes as the general JSON path, for a
/// nested path, integer columns (given as numbers and as strings), NULLs,
/// JSON values and keys whose table text differs from the payload's (`0010`).
#[tokio::test]
async fn postgres_fast_upsert_matches_the_json_path() {
    let Some(env) = Env::postgres().await else {
        return;
    };
    env.exec(
        "CREATE TABLE profiles (id bigint PRIMARY KEY, city varchar(20), n integer, \
         note text, doc jsonb, meta json, version bigint)",
    )
    .await;
    let mut c = env.config();
    let columns: BTreeMap<String, String> = [
        ("id", "id"),
        ("city", "address.city"),
        ("n", "n"),
        ("note", "note"),
        ("doc", "doc"),
        ("meta", "meta"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect();
    c.types.insert(
        "profile.upsert.v1".into(),
        TypeMapping {
            table: "profiles".into(),
            mode: WriteMode::Upsert,
            key_columns: vec!["id".into()],
            columns,
            version_column: Some("version".into()),
            canonical_id_column: None,
        },
    );
    let m = SqlMaster::connect(Dialect::Postgres, &c).await.unwrap();
    let payloads = |base: i64| {
        vec![
            json!({"id": base + 7, "address": {"city": "Oslo"}, "n": 42, "note": null,
                   "doc": {"b": [1, 2], "a": {"x": true}}, "meta": {"z": 1, "a": "x"}}),
            json!({"id": (base + 8).to_string(), "address": {"city": "Bergen"}, "n": "5",
                   "doc": "just text", "meta": null}),
            json!({"id": base + 9, "n": -1, "note": 3.5, "doc": null, "meta": [1, "two"]}),
            json!({"id": format!("00{}", base + 10), "address": {"city": null}, "n": 0,
                   "note": true, "doc": 12}),
        ]
    };
    let batch = |prefix: &str, base: i64| -> Vec<Command> {
        payloads(base)
            .into_iter()
            .enumerate()
            .map(|(n, p)| cmd(&format!("{prefix}{n}"), "profile.upsert.v1", p, None))
            .collect()
    };
    let canonical = |base: i64| -> Vec<Outcome> {
        (7..=10)
            .map(|n| applied(1, &(base + n).to_string()))
            .collect()
    };

    // Fast path: no member carries an expected version.
    let fast = m.apply(&batch("f", 0)).await.unwrap();
    let got: Vec<Outcome> = fast.iter().map(|r| r.outcome.clone()).collect();
    assert_eq!(got, canonical(0));

    // JSON path: one member with an expected version takes the whole group there.
    let mut slow = batch("s", 100);
    slow.push(cmd(
        "s-forced",
        "profile.upsert.v1",
        json!({"id": 999}),
        Some(0),
    ));
    let got: Vec<Outcome> = m
        .apply(&slow)
        .await
        .unwrap()
        .iter()
        .map(|r| r.outcome.clone())
        .collect();
    let mut want = canonical(100);
    want.push(applied(1, "999"));
    assert_eq!(got, want);

    // Same rows, column by column (json compared as text: whitespace too).
    assert_eq!(
        env.count(
            "SELECT COUNT(*) FROM profiles a JOIN profiles b ON b.id = a.id + 100 \
             WHERE a.id < 100 AND (to_jsonb(a) - 'id') = (to_jsonb(b) - 'id') \
             AND a.meta::text IS NOT DISTINCT FROM b.meta::text"
        )
        .await,
        4
    );
    let (row, v) = m.read("profile.upsert.v1", "7").await.unwrap().unwrap();
    assert_eq!(v, Some(1));
    assert_eq!(row["address"]["city"], "Oslo");
    assert_eq!(row["n"], 42);
    assert_eq!(row["note"], Value::Null);
    assert_eq!(row["doc"], json!({"a": {"x": true}, "b": [1, 2]}));
    let (row, _) = m.read("profile.upsert.v1", "8").await.unwrap().unwrap();
    assert_eq!(
        (row["n"].clone(), row["doc"].clone()),
        (json!(5), json!("just text"))
    );

    // Updates bump versions, several waves per entity in one batch.
    let again = vec![
        cmd("u1", "profile.upsert.v1", json!({"id": 7, "n": 1}), None),
        cmd("u2", "profile.upsert.v1", json!({"id": 9}), None),
        cmd("u3", "profile.upsert.v1", json!({"id": "7", "n": 2}), None),
    ];
    let got: Vec<Outcome> = m
        .apply(&again)
        .await
        .unwrap()
        .iter()
        .map(|r| r.outcome.clone())
        .collect();
    assert_eq!(got, [applied(2, "7"), applied(2, "9"), applied(3, "7")]);
    let (row, _) = m.read("profile.upsert.v1", "7").await.unwrap().unwrap();
    assert_eq!(
        (row["n"].clone(), row["doc"].clone()),
        (json!(2), Value::Null)
    );

    // A value too long for varchar(20) fails like on the JSON path (no silent truncation).
    let long = cmd(
        "long",
        "profile.upsert.v1",
        json!({"id": 50, "address": {"city": "x".repeat(30)}}),
        None,
    );
    let pair = [
        long.clone(),
        cmd("ok", "profile.upsert.v1", json!({"id": 51}), None),
    ];
    let r = m.apply(&pair).await;
    assert!(matches!(r, Err(MasterError::BatchFailed { .. })), "{r:?}");
    let single = m.apply(&[long]).await.unwrap();
    assert!(
        matches!(single[0].outcome, Outcome::Rejected { .. }),
        "{single:?}"
    );
}
