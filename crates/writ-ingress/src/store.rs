//! The local store behind the status view: SQLite, so memory stays bounded no
//! matter how many submissions the dedupe window holds (a configured file in
//! production, a temporary file for tests and `writ dev`).
//!
//! It holds the latest state of every submission (one row per submission id,
//! the event itself as JSON next to the indexed columns), the next offset to
//! read per status partition (written in the same transaction as the events,
//! so a restart resumes exactly where the view stopped), and the bulk jobs
//! this instance received with their line errors.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use time::OffsetDateTime;
use uuid::Uuid;
use writ_core::{StatusEvent, SubmissionState};

/// A store failure. Local disk or a corrupt row: not the client's fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("status store: {0}")]
    Sqlite(#[from] sqlx::Error),
    /// A stored row cannot be read back (written by an incompatible version).
    #[error("status store row is unreadable: {0}")]
    Corrupt(String),
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS submissions (
    submission_id BLOB PRIMARY KEY,
    source TEXT NOT NULL,
    state TEXT NOT NULL,
    job_id TEXT,
    job_line INTEGER,
    stale_after_ms INTEGER,
    updated_ms INTEGER NOT NULL,
    event TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS submissions_by_job ON submissions (job_id, job_line) WHERE job_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS submissions_by_age ON submissions (updated_ms);
CREATE INDEX IF NOT EXISTS submissions_pending ON submissions (stale_after_ms) WHERE state = 'ACCEPTED';
CREATE TABLE IF NOT EXISTS view_offsets (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    command_type TEXT NOT NULL,
    state TEXT NOT NULL,
    lines INTEGER NOT NULL,
    produced INTEGER NOT NULL,
    tracked INTEGER NOT NULL,
    invalid INTEGER NOT NULL,
    replayed INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS job_errors (
    job_id TEXT NOT NULL,
    line INTEGER NOT NULL,
    code TEXT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (job_id, line)
);
"#;

/// Where a bulk upload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Lines are still being read and produced.
    Uploading,
    /// Every line was read; every valid one is durably in Kafka.
    Uploaded,
    /// The upload stopped before its end (broker down, limit, client gone).
    Failed,
}

impl JobState {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Uploading => "UPLOADING",
            Self::Uploaded => "UPLOADED",
            Self::Failed => "FAILED",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::Uploading, Self::Uploaded, Self::Failed]
            .into_iter()
            .find(|j| j.as_str() == s)
    }
}

/// A bulk job as this instance recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    /// Job id (`ce_jobid`).
    pub job_id: String,
    /// `ce_source` of the uploader: the tenant.
    pub source: String,
    /// Command type of every line.
    pub command_type: String,
    /// Upload state.
    pub state: JobState,
    /// Lines read so far (blank lines not counted).
    pub lines: u64,
    /// Commands produced to the bulk topic.
    pub produced: u64,
    /// Lines whose status rows carry this job id (what progress counts against).
    pub tracked: u64,
    /// Lines refused by the ingress (bad JSON, schema, key reuse).
    pub invalid: u64,
    /// Lines whose key was already applied with the same payload outside this job (nothing produced).
    pub replayed: u64,
    /// When the upload started.
    pub created_at: OffsetDateTime,
}

/// One line of a job that did not apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number in the upload.
    pub line: u64,
    /// Stable code (`INVALID_JSON`, `VALIDATION`, a worker's error code, ...).
    pub code: String,
    /// What is wrong; never a field value.
    pub message: String,
}

/// The SQLite-backed store of the status view.
#[derive(Debug)]
pub struct StatusStore {
    pool: SqlitePool,
    // SQLite allows one writer; serializing writes here avoids BUSY upgrades
    // of deferred transactions that first read then write.
    writer: tokio::sync::Mutex<()>,
    /// The directory of a temporary store, removed on drop.
    _temp: Option<tempfile::TempDir>,
}

