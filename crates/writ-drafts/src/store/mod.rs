//! Where drafts live: SQLite by default (one file next to the service),
//! PostgreSQL when several replicas must share them.
//!
//! Every write is one conditional statement on the primary key plus the
//! expected incarnation/version (or submission id and state), so concurrent
//! requests, status events and the purge never overwrite each other's work:
//! the loser sees zero rows affected and the caller decides what that means.
//! The SQL text is shared; only binding and row decoding differ per backend
//! (PostgreSQL keeps native `uuid`/`timestamptz`/`jsonb`, SQLite text and
//! Unix milliseconds).

mod migrate;

use std::str::FromStr;
use std::time::Duration;

use serde_json::Value as Json;
use sqlx::postgres::{PgArguments, PgPool, PgPoolOptions, PgRow};
use sqlx::query::Query;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow,
};
use sqlx::{Postgres, Row, Sqlite};
use time::OffsetDateTime;
use uuid::Uuid;
use writ_core::{Classified, ErrorDomain, Retryability, StatusError, SubmissionState};

use crate::config::redact_url;

/// Identifies a draft: the tenant, the owner within it (empty when the API
/// key names none) and the id the client chose.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DraftKey {
    /// The tenant.
    pub tenant: String,
    /// The owner, or `""` for drafts shared by the tenant's owner-less keys.
    pub owner: String,
    /// The client's draft id.
    pub id: String,
}

/// Which state of a draft a conditional write expects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Revision {
    /// The draft's incarnation (random per creation).
    pub incarnation: String,
    /// The draft's version (1 at creation, +1 per replace).
    pub version: i64,
}

/// The last submission made from a draft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmissionRecord {
    /// The submission id.
    pub id: Uuid,
    /// The draft version that was submitted.
    pub version: i64,
    /// Its last known state.
    pub state: SubmissionState,
    /// The master's id, once applied.
    pub canonical_id: Option<String>,
    /// Why it did not apply.
    pub error: Option<StatusError>,
    /// When it was submitted.
    pub submitted_at: OffsetDateTime,
}

/// One stored draft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraftRecord {
    /// Who and which.
    pub key: DraftKey,
    /// Incarnation and version.
    pub revision: Revision,
    /// The command type the draft will become.
    pub command_type: String,
    /// The (possibly partial) record.
    pub data: Json,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When its content last changed; the TTL counts from here.
    pub updated_at: OffsetDateTime,
    /// The last submission, if any.
    pub submission: Option<SubmissionRecord>,
}

/// A terminal (or replayed-back-to-accepted) state to record on a draft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// The new state.
    pub state: SubmissionState,
    /// The master's id, when applied.
    pub canonical_id: Option<String>,
    /// Why it did not apply.
    pub error: Option<StatusError>,
}

/// Why the drafts store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is busy; retrying may help.
    #[error("drafts store unavailable: {0}")]
    Unavailable(String),
    /// The store URL or options are unusable.
    #[error("drafts store misconfigured: {0}")]
    Misconfigured(String),
    /// A migration failed (a deployment problem, not bad input).
    #[error("drafts store migration {step:?} failed: {message}")]
    Migration {
        /// The migration's description.
        step: &'static str,
        /// The database's error.
        message: String,
    },
    /// The database was migrated by a newer writ.
    #[error(
        "drafts store schema is at version {found}, newer than this binary's {known}; upgrade writ"
    )]
    SchemaTooNew {
        /// Version recorded in the database.
        found: i64,
        /// Latest version this binary knows.
        known: i64,
    },
    /// A statement failed for a reason retrying will not fix.
    #[error("drafts store query failed: {0}")]
    Query(String),
    /// A stored row cannot be read back.
    #[error("drafts store holds an unreadable row: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Classifies a driver error: connection trouble and lock contention are retryable.
    pub(crate) fn from_sqlx(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &e {
            E::Io(_)
            | E::Tls(_)
            | E::PoolTimedOut
            | E::PoolClosed
            | E::WorkerCrashed
            | E::Protocol(_) => Self::Unavailable(e.to_string()),
            E::Database(db) => {
                let code = db.code().unwrap_or_default();
                // PostgreSQL: class 08 connection, serialization failure,
                // deadlock, shutdown, too many connections. SQLite: BUSY, LOCKED
                // (extended codes keep the primary code in the low byte).
                let pg_transient = code.starts_with("08")
                    || matches!(
                        &*code,
                        "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "53300"
                    );
                let sqlite_transient = code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6));
                if pg_transient || sqlite_transient {
                    Self::Unavailable(e.to_string())
                } else {
                    Self::Query(e.to_string())
                }
            }
            E::ColumnDecode { .. } | E::Decode(_) | E::ColumnNotFound(_) => {
                Self::Corrupt(e.to_string())
            }
            _ => Self::Query(e.to_string()),
        }
    }

    fn migration(step: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |e| Self::Migration {
            step,
            message: e.to_string(),
        }
    }
}

