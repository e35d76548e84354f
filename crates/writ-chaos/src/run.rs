//! `writ-chaos run`: the chaos run. Starts the world, drives the load through
//! all three channels while killing workers, scaling them and restarting the
//! ingress, waits until every submission is answered, fixes the master,
//! replays the DLQ with `writ dlq replay`, and checks the promises against the
//! master's history, the status topic and the DLQ.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;
use uuid::Uuid;
use writ_core::SubmissionState;

use crate::error::ChaosError;
use crate::master::Faults;
use crate::observe::{read_dlq, StatusTail};
use crate::plan::{Channel, Plan, PlanConfig, RAW_SOURCE};
use crate::traffic::{self, Counters, FirstError, IngressTarget, UploadedJob};
use crate::verify::{self, Check, Terminal};
use crate::world::{World, WorldConfig};

/// Everything a chaos run needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Services and process tuning.
    pub world: WorldConfig,
    /// The workload.
    pub plan: PlanConfig,
    /// Master faults during the load.
    pub faults: Faults,
    /// A worker is SIGKILLed and restarted this often during the load.
    pub kill_every: Duration,
    /// Pause between two rounds of a raw producer (spreads the load over time).
    pub raw_round_pause: Duration,
    /// Pause between two bulk uploads.
    pub bulk_pause: Duration,
    /// Longest wait for every submission to be answered (after the load, and after the replay).
    pub drain_timeout: Duration,
}

impl RunConfig {
    /// The defaults for a workload: 5% of master transactions fail with
    /// 40001, 2% stall 250 ms, a worker is killed every 4 s, and the raw load is
    /// spread over about 20 s so that the chaos happens under load.
    pub fn new(world: WorldConfig, plan: PlanConfig) -> Self {
        let rounds = (plan.commands / plan.entities.max(1)).max(1) as u64;
        Self {
            world,
            plan,
            faults: Faults {
                error_probability: 0.05,
                spike_probability: 0.02,
                spike_ms: 250,
                per_statement: false,
            },
            kill_every: Duration::from_secs(4),
            raw_round_pause: Duration::from_millis(20_000 / rounds),
            bulk_pause: Duration::from_millis(500),
            drain_timeout: Duration::from_secs(180),
        }
    }
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Assertion rows.
    pub checks: Vec<Check>,
    /// Figures (name, value).
    pub figures: Vec<(String, String)>,
}

