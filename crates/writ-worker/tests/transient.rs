//! Injected transient master failures on real components: PostgreSQL
//! connections killed under load, and an HTTP master answering 503/429 with
//! Retry-After. Everything applies eventually, exactly once, and the worker
//! slows down while the master pushes back.

mod support;

use std::time::Duration;

use support::Stack;
use tokio_util::sync::CancellationToken;
use writ_worker::{Worker, WorkerConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connection_drops_are_retried_until_everything_applies_once() {
    let Some(stack) = Stack::new("pgdrop", 2).await else {
        return;
    };
    const N: i64 = 2000;
    let records: Vec<_> = (0..N)
        .map(|i| {
            stack.upsert(
                &format!("d-{i}"),
                &format!("cust-{}", i % 40),
                i / 40 + 1,
                "n",
            )
        })
        .collect();
    stack.produce(&records).await;

    let config = WorkerConfig::from_toml(&stack.worker_toml("interactive", "")).unwrap();
    let worker = Worker::connect(config).await.unwrap();
    let metrics_addr = worker.local_addr().unwrap();
    let token = CancellationToken::new();
    let handle = tokio::spawn(worker.run(token.clone()));

    // Kill every other session on the master database, repeatedly, while the worker applies.
    let killer = {
        let pool = stack.pool().clone();
        tokio::spawn(async move {
            let mut killed = 0i64;
            for _ in 0..30 {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE datname = current_database() AND pid <> pg_backend_pid()",
                )
                .fetch_one(&pool)
                .await
                .unwrap_or(0);
                killed += n;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            killed
        })
    };

    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM customer_history")
            .fetch_one(stack.pool())
            .await
            .unwrap_or(0);
        if applied >= N {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stalled at {applied}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let killed = killer.await.unwrap();
    let metrics = reqwest_get(&format!("http://{metrics_addr}/metrics")).await;
    token.cancel();
    handle.await.unwrap().unwrap();

    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT (customer_id, seq)) FROM customer_history")
            .fetch_one(stack.pool())
            .await
            .unwrap();
    assert_eq!(
        (rows, distinct),
        (N, N),
        "exactly once despite {killed} killed connections"
    );
    assert!(killed > 0, "the test must actually have killed connections");
    assert!(
        metrics.contains("writ_apply_retries_total"),
        "retries are counted:\n{metrics}"
    );
}

async fn reqwest_get(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}
