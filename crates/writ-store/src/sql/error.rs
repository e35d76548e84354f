//! Classifies database errors into what the worker can act on: retry
//! (unavailable / throttled), fix the config (misconfigured), or a data
//! problem of the commands themselves (batch failed / rejected). Messages name
//! codes, constraints and columns only — never payload values.

use std::time::Duration;

use sqlx::error::ErrorKind;

use super::config::Dialect;
use crate::MasterError;

/// A failed statement, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The commands' data was refused (constraint, invalid value): a batch of
    /// several is split by the worker, a single command is rejected.
    Data {
        /// Stable code for `Outcome::Rejected`.
        code: &'static str,
        /// What was violated, by name.
        message: String,
    },
    /// Anything else.
    Master(MasterError),
}

impl Failure {
    /// The error for a multi-command batch.
    pub fn into_batch_error(self) -> MasterError {
        match self {
            Self::Data { code, message } => MasterError::BatchFailed {
                message: format!("{code}: {message}"),
            },
            Self::Master(e) => e,
        }
    }
}

/// A `MasterError::Misconfigured`.
pub fn misconfigured(message: impl Into<String>) -> MasterError {
    MasterError::Misconfigured {
        message: message.into(),
    }
}

fn unavailable(message: impl Into<String>, retry_after: Option<Duration>) -> Failure {
    Failure::Master(MasterError::Unavailable {
        message: message.into(),
        retry_after,
    })
}

/// Classifies an sqlx error raised while doing `what`.
pub fn classify(dialect: Dialect, what: &str, e: &sqlx::Error) -> Failure {
    match e {
        sqlx::Error::Database(db) => match dialect {
            Dialect::Postgres => classify_pg(what, db.as_ref()),
            Dialect::Sqlite => classify_sqlite(what, db.as_ref()),
        },
        // sqlx retries refused connections until the acquire timeout, so this
        // is "unreachable" as often as "pool exhausted": retry with backoff.
        sqlx::Error::PoolTimedOut => unavailable(
            format!("{what}: timed out waiting for a connection (unreachable or pool exhausted)"),
            None,
        ),
        sqlx::Error::Configuration(_) | sqlx::Error::Tls(_) => {
            Failure::Master(misconfigured(format!("{what}: {e}")))
        }
        sqlx::Error::ColumnNotFound(c) => {
            Failure::Master(misconfigured(format!("{what}: column {c} not found")))
        }
        sqlx::Error::ColumnDecode { index, .. } => Failure::Master(misconfigured(format!(
            "{what}: column {index} has an unexpected type"
        ))),
        // Io, Protocol, PoolClosed, WorkerCrashed, ...: the connection is gone.
        other => unavailable(format!("{what}: {}", kind_name(other)), None),
    }
}

fn kind_name(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Io(io) => format!("I/O error: {io}"),
        sqlx::Error::Protocol(p) => format!("protocol error: {p}"),
        sqlx::Error::PoolClosed => "pool closed".into(),
        sqlx::Error::WorkerCrashed => "database worker crashed".into(),
        _ => "connection error".into(),
    }
}

