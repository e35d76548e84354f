//! The local store: the records the edge serves, the outbox the relay drains
//! and the conflicts table, in SQLite (default) or PostgreSQL through sqlx's
//! `Any` driver, so both run the same statements.
//!
//! Every state change that must not be half-done is one local transaction: a
//! write commits its record and its outbox row together; a status event moves
//! its outbox row, its record and (for a conflict) a conflicts row together.
//! The schema is created at start with idempotent DDL.

use serde::Serialize;
use serde_json::Value;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use time::OffsetDateTime;
use uuid::Uuid;
use writ_core::{Classified, ErrorDomain, Retryability, StatusError, StatusEvent, SubmissionState};

use crate::config::StoreConfig;
use crate::sync::{ConflictPolicy, Expectation, Projection, SyncState};

/// Which database the store runs on (the DDL differs slightly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite: one connection, so writes never race for the lock.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A local store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or timed out; retrying may help.
    #[error("local store unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The database refused a statement.
    #[error("local store error: {0}")]
    Database(#[source] sqlx::Error),
    /// A stored value does not parse (a bug, or someone edited the tables).
    #[error("local store holds an unreadable value: {0}")]
    Corrupt(String),
    /// The store URL is not SQLite or PostgreSQL.
    #[error("store.url must start with sqlite: or postgres:, got {0:?}")]
    UnsupportedUrl(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => Self::Unavailable(e),
            other => Self::Database(other),
        }
    }
}

impl Classified for StoreError {
    fn domain(&self) -> ErrorDomain {
        match self {
            Self::Unavailable(_) | Self::Database(_) => ErrorDomain::Infrastructure,
            Self::Corrupt(_) | Self::UnsupportedUrl(_) => ErrorDomain::Internal,
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
            Self::Database(_) => "STORE_ERROR",
            Self::Corrupt(_) => "STORE_CORRUPT",
            Self::UnsupportedUrl(_) => "STORE_URL",
        }
    }
}

/// Who may see a record: a tenant, and within it an owner when the API key names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The tenant.
    pub tenant: String,
    /// The owner; `None` sees every record of the tenant.
    pub owner: Option<String>,
}

impl Scope {
    /// The scope of an authenticated principal.
    pub fn of(principal: &writ_http::Principal) -> Self {
        Self {
            tenant: principal.tenant.clone(),
            owner: principal.owner.clone(),
        }
    }

    fn owner_filter(&self) -> &str {
        self.owner.as_deref().unwrap_or("")
    }
}

/// One local record, as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// The temp id the edge handed out at creation; stays valid forever.
    pub id: String,
    /// The collection.
    pub collection: String,
    /// The entity key (the key field's value).
    pub key: String,
    /// Where the record stands against the master.
    pub sync_state: SyncState,
    /// The master's id, once the master applied a write.
    pub canonical_id: Option<String>,
    /// The master's version the local copy is based on.
    pub master_version: Option<i64>,
    /// Why the latest write did not apply (or how a conflict was resolved).
    pub last_error: Option<StatusError>,
    /// The local copy (projected fields only).
    pub data: Value,
    /// Local writes so far.
    pub local_version: i64,
    /// Creation instant.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last change instant.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(skip)]
    tenant: String,
    #[serde(skip)]
    owner: String,
    #[serde(skip)]
    last_outbox_seq: i64,
}

impl Record {
    /// The tenant the record belongs to.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }
}

const RECORD_COLUMNS: &str =
    "id, collection, entity_key, sync_state, canonical_id, master_version, \
     last_error, data, local_version, created_at_ms, updated_at_ms, tenant, owner, last_outbox_seq";

fn record_from_row(row: &AnyRow) -> Result<Record, StoreError> {
    let state: String = row.try_get("sync_state")?;
    let data: String = row.try_get("data")?;
    let last_error: Option<String> = row.try_get("last_error")?;
    Ok(Record {
        id: row.try_get("id")?,
        collection: row.try_get("collection")?,
        key: row.try_get("entity_key")?,
        sync_state: SyncState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("sync state {state:?}")))?,
        canonical_id: row.try_get("canonical_id")?,
        master_version: row.try_get("master_version")?,
        last_error: last_error
            .map(|e| serde_json::from_str(&e))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("last_error: {e}")))?,
        data: serde_json::from_str(&data)
            .map_err(|e| StoreError::Corrupt(format!("record data: {e}")))?,
        local_version: row.try_get("local_version")?,
        created_at: from_ms(row.try_get("created_at_ms")?),
        updated_at: from_ms(row.try_get("updated_at_ms")?),
        tenant: row.try_get("tenant")?,
        owner: row.try_get("owner")?,
        last_outbox_seq: row.try_get("last_outbox_seq")?,
    })
}

/// A validated write, ready to be stored.
#[derive(Debug, Clone)]
pub struct Write {
    /// The collection.
    pub collection: String,
    /// The command type it becomes.
    pub command_type: String,
    /// The entity key.
    pub key: String,
    /// The full, canonical record: the command payload.
    pub full: Value,
    /// The projected local copy.
    pub local: Value,
    /// `ce_source` of the command (`/tenants/<tenant>/edge`).
    pub source: String,
}

