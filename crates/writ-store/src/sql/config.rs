//! The SQL master's configuration (TOML-friendly, one declarative mapping per
//! command type) and its validated, compiled form used to build statements.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::OnceLock;

use serde::Deserialize;

use super::ident::{Ident, TableName};
use super::values::JsonPath;

/// Which SQL database the master talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// PostgreSQL: set-based statements, uuid inbox keys, BRIN expiry index.
    Postgres,
    /// SQLite: per-row statements in one `BEGIN IMMEDIATE` transaction.
    Sqlite,
}

impl Dialect {
    /// The master kind for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Sqlite => "sqlite",
        }
    }
}

/// `[master]` for `kind = "postgres"` or `kind = "sqlite"`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlMasterConfig {
    /// `postgres://user:pass@host/db` or `sqlite://path/master.db?mode=rwc`.
    pub url: String,
    /// Pool size (default 8).
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// How long to wait for a pooled connection before answering `Unavailable` (default 5000).
    #[serde(default = "default_acquire_timeout_ms")]
    pub acquire_timeout_ms: u64,
    /// The inbox (dedupe) table, created by `connect` when missing (default `writ_inbox`).
    #[serde(default = "default_inbox_table")]
    pub inbox_table: String,
    /// One mapping per command type (`[master.types."customer.upsert.v1"]`).
    #[serde(default)]
    pub types: BTreeMap<String, TypeMapping>,
}

impl fmt::Debug for SqlMasterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlMasterConfig")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout_ms", &self.acquire_timeout_ms)
            .field("inbox_table", &self.inbox_table)
            .field("types", &self.types)
            .finish()
    }
}

impl SqlMasterConfig {
    /// A config with defaults and no type mappings.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: default_max_connections(),
            acquire_timeout_ms: default_acquire_timeout_ms(),
            inbox_table: default_inbox_table(),
            types: BTreeMap::new(),
        }
    }
}

fn default_max_connections() -> u32 {
    8
}
fn default_acquire_timeout_ms() -> u64 {
    5_000
}
fn default_inbox_table() -> String {
    "writ_inbox".to_owned()
}

/// `url` with any password replaced by `***` (for logs and errors).
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => match authority[..at].split_once(':') {
            Some((user, _)) => format!(
                "{}{user}:***{}",
                &url[..scheme_end],
                &url[scheme_end + at..]
            ),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// How a command type writes its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteMode {
    /// Insert a new row; an existing key is `Rejected { code: "DUPLICATE_KEY" }`.
    Insert,
    /// Insert or update by key (`INSERT ... ON CONFLICT (keys) DO UPDATE`).
    Upsert,
    /// Update by key; a missing row is `Rejected { code: "NOT_FOUND" }`.
    Update,
    /// Delete by key; a missing row is `Rejected { code: "NOT_FOUND" }`.
    Delete,
}

/// How one command type maps onto one table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeMapping {
    /// The table (`name` or `schema.name`).
    pub table: String,
    /// insert | upsert | update | delete.
    pub mode: WriteMode,
    /// The entity key columns (a unique key of the table).
    pub key_columns: Vec<String>,
    /// column = JSON path into the payload (dot paths for nested fields).
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// A bigint column writ increments on every write and compares with `ce_expectedversion`.
    #[serde(default)]
    pub version_column: Option<String>,
    /// The column returned as canonical id (default: the first key column).
    #[serde(default)]
    pub canonical_id_column: Option<String>,
}

/// A column written from a payload path.
#[derive(Debug, Clone)]
pub struct ColumnMap {
    /// The column.
    pub column: Ident,
    /// Where its value comes from in the payload.
    pub path: JsonPath,
}

/// A validated [`TypeMapping`].
#[derive(Debug, Clone)]
pub struct Mapping {
    /// The table.
    pub table: TableName,
    /// The write mode.
    pub mode: WriteMode,
    /// Key columns with their paths, in configured order.
    pub keys: Vec<ColumnMap>,
    /// Mapped non-key columns, in column-name order.
    pub values: Vec<ColumnMap>,
    /// The version column, if any.
    pub version: Option<Ident>,
    /// The canonical id column.
    pub canonical: Ident,
    /// PostgreSQL casts of the written columns, read once from the catalog
    /// (only successes are cached, so a table created later is still picked up).
    pub pg_casts: OnceLock<Vec<PgCast>>,
}

/// How the PostgreSQL fast path turns a column's bound text into its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgCast {
    /// The column's type without its modifier (`bigint`, `character varying`);
    /// the insert's assignment then applies the modifier, which errors on
    /// overflow like the JSON path does instead of silently truncating.
    pub ty: String,
    /// A json/jsonb column (or a domain over one): values go in as JSON text.
    pub json: bool,
}

impl Mapping {
    /// Keys then values: every column a write sets (before the version column).
    pub fn written(&self) -> impl Iterator<Item = &ColumnMap> {
        self.keys.iter().chain(self.values.iter())
    }

