//! Embedded, versioned schema migrations for the drafts store, one directory
//! per backend (`migrations/postgres`, `migrations/sqlite`).
//!
//! Why not `sqlx::migrate!`: its bookkeeping table (`_sqlx_migrations`) is one
//! per database, and the drafts store may share a PostgreSQL database with
//! other writ components (the edge service, the HTTP master's inbox) that
//! number their own migrations from 1 too — sqlx would then refuse to start
//! on "migration 1 has a different checksum". Here the bookkeeping table is
//! `writ_drafts_migrations`, owned by this crate alone.
//!
//! Every migration runs in one transaction together with its bookkeeping row,
//! under a lock (a PostgreSQL advisory lock; SQLite's write lock, taken up
//! front with `BEGIN IMMEDIATE`), so replicas starting at once apply each
//! migration exactly once. A database migrated by a newer binary is refused
//! rather than used with a schema this code does not know.

use sqlx::{PgPool, Row, SqlitePool};

use super::StoreError;

/// One embedded migration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// Applied in increasing order; never renumbered once released.
    pub version: i64,
    /// A short description, recorded with the version.
    pub description: &'static str,
    /// The DDL.
    pub sql: &'static str,
}

/// PostgreSQL migrations, in order.
pub(crate) const POSTGRES: &[Migration] = &[Migration {
    version: 1,
    description: "drafts",
    sql: include_str!("../../migrations/postgres/0001_drafts.sql"),
}];

/// SQLite migrations, in order.
pub(crate) const SQLITE: &[Migration] = &[Migration {
    version: 1,
    description: "drafts",
    sql: include_str!("../../migrations/sqlite/0001_drafts.sql"),
}];

const BOOKKEEPING: &str = "CREATE TABLE IF NOT EXISTS writ_drafts_migrations (
    version BIGINT PRIMARY KEY NOT NULL,
    description TEXT NOT NULL,
    applied_at_ms BIGINT NOT NULL)";

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn check_not_newer(applied: i64, known: &[Migration]) -> Result<(), StoreError> {
    let latest = known.last().map_or(0, |m| m.version);
    if applied > latest {
        return Err(StoreError::SchemaTooNew {
            found: applied,
            known: latest,
        });
    }
    Ok(())
}

/// Creates the bookkeeping table and applies the migrations newer than the
/// recorded version, inside the open transaction `$tx`; evaluates to how many
/// were applied. A macro rather than a function: the statements are the same
/// for both backends, but sqlx's executor bounds for a generic transaction
/// would be longer than the body.
macro_rules! apply_pending {
    ($tx:expr, $migrations:expr) => {{
        let tx = $tx;
        let migrations: &[Migration] = $migrations;
        sqlx::query(BOOKKEEPING)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::migration("bookkeeping table"))?;
        let applied: i64 =
            sqlx::query("SELECT COALESCE(MAX(version), 0) FROM writ_drafts_migrations")
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx)?
                .try_get(0)
                .map_err(StoreError::from_sqlx)?;
        check_not_newer(applied, migrations)?;
        let mut count = 0usize;
        for m in migrations.iter().filter(|m| m.version > applied) {
            sqlx::raw_sql(m.sql)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::migration(m.description))?;
            sqlx::query(
                "INSERT INTO writ_drafts_migrations (version, description, applied_at_ms) \
                 VALUES ($1, $2, $3)",
            )
            .bind(m.version)
            .bind(m.description)
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
            count += 1;
        }
        count
    }};
}

/// Applies the missing PostgreSQL migrations; returns how many were applied.
pub(crate) async fn postgres(pool: &PgPool) -> Result<usize, StoreError> {
    let mut tx = pool.begin().await.map_err(StoreError::from_sqlx)?;
    // Held until commit: a second replica waits here, then finds nothing to do.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('writ_drafts_migrations'))")
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx)?;
    let count = apply_pending!(&mut *tx, POSTGRES);
    tx.commit().await.map_err(StoreError::from_sqlx)?;
    Ok(count)
}

/// Applies the missing SQLite migrations; returns how many were applied.
pub(crate) async fn sqlite(pool: &SqlitePool) -> Result<usize, StoreError> {
    // IMMEDIATE takes the write lock now: a deferred transaction that reads
    // first and writes later can fail with SQLITE_BUSY instead of waiting.
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(StoreError::from_sqlx)?;
    let count = apply_pending!(&mut *tx, SQLITE);
    tx.commit().await.map_err(StoreError::from_sqlx)?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Every file in a migrations directory is listed, in order, and vice versa.
    fn assert_listed(dir: &str, list: &[Migration]) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(dir);
        let mut files: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        assert_eq!(files.len(), list.len(), "{dir}: {files:?}");
        for (i, (file, m)) in files.iter().zip(list).enumerate() {
            assert_eq!(m.version, i as i64 + 1, "{dir}: versions are 1, 2, ...");
            assert!(
                file.starts_with(&format!("{:04}_", m.version)),
                "{dir}/{file} is not version {}",
                m.version
            );
            let text = std::fs::read_to_string(root.join(file)).unwrap();
            assert_eq!(text, m.sql, "{dir}/{file} differs from the embedded text");
        }
    }

    #[test]
    fn every_migration_file_is_embedded() {
        assert_listed("postgres", POSTGRES);
        assert_listed("sqlite", SQLITE);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        assert!(check_not_newer(1, SQLITE).is_ok());
        assert!(matches!(
            check_not_newer(2, SQLITE),
            Err(StoreError::SchemaTooNew { found: 2, known: 1 })
        ));
    }
}
