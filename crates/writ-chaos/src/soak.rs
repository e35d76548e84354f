//! `writ-chaos soak`: steady mixed load (raw producers, CP-2, CP-1 with
//! `Prefer: wait`, CP-3 uploads) for a fixed time against two interactive
//! workers, a bulk worker and the ingress, sampling every process' resident
//! memory from `/proc` and counting errors per interval. The verdict: no
//! upward memory trend (the last third's mean against the middle third's,
//! with a margin) and no growth of the error rate, and every acknowledged
//! command applied exactly once at the end.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::ChaosError;
use crate::master::Faults;
use crate::plan::{payload, COMMAND_TYPE};
use crate::verify::{self, Check, Verdict};
use crate::world::{World, WorldConfig};

/// Everything a soak needs.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// Services and process tuning.
    pub world: WorldConfig,
    /// How long the load runs.
    pub duration: Duration,
    /// RSS and error-rate sampling interval.
    pub sample_every: Duration,
    /// Raw commands per second.
    pub raw_per_second: u32,
    /// Concurrent ingress clients (each sequential; every tenth request is CP-1).
    pub ingress_clients: usize,
    /// Pause between two requests of one ingress client.
    pub ingress_pause: Duration,
    /// A bulk upload this often.
    pub bulk_every: Duration,
    /// Lines per bulk upload.
    pub bulk_lines: usize,
    /// Allowed growth of the last third's mean RSS over the middle third's (0.15 = 15%).
    pub rss_margin: f64,
    /// Allowed growth in absolute terms on top of the margin, bytes.
    pub rss_slack_bytes: u64,
    /// Longest wait for the load to be applied after it stops.
    pub drain_timeout: Duration,
}

impl SoakConfig {
    /// Defaults for `seconds` of load.
    pub fn new(world: WorldConfig, seconds: u64) -> Self {
        Self {
            world,
            duration: Duration::from_secs(seconds),
            sample_every: Duration::from_secs(3),
            raw_per_second: 300,
            ingress_clients: 8,
            ingress_pause: Duration::from_millis(50),
            bulk_every: Duration::from_secs(5),
            bulk_lines: 200,
            rss_margin: 0.10,
            rss_slack_bytes: 4 << 20,
            drain_timeout: Duration::from_secs(120),
        }
    }
}

/// One sampling instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Since the load started.
    pub at: Duration,
    /// RSS per process name, bytes.
    pub rss: BTreeMap<String, u64>,
    /// Requests and records sent in the interval.
    pub requests: u64,
    /// Of which failed.
    pub errors: u64,
}

/// The outcome of a soak.
#[derive(Debug, Clone)]
pub struct SoakReport {
    /// Every sample.
    pub samples: Vec<Sample>,
    /// The verdicts.
    pub checks: Vec<Check>,
}

impl SoakReport {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        verify::passed(&self.checks)
    }

    /// Samples as a table (RSS in MiB, errors per interval), then the verdicts.
    pub fn render(&self) -> String {
        let names: Vec<String> = self
            .samples
            .iter()
            .flat_map(|s| s.rss.keys().cloned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut out = format!("{:>7}", "t (s)");
        for n in &names {
            out.push_str(&format!("  {:>12}", format!("{n} MiB")));
        }
        out.push_str(&format!(
            "  {:>9}  {:>7}  {:>10}\n",
            "sent", "errors", "error rate"
        ));
        for s in &self.samples {
            out.push_str(&format!("{:>7.1}", s.at.as_secs_f64()));
            for n in &names {
                let v = s
                    .rss
                    .get(n)
                    .map(|b| format!("{:.1}", *b as f64 / 1048576.0));
                out.push_str(&format!("  {:>12}", v.unwrap_or_else(|| "-".into())));
            }
            out.push_str(&format!(
                "  {:>9}  {:>7}  {:>9.2}%\n",
                s.requests,
                s.errors,
                rate(s.errors, s.requests) * 100.0
            ));
        }
        out.push('\n');
        out.push_str(&verify::render(&self.checks));
        out.push_str(if self.passed() {
            "\nRESULT: PASS\n"
        } else {
            "\nRESULT: FAIL\n"
        });
        out
    }
}

