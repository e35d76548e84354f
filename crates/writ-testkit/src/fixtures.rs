//! The example domain's master, shared by every test and harness that runs a
//! worker against PostgreSQL.

/// The mapped `customers` table (a name of `poison` violates a CHECK, for
/// rejection tests) and `customer_history`, filled by a trigger on every
/// write: the independent witness of "applied exactly once, in order".
pub const CUSTOMERS_MASTER_DDL: &str = r#"
CREATE TABLE customers (
    customer_id text PRIMARY KEY,
    name text NOT NULL CHECK (name <> 'poison'),
    email text NOT NULL,
    tier text,
    seq bigint,
    version bigint NOT NULL DEFAULT 0
);
CREATE TABLE customer_history (
    id bigserial PRIMARY KEY,
    customer_id text NOT NULL,
    seq bigint,
    name text,
    version bigint
);
CREATE FUNCTION record_customer_history() RETURNS trigger AS $$
BEGIN
    INSERT INTO customer_history (customer_id, seq, name, version)
        VALUES (NEW.customer_id, NEW.seq, NEW.name, NEW.version);
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER customers_history AFTER INSERT OR UPDATE ON customers
    FOR EACH ROW EXECUTE FUNCTION record_customer_history();
"#;

/// A worker configuration (TOML) applying the example domain's commands to a
/// PostgreSQL master created with [`CUSTOMERS_MASTER_DDL`]: quick retries,
/// `extra` top-level settings inserted before the sections.
pub fn customers_worker_toml(
    domain: &str,
    profile: &str,
    bootstrap: &str,
    pg_url: &str,
    extra: &str,
) -> String {
    format!(
        r#"
domain = "{domain}"
profile = "{profile}"
listen = "127.0.0.1:0"
drain_timeout_ms = 4000
{extra}

[kafka]
bootstrap_servers = "{bootstrap}"
properties = {{ "session.timeout.ms" = "6000" }}

[retry]
max_attempts = 50
initial_backoff_ms = 20
max_backoff_ms = 500
max_elapsed_ms = 60000

{master}"#,
        master = customers_master_toml(pg_url, 4),
    )
}

/// The `[master]` section mapping the example domain's commands onto a
/// PostgreSQL master created with [`CUSTOMERS_MASTER_DDL`] (the worker
/// writes through it, the edge service reads through it).
pub fn customers_master_toml(pg_url: &str, max_connections: u32) -> String {
    format!(
        r#"
[master]
kind = "postgres"
url = "{pg_url}"
max_connections = {max_connections}

[master.types."customer.upsert.v1"]
table = "customers"
mode = "upsert"
key_columns = ["customer_id"]
columns = {{ customer_id = "customer_id", name = "name", email = "email", tier = "tier", seq = "seq" }}
version_column = "version"
canonical_id_column = "customer_id"

[master.types."customer.delete.v1"]
table = "customers"
mode = "delete"
key_columns = ["customer_id"]
columns = {{ customer_id = "customer_id" }}
"#
    )
}
