//! The SQLite master: the same transaction shape as PostgreSQL's, but per-row
//! statements inside one `BEGIN IMMEDIATE` transaction — SQLite is in-process,
//! so round trips are cheap, and the immediate write lock makes a
//! read-then-write per command race-free.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;
use sqlx::query::Query;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
};
use sqlx::{Row, Sqlite, SqliteConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use super::config::{Dialect, Mapping, SqlMasterConfig, WriteMode};
use super::error::{classify, Failure};
use super::ident::TableName;
use super::inbox::{self, Recorded};
use super::plan;
use super::values::SqlValue;
use super::{assemble, prepare, Work};
use crate::{ApplyResult, Command, MasterError, Outcome};

const EXPIRE_CHUNK: i64 = 10_000;

fn fail(what: &str) -> impl Fn(sqlx::Error) -> Failure + '_ {
    move |e| classify(Dialect::Sqlite, what, &e)
}

fn millis(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn from_millis(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Opens the pool (WAL, 5 s busy timeout) and creates the inbox table if missing.
pub async fn connect(
    config: &SqlMasterConfig,
    inbox: &TableName,
) -> Result<SqlitePool, MasterError> {
    let opts = SqliteConnectOptions::from_str(&config.url)
        .map_err(|e| super::error::misconfigured(format!("master.url: {e}")))?
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true);
    let in_memory = config.url.contains(":memory:") || config.url.contains("mode=memory");
    let opts = if in_memory {
        opts
    } else {
        opts.journal_mode(SqliteJournalMode::Wal)
    };
    // An in-memory database exists per connection: keep exactly one.
    let max = if in_memory {
        1
    } else {
        config.max_connections.max(1)
    };
    let pool = SqlitePoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_millis(config.acquire_timeout_ms))
        .connect_with(opts)
        .await
        .map_err(|e| fail("opening SQLite")(e).into_batch_error())?;
    for ddl in inbox::ddl(Dialect::Sqlite, inbox) {
        sqlx::query(&ddl)
            .execute(&pool)
            .await
            .map_err(|e| fail("creating the inbox table")(e).into_batch_error())?;
    }
    Ok(pool)
}

fn bind<'q>(
    q: Query<'q, Sqlite, SqliteArguments<'q>>,
    v: SqlValue,
) -> Query<'q, Sqlite, SqliteArguments<'q>> {
    match v {
        SqlValue::Null => q.bind(None::<String>),
        SqlValue::Bool(b) => q.bind(b),
        SqlValue::Int(i) => q.bind(i),
        SqlValue::Float(f) => q.bind(f),
        SqlValue::Text(s) | SqlValue::Json(s) => q.bind(s),
    }
}

/// Applies a batch in one `BEGIN IMMEDIATE` transaction.
pub async fn apply(
    pool: &SqlitePool,
    mappings: &HashMap<String, Mapping>,
    inbox: &TableName,
    batch: &[Command],
) -> Result<Vec<ApplyResult>, Failure> {
    let work = Work::new(batch);
    let now = OffsetDateTime::now_utc();
    let now_ms = millis(now);
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(fail("beginning a transaction"))?;

    // (1) Claim.
    let claim_sql = format!(
        "INSERT INTO {inbox} (submission_id, state, fingerprint, recorded_at) VALUES (?, {}, ?, ?) \
         ON CONFLICT (submission_id) DO NOTHING",
        inbox::state::CLAIMED
    );
    let mut claimed = vec![false; batch.len()];
    let mut dups = Vec::new();
    for &i in &work.unique {
        let cmd = &batch[i];
        let n = sqlx::query(&claim_sql)
            .bind(cmd.submission_id)
            .bind(&cmd.fingerprint)
            .bind(now_ms)
            .execute(&mut *tx)
            .await
            .map_err(fail("claiming inbox rows"))?
            .rows_affected();
        if n == 1 {
            claimed[i] = true;
        } else {
            dups.push(cmd.submission_id);
        }
    }
    let mut recorded = HashMap::new();
    for id in dups {
        if let Some(r) = read_recorded(&mut tx, inbox, id).await? {
            recorded.insert(id, r);
        }
    }

    // (2) Apply the new commands in slice order.
    let mut fresh: HashMap<usize, Outcome> = HashMap::new();
    for (i, cmd) in batch.iter().enumerate() {
        if !claimed[i] {
            continue;
        }
        let mapping = &mappings[&cmd.envelope.command_type];
        let outcome = match prepare(mapping, cmd) {
            Err(o) => o,
            Ok(_) => apply_one(&mut tx, mapping, cmd).await?,
        };
        fresh.insert(i, outcome);
    }

    // (3) Record the outcomes.
    let record_sql = format!(
        "UPDATE {inbox} SET state = ?, canonical_id = ?, version = ?, error_code = ?, error_message = ? \
         WHERE submission_id = ?"
    );
    for (&i, o) in &fresh {
        let r = Recorded::from_outcome(o);
        sqlx::query(&record_sql)
            .bind(r.state)
            .bind(r.canonical_id)
            .bind(r.version)
            .bind(r.error_code)
            .bind(r.error_message)
            .bind(batch[i].submission_id)
            .execute(&mut *tx)
            .await
            .map_err(fail("recording outcomes"))?;
    }

    // (4) Commit.
    tx.commit().await.map_err(fail("committing"))?;
    assemble(batch, &work, fresh, &recorded, from_millis(now_ms))
}