impl RunReport {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        verify::passed(&self.checks)
    }

    /// The printed report: figures, then the assertion table.
    pub fn render(&self) -> String {
        let w = self.figures.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::from("figures\n");
        for (k, v) in &self.figures {
            out.push_str(&format!("  {k:<w$}  {v}\n"));
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

/// What the director did to the processes.
#[derive(Debug, Default)]
struct Chaos {
    kills: u32,
    bulk_kills: u32,
    scaled_at: Option<Duration>,
    ingress_restarted_at: Option<Duration>,
    peak_rss: BTreeMap<String, u64>,
}

/// Runs the chaos run and returns its report (an `Err` only when it could not run).
pub async fn run(c: &RunConfig) -> Result<RunReport, ChaosError> {
    c.plan.check().map_err(ChaosError::Config)?;
    let plan = Arc::new(Plan::generate(&c.plan));
    let mut world = World::create(&c.world, "chaos").await?;
    let dir_note = world.dir().display().to_string();
    eprintln!(
        "chaos: domain {} ({} commands, {} entities; logs in {dir_note})",
        world.layout.domain(),
        plan.commands.len(),
        c.plan.entities
    );
    let result = drive(c, plan, &mut world).await;
    let unclean = world.stop_all().await.unwrap_or_default();
    let failed = !result.as_ref().is_ok_and(RunReport::passed) || !unclean.is_empty();
    world.keep_dir_if(c.world.keep_logs || failed);
    let mut report = result?;
    report.checks.push(Check {
        name: "processes drain on SIGTERM, none died on its own".into(),
        verdict: if unclean.is_empty() && world.unexpected_exits.is_empty() {
            verify::Verdict::Pass
        } else {
            verify::Verdict::Fail
        },
        detail: format!(
            "not exiting 0 on SIGTERM: [{}]; died on their own: [{}]",
            unclean.join(", "),
            world.unexpected_exits.join("; ")
        ),
    });
    Ok(report)
}

async fn drive(c: &RunConfig, plan: Arc<Plan>, world: &mut World) -> Result<RunReport, ChaosError> {
    let started = Instant::now();
    world.master.break_it(c.faults).await?;
    let tail = Arc::new(StatusTail::start(&world.settings, &world.layout.status())?);
    world.add_worker()?;
    world.start_bulk_worker()?;
    world.start_ingress(Duration::from_secs(60)).await?;

    let counters = Arc::new(Counters::default());
    let first_error = Arc::new(FirstError::default());
    let submissions = Arc::new(Mutex::new(Vec::new()));
    let target = IngressTarget {
        base: world.ingress_base.clone(),
        api_key: world.api_key.clone(),
        give_up_after: Duration::from_secs(90),
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;

    // The load.
    let mut raw_tasks = JoinSet::new();
    for shard in 0..plan.raw.len() {
        raw_tasks.spawn(traffic::raw_shard(
            world.producer.clone(),
            world.layout.commands(),
            plan.clone(),
            shard,
            c.raw_round_pause,
            counters.clone(),
        ));
    }
    let mut http_tasks = JoinSet::new();
    for client in 0..plan.ingress.len() {
        http_tasks.spawn(traffic::ingress_client(
            http.clone(),
            target.clone(),
            plan.clone(),
            client,
            counters.clone(),
            first_error.clone(),
            submissions.clone(),
        ));
    }
    let bulk = tokio::spawn(traffic::bulk_uploader(
        http.clone(),
        target.clone(),
        plan.clone(),
        world.layout.domain().to_owned(),
        c.bulk_pause,
        counters.clone(),
        first_error.clone(),
    ));
    let reuse_stop = Stop::default();
    let reuse = tokio::spawn(key_reuse(
        world.producer.clone(),
        world.layout.commands(),
        plan.clone(),
        tail.clone(),
        counters.clone(),
        reuse_stop.clone(),
    ));

    let mut load = LoadTasks {
        raw: raw_tasks,
        http: http_tasks,
        bulk,
    };
    let mut chaos = direct(c, &plan, world, &mut load, &counters, started).await?;
    let bulk = load.bulk;
    let uploaded = bulk
        .await
        .map_err(|e| ChaosError::Process(format!("bulk uploader panicked: {e}")))?;
    let load_time = started.elapsed();
    eprintln!(
        "chaos: load sent in {load_time:?}; {} kills; waiting for every answer",
        chaos.kills
    );

    // Drain: every submission answered (terminal), then the DLQ as it stands.
    let submissions = submissions.lock().expect("submissions lock").clone();
    let tracked = Tracked::new(&plan, &submissions, &uploaded);
    let drained = wait_terminal(&tail, &tracked, c.drain_timeout, world, &mut chaos, false).await?;
    reuse_stop.cancel();
    reuse
        .await
        .map_err(|e| ChaosError::Process(format!("key reuse panicked: {e}")))??;
    // Key-reuse duplicates must be answered too before the mark.
    wait_terminal(&tail, &tracked, c.drain_timeout, world, &mut chaos, false).await?;
    let settle_time = started.elapsed();
    let dlq_before = read_dlq(&world.settings, &world.layout.dlq(), Duration::from_secs(2))?;
    let exhausted = dlq_before
        .iter()
        .filter(|e| e.reason == "RETRIES_EXHAUSTED")
        .count();
    let mark = world.master.history_mark().await?;
    let history_before = world.master.history().await?;
    let expected: Vec<(String, i64)> = plan
        .commands
        .iter()
        .map(|c| (c.entity.clone(), c.seq))
        .collect();
    let applied_before: HashSet<(&str, i64)> = history_before
        .iter()
        .map(|r| (r.entity.as_str(), r.seq))
        .collect();
    let missing_before = expected
        .iter()
        .filter(|(e, s)| !applied_before.contains(&(e.as_str(), *s)))
        .count();

    // Fix the master, replay what exhausted its retries.
    world.master.fix().await?;
    eprintln!("chaos: master fixed; replaying {exhausted} RETRIES_EXHAUSTED records with `writ dlq replay`");
    let (replay_ok, replay_out, replay_err, replay_status) =
        replay_dlq(world, &c.world.kafka).await?;
    let all_applied =
        wait_terminal(&tail, &tracked, c.drain_timeout, world, &mut chaos, true).await?;
    let total_time = started.elapsed();

    // Evidence.
    let history = world.master.history().await?;
    let dlq_after = read_dlq(&world.settings, &world.layout.dlq(), Duration::from_secs(2))?;
    let terminal = tracked.terminal(&tail);
    let (overtaken, replay_rows) = verify::replay_overtaken(&history, mark);
    let (status_events, undecodable) = tail.counts();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for e in &dlq_before {
        // Which topic a dead letter came from tells interactive from bulk batches.
        let from = e.original_topic.rsplit('.').next().unwrap_or("?");
        *reasons.entry(format!("{} ({from})", e.reason)).or_default() += 1;
    }
    let n = |a: &std::sync::atomic::AtomicUsize| a.load(Ordering::Relaxed);

    let (order, first_violation) = verify::order_violations(&history, mark);
    let lost = verify::lost(&expected, &history);
    let evidence = world.explain_losses(&lost).await?;
    let mut checks = verify::exactly_once_of_delivered(&expected, &history, &evidence);
    // Commands the broker skipped never reach a terminal state, so the waits
    // for one time out; that is no unanswered request when they explain it.
    let terminal_check = verify::all_terminal_but_skipped(&terminal, evidence.skipped.len());
    let skips_explain_the_wait =
        !evidence.skipped.is_empty() && terminal_check.verdict == verify::Verdict::Pass;
    checks.extend([
        order,
        verify::poison_dead_lettered(&plan.poison, &dlq_after),
        terminal_check,
        verify::other_payload_refused(n(&counters.other_sent), n(&counters.other_422), n(&counters.raw_reused), &history),
        verify::same_payload_answered(n(&counters.same_sent), n(&counters.same_2xx), n(&counters.same_replayed)),
        verify::replay_completed(exhausted, missing_before, &history, mark),
        Check {
            name: "the chaos happened (kills, scale-out, ingress restart, faults)".into(),
            verdict: if chaos.kills >= 3
                && chaos.scaled_at.is_some()
                && chaos.ingress_restarted_at.is_some()
                && (c.plan.flaky == 0 || exhausted > 0)
            {
                verify::Verdict::Pass
            } else {
                verify::Verdict::Fail
            },
            detail: format!(
                "{} SIGKILLs ({} of the bulk worker), scaled 1->3 at {}, ingress restarted at {}, {exhausted} RETRIES_EXHAUSTED",
                chaos.kills,
                chaos.bulk_kills,
                secs(chaos.scaled_at),
                secs(chaos.ingress_restarted_at)
            ),
        },
        Check {
            name: "every client request answered as expected".into(),
            verdict: if n(&counters.unexpected) == 0
                && replay_ok
                && ((drained && all_applied) || skips_explain_the_wait)
            {
                verify::Verdict::Pass
            } else {
                verify::Verdict::Fail
            },
            detail: format!(
                "{} unexpected answers{}; replay exit {}{}; drained {drained}, all applied after replay {all_applied}",
                n(&counters.unexpected),
                first_error.get().map(|e| format!(" (first: {e})")).unwrap_or_default(),
                replay_status,
                if replay_ok { String::new() } else { format!(": {replay_err}") },
            ),
        },
        Check::note(
            "replayed commands applied after a newer write of their entity",
            format!(
                "{overtaken} entities of {replay_rows} replayed writes: the DLQ does not hold back an entity's later commands, so a replay lands out of order and the master keeps the older value"
            ),
        ),
    ]);
    if let Some(entity) = first_violation {
        // Where the out-of-order entity's dead letters came from and in which order.
        let trail: Vec<String> = dlq_before
            .iter()
            .filter(|e| e.reason == "RETRIES_EXHAUSTED")
            .filter(|e| e.key.as_deref() == Some(entity.as_str()))
            .map(|e| {
                format!(
                    "dlq@{} {} from {}:{} by {} ({} attempts)",
                    e.position.1,
                    e.id.as_deref().unwrap_or("-"),
                    e.original_position.0,
                    e.original_position.1,
                    e.worker,
                    e.attempts
                )
            })
            .collect();
        checks.push(Check::note(
            &format!("dead letters of {entity}, in DLQ order"),
            trail.join("; "),
        ));
    }
    if undecodable > 0 {
        checks.push(Check::note(
            "undecodable status events",
            undecodable.to_string(),
        ));
    }
    let valid = plan.commands.len() as f64;
    let figures = vec![
        ("commands (unique valid)".into(), format!(
            "{} = raw {} + CP-2 {} + CP-3 {}",
            plan.commands.len(),
            plan.count(Channel::Raw),
            plan.count(Channel::Ingress),
            plan.count(Channel::Bulk)
        )),
        ("entities".into(), c.plan.entities.to_string()),
        ("duplicates sent".into(), format!(
            "{} (raw same payload + key reuse {}, ingress same {} / other {}, bulk re-uploads {} replayed of {}; {} uploads resumed after an interrupted attempt)",
            plan.duplicates(),
            n(&counters.raw_reused),
            n(&counters.same_sent),
            n(&counters.other_sent),
            n(&counters.bulk_resend_replayed),
            n(&counters.bulk_resent),
            n(&counters.bulk_resumed)
        )),
        ("poison sent".into(), plan.poison.len().to_string()),
        ("master faults".into(), format!(
            "40001 on {:.1}% of master {}, {} ms spikes on {:.1}%, {} flaky rows",
            c.faults.error_probability * 100.0,
            if c.faults.per_statement { "write statements" } else { "transactions" },
            c.faults.spike_ms,
            c.faults.spike_probability * 100.0,
            c.plan.flaky
        )),
        ("DLQ before replay".into(), reasons.iter().map(|(r, n)| format!("{r} {n}")).collect::<Vec<_>>().join(", ")),
        ("replay".into(), replay_out.lines().last().unwrap_or("").to_owned()),
        ("load sent in".into(), format!("{:.1} s", load_time.as_secs_f64())),
        ("all answered after".into(), format!("{:.1} s ({:.0} commands/s end to end)", settle_time.as_secs_f64(), valid / settle_time.as_secs_f64())),
        ("done incl. replay".into(), format!("{:.1} s", total_time.as_secs_f64())),
        ("status events read".into(), status_events.to_string()),
        ("ingress requests".into(), format!(
            "{} ({} retried: {}; {} errors below HTTP or 5xx)",
            counters.requests.load(Ordering::Relaxed),
            n(&counters.http_retries),
            counters
                .retry_reasons
                .lock()
                .expect("retry reasons lock")
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", "),
            counters.request_errors.load(Ordering::Relaxed)
        )),
        ("peak RSS".into(), chaos.peak_rss.iter().map(|(k, v)| format!("{k} {} MiB", v >> 20)).collect::<Vec<_>>().join(", ")),
    ];
    Ok(RunReport { checks, figures })
}

/// The load's tasks, watched by the director.
struct LoadTasks {
    raw: JoinSet<Result<(), ChaosError>>,
    http: JoinSet<()>,
    bulk: tokio::task::JoinHandle<Vec<UploadedJob>>,
}

/// The director: kills a worker every `kill_every`, scales the interactive
/// group from 1 to 3 at 30% of the load and restarts the ingress at half of
/// the CP-2 traffic, until every load task has finished.
async fn direct(
    c: &RunConfig,
    plan: &Plan,
    world: &mut World,
    load: &mut LoadTasks,
    counters: &Counters,
    started: Instant,
) -> Result<Chaos, ChaosError> {
    let ingress_items: usize = plan.ingress.iter().map(Vec::len).sum();
    let total_items = plan.raw.iter().flatten().map(Vec::len).sum::<usize>()
        + ingress_items
        + plan.bulk.iter().map(|j| j.lines.len()).sum::<usize>();
    let mut chaos = Chaos::default();
    let mut rng = StdRng::seed_from_u64(c.plan.seed ^ 0x5eed);
    let mut next_kill = Instant::now() + c.kill_every;
    loop {
        while let Some(done) = load.raw.try_join_next() {
            done.map_err(|e| ChaosError::Process(format!("raw producer panicked: {e}")))??;
        }
        while let Some(done) = load.http.try_join_next() {
            done.map_err(|e| ChaosError::Process(format!("ingress client panicked: {e}")))?;
        }
        if load.raw.is_empty() && load.http.is_empty() && load.bulk.is_finished() {
            return Ok(chaos);
        }
        world.reap_unexpected().await?;
        sample_rss(world, &mut chaos.peak_rss);
        let sent = counters.raw_produced.load(Ordering::Relaxed)
            + counters.ingress_done.load(Ordering::Relaxed)
            + counters.bulk_lines.load(Ordering::Relaxed);
        if chaos.scaled_at.is_none() && sent * 10 >= total_items * 3 {
            world.add_worker()?;
            world.add_worker()?;
            chaos.scaled_at = Some(started.elapsed());
            eprintln!("chaos: scaled workers 1 -> 3 at {:?}", started.elapsed());
        }
        let ingress_done = counters.ingress_done.load(Ordering::Relaxed);
        if chaos.ingress_restarted_at.is_none() && ingress_done * 2 >= ingress_items {
            if let Some(p) = world.ingress.as_mut() {
                p.kill_and_restart().await?;
            }
            chaos.ingress_restarted_at = Some(started.elapsed());
            eprintln!(
                "chaos: ingress SIGKILLed and restarted at {:?}",
                started.elapsed()
            );
        }
        if Instant::now() >= next_kill {
            // Every fourth kill hits the bulk worker, the rest a random interactive one.
            if chaos.kills % 4 == 3 {
                if let Some(p) = world.bulk_worker.as_mut() {
                    p.kill_and_restart().await?;
                    chaos.bulk_kills += 1;
                }
            } else {
                let i = rng.random_range(0..world.workers.len());
                world.workers[i].kill_and_restart().await?;
            }
            chaos.kills += 1;
            next_kill = Instant::now() + c.kill_every;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `writ dlq replay` of the RETRIES_EXHAUSTED records, as an operator runs it:
/// (succeeded, stdout, stderr, exit status).
async fn replay_dlq(
    world: &World,
    kafka: &str,
) -> Result<(bool, String, String, std::process::ExitStatus), ChaosError> {
    let out = tokio::process::Command::new(&world.binaries.cli)
        .args([
            "dlq",
            "replay",
            "--domain",
            world.layout.domain(),
            "-b",
            kafka,
        ])
        .args(["--reason", "RETRIES_EXHAUSTED", "--name", "chaos", "--yes"])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| ChaosError::io("running `writ dlq replay`", e))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        out.status,
    ))
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(
        || "never".to_owned(),
        |d| format!("{:.1}s", d.as_secs_f64()),
    )
}

/// A cancellation flag (tokio-util is not a dependency of this crate).
#[derive(Clone, Default)]
struct Stop(Arc<std::sync::atomic::AtomicBool>);

impl Stop {
    fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Re-sends applied raw commands under their key with another payload, as a
/// producer reusing an idempotency key would; the inbox must keep the first.
async fn key_reuse(
    producer: writ_kafka::RecordProducer,
    topic: String,
    plan: Arc<Plan>,
    tail: Arc<StatusTail>,
    counters: Arc<Counters>,
    stop: Stop,
) -> Result<(), ChaosError> {
    let mut pending: Vec<usize> = plan.reuse_candidates.clone();
    let mut sent = 0;
    while sent < plan.raw_reuse && !pending.is_empty() {
        let ids: Vec<Uuid> = pending
            .iter()
            .map(|&i| traffic::raw_submission(&plan.commands[i]))
            .collect();
        let states = tail.states(&ids);
        let mut records = Vec::new();
        let mut keep = Vec::new();
        for (&i, s) in pending.iter().zip(states) {
            let applied = s.is_some_and(|s| s.state == SubmissionState::Applied);
            if applied && sent + records.len() < plan.raw_reuse {
                records.push(traffic::reused_record(&topic, &plan.commands[i]));
            } else {
                keep.push(i);
            }
        }
        pending = keep;
        for r in producer.send_all(&records).await {
            r?;
        }
        sent += records.len();
        counters
            .raw_reused
            .fetch_add(records.len(), Ordering::Relaxed);
        counters
            .raw_produced
            .fetch_add(records.len(), Ordering::Relaxed);
        if stop.is_cancelled() && records.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(())
}

/// The submissions whose final state is checked.
struct Tracked {
    /// Valid commands with a known submission id.
    valid: Vec<Uuid>,
    /// Bulk lines, resolved to ids through the status topic.
    bulk_lines: Vec<(String, i64)>,
    /// Valid commands whose id could not be known (never accepted by the ingress).
    unknown: usize,
    /// Poison records with an identity.
    poison: Vec<Uuid>,
}

impl Tracked {
    fn new(plan: &Plan, submissions: &[(usize, Uuid)], uploaded: &[UploadedJob]) -> Self {
        let mut valid: Vec<Uuid> = plan
            .commands
            .iter()
            .filter(|c| c.channel == Channel::Raw)
            .map(traffic::raw_submission)
            .collect();
        let accepted: HashMap<usize, Uuid> = submissions.iter().copied().collect();
        valid.extend(accepted.values());
        let mut bulk_lines = Vec::new();
        for j in uploaded {
            for line in 1..=j.lines as i64 {
                bulk_lines.push((j.job_id.clone(), line));
            }
        }
        let unknown = plan.count(Channel::Ingress) - accepted.len() + plan.count(Channel::Bulk)
            - bulk_lines.len().min(plan.count(Channel::Bulk));
        let poison = plan
            .poison
            .iter()
            .filter(|p| p.kind.has_identity())
            .map(|p| writ_core::submission_id(RAW_SOURCE, &p.tag))
            .collect();
        Self {
            valid,
            bulk_lines,
            unknown,
            poison,
        }
    }

    /// Final states: `want_applied` asks valid commands to be `APPLIED` (after
    /// the replay) rather than merely terminal.
    fn tally(&self, tail: &StatusTail, want_applied: bool) -> (Terminal, bool) {
        let mut t = Terminal {
            tracked: self.valid.len() + self.bulk_lines.len() + self.poison.len(),
            missing: self.unknown,
            ..Terminal::default()
        };
        let mut valid_states = tail.states(&self.valid);
        for (job, line) in &self.bulk_lines {
            valid_states.push(tail.job_line(job, *line).and_then(|id| tail.get(&id)));
        }
        for s in valid_states {
            match s {
                None => t.missing += 1,
                Some(s) if !s.state.is_terminal() => t.pending += 1,
                Some(s) if s.state != SubmissionState::Applied => t.valid_not_applied += 1,
                Some(_) => {}
            }
        }
        for s in tail.states(&self.poison) {
            match s {
                None => t.missing += 1,
                Some(s) if !s.state.is_terminal() => t.pending += 1,
                Some(s) if s.state != SubmissionState::DeadLettered => t.poison_not_dead += 1,
                Some(_) => {}
            }
        }
        let done = t.missing == 0
            && t.pending == 0
            && t.poison_not_dead == 0
            && (!want_applied || t.valid_not_applied == 0);
        (t, done)
    }

    fn terminal(&self, tail: &StatusTail) -> Terminal {
        self.tally(tail, true).0
    }
}

/// Waits until every tracked submission is terminal (or applied); false on timeout.
async fn wait_terminal(
    tail: &StatusTail,
    tracked: &Tracked,
    timeout: Duration,
    world: &mut World,
    chaos: &mut Chaos,
    want_applied: bool,
) -> Result<bool, ChaosError> {
    let deadline = Instant::now() + timeout;
    let mut last_print = Instant::now();
    loop {
        let (t, done) = tracked.tally(tail, want_applied);
        if done {
            return Ok(true);
        }
        if Instant::now() > deadline {
            eprintln!("chaos: gave up waiting after {timeout:?}: {t:?}");
            return Ok(false);
        }
        if last_print.elapsed() > Duration::from_secs(10) {
            eprintln!("chaos: waiting: {t:?}");
            last_print = Instant::now();
        }
        world.reap_unexpected().await?;
        sample_rss(world, &mut chaos.peak_rss);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn sample_rss(world: &World, peak: &mut BTreeMap<String, u64>) {
    for p in world.procs() {
        if let Some(rss) = p.rss_bytes() {
            let e = peak.entry(p.name.clone()).or_default();
            *e = (*e).max(rss);
        }
    }
}
