//! The reason replay is safe: replaying commands that were already applied
//! changes nothing on the master, because the worker's inbox recognizes
//! them; it only re-emits their status. The real worker runs in-process
//! against PostgreSQL; `writ dlq replay` runs as the operator's binary.

mod support;

use std::time::Duration;

use support::{command, dead_letter, writ, Domain};
use tokio_util::sync::CancellationToken;
use writ_codec::{PayloadCodec, SchemaCatalog};
use writ_core::dlq::DlqReason;
use writ_core::{StatusEvent, SubmissionState};
use writ_worker::{Worker, WorkerConfig};

use writ_testkit::CUSTOMERS_MASTER_DDL as MASTER_DDL;

fn worker_toml(d: &Domain, pg_url: &str) -> String {
    writ_testkit::customers_worker_toml(d.domain(), "interactive", d.bootstrap(), pg_url, "")
}

async fn statuses(d: &Domain, codec: &PayloadCodec) -> Vec<StatusEvent> {
    let mut out = Vec::new();
    for r in d.read_all(&d.layout.status()) {
        let ct = r
            .headers
            .get_str("content-type")
            .unwrap_or("application/avro")
            .to_owned();
        out.push(
            codec
                .decode_status(&ct, r.value.as_deref().unwrap())
                .await
                .unwrap(),
        );
    }
    out
}

async fn wait_statuses(d: &Domain, codec: &PayloadCodec, n: usize) -> Vec<StatusEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let s = statuses(d, codec).await;
        if s.len() >= n {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} status events",
            s.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_applied_commands_is_a_no_op_on_the_master() {
    let Some(pg) = writ_testkit::postgres().await else {
        eprintln!("skipping: no PostgreSQL (run tests/run.sh)");
        return;
    };
    writ_testkit::init_tracing();
    let d = Domain::new("replay-inbox", 1, 1).await;
    sqlx::raw_sql(MASTER_DDL).execute(pg.pool()).await.unwrap();
    let codec = PayloadCodec::new(SchemaCatalog::builtin(), None).unwrap();

    let config = WorkerConfig::from_toml(&worker_toml(&d, pg.url())).unwrap();
    let worker = Worker::connect(config).await.unwrap();
    let token = CancellationToken::new();
    let handle = tokio::spawn(worker.run(token.clone()));

    let originals = [
        command(&d.layout, "inbox-1", "cust-1", "Ada"),
        command(&d.layout, "inbox-2", "cust-2", "Grace"),
        command(&d.layout, "inbox-3", "cust-3", "Barbara"),
    ];
    d.produce(&originals).await;
    let first = wait_statuses(&d, &codec, 3).await;
    assert!(
        first.iter().all(|s| s.state == SubmissionState::Applied),
        "{first:?}"
    );
    let history = |pool: &sqlx::PgPool| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM customer_history")
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(history(pg.pool()).await, 3);

    // The applied commands land in the DLQ, as a worker that lost its
    // acknowledgements would have put them there.
    let applied = d.read_all(&d.layout.commands());
    assert_eq!(applied.len(), 3);
    for r in &applied {
        let original = writ_kafka::OutgoingRecord {
            topic: r.topic.clone(),
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r.headers.clone(),
            partition: None,
        };
        let letter = dead_letter(
            &d.layout,
            &original,
            r.partition,
            r.offset,
            DlqReason::RetriesExhausted,
            "MASTER_UNAVAILABLE",
            0,
        );
        d.produce(&[letter]).await;
    }

    let run = writ(
        &[
            "dlq",
            "replay",
            "--domain",
            d.domain(),
            "--name",
            "inbox",
            "--yes",
        ],
        d.bootstrap(),
        "",
    );
    assert!(
        run.success()
            .contains("selected=3 replayed=3 skipped=0 failed=0"),
        "{}",
        run.stdout
    );
    // Every replayed command is answered again, with its original outcome.
    let all = wait_statuses(&d, &codec, 6).await;
    writ_testkit::cancel_and_join(&token, handle, Duration::from_secs(20))
        .await
        .unwrap();

    for again in &all[3..] {
        let before = first
            .iter()
            .find(|s| s.submission_id == again.submission_id)
            .expect("a re-emitted status for a known submission");
        assert_eq!(again.state, SubmissionState::Applied);
        assert_eq!(
            (
                &again.canonical_id,
                again.master_version,
                &again.payload_fingerprint
            ),
            (
                &before.canonical_id,
                before.master_version,
                &before.payload_fingerprint
            )
        );
    }
    assert_eq!(
        history(pg.pool()).await,
        3,
        "the master was not written again"
    );
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM customers ORDER BY customer_id")
            .fetch_all(pg.pool())
            .await
            .unwrap();
    assert_eq!(versions, [1, 1, 1]);
    assert_eq!(
        d.read_all(&d.layout.commands()).len(),
        6,
        "the replays did reach the command topic"
    );
}
