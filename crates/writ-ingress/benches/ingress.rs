//! `tests/run.sh cargo bench -p writ-ingress --bench ingress`: the ingress'
//! accepted requests per second next to a raw producer baseline measured in
//! the same run, and CP-1 latency at a fixed rate with the worker running.
//!
//! - (a) baseline: the same command records produced straight through
//!   [`RecordProducer::send_all`], no HTTP, no `ACCEPTED` status — the
//!   ceiling the ingress is compared to (it produces two records per command);
//! - (b) CP-2: `WRIT_BENCH_CONCURRENCY` (default 64) HTTP/1.1 clients posting
//!   `WRIT_BENCH_N` (default 20000) commands with unique keys;
//! - (b′) CP-2 again with `wrk` (a standard HTTP load tool; `tests/run.sh`
//!   installs it for benchmarks): `WRIT_BENCH_WRK_CONNECTIONS` (default 256)
//!   connections for `WRIT_BENCH_WRK_SECONDS` (default 10);
//! - (c) CP-1 (when PostgreSQL is available): `WRIT_BENCH_RATE` (default 500)
//!   requests/s for `WRIT_BENCH_SECONDS` (default 10) with `Prefer: wait=5`
//!   and the interactive worker running in-process; p50/p99 latency.
//!
//! The load generator runs in the same process and shares the CPU with the
//! ingress and the broker, so the figures are a lower bound of what the
//! ingress does with a dedicated machine.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Running, Topics, ACME};
use tokio_util::sync::CancellationToken;
use writ_core::{CommandEnvelope, ContentType};
use writ_kafka::{OutgoingRecord, RecordProducer};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn payload(i: usize) -> serde_json::Value {
    json!({"customer_id": format!("cust-{:05}", i % 1000), "name": format!("Customer number {i} of the benchmark"), "email": format!("c{i}@example.com")})
}

/// `wrk` posts unique commands: each thread numbers its own requests, so
/// idempotency keys never collide across threads or runs.
const WRK_SCRIPT: &str = r#"
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function init(args)
  counter = 0
  run = args[1]
end
function request()
  counter = counter + 1
  local body = string.format(
    '{"customer_id":"cust-%05d","name":"Customer %d of the benchmark","email":"c%d@example.com"}',
    counter % 1000, counter, counter)
  return wrk.format("POST", "/v1/commands/customer.upsert.v1", {
    ["Authorization"] = "Bearer " .. run_key,
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = "wrk-" .. run .. "-" .. tid .. "-" .. counter,
  }, body)
end
"#;

/// (b′): `WRIT_BENCH_WRK_CONNECTIONS` (default 256) connections for
/// `WRIT_BENCH_WRK_SECONDS` (default 10) with `wrk`, if it is on the PATH.
fn wrk_cp2(base: &str) {
    if std::process::Command::new("wrk")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("(b') skipped: wrk is not installed (apt-get install wrk)");
        return;
    }
    let connections = env_usize("WRIT_BENCH_WRK_CONNECTIONS", 256);
    let seconds = env_usize("WRIT_BENCH_WRK_SECONDS", 10);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("cp2.lua");
    std::fs::write(&script, format!("run_key = \"{ACME}\"\n{WRK_SCRIPT}")).unwrap();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let out = std::process::Command::new("wrk")
        .args(["-t2", &format!("-c{connections}"), &format!("-d{seconds}s")])
        .arg("--latency")
        .arg("-s")
        .arg(&script)
        .arg(base)
        .arg("--")
        .arg(&run)
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_owned()))
    };
    let rps = field("Requests/sec:").unwrap_or_else(|| panic!("wrk printed no rate:\n{text}"));
    let non_2xx = field("Non-2xx or 3xx responses:").unwrap_or_else(|| "0".into());
    let errors = field("Socket errors:").unwrap_or_else(|| "none".into());
    let p99 = field("99%").unwrap_or_default();
    println!(
        "(b') CP-2 with wrk, {connections} connections, {seconds} s: {rps} requests/s, p99 {p99}, non-2xx {non_2xx}, socket errors: {errors}"
    );
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(run());
}

