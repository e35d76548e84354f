//! `cargo bench -p writ-worker --bench apply` (run it under `tests/run.sh`,
//! which provides the broker and PostgreSQL): the worker's sustained apply
//! rate next to baselines measured in the same run on the same machine.
//!
//! - (a)  ceiling: the database work writ does per command — one inbox row plus
//!   the upsert — issued straight from memory in transactions of the same
//!   batch size, set-based (UNNEST), no Kafka, no writ runtime;
//! - (a′) the upsert alone, no inbox: what exactly-once costs;
//! - (a″) writ's PostgreSQL master adapter applying the same commands from
//!   memory: what the adapter adds to (a), and what the runtime adds to it;
//! - (b)  raw consume of the loaded topic, nothing applied;
//! - (a‴) (a) again, with batches cut from the commands in the order (b)
//!   received them — a partition's run at a time, as the worker's batches
//!   are — so that c/a‴ compares the same statements with and without writ;
//! - (c)  `writ-worker` (bulk profile, separate process) end to end: decode,
//!   apply with inbox, status events produced and acknowledged, offsets
//!   committed — run until the group's committed offsets reach the end, and
//!   timed by its status events: from the last of its first batch to the
//!   last one (offsets are committed once a second, too coarse a clock for
//!   a 4-second run; that rate is printed as well).
//!
//! `WRIT_BENCH_N` (default 200000) commands over `WRIT_BENCH_ENTITIES`
//! (default 1000) entities, ~200-byte JSON payloads, batch `WRIT_BENCH_BATCH`
//! (default 5000). `WRIT_BENCH_BROKER=mock` puts the broker side on
//! librdkafka's mock cluster in this process (it keeps to the fetch limits,
//! which the test broker does not); PostgreSQL still comes from `tests/run.sh`.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::TopicPartitionList;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;
use writ_core::topics::TopicSettings;
use writ_core::{CommandEnvelope, ContentType, TopicLayout};
use writ_kafka::{
    BatchConsumer, BatchLimits, KafkaSettings, OutgoingRecord, RecordProducer, TopicAdmin,
};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const TABLE_DDL: &str = "CREATE TABLE customers (customer_id text PRIMARY KEY, name text NOT NULL, \
    email text NOT NULL, tier text, phone text, city text, seq bigint, version bigint NOT NULL DEFAULT 0)";

struct Cmd {
    id: Uuid,
    customer: String,
    name: String,
    email: String,
    tier: String,
    phone: String,
    city: String,
    seq: i64,
    payload: serde_json::Value,
}

fn commands(n: usize, entities: usize) -> Vec<Cmd> {
    (0..n)
        .map(|i| {
            let customer = format!("cust-{:05}", i % entities);
            let seq = (i / entities) as i64 + 1;
            let name = format!("Customer number {i} of the benchmark");
            let email = format!("customer.{}@bench.example.com", i % entities);
            let payload = json!({
                "customer_id": customer, "name": name, "email": email, "tier": "GOLD",
                "phone": "+31 20 555 0100",
                "address": {"street": "Keizersgracht 123", "city": "Amsterdam", "postal_code": "1015 CJ", "country": "NL"},
                "seq": seq
            });
            Cmd {
                id: writ_core::submission_id("/tenants/bench/loader", &format!("bench-{i}")),
                customer,
                name,
                email,
                tier: "GOLD".into(),
                phone: "+31 20 555 0100".into(),
                city: "Amsterdam".into(),
                seq,
                payload,
            }
        })
        .collect()
}

/// Splits a batch into waves: each entity at most once per wave, in order.
fn waves<'c>(batch: &[&'c Cmd]) -> Vec<Vec<&'c Cmd>> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut out: Vec<Vec<&Cmd>> = Vec::new();
    for c in batch {
        let w = seen.entry(c.customer.as_str()).or_insert(0);
        if out.len() <= *w {
            out.push(Vec::new());
        }
        out[*w].push(c);
        *w += 1;
    }
    out
}