async fn read_recorded(
    conn: &mut SqliteConnection,
    inbox: &TableName,
    id: Uuid,
) -> Result<Option<(Outcome, OffsetDateTime)>, Failure> {
    let row = sqlx::query(&format!(
        "SELECT state, canonical_id, version, error_code, error_message, recorded_at \
         FROM {inbox} WHERE submission_id = ?"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
    .map_err(fail("reading recorded outcomes"))?;
    let Some(r) = row else { return Ok(None) };
    let get = || -> Result<(Recorded, i64), sqlx::Error> {
        Ok((
            Recorded {
                state: r.try_get(0)?,
                canonical_id: r.try_get(1)?,
                version: r.try_get(2)?,
                error_code: r.try_get(3)?,
                error_message: r.try_get(4)?,
            },
            r.try_get(5)?,
        ))
    };
    let (rec, ms) = get().map_err(fail("reading recorded outcomes"))?;
    Ok(rec.into_outcome().map(|o| (o, from_millis(ms))))
}

fn key_where(m: &Mapping) -> String {
    m.keys
        .iter()
        .map(|k| format!("{} = ?", k.column))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// Applies one command: reads the row's state, checks version and mode, writes.
async fn apply_one(
    conn: &mut SqliteConnection,
    m: &Mapping,
    cmd: &Command,
) -> Result<Outcome, Failure> {
    let t = &m.table;
    let key_vals = || {
        m.keys
            .iter()
            .map(|k| SqlValue::from_json(k.path.get(&cmd.payload)))
    };
    let ver_expr = m
        .version
        .as_ref()
        .map_or("NULL".to_owned(), |v| v.to_string());
    let kw = key_where(m);

    let mut q_sql = format!("SELECT {ver_expr} FROM {t} WHERE {kw}");
    let mut q = sqlx::query(&q_sql);
    for v in key_vals() {
        q = bind(q, v);
    }
    let prior = q
        .fetch_optional(&mut *conn)
        .await
        .map_err(fail("reading the master row"))?;
    let (existed, current) = match prior {
        Some(r) => (
            true,
            r.try_get::<Option<i64>, _>(0)
                .map_err(fail("reading the master row"))?,
        ),
        None => (false, None),
    };
    if let Some(o) = plan::precheck(m.mode, cmd.envelope.expected_version, existed, current) {
        return Ok(o);
    }

    let returning = |version: &str| format!("RETURNING {version}, CAST({} AS TEXT)", m.canonical);
    let bump = m.version.as_ref().map(|v| format!("COALESCE({v}, 0) + 1"));
    let written: Vec<_> = m.written().collect();
    let mut binds: Vec<SqlValue> = Vec::new();
    q_sql = match (m.mode, existed) {
        (WriteMode::Insert | WriteMode::Upsert, false) => {
            let mut cols: Vec<String> = written.iter().map(|c| c.column.to_string()).collect();
            let mut vals: Vec<&str> = vec!["?"; cols.len()];
            if let Some(v) = &m.version {
                cols.push(v.to_string());
                vals.push("1");
            }
            binds.extend(
                written
                    .iter()
                    .map(|c| SqlValue::from_json(c.path.get(&cmd.payload))),
            );
            format!(
                "INSERT INTO {t} ({}) VALUES ({}) {}",
                cols.join(", "),
                vals.join(", "),
                returning(&ver_expr)
            )
        }
        (WriteMode::Upsert | WriteMode::Update, true) => {
            let mut sets: Vec<String> = m
                .values
                .iter()
                .map(|c| format!("{} = ?", c.column))
                .collect();
            binds.extend(
                m.values
                    .iter()
                    .map(|c| SqlValue::from_json(c.path.get(&cmd.payload))),
            );
            if let (Some(v), Some(b)) = (&m.version, &bump) {
                sets.push(format!("{v} = {b}"));
            }
            if sets.is_empty() {
                sets.push(format!("{0} = {0}", m.keys[0].column));
            }
            binds.extend(key_vals());
            format!(
                "UPDATE {t} SET {} WHERE {kw} {}",
                sets.join(", "),
                returning(&ver_expr)
            )
        }
        (WriteMode::Delete, true) => {
            binds.extend(key_vals());
            format!(
                "DELETE FROM {t} WHERE {kw} {}",
                returning(bump.as_deref().unwrap_or("NULL"))
            )
        }
        // precheck refused the remaining combinations.
        _ => unreachable!("precheck rejects insert-existing and update/delete-missing"),
    };
    let mut q = sqlx::query(&q_sql);
    for v in binds {
        q = bind(q, v);
    }
    let row = q
        .fetch_one(&mut *conn)
        .await
        .map_err(fail("writing the master table"))?;
    let version: Option<i64> = row.try_get(0).map_err(fail("reading write results"))?;
    let canonical_id: Option<String> = row.try_get(1).map_err(fail("reading write results"))?;
    Ok(Outcome::Applied {
        canonical_id,
        version,
    })
}

/// Records a single command's rejection after its transaction rolled back.
pub async fn record_single(
    pool: &SqlitePool,
    inbox: &TableName,
    cmd: &Command,
    outcome: Outcome,
) -> Result<ApplyResult, Failure> {
    let r = Recorded::from_outcome(&outcome);
    let now_ms = millis(OffsetDateTime::now_utc());
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(fail("beginning a transaction"))?;
    let n = sqlx::query(&format!(
        "INSERT INTO {inbox} (submission_id, state, canonical_id, version, error_code, error_message, fingerprint, recorded_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (submission_id) DO NOTHING"
    ))
    .bind(cmd.submission_id)
    .bind(r.state)
    .bind(r.canonical_id)
    .bind(r.version)
    .bind(r.error_code)
    .bind(r.error_message)
    .bind(&cmd.fingerprint)
    .bind(now_ms)
    .execute(&mut *tx)
    .await
    .map_err(fail("recording a rejection"))?
    .rows_affected();
    let result = if n == 1 {
        ApplyResult {
            outcome,
            duplicate: false,
            recorded_at: from_millis(now_ms),
        }
    } else {
        let (outcome, recorded_at) = read_recorded(&mut tx, inbox, cmd.submission_id)
            .await?
            .ok_or_else(|| {
                Failure::Master(MasterError::Unavailable {
                    message: "inbox row vanished while reading a duplicate".into(),
                    retry_after: None,
                })
            })?;
        ApplyResult {
            outcome,
            duplicate: true,
            recorded_at,
        }
    };
    tx.commit().await.map_err(fail("committing"))?;
    Ok(result)
}

/// Reads one entity by key as payload-shaped JSON plus its version.
pub async fn read(
    pool: &SqlitePool,
    m: &Mapping,
    keys: &[&str],
) -> Result<Option<(Value, Option<i64>)>, Failure> {
    let mut cols: Vec<String> = m
        .written()
        .map(|c| format!("'{0}', {1}", c.column.as_str(), c.column))
        .collect();
    if let Some(v) = &m.version {
        cols.push(format!("'{0}', {1}", v.as_str(), v));
    }
    let sql = format!(
        "SELECT json_object({}) FROM {} WHERE {}",
        cols.join(", "),
        m.table,
        key_where(m)
    );
    let mut q = sqlx::query_scalar::<_, String>(&sql);
    for k in keys {
        q = q.bind(*k);
    }
    let row = q
        .fetch_optional(pool)
        .await
        .map_err(fail("reading an entity"))?;
    let Some(text) = row else { return Ok(None) };
    let row: Value = serde_json::from_str(&text).map_err(|_| {
        Failure::Master(MasterError::Unavailable {
            message: "SQLite returned invalid JSON".into(),
            retry_after: None,
        })
    })?;
    Ok(Some(super::values::unmap(m, &row)))
}

/// Deletes inbox rows recorded before `older_than`, in chunks of 10 000.
pub async fn expire(
    pool: &SqlitePool,
    inbox: &TableName,
    older_than: OffsetDateTime,
) -> Result<u64, Failure> {
    let sql = format!(
        "DELETE FROM {inbox} WHERE submission_id IN \
         (SELECT submission_id FROM {inbox} WHERE recorded_at < ? LIMIT {EXPIRE_CHUNK})"
    );
    let cutoff = millis(older_than);
    let mut total = 0;
    loop {
        let n = sqlx::query(&sql)
            .bind(cutoff)
            .execute(pool)
            .await
            .map_err(fail("expiring the inbox"))?
            .rows_affected();
        total += n;
        if n < EXPIRE_CHUNK as u64 {
            return Ok(total);
        }
    }
}