/// What a create did.
#[derive(Debug)]
pub enum Created {
    /// Stored with its outbox row.
    Record(Box<Record>),
    /// The tenant already has a record with this key; nothing was stored.
    KeyExists {
        /// The existing record's id.
        id: String,
    },
}

/// What an update did.
#[derive(Debug)]
pub enum Updated {
    /// Stored with its outbox row.
    Record(Box<Record>),
    /// No such record in this scope; nothing was stored.
    NotFound,
    /// The write changes the entity key, which is immutable; nothing was stored.
    KeyChanged {
        /// The record's key.
        key: String,
    },
}

/// An outbox row the relay may publish now.
#[derive(Debug, Clone)]
pub struct Publishable {
    /// Position in the outbox.
    pub seq: i64,
    /// `ce_id`: the outbox row's id.
    pub event_id: String,
    /// `ce_source`.
    pub source: String,
    /// `ce_tempid`: the record's id.
    pub record_id: String,
    /// `ce_subject`.
    pub entity_key: String,
    /// `ce_type`.
    pub command_type: String,
    /// The full write.
    pub payload: Value,
    /// What the write expects of the master version.
    pub expectation: Expectation,
    /// The master version the edge knows for the record now.
    pub known_master_version: Option<i64>,
    /// When the write was made.
    pub created_at: OffsetDateTime,
}

/// Pending outbox rows of one collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSummary {
    /// The collection.
    pub collection: String,
    /// How many rows wait.
    pub pending: u64,
    /// When the oldest was written.
    pub oldest: OffsetDateTime,
}

/// What a status event changed locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusEffect {
    /// Not one of this edge's outbox rows, not terminal, or already applied.
    Ignored,
    /// The outbox row and (when it is the latest write) the record moved.
    Applied(SubmissionState),
    /// A conflict was recorded under this id, with this policy.
    Conflict {
        /// The conflicts row.
        conflict_id: String,
        /// The collection's policy.
        policy: ConflictPolicy,
    },
}

/// One version conflict, open or resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Conflict {
    /// The conflict's id.
    pub id: String,
    /// The collection.
    pub collection: String,
    /// The record the conflicting write belongs to.
    pub record_id: String,
    /// The entity key.
    pub key: String,
    /// The policy in force when it happened.
    pub policy: ConflictPolicy,
    /// The master's version when the write conflicted, if reported.
    pub master_version: Option<i64>,
    /// What the master said.
    pub error: Option<StatusError>,
    /// The conflicting write (the full record).
    pub local: Value,
    /// `OPEN` or `RESOLVED`.
    pub state: String,
    /// `local`, `master` or `superseded`, once resolved.
    pub resolution: Option<String>,
    /// When the conflict was reported.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(skip)]
    outbox_seq: i64,
}

const CONFLICT_COLUMNS: &str = "c.id, c.collection, c.record_id, c.entity_key, c.policy, \
     c.master_version, c.error, c.state, c.resolution, c.created_at_ms, c.outbox_seq, o.payload";

fn conflict_from_row(row: &AnyRow) -> Result<Conflict, StoreError> {
    let policy: String = row.try_get("policy")?;
    let error: Option<String> = row.try_get("error")?;
    let payload: Option<String> = row.try_get("payload")?;
    Ok(Conflict {
        id: row.try_get("id")?,
        collection: row.try_get("collection")?,
        record_id: row.try_get("record_id")?,
        key: row.try_get("entity_key")?,
        policy: ConflictPolicy::parse(&policy)
            .ok_or_else(|| StoreError::Corrupt(format!("conflict policy {policy:?}")))?,
        master_version: row.try_get("master_version")?,
        error: error
            .map(|e| serde_json::from_str(&e))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("conflict error: {e}")))?,
        local: payload
            .map(|p| serde_json::from_str(&p))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("outbox payload: {e}")))?
            .unwrap_or(Value::Null),
        state: row.try_get("state")?,
        resolution: row.try_get("resolution")?,
        created_at: from_ms(row.try_get("created_at_ms")?),
        outbox_seq: row.try_get("outbox_seq")?,
    })
}

/// How a conflict ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolved {
    /// Done; the record as it is now.
    Record(Box<Record>),
    /// No open conflict with this id in this scope.
    NotFound,
}

/// The local store.
#[derive(Debug, Clone)]
pub struct LocalStore {
    pool: AnyPool,
    backend: Backend,
}