async fn upsert_wave(tx: &mut sqlx::PgConnection, wave: &[&Cmd]) {
    let col = |f: fn(&Cmd) -> String| wave.iter().map(|c| f(c)).collect::<Vec<String>>();
    sqlx::query(
        "INSERT INTO customers (customer_id, name, email, tier, phone, city, seq, version) \
         SELECT u.id, u.name, u.email, u.tier, u.phone, u.city, u.seq, 1 \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int8[]) \
         AS u(id, name, email, tier, phone, city, seq) \
         ON CONFLICT (customer_id) DO UPDATE SET name = EXCLUDED.name, email = EXCLUDED.email, \
         tier = EXCLUDED.tier, phone = EXCLUDED.phone, city = EXCLUDED.city, seq = EXCLUDED.seq, \
         version = customers.version + 1",
    )
    .bind(col(|c| c.customer.clone()))
    .bind(col(|c| c.name.clone()))
    .bind(col(|c| c.email.clone()))
    .bind(col(|c| c.tier.clone()))
    .bind(col(|c| c.phone.clone()))
    .bind(col(|c| c.city.clone()))
    .bind(wave.iter().map(|c| c.seq).collect::<Vec<i64>>())
    .execute(tx)
    .await
    .unwrap();
}

/// (a) and (a′): the database work alone, from memory.
async fn ceiling(pool: &PgPool, cmds: &[&Cmd], batch: usize, with_inbox: bool) -> f64 {
    sqlx::raw_sql(&format!("DROP TABLE IF EXISTS customers; DROP TABLE IF EXISTS bench_inbox; {TABLE_DDL}; \
        CREATE TABLE bench_inbox (submission_id uuid PRIMARY KEY, state smallint NOT NULL, canonical_id text, \
        version bigint, error_code text, error_message text, fingerprint text NOT NULL, \
        recorded_at timestamptz NOT NULL DEFAULT now()); \
        CREATE INDEX ON bench_inbox USING brin (recorded_at)"))
        .execute(pool)
        .await
        .unwrap();
    let started = Instant::now();
    for chunk in cmds.chunks(batch) {
        let mut tx = pool.begin().await.unwrap();
        if with_inbox {
            let ids: Vec<Uuid> = chunk.iter().map(|c| c.id).collect();
            let fps: Vec<String> = chunk
                .iter()
                .map(|c| writ_core::payload_fingerprint(&c.payload))
                .collect();
            let cids: Vec<&str> = chunk.iter().map(|c| c.customer.as_str()).collect();
            sqlx::query(
                "INSERT INTO bench_inbox (submission_id, state, canonical_id, fingerprint) \
                 SELECT u.id, 1, u.cid, u.fp FROM UNNEST($1::uuid[], $2::text[], $3::text[]) AS u(id, fp, cid) \
                 ON CONFLICT (submission_id) DO NOTHING",
            )
            .bind(&ids)
            .bind(&fps)
            .bind(&cids)
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        for wave in waves(chunk) {
            upsert_wave(&mut tx, &wave).await;
        }
        tx.commit().await.unwrap();
    }
    cmds.len() as f64 / started.elapsed().as_secs_f64()
}

/// (a″): writ's own SQL master adapter applying the same commands, decoded
/// in memory, in batches of the same size — no Kafka, no runtime. Next to (a)
/// it shows what the adapter adds to the database work; next to (c), what
/// the runtime around it costs.
async fn adapter_alone(master: &dyn writ_store::Master, cmds: &[Cmd], batch: usize) -> f64 {
    let commands: Vec<writ_store::Command> = cmds
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let envelope = CommandEnvelope::new(
                format!("bench-{i}"),
                "/tenants/bench/loader",
                "customer.upsert.v1",
                ContentType::Json,
            )
            .with_subject(&c.customer);
            writ_store::Command {
                submission_id: envelope.submission_id(),
                fingerprint: writ_core::payload_fingerprint(&c.payload),
                envelope,
                payload: c.payload.clone(),
            }
        })
        .collect();
    let started = Instant::now();
    for chunk in commands.chunks(batch) {
        master.apply(chunk).await.expect("adapter apply");
    }
    cmds.len() as f64 / started.elapsed().as_secs_f64()
}

