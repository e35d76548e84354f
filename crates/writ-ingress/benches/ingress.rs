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
//!   and the interactive worker running in-process; p50/p99 latency;
//! - (c′) the same with 5 ms fetch waits on the worker and the ingress'
//!   status reader: the test broker holds every fetch for its whole wait
//!   (Apache Kafka answers once data arrives), so (c) includes up to two of
//!   those waits and (c′) shows the path without them;
//!   `WRIT_BENCH_CP1_PROPERTIES` replaces (c′)'s librdkafka properties (both
//!   consumers and both producers on the path), e.g.
//!   `'"fetch.wait.max.ms" = "20", "linger.ms" = "1"'`.
//!
//! The load generator runs in the same process and shares the CPU with the
//! ingress and the broker, so the figures are a lower bound of what the
//! ingress does with a dedicated machine.

#[path = "../tests/support/mod.rs"]
mod support;

// The ingress (and the worker for CP-1) run in this process: give it the
// binaries' allocator.
writ_alloc::install!();

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
    ingress.stop().await;
    // Each on topics of its own, so the backlog of (a) and (b) is not in the way.
    // (c′) adds 5 ms fetch waits on the two consumers on the path (the
    // worker's and the ingress' status reader): the test broker answers a
    // fetch only when its wait is over, where Apache Kafka answers as soon as
    // data arrives, so (c′) shows the path without those waits.
    let variant = std::env::var("WRIT_BENCH_CP1_PROPERTIES")
        .unwrap_or_else(|_| r#""fetch.wait.max.ms" = "5""#.to_owned());
    for (label, properties) in [("c", ""), ("c'", variant.as_str())] {
        let fresh = Topics::create(writ_testkit::kafka().await, "cp1", 2).await;
        let mut toml = fresh.ingress_toml("");
        if !properties.is_empty() {
            toml = toml.replace(
                "[limits]",
                &format!("properties = {{ {properties} }}\n\n[limits]"),
            );
        }
        let config = writ_ingress::IngressConfig::from_toml(&toml).unwrap();
        let started = writ_ingress::Ingress::start(config).await.unwrap();
        assert!(started.caught_up(Duration::from_secs(60)).await);
        let running = Running::serve(started);
        cp1(&fresh, pg.url(), &running.base, &client, label, properties).await;
        running.stop().await;
    }
}

/// Posts CP-1 requests at `WRIT_BENCH_RATE` for `WRIT_BENCH_SECONDS` with an
/// interactive worker (its `[kafka.properties]` extended by `properties`)
/// running, and prints p50/p99 as figure `label`.
async fn cp1(
    topics: &Topics,
    pg_url: &str,
    base: &str,
    client: &reqwest::Client,
    label: &str,
    properties: &str,
) {
    let mut toml = topics.worker_toml("interactive", pg_url);
    if !properties.is_empty() {
        toml = toml.replace(
            r#"properties = { "session.timeout.ms" = "6000" }"#,
            &format!(r#"properties = {{ "session.timeout.ms" = "6000", {properties} }}"#),
        );
        assert!(toml.contains(properties), "worker properties extended");
    }
    let config = writ_worker::WorkerConfig::from_toml(&toml).unwrap();
    let worker = writ_worker::Worker::connect(config).await.unwrap();
    let token = CancellationToken::new();
    let worker_task = tokio::spawn(worker.run(token.clone()));
    // The worker first applies any backlog; wait for a CP-1 to go through.
    let warm_key = format!("warm-up-{label}");
    let mut warm_status = reqwest::StatusCode::ACCEPTED;
    let deadline = Instant::now() + Duration::from_secs(300);
    while warm_status != reqwest::StatusCode::CREATED && Instant::now() < deadline {
        warm_status = client
            .post(format!("{base}/v1/commands/customer.upsert.v1"))
            .bearer_auth(ACME)
            .header("idempotency-key", &warm_key)
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
        let (client, base, label) = (client.clone(), base.to_owned(), label.to_owned());
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let r = client
                .post(format!("{base}/v1/commands/customer.upsert.v1"))
                .bearer_auth(ACME)
                .header("idempotency-key", format!("cp1-{label}-{i}"))
                .header("prefer", "wait=5")
                .json(&payload(i))
                .send()
                .await;
            let elapsed = started.elapsed();
            let late = match r {
                Ok(r) if r.status() == reqwest::StatusCode::CREATED => None,
                Ok(r) => Some(r.text().await.unwrap_or_default()),
                Err(e) => Some(e.to_string()),
            };
            (elapsed, late)
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    let mut late = Vec::new();
    for t in tasks {
        let (d, answer) = t.await.unwrap();
        latencies.push(d);
        late.extend(answer);
    }
    let not_created = late.len();
    // What became of the ones not answered `201` in time: applied late, or
    // applied in time and the answer missed?
    for answer in late.iter().take(5) {
        let id = serde_json::from_str::<serde_json::Value>(answer)
            .ok()
            .and_then(|v| v["submissionId"].as_str().map(str::to_owned));
        let Some(id) = id else {
            println!("  not 201: {answer}");
            continue;
        };
        let now = client
            .get(format!("{base}/v1/submissions/{id}"))
            .bearer_auth(ACME)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        println!("  not 201: {id} is now {now}");
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let fetch = if properties.is_empty() {
        "shipped settings".to_owned()
    } else {
        properties.replace('"', "")
    };
    println!(
        "({label}) CP-1 at {rate} req/s for {seconds} s ({fetch}): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {not_created} not 201",
        pct(0.50).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0,
        latencies.last().unwrap().as_secs_f64() * 1000.0,
    );
    token.cancel();
    let _ = worker_task.await;
}
