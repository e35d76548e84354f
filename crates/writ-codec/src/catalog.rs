//! The schemas writ knows, by command type: loaded from `schemas/` at run time
//! or embedded at compile time, so every binary validates the same way.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use apache_avro::Schema;

use crate::error::CodecError;

/// File stem of the status event schema (under `schemas/writ/`).
pub const STATUS_SCHEMA_STEM: &str = "status-event";

/// Directory of writ's own records: their stems are not command types.
const WRIT_DIR: &str = "writ";

/// Prefix of `ce_dataschema` URIs.
pub const DATASCHEMA_PREFIX: &str = "urn:writ:schema:";

/// The repo's `schemas/`, embedded so binaries need no schema directory.
const BUILTIN: &[(&str, &str)] = &[
    (
        "writ/status-event.avsc",
        include_str!("../../../schemas/writ/status-event.avsc"),
    ),
    (
        "customers/customer.upsert.v1.avsc",
        include_str!("../../../schemas/customers/customer.upsert.v1.avsc"),
    ),
    (
        "customers/customer.delete.v1.avsc",
        include_str!("../../../schemas/customers/customer.delete.v1.avsc"),
    ),
    (
        "customers/order.place.v1.avsc",
        include_str!("../../../schemas/customers/order.place.v1.avsc"),
    ),
];

/// One payload schema: a command type's, or the status event's.
#[derive(Debug, Clone)]
pub struct CommandSchema {
    command_type: String,
    schema: Schema,
    raw: String,
    full_name: String,
    fields: Vec<String>,
    secret_fields: Vec<String>,
}

impl CommandSchema {
    /// Parses one `.avsc` text; `command_type` is its file stem.
    pub fn parse(command_type: &str, raw: &str) -> Result<Self, CodecError> {
        let bad = |msg: String| CodecError::Schema(format!("{command_type}: {msg}"));
        let schema = Schema::parse_str(raw).map_err(|e| bad(e.to_string()))?;
        let Schema::Record(record) = &schema else {
            return Err(bad("top-level schema must be a record".into()));
        };
        let full_name = record.name.fullname(None);
        let fields = record.fields.iter().map(|f| f.name.clone()).collect();
        let secret_fields = record
            .fields
            .iter()
            .filter(|f| {
                f.custom_attributes.get("writ.secret") == Some(&serde_json::Value::Bool(true))
            })
            .map(|f| f.name.clone())
            .collect();
        Ok(Self {
            command_type: command_type.to_string(),
            full_name,
            fields,
            secret_fields,
            raw: raw.to_string(),
            schema,
        })
    }

    /// The command type (`ce_type`), i.e. the file stem.
    pub fn command_type(&self) -> &str {
        &self.command_type
    }

    /// The parsed Avro schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The `.avsc` text as written (docs and custom attributes included).
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The record's full name, which is also its registry subject.
    pub fn full_name(&self) -> &str {
        &self.full_name
    }

    /// The top-level field names, in schema order.
    pub fn fields(&self) -> &[String] {
        &self.fields
    }

    /// The top-level fields marked `"writ.secret": true`, to redact from logs.
    pub fn secret_fields(&self) -> &[String] {
        &self.secret_fields
    }

    /// Whether `field` is marked secret.
    pub fn is_secret(&self, field: &str) -> bool {
        self.secret_fields.iter().any(|f| f == field)
    }

    /// A copy of `payload` with every secret top-level field replaced by `"***"`.
    pub fn redact(&self, payload: &serde_json::Value) -> serde_json::Value {
        let mut out = payload.clone();
        if let Some(obj) = out.as_object_mut() {
            for f in &self.secret_fields {
                if let Some(v) = obj.get_mut(f) {
                    if !v.is_null() {
                        *v = serde_json::Value::String("***".into());
                    }
                }
            }
        }
        out
    }

    /// The stable `ce_dataschema` URI, e.g. `urn:writ:schema:customer.upsert.v1`.
    pub fn dataschema(&self) -> String {
        format!("{DATASCHEMA_PREFIX}{}", self.command_type)
    }
}

/// Every schema writ knows, keyed by command type.
#[derive(Debug, Clone, Default)]
pub struct SchemaCatalog {
    commands: BTreeMap<String, CommandSchema>,
    status: Option<CommandSchema>,
}