fn classify_pg(what: &str, db: &(dyn sqlx::error::DatabaseError + 'static)) -> Failure {
    let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
    let pg = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>();
    let constraint = db.constraint().map(str::to_owned);
    let column = pg.and_then(|p| p.column()).map(str::to_owned);
    let table = db.table().map(str::to_owned);
    let named = |base: &str| {
        let mut m = base.to_owned();
        if let Some(t) = &table {
            m.push_str(&format!(" on table {t}"));
        }
        if let Some(c) = &constraint {
            m.push_str(&format!(" (constraint {c})"));
        }
        if let Some(c) = &column {
            m.push_str(&format!(" (column {c})"));
        }
        m.push_str(&format!(" [SQLSTATE {code}]"));
        m
    };
    let class = code.get(..2).unwrap_or("");
    match (class, code.as_str()) {
        (_, "40001") | (_, "40P01") => unavailable(
            format!("{what}: serialization failure or deadlock [SQLSTATE {code}]"),
            None,
        ),
        (_, "53300") => Failure::Master(MasterError::Throttled {
            message: format!("{what}: too many connections [SQLSTATE 53300]"),
            retry_after: Some(Duration::from_secs(1)),
        }),
        ("08", _) | ("53", _) | ("57", _) | ("58", _) | ("XX", _) | ("55", _) => {
            unavailable(format!("{what}: {} [SQLSTATE {code}]", db.message()), None)
        }
        (_, "23505") => Failure::Data {
            code: "UNIQUE_VIOLATION",
            message: named("unique constraint violated"),
        },
        (_, "23502") => Failure::Data {
            code: "NOT_NULL_VIOLATION",
            message: named("a required column is null"),
        },
        (_, "23503") => Failure::Data {
            code: "FOREIGN_KEY_VIOLATION",
            message: named("foreign key violated"),
        },
        (_, "23514") => Failure::Data {
            code: "CHECK_VIOLATION",
            message: named("check constraint violated"),
        },
        ("23", _) => Failure::Data {
            code: "CONSTRAINT_VIOLATION",
            message: named("constraint violated"),
        },
        // 22xxx: a value the column cannot hold; 21000: one statement touched
        // a row twice (two spellings of one key in a batch).
        ("22", _) | ("21", _) => Failure::Data {
            code: "INVALID_VALUE",
            message: named("a value is invalid for its column"),
        },
        (_, "P0001") => Failure::Data {
            code: "BUSINESS_RULE",
            message: named("the master refused the change"),
        },
        // 42P01 undefined table, 42703 undefined column, 42704 undefined type
        // (the table's row type), 42P10 no unique index for ON CONFLICT, 42501
        // insufficient privilege, ...
        ("42", _) => Failure::Master(misconfigured(format!(
            "{what}: {} [SQLSTATE {code}]",
            db.message()
        ))),
        _ => unavailable(format!("{what}: database error [SQLSTATE {code}]"), None),
    }
}

const SQLITE_ERROR: i64 = 1;
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;
const SQLITE_READONLY: i64 = 8;
const SQLITE_CONSTRAINT: i64 = 19;
const SQLITE_MISMATCH: i64 = 20;
const SQLITE_TOOBIG: i64 = 18;
const SQLITE_CONSTRAINT_TRIGGER: i64 = 1811;

fn classify_sqlite(what: &str, db: &(dyn sqlx::error::DatabaseError + 'static)) -> Failure {
    let extended: i64 = db.code().and_then(|c| c.parse().ok()).unwrap_or(0);
    let primary = extended & 0xff;
    let msg = db.message();
    match primary {
        SQLITE_BUSY | SQLITE_LOCKED => unavailable(
            format!("{what}: database is busy or locked (code {extended})"),
            Some(Duration::from_millis(100)),
        ),
        SQLITE_CONSTRAINT if extended == SQLITE_CONSTRAINT_TRIGGER => Failure::Data {
            code: "BUSINESS_RULE",
            message: "the master refused the change (trigger)".into(),
        },
        SQLITE_CONSTRAINT => Failure::Data {
            code: match db.kind() {
                ErrorKind::UniqueViolation => "UNIQUE_VIOLATION",
                ErrorKind::NotNullViolation => "NOT_NULL_VIOLATION",
                ErrorKind::ForeignKeyViolation => "FOREIGN_KEY_VIOLATION",
                ErrorKind::CheckViolation => "CHECK_VIOLATION",
                _ => "CONSTRAINT_VIOLATION",
            },
            // SQLite names the constraint or `table.column`, never the value.
            message: format!("{msg} (code {extended})"),
        },
        SQLITE_MISMATCH | SQLITE_TOOBIG => Failure::Data {
            code: "INVALID_VALUE",
            message: format!("a value is invalid for its column (code {extended})"),
        },
        // SQLITE_ERROR is a SQL error: no such table/column, no unique index
        // for ON CONFLICT, ... — the mapping does not fit the schema.
        SQLITE_ERROR | SQLITE_READONLY => {
            Failure::Master(misconfigured(format!("{what}: {msg} (code {extended})")))
        }
        _ => unavailable(format!("{what}: {msg} (code {extended})"), None),
    }
}
