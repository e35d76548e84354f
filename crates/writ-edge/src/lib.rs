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

pub use writ_config::init_logging;
