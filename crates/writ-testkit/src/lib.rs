//! Test support for writ (dev-dependency only): picks the real components a test runs against.
//!
//! Per DESIGN.md "Where things run": a broker and a PostgreSQL given by `tests/run.sh`
//! (`WRIT_TEST_KAFKA`, `WRIT_TEST_POSTGRES_URL`) come first, then testcontainers when a
//! Docker engine answers, then the embedded librdkafka mock cluster (Kafka) or a skip
//! (PostgreSQL). Everything here is cheap to call from many tests in one process.

mod docker;
pub mod fixtures;
pub mod kafka;
pub mod logs;
pub mod names;
pub mod postgres;
pub mod python;
pub mod registry;
pub mod tasks;

pub use fixtures::{customers_master_toml, customers_worker_toml, CUSTOMERS_MASTER_DDL};
pub use kafka::{kafka, kafka_with_brokers, mock_kafka, BrokerKind, TestKafka};
pub use logs::{line_at, LogCapture};
pub use names::{unique_db_name, unique_group, unique_name, unique_topic};
pub use postgres::{postgres, TestPostgres};
pub use python::{python, repo_root, run_interop, run_interop_with_timeout};
pub use tasks::cancel_and_join;

use std::sync::Once;

/// Installs a test-friendly tracing subscriber once per process (respects `RUST_LOG`, default `info`).
pub fn init_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        // `try_init` fails if a test binary installed its own subscriber: keep theirs.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}
