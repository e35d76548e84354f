//! The harness' errors. A failed assertion is not an error (it is a row in
//! the report); these are the reasons a run could not be carried out at all.

use std::path::PathBuf;

/// Why a chaos run or soak could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// The spawned binaries are not built.
    #[error("missing {missing} in {dir}: build them first with `cargo build --bins` (add `--release` for a release run), or point --bin-dir at them")]
    BinariesMissing {
        /// Where they were looked for.
        dir: PathBuf,
        /// The missing file names.
        missing: String,
    },
    /// A setting is unusable.
    #[error("invalid setting: {0}")]
    Config(String),
    /// Kafka refused or failed an operation.
    #[error("kafka: {0}")]
    Kafka(#[from] writ_kafka::KafkaClientError),
    /// A Kafka client could not be configured.
    #[error("kafka settings: {0}")]
    KafkaSettings(#[from] writ_kafka::SettingsError),
    /// The master database failed.
    #[error("postgresql: {0}")]
    Db(#[from] sqlx::Error),
    /// An HTTP call to the ingress failed below HTTP.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// A payload or status event could not be encoded or decoded.
    #[error("codec: {0}")]
    Codec(#[from] writ_codec::CodecError),
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A spawned process misbehaved (exited, never became ready).
    #[error("{0}")]
    Process(String),
}

impl ChaosError {
    /// An I/O error with what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}
