//! The PostgreSQL master: set-based statements, so a batch costs a handful
//! of round trips whatever its size — one inbox claim, one write statement per
//! wave and command type, one outcome update, all in one transaction.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Map, Value};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use super::config::{Dialect, Mapping, PgCast, SqlMasterConfig, WriteMode};
use super::error::{classify, Failure};
use super::ident::TableName;
use super::inbox::{self, Recorded};
use super::plan::{self, WriteResult};
use super::{assemble, prepare, Work};
use crate::{ApplyResult, Command, MasterError, Outcome};

const EXPIRE_CHUNK: i64 = 10_000;

fn fail(what: &str) -> impl Fn(sqlx::Error) -> Failure + '_ {
    move |e| classify(Dialect::Postgres, what, &e)
}

/// Opens the pool and runs the inbox DDL under an advisory lock (concurrent starts are safe).
pub async fn connect(config: &SqlMasterConfig, inbox: &TableName) -> Result<PgPool, MasterError> {
    let pool = PgPoolOptions::new()
        .max_connections(config.max_connections.max(1))
        .acquire_timeout(Duration::from_millis(config.acquire_timeout_ms))
        .connect(&config.url)
        .await
        .map_err(|e| fail("connecting to PostgreSQL")(e).into_batch_error())?;
    let migrate = async {
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(7236981441)")
            .execute(&mut *tx)
            .await?;
        for ddl in inbox::ddl(Dialect::Postgres, inbox) {
            sqlx::query(&ddl).execute(&mut *tx).await?;
        }
        tx.commit().await
    };
    migrate
        .await
        .map_err(|e| fail("creating the inbox table")(e).into_batch_error())?;
    Ok(pool)
}

/// Applies a batch in one transaction.
///
/// The fast path writes first and inserts the inbox rows, outcomes included,
/// last: one index probe for known duplicates, the writes, one inbox insert.
/// Exactly-once still holds because the writes commit only together with the
/// inbox insert, and a plain insert of an id that a concurrent transaction
/// (a zombie worker during a rebalance) holds waits for it and then fails on
/// the primary key. Only then — rare — the batch is rolled back and redone on
/// the claim-first path, which answers those ids from the inbox.
pub async fn apply(
    pool: &PgPool,
    mappings: &HashMap<String, Mapping>,
    inbox: &TableName,
    batch: &[Command],
) -> Result<Vec<ApplyResult>, Failure> {
    match apply_write_first(pool, mappings, inbox, batch).await? {
        Some(results) => Ok(results),
        None => {
            tracing::debug!("inbox race detected; redoing the batch claim-first");
            apply_claim_first(pool, mappings, inbox, batch).await
        }
    }
}

/// The fast path; `Ok(None)` when another transaction recorded one of the ids first.
async fn apply_write_first(
    pool: &PgPool,
    mappings: &HashMap<String, Mapping>,
    inbox: &TableName,
    batch: &[Command],
) -> Result<Option<Vec<ApplyResult>>, Failure> {
    let work = Work::new(batch);
    let mut tx = pool
        .begin()
        .await
        .map_err(fail("beginning a transaction"))?;
    let ids: Vec<Uuid> = work
        .unique
        .iter()
        .map(|&i| batch[i].submission_id)
        .collect();
    let recorded = read_recorded(&mut tx, inbox, &ids).await?;

    let fresh = write_new(&mut tx, mappings, batch, &work, |id| {
        !recorded.contains_key(id)
    })
    .await?;

    let mut now = OffsetDateTime::now_utc();
    if !fresh.is_empty() {
        // Sorted ids: concurrent inserts of overlapping sets lock in one order.
        let mut order: Vec<usize> = fresh.keys().copied().collect();
        order.sort_by_key(|&i| batch[i].submission_id);
        let c = OutcomeColumns::of(batch, &fresh, &order);
        let fps: Vec<&str> = order
            .iter()
            .map(|&i| batch[i].fingerprint.as_str())
            .collect();
        let inserted = sqlx::query_scalar::<_, OffsetDateTime>(&format!(
            "WITH ins AS (INSERT INTO {inbox} \
             (submission_id, state, canonical_id, version, error_code, error_message, fingerprint) \
             SELECT * FROM UNNEST($1::uuid[], $2::int2[], $3::text[], $4::int8[], $5::text[], \
             $6::text[], $7::text[]) RETURNING recorded_at) SELECT max(recorded_at) FROM ins"
        ))
        .bind(&c.ids)
        .bind(&c.st)
        .bind(&c.cid)
        .bind(&c.ver)
        .bind(&c.code)
        .bind(&c.msg)
        .bind(&fps)
        .fetch_one(&mut *tx)
        .await;
        match inserted {
            Ok(at) => now = at,
            Err(sqlx::Error::Database(db))
                if db.code().as_deref() == Some("23505")
                    && db.constraint() == Some(&format!("{}_pkey", inbox.name().as_str())) =>
            {
                let _ = tx.rollback().await;
                return Ok(None);
            }
            Err(e) => return Err(fail("recording outcomes")(e)),
        }
    }
    tx.commit().await.map_err(fail("committing"))?;
    assemble(batch, &work, fresh, &recorded, now).map(Some)
}

