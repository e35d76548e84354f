//! A fresh PostgreSQL database per test: on the server `tests/run.sh` started, in a testcontainer, or a clear skip.
//!
//! Databases are not dropped afterwards: both servers are throwaway (tests/run.sh
//! deletes its cluster, testcontainers removes its container), and dropping in `Drop`
//! would mean blocking on async work in a destructor.

use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::Connection;
use testcontainers::runners::AsyncRunner;
use testcontainers::ContainerAsync;
use testcontainers_modules::postgres::Postgres;

/// A database of its own for one test; keep it alive as long as the test uses it.
pub struct TestPostgres {
    url: String,
    name: String,
    pool: PgPool,
    _container: Option<ContainerAsync<Postgres>>,
}

impl std::fmt::Debug for TestPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPostgres")
            .field("url", &self.url)
            .finish()
    }
}

impl TestPostgres {
    /// The URL of this test's database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn database(&self) -> &str {
        &self.name
    }

    /// A small connection pool (5 connections) to this test's database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// A fresh database: on `WRIT_TEST_POSTGRES_URL` (panics if that server is unusable), else in a testcontainer, else `None` with a skip notice.
pub async fn postgres() -> Option<TestPostgres> {
    if let Some(admin) = std::env::var("WRIT_TEST_POSTGRES_URL")
        .ok()
        .filter(|s| !s.trim().is_empty())
    {
        let admin = admin.trim().to_owned();
        return Some(
            fresh_database(&admin, None)
                .await
                .unwrap_or_else(|e| panic!("WRIT_TEST_POSTGRES_URL={admin}: {e:#}")),
        );
    }
    if crate::docker::available() {
        match container().await {
            Ok(p) => return Some(p),
            Err(e) => eprintln!("writ-testkit: PostgreSQL container failed: {e:#}"),
        }
    }
    eprintln!("skipping: no PostgreSQL (set WRIT_TEST_POSTGRES_URL or run tests/run.sh)");
    None
}

async fn container() -> anyhow::Result<TestPostgres> {
    let c = Postgres::default()
        .start()
        .await
        .context("starting postgres container")?;
    let port = c.get_host_port_ipv4(5432).await?;
    let admin = format!("postgres://postgres:postgres@127.0.0.1:{port}/postgres");
    fresh_database(&admin, Some(c)).await
}

async fn fresh_database(
    admin: &str,
    container: Option<ContainerAsync<Postgres>>,
) -> anyhow::Result<TestPostgres> {
    let name = crate::unique_db_name("writ");
    let mut conn = PgConnection::connect(admin)
        .await
        .context("connecting to the admin database")?;
    // `name` is from [a-z0-9_] only (unique_db_name), so quoting is enough.
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await
        .with_context(|| format!("CREATE DATABASE {name}"))?;
    conn.close().await.ok();
    let url = with_database(admin, &name);
    let pool = PgPoolOptions::new()
        .max_connections(5)
        .acquire_timeout(Duration::from_secs(30))
        .connect(&url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    Ok(TestPostgres {
        url,
        name,
        pool,
        _container: container,
    })
}

/// `url` with its database (path) replaced by `db`, keeping user, host and query.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_is_swapped_in_urls() {
        assert_eq!(
            with_database("postgres://u@127.0.0.1:5/postgres", "x"),
            "postgres://u@127.0.0.1:5/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h:5", "x"),
            "postgres://u:p@h:5/x"
        );
        assert_eq!(
            with_database("postgres://h/db?sslmode=disable", "x"),
            "postgres://h/x?sslmode=disable"
        );
    }

    #[tokio::test]
    async fn postgres_gives_a_fresh_database() {
        let Some(pg) = postgres().await else { return };
        let (db,): (String,) = sqlx::query_as("SELECT current_database()")
            .fetch_one(pg.pool())
            .await
            .unwrap();
        assert_eq!(db, pg.database());
        sqlx::query("CREATE TABLE t (id int primary key)")
            .execute(pg.pool())
            .await
            .unwrap();
        let other = postgres().await.unwrap();
        assert_ne!(other.url(), pg.url());
    }
}