fn ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn from_ms(v: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(v) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl StatusStore {
    /// Opens (or creates) the store: a file at `path`, or a private temporary
    /// file that is deleted when the store is dropped.
    ///
    /// Always a file in WAL mode, never `:memory:`: readers (every request)
    /// then never wait for the view's write transactions, and the page cache,
    /// not the heap, holds the data.
    pub async fn open(path: Option<&Path>) -> Result<Self, StoreError> {
        let (path, temp, synchronous) = match path {
            Some(p) => (p.to_owned(), None, SqliteSynchronous::Normal),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("writ-ingress-view-")
                    .tempdir()
                    .map_err(|e| StoreError::Sqlite(sqlx::Error::Io(e)))?;
                // Nothing to lose on a crash: the view is rebuilt from the topic.
                (
                    dir.path().join("view.db"),
                    Some(dir),
                    SqliteSynchronous::Off,
                )
            }
        };
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await?;
        Ok(Self {
            pool,
            writer: tokio::sync::Mutex::new(()),
            _temp: temp,
        })
    }

    /// Whether the view holds nothing yet (then it is rebuilt from the topic's beginning).
    pub async fn is_empty(&self) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM view_offsets")
            .fetch_one(&self.pool)
            .await?;
        Ok(n == 0)
    }

    /// Applies status events and records the offsets they were read up to, in
    /// one transaction. A submission's state only moves as
    /// [`SubmissionState::transition`] allows, so a late `ACCEPTED` never
    /// hides a terminal state. Returns the events that changed the view.
    pub async fn apply(
        &self,
        events: &[StatusEvent],
        offsets: &[(String, i32, i64)],
    ) -> Result<Vec<StatusEvent>, StoreError> {
        let _guard = self.writer.lock().await;
        let mut tx = self.pool.begin().await?;
        let mut changed = Vec::new();
        let now = ms(OffsetDateTime::now_utc());
        let upsert = upsert_sql();
        for event in events {
            let json = serde_json::to_string(event)
                .map_err(|e| StoreError::Corrupt(format!("status event to JSON: {e}")))?;
            // One statement decides and writes: a row comes back only when
            // the event was inserted or was an allowed transition.
            let written: Option<String> = sqlx::query_scalar(upsert)
                .bind(event.submission_id.as_bytes().as_slice())
                .bind(&event.source)
                .bind(event.state.as_str())
                .bind(&event.job_id)
                .bind(event.job_line)
                .bind(event.stale_after.map(ms))
                .bind(now)
                .bind(json)
                .fetch_optional(&mut *tx)
                .await?;
            if written.is_some() {
                changed.push(event.clone());
            }
        }
        for (topic, partition, next) in offsets {
            sqlx::query(
                "INSERT INTO view_offsets (topic, partition, next_offset) VALUES (?, ?, ?)
                 ON CONFLICT (topic, partition) DO UPDATE SET next_offset = max(next_offset, excluded.next_offset)",
            )
            .bind(topic)
            .bind(partition)
            .bind(next)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// The next offset to read per partition of `topic`.
    pub async fn offsets(&self, topic: &str) -> Result<HashMap<i32, i64>, StoreError> {
        let rows = sqlx::query("SELECT partition, next_offset FROM view_offsets WHERE topic = ?")
            .bind(topic)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<i32, _>(0), r.get::<i64, _>(1)))
            .collect())
    }

    /// The latest state of one submission.
    pub async fn get(&self, submission_id: Uuid) -> Result<Option<StatusEvent>, StoreError> {
        let row: Option<String> =
            sqlx::query_scalar("SELECT event FROM submissions WHERE submission_id = ?")
                .bind(submission_id.as_bytes().as_slice())
                .fetch_optional(&self.pool)
                .await?;
        row.map(|json| parse_event(&json)).transpose()
    }

    /// Calls `each` with every submission id held (to fill the in-memory filter at start).
    pub async fn for_each_submission_id(
        &self,
        mut each: impl FnMut(Uuid),
    ) -> Result<u64, StoreError> {
        use futures::TryStreamExt;
        let mut rows = sqlx::query_scalar::<_, Vec<u8>>("SELECT submission_id FROM submissions")
            .fetch(&self.pool);
        let mut n = 0;
        while let Some(bytes) = rows.try_next().await? {
            let id = Uuid::from_slice(&bytes)
                .map_err(|e| StoreError::Corrupt(format!("stored submission id: {e}")))?;
            each(id);
            n += 1;
        }
        Ok(n)
    }

    /// The latest state of several submissions (absent ones are missing from the map).
    pub async fn get_many(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, StatusEvent>, StoreError> {
        let mut out = HashMap::with_capacity(ids.len());
        // SQLite limits bound parameters per statement; stay well below it.
        for chunk in ids.chunks(500) {
            let placeholders = vec!["?"; chunk.len()].join(",");
            let sql =
                format!("SELECT event FROM submissions WHERE submission_id IN ({placeholders})");
            let mut q = sqlx::query_scalar::<_, String>(&sql);
            for id in chunk {
                q = q.bind(id.as_bytes().as_slice());
            }
            for json in q.fetch_all(&self.pool).await? {
                let e = parse_event(&json)?;
                out.insert(e.submission_id, e);
            }
        }
        Ok(out)
    }

    /// Submissions of `job_id` per state.
    pub async fn job_counts(
        &self,
        job_id: &str,
    ) -> Result<HashMap<SubmissionState, u64>, StoreError> {
        let rows =
            sqlx::query("SELECT state, count(*) FROM submissions WHERE job_id = ? GROUP BY state")
                .bind(job_id)
                .fetch_all(&self.pool)
                .await?;
        let mut out = HashMap::new();
        for r in rows {
            let state: String = r.get(0);
            let n: i64 = r.get(1);
            let state = SubmissionState::parse(&state)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown state {state:?}")))?;
            out.insert(state, n as u64);
        }
        Ok(out)
    }

    /// Lines of `job_id` that failed, at the ingress or at the worker, in line order.
    pub async fn job_errors(
        &self,
        job_id: &str,
        after_line: u64,
        limit: u32,
    ) -> Result<Vec<LineError>, StoreError> {
        let mut out = Vec::new();
        let rows = sqlx::query(
            "SELECT line, code, message FROM job_errors WHERE job_id = ? AND line > ? ORDER BY line LIMIT ?",
        )
        .bind(job_id)
        .bind(after_line as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        for r in rows {
            out.push(LineError {
                line: r.get::<i64, _>(0) as u64,
                code: r.get(1),
                message: r.get(2),
            });
        }
        let rows = sqlx::query(
            "SELECT job_line, event FROM submissions WHERE job_id = ? AND job_line > ?
               AND state IN ('REJECTED', 'CONFLICT', 'DEAD_LETTERED') ORDER BY job_line LIMIT ?",
        )
        .bind(job_id)
        .bind(after_line as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        for r in rows {
            let line: Option<i64> = r.get(0);
            let event = parse_event(&r.get::<String, _>(1))?;
            let (code, message) = match event.error {
                Some(e) => (e.code, e.message),
                None => (event.state.as_str().to_owned(), String::new()),
            };
            out.push(LineError {
                line: line.unwrap_or(0) as u64,
                code,
                message,
            });
        }
        out.sort_by_key(|e| e.line);
        out.truncate(limit as usize);
        Ok(out)
    }

    /// Creates or replaces a job row.
    pub async fn put_job(&self, job: &JobRecord) -> Result<(), StoreError> {
        let _guard = self.writer.lock().await;
        sqlx::query(
            "INSERT INTO jobs (job_id, source, command_type, state, lines, produced, tracked, invalid, replayed, created_ms, updated_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (job_id) DO UPDATE SET state = excluded.state, lines = excluded.lines,
               produced = excluded.produced, tracked = excluded.tracked, invalid = excluded.invalid,
               replayed = excluded.replayed, updated_ms = excluded.updated_ms",
        )
        .bind(&job.job_id)
        .bind(&job.source)
        .bind(&job.command_type)
        .bind(job.state.as_str())
        .bind(job.lines as i64)
        .bind(job.produced as i64)
        .bind(job.tracked as i64)
        .bind(job.invalid as i64)
        .bind(job.replayed as i64)
        .bind(ms(job.created_at))
        .bind(ms(OffsetDateTime::now_utc()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records line errors of a job (a line answered twice keeps its last error).
    pub async fn add_job_errors(
        &self,
        job_id: &str,
        errors: &[LineError],
    ) -> Result<(), StoreError> {
        if errors.is_empty() {
            return Ok(());
        }
        let _guard = self.writer.lock().await;
        let mut tx = self.pool.begin().await?;
        for e in errors {
            sqlx::query(
                "INSERT INTO job_errors (job_id, line, code, message) VALUES (?, ?, ?, ?)
                 ON CONFLICT (job_id, line) DO UPDATE SET code = excluded.code, message = excluded.message",
            )
            .bind(job_id)
            .bind(e.line as i64)
            .bind(&e.code)
            .bind(&e.message)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A job row.
    pub async fn get_job(&self, job_id: &str) -> Result<Option<JobRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT job_id, source, command_type, state, lines, produced, tracked, invalid, replayed, created_ms FROM jobs WHERE job_id = ?",
        )
        .bind(job_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let state: String = r.get(3);
            Ok(JobRecord {
                job_id: r.get(0),
                source: r.get(1),
                command_type: r.get(2),
                state: JobState::parse(&state)
                    .ok_or_else(|| StoreError::Corrupt(format!("unknown job state {state:?}")))?,
                lines: r.get::<i64, _>(4) as u64,
                produced: r.get::<i64, _>(5) as u64,
                tracked: r.get::<i64, _>(6) as u64,
                invalid: r.get::<i64, _>(7) as u64,
                replayed: r.get::<i64, _>(8) as u64,
                created_at: from_ms(r.get(9)),
            })
        })
        .transpose()
    }

    /// Pending submissions past their staleness window at `now`.
    pub async fn stale_pending(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM submissions WHERE state = 'ACCEPTED' AND stale_after_ms < ?",
        )
        .bind(ms(now))
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }

    /// Forgets submissions and jobs not updated since `before`: past the
    /// dedupe window the status topic has forgotten them too.
    pub async fn purge(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        let _guard = self.writer.lock().await;
        let cutoff = ms(before);
        let mut tx = self.pool.begin().await?;
        let gone = sqlx::query("DELETE FROM submissions WHERE updated_ms < ?")
            .bind(cutoff)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(
            "DELETE FROM job_errors WHERE job_id IN (SELECT job_id FROM jobs WHERE updated_ms < ?)",
        )
        .bind(cutoff)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM jobs WHERE updated_ms < ?")
            .bind(cutoff)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(gone)
    }
}

/// The upsert of a status event, guarded by the state machine: the allowed
/// (current, next) pairs are generated from [`SubmissionState::transition`],
/// minus restatements (the first event of a state is kept), so SQL and Rust
/// cannot disagree about what may change.
fn upsert_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        let pairs: Vec<String> = SubmissionState::ALL
            .iter()
            .flat_map(|from| SubmissionState::ALL.iter().map(move |to| (*from, *to)))
            .filter(|(from, to)| from != to && from.transition(*to).is_ok())
            .map(|(from, to)| format!("('{}', '{}')", from.as_str(), to.as_str()))
            .collect();
        format!(
            "INSERT INTO submissions (submission_id, source, state, job_id, job_line, stale_after_ms, updated_ms, event)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (submission_id) DO UPDATE SET source = excluded.source, state = excluded.state,
               job_id = excluded.job_id, job_line = excluded.job_line, stale_after_ms = excluded.stale_after_ms,
               updated_ms = excluded.updated_ms, event = excluded.event
             WHERE (submissions.state, excluded.state) IN (VALUES {})
             RETURNING state",
            pairs.join(", ")
        )
    })
}