/// The claim-first path: claim ids, apply, record outcomes (used after a race).
async fn apply_claim_first(
    pool: &PgPool,
    mappings: &HashMap<String, Mapping>,
    inbox: &TableName,
    batch: &[Command],
) -> Result<Vec<ApplyResult>, Failure> {
    let work = Work::new(batch);
    let mut tx = pool
        .begin()
        .await
        .map_err(fail("beginning a transaction"))?;

    // (1) Claim. A concurrent transaction holding one of these ids makes this
    // wait on the primary key until it ends, then skip the id.
    let ids: Vec<Uuid> = work
        .unique
        .iter()
        .map(|&i| batch[i].submission_id)
        .collect();
    let fps: Vec<&str> = work
        .unique
        .iter()
        .map(|&i| batch[i].fingerprint.as_str())
        .collect();
    let claimed_rows = sqlx::query(&format!(
        "INSERT INTO {inbox} (submission_id, state, fingerprint) \
         SELECT u.id, {claimed}, u.fp FROM UNNEST($1::uuid[], $2::text[]) AS u(id, fp) \
         ON CONFLICT (submission_id) DO NOTHING RETURNING submission_id, recorded_at",
        claimed = inbox::state::CLAIMED
    ))
    .bind(&ids)
    .bind(&fps)
    .fetch_all(&mut *tx)
    .await
    .map_err(fail("claiming inbox rows"))?;
    let mut now = OffsetDateTime::now_utc();
    let mut claimed: HashSet<Uuid> = HashSet::with_capacity(claimed_rows.len());
    for r in &claimed_rows {
        claimed.insert(r.try_get(0).map_err(fail("claiming inbox rows"))?);
        now = r.try_get(1).map_err(fail("claiming inbox rows"))?;
    }

    // Duplicates: read what was recorded (a fresh snapshot sees a racing
    // transaction's commit that the claim waited for).
    let mut recorded = HashMap::new();
    if claimed.len() < ids.len() {
        let dups: Vec<Uuid> = ids
            .iter()
            .filter(|id| !claimed.contains(id))
            .copied()
            .collect();
        recorded = read_recorded(&mut tx, inbox, &dups).await?;
    }

    // (2) Apply the new commands, wave by wave; every claimed row must leave
    // with an outcome (a CLAIMED row must never commit).
    let fresh = write_new(&mut tx, mappings, batch, &work, |id| claimed.contains(id)).await?;

    // (3) Record the outcomes.
    if !fresh.is_empty() {
        let order: Vec<usize> = fresh.keys().copied().collect();
        let c = OutcomeColumns::of(batch, &fresh, &order);
        sqlx::query(&format!(
            "UPDATE {inbox} AS x SET state = u.st, canonical_id = u.cid, version = u.ver, \
             error_code = u.code, error_message = u.msg \
             FROM UNNEST($1::uuid[], $2::int2[], $3::text[], $4::int8[], $5::text[], $6::text[]) \
             AS u(id, st, cid, ver, code, msg) WHERE x.submission_id = u.id"
        ))
        .bind(&c.ids)
        .bind(&c.st)
        .bind(&c.cid)
        .bind(&c.ver)
        .bind(&c.code)
        .bind(&c.msg)
        .execute(&mut *tx)
        .await
        .map_err(fail("recording outcomes"))?;
    }

    // (4) Commit.
    tx.commit().await.map_err(fail("committing"))?;
    assemble(batch, &work, fresh, &recorded, now)
}

