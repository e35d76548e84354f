//! writ's edge service (CP-5 HA shallow copy with later sync, CP-6 dual-copy
//! sync): a local store that accepts writes and serves reads while Kafka and
//! the master are down, an outbox relay that publishes the writes as ordinary
//! commands, a status consumer that maps temp ids to canonical ids, conflict
//! policies, batch sync windows, a partial-copy projection and reconciliation.
//!
//! Usable as a library (`writ dev`, `writ reconcile`, tests) and as the
//! `writ-edge` binary.

pub mod api;
pub mod backoff;
pub mod config;
pub mod metrics;
pub mod reconcile;
pub mod relay;
pub mod resolver;
pub mod service;
pub mod status;
pub mod store;
pub mod sync;

pub use config::EdgeConfig;
pub use reconcile::{ReconcileError, ReconcileReport};
pub use service::{Edge, EdgeError};
pub use store::LocalStore;
pub use sync::{ConflictPolicy, SyncState};

/// Installs the tracing subscriber for the configured log format.
pub fn init_logging(log: &config::LogConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match log.format {
        config::LogFormat::Human => builder.try_init(),
        config::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}
