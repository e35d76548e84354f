//! The apply worker: consumes a domain's command (or bulk) topic, applies
//! commands to the master with an exactly-once effect, and publishes status
//! events and dead letters. Usable as a library (`writ dev`, tests) and as
//! the `writ-worker` binary.

pub mod config;
pub mod decode;
pub mod metrics;
pub mod pipeline;
pub mod rate;
pub mod retry;
pub mod runtime;
pub mod server;

pub use config::{Profile, WorkerConfig};
pub use runtime::Worker;

pub use writ_config::init_logging;