impl SchemaCatalog {
    /// Loads every `*.avsc` under `dir`, recursively.
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<Self, CodecError> {
        let dir = dir.as_ref();
        let mut files = Vec::new();
        collect_avsc(dir, dir, &mut files)?;
        let texts = files
            .iter()
            .map(|(rel, path)| {
                std::fs::read_to_string(path)
                    .map(|t| (rel.clone(), t))
                    .map_err(|e| CodecError::Schema(format!("{}: {e}", path.display())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_files(texts.iter().map(|(r, t)| (r.as_str(), t.as_str())))
    }

    /// The repo's `schemas/`, embedded at compile time.
    pub fn builtin() -> Self {
        // The embedded files are checked by this crate's tests, so a failure
        // here is a build of writ with broken schemas, not bad input.
        Self::from_files(BUILTIN.iter().copied()).expect("embedded schemas/ must parse")
    }

    /// Builds a catalog from `(relative path, .avsc text)` pairs.
    pub fn from_files<'a>(
        files: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, CodecError> {
        let mut catalog = Self::default();
        let mut full_names: HashMap<String, String> = HashMap::new();
        for (rel, text) in files {
            let rel = rel.replace('\\', "/");
            let file = rel.rsplit('/').next().unwrap_or(&rel);
            let Some(stem) = file.strip_suffix(".avsc") else {
                continue;
            };
            let schema = CommandSchema::parse(stem, text)?;
            // The full name is the registry subject: two types sharing one
            // would silently share a compatibility history.
            if let Some(other) = full_names.insert(schema.full_name.clone(), rel.clone()) {
                return Err(CodecError::Schema(format!(
                    "{rel} and {other} both define {}",
                    schema.full_name
                )));
            }
            let in_writ_dir = rel.starts_with(&format!("{WRIT_DIR}/"));
            if in_writ_dir {
                if stem == STATUS_SCHEMA_STEM {
                    catalog.status = Some(schema);
                }
                continue;
            }
            if catalog.commands.contains_key(stem) {
                return Err(CodecError::Schema(format!(
                    "command type {stem} is defined twice"
                )));
            }
            catalog.commands.insert(stem.to_string(), schema);
        }
        Ok(catalog)
    }

    /// The schema of a command type, e.g. `customer.upsert.v1`.
    pub fn get(&self, command_type: &str) -> Option<&CommandSchema> {
        self.commands.get(command_type)
    }

    /// Every command type, sorted.
    pub fn types(&self) -> impl Iterator<Item = &str> {
        self.commands.keys().map(String::as_str)
    }

    /// The status event schema (`schemas/writ/status-event.avsc`).
    pub fn status_schema(&self) -> Result<&CommandSchema, CodecError> {
        self.status.as_ref().ok_or_else(|| {
            CodecError::Schema(format!(
                "{WRIT_DIR}/{STATUS_SCHEMA_STEM}.avsc is missing from the schema directory"
            ))
        })
    }
}

/// Finds `*.avsc` files, as (path relative to `root` with `/`, full path).
fn collect_avsc(
    root: &Path,
    dir: &Path,
    out: &mut Vec<(String, std::path::PathBuf)>,
) -> Result<(), CodecError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| CodecError::Schema(format!("{}: {e}", dir.display())))?;
    for entry in entries {
        let path = entry
            .map_err(|e| CodecError::Schema(format!("{}: {e}", dir.display())))?
            .path();
        if path.is_dir() {
            collect_avsc(root, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "avsc") {
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.push((rel, path));
        }
    }
    out.sort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_schemas() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
    }

    #[test]
    fn builtin_matches_the_directory() {
        let dir = SchemaCatalog::load_dir(repo_schemas()).unwrap();
        let builtin = SchemaCatalog::builtin();
        assert_eq!(
            dir.types().collect::<Vec<_>>(),
            builtin.types().collect::<Vec<_>>()
        );
        assert_eq!(
            builtin.types().collect::<Vec<_>>(),
            ["customer.delete.v1", "customer.upsert.v1", "order.place.v1"]
        );
        for t in dir.types() {
            assert_eq!(
                dir.get(t).unwrap().raw(),
                builtin.get(t).unwrap().raw(),
                "{t}"
            );
        }
        assert_eq!(
            dir.status_schema().unwrap().full_name(),
            builtin.status_schema().unwrap().full_name()
        );
    }

    #[test]
    fn exposes_fields_secrets_and_dataschema() {
        let c = SchemaCatalog::builtin();
        let up = c.get("customer.upsert.v1").unwrap();
        assert_eq!(up.full_name(), "io.writ.customers.v1.CustomerUpsert");
        assert_eq!(up.secret_fields(), ["tax_id"]);
        assert!(up.is_secret("tax_id") && !up.is_secret("email"));
        assert_eq!(up.fields()[0], "customer_id");
        assert_eq!(up.dataschema(), "urn:writ:schema:customer.upsert.v1");
        let redacted = up.redact(&serde_json::json!({"tax_id": "NL123", "name": "A"}));
        assert_eq!(redacted, serde_json::json!({"tax_id": "***", "name": "A"}));
        assert!(c.get("status-event").is_none());
        assert_eq!(
            c.status_schema().unwrap().full_name(),
            "io.writ.StatusEvent"
        );
    }

    #[test]
    fn every_field_has_a_doc() {
        let c = SchemaCatalog::builtin();
        let all = c
            .types()
            .map(|t| c.get(t).unwrap())
            .chain([c.status_schema().unwrap()]);
        for s in all {
            let Schema::Record(r) = s.schema() else {
                unreachable!()
            };
            for f in &r.fields {
                assert!(
                    f.doc.is_some(),
                    "{}.{} has no doc",
                    s.command_type(),
                    f.name
                );
            }
        }
    }

    #[test]
    fn missing_status_and_duplicates_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let rec = r#"{"type":"record","name":"A","namespace":"x","fields":[]}"#;
        std::fs::write(dir.path().join("a.v1.avsc"), rec).unwrap();
        let c = SchemaCatalog::load_dir(dir.path()).unwrap();
        assert!(matches!(c.status_schema(), Err(CodecError::Schema(_))));
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/b.v1.avsc"), rec).unwrap();
        assert!(matches!(
            SchemaCatalog::load_dir(dir.path()),
            Err(CodecError::Schema(_))
        ));
        std::fs::write(dir.path().join("sub/b.v1.avsc"), "{not json").unwrap();
        assert!(matches!(
            SchemaCatalog::load_dir(dir.path()),
            Err(CodecError::Schema(_))
        ));
        assert!(SchemaCatalog::load_dir(dir.path().join("nope")).is_err());
    }
}