fn rate(errors: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        errors as f64 / total as f64
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Memory trend of one process: (middle-third mean, last-third mean, bounded?).
///
/// The first third is warm-up (allocator arenas, caches, consumer prefetch
/// filling up) and is not judged. Needs at least six samples.
pub fn rss_trend(values: &[u64], margin: f64, slack: u64) -> Option<(f64, f64, bool)> {
    if values.len() < 6 {
        return None;
    }
    let third = values.len() / 3;
    let f: Vec<f64> = values.iter().map(|&v| v as f64).collect();
    let middle = mean(&f[third..2 * third]);
    let last = mean(&f[2 * third..]);
    Some((middle, last, last <= middle * (1.0 + margin) + slack as f64))
}

/// Least-squares slope of RSS over time, bytes per minute: a figure, not a
/// verdict (a short soak's slope is dominated by warm-up).
pub fn rss_slope_per_minute(points: &[(f64, u64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1 as f64).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (x, y) in points {
        num += (x - mx) * (*y as f64 - my);
        den += (x - mx) * (x - mx);
    }
    if den == 0.0 {
        0.0
    } else {
        num / den * 60.0
    }
}

/// Error-rate trend: (middle-third rate, last-third rate, not growing?). One
/// percentage point of tolerance absorbs single stray errors.
pub fn error_trend(samples: &[(u64, u64)]) -> (f64, f64, bool) {
    let third = (samples.len() / 3).max(1).min(samples.len());
    let sum = |s: &[(u64, u64)]| {
        let (r, e) = s.iter().fold((0, 0), |(r, e), (a, b)| (r + a, e + b));
        rate(e, r)
    };
    let middle = sum(&samples[third.min(samples.len())..(2 * third).min(samples.len())]);
    let last = sum(&samples[(2 * third).min(samples.len())..]);
    (middle, last, last <= middle + 0.01)
}

#[derive(Debug, Default)]
struct Load {
    sent: AtomicU64,
    errors: AtomicU64,
    /// (entity, seq) of every command Kafka or the ingress acknowledged.
    acknowledged: Mutex<Vec<(String, i64)>>,
}

/// Runs the soak and returns its report (an `Err` only when it could not run).
pub async fn soak(c: &SoakConfig) -> Result<SoakReport, ChaosError> {
    if c.duration < c.sample_every * 6 {
        return Err(ChaosError::Config(format!(
            "a soak of {:?} gives fewer than 6 samples at {:?}; run longer or sample more often",
            c.duration, c.sample_every
        )));
    }
    let mut world = World::create(&c.world, "soak").await?;
    eprintln!(
        "soak: domain {}, logs in {}",
        world.layout.domain(),
        world.dir().display()
    );
    let result = drive(c, &mut world).await;
    let unclean = world.stop_all().await.unwrap_or_default();
    let failed = !result.as_ref().is_ok_and(SoakReport::passed) || !unclean.is_empty();
    world.keep_dir_if(c.world.keep_logs || failed);
    let mut report = result?;
    report.checks.push(Check {
        name: "processes drain on SIGTERM, none died on its own".into(),
        verdict: if unclean.is_empty() && world.unexpected_exits.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        detail: format!(
            "not exiting 0: [{}]; died: [{}]",
            unclean.join(", "),
            world.unexpected_exits.join("; ")
        ),
    });
    Ok(report)
}

async fn drive(c: &SoakConfig, world: &mut World) -> Result<SoakReport, ChaosError> {
    world.master.break_it(Faults::NONE).await?;
    world.add_worker()?;
    world.add_worker()?;
    world.start_bulk_worker()?;
    world.start_ingress(Duration::from_secs(60)).await?;
    let load = Arc::new(Load::default());
    let stop = Arc::new(AtomicBool::new(false));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut tasks = tokio::task::JoinSet::new();

    // Raw producers: 100 entities, 10 ticks a second.
    {
        let (producer, topic, load, stop) = (
            world.producer.clone(),
            world.layout.commands(),
            load.clone(),
            stop.clone(),
        );
        let per_tick = (c.raw_per_second / 10).max(1) as usize;
        tasks.spawn(async move {
            let mut seq = 0i64;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                seq += 1;
                let batch: Vec<(String, i64)> =
                    (0..per_tick).map(|e| (format!("sr{e:04}"), seq)).collect();
                let records: Vec<_> = batch
                    .iter()
                    .map(|(entity, seq)| {
                        let cmd = crate::plan::Command {
                            entity: entity.clone(),
                            seq: *seq,
                            name: format!("n{seq}"),
                            channel: crate::plan::Channel::Raw,
                        };
                        crate::traffic::raw_record(&topic, &cmd, &cmd.name)
                    })
                    .collect();
                let results = producer.send_all(&records).await;
                load.sent.fetch_add(records.len() as u64, Ordering::Relaxed);
                let mut ack = load.acknowledged.lock().expect("ack lock");
                for (r, k) in results.into_iter().zip(batch) {
                    match r {
                        Ok(_) => ack.push(k),
                        Err(_) => {
                            load.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        });
    }
    // Ingress clients: CP-2, and CP-1 (`Prefer: wait=5`) every tenth request.
    for client in 0..c.ingress_clients {
        let (http, base, key, load, stop, pause) = (
            http.clone(),
            world.ingress_base.clone(),
            world.api_key.clone(),
            load.clone(),
            stop.clone(),
            c.ingress_pause,
        );
        tasks.spawn(async move {
            let url = format!("{base}/v1/commands/{COMMAND_TYPE}");
            let entity = format!("si{client:03}");
            let mut seq = 0i64;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                let mut req = http
                    .post(&url)
                    .bearer_auth(&key)
                    .header("idempotency-key", format!("soak-{entity}-{seq}"))
                    .json(&payload(&entity, seq, &format!("n{seq}")));
                if seq % 10 == 0 {
                    req = req.header("prefer", "wait=5");
                }
                load.sent.fetch_add(1, Ordering::Relaxed);
                match req.send().await {
                    Ok(r) if r.status().is_success() => {
                        load.acknowledged
                            .lock()
                            .expect("ack lock")
                            .push((entity.clone(), seq));
                    }
                    _ => {
                        load.errors.fetch_add(1, Ordering::Relaxed);
                        // Not acknowledged: the same seq must not be skipped silently,
                        // so the next request re-sends it under the same key.
                        seq -= 1;
                    }
                }
                tokio::time::sleep(pause).await;
            }
        });
    }
    // Bulk uploads.
    {
        let (http, base, key, load, stop) = (
            http.clone(),
            world.ingress_base.clone(),
            world.api_key.clone(),
            load.clone(),
            stop.clone(),
        );
        let (every, lines, domain) = (c.bulk_every, c.bulk_lines, world.layout.domain().to_owned());
        tasks.spawn(async move {
            let mut job = 0i64;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(every).await;
                job += 1;
                let keys: Vec<(String, i64)> =
                    (0..lines).map(|e| (format!("sb{e:04}"), job)).collect();
                let body: String = keys
                    .iter()
                    .map(|(e, s)| format!("{}\n", payload(e, *s, &format!("n{s}"))))
                    .collect();
                load.sent.fetch_add(1, Ordering::Relaxed);
                let r = http
                    .post(format!("{base}/v1/jobs?type={COMMAND_TYPE}"))
                    .bearer_auth(&key)
                    .header("idempotency-key", format!("{domain}-soak-job-{job}"))
                    .header("content-type", "application/x-ndjson")
                    .body(body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        load.acknowledged.lock().expect("ack lock").extend(keys);
                    }
                    _ => {
                        load.errors.fetch_add(1, Ordering::Relaxed);
                        job -= 1;
                    }
                }
            }
        });
    }

    let started = Instant::now();
    let mut samples = Vec::new();
    let (mut last_sent, mut last_errors) = (0, 0);
    while started.elapsed() < c.duration {
        tokio::time::sleep(c.sample_every).await;
        world.reap_unexpected().await?;
        let sent = load.sent.load(Ordering::Relaxed);
        let errors = load.errors.load(Ordering::Relaxed);
        let sample = Sample {
            at: started.elapsed(),
            rss: world
                .procs()
                .filter_map(|p| Some((p.name.clone(), p.rss_bytes()?)))
                .collect(),
            requests: sent - last_sent,
            errors: errors - last_errors,
        };
        (last_sent, last_errors) = (sent, errors);
        eprintln!(
            "soak: {:>5.1}s {} sent {} errors {}",
            sample.at.as_secs_f64(),
            sample
                .rss
                .iter()
                .map(|(k, v)| format!("{k}={}MiB", v >> 20))
                .collect::<Vec<_>>()
                .join(" "),
            sample.requests,
            sample.errors
        );
        samples.push(sample);
    }
    stop.store(true, Ordering::Relaxed);
    while let Some(t) = tasks.join_next().await {
        t.map_err(|e| ChaosError::Process(format!("soak load task panicked: {e}")))?;
    }

    // Everything acknowledged must be applied exactly once.
    let expected = load.acknowledged.lock().expect("ack lock").clone();
    let deadline = Instant::now() + c.drain_timeout;
    while (world.master.history_count().await? as usize) < expected.len()
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let history = world.master.history().await?;

    let mut checks = Vec::new();
    let names: Vec<String> = world.procs().map(|p| p.name.clone()).collect();
    for name in names {
        let points: Vec<(f64, u64)> = samples
            .iter()
            .filter_map(|s| Some((s.at.as_secs_f64(), *s.rss.get(&name)?)))
            .collect();
        let values: Vec<u64> = points.iter().map(|p| p.1).collect();
        let slope = rss_slope_per_minute(&points[points.len() / 3..]);
        let check = match rss_trend(&values, c.rss_margin, c.rss_slack_bytes) {
            Some((middle, last, ok)) => Check {
                name: format!("{name}: memory bounded, no upward trend"),
                verdict: if ok { Verdict::Pass } else { Verdict::Fail },
                detail: format!(
                    "mean RSS middle third {:.1} MiB, last third {:.1} MiB (allowed +{:.0}% +{} MiB), peak {:.1} MiB, slope after warm-up {:+.2} MiB/min",
                    middle / 1048576.0,
                    last / 1048576.0,
                    c.rss_margin * 100.0,
                    c.rss_slack_bytes >> 20,
                    values.iter().max().copied().unwrap_or(0) as f64 / 1048576.0,
                    slope / 1048576.0
                ),
            },
            None => Check {
                name: format!("{name}: memory bounded, no upward trend"),
                verdict: Verdict::Fail,
                detail: format!("only {} samples", values.len()),
            },
        };
        checks.push(check);
    }
    let per_interval: Vec<(u64, u64)> = samples.iter().map(|s| (s.requests, s.errors)).collect();
    let (middle, last, ok) = error_trend(&per_interval);
    let total: u64 = per_interval.iter().map(|(r, _)| r).sum();
    checks.push(Check {
        name: "error rate does not grow".into(),
        verdict: if ok { Verdict::Pass } else { Verdict::Fail },
        detail: format!(
            "{total} sends; error rate middle third {:.2}%, last third {:.2}%",
            middle * 100.0,
            last * 100.0
        ),
    });
    let lost = verify::lost(&expected, &history);
    let evidence = world.explain_losses(&lost).await?;
    checks.extend(verify::exactly_once_of_delivered(
        &expected, &history, &evidence,
    ));
    checks.push(Check::note(
        "throughput",
        format!(
            "{} commands acknowledged in {:.0} s ({:.0}/s); raw {}/s target, {} ingress clients, bulk {} lines every {:?}",
            expected.len(),
            c.duration.as_secs_f64(),
            expected.len() as f64 / c.duration.as_secs_f64(),
            c.raw_per_second,
            c.ingress_clients,
            c.bulk_lines,
            c.bulk_every
        ),
    ));
    Ok(SoakReport { samples, checks })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_or_warming_memory_passes_and_growth_fails() {
        let mib = |v: &[u64]| v.iter().map(|m| m << 20).collect::<Vec<_>>();
        // Warm-up growth in the first third, then flat.
        let flat = mib(&[50, 90, 120, 121, 119, 122, 120, 121, 122]);
        assert!(rss_trend(&flat, 0.15, 16 << 20).unwrap().2);
        // Steady climb: a leak.
        let leak = mib(&[100, 130, 160, 190, 220, 250, 280, 310, 340]);
        let (m, l, ok) = rss_trend(&leak, 0.15, 16 << 20).unwrap();
        assert!(!ok, "middle {m} last {l}");
        assert!(
            rss_trend(&mib(&[1, 2, 3]), 0.15, 0).is_none(),
            "too few samples"
        );
    }

    #[test]
    fn error_rate_growth_is_caught_and_noise_tolerated() {
        let steady = [(100, 0), (100, 1), (100, 0), (100, 0), (100, 1), (100, 0)];
        assert!(error_trend(&steady).2);
        let growing = [(100, 0), (100, 0), (100, 1), (100, 2), (100, 10), (100, 20)];
        let (m, l, ok) = error_trend(&growing);
        assert!(!ok, "middle {m} last {l}");
    }
}