/// Prepares and writes, wave by wave, the batch's unique commands that
/// `is_new` selects; returns exactly one outcome per selected command.
async fn write_new(
    conn: &mut sqlx::PgConnection,
    mappings: &HashMap<String, Mapping>,
    batch: &[Command],
    work: &Work,
    is_new: impl Fn(&Uuid) -> bool,
) -> Result<HashMap<usize, Outcome>, Failure> {
    let mut fresh: HashMap<usize, Outcome> = HashMap::with_capacity(work.unique.len());
    let mut entities: Vec<(usize, String)> = Vec::with_capacity(work.unique.len());
    let mut selected = 0;
    for &i in &work.unique {
        let cmd = &batch[i];
        if !is_new(&cmd.submission_id) {
            continue;
        }
        selected += 1;
        match prepare(&mappings[&cmd.envelope.command_type], cmd) {
            Ok(entity) => entities.push((i, entity)),
            Err(outcome) => {
                fresh.insert(i, outcome);
            }
        }
    }
    entities.sort_by_key(|(i, _)| *i); // slice order, for the wave plan
    let groups = plan::plan_waves(
        entities
            .iter()
            .map(|(i, e)| (*i, e.as_str(), batch[*i].envelope.command_type.as_str())),
    );
    for g in &groups {
        let mapping = &mappings[&g.command_type];
        write_group(conn, mapping, batch, &g.members, &mut fresh).await?;
    }
    if fresh.len() != selected {
        return Err(Failure::Master(MasterError::Unavailable {
            message: format!(
                "write statements answered {} of {selected} commands",
                fresh.len()
            ),
            retry_after: None,
        }));
    }
    Ok(fresh)
}

/// Outcomes as the inbox's column arrays, for one UNNEST statement.
struct OutcomeColumns {
    ids: Vec<Uuid>,
    st: Vec<i16>,
    cid: Vec<Option<String>>,
    ver: Vec<Option<i64>>,
    code: Vec<Option<String>>,
    msg: Vec<Option<String>>,
}

impl OutcomeColumns {
    /// The columns of the outcomes of `order` (batch indexes), in that order.
    fn of(batch: &[Command], fresh: &HashMap<usize, Outcome>, order: &[usize]) -> Self {
        let mut c = Self {
            ids: Vec::with_capacity(order.len()),
            st: Vec::with_capacity(order.len()),
            cid: Vec::with_capacity(order.len()),
            ver: Vec::with_capacity(order.len()),
            code: Vec::with_capacity(order.len()),
            msg: Vec::with_capacity(order.len()),
        };
        for &i in order {
            let r = Recorded::from_outcome(&fresh[&i]);
            c.ids.push(batch[i].submission_id);
            c.st.push(r.state);
            c.cid.push(r.canonical_id);
            c.ver.push(r.version);
            c.code.push(r.error_code);
            c.msg.push(r.error_message);
        }
        c
    }
}

async fn read_recorded(
    conn: &mut sqlx::PgConnection,
    inbox: &TableName,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, (Outcome, OffsetDateTime)>, Failure> {
    let rows = sqlx::query(&format!(
        "SELECT submission_id, state, canonical_id, version, error_code, error_message, recorded_at \
         FROM {inbox} WHERE submission_id = ANY($1::uuid[])"
    ))
    .bind(ids)
    .fetch_all(conn)
    .await
    .map_err(fail("reading recorded outcomes"))?;
    let mut out = HashMap::with_capacity(rows.len());
    for r in rows {
        let get = || -> Result<(Uuid, Recorded, OffsetDateTime), sqlx::Error> {
            Ok((
                r.try_get(0)?,
                Recorded {
                    state: r.try_get(1)?,
                    canonical_id: r.try_get(2)?,
                    version: r.try_get(3)?,
                    error_code: r.try_get(4)?,
                    error_message: r.try_get(5)?,
                },
                r.try_get(6)?,
            ))
        };
        let (id, rec, at) = get().map_err(fail("reading recorded outcomes"))?;
        if let Some(o) = rec.into_outcome() {
            out.insert(id, (o, at));
        }
    }
    Ok(out)
}

/// One result row of a group write: index, written?, new version, canonical id, prior version, existed?
type GroupRow = (i32, bool, Option<i64>, Option<String>, Option<i64>, bool);

/// Which expected-version classes a group holds (selects the statement variant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Variant {
    /// Some member has no expected version.
    pub unversioned: bool,
    /// Some member expects version 0 (must not exist).
    pub expects_absent: bool,
    /// Some member expects a version > 0 (or < 0, which can never match).
    pub expects_version: bool,
}