/// Statements of the schema; each is idempotent.
fn ddl(backend: Backend) -> Vec<String> {
    let seq = match backend {
        Backend::Sqlite => "seq INTEGER PRIMARY KEY AUTOINCREMENT",
        Backend::Postgres => "seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    };
    vec![
        "CREATE TABLE IF NOT EXISTS edge_records (
            id TEXT PRIMARY KEY,
            tenant TEXT NOT NULL,
            owner TEXT NOT NULL,
            collection TEXT NOT NULL,
            entity_key TEXT NOT NULL,
            data TEXT NOT NULL,
            sync_state TEXT NOT NULL,
            canonical_id TEXT,
            master_version BIGINT,
            last_error TEXT,
            last_outbox_seq BIGINT NOT NULL,
            local_version BIGINT NOT NULL,
            created_at_ms BIGINT NOT NULL,
            updated_at_ms BIGINT NOT NULL)"
            .to_owned(),
        // One record per entity and tenant: the master holds one entity too.
        "CREATE UNIQUE INDEX IF NOT EXISTS edge_records_key ON edge_records (tenant, collection, entity_key)".to_owned(),
        "CREATE INDEX IF NOT EXISTS edge_records_list ON edge_records (tenant, collection, sync_state, id)".to_owned(),
        "CREATE INDEX IF NOT EXISTS edge_records_canonical ON edge_records (collection, canonical_id)".to_owned(),
        format!(
            "CREATE TABLE IF NOT EXISTS edge_outbox (
            {seq},
            event_id TEXT NOT NULL UNIQUE,
            source TEXT NOT NULL,
            tenant TEXT NOT NULL,
            collection TEXT NOT NULL,
            record_id TEXT NOT NULL,
            entity_key TEXT NOT NULL,
            command_type TEXT NOT NULL,
            payload TEXT NOT NULL,
            expect_mode TEXT NOT NULL,
            expected_version BIGINT,
            state TEXT NOT NULL,
            publish_count BIGINT NOT NULL,
            created_at_ms BIGINT NOT NULL,
            published_at_ms BIGINT,
            finished_at_ms BIGINT)"
        ),
        "CREATE INDEX IF NOT EXISTS edge_outbox_pending ON edge_outbox (collection, state, seq)".to_owned(),
        "CREATE INDEX IF NOT EXISTS edge_outbox_entity ON edge_outbox (collection, entity_key, state)".to_owned(),
        "CREATE TABLE IF NOT EXISTS edge_conflicts (
            id TEXT PRIMARY KEY,
            tenant TEXT NOT NULL,
            owner TEXT NOT NULL,
            collection TEXT NOT NULL,
            record_id TEXT NOT NULL,
            outbox_seq BIGINT NOT NULL,
            entity_key TEXT NOT NULL,
            policy TEXT NOT NULL,
            master_version BIGINT,
            error TEXT,
            state TEXT NOT NULL,
            resolution TEXT,
            created_at_ms BIGINT NOT NULL,
            resolved_at_ms BIGINT)"
            .to_owned(),
        "CREATE INDEX IF NOT EXISTS edge_conflicts_open ON edge_conflicts (state, policy, created_at_ms)".to_owned(),
    ]
}

/// Outbox row states.
mod row_state {
    pub const PENDING: &str = "PENDING";
    pub const PUBLISHED: &str = "PUBLISHED";
    pub const APPLIED: &str = "APPLIED";
    pub const REJECTED: &str = "REJECTED";
    pub const DEAD_LETTERED: &str = "DEAD_LETTERED";
    pub const CONFLICT: &str = "CONFLICT";
    /// The master won a conflict: the write will never be sent again.
    pub const DISCARDED: &str = "DISCARDED";
}

fn now_ms() -> i64 {
    to_ms(OffsetDateTime::now_utc())
}

fn to_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn from_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn json_text(v: &Value) -> String {
    // Serializing a serde_json::Value cannot fail.
    serde_json::to_string(v).expect("JSON values serialize")
}

fn error_text(e: &StatusError) -> String {
    serde_json::to_string(e).expect("status errors serialize")
}

