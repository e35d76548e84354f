//! The CI-size chaos run and a 60-second soak, on the broker and PostgreSQL
//! that `tests/run.sh` starts. The worker, ingress and CLI run as separate
//! processes from `target/<profile>/`, so they must be built
//! (`cargo build --bins`; `cargo nextest run --workspace` builds them).
//! Without a real broker and PostgreSQL the test prints why it skips.

use writ_chaos::binaries::Binaries;
use writ_chaos::plan::PlanConfig;
use writ_chaos::world::WorldConfig;
use writ_chaos::{RunConfig, SoakConfig};

fn services() -> Option<(String, String)> {
    let kafka = std::env::var("WRIT_TEST_KAFKA")
        .ok()
        .filter(|k| !k.trim().is_empty() && k.trim() != "mock");
    let pg = std::env::var("WRIT_TEST_POSTGRES_URL")
        .ok()
        .filter(|p| !p.trim().is_empty());
    match (kafka, pg) {
        (Some(k), Some(p)) => Some((k, p)),
        _ => {
            eprintln!(
                "skipping: the chaos run needs a real broker and PostgreSQL in separate processes \
                 (WRIT_TEST_KAFKA other than `mock` and WRIT_TEST_POSTGRES_URL; run tests/run.sh)"
            );
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_run_and_soak_keep_every_promise() {
    let Some((kafka, postgres)) = services() else {
        return;
    };
    if let Err(e) = Binaries::locate(None) {
        panic!("{e}");
    }
    let world = WorldConfig {
        kafka,
        postgres,
        partitions: 6,
        max_attempts: 3,
        max_elapsed_ms: 10_000,
        bin_dir: None,
        keep_logs: false,
    };

    let run = writ_chaos::run(&RunConfig::new(world.clone(), PlanConfig::ci()))
        .await
        .expect("the chaos run could not be carried out");
    println!("{}", run.render());
    assert!(run.passed(), "chaos run failed:\n{}", run.render());

    let mut soak_world = world;
    soak_world.max_attempts = 8;
    let soak = writ_chaos::soak(&SoakConfig::new(soak_world, 60))
        .await
        .expect("the soak could not be carried out");
    println!("{}", soak.render());
    assert!(soak.passed(), "soak failed:\n{}", soak.render());
}