impl Classified for StoreError {
    fn domain(&self) -> ErrorDomain {
        match self {
            Self::Unavailable(_) | Self::Misconfigured(_) => ErrorDomain::Infrastructure,
            Self::Migration { .. } | Self::SchemaTooNew { .. } => ErrorDomain::Infrastructure,
            Self::Query(_) | Self::Corrupt(_) => ErrorDomain::Internal,
        }
    }

    fn retryability(&self) -> Retryability {
        match self {
            Self::Unavailable(_) => Retryability::RETRY,
            _ => Retryability::Permanent,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "STORE_UNAVAILABLE",
            Self::Misconfigured(_) => "STORE_MISCONFIGURED",
            Self::Migration { .. } => "STORE_MIGRATION",
            Self::SchemaTooNew { .. } => "STORE_SCHEMA_TOO_NEW",
            Self::Query(_) => "STORE_QUERY",
            Self::Corrupt(_) => "STORE_CORRUPT",
        }
    }
}

/// One bind parameter, converted per backend.
#[derive(Debug, Clone, Copy)]
enum P<'a> {
    Text(&'a str),
    OptText(Option<&'a str>),
    Int(i64),
    OptBool(Option<bool>),
    Uuid(Uuid),
    Time(OffsetDateTime),
    Json(&'a Json),
}

fn bind_pg<'q>(
    mut q: Query<'q, Postgres, PgArguments>,
    params: &[P<'q>],
) -> Query<'q, Postgres, PgArguments> {
    for p in params {
        q = match *p {
            P::Text(v) => q.bind(v),
            P::OptText(v) => q.bind(v),
            P::Int(v) => q.bind(v),
            P::OptBool(v) => q.bind(v),
            P::Uuid(v) => q.bind(v),
            P::Time(v) => q.bind(v),
            P::Json(v) => q.bind(sqlx::types::Json(v)),
        };
    }
    q
}

fn bind_sqlite<'q>(
    mut q: Query<'q, Sqlite, SqliteArguments<'q>>,
    params: &[P<'q>],
) -> Query<'q, Sqlite, SqliteArguments<'q>> {
    for p in params {
        q = match *p {
            P::Text(v) => q.bind(v),
            P::OptText(v) => q.bind(v),
            P::Int(v) => q.bind(v),
            P::OptBool(v) => q.bind(v),
            P::Uuid(v) => q.bind(v.to_string()),
            P::Time(v) => q.bind(millis(v)),
            P::Json(v) => q.bind(v.to_string()),
        };
    }
    q
}

/// Unix milliseconds: SQLite's time representation, and the precision of all draft times.
pub(crate) fn millis(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The instant of `ms` Unix milliseconds.
pub(crate) fn from_millis(ms: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|e| StoreError::Corrupt(format!("time {ms}: {e}")))
}

const COLUMNS: &str = "tenant, owner, draft_id, incarnation, version, command_type, data, \
    created_at, updated_at, submission_id, submitted_version, submission_state, canonical_id, \
    error_code, error_message, error_retryable, submitted_at";

/// The columns of a row, decoded per backend into common types.
struct RawRow {
    tenant: String,
    owner: String,
    id: String,
    incarnation: String,
    version: i64,
    command_type: String,
    data: Json,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
    submission_id: Option<Uuid>,
    submitted_version: Option<i64>,
    submission_state: Option<String>,
    canonical_id: Option<String>,
    error_code: Option<String>,
    error_message: Option<String>,
    error_retryable: Option<bool>,
    submitted_at: Option<OffsetDateTime>,
}

fn pg_row(row: &PgRow) -> Result<RawRow, sqlx::Error> {
    Ok(RawRow {
        tenant: row.try_get("tenant")?,
        owner: row.try_get("owner")?,
        id: row.try_get("draft_id")?,
        incarnation: row.try_get("incarnation")?,
        version: row.try_get("version")?,
        command_type: row.try_get("command_type")?,
        data: row.try_get::<sqlx::types::Json<Json>, _>("data")?.0,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        submission_id: row.try_get("submission_id")?,
        submitted_version: row.try_get("submitted_version")?,
        submission_state: row.try_get("submission_state")?,
        canonical_id: row.try_get("canonical_id")?,
        error_code: row.try_get("error_code")?,
        error_message: row.try_get("error_message")?,
        error_retryable: row.try_get("error_retryable")?,
        submitted_at: row.try_get("submitted_at")?,
    })
}

fn sqlite_row(row: &SqliteRow) -> Result<RawRow, StoreError> {
    let get = StoreError::from_sqlx;
    let data: String = row.try_get("data").map_err(get)?;
    let submission_id: Option<String> = row.try_get("submission_id").map_err(get)?;
    let submitted_at: Option<i64> = row.try_get("submitted_at").map_err(get)?;
    Ok(RawRow {
        tenant: row.try_get("tenant").map_err(get)?,
        owner: row.try_get("owner").map_err(get)?,
        id: row.try_get("draft_id").map_err(get)?,
        incarnation: row.try_get("incarnation").map_err(get)?,
        version: row.try_get("version").map_err(get)?,
        command_type: row.try_get("command_type").map_err(get)?,
        data: serde_json::from_str(&data).map_err(|e| StoreError::Corrupt(format!("data: {e}")))?,
        created_at: from_millis(row.try_get("created_at").map_err(get)?)?,
        updated_at: from_millis(row.try_get("updated_at").map_err(get)?)?,
        submission_id: submission_id
            .map(|s| Uuid::parse_str(&s))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("submission_id: {e}")))?,
        submitted_version: row.try_get("submitted_version").map_err(get)?,
        submission_state: row.try_get("submission_state").map_err(get)?,
        canonical_id: row.try_get("canonical_id").map_err(get)?,
        error_code: row.try_get("error_code").map_err(get)?,
        error_message: row.try_get("error_message").map_err(get)?,
        error_retryable: row.try_get("error_retryable").map_err(get)?,
        submitted_at: submitted_at.map(from_millis).transpose()?,
    })
}

