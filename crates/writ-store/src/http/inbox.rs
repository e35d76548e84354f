//! The HTTP master's inbox, kept in writ's own store (PostgreSQL or SQLite):
//! an `IN_PROGRESS` claim taken before a request is sent, and the `DONE`
//! outcome recorded after it — what makes a replayed command a no-op.
//!
//! Claim protocol (every step one atomic statement, no transaction held
//! across the HTTP call):
//! 1. `INSERT ... IN_PROGRESS ... ON CONFLICT DO NOTHING` — one row: claimed.
//! 2. else `UPDATE ... SET claimed_at, claimed_by WHERE status = 'IN_PROGRESS'
//!    AND claimed_at < now - expiry` — one row: a crashed claim taken over.
//! 3. else read the row: `DONE` → the recorded outcome (a duplicate);
//!    `IN_PROGRESS` → someone else is on it (busy); gone (released between
//!    the steps) → start again.
//!
//! The table is `writ_http_inbox` in the inbox database's default schema.
//! `DONE` is written only by the claim's holder (`claimed_by` matches), and a
//! retryable failure deletes the holder's claim so a retry is not blocked.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;
use writ_core::SubmissionState;

use crate::{MasterError, Outcome};

/// PostgreSQL DDL: safe to run on every start.
const PG_DDL: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS writ_http_inbox (
        submission_id uuid PRIMARY KEY,
        status text NOT NULL CHECK (status IN ('IN_PROGRESS', 'DONE')),
        claimed_at timestamptz NOT NULL,
        claimed_by text NOT NULL,
        fingerprint text NOT NULL,
        outcome text CHECK (outcome IN ('APPLIED', 'REJECTED', 'CONFLICT')),
        canonical_id text,
        version bigint,
        error_code text,
        error_message text,
        recorded_at timestamptz,
        CHECK ((status = 'DONE') = (outcome IS NOT NULL AND recorded_at IS NOT NULL)))",
    "CREATE INDEX IF NOT EXISTS writ_http_inbox_done_recorded_at
        ON writ_http_inbox (recorded_at) WHERE status = 'DONE'",
];

/// SQLite DDL (times are Unix milliseconds, ids hyphenated text).
const SQLITE_DDL: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS writ_http_inbox (
        submission_id TEXT PRIMARY KEY NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('IN_PROGRESS', 'DONE')),
        claimed_at INTEGER NOT NULL,
        claimed_by TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        outcome TEXT CHECK (outcome IN ('APPLIED', 'REJECTED', 'CONFLICT')),
        canonical_id TEXT,
        version INTEGER,
        error_code TEXT,
        error_message TEXT,
        recorded_at INTEGER,
        CHECK ((status = 'DONE') = (outcome IS NOT NULL AND recorded_at IS NOT NULL))
    ) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS writ_http_inbox_done_recorded_at
        ON writ_http_inbox (recorded_at) WHERE status = 'DONE'",
];

/// A recorded outcome and when it was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    /// The outcome.
    pub outcome: Outcome,
    /// When it was recorded.
    pub recorded_at: OffsetDateTime,
    /// The payload fingerprint recorded with it.
    pub fingerprint: String,
}

/// The result of trying to claim a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This worker holds the claim; `taken_over` when it replaced an expired one.
    Claimed {
        /// Whether an expired claim (a crashed worker's) was taken over.
        taken_over: bool,
    },
    /// Already done: answer the recorded outcome.
    Done(Done),
    /// Another worker holds a fresh claim.
    Busy,
}

/// The inbox store.
#[derive(Debug, Clone)]
pub enum Inbox {
    /// On PostgreSQL (times from the database clock).
    Postgres(PgPool),
    /// On SQLite (times from this process' clock).
    Sqlite(SqlitePool),
}

fn unavailable(what: &str) -> impl FnOnce(sqlx::Error) -> MasterError + '_ {
    move |e| MasterError::Unavailable {
        message: format!("inbox: {what}: {e}"),
        retry_after: None,
    }
}