impl LocalStore {
    /// Connects and creates the schema when missing.
    pub async fn connect(config: &StoreConfig) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let url = config.url.trim();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        let mut options = AnyPoolOptions::new();
        options = match backend {
            // One connection: SQLite allows one writer, and a read that
            // upgrades to a write on a second connection fails with
            // SQLITE_BUSY instead of waiting. `sqlite::memory:` needs it too.
            Backend::Sqlite => options
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None),
            Backend::Postgres => options.max_connections(config.max_connections),
        };
        let pool = options
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect(url)
            .await?;
        let store = Self { pool, backend };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            // Two instances starting at once would race on CREATE ... IF NOT EXISTS.
            sqlx::query("SELECT pg_advisory_xact_lock(8245130417)")
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query("PRAGMA foreign_keys = ON")
                .execute(&mut *tx)
                .await?;
        }
        for statement in ddl(self.backend) {
            sqlx::query(&statement).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Stores a new record and its outbox row in one transaction.
    pub async fn create(&self, scope: &Scope, write: &Write) -> Result<Created, StoreError> {
        let now = now_ms();
        let id = Uuid::now_v7().to_string();
        let mut tx = self.pool.begin().await?;
        let existing: Option<String> = sqlx::query_scalar(
            "SELECT id FROM edge_records WHERE tenant = $1 AND collection = $2 AND entity_key = $3",
        )
        .bind(&scope.tenant)
        .bind(&write.collection)
        .bind(&write.key)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(id) = existing {
            return Ok(Created::KeyExists { id });
        }
        let seq = insert_outbox(
            &mut tx,
            &scope.tenant,
            &id,
            write,
            Expectation::KnownVersion,
            now,
        )
        .await?;
        let inserted = sqlx::query(
            "INSERT INTO edge_records (id, tenant, owner, collection, entity_key, data, sync_state, \
             canonical_id, master_version, last_error, last_outbox_seq, local_version, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL, NULL, $8, 1, $9, $9)",
        )
        .bind(&id)
        .bind(&scope.tenant)
        .bind(scope.owner_filter())
        .bind(&write.collection)
        .bind(&write.key)
        .bind(json_text(&write.local))
        .bind(SyncState::Pending.as_str())
        .bind(seq)
        .bind(now)
        .execute(&mut *tx)
        .await;
        if let Err(e) = inserted {
            // A concurrent create of the same key won the unique index.
            if e.as_database_error()
                .is_some_and(|d| d.is_unique_violation())
            {
                tx.rollback().await.ok();
                let id: String = sqlx::query_scalar(
                    "SELECT id FROM edge_records WHERE tenant = $1 AND collection = $2 AND entity_key = $3",
                )
                .bind(&scope.tenant)
                .bind(&write.collection)
                .bind(&write.key)
                .fetch_one(&self.pool)
                .await?;
                return Ok(Created::KeyExists { id });
            }
            return Err(e.into());
        }
        let record = fetch_record_by_id(&mut tx, &id).await?;
        tx.commit().await?;
        Ok(Created::Record(Box::new(record)))
    }

    /// Replaces a record's data with a new write and queues it, in one transaction.
    /// `id` is the temp id or the canonical id.
    pub async fn update(
        &self,
        scope: &Scope,
        id: &str,
        write: &Write,
    ) -> Result<Updated, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        // The UPDATE comes first: it locks the row (PostgreSQL), so concurrent
        // writes to one record get outbox positions in their commit order.
        let updated: Option<String> = sqlx::query_scalar(
            "UPDATE edge_records SET data = $1, sync_state = $2, last_error = NULL, \
             local_version = local_version + 1, updated_at_ms = $3 \
             WHERE collection = $4 AND (id = $5 OR canonical_id = $5) AND tenant = $6 \
             AND ($7 = '' OR owner = $7) AND entity_key = $8 RETURNING id",
        )
        .bind(json_text(&write.local))
        .bind(SyncState::Pending.as_str())
        .bind(now)
        .bind(&write.collection)
        .bind(id)
        .bind(&scope.tenant)
        .bind(scope.owner_filter())
        .bind(&write.key)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(record_id) = updated else {
            tx.rollback().await.ok();
            return Ok(match self.get(scope, &write.collection, id).await? {
                Some(r) => Updated::KeyChanged { key: r.key },
                None => Updated::NotFound,
            });
        };
        let seq = insert_outbox(
            &mut tx,
            &scope.tenant,
            &record_id,
            write,
            Expectation::KnownVersion,
            now,
        )
        .await?;
        sqlx::query("UPDATE edge_records SET last_outbox_seq = $1 WHERE id = $2")
            .bind(seq)
            .bind(&record_id)
            .execute(&mut *tx)
            .await?;
        let record = fetch_record_by_id(&mut tx, &record_id).await?;
        tx.commit().await?;
        Ok(Updated::Record(Box::new(record)))
    }

    /// A record by temp id or canonical id, within `scope`.
    pub async fn get(
        &self,
        scope: &Scope,
        collection: &str,
        id: &str,
    ) -> Result<Option<Record>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {RECORD_COLUMNS} FROM edge_records WHERE collection = $1 \
             AND (id = $2 OR canonical_id = $2) AND tenant = $3 AND ($4 = '' OR owner = $4) \
             ORDER BY id LIMIT 1"
        ))
        .bind(collection)
        .bind(id)
        .bind(&scope.tenant)
        .bind(scope.owner_filter())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(record_from_row).transpose()
    }

    /// Records of a collection within `scope`, by id (creation order), after `after`.
    pub async fn list(
        &self,
        scope: &Scope,
        collection: &str,
        state: Option<SyncState>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Record>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {RECORD_COLUMNS} FROM edge_records WHERE collection = $1 AND tenant = $2 \
             AND ($3 = '' OR owner = $3) AND ($4 = '' OR sync_state = $4) AND id > $5 \
             ORDER BY id LIMIT $6"
        ))
        .bind(collection)
        .bind(&scope.tenant)
        .bind(scope.owner_filter())
        .bind(state.map_or("", SyncState::as_str))
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record_from_row).collect()
    }

    /// Every record of a collection in `state`, all tenants (reconcile).
    pub async fn records_in_state(
        &self,
        collection: &str,
        state: SyncState,
    ) -> Result<Vec<Record>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {RECORD_COLUMNS} FROM edge_records WHERE collection = $1 AND sync_state = $2 ORDER BY id"
        ))
        .bind(collection)
        .bind(state.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record_from_row).collect()
    }

    /// How many records of a collection are not in `state` (reconcile skips them).
    pub async fn count_not_in_state(
        &self,
        collection: &str,
        state: SyncState,
    ) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM edge_records WHERE collection = $1 AND sync_state <> $2",
        )
        .bind(collection)
        .bind(state.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok(n.max(0) as u64)
    }

    /// Outbox rows waiting to be published, per collection, for the sync
    /// windows: pending rows, and rows published before `unanswered_before`
    /// that no status event answered yet (they are published again).
    pub async fn pending_summary(
        &self,
        unanswered_before: OffsetDateTime,
    ) -> Result<Vec<PendingSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT collection, count(*) AS n, min(created_at_ms) AS oldest FROM edge_outbox \
             WHERE state = $1 OR (state = $2 AND published_at_ms < $3) GROUP BY collection",
        )
        .bind(row_state::PENDING)
        .bind(row_state::PUBLISHED)
        .bind(to_ms(unanswered_before))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let n: i64 = r.try_get("n")?;
                Ok(PendingSummary {
                    collection: r.try_get("collection")?,
                    pending: n.max(0) as u64,
                    oldest: from_ms(r.try_get("oldest")?),
                })
            })
            .collect()
    }

    /// Rows of a collection that may be published now, oldest first: pending
    /// rows, and rows published before `unanswered_before` and still
    /// unanswered (a lost status, a consumer group reset; the worker's inbox
    /// turns the second publish into a re-emitted answer).
    ///
    /// A row waits while another write of its entity is in flight (published,
    /// unanswered) or parked in a conflict, or an earlier one is pending, so
    /// one entity's writes reach the master in order and each is based on the
    /// last answered master version.
    pub async fn publishable(
        &self,
        collection: &str,
        limit: usize,
        unanswered_before: OffsetDateTime,
    ) -> Result<Vec<Publishable>, StoreError> {
        let rows = sqlx::query(
            "SELECT o.seq, o.event_id, o.source, o.record_id, o.entity_key, o.command_type, o.payload, \
             o.expect_mode, o.expected_version, o.created_at_ms, r.master_version \
             FROM edge_outbox o JOIN edge_records r ON r.id = o.record_id \
             WHERE o.collection = $1 AND (o.state = $2 OR (o.state = $3 AND o.published_at_ms < $6)) \
             AND NOT EXISTS ( \
               SELECT 1 FROM edge_outbox p WHERE p.collection = o.collection AND p.entity_key = o.entity_key \
               AND p.seq <> o.seq AND (p.state = $3 OR p.state = $4 OR (p.state = $2 AND p.seq < o.seq))) \
             ORDER BY o.seq LIMIT $5",
        )
        .bind(collection)
        .bind(row_state::PENDING)
        .bind(row_state::PUBLISHED)
        .bind(row_state::CONFLICT)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(to_ms(unanswered_before))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let payload: String = r.try_get("payload")?;
                let mode: String = r.try_get("expect_mode")?;
                Ok(Publishable {
                    seq: r.try_get("seq")?,
                    event_id: r.try_get("event_id")?,
                    source: r.try_get("source")?,
                    record_id: r.try_get("record_id")?,
                    entity_key: r.try_get("entity_key")?,
                    command_type: r.try_get("command_type")?,
                    payload: serde_json::from_str(&payload)
                        .map_err(|e| StoreError::Corrupt(format!("outbox payload: {e}")))?,
                    expectation: Expectation::from_parts(&mode, r.try_get("expected_version")?),
                    known_master_version: r.try_get("master_version")?,
                    created_at: from_ms(r.try_get("created_at_ms")?),
                })
            })
            .collect()
    }

    /// Marks acknowledged rows as published (again). Rows a status event
    /// already answered (the status can overtake this update) are left alone.
    pub async fn mark_published(&self, event_ids: &[String]) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        for id in event_ids {
            sqlx::query(
                "UPDATE edge_outbox SET state = $1, published_at_ms = $2, publish_count = publish_count + 1 \
                 WHERE event_id = $3 AND (state = $4 OR state = $1)",
            )
            .bind(row_state::PUBLISHED)
            .bind(now)
            .bind(id)
            .bind(row_state::PENDING)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Refuses a queued write that can no longer be encoded (its schema
    /// changed since it was accepted): the row and, when it is the latest
    /// write, the record become `REJECTED` with `error`. Nothing is published.
    pub async fn reject_unpublishable(
        &self,
        row: &Publishable,
        error: &StatusError,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE edge_outbox SET state = $1, finished_at_ms = $2 WHERE seq = $3 AND state = $4",
        )
        .bind(row_state::REJECTED)
        .bind(now)
        .bind(row.seq)
        .bind(row_state::PENDING)
        .execute(&mut *tx)
        .await?;
        set_latest_state(
            &mut tx,
            &row.record_id,
            row.seq,
            SyncState::Rejected,
            Some(error_text(error)),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Applies a status event to the outbox row it answers, its record and,
    /// for a conflict, the conflicts table — in one transaction.
    pub async fn apply_status(
        &self,
        event: &StatusEvent,
        policy: impl Fn(&str) -> ConflictPolicy,
    ) -> Result<StatusEffect, StoreError> {
        if !event.state.is_terminal() {
            return Ok(StatusEffect::Ignored);
        }
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "SELECT seq, record_id, state, collection, tenant, entity_key FROM edge_outbox \
             WHERE event_id = $1 AND source = $2",
        )
        .bind(&event.id)
        .bind(&event.source)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(StatusEffect::Ignored);
        };
        let seq: i64 = row.try_get("seq")?;
        let record_id: String = row.try_get("record_id")?;
        let current: String = row.try_get("state")?;
        let collection: String = row.try_get("collection")?;
        let awaiting = matches!(current.as_str(), row_state::PENDING | row_state::PUBLISHED)
            || (current == row_state::DEAD_LETTERED && event.state == SubmissionState::Applied);
        if !awaiting {
            // A duplicate's re-emitted status, or an answer to a superseded id.
            return Ok(StatusEffect::Ignored);
        }
        let now = now_ms();
        let next_row_state = match event.state {
            SubmissionState::Applied => row_state::APPLIED,
            SubmissionState::Rejected => row_state::REJECTED,
            SubmissionState::DeadLettered => row_state::DEAD_LETTERED,
            SubmissionState::Conflict => row_state::CONFLICT,
            SubmissionState::Accepted => unreachable!("non-terminal states return early"),
        };
        sqlx::query("UPDATE edge_outbox SET state = $1, finished_at_ms = $2 WHERE seq = $3")
            .bind(next_row_state)
            .bind(now)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        let error = event.error.as_ref().map(error_text);
        let effect = match event.state {
            SubmissionState::Applied => {
                sqlx::query(
                    "UPDATE edge_records SET canonical_id = COALESCE($1, canonical_id), \
                     master_version = COALESCE($2, master_version), \
                     sync_state = CASE WHEN last_outbox_seq = $3 THEN $4 ELSE sync_state END, \
                     last_error = CASE WHEN last_outbox_seq = $3 THEN NULL ELSE last_error END, \
                     updated_at_ms = $5 WHERE id = $6",
                )
                .bind(event.canonical_id.clone())
                .bind(event.master_version)
                .bind(seq)
                .bind(SyncState::Synced.as_str())
                .bind(now)
                .bind(&record_id)
                .execute(&mut *tx)
                .await?;
                StatusEffect::Applied(SubmissionState::Applied)
            }
            SubmissionState::Rejected | SubmissionState::DeadLettered => {
                set_latest_state(&mut tx, &record_id, seq, SyncState::Rejected, error, now).await?;
                StatusEffect::Applied(event.state)
            }
            SubmissionState::Conflict => {
                let policy = policy(&collection);
                let conflict_id = Uuid::now_v7().to_string();
                let tenant: String = row.try_get("tenant")?;
                let key: String = row.try_get("entity_key")?;
                let owner: String =
                    sqlx::query_scalar("SELECT owner FROM edge_records WHERE id = $1")
                        .bind(&record_id)
                        .fetch_one(&mut *tx)
                        .await?;
                sqlx::query(
                    "INSERT INTO edge_conflicts (id, tenant, owner, collection, record_id, outbox_seq, \
                     entity_key, policy, master_version, error, state, resolution, created_at_ms, resolved_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'OPEN', NULL, $11, NULL)",
                )
                .bind(&conflict_id)
                .bind(&tenant)
                .bind(&owner)
                .bind(&collection)
                .bind(&record_id)
                .bind(seq)
                .bind(&key)
                .bind(policy.as_str())
                .bind(event.master_version)
                .bind(error.clone())
                .bind(now)
                .execute(&mut *tx)
                .await?;
                set_latest_state(&mut tx, &record_id, seq, SyncState::Conflict, error, now).await?;
                StatusEffect::Conflict {
                    conflict_id,
                    policy,
                }
            }
            SubmissionState::Accepted => unreachable!("non-terminal states return early"),
        };
        tx.commit().await?;
        Ok(effect)
    }

    /// Open conflicts whose policy resolves them automatically, oldest first.
    pub async fn open_automatic_conflicts(
        &self,
        limit: usize,
    ) -> Result<Vec<Conflict>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {CONFLICT_COLUMNS} FROM edge_conflicts c LEFT JOIN edge_outbox o ON o.seq = c.outbox_seq \
             WHERE c.state = 'OPEN' AND c.policy <> $1 ORDER BY c.created_at_ms, c.id LIMIT $2"
        ))
        .bind(ConflictPolicy::Manual.as_str())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(conflict_from_row).collect()
    }

    /// Hands an open conflict over to a person: its policy becomes `manual`
    /// (an automatic resolution failed for good, e.g. the master has no version).
    pub async fn park_conflict(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE edge_conflicts SET policy = $1 WHERE id = $2 AND state = 'OPEN'")
            .bind(ConflictPolicy::Manual.as_str())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Conflicts within `scope` (open ones unless `all`), optionally of one collection.
    pub async fn list_conflicts(
        &self,
        scope: &Scope,
        collection: Option<&str>,
        all: bool,
    ) -> Result<Vec<Conflict>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {CONFLICT_COLUMNS} FROM edge_conflicts c LEFT JOIN edge_outbox o ON o.seq = c.outbox_seq \
             WHERE c.tenant = $1 AND ($2 = '' OR c.owner = $2) AND ($3 = '' OR c.collection = $3) \
             AND ($4 = 'all' OR c.state = 'OPEN') ORDER BY c.created_at_ms, c.id LIMIT 1000"
        ))
        .bind(&scope.tenant)
        .bind(scope.owner_filter())
        .bind(collection.unwrap_or(""))
        .bind(if all { "all" } else { "open" })
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(conflict_from_row).collect()
    }

    /// An open conflict by id within `scope` (`None` scope: any tenant).
    pub async fn open_conflict(
        &self,
        scope: Option<&Scope>,
        id: &str,
    ) -> Result<Option<Conflict>, StoreError> {
        let (tenant, owner) = scope.map_or(("", ""), |s| (s.tenant.as_str(), s.owner_filter()));
        let row = sqlx::query(&format!(
            "SELECT {CONFLICT_COLUMNS} FROM edge_conflicts c LEFT JOIN edge_outbox o ON o.seq = c.outbox_seq \
             WHERE c.id = $1 AND c.state = 'OPEN' AND ($2 = '' OR c.tenant = $2) AND ($3 = '' OR c.owner = $3)"
        ))
        .bind(id)
        .bind(tenant)
        .bind(owner)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(conflict_from_row).transpose()
    }

    /// Resolves a conflict for the local write: the write is queued again
    /// under a new `ce_id` (the old one is answered `CONFLICT` in the worker's
    /// inbox forever), keeping its place in the entity's order, and expects
    /// `master_version`.
    pub async fn take_local(
        &self,
        conflict: &Conflict,
        master_version: i64,
    ) -> Result<Resolved, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        if !close_conflict(&mut tx, &conflict.id, "local", now).await? {
            return Ok(Resolved::NotFound);
        }
        let (mode, version) = Expectation::Version(master_version).to_parts();
        sqlx::query(
            "UPDATE edge_outbox SET event_id = $1, state = $2, expect_mode = $3, expected_version = $4, \
             finished_at_ms = NULL WHERE seq = $5",
        )
        .bind(Uuid::now_v7().to_string())
        .bind(row_state::PENDING)
        .bind(mode)
        .bind(version)
        .bind(conflict.outbox_seq)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE edge_records SET sync_state = $1, last_error = NULL, updated_at_ms = $2 \
             WHERE id = $3 AND last_outbox_seq = $4",
        )
        .bind(SyncState::Pending.as_str())
        .bind(now)
        .bind(&conflict.record_id)
        .bind(conflict.outbox_seq)
        .execute(&mut *tx)
        .await?;
        let record = fetch_record_by_id(&mut tx, &conflict.record_id).await?;
        tx.commit().await?;
        Ok(Resolved::Record(Box::new(record)))
    }

    /// Resolves a conflict for the master: the local write is dropped and, when
    /// it was the record's latest, the local copy is refreshed from `master`
    /// (`None`: the master has no such entity, and the record becomes `REJECTED`).
    pub async fn take_master(
        &self,
        conflict: &Conflict,
        master: Option<(Value, Option<i64>)>,
        projection: &Projection,
    ) -> Result<Resolved, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        if !close_conflict(&mut tx, &conflict.id, "master", now).await? {
            return Ok(Resolved::NotFound);
        }
        sqlx::query("UPDATE edge_outbox SET state = $1, finished_at_ms = $2 WHERE seq = $3")
            .bind(row_state::DISCARDED)
            .bind(now)
            .bind(conflict.outbox_seq)
            .execute(&mut *tx)
            .await?;
        let record = fetch_record_by_id(&mut tx, &conflict.record_id).await?;
        let latest = record.last_outbox_seq == conflict.outbox_seq;
        match master {
            Some((payload, version)) => {
                if latest {
                    let data = projection.refresh(&record.data, &payload);
                    let note = StatusError {
                        code: "MASTER_WON".into(),
                        message: "a version conflict was resolved for the master; the local write was dropped and the copy refreshed".into(),
                        retryable: false,
                    };
                    refresh_record(&mut tx, &record.id, &data, version, Some(&note), now).await?;
                } else if let Some(v) = version {
                    // Later local writes are queued: keep their data, base them on the master's version.
                    sqlx::query("UPDATE edge_records SET master_version = $1, updated_at_ms = $2 WHERE id = $3")
                        .bind(v)
                        .bind(now)
                        .bind(&record.id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            None => {
                let note = StatusError {
                    code: "NOT_IN_MASTER".into(),
                    message: "the master won a version conflict but holds no such entity any more"
                        .into(),
                    retryable: false,
                };
                set_latest_state(
                    &mut tx,
                    &record.id,
                    conflict.outbox_seq,
                    SyncState::Rejected,
                    Some(error_text(&note)),
                    now,
                )
                .await?;
            }
        }
        let record = fetch_record_by_id(&mut tx, &conflict.record_id).await?;
        tx.commit().await?;
        Ok(Resolved::Record(Box::new(record)))
    }

    /// Refreshes a synced record from the master's copy (reconcile repair).
    /// Only applies while the record is still `SYNCED` with the same local
    /// version, so a write that arrived meanwhile is never overwritten.
    pub async fn refresh_from_master(
        &self,
        record: &Record,
        data: &Value,
        master_version: Option<i64>,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE edge_records SET data = $1, master_version = COALESCE($2, master_version), \
             last_error = NULL, updated_at_ms = $3 \
             WHERE id = $4 AND sync_state = $5 AND local_version = $6",
        )
        .bind(json_text(data))
        .bind(master_version)
        .bind(now_ms())
        .bind(&record.id)
        .bind(SyncState::Synced.as_str())
        .bind(record.local_version)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Queues a synced record's latest full write again (reconcile repair).
    /// Returns false when the record changed meanwhile or its latest write
    /// was pruned from the outbox.
    pub async fn reenqueue(
        &self,
        record: &Record,
        expectation: Expectation,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let latest = sqlx::query(
            "SELECT o.source, o.command_type, o.payload, o.tenant FROM edge_outbox o \
             JOIN edge_records r ON r.last_outbox_seq = o.seq \
             WHERE r.id = $1 AND r.sync_state = $2 AND r.local_version = $3",
        )
        .bind(&record.id)
        .bind(SyncState::Synced.as_str())
        .bind(record.local_version)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(latest) = latest else {
            return Ok(false);
        };
        let payload: String = latest.try_get("payload")?;
        let write = Write {
            collection: record.collection.clone(),
            command_type: latest.try_get("command_type")?,
            key: record.key.clone(),
            full: serde_json::from_str(&payload)
                .map_err(|e| StoreError::Corrupt(format!("outbox payload: {e}")))?,
            local: record.data.clone(),
            source: latest.try_get("source")?,
        };
        let tenant: String = latest.try_get("tenant")?;
        let seq = insert_outbox(&mut tx, &tenant, &record.id, &write, expectation, now).await?;
        sqlx::query(
            "UPDATE edge_records SET last_outbox_seq = $1, sync_state = $2, last_error = NULL, \
             updated_at_ms = $3 WHERE id = $4",
        )
        .bind(seq)
        .bind(SyncState::Pending.as_str())
        .bind(now)
        .bind(&record.id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Deletes finished outbox rows and resolved conflicts older than
    /// `older_than`, keeping every record's latest outbox row.
    pub async fn prune(&self, older_than: OffsetDateTime) -> Result<u64, StoreError> {
        let cutoff = to_ms(older_than);
        let outbox = sqlx::query(
            "DELETE FROM edge_outbox WHERE state IN ($1, $2, $3, $4) AND created_at_ms < $5 \
             AND NOT EXISTS (SELECT 1 FROM edge_records r WHERE r.last_outbox_seq = edge_outbox.seq) \
             AND NOT EXISTS (SELECT 1 FROM edge_conflicts c WHERE c.outbox_seq = edge_outbox.seq AND c.state = 'OPEN')",
        )
        .bind(row_state::APPLIED)
        .bind(row_state::REJECTED)
        .bind(row_state::DEAD_LETTERED)
        .bind(row_state::DISCARDED)
        .bind(cutoff)
        .execute(&self.pool)
        .await?
        .rows_affected();
        let conflicts = sqlx::query(
            "DELETE FROM edge_conflicts WHERE state = 'RESOLVED' AND resolved_at_ms < $1",
        )
        .bind(cutoff)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(outbox + conflicts)
    }

    /// The number of outbox rows in each state (tests and metrics).
    pub async fn outbox_states(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT state, count(*) AS n FROM edge_outbox GROUP BY state ORDER BY state",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let n: i64 = r.try_get("n")?;
                Ok((r.try_get("state")?, n.max(0) as u64))
            })
            .collect()
    }

    /// The underlying pool, for operators' ad-hoc checks and tests.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

async fn insert_outbox(
    tx: &mut Tx<'_>,
    tenant: &str,
    record_id: &str,
    write: &Write,
    expectation: Expectation,
    now: i64,
) -> Result<i64, StoreError> {
    let (mode, version) = expectation.to_parts();
    let seq: i64 = sqlx::query_scalar(
        "INSERT INTO edge_outbox (event_id, source, tenant, collection, record_id, entity_key, \
         command_type, payload, expect_mode, expected_version, state, publish_count, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0, $12) RETURNING seq",
    )
    .bind(Uuid::now_v7().to_string())
    .bind(&write.source)
    .bind(tenant)
    .bind(&write.collection)
    .bind(record_id)
    .bind(&write.key)
    .bind(&write.command_type)
    .bind(json_text(&write.full))
    .bind(mode)
    .bind(version)
    .bind(row_state::PENDING)
    .bind(now)
    .fetch_one(&mut **tx)
    .await?;
    Ok(seq)
}

async fn fetch_record_by_id(tx: &mut Tx<'_>, id: &str) -> Result<Record, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {RECORD_COLUMNS} FROM edge_records WHERE id = $1"
    ))
    .bind(id)
    .fetch_one(&mut **tx)
    .await?;
    record_from_row(&row)
}