impl RawRow {
    fn into_record(self) -> Result<DraftRecord, StoreError> {
        let submission = match (
            self.submission_id,
            self.submitted_version,
            self.submission_state,
            self.submitted_at,
        ) {
            (Some(id), Some(version), Some(state), Some(submitted_at)) => {
                let state = SubmissionState::parse(&state)
                    .ok_or_else(|| StoreError::Corrupt(format!("submission_state {state:?}")))?;
                let error = self.error_code.map(|code| StatusError {
                    code,
                    message: self.error_message.unwrap_or_default(),
                    retryable: self.error_retryable.unwrap_or(false),
                });
                Some(SubmissionRecord {
                    id,
                    version,
                    state,
                    canonical_id: self.canonical_id,
                    error,
                    submitted_at,
                })
            }
            // The table's CHECK constraints keep these four together.
            (None, None, None, None) => None,
            _ => {
                return Err(StoreError::Corrupt(
                    "submission columns are partly set".into(),
                ))
            }
        };
        Ok(DraftRecord {
            key: DraftKey {
                tenant: self.tenant,
                owner: self.owner,
                id: self.id,
            },
            revision: Revision {
                incarnation: self.incarnation,
                version: self.version,
            },
            command_type: self.command_type,
            data: self.data,
            created_at: self.created_at,
            updated_at: self.updated_at,
            submission,
        })
    }
}

/// Drafts deleted per statement by the purge, so one run never holds a long lock.
const PURGE_BATCH: i64 = 1000;

/// The drafts store.
#[derive(Debug, Clone)]
pub enum DraftStore {
    /// On PostgreSQL.
    Postgres(PgPool),
    /// On SQLite.
    Sqlite(SqlitePool),
}