fn millis(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn from_millis(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl Inbox {
    /// Opens the store named by `url` (`postgres://`, `postgresql://`, `sqlite:`) and creates the table if missing.
    pub async fn connect(url: &str, pool_size: u32) -> Result<Self, MasterError> {
        let misconfigured = |m: String| MasterError::Misconfigured { message: m };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(pool_size.max(1))
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await
                .map_err(unavailable("connecting to PostgreSQL"))?;
            let mut tx = pool
                .begin()
                .await
                .map_err(unavailable("creating the table"))?;
            // Several workers starting at once must not race on CREATE TABLE.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('writ_http_inbox'))")
                .execute(&mut *tx)
                .await
                .map_err(unavailable("creating the table"))?;
            for ddl in PG_DDL {
                sqlx::query(ddl)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| misconfigured(format!("inbox: creating the table: {e}")))?;
            }
            tx.commit()
                .await
                .map_err(unavailable("creating the table"))?;
            Ok(Self::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(|e| misconfigured(format!("master.inbox_url: {e}")))?
                .busy_timeout(Duration::from_secs(5));
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            let (opts, max) = if in_memory {
                // An in-memory database exists per connection: keep exactly one.
                (opts, 1)
            } else {
                (opts.journal_mode(SqliteJournalMode::Wal), pool_size.max(1))
            };
            let pool = SqlitePoolOptions::new()
                .max_connections(max)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await
                .map_err(|e| misconfigured(format!("inbox: opening SQLite: {e}")))?;
            for ddl in SQLITE_DDL {
                sqlx::query(ddl)
                    .execute(&pool)
                    .await
                    .map_err(|e| misconfigured(format!("inbox: creating the table: {e}")))?;
            }
            Ok(Self::Sqlite(pool))
        } else {
            Err(misconfigured(
                "master.inbox_url: expected postgres://... or sqlite:...".into(),
            ))
        }
    }

    /// Claims `id` for `me` (see the module docs for the protocol).
    pub async fn claim(
        &self,
        id: Uuid,
        fingerprint: &str,
        me: &str,
        expiry: Duration,
    ) -> Result<Claim, MasterError> {
        // A row released between steps 1 and 3 sends us round again; a bounded
        // number of laps, then report busy (the worker retries later).
        for _ in 0..3 {
            if self.insert_claim(id, fingerprint, me).await? {
                return Ok(Claim::Claimed { taken_over: false });
            }
            if self.take_over(id, fingerprint, me, expiry).await? {
                return Ok(Claim::Claimed { taken_over: true });
            }
            match self.get(id).await? {
                Some(Some(done)) => return Ok(Claim::Done(done)),
                Some(None) => return Ok(Claim::Busy),
                None => continue,
            }
        }
        Ok(Claim::Busy)
    }

    async fn insert_claim(
        &self,
        id: Uuid,
        fingerprint: &str,
        me: &str,
    ) -> Result<bool, MasterError> {
        let err = unavailable("claiming");
        let n = match self {
            Self::Postgres(p) => sqlx::query(
                "INSERT INTO writ_http_inbox (submission_id, status, claimed_at, claimed_by, fingerprint)
                 VALUES ($1, 'IN_PROGRESS', now(), $2, $3) ON CONFLICT (submission_id) DO NOTHING",
            )
            .bind(id)
            .bind(me)
            .bind(fingerprint)
            .execute(p)
            .await
            .map_err(err)?
            .rows_affected(),
            Self::Sqlite(p) => sqlx::query(
                "INSERT INTO writ_http_inbox (submission_id, status, claimed_at, claimed_by, fingerprint)
                 VALUES (?1, 'IN_PROGRESS', ?2, ?3, ?4) ON CONFLICT (submission_id) DO NOTHING",
            )
            .bind(id.to_string())
            .bind(millis(OffsetDateTime::now_utc()))
            .bind(me)
            .bind(fingerprint)
            .execute(p)
            .await
            .map_err(err)?
            .rows_affected(),
        };
        Ok(n == 1)
    }

    async fn take_over(
        &self,
        id: Uuid,
        fingerprint: &str,
        me: &str,
        expiry: Duration,
    ) -> Result<bool, MasterError> {
        let err = unavailable("taking over a claim");
        let expiry_ms = i64::try_from(expiry.as_millis()).unwrap_or(i64::MAX);
        let n = match self {
            Self::Postgres(p) => sqlx::query(
                "UPDATE writ_http_inbox SET claimed_at = now(), claimed_by = $2, fingerprint = $3
                 WHERE submission_id = $1 AND status = 'IN_PROGRESS'
                   AND claimed_at < now() - $4 * interval '1 millisecond'",
            )
            .bind(id)
            .bind(me)
            .bind(fingerprint)
            .bind(expiry_ms as f64)
            .execute(p)
            .await
            .map_err(err)?
            .rows_affected(),
            Self::Sqlite(p) => {
                let now = millis(OffsetDateTime::now_utc());
                sqlx::query(
                    "UPDATE writ_http_inbox SET claimed_at = ?2, claimed_by = ?3, fingerprint = ?4
                     WHERE submission_id = ?1 AND status = 'IN_PROGRESS' AND claimed_at < ?5",
                )
                .bind(id.to_string())
                .bind(now)
                .bind(me)
                .bind(fingerprint)
                .bind(now.saturating_sub(expiry_ms))
                .execute(p)
                .await
                .map_err(err)?
                .rows_affected()
            }
        };
        Ok(n == 1)
    }

    /// The row of `id`: None when absent, `Some(None)` when in progress, `Some(Some(done))` when done.
    async fn get(&self, id: Uuid) -> Result<Option<Option<Done>>, MasterError> {
        let err = unavailable("reading");
        const COLS: &str =
            "status, outcome, canonical_id, version, error_code, error_message, fingerprint";
        let (row, recorded_at) = match self {
            Self::Postgres(p) => {
                let sql = format!(
                    "SELECT {COLS}, recorded_at FROM writ_http_inbox WHERE submission_id = $1"
                );
                let Some(row) = sqlx::query(&sql)
                    .bind(id)
                    .fetch_optional(p)
                    .await
                    .map_err(err)?
                else {
                    return Ok(None);
                };
                let at: Option<OffsetDateTime> = row
                    .try_get("recorded_at")
                    .map_err(unavailable("decoding"))?;
                (RawRow::from_pg(&row)?, at)
            }
            Self::Sqlite(p) => {
                let sql = format!(
                    "SELECT {COLS}, recorded_at FROM writ_http_inbox WHERE submission_id = ?1"
                );
                let Some(row) = sqlx::query(&sql)
                    .bind(id.to_string())
                    .fetch_optional(p)
                    .await
                    .map_err(err)?
                else {
                    return Ok(None);
                };
                let at: Option<i64> = row
                    .try_get("recorded_at")
                    .map_err(unavailable("decoding"))?;
                (RawRow::from_sqlite(&row)?, at.map(from_millis))
            }
        };
        if row.status != "DONE" {
            return Ok(Some(None));
        }
        let outcome = row.outcome()?;
        Ok(Some(Some(Done {
            outcome,
            recorded_at: recorded_at.unwrap_or(OffsetDateTime::UNIX_EPOCH),
            fingerprint: row.fingerprint,
        })))
    }

    /// Records `outcome` for `id` if `me` still holds the claim; returns when it was recorded, or None if the claim was lost.
    pub async fn done(
        &self,
        id: Uuid,
        me: &str,
        outcome: &Outcome,
    ) -> Result<Option<OffsetDateTime>, MasterError> {
        let err = unavailable("recording an outcome");
        let (state, canonical_id, version, code, message) = columns(outcome);
        Ok(match self {
            Self::Postgres(p) => sqlx::query(
                "UPDATE writ_http_inbox SET status = 'DONE', outcome = $3, canonical_id = $4,
                    version = $5, error_code = $6, error_message = $7, recorded_at = now()
                 WHERE submission_id = $1 AND status = 'IN_PROGRESS' AND claimed_by = $2
                 RETURNING recorded_at",
            )
            .bind(id)
            .bind(me)
            .bind(state)
            .bind(canonical_id)
            .bind(version)
            .bind(code)
            .bind(message)
            .fetch_optional(p)
            .await
            .map_err(err)?
            .map(|r| r.try_get::<OffsetDateTime, _>(0))
            .transpose()
            .map_err(unavailable("decoding"))?,
            Self::Sqlite(p) => {
                let now = OffsetDateTime::now_utc();
                let n = sqlx::query(
                    "UPDATE writ_http_inbox SET status = 'DONE', outcome = ?3, canonical_id = ?4,
                        version = ?5, error_code = ?6, error_message = ?7, recorded_at = ?8
                     WHERE submission_id = ?1 AND status = 'IN_PROGRESS' AND claimed_by = ?2",
                )
                .bind(id.to_string())
                .bind(me)
                .bind(state)
                .bind(canonical_id)
                .bind(version)
                .bind(code)
                .bind(message)
                .bind(millis(now))
                .execute(p)
                .await
                .map_err(err)?
                .rows_affected();
                (n == 1).then(|| from_millis(millis(now)))
            }
        })
    }

    /// Deletes `me`'s claim on `id` so a retry can claim it at once.
    pub async fn release(&self, id: Uuid, me: &str) -> Result<(), MasterError> {
        let err = unavailable("releasing a claim");
        match self {
            Self::Postgres(p) => sqlx::query(
                "DELETE FROM writ_http_inbox
                 WHERE submission_id = $1 AND status = 'IN_PROGRESS' AND claimed_by = $2",
            )
            .bind(id)
            .bind(me)
            .execute(p)
            .await
            .map_err(err)?
            .rows_affected(),
            Self::Sqlite(p) => sqlx::query(
                "DELETE FROM writ_http_inbox
                 WHERE submission_id = ?1 AND status = 'IN_PROGRESS' AND claimed_by = ?2",
            )
            .bind(id.to_string())
            .bind(me)
            .execute(p)
            .await
            .map_err(err)?
            .rows_affected(),
        };
        Ok(())
    }

    /// Deletes DONE rows recorded before `older_than`.
    pub async fn expire(&self, older_than: OffsetDateTime) -> Result<u64, MasterError> {
        let err = unavailable("expiring");
        Ok(match self {
            Self::Postgres(p) => sqlx::query(
                "DELETE FROM writ_http_inbox WHERE status = 'DONE' AND recorded_at < $1",
            )
            .bind(older_than)
            .execute(p)
            .await
            .map_err(err)?
            .rows_affected(),
            Self::Sqlite(p) => sqlx::query(
                "DELETE FROM writ_http_inbox WHERE status = 'DONE' AND recorded_at < ?1",
            )
            .bind(millis(older_than))
            .execute(p)
            .await
            .map_err(err)?
            .rows_affected(),
        })
    }
}

/// An outcome as columns: (outcome, canonical_id, version, error_code, error_message).
type Columns<'a> = (
    &'static str,
    Option<&'a str>,
    Option<i64>,
    Option<&'a str>,
    Option<&'a str>,
);