/// Sets the record's state and error when `seq` is its latest write.
async fn set_latest_state(
    tx: &mut Tx<'_>,
    record_id: &str,
    seq: i64,
    state: SyncState,
    error: Option<String>,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE edge_records SET sync_state = $1, last_error = $2, updated_at_ms = $3 \
         WHERE id = $4 AND last_outbox_seq = $5",
    )
    .bind(state.as_str())
    .bind(error)
    .bind(now)
    .bind(record_id)
    .bind(seq)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn refresh_record(
    tx: &mut Tx<'_>,
    record_id: &str,
    data: &Value,
    master_version: Option<i64>,
    note: Option<&StatusError>,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE edge_records SET data = $1, master_version = COALESCE($2, master_version), \
         sync_state = $3, last_error = $4, updated_at_ms = $5 WHERE id = $6",
    )
    .bind(json_text(data))
    .bind(master_version)
    .bind(SyncState::Synced.as_str())
    .bind(note.map(error_text))
    .bind(now)
    .bind(record_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Closes an open conflict; false when it is not open (resolved concurrently).
async fn close_conflict(
    tx: &mut Tx<'_>,
    id: &str,
    resolution: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE edge_conflicts SET state = 'RESOLVED', resolution = $1, resolved_at_ms = $2 \
         WHERE id = $3 AND state = 'OPEN'",
    )
    .bind(resolution)
    .bind(now)
    .bind(id)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(n == 1)
}
