//! SQL masters (PostgreSQL and SQLite): commands are mapped declaratively per
//! type onto tables, and every batch claims its inbox rows, applies the new
//! commands and records their outcomes in one database transaction — the
//! exactly-once effect of DESIGN.md.
//!
//! Layout: `config` (what operators write), `ident`/`values` (checked names
//! and payload values), `plan` (pure batch planning and outcome rules),
//! `inbox` (the dedupe table), `error` (classification), and one file per
//! dialect with its statements (`postgres`: set-based; `sqlite`: per row).
//!
//! Semantics worth knowing (see `plan::precheck`):
//! - A payload path that is absent writes NULL (the worker hands over payloads
//!   with schema defaults filled in); nested objects/arrays are JSON text.
//! - `ce_expectedversion` is checked first: a missing row matches only 0, a
//!   row whose version column is NULL counts as 0; a mismatch is
//!   `Outcome::Conflict` and the row is untouched. A command carrying an
//!   expected version for a mapping without `version_column` is rejected
//!   (`VERSION_UNSUPPORTED`) rather than silently unchecked.
//! - Then the mode: insert on an existing key is `DUPLICATE_KEY`; update and
//!   delete of a missing row are `NOT_FOUND` (the inbox already makes
//!   redeliveries no-ops, so a missing row means the entity is not there).
//!   A delete reports the version it retired the entity at (old + 1).
//! - A missing or null key field is `MISSING_KEY`.
//! - `read` takes an entity key that is the key columns' values joined by
//!   `:` (only the last key column may itself contain `:`).

mod config;
mod error;
mod ident;
mod inbox;
mod plan;
mod postgres;
mod sqlite;
mod values;

pub use config::{Dialect, SqlMasterConfig, TypeMapping, WriteMode};

use std::collections::HashMap;

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{ApplyResult, Command, Master, MasterError, Outcome};
use config::Mapping;
use error::{misconfigured, Failure};
use ident::TableName;

/// A SQL master: a pool, the compiled type mappings and the inbox table.
pub struct SqlMaster {
    dialect: Dialect,
    backend: Backend,
    mappings: HashMap<String, Mapping>,
    inbox: TableName,
}