fn columns(outcome: &Outcome) -> Columns<'_> {
    let state = outcome.state().as_str();
    match outcome {
        Outcome::Applied {
            canonical_id,
            version,
        } => (state, canonical_id.as_deref(), *version, None, None),
        Outcome::Rejected { code, message } => (state, None, None, Some(code), Some(message)),
        Outcome::Conflict {
            message,
            current_version,
        } => (state, None, *current_version, None, Some(message)),
    }
}

/// The outcome columns of a row, as read.
struct RawRow {
    status: String,
    outcome: Option<String>,
    canonical_id: Option<String>,
    version: Option<i64>,
    error_code: Option<String>,
    error_message: Option<String>,
    fingerprint: String,
}

macro_rules! raw_row {
    ($row:expr) => {{
        let row = $row;
        let d = unavailable("decoding");
        (|| {
            Ok::<_, sqlx::Error>(RawRow {
                status: row.try_get("status")?,
                outcome: row.try_get("outcome")?,
                canonical_id: row.try_get("canonical_id")?,
                version: row.try_get("version")?,
                error_code: row.try_get("error_code")?,
                error_message: row.try_get("error_message")?,
                fingerprint: row.try_get("fingerprint")?,
            })
        })()
        .map_err(d)
    }};
}

impl RawRow {
    fn from_pg(row: &sqlx::postgres::PgRow) -> Result<Self, MasterError> {
        raw_row!(row)
    }

