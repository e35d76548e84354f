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