enum Backend {
    Postgres(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

impl std::fmt::Debug for SqlMaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlMaster")
            .field("dialect", &self.dialect)
            .field("inbox", &self.inbox.to_string())
            .field("types", &self.mappings.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SqlMaster {
    /// Validates the config, opens the pool and creates the inbox table if missing.
    pub async fn connect(
        dialect: Dialect,
        config: &SqlMasterConfig,
    ) -> Result<SqlMaster, MasterError> {
        let mappings = config::compile(config).map_err(misconfigured)?;
        let inbox = TableName::parse(&config.inbox_table)
            .map_err(|e| misconfigured(format!("master.inbox_table: {e}")))?;
        let backend = match dialect {
            Dialect::Postgres => Backend::Postgres(postgres::connect(config, &inbox).await?),
            Dialect::Sqlite => Backend::Sqlite(sqlite::connect(config, &inbox).await?),
        };
        tracing::info!(
            kind = dialect.as_str(),
            url = %config::redact_url(&config.url),
            inbox = %inbox,
            types = mappings.len(),
            "SQL master connected"
        );
        Ok(Self {
            dialect,
            backend,
            mappings,
            inbox,
        })
    }

    async fn run_batch(&self, batch: &[Command]) -> Result<Vec<ApplyResult>, Failure> {
        match &self.backend {
            Backend::Postgres(pool) => {
                postgres::apply(pool, &self.mappings, &self.inbox, batch).await
            }
            Backend::Sqlite(pool) => sqlite::apply(pool, &self.mappings, &self.inbox, batch).await,
        }
    }

    async fn record_single(&self, cmd: &Command, outcome: Outcome) -> Result<ApplyResult, Failure> {
        match &self.backend {
            Backend::Postgres(pool) => {
                postgres::record_single(pool, &self.inbox, cmd, outcome).await
            }
            Backend::Sqlite(pool) => sqlite::record_single(pool, &self.inbox, cmd, outcome).await,
        }
    }
}

#[async_trait]
impl Master for SqlMaster {
    fn kind(&self) -> &'static str {
        self.dialect.as_str()
    }

    fn handles(&self, command_type: &str) -> bool {
        self.mappings.contains_key(command_type)
    }

    async fn apply(&self, batch: &[Command]) -> Result<Vec<ApplyResult>, MasterError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(c) = batch
            .iter()
            .find(|c| !self.handles(&c.envelope.command_type))
        {
            return Err(misconfigured(format!(
                "no mapping for command type {}",
                c.envelope.command_type
            )));
        }
        match self.run_batch(batch).await {
            Ok(results) => Ok(results),
            Err(Failure::Data { code, message }) if batch.len() == 1 => {
                // The transaction rolled back; record the rejection on its own.
                let cmd = &batch[0];
                tracing::debug!(submission_id = %cmd.submission_id, code, "SQL master rejected a command");
                let outcome = Outcome::Rejected {
                    code: code.to_owned(),
                    message,
                };
                self.record_single(cmd, outcome)
                    .await
                    .map(|r| vec![r])
                    .map_err(Failure::into_batch_error)
            }
            Err(f) => Err(f.into_batch_error()),
        }
    }

    async fn read(
        &self,
        command_type: &str,
        entity_key: &str,
    ) -> Result<Option<(serde_json::Value, Option<i64>)>, MasterError> {
        let mapping = self
            .mappings
            .get(command_type)
            .ok_or_else(|| misconfigured(format!("no mapping for command type {command_type}")))?;
        let keys = values::split_entity_key(entity_key, mapping.keys.len()).ok_or_else(|| {
            misconfigured(format!(
                "entity key must be {} values joined by ':'",
                mapping.keys.len()
            ))
        })?;
        match &self.backend {
            Backend::Postgres(pool) => postgres::read(pool, mapping, &keys).await,
            Backend::Sqlite(pool) => sqlite::read(pool, mapping, &keys).await,
        }
        .map_err(Failure::into_batch_error)
    }

    async fn expire_inbox(&self, older_than: OffsetDateTime) -> Result<u64, MasterError> {
        match &self.backend {
            Backend::Postgres(pool) => postgres::expire(pool, &self.inbox, older_than).await,
            Backend::Sqlite(pool) => sqlite::expire(pool, &self.inbox, older_than).await,
        }
        .map_err(Failure::into_batch_error)
    }
}

/// Where each command of a batch stands before the master is touched.
struct Work {
    /// For each batch index, the index of the first command with its submission id.
    first: Vec<usize>,
    /// First occurrences, sorted by submission id (a stable lock order for claims).
    unique: Vec<usize>,
}

impl Work {
    fn new(batch: &[Command]) -> Self {
        let mut by_id: HashMap<Uuid, usize> = HashMap::with_capacity(batch.len());
        let first: Vec<usize> = batch
            .iter()
            .enumerate()
            .map(|(i, c)| *by_id.entry(c.submission_id).or_insert(i))
            .collect();
        let mut unique: Vec<usize> = by_id.into_values().collect();
        unique.sort_by_key(|&i| batch[i].submission_id);
        Self { first, unique }
    }
}

/// A fresh command's pre-decided outcome, or the entity it touches.
fn prepare(mapping: &Mapping, cmd: &Command) -> Result<String, Outcome> {
    if cmd.envelope.expected_version.is_some() && mapping.version.is_none() {
        return Err(plan::rejected(
            "VERSION_UNSUPPORTED",
            "the command carries an expected version but its mapping has no version_column",
        ));
    }
    plan::entity_of(mapping, &cmd.payload).map_err(|path| {
        plan::rejected(
            "MISSING_KEY",
            format!("key field {path} is missing or null"),
        )
    })
}

/// Assembles the answers in input order: fresh outcomes for claimed commands,
/// recorded ones (`duplicate: true`) for the rest.
fn assemble(
    batch: &[Command],
    work: &Work,
    mut fresh: HashMap<usize, Outcome>,
    recorded: &HashMap<Uuid, (Outcome, OffsetDateTime)>,
    now: OffsetDateTime,
) -> Result<Vec<ApplyResult>, Failure> {
    let mut out = Vec::with_capacity(batch.len());
    for (i, cmd) in batch.iter().enumerate() {
        let first = work.first[i];
        let result = if first == i {
            match fresh.remove(&i) {
                Some(outcome) => ApplyResult {
                    outcome,
                    duplicate: false,
                    recorded_at: now,
                },
                None => {
                    let (outcome, at) = recorded.get(&cmd.submission_id).ok_or_else(|| {
                        Failure::Master(MasterError::Unavailable {
                            message: "inbox row vanished while reading a duplicate".into(),
                            retry_after: None,
                        })
                    })?;
                    ApplyResult {
                        outcome: outcome.clone(),
                        duplicate: true,
                        recorded_at: *at,
                    }
                }
            }
        } else {
            // A repeat inside this batch answers like its first occurrence.
            let r: &ApplyResult = &out[first];
            ApplyResult {
                duplicate: true,
                ..r.clone()
            }
        };
        out.push(result);
    }
    Ok(out)
}
