-- The example master schema for the customers domain (PostgreSQL).
CREATE TABLE IF NOT EXISTS customers (
    customer_id text PRIMARY KEY,
    name        text NOT NULL,
    email       text NOT NULL,
    phone       text,
    tier        text,
    city        text,
    seq         bigint,
    version     bigint NOT NULL DEFAULT 0
);