impl DraftStore {
    /// Opens the store named by `url` (`sqlite:<path>`, `sqlite::memory:`,
    /// `postgres://...`) and applies the embedded migrations. A connection is
    /// waited for at most `acquire_timeout`, at start-up and per request.
    pub async fn connect(
        url: &str,
        pool_size: u32,
        acquire_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let store = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(pool_size.max(1))
                .acquire_timeout(acquire_timeout)
                .connect(url)
                .await
                .map_err(|e| {
                    StoreError::Unavailable(format!("connecting to {}: {e}", redact_url(url)))
                })?;
            Self::Postgres(pool)
        } else if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(|e| StoreError::Misconfigured(format!("{url}: {e}")))?
                .create_if_missing(true)
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
                .acquire_timeout(acquire_timeout)
                // In-memory: the one connection must live as long as the pool.
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(opts)
                .await
                .map_err(|e| StoreError::Misconfigured(format!("opening {url}: {e}")))?;
            Self::Sqlite(pool)
        } else {
            return Err(StoreError::Misconfigured(format!(
                "store url must start with sqlite: or postgres:// (got {})",
                redact_url(url)
            )));
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies the migrations this binary knows and the database lacks; returns how many.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        match self {
            Self::Postgres(p) => migrate::postgres(p).await,
            Self::Sqlite(p) => migrate::sqlite(p).await,
        }
    }

    /// Which backend this is, for logs.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Sqlite(_) => "sqlite",
        }
    }

    async fn execute(&self, sql: &str, params: &[P<'_>]) -> Result<u64, StoreError> {
        let rows = match self {
            Self::Postgres(p) => bind_pg(sqlx::query(sql), params)
                .execute(p)
                .await
                .map(|r| r.rows_affected()),
            Self::Sqlite(p) => bind_sqlite(sqlx::query(sql), params)
                .execute(p)
                .await
                .map(|r| r.rows_affected()),
        };
        rows.map_err(StoreError::from_sqlx)
    }

    async fn fetch_optional(
        &self,
        sql: &str,
        params: &[P<'_>],
    ) -> Result<Option<DraftRecord>, StoreError> {
        let raw = match self {
            Self::Postgres(p) => bind_pg(sqlx::query(sql), params)
                .fetch_optional(p)
                .await
                .map_err(StoreError::from_sqlx)?
                .map(|r| pg_row(&r).map_err(StoreError::from_sqlx))
                .transpose()?,
            Self::Sqlite(p) => bind_sqlite(sqlx::query(sql), params)
                .fetch_optional(p)
                .await
                .map_err(StoreError::from_sqlx)?
                .map(|r| sqlite_row(&r))
                .transpose()?,
        };
        raw.map(RawRow::into_record).transpose()
    }

    /// The draft at `key`, if any.
    pub async fn get(&self, key: &DraftKey) -> Result<Option<DraftRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM writ_drafts WHERE tenant = $1 AND owner = $2 AND draft_id = $3"
        );
        self.fetch_optional(
            &sql,
            &[P::Text(&key.tenant), P::Text(&key.owner), P::Text(&key.id)],
        )
        .await
    }

    /// The draft whose last submission is `submission_id`, if any.
    pub async fn find_by_submission(
        &self,
        submission_id: Uuid,
    ) -> Result<Option<DraftRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM writ_drafts WHERE submission_id = $1");
        self.fetch_optional(&sql, &[P::Uuid(submission_id)]).await
    }

    /// Inserts a new draft (no submission); `false` when one exists at its key.
    pub async fn insert(&self, draft: &DraftRecord) -> Result<bool, StoreError> {
        let n = self
            .execute(
                "INSERT INTO writ_drafts (tenant, owner, draft_id, incarnation, version, \
                 command_type, data, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (tenant, owner, draft_id) DO NOTHING",
                &[
                    P::Text(&draft.key.tenant),
                    P::Text(&draft.key.owner),
                    P::Text(&draft.key.id),
                    P::Text(&draft.revision.incarnation),
                    P::Int(draft.revision.version),
                    P::Text(&draft.command_type),
                    P::Json(&draft.data),
                    P::Time(draft.created_at),
                    P::Time(draft.updated_at),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    /// Replaces the content of the draft at `key` if it is still at `expected`,
    /// bumping its version; `false` when it is not (changed, gone).
    pub async fn replace(
        &self,
        key: &DraftKey,
        expected: &Revision,
        command_type: &str,
        data: &Json,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let n = self
            .execute(
                "UPDATE writ_drafts SET version = version + 1, command_type = $6, data = $7, \
                 updated_at = $8 \
                 WHERE tenant = $1 AND owner = $2 AND draft_id = $3 AND incarnation = $4 \
                 AND version = $5",
                &[
                    P::Text(&key.tenant),
                    P::Text(&key.owner),
                    P::Text(&key.id),
                    P::Text(&expected.incarnation),
                    P::Int(expected.version),
                    P::Text(command_type),
                    P::Json(data),
                    P::Time(now),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    /// Deletes the draft at `key` (only if at `expected`, when given); whether one was deleted.
    pub async fn delete(
        &self,
        key: &DraftKey,
        expected: Option<&Revision>,
    ) -> Result<bool, StoreError> {
        let base = [P::Text(&key.tenant), P::Text(&key.owner), P::Text(&key.id)];
        let n = match expected {
            None => {
                self.execute(
                    "DELETE FROM writ_drafts WHERE tenant = $1 AND owner = $2 AND draft_id = $3",
                    &base,
                )
                .await?
            }
            Some(rev) => {
                self.execute(
                    "DELETE FROM writ_drafts WHERE tenant = $1 AND owner = $2 AND draft_id = $3 \
                     AND incarnation = $4 AND version = $5",
                    &[
                        base[0],
                        base[1],
                        base[2],
                        P::Text(&rev.incarnation),
                        P::Int(rev.version),
                    ],
                )
                .await?
            }
        };
        Ok(n == 1)
    }

    /// Records that the draft at `key`, still at `at`, was submitted as
    /// `submission_id` (state `ACCEPTED`, earlier outcome cleared); `false`
    /// when the draft changed or is gone.
    pub async fn record_submission(
        &self,
        key: &DraftKey,
        at: &Revision,
        submission_id: Uuid,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let n = self
            .execute(
                "UPDATE writ_drafts SET submission_id = $6, submitted_version = version, \
                 submission_state = 'ACCEPTED', canonical_id = NULL, error_code = NULL, \
                 error_message = NULL, error_retryable = NULL, submitted_at = $7 \
                 WHERE tenant = $1 AND owner = $2 AND draft_id = $3 AND incarnation = $4 \
                 AND version = $5",
                &[
                    P::Text(&key.tenant),
                    P::Text(&key.owner),
                    P::Text(&key.id),
                    P::Text(&at.incarnation),
                    P::Int(at.version),
                    P::Uuid(submission_id),
                    P::Time(now),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    /// Sets the outcome of submission `submission_id` on the draft at `key`,
    /// if its recorded state is still `from`; whether it was set.
    pub async fn settle(
        &self,
        key: &DraftKey,
        submission_id: Uuid,
        from: SubmissionState,
        to: &Settlement,
    ) -> Result<bool, StoreError> {
        let n = self
            .execute(
                "UPDATE writ_drafts SET submission_state = $6, canonical_id = $7, \
                 error_code = $8, error_message = $9, error_retryable = $10 \
                 WHERE tenant = $1 AND owner = $2 AND draft_id = $3 AND submission_id = $4 \
                 AND submission_state = $5",
                &[
                    P::Text(&key.tenant),
                    P::Text(&key.owner),
                    P::Text(&key.id),
                    P::Uuid(submission_id),
                    P::Text(from.as_str()),
                    P::Text(to.state.as_str()),
                    P::OptText(to.canonical_id.as_deref()),
                    P::OptText(to.error.as_ref().map(|e| e.code.as_str())),
                    P::OptText(to.error.as_ref().map(|e| e.message.as_str())),
                    P::OptBool(to.error.as_ref().map(|e| e.retryable)),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    /// Deletes the draft at `key` if its last submission is `submission_id`
    /// and it was not edited since (its version is the submitted one).
    pub async fn delete_submitted(
        &self,
        key: &DraftKey,
        submission_id: Uuid,
    ) -> Result<bool, StoreError> {
        let n = self
            .execute(
                "DELETE FROM writ_drafts WHERE tenant = $1 AND owner = $2 AND draft_id = $3 \
                 AND submission_id = $4 AND version = submitted_version",
                &[
                    P::Text(&key.tenant),
                    P::Text(&key.owner),
                    P::Text(&key.id),
                    P::Uuid(submission_id),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    /// Deletes every draft last changed before `cutoff`; returns how many.
    pub async fn purge_older_than(&self, cutoff: OffsetDateTime) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let n = self
                .execute(
                    "DELETE FROM writ_drafts WHERE (tenant, owner, draft_id) IN \
                     (SELECT tenant, owner, draft_id FROM writ_drafts WHERE updated_at < $1 \
                      LIMIT $2)",
                    &[P::Time(cutoff), P::Int(PURGE_BATCH)],
                )
                .await?;
            total += n;
            if n < PURGE_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// How many drafts are stored (all tenants); for tests and gauges.
    pub async fn count(&self) -> Result<i64, StoreError> {
        let sql = "SELECT COUNT(*) FROM writ_drafts";
        let n: Result<i64, sqlx::Error> = match self {
            Self::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await,
            Self::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await,
        };
        n.map_err(StoreError::from_sqlx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_errors_are_classified() {
        assert!(StoreError::from_sqlx(sqlx::Error::PoolTimedOut).is_retryable());
        assert!(!StoreError::from_sqlx(sqlx::Error::RowNotFound).is_retryable());
        assert_eq!(
            StoreError::from_sqlx(sqlx::Error::ColumnNotFound("x".into())).code(),
            "STORE_CORRUPT"
        );
    }

    #[test]
    fn millis_round_trip() {
        let t = time::macros::datetime!(2026-11-27 08:00:00.123 UTC);
        assert_eq!(from_millis(millis(t)).unwrap(), t);
    }
}
