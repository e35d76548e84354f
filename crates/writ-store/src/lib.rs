//! Stores and master adapters: the [`Master`] trait the worker applies
//! commands through, and its implementations — SQL masters (PostgreSQL and
//! SQLite) that write the inbox row in the same transaction as the change,
//! and HTTP masters whose inbox lives in writ's own store.
//!
//! A user with another system of record implements [`Master`] and plugs it
//! into the worker runtime; nothing else in writ changes.

pub mod http;
pub mod master;
pub mod sql;

pub use master::{ApplyResult, Command, Master, MasterError, Outcome};

use std::sync::Arc;

use serde::Deserialize;

/// Which master a worker applies to, as configured (`[master]` with `kind = ...`).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum MasterConfig {
    /// A PostgreSQL database, mapped declaratively per command type.
    Postgres(sql::SqlMasterConfig),
    /// A SQLite database, mapped declaratively per command type.
    Sqlite(sql::SqlMasterConfig),
    /// An HTTP API, one request template per command type.
    Http(http::HttpMasterConfig),
}

/// Connects the configured master (runs the inbox migrations it needs).
pub async fn connect(config: &MasterConfig) -> Result<Arc<dyn Master>, MasterError> {
    Ok(match config {
        MasterConfig::Postgres(c) => {
            Arc::new(sql::SqlMaster::connect(sql::Dialect::Postgres, c).await?)
        }
        MasterConfig::Sqlite(c) => {
            Arc::new(sql::SqlMaster::connect(sql::Dialect::Sqlite, c).await?)
        }
        MasterConfig::Http(c) => Arc::new(http::HttpMaster::connect(c).await?),
    })
}
