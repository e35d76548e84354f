//! The master under test: a fresh PostgreSQL database with the mapped
//! `customers` table, a trigger-fed history table (the independent witness of
//! "applied exactly once, in order" — it does not trust writ's inbox), and the
//! fault injection: a statement-level trigger that fails a transaction with
//! SQLSTATE 40001 (serialization failure, which the worker retries) or makes
//! it sleep, and a row-level
//! trigger that keeps failing "flaky" rows until the master is fixed.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};

use crate::error::ChaosError;

/// Mapped table, history and its trigger.
pub const MASTER_DDL: &str = r#"
CREATE TABLE customers (
    customer_id text PRIMARY KEY,
    name text NOT NULL,
    email text NOT NULL,
    tier text,
    seq bigint,
    version bigint NOT NULL DEFAULT 0
);
CREATE TABLE customer_history (
    id bigserial PRIMARY KEY,
    customer_id text NOT NULL,
    seq bigint,
    name text
);
CREATE FUNCTION record_customer_history() RETURNS trigger AS $$
BEGIN
    INSERT INTO customer_history (customer_id, seq, name) VALUES (NEW.customer_id, NEW.seq, NEW.name);
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER customers_history AFTER INSERT OR UPDATE ON customers
    FOR EACH ROW EXECUTE FUNCTION record_customer_history();
"#;

/// Name prefix of rows the flaky trigger fails until the master is fixed.
pub const FLAKY_PREFIX: &str = "flaky";

/// How often the master misbehaves, per transaction that writes `customers`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// Probability that a writing transaction fails with SQLSTATE 40001.
    pub error_probability: f64,
    /// Probability that a writing transaction stalls first (a latency spike).
    pub spike_probability: f64,
    /// Length of a latency spike, ms.
    pub spike_ms: u64,
    /// Roll the dice on every write statement instead of once per transaction
    /// (a batch apply writes one statement per wave, so far more batches fail).
    pub per_statement: bool,
}

impl Faults {
    /// No faults at all (the soak).
    pub const NONE: Faults = Faults {
        error_probability: 0.0,
        spike_probability: 0.0,
        spike_ms: 0,
        per_statement: false,
    };
}

/// A database of its own for one run.
#[derive(Debug, Clone)]
pub struct Master {
    url: String,
    pool: PgPool,
}

impl Master {
    /// Creates database `name` on the server at `admin_url` and the schema in it.
    pub async fn create(admin_url: &str, name: &str) -> Result<Self, ChaosError> {
        let admin = PgConnectOptions::from_str(admin_url)?;
        let mut conn = admin.connect().await?;
        sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        let url = database_url(admin_url, name)?;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect_with(admin.database(name))
            .await?;
        sqlx::raw_sql(MASTER_DDL).execute(&pool).await?;
        Ok(Self { url, pool })
    }

    /// The URL workers connect with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The harness' own pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Installs the fault triggers. Statement-level, so a multi-row write
    /// fails or stalls as a whole, as a real serialization failure would;
    /// the dice are rolled once per transaction.
    pub async fn break_it(&self, faults: Faults) -> Result<(), ChaosError> {
        let sql = format!(
            r#"
CREATE OR REPLACE FUNCTION chaos_fault() RETURNS trigger AS $$
BEGIN
    -- Once per transaction (a transaction-local flag) unless per statement:
    -- the fault rate is then per batch apply, however many statements it has.
    IF {per_statement} OR current_setting('chaos.rolled', true) IS DISTINCT FROM 'y' THEN
        PERFORM set_config('chaos.rolled', 'y', true);
        IF random() < {spike_p} THEN
            PERFORM pg_sleep({spike_s});
        END IF;
        IF random() < {error_p} THEN
            RAISE EXCEPTION 'chaos: injected serialization failure' USING ERRCODE = '40001';
        END IF;
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION chaos_flaky() RETURNS trigger AS $$
BEGIN
    IF NEW.name LIKE '{flaky}%' THEN
        RAISE EXCEPTION 'chaos: master down for this row' USING ERRCODE = '40001';
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS chaos_fault ON customers;
DROP TRIGGER IF EXISTS chaos_flaky ON customers;
CREATE TRIGGER chaos_fault BEFORE INSERT OR UPDATE ON customers
    FOR EACH STATEMENT EXECUTE FUNCTION chaos_fault();
CREATE TRIGGER chaos_flaky BEFORE INSERT OR UPDATE ON customers
    FOR EACH ROW EXECUTE FUNCTION chaos_flaky();
"#,
            spike_p = faults.spike_probability,
            spike_s = faults.spike_ms as f64 / 1000.0,
            error_p = faults.error_probability,
            flaky = FLAKY_PREFIX,
            per_statement = faults.per_statement,
        );
        sqlx::raw_sql(&sql).execute(&self.pool).await?;
        Ok(())
    }

    /// "Fixes" the master: drops both fault triggers.
    pub async fn fix(&self) -> Result<(), ChaosError> {
        sqlx::raw_sql(
            "DROP TRIGGER IF EXISTS chaos_fault ON customers; \
             DROP TRIGGER IF EXISTS chaos_flaky ON customers;",
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Rows in the history: one per applied write.
    pub async fn history_count(&self) -> Result<i64, ChaosError> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM customer_history")
            .fetch_one(&self.pool)
            .await?)
    }

    /// The whole history in apply order.
    pub async fn history(&self) -> Result<Vec<HistoryRow>, ChaosError> {
        let rows: Vec<(i64, String, Option<i64>, Option<String>)> =
            sqlx::query_as("SELECT id, customer_id, seq, name FROM customer_history ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(id, entity, seq, name)| HistoryRow {
                id,
                entity,
                seq: seq.unwrap_or(-1),
                name: name.unwrap_or_default(),
            })
            .collect())
    }

    /// The highest history id so far (0 when empty).
    pub async fn history_mark(&self) -> Result<i64, ChaosError> {
        Ok(
            sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM customer_history")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// The final state of every entity: (customer_id, seq).
    pub async fn final_seqs(&self) -> Result<Vec<(String, i64)>, ChaosError> {
        let rows: Vec<(String, Option<i64>)> =
            sqlx::query_as("SELECT customer_id, seq FROM customers")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(c, s)| (c, s.unwrap_or(-1)))
            .collect())
    }
}

/// One applied write, as the history trigger recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    /// Apply order.
    pub id: i64,
    /// The entity.
    pub entity: String,
    /// The command's sequence number within its entity.
    pub seq: i64,
    /// The written name (tells a key-reuse duplicate from the original).
    pub name: String,
}

/// `admin_url` with its database replaced by `name`.
pub fn database_url(admin_url: &str, name: &str) -> Result<String, ChaosError> {
    let mut url = reqwest::Url::parse(admin_url)
        .map_err(|e| ChaosError::Config(format!("PostgreSQL URL `{admin_url}`: {e}")))?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_is_swapped_and_the_rest_kept() {
        assert_eq!(
            database_url("postgres://postgres@127.0.0.1:55432/postgres", "chaos_1").unwrap(),
            "postgres://postgres@127.0.0.1:55432/chaos_1"
        );
        assert_eq!(
            database_url("postgres://u:p@h/db?sslmode=disable", "x").unwrap(),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert!(database_url("not a url", "x").is_err());
    }
}