/// (b): consume the topic without applying. Also returns the commands'
/// indexes in the order the consumer received them (from their `ce_id`,
/// `bench-<index>`): the order a worker's batches have.
async fn raw_consume(settings: &KafkaSettings, topic: &str, n: usize) -> (f64, Vec<usize>) {
    let consumer =
        BatchConsumer::new(settings, &format!("bench-raw-{}", Uuid::new_v4()), &[topic]).unwrap();
    let mut order = Vec::with_capacity(n);
    let mut seen = 0;
    let mut started = None;
    while seen < n {
        let batch = consumer.next_batch(BatchLimits::BULK).await.unwrap();
        started.get_or_insert_with(Instant::now);
        seen += batch.len();
        order.extend(batch.iter().filter_map(|r| {
            r.headers
                .get_str(writ_core::cloudevents::ID)?
                .strip_prefix("bench-")?
                .parse::<usize>()
                .ok()
        }));
    }
    // The first batch's wait includes the group join; time from the first record.
    let rate = n as f64 / started.unwrap().elapsed().as_secs_f64();
    // (a‴) would otherwise quietly measure fewer commands than (a).
    assert_eq!(
        order.len(),
        seen,
        "every loaded record carries its command's `ce_id` (bench-<index>)"
    );
    (rate, order)
}

fn committed_total(settings: &KafkaSettings, group: &str, topic: &str, partitions: i32) -> i64 {
    let consumer: BaseConsumer = settings.consumer_config(group).unwrap().create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    committed
        .elements()
        .iter()
        .filter_map(|e| e.offset().to_raw())
        .filter(|o| *o > 0)
        .sum()
}

/// Every record timestamp (ms) on `topic`, sorted: when the worker produced
/// each status event, i.e. when each command's apply was done. The topic is
/// read until quiet, as high watermarks are not exact on every broker.
fn record_times_ms(settings: &KafkaSettings, topic: &str) -> Vec<i64> {
    let mut times: Vec<i64> = writ_kafka::snapshot::read_topic(settings, topic)
        .unwrap()
        .iter()
        .map(|r| r.timestamp_ms.expect("records carry a timestamp"))
        .collect();
    times.sort_unstable();
    times
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// CPU seconds (user + system) used so far by each live process whose
/// command name is one of `names`, summed per name.
fn cpu_seconds_by_command(names: &[&str]) -> Vec<f64> {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut sums = vec![0.0; names.len()];
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ..." — comm may hold spaces, so split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let Some(slot) = names.iter().position(|n| comm.starts_with(n)) else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the comm.
        let used: f64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
            .sum();
        sums[slot] += used / ticks;
    }
    sums
}

/// The upserts of `customers` this database has run since its statistics
/// were last reset (from `pg_stat_statements`, which `tests/run.sh` loads):
/// how many, and how many rows each wrote on average. Per-entity order costs
/// one statement per repeat of an entity in a batch, so this shows the shape
/// of the batches each phase applied.
async fn upsert_statements(pool: &PgPool) -> String {
    let row: Result<(i64, f64), sqlx::Error> = sqlx::query_as(
        "SELECT coalesce(sum(calls), 0)::int8, coalesce(sum(rows)::float8 / nullif(sum(calls), 0), 0) \
         FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid \
         WHERE d.datname = current_database() \
         AND s.query ILIKE '%INSERT INTO %customers%ON CONFLICT%DO UPDATE%'",
    )
    .fetch_one(pool)
    .await;
    match row {
        Ok((calls, rows)) => format!("{calls} upserts of {rows:.0} rows on average"),
        Err(_) => "statement counts unavailable (pg_stat_statements not loaded)".into(),
    }
}

/// Readies the database for a timed phase: a checkpoint, then fresh
/// `pg_stat_statements` counts. Each phase writes a few hundred MB of WAL, so
/// without the checkpoint the WAL-triggered one (`max_wal_size`) fell into a
/// later phase — (c), in every run checked — and charged it for the WAL of
/// the phases before it.
async fn begin_phase(pool: &PgPool) {
    sqlx::raw_sql("CHECKPOINT")
        .execute(pool)
        .await
        .expect("CHECKPOINT (the benchmark's database user must be allowed to)");
    let _ = sqlx::raw_sql(
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT pg_stat_statements_reset()",
    )
    .execute(pool)
    .await;
}