fn parse_event(json: &str) -> Result<StatusEvent, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Test fixtures shared by this crate's unit tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use time::macros::datetime;
    use writ_core::{StatusEvent, SubmissionState};

    /// A status event of tenant `acme` for key `key`.
    pub(crate) fn event(key: &str, state: SubmissionState) -> StatusEvent {
        StatusEvent {
            submission_id: writ_core::submission_id("/tenants/acme", key),
            source: "/tenants/acme".into(),
            id: key.into(),
            command_type: "customer.upsert.v1".into(),
            subject: Some("cust-1".into()),
            state,
            canonical_id: None,
            master_version: None,
            error: None,
            attempts: 0,
            payload_fingerprint: "f1".into(),
            accepted_at: datetime!(2026-11-27 08:00 UTC),
            applied_at: None,
            stale_after: Some(datetime!(2026-11-27 08:01 UTC)),
            job_id: Some("job-1".into()),
            job_line: Some(3),
            draft_id: None,
            temp_id: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::event;
    use super::*;
    use time::macros::datetime;

    #[tokio::test]
    async fn a_terminal_state_is_never_regressed_and_offsets_persist() {
        let store = StatusStore::open(None).await.unwrap();
        assert!(store.is_empty().await.unwrap());
        let accepted = event("k1", SubmissionState::Accepted);
        let mut applied = event("k1", SubmissionState::Applied);
        applied.canonical_id = Some("cust-1".into());
        let changed = store
            .apply(
                &[accepted.clone(), applied.clone(), accepted.clone()],
                &[("s".into(), 0, 3)],
            )
            .await
            .unwrap();
        assert_eq!(changed, vec![accepted.clone(), applied.clone()]);
        // A late ACCEPTED (another batch) changes nothing either.
        assert!(store
            .apply(&[accepted], &[("s".into(), 0, 2)])
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            store.get(applied.submission_id).await.unwrap(),
            Some(applied)
        );
        assert_eq!(
            store.offsets("s").await.unwrap()[&0],
            3,
            "offsets never go back"
        );
        assert!(!store.is_empty().await.unwrap());
    }

    #[tokio::test]
    async fn a_dlq_replay_makes_a_dead_letter_pending_again() {
        let store = StatusStore::open(None).await.unwrap();
        let dead = event("k1", SubmissionState::DeadLettered);
        let again = event("k1", SubmissionState::Accepted);
        let applied = event("k1", SubmissionState::Applied);
        let changed = store
            .apply(
                &[dead.clone(), dead.clone(), again.clone(), applied.clone()],
                &[],
            )
            .await
            .unwrap();
        assert_eq!(changed, vec![dead, again, applied]);
    }

    #[tokio::test]
    async fn job_counts_errors_and_staleness() {
        let store = StatusStore::open(None).await.unwrap();
        let mut rejected = event("k2", SubmissionState::Rejected);
        rejected.job_line = Some(2);
        rejected.error = Some(writ_core::StatusError {
            code: "VALIDATION".into(),
            message: "name is empty".into(),
            retryable: false,
        });
        store
            .apply(&[event("k1", SubmissionState::Accepted), rejected], &[])
            .await
            .unwrap();
        store
            .add_job_errors(
                "job-1",
                &[LineError {
                    line: 1,
                    code: "INVALID_JSON".into(),
                    message: "expected value".into(),
                }],
            )
            .await
            .unwrap();
        let counts = store.job_counts("job-1").await.unwrap();
        assert_eq!(counts[&SubmissionState::Accepted], 1);
        assert_eq!(counts[&SubmissionState::Rejected], 1);
        let errors = store.job_errors("job-1", 0, 10).await.unwrap();
        assert_eq!(
            errors
                .iter()
                .map(|e| (e.line, e.code.as_str()))
                .collect::<Vec<_>>(),
            vec![(1, "INVALID_JSON"), (2, "VALIDATION")]
        );
        assert_eq!(store.job_errors("job-1", 1, 10).await.unwrap().len(), 1);
        assert_eq!(
            store
                .stale_pending(datetime!(2026-11-27 08:02 UTC))
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            store
                .stale_pending(datetime!(2026-11-27 08:00:30 UTC))
                .await
                .unwrap(),
            0
        );
    }

    #[tokio::test]
    async fn a_file_store_survives_a_reopen_and_purges_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("view.db");
        let e = event("k1", SubmissionState::Accepted);
        {
            let store = StatusStore::open(Some(&path)).await.unwrap();
            store
                .apply(std::slice::from_ref(&e), &[("s".into(), 1, 10)])
                .await
                .unwrap();
        }
        let store = StatusStore::open(Some(&path)).await.unwrap();
        assert_eq!(store.get(e.submission_id).await.unwrap(), Some(e.clone()));
        assert_eq!(store.offsets("s").await.unwrap()[&1], 10);
        let future = OffsetDateTime::now_utc() + Duration::from_secs(60);
        assert_eq!(store.purge(future).await.unwrap(), 1);
        assert_eq!(store.get(e.submission_id).await.unwrap(), None);
    }
}
