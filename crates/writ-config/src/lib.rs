//! Layered configuration for writ's binaries (worker, ingress, edge): built-in
//! defaults (the serde defaults of the target type) → the TOML file →
//! `WRIT__SECTION__KEY` environment variables, later wins.
//!
//! One loader, so every binary layers, names unknown keys and reports all of
//! its problems the same way; each binary keeps its own consistency checks.

use std::path::Path;

mod process;
pub use process::{report_failure, shutdown_on_signal};

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::de::DeserializeOwned;

/// The environment prefix: `WRIT__KAFKA__BOOTSTRAP_SERVERS` sets `[kafka] bootstrap_servers`.
pub const ENV_PREFIX: &str = "WRIT__";

/// Loads `T` from `file` (if given) overlaid with the `WRIT__*` environment.
/// The error lists every problem, one per line.
pub fn load<T: DeserializeOwned>(file: Option<&Path>) -> Result<T, String> {
    let mut figment = Figment::new();
    if let Some(path) = file {
        // figment treats a missing file as empty; a typo in a path must not
        // silently start a service on defaults.
        if !path.exists() {
            return Err(format!("config file {} does not exist", path.display()));
        }
        figment = figment.merge(Toml::file(path));
    }
    extract(figment.merge(Env::prefixed(ENV_PREFIX).split("__")))
}

/// Parses `T` from a TOML string, without the environment (tests, `writ dev`).
pub fn from_toml<T: DeserializeOwned>(toml: &str) -> Result<T, String> {
    extract(Figment::new().merge(Toml::string(toml)))
}

/// The `[log]` section every binary shares.
#[derive(Debug, Clone, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `human` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info,writ_worker=debug` (`RUST_LOG` wins when set).
    pub filter: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line (with the current span), for log search.
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            filter: "info".to_owned(),
        }
    }
}

/// Installs the process's tracing subscriber (stderr) for the `[log]` section;
/// a second call is a no-op, so embedding several components in one process works.
pub fn init_logging(log: &LogConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}

fn extract<T: DeserializeOwned>(figment: Figment) -> Result<T, String> {
    figment.extract().map_err(|errors| {
        errors
            .into_iter()
            .map(|e| format!("  - {e}"))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        name: String,
        #[serde(default)]
        kafka: Kafka,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Kafka {
        #[serde(default)]
        bootstrap_servers: String,
    }

    #[test]
    // figment's `Jail` closure returns figment's own (large) error type.
    #[allow(clippy::result_large_err)]
    fn the_environment_overrides_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                "name = \"file\"\n[kafka]\nbootstrap_servers = \"a:1\"\n",
            )?;
            jail.set_env("WRIT__KAFKA__BOOTSTRAP_SERVERS", "b:2");
            let s: Sample = load(Some(Path::new("c.toml"))).unwrap();
            assert_eq!(s.name, "file");
            assert_eq!(s.kafka.bootstrap_servers, "b:2");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_missing_files_are_named() {
        let err = from_toml::<Sample>("name = \"x\"\nnmae = \"typo\"\n").unwrap_err();
        assert!(err.contains("nmae"), "{err}");
        let err = load::<Sample>(Some(Path::new("/no/such/writ.toml"))).unwrap_err();
        assert!(err.contains("/no/such/writ.toml"), "{err}");
    }
}