/// Sums of `writ_batch_stage_duration_seconds` per stage, from the worker's /metrics.
async fn stage_seconds(port: u16) -> String {
    let Ok(resp) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await else {
        return "(metrics unavailable)".into();
    };
    let text = resp.text().await.unwrap_or_default();
    if let Ok(path) = std::env::var("WRIT_BENCH_METRICS_DUMP") {
        let _ = std::fs::write(path, &text);
    }
    let value = |prefix: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix))?
            .rsplit(' ')
            .next()?
            .parse()
            .ok()
    };
    let stages = text
        .lines()
        .filter(|l| l.starts_with("writ_batch_stage_duration_seconds_sum"))
        .filter_map(|l| {
            let stage = l.split("stage=\"").nth(1)?.split('"').next()?;
            let secs: f64 = l.rsplit(' ').next()?.parse().ok()?;
            Some(format!("{stage}={secs:.2}"))
        })
        .collect::<Vec<_>>()
        .join(" ");
    let batches = match (
        value("writ_batch_records_count"),
        value("writ_batch_records_sum"),
    ) {
        (Some(count), Some(sum)) if count > 0.0 => {
            format!(
                "; {count:.0} master applies of {:.0} commands on average",
                sum / count
            )
        }
        _ => String::new(),
    };
    let waited = value("writ_rate_limit_wait_seconds_sum")
        .map_or(String::new(), |w| format!("; rate-limit wait {w:.2} s"));
    format!("{stages}{batches}{waited}")
}