async fn write_group(
    conn: &mut sqlx::PgConnection,
    mapping: &Mapping,
    batch: &[Command],
    members: &[usize],
    fresh: &mut HashMap<usize, Outcome>,
) -> Result<(), Failure> {
    // The common case — an upsert without expected versions — needs no
    // pre-image and no JSON parsing in the database: typed arrays suffice.
    if mapping.mode == WriteMode::Upsert
        && members
            .iter()
            .all(|&i| batch[i].envelope.expected_version.is_none())
    {
        if let Some(casts) = pg_casts(conn, mapping).await? {
            if let Some(columns) = text_columns(mapping, casts, batch, members) {
                return write_upsert_fast(conn, mapping, casts, columns, members, fresh).await;
            }
        }
    }
    let mut variant = Variant::default();
    let mut input = Vec::with_capacity(members.len());
    for &i in members {
        let cmd = &batch[i];
        let ev = cmd.envelope.expected_version;
        match ev {
            None => variant.unversioned = true,
            Some(0) => variant.expects_absent = true,
            Some(_) => variant.expects_version = true,
        }
        let mut r = Map::with_capacity(mapping.keys.len() + mapping.values.len());
        for c in mapping.written() {
            let v = c.path.get(&cmd.payload).cloned().unwrap_or(Value::Null);
            r.insert(c.column.as_str().to_owned(), v);
        }
        input.push(json!({"i": i, "v": ev, "r": r}));
    }
    let sql = write_sql(mapping, variant);
    let rows = sqlx::query(&sql)
        .bind(Value::Array(input).to_string())
        .fetch_all(conn)
        .await
        .map_err(fail("writing the master table"))?;
    for row in rows {
        let get = || -> Result<GroupRow, sqlx::Error> {
            Ok((
                row.try_get(0)?,
                row.try_get(1)?,
                row.try_get(2)?,
                row.try_get(3)?,
                row.try_get(4)?,
                row.try_get(5)?,
            ))
        };
        let (idx, written, ver, cid, current, existed) =
            get().map_err(fail("reading write results"))?;
        let i = usize::try_from(idx).unwrap_or(usize::MAX);
        let Some(cmd) = batch.get(i) else { continue };
        let outcome = plan::decide(
            mapping.mode,
            cmd.envelope.expected_version,
            WriteResult {
                written: written.then_some((ver, cid)),
                existed,
                current,
            },
        );
        fresh.insert(i, outcome);
    }
    Ok(())
}

/// The casts of a mapping's written columns, read from the catalog on first
/// use; `None` when the table, a column or a supported type can't be found
/// (the JSON path then applies and reports any error as it always did).
async fn pg_casts<'m>(
    conn: &mut sqlx::PgConnection,
    m: &'m Mapping,
) -> Result<Option<&'m [PgCast]>, Failure> {
    if let Some(c) = m.pg_casts.get() {
        return Ok(Some(c));
    }
    // Without the modifier (see `PgCast::ty`); arrays and composites take
    // JSON arrays/objects that `jsonb_populate_record` converts structurally,
    // so they stay on the JSON path.
    let rows: Vec<(String, String, bool, bool)> = sqlx::query_as(
        "SELECT a.attname::text, format_type(a.atttypid, NULL), \
         (CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END) \
         IN ('json'::regtype::oid, 'jsonb'::regtype::oid), \
         t.typcategory = 'A' OR t.typtype = 'c' \
         FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
         WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
    )
    .bind(m.table.to_string())
    .fetch_all(&mut *conn)
    .await
    .map_err(fail("reading the master table's column types"))?;
    let by_name: HashMap<&str, (&str, bool, bool)> = rows
        .iter()
        .map(|(n, ty, json, structured)| (n.as_str(), (ty.as_str(), *json, *structured)))
        .collect();
    let known = |c: &str| by_name.contains_key(c);
    if !known(m.canonical.as_str()) || m.version.as_ref().is_some_and(|v| !known(v.as_str())) {
        return Ok(None);
    }
    let mut casts = Vec::with_capacity(m.keys.len() + m.values.len());
    for c in m.written() {
        match by_name.get(c.column.as_str()) {
            Some(&(ty, json, false)) => casts.push(PgCast {
                ty: ty.to_owned(),
                json,
            }),
            _ => return Ok(None),
        }
    }
    Ok(Some(m.pg_casts.get_or_init(|| casts)))
}

