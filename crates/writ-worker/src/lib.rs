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
