//! `writ dev` end to end: the in-process stack on the embedded broker and
//! SQLite, driven by `writ demo` through all six patterns.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use writ_dev::{demo, DemoTarget, DevOptions, DevStack};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_demo_applies_all_six_patterns_on_the_dev_stack() {
    writ_testkit::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let stack = DevStack::start(DevOptions {
        data_dir: dir.path().to_owned(),
        ingress_port: 0,
        edge_port: 0,
        worker_port: 0,
        ..DevOptions::default()
    })
    .await
    .unwrap();
    let mut target = DemoTarget::new(stack.ingress_url(), stack.edge_url());
    target.bulk_lines = 200;
    target.timeout = Duration::from_secs(60);
    let stop = CancellationToken::new();
    let running = tokio::spawn(stack.run(stop.clone()));

    let rows = demo::run(target).await.unwrap();
    print!("{}", demo::table(&rows));
    for row in &rows {
        assert!(row.ok, "{}: {}", row.pattern, row.final_state);
    }
    // Canonical ids come from the master via the worker's status events.
    assert_eq!(
        rows[0]
            .canonical_id
            .as_deref()
            .map(|c| c.starts_with("demo-")),
        Some(true)
    );

    writ_testkit::cancel_and_join(&stop, running, Duration::from_secs(30))
        .await
        .unwrap();
}