/// The group's values as one text array per written column, or `None` when a
/// nested object/array is headed for a non-JSON column (`jsonb_populate_record`
/// would convert it structurally, so such groups stay on the JSON path).
fn text_columns(
    m: &Mapping,
    casts: &[PgCast],
    batch: &[Command],
    members: &[usize],
) -> Option<Vec<Vec<Option<String>>>> {
    let mut columns: Vec<Vec<Option<String>>> = casts
        .iter()
        .map(|_| Vec::with_capacity(members.len()))
        .collect();
    for &i in members {
        let payload = &batch[i].payload;
        for ((c, cast), out) in m.written().zip(casts).zip(&mut columns) {
            // The text `jsonb_populate_record` hands the type's input function.
            let text = match c.path.get(payload) {
                None | Some(Value::Null) => None,
                Some(v) if cast.json => Some(v.to_string()),
                Some(Value::String(s)) => Some(s.clone()),
                Some(v @ (Value::Number(_) | Value::Bool(_))) => Some(v.to_string()),
                Some(Value::Array(_) | Value::Object(_)) => return None,
            };
            out.push(text);
        }
    }
    Some(columns)
}

/// Runs [`upsert_sql`] for an unversioned upsert group; every member is applied.
async fn write_upsert_fast(
    conn: &mut sqlx::PgConnection,
    mapping: &Mapping,
    casts: &[PgCast],
    columns: Vec<Vec<Option<String>>>,
    members: &[usize],
    fresh: &mut HashMap<usize, Outcome>,
) -> Result<(), Failure> {
    let idx: Vec<i32> = members
        .iter()
        .map(|&i| i32::try_from(i).unwrap_or(i32::MAX))
        .collect();
    let sql = upsert_sql(mapping, casts);
    let mut q = sqlx::query(&sql).bind(idx);
    for col in columns {
        q = q.bind(col);
    }
    let rows = q
        .fetch_all(conn)
        .await
        .map_err(fail("writing the master table"))?;
    for row in rows {
        let get = || -> Result<(i32, Option<i64>, Option<String>), sqlx::Error> {
            Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
        };
        let (idx, ver, cid) = get().map_err(fail("reading write results"))?;
        let Ok(i) = usize::try_from(idx) else {
            continue;
        };
        // Exactly what the JSON path reports for an unversioned upsert.
        let outcome = plan::decide(
            mapping.mode,
            None,
            WriteResult {
                written: Some((ver, cid)),
                existed: false,
                current: None,
            },
        );
        fresh.insert(i, outcome);
    }
    Ok(())
}

/// The fast upsert: `$1` holds the batch indexes (`int4[]`), then one `text[]`
/// per written column, cast to the column's type. The wave planner puts each
/// entity in a group at most once, so joining the written rows back on the
/// (typed) key pairs every row with its command — typed, because the table's
/// text form of a key may differ from the payload's (`007` vs `7`).
/// Returns, per command: index, new version, canonical id.
pub(super) fn upsert_sql(m: &Mapping, casts: &[PgCast]) -> String {
    let t = &m.table;
    let cols: Vec<String> = m.written().map(|c| c.column.to_string()).collect();
    let keys: Vec<String> = m.keys.iter().map(|c| c.column.to_string()).collect();
    let cast = |n: usize| {
        let c = &casts[n];
        if c.json {
            // Via jsonb: a json column then gets jsonb's normalized text, as
            // `jsonb_populate_record` gives it.
            format!("u.\"writ$c{n}\"::jsonb::{}", c.ty)
        } else {
            format!("u.\"writ$c{n}\"::{}", c.ty)
        }
    };
    let arrays: String = (0..cols.len())
        .map(|n| format!(", ${}::text[]", n + 2))
        .collect();
    let aliases: String = (0..cols.len())
        .map(|n| format!(", \"writ$c{n}\""))
        .collect();
    let mut ins_cols = cols.join(", ");
    let mut ins_vals = (0..cols.len()).map(cast).collect::<Vec<_>>().join(", ");
    let mut sets: Vec<String> = cols[keys.len()..]
        .iter()
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .collect();
    let ver = match &m.version {
        Some(v) => {
            let _ = write!(ins_cols, ", {v}");
            ins_vals.push_str(", 1");
            sets.push(format!("{v} = COALESCE(t.{v}, 0) + 1"));
            format!("t.{v}::int8")
        }
        None => "NULL::int8".to_owned(),
    };
    if sets.is_empty() {
        // Nothing to change: a no-op assignment still returns the row.
        sets.push(format!("{0} = t.{0}", keys[0]));
    }
    let ret_keys: String = keys
        .iter()
        .enumerate()
        .map(|(n, k)| format!("t.{k} AS \"writ$k{n}\", "))
        .collect();
    let key_match = (0..keys.len())
        .map(|n| format!("w.\"writ$k{n}\" = {}", cast(n)))
        .collect::<Vec<_>>()
        .join(" AND ");
    format!(
        "WITH u AS (SELECT * FROM UNNEST($1::int4[]{arrays}) AS u(\"writ$idx\"{aliases})), \
         w AS (INSERT INTO {t} AS t ({ins_cols}) SELECT {ins_vals} FROM u \
         ON CONFLICT ({}) DO UPDATE SET {} \
         RETURNING {ret_keys}{ver} AS \"writ$ver\", t.{}::text AS \"writ$cid\") \
         SELECT u.\"writ$idx\", w.\"writ$ver\", w.\"writ$cid\" FROM u JOIN w ON {key_match}",
        keys.join(", "),
        sets.join(", "),
        m.canonical
    )
}