    fn from_sqlite(row: &sqlx::sqlite::SqliteRow) -> Result<Self, MasterError> {
        raw_row!(row)
    }

    fn outcome(&self) -> Result<Outcome, MasterError> {
        let state = self.outcome.as_deref().and_then(SubmissionState::parse);
        Ok(match state {
            Some(SubmissionState::Applied) => Outcome::Applied {
                canonical_id: self.canonical_id.clone(),
                version: self.version,
            },
            Some(SubmissionState::Rejected) => Outcome::Rejected {
                code: self.error_code.clone().unwrap_or_default(),
                message: self.error_message.clone().unwrap_or_default(),
            },
            Some(SubmissionState::Conflict) => Outcome::Conflict {
                message: self.error_message.clone().unwrap_or_default(),
                current_version: self.version,
            },
            _ => {
                return Err(MasterError::Misconfigured {
                    message: format!("inbox: DONE row with outcome {:?}", self.outcome),
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip_through_columns() {
        for o in [
            Outcome::Applied {
                canonical_id: Some("c1".into()),
                version: Some(3),
            },
            Outcome::Rejected {
                code: "HTTP_422".into(),
                message: "bad".into(),
            },
            Outcome::Conflict {
                message: "stale".into(),
                current_version: Some(9),
            },
        ] {
            let (state, canonical_id, version, code, message) = columns(&o);
            let row = RawRow {
                status: "DONE".into(),
                outcome: Some(state.into()),
                canonical_id: canonical_id.map(Into::into),
                version,
                error_code: code.map(Into::into),
                error_message: message.map(Into::into),
                fingerprint: String::new(),
            };
            assert_eq!(row.outcome().unwrap(), o);
        }
    }

    #[test]
    fn millis_round_trip() {
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        assert_eq!(from_millis(millis(t)), t);
    }
}