async fn run() {
    let n = env_usize("WRIT_BENCH_N", 20_000);
    let concurrency = env_usize("WRIT_BENCH_CONCURRENCY", 64);
    let topics = Topics::create(writ_testkit::kafka().await, "bench", 2).await;
    println!(
        "broker: {:?}; {n} commands, {concurrency} clients",
        topics.kafka.kind()
    );

    // (a) raw producer baseline.
    let producer = RecordProducer::new(&topics.settings).unwrap();
    let records: Vec<OutgoingRecord> = (0..n)
        .map(|i| {
            let e = CommandEnvelope::new(
                format!("raw-{i}"),
                "/tenants/acme",
                "customer.upsert.v1",
                ContentType::Json,
            )
            .with_subject(format!("cust-{:05}", i % 1000));
            OutgoingRecord::command(
                topics.layout.commands(),
                &e,
                serde_json::to_vec(&payload(i)).unwrap(),
            )
        })
        .collect();
    // Warm up: topic metadata and the producer id are fetched once, not timed.
    for r in producer.send_all(&records[..1]).await {
        r.expect("warm-up produce");
    }
    let started = Instant::now();
    for chunk in records.chunks(1000) {
        for r in producer.send_all(chunk).await {
            r.expect("baseline produce");
        }
    }
    let raw = n as f64 / started.elapsed().as_secs_f64();
    println!("(a) raw producer baseline: {raw:.0} records/s");

    // (b) CP-2 through the ingress.
    let ingress = Running::serve(topics.ingress("").await);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, next, failures, base) = (
            client.clone(),
            next.clone(),
            failures.clone(),
            ingress.base.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let r = client
                    .post(format!("{base}/v1/commands/customer.upsert.v1"))
                    .bearer_auth(ACME)
                    .header("idempotency-key", format!("cp2-{i}"))
                    .json(&payload(i))
                    .send()
                    .await;
                if !matches!(r, Ok(ref r) if r.status() == reqwest::StatusCode::ACCEPTED) {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let cp2 = n as f64 / started.elapsed().as_secs_f64();
    println!(
        "(b) CP-2 through the ingress: {cp2:.0} accepted requests/s ({:.0}% of the raw baseline), {} failed",
        100.0 * cp2 / raw,
        failures.load(Ordering::Relaxed)
    );

    // (b′) CP-2 with a standard load tool, when installed.
    wrk_cp2(&ingress.base);

    // (c) CP-1 latency at a fixed rate, with the worker applying to PostgreSQL.
    let Some(pg) = writ_testkit::postgres().await else {
        println!("(c) skipped: no PostgreSQL");
        ingress.stop().await;
        return;
    };
    sqlx::raw_sql(support::MASTER_DDL)
        .execute(pg.pool())
        .await
        .unwrap();
    let config =
        writ_worker::WorkerConfig::from_toml(&topics.worker_toml("interactive", pg.url())).unwrap();
    let worker = writ_worker::Worker::connect(config).await.unwrap();
    let token = CancellationToken::new();
    let worker_task = tokio::spawn(worker.run(token.clone()));
    // The worker first applies the backlog of (a) and (b); wait for a CP-1 to go through.
    let warm = client
        .post(format!("{}/v1/commands/customer.upsert.v1", ingress.base))
        .bearer_auth(ACME)
        .header("idempotency-key", "warm-up")
        .header("prefer", "wait=30")
        .json(&payload(0))
        .send()
        .await
        .unwrap();
    let mut warm_status = warm.status();
    let deadline = Instant::now() + Duration::from_secs(300);
    while warm_status != reqwest::StatusCode::CREATED && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        warm_status = client
            .post(format!("{}/v1/commands/customer.upsert.v1", ingress.base))
            .bearer_auth(ACME)
            .header("idempotency-key", "warm-up")
            .header("prefer", "wait=30")
            .json(&payload(0))
            .send()
            .await
            .unwrap()
            .status();
    }
    let rate = env_usize("WRIT_BENCH_RATE", 500);
    let seconds = env_usize("WRIT_BENCH_SECONDS", 10);
    let total = rate * seconds;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate as u32);
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        tick.tick().await;
        let (client, base) = (client.clone(), ingress.base.clone());
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let r = client
                .post(format!("{base}/v1/commands/customer.upsert.v1"))
                .bearer_auth(ACME)
                .header("idempotency-key", format!("cp1-{i}"))
                .header("prefer", "wait=5")
                .json(&payload(i))
                .send()
                .await;
            let ok = matches!(r, Ok(ref r) if r.status() == reqwest::StatusCode::CREATED);
            (started.elapsed(), ok)
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    let mut not_created = 0;
    for t in tasks {
        let (d, ok) = t.await.unwrap();
        latencies.push(d);
        not_created += usize::from(!ok);
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "(c) CP-1 at {rate} req/s for {seconds} s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {not_created} not 201",
        pct(0.50).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0,
        latencies.last().unwrap().as_secs_f64() * 1000.0,
    );
    token.cancel();
    let _ = worker_task.await;
    ingress.stop().await;
}