/// The set-based write for one group: `$1` is a JSON array of
/// `{"i": batch index, "v": expected version, "r": {column: value}}`, turned
/// into typed rows of the table by `jsonb_populate_record`. Returns, per input
/// row: index, written?, new version, canonical id, version before, existed before.
pub(super) fn write_sql(m: &Mapping, variant: Variant) -> String {
    let t = &m.table;
    let cols: Vec<String> = m.written().map(|c| c.column.to_string()).collect();
    let keys: Vec<String> = m.keys.iter().map(|c| c.column.to_string()).collect();
    let sets: Vec<&String> = cols[keys.len()..].iter().collect();
    let key_list = keys.join(", ");
    let i_cols = cols
        .iter()
        .map(|c| format!("i.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let col_list = cols.join(", ");
    let key_match = |a: &str, b: &str| {
        keys.iter()
            .map(|k| format!("{a}.{k} = {b}.{k}"))
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    let bump = m
        .version
        .as_ref()
        .map(|v| format!("COALESCE(t.{v}, 0) + 1"));
    let returning = |version_expr: &str| {
        let mut s = String::from("RETURNING ");
        for (n, k) in keys.iter().enumerate() {
            let _ = write!(s, "t.{k} AS \"writ$k{n}\", ");
        }
        let _ = write!(
            s,
            "{version_expr}::int8 AS \"writ$ver\", t.{}::text AS \"writ$cid\"",
            m.canonical
        );
        s
    };
    let new_ver = m
        .version
        .as_ref()
        .map_or("NULL".to_owned(), |v| format!("t.{v}"));
    let (ins_cols, ins_vals) = match &m.version {
        Some(v) => (format!("{col_list}, {v}"), format!("{i_cols}, 1")),
        None => (col_list.clone(), i_cols.clone()),
    };
    let set_list = |from: &str| {
        let mut parts: Vec<String> = sets.iter().map(|c| format!("{c} = {from}.{c}")).collect();
        if let (Some(v), Some(b)) = (&m.version, &bump) {
            parts.push(format!("{v} = {b}"));
        }
        if parts.is_empty() {
            // Nothing to change: a no-op assignment still returns the row.
            parts.push(format!("{0} = t.{0}", keys[0]));
        }
        parts.join(", ")
    };
    let version_match = m
        .version
        .as_ref()
        .map(|v| format!("COALESCE(t.{v}, 0) = i.\"writ$ev\""));
    let guarded = |cond: &str| match &version_match {
        Some(vm) => format!("({cond} OR {vm})"),
        None => cond.to_owned(),
    };

    let mut sql = format!(
        "WITH i AS (SELECT (e->>'i')::int4 AS \"writ$idx\", (e->>'v')::int8 AS \"writ$ev\", r.* \
         FROM jsonb_array_elements($1::text::jsonb) AS e \
         CROSS JOIN LATERAL jsonb_populate_record(NULL::{t}, e->'r') AS r)"
    );
    let mut ctes: Vec<&str> = Vec::new();
    match m.mode {
        WriteMode::Upsert => {
            if variant.unversioned {
                let _ = write!(
                    sql,
                    ", w0 AS (INSERT INTO {t} AS t ({ins_cols}) SELECT {ins_vals} FROM i \
                     WHERE i.\"writ$ev\" IS NULL ON CONFLICT ({key_list}) DO UPDATE SET {} {})",
                    set_list("EXCLUDED"),
                    returning(&new_ver)
                );
                ctes.push("w0");
            }
            if variant.expects_absent {
                let _ = write!(
                    sql,
                    ", w1 AS (INSERT INTO {t} AS t ({ins_cols}) SELECT {ins_vals} FROM i \
                     WHERE i.\"writ$ev\" = 0 ON CONFLICT ({key_list}) DO NOTHING {})",
                    returning(&new_ver)
                );
                ctes.push("w1");
            }
            if variant.expects_version {
                if let Some(vm) = &version_match {
                    let _ = write!(
                        sql,
                        ", w2 AS (UPDATE {t} AS t SET {} FROM i WHERE {} \
                         AND i.\"writ$ev\" <> 0 AND {vm} {})",
                        set_list("i"),
                        key_match("t", "i"),
                        returning(&new_ver)
                    );
                    ctes.push("w2");
                }
            }
        }
        WriteMode::Insert => {
            let _ = write!(
                sql,
                ", w0 AS (INSERT INTO {t} AS t ({ins_cols}) SELECT {ins_vals} FROM i \
                 WHERE i.\"writ$ev\" IS NULL OR i.\"writ$ev\" = 0 \
                 ON CONFLICT ({key_list}) DO NOTHING {})",
                returning(&new_ver)
            );
            ctes.push("w0");
        }
        WriteMode::Update => {
            let _ = write!(
                sql,
                ", w0 AS (UPDATE {t} AS t SET {} FROM i WHERE {} AND {} {})",
                set_list("i"),
                key_match("t", "i"),
                guarded("i.\"writ$ev\" IS NULL"),
                returning(&new_ver)
            );
            ctes.push("w0");
        }
        WriteMode::Delete => {
            let _ = write!(
                sql,
                ", w0 AS (DELETE FROM {t} AS t USING i WHERE {} AND {} {})",
                key_match("t", "i"),
                guarded("i.\"writ$ev\" IS NULL"),
                returning(bump.as_deref().unwrap_or("NULL"))
            );
            ctes.push("w0");
        }
    }
    let d = if ctes.len() == 1 {
        ctes[0].to_owned()
    } else {
        let _ = write!(
            sql,
            ", d AS ({})",
            ctes.iter()
                .map(|c| format!("SELECT * FROM {c}"))
                .collect::<Vec<_>>()
                .join(" UNION ALL ")
        );
        "d".to_owned()
    };
    let d_match = keys
        .iter()
        .enumerate()
        .map(|(n, k)| format!("d.\"writ$k{n}\" = i.{k}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    // Rows a statement may leave unwritten need the row's prior state (the
    // statement's snapshot: before its own writes) to say why.
    let needs_prior =
        m.mode != WriteMode::Upsert || variant.expects_absent || variant.expects_version;
    if needs_prior {
        let cur = m
            .version
            .as_ref()
            .map_or("NULL".to_owned(), |v| format!("c.{v}"));
        let _ = write!(
            sql,
            " SELECT i.\"writ$idx\", d.\"writ$k0\" IS NOT NULL, d.\"writ$ver\", d.\"writ$cid\", \
             {cur}::int8, c.{} IS NOT NULL FROM i LEFT JOIN {d} AS d ON {d_match} \
             LEFT JOIN {t} AS c ON {}",
            keys[0],
            key_match("c", "i")
        );
    } else {
        let _ = write!(
            sql,
            " SELECT i.\"writ$idx\", d.\"writ$k0\" IS NOT NULL, d.\"writ$ver\", d.\"writ$cid\", \
             NULL::int8, false FROM i LEFT JOIN {d} AS d ON {d_match}"
        );
    }
    sql
}

/// Records a single command's rejection after its transaction rolled back.
pub async fn record_single(
    pool: &PgPool,
    inbox: &TableName,
    cmd: &Command,
    outcome: Outcome,
) -> Result<ApplyResult, Failure> {
    let r = Recorded::from_outcome(&outcome);
    let mut conn = pool
        .acquire()
        .await
        .map_err(fail("acquiring a connection"))?;
    let at: Option<OffsetDateTime> = sqlx::query_scalar(&format!(
        "INSERT INTO {inbox} (submission_id, state, canonical_id, version, error_code, error_message, fingerprint) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (submission_id) DO NOTHING RETURNING recorded_at"
    ))
    .bind(cmd.submission_id)
    .bind(r.state)
    .bind(r.canonical_id)
    .bind(r.version)
    .bind(r.error_code)
    .bind(r.error_message)
    .bind(&cmd.fingerprint)
    .fetch_optional(&mut *conn)
    .await
    .map_err(fail("recording a rejection"))?;
    match at {
        Some(recorded_at) => Ok(ApplyResult {
            outcome,
            duplicate: false,
            recorded_at,
        }),
        None => {
            // A racing worker recorded it first: answer with its outcome.
            let rec = read_recorded(&mut conn, inbox, &[cmd.submission_id]).await?;
            let (outcome, recorded_at) = rec.get(&cmd.submission_id).cloned().ok_or_else(|| {
                Failure::Master(MasterError::Unavailable {
                    message: "inbox row vanished while reading a duplicate".into(),
                    retry_after: None,
                })
            })?;
            Ok(ApplyResult {
                outcome,
                duplicate: true,
                recorded_at,
            })
        }
    }
}

/// Reads one entity by key as payload-shaped JSON plus its version.
pub async fn read(
    pool: &PgPool,
    m: &Mapping,
    keys: &[&str],
) -> Result<Option<(Value, Option<i64>)>, Failure> {
    let t = &m.table;
    let mut key_obj = Map::new();
    for (c, v) in m.keys.iter().zip(keys) {
        key_obj.insert(c.column.as_str().to_owned(), Value::String((*v).to_owned()));
    }
    // The key values go in as text and are typed by the table's row type, so
    // the comparison uses the key's own type (and index).
    let cond = m
        .keys
        .iter()
        .map(|c| {
            format!(
                "t.{0} = (jsonb_populate_record(NULL::{t}, $1::text::jsonb)).{0}",
                c.column
            )
        })
        .collect::<Vec<_>>()
        .join(" AND ");
    let row: Option<Value> =
        sqlx::query_scalar(&format!("SELECT to_jsonb(t) FROM {t} AS t WHERE {cond}"))
            .bind(Value::Object(key_obj).to_string())
            .fetch_optional(pool)
            .await
            .map_err(fail("reading an entity"))?;
    Ok(row.map(|row| super::values::unmap(m, &row)))
}

/// Deletes inbox rows recorded before `older_than`, in chunks of 10 000.
pub async fn expire(
    pool: &PgPool,
    inbox: &TableName,
    older_than: OffsetDateTime,
) -> Result<u64, Failure> {
    let sql = format!(
        "DELETE FROM {inbox} WHERE submission_id IN \
         (SELECT submission_id FROM {inbox} WHERE recorded_at < $1 LIMIT {EXPIRE_CHUNK})"
    );
    let mut total = 0;
    loop {
        let n = sqlx::query(&sql)
            .bind(older_than)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::config::{compile, TypeMapping};

    #[test]
    fn fast_upsert_binds_text_arrays_and_casts_each_column() {
        let mut c = SqlMasterConfig::new("postgres://h/db");
        c.types.insert(
            "p.v1".into(),
            TypeMapping {
                table: "crm.p".into(),
                mode: WriteMode::Upsert,
                key_columns: vec!["id".into()],
                columns: [("doc", "doc"), ("id", "id")]
                    .into_iter()
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .collect(),
                version_column: Some("version".into()),
                canonical_id_column: None,
            },
        );
        let m = &compile(&c).unwrap()["p.v1"];
        let casts = [
            PgCast {
                ty: "bigint".into(),
                json: false,
            },
            PgCast {
                ty: "json".into(),
                json: true,
            },
        ];
        let sql = upsert_sql(m, &casts);
        assert!(
            sql.contains("UNNEST($1::int4[], $2::text[], $3::text[])"),
            "{sql}"
        );
        assert!(
            sql.contains("SELECT u.\"writ$c0\"::bigint, u.\"writ$c1\"::jsonb::json, 1 FROM u"),
            "{sql}"
        );
        assert!(sql.contains("DO UPDATE SET \"doc\" = EXCLUDED.\"doc\", \"version\" = COALESCE(t.\"version\", 0) + 1"), "{sql}");
        assert!(
            sql.contains("JOIN w ON w.\"writ$k0\" = u.\"writ$c0\"::bigint"),
            "{sql}"
        );
    }
}
