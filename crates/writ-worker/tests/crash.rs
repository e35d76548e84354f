//! The worker as a separate process, killed without warning mid-batch and
//! restarted, and stopped with SIGTERM under load: every command applied
//! exactly once, per-entity order intact, clean exit on SIGTERM.

mod support;

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{worker_binary, Stack};
use writ_core::SubmissionState;

fn spawn_worker(config: &std::path::Path) -> Child {
    Command::new(worker_binary())
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn writ-worker")
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) with a pid we own; no memory is touched.
    let rc = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(rc, 0, "kill({}, {sig})", child.id());
}

/// Asserts exactly-once and per-entity order from the master's own history.
async fn assert_exactly_once_in_order(stack: &Stack, entities: usize, per_entity: i64) {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT customer_id, seq FROM customer_history ORDER BY id")
            .fetch_all(stack.pool())
            .await
            .unwrap();
    assert_eq!(
        rows.len(),
        entities * per_entity as usize,
        "every command applied exactly once"
    );
    let unique: HashSet<_> = rows.iter().collect();
    assert_eq!(unique.len(), rows.len(), "no command applied twice");
    let mut last: HashMap<&str, i64> = HashMap::new();
    for (customer, seq) in &rows {
        let prev = last.insert(customer.as_str(), *seq).unwrap_or(0);
        assert_eq!(*seq, prev + 1, "{customer}: seq {seq} applied after {prev}");
    }
}

fn commands(stack: &Stack, entities: usize, per_entity: i64) -> Vec<writ_kafka::OutgoingRecord> {
    let mut out = Vec::new();
    for seq in 1..=per_entity {
        for e in 0..entities {
            let customer = format!("cust-{e}");
            out.push(stack.upsert(
                &format!("{customer}-{seq}"),
                &customer,
                seq,
                &format!("n{seq}"),
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_workers_lose_nothing_and_apply_nothing_twice() {
    let Some(stack) = Stack::new("crash", 4).await else {
        return;
    };
    if stack.kafka.is_mock() {
        eprintln!("skipping: a separate worker process needs a broker outside this test process (run tests/run.sh)");
        return;
    }
    const ENTITIES: usize = 100;
    const PER_ENTITY: i64 = 100;
    // Restarts alternate between a shared consumer queue and a queue per
    // partition (`partition_queues`), as a rolling change of the option would.
    let configs = [
        stack.worker_config_file("interactive", ""),
        stack.worker_config_file("interactive", "partition_queues = true"),
    ];
    let config = |started: usize| configs[started % 2].path();
    stack.produce(&commands(&stack, ENTITIES, PER_ENTITY)).await;

    let started = Instant::now();
    let mut kills = 0;
    let mut child = spawn_worker(config(0));
    while kills < 4 && stack.history_count().await < (ENTITIES as i64 * PER_ENTITY) {
        tokio::time::sleep(Duration::from_millis(2500 + 700 * kills)).await;
        signal(&child, libc::SIGKILL);
        let _ = child.wait();
        kills += 1;
        eprintln!(
            "killed worker #{kills} at {} applied",
            stack.history_count().await
        );
        child = spawn_worker(config(kills as usize));
    }
    stack
        .wait_history(ENTITIES as i64 * PER_ENTITY, Duration::from_secs(240))
        .await;
    signal(&child, libc::SIGTERM);
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM exits 0, got {status:?}");
    eprintln!("{kills} kills, all applied in {:?}", started.elapsed());

    assert_exactly_once_in_order(&stack, ENTITIES, PER_ENTITY).await;
    let statuses = stack.statuses().await;
    let answered: HashSet<_> = statuses
        .iter()
        .filter(|s| s.state == SubmissionState::Applied)
        .map(|s| s.submission_id)
        .collect();
    assert_eq!(
        answered.len(),
        ENTITIES * PER_ENTITY as usize,
        "every command has an APPLIED status"
    );
    assert!(statuses.iter().all(|s| s.state == SubmissionState::Applied));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_zero_and_a_restart_finishes_the_rest() {
    let Some(stack) = Stack::new("term", 2).await else {
        return;
    };
    if stack.kafka.is_mock() {
        eprintln!("skipping: a separate worker process needs a broker outside this test process (run tests/run.sh)");
        return;
    }
    const ENTITIES: usize = 50;
    const PER_ENTITY: i64 = 60;
    let config = stack.worker_config_file("interactive", "");
    stack.produce(&commands(&stack, ENTITIES, PER_ENTITY)).await;

    let child = spawn_worker(config.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    while stack.history_count().await == 0 {
        assert!(Instant::now() < deadline, "worker never started applying");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal(&child, libc::SIGTERM);
    let stopped = Instant::now();
    let mut child = child;
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "SIGTERM under load exits 0, got {status:?}"
    );
    assert!(
        stopped.elapsed() < Duration::from_secs(15),
        "drained in {:?}",
        stopped.elapsed()
    );
    let at_stop = stack.history_count().await;
    eprintln!(
        "stopped after {at_stop} of {} in {:?}",
        ENTITIES as i64 * PER_ENTITY,
        stopped.elapsed()
    );

    let mut child = spawn_worker(config.path());
    stack
        .wait_history(ENTITIES as i64 * PER_ENTITY, Duration::from_secs(120))
        .await;
    signal(&child, libc::SIGTERM);
    assert!(child.wait().unwrap().success());
    assert_exactly_once_in_order(&stack, ENTITIES, PER_ENTITY).await;
}