/// The worker's configuration for the benchmark's master database.
fn worker_config(
    layout: &TopicLayout,
    batch: usize,
    bootstrap: &str,
    url: &str,
    port: u16,
) -> String {
    format!(
        r#"domain = "{domain}"
profile = "bulk"
listen = "127.0.0.1:{port}"
drain_timeout_ms = 4000
[batch]
max_records = {batch}
[kafka]
bootstrap_servers = "{bootstrap}"
properties = {{ "session.timeout.ms" = "6000"{extra} }}
[master]
kind = "postgres"
url = "{url}"
max_connections = 4
[master.types."customer.upsert.v1"]
table = "customers"
mode = "upsert"
key_columns = ["customer_id"]
columns = {{ customer_id = "customer_id", name = "name", email = "email", tier = "tier", phone = "phone", city = "address.city", seq = "seq" }}
version_column = "version"
"#,
        domain = layout.domain(),
        // Set but empty means none (it would otherwise leave a dangling comma).
        extra = std::env::var("WRIT_BENCH_WORKER_PROPERTIES")
            .ok()
            .filter(|p| !p.trim().is_empty())
            .map(|p| format!(", {p}"))
            .unwrap_or_default(),
    )
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let n = env_usize("WRIT_BENCH_N", 200_000);
    let entities = env_usize("WRIT_BENCH_ENTITIES", 1000);
    let batch = env_usize("WRIT_BENCH_BATCH", 5000);
    let partitions = 6;
    // WRIT_BENCH_BROKER=mock runs the broker side on librdkafka's mock
    // cluster in this process instead of the broker of tests/run.sh: a broker
    // that bounds its fetch responses as Apache Kafka does (tansu answers the
    // first fetch of a backlog with most of it, whatever the limits say).
    let embedded = std::env::var("WRIT_BENCH_BROKER")
        .is_ok_and(|v| v == "mock")
        .then(|| writ_testkit::mock_kafka(1));
    let Some(bootstrap) = embedded
        .as_ref()
        .map(|k| k.bootstrap_servers().to_owned())
        .or_else(|| {
            std::env::var("WRIT_TEST_KAFKA")
                .ok()
                .filter(|v| v != "mock")
        })
    else {
        eprintln!("the apply benchmark needs a real broker and PostgreSQL: run `tests/run.sh cargo bench -p writ-worker --bench apply`");
        return;
    };
    let Some(pg) = writ_testkit::postgres().await else {
        return;
    };
    let settings = KafkaSettings::new(&bootstrap).with("session.timeout.ms", "6000");
    let layout = TopicLayout::new(&writ_testkit::unique_name("bench")).unwrap();
    let specs = layout.specs(&TopicSettings {
        partitions,
        status_partitions: partitions,
        ..Default::default()
    });
    match &embedded {
        // The mock cluster answers no CreateTopics requests.
        Some(kafka) => {
            for spec in &specs {
                kafka
                    .create_mock_topic(&spec.name, spec.partitions)
                    .unwrap();
            }
        }
        None => {
            TopicAdmin::new(&settings)
                .unwrap()
                .ensure_topics(&specs)
                .await
                .unwrap();
        }
    }

    let cmds = commands(n, entities);
    let avg_payload: usize = cmds
        .iter()
        .take(1000)
        .map(|c| c.payload.to_string().len())
        .sum::<usize>()
        / 1000;
    println!(
        "writ apply benchmark: N={n} entities={entities} batch={batch} payload≈{avg_payload} B"
    );

    // Load the topic.
    let producer = RecordProducer::new(&settings.clone().with("linger.ms", "20")).unwrap();
    let started = Instant::now();
    let records: Vec<OutgoingRecord> = cmds
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let e = CommandEnvelope::new(
                format!("bench-{i}"),
                "/tenants/bench/loader",
                "customer.upsert.v1",
                ContentType::Json,
            )
            .with_subject(&c.customer);
            OutgoingRecord::command(layout.bulk(), &e, serde_json::to_vec(&c.payload).unwrap())
        })
        .collect();
    for chunk in records.chunks(20_000) {
        for r in producer.send_all(chunk).await {
            r.unwrap();
        }
    }
    drop(records);
    println!(
        "  load:               {:>9.0} commands/s (producer, acks=all)",
        n as f64 / started.elapsed().as_secs_f64()
    );

    let in_load_order: Vec<&Cmd> = cmds.iter().collect();
    begin_phase(pg.pool()).await;
    let a = ceiling(pg.pool(), &in_load_order, batch, true).await;
    println!(
        "  (a)  ceiling:       {a:>9.0} commands/s (inbox row + upsert, set-based, batch {batch}; {})",
        upsert_statements(pg.pool()).await
    );
    begin_phase(pg.pool()).await;
    let a_prime = ceiling(pg.pool(), &in_load_order, batch, false).await;
    println!(
        "  (a') upsert alone:  {a_prime:>9.0} commands/s (exactly-once costs {:.0}%)",
        (1.0 - a / a_prime) * 100.0
    );
    let adapter_db = writ_testkit::postgres().await.unwrap();
    sqlx::raw_sql(TABLE_DDL)
        .execute(adapter_db.pool())
        .await
        .unwrap();
    let adapter_config = writ_worker::WorkerConfig::from_toml(&worker_config(
        &layout,
        batch,
        &bootstrap,
        adapter_db.url(),
        0,
    ))
    .unwrap();
    let adapter = writ_store::connect(&adapter_config.master).await.unwrap();
    begin_phase(adapter_db.pool()).await;
    let a_adapter = adapter_alone(adapter.as_ref(), &cmds, batch).await;
    println!(
        "  (a\") writ's adapter: {a_adapter:>9.0} commands/s (PostgreSQL master from memory: probe, writes, inbox; {:.0}% of a; {})",
        100.0 * a_adapter / a,
        upsert_statements(adapter_db.pool()).await
    );
    drop(adapter);
    let (b, received) = raw_consume(&settings, &layout.bulk(), n).await;
    println!("  (b)  raw consume:   {b:>9.0} records/s");
    // (a) again, with batches cut from the commands in the order a consumer
    // receives them — a partition's run at a time — as the worker's are.
    let in_received_order: Vec<&Cmd> = received.iter().filter_map(|&i| cmds.get(i)).collect();
    begin_phase(pg.pool()).await;
    let a_received = ceiling(pg.pool(), &in_received_order, batch, true).await;
    println!(
        "  (a‴) ceiling, Kafka's order: {a_received:>9.0} commands/s (as (a), batches as received; {})",
        upsert_statements(pg.pool()).await
    );
    drop(in_load_order);
    drop(in_received_order);
    drop(cmds);

    // (c) the worker, as deployed: its own process, bulk profile.
    let master_db = writ_testkit::postgres().await.unwrap();
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    sqlx::raw_sql(TABLE_DDL)
        .execute(master_db.pool())
        .await
        .unwrap();
    begin_phase(master_db.pool()).await;
    let config = worker_config(&layout, batch, &bootstrap, master_db.url(), metrics_port);
    let file = std::env::temp_dir().join(format!("writ-bench-{}.toml", Uuid::new_v4()));
    std::fs::write(&file, config).unwrap();
    let group = format!("writ-{}-bulk", layout.domain());
    // WRIT_BENCH_WORKER_WRAPPER runs the worker under a profiler, e.g. "heaptrack -o /tmp/worker".
    let wrapper: Vec<String> = std::env::var("WRIT_BENCH_WORKER_WRAPPER")
        .map(|w| w.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let worker_bin = env!("CARGO_BIN_EXE_writ-worker");
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(worker_bin);
            c
        }
        None => Command::new(worker_bin),
    };
    let mut child = command
        .arg("--config")
        .arg(&file)
        .env(
            "RUST_LOG",
            std::env::var("WRIT_BENCH_WORKER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .envs(
            std::env::var("WRIT_BENCH_MALLOC_ARENA_MAX")
                .ok()
                .map(|v| ("MALLOC_ARENA_MAX", v)),
        )
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let spawned = Instant::now();
    let mut first_progress = None;
    // Who used the CPU while the worker applied: the worker, the database, the broker.
    // The embedded broker runs in this process.
    let broker_comm = match &embedded {
        Some(_) => std::fs::read_to_string("/proc/self/comm")
            .unwrap()
            .trim()
            .to_owned(),
        None => "tansu".to_owned(),
    };
    let cpu_users = ["writ-worker", "postgres", broker_comm.as_str()];
    let mut cpu_at_first_progress = Vec::new();
    loop {
        let done = committed_total(&settings, &group, &layout.bulk(), partitions);
        if done > 0 && first_progress.is_none() {
            first_progress = Some((Instant::now(), done));
            cpu_at_first_progress = cpu_seconds_by_command(&cpu_users);
        }
        if done as usize >= n {
            break;
        }
        if let Some(exit) = child.try_wait().unwrap() {
            panic!("the worker exited ({exit}) after committing {done} of {n}; its log is above");
        }
        assert!(
            spawned.elapsed() < Duration::from_secs(1200),
            "worker stalled at {done}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let total = spawned.elapsed();
    let (t0, done0) = first_progress.unwrap();
    let sustained = t0.elapsed().as_secs_f64();
    let applied = (n as i64 - done0) as f64;
    // The sustained rate, from the status events' timestamps: a command is
    // done when its status event is produced. Offsets are committed every
    // `commit_interval_ms` (1 s), so a window cut at commits is off by up to a
    // second at each end, a quarter of a 4-second run. The window starts once
    // a first batch is out (group join and first fetch are start-up): from
    // the last event of the first batch to the last event of the last one.
    let times = record_times_ms(&settings, &layout.status());
    assert_eq!(times.len(), n, "one status event per command");
    let first = batch.min(n / 10).saturating_sub(1);
    let window = (times[n - 1] - times[first]) as f64 / 1000.0;
    let c = (n - 1 - first) as f64 / window;
    let c_committed = applied / sustained;
    let cpu: Vec<f64> = cpu_seconds_by_command(&cpu_users)
        .iter()
        .zip(&cpu_at_first_progress)
        .map(|(end, start)| end - start)
        .collect();
    let rss = peak_rss_kib(child.id());
    let stages = stage_seconds(metrics_port).await;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let exit = child.wait().unwrap();
    let _ = std::fs::remove_file(&file);
    // The sustained rate is measured from the first committed progress on;
    // a run that commits everything at once leaves nothing to measure.
    assert!(
        (done0 as usize) < n,
        "the worker committed all {n} commands before the first progress sample: \
         raise WRIT_BENCH_N to measure a sustained rate"
    );
    println!(
        "  (c)  writ-worker:    {c:>9.0} commands/s sustained (status events produced after the first batch's, over {window:.2} s; first to last offset commit seen: {c_committed:.0}; end to end incl. start-up: {:.1} s; worker {exit})",
        total.as_secs_f64()
    );
    println!("       worker seconds per stage, summed over batches: {stages}");
    println!(
        "       master: {}",
        upsert_statements(master_db.pool()).await
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "       CPU while applying ({sustained:.1} s, {cores} cores = {:.1} s): worker {:.1} s ({:.0} µs/command), PostgreSQL {:.1} s, broker {:.1} s",
        cores as f64 * sustained,
        cpu[0],
        cpu[0] * 1e6 / applied,
        cpu[1],
        cpu[2],
    );
    println!(
        "  c/a = {:.2}   c/a‴ = {:.2}   worker peak RSS = {} MiB",
        c / a,
        c / a_received,
        rss.map_or("?".into(), |k| (k / 1024).to_string())
    );
}