    fn compile(command_type: &str, m: &TypeMapping) -> Result<Self, String> {
        let ctx = |e: String| format!("master.types.\"{command_type}\": {e}");
        let table = TableName::parse(&m.table).map_err(ctx)?;
        if m.key_columns.is_empty() {
            return Err(ctx("key_columns must not be empty".into()));
        }
        let mut keys = Vec::new();
        for k in &m.key_columns {
            let column = Ident::new(k).map_err(ctx)?;
            if keys.iter().any(|c: &ColumnMap| c.column == column) {
                return Err(ctx(format!("key column {k} listed twice")));
            }
            let path = JsonPath::parse(m.columns.get(k).map_or(k.as_str(), String::as_str))
                .map_err(ctx)?;
            keys.push(ColumnMap { column, path });
        }
        let version = m
            .version_column
            .as_deref()
            .map(Ident::new)
            .transpose()
            .map_err(ctx)?;
        let mut values = Vec::new();
        for (col, path) in &m.columns {
            let column = Ident::new(col).map_err(ctx)?;
            if keys.iter().any(|k| k.column == column) {
                continue;
            }
            if version.as_ref() == Some(&column) {
                return Err(ctx(format!(
                    "column {col} is the version_column; writ sets it, it cannot be mapped"
                )));
            }
            values.push(ColumnMap {
                column,
                path: JsonPath::parse(path).map_err(ctx)?,
            });
        }
        if let Some(v) = &version {
            if keys.iter().any(|k| &k.column == v) {
                return Err(ctx("version_column cannot be a key column".into()));
            }
        }
        let canonical = match &m.canonical_id_column {
            Some(c) => Ident::new(c).map_err(ctx)?,
            None => keys[0].column.clone(),
        };
        Ok(Self {
            table,
            mode: m.mode,
            keys,
            values,
            version,
            canonical,
            pg_casts: OnceLock::new(),
        })
    }
}

/// Compiles every type mapping; the first invalid one is the error.
pub fn compile(config: &SqlMasterConfig) -> Result<HashMap<String, Mapping>, String> {
    config
        .types
        .iter()
        .map(|(t, m)| Mapping::compile(t, m).map(|c| (t.clone(), c)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(json: serde_json::Value) -> Result<Mapping, String> {
        let m: TypeMapping = serde_json::from_value(json).map_err(|e| e.to_string())?;
        Mapping::compile("t.v1", &m)
    }

    #[test]
    fn mapping_compiles_with_defaults() {
        let m = mapping(serde_json::json!({
            "table": "crm.customers", "mode": "upsert", "key_columns": ["customer_id"],
            "columns": {"customer_id": "id", "city": "address.city", "name": "name"},
            "version_column": "version"
        }))
        .unwrap();
        assert_eq!(m.table.to_string(), "\"crm\".\"customers\"");
        assert_eq!(m.keys[0].path.to_string(), "id");
        assert_eq!(
            m.values
                .iter()
                .map(|c| c.column.as_str())
                .collect::<Vec<_>>(),
            ["city", "name"]
        );
        assert_eq!(m.canonical.as_str(), "customer_id");
    }

    #[test]
    fn bad_mappings_are_refused() {
        let base = |extra: serde_json::Value| {
            let mut v = serde_json::json!({"table": "t", "mode": "insert", "key_columns": ["id"]});
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            mapping(v)
        };
        assert!(base(serde_json::json!({})).is_ok());
        assert!(base(serde_json::json!({"table": "t; drop table x"})).is_err());
        assert!(base(serde_json::json!({"key_columns": []})).is_err());
        assert!(base(serde_json::json!({"columns": {"a-b": "x"}})).is_err());
        assert!(base(serde_json::json!({"columns": {"v": "x"}, "version_column": "v"})).is_err());
        assert!(base(serde_json::json!({"columns": {"a": "x..y"}})).is_err());
        assert!(base(serde_json::json!({"bogus": 1})).is_err());
        assert!(base(serde_json::json!({"mode": "merge"})).is_err());
    }

    #[test]
    fn master_config_rejects_unknown_keys_through_the_kind_tag() {
        let ok: crate::MasterConfig = serde_json::from_value(serde_json::json!({
            "kind": "postgres", "url": "postgres://h/db",
            "types": {"a.v1": {"table": "a", "mode": "delete", "key_columns": ["id"]}}
        }))
        .unwrap();
        match ok {
            crate::MasterConfig::Postgres(c) => {
                assert_eq!(c.inbox_table, "writ_inbox");
                assert_eq!(c.max_connections, 8);
            }
            other => panic!("{other:?}"),
        }
        let bad = serde_json::from_value::<crate::MasterConfig>(serde_json::json!({
            "kind": "sqlite", "url": "sqlite::memory:", "max_conections": 2
        }));
        assert!(bad.is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
        let c = SqlMasterConfig::new("postgres://u:secret@h/db");
        assert!(!format!("{c:?}").contains("secret"));
    }
}
