//! Plain JSON <-> Avro values, checked against a schema, so that users and
//! producers write ordinary JSON while writ stores and validates Avro.
//!
//! Validation never stops at the first problem: an ingress answers a bad
//! request once, with every field that is wrong, each named by a JSON path
//! (`$.lines[2].quantity`).

use std::collections::HashMap;
use std::fmt::{self, Write as _};

use apache_avro::schema::{Name, NamespaceRef, RecordSchema, Schema, UnionSchema, UuidSchema};
use apache_avro::types::Value;
use serde_json::{Map, Value as Json};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field, `$` being the payload itself.
    pub path: String,
    /// What is wrong, never containing the field's value.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in one payload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ValidationErrors {
    /// The problems, in schema order.
    pub errors: Vec<FieldError>,
}

impl ValidationErrors {
    /// One problem at `path`.
    pub fn single(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            errors: vec![FieldError {
                path: path.into(),
                message: message.into(),
            }],
        }
    }

    /// Whether `path` has a problem (handy in tests and in problem+json mapping).
    pub fn has_path(&self, path: &str) -> bool {
        self.errors.iter().any(|e| e.path == path)
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Converts plain JSON into an Avro value of `schema`, filling defaults.
///
/// Strict: unknown fields, missing required fields, wrong types, unknown
/// enum symbols and out-of-range numbers are all errors, every one reported.
pub fn json_to_avro(schema: &Schema, json: &Json) -> Result<Value, ValidationErrors> {
    let mut walker = Walker::new(schema, false);
    let value = walker.convert(schema, None, json);
    match value {
        Some(v) if walker.errors.is_empty() => Ok(v),
        _ => Err(walker.into_errors()),
    }
}

/// Checks the fields that are present, ignoring missing required ones (drafts).
pub fn validate_partial(schema: &Schema, json: &Json) -> Result<(), ValidationErrors> {
    let mut walker = Walker::new(schema, true);
    walker.convert(schema, None, json);
    if walker.errors.is_empty() {
        Ok(())
    } else {
        Err(walker.into_errors())
    }
}

/// Converts an Avro value into plain JSON (unions unwrapped, timestamps as RFC 3339).
pub fn avro_to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Int(i) | Value::Date(i) | Value::TimeMillis(i) => Json::from(*i),
        Value::Long(l)
        | Value::TimeMicros(l)
        | Value::LocalTimestampMillis(l)
        | Value::LocalTimestampMicros(l)
        | Value::LocalTimestampNanos(l) => Json::from(*l),
        Value::Float(f) => serde_json::Number::from_f64(f64::from(*f))
            .map(Json::Number)
            .unwrap_or(Json::Null),
        Value::Double(d) => serde_json::Number::from_f64(*d)
            .map(Json::Number)
            .unwrap_or(Json::Null),
        Value::Bytes(b) | Value::Fixed(_, b) => Json::String(bytes_to_string(b)),
        Value::String(s) | Value::Enum(_, s) => Json::String(s.clone()),
        Value::Union(_, inner) => avro_to_json(inner),
        Value::Array(items) => Json::Array(items.iter().map(avro_to_json).collect()),
        Value::Map(m) => {
            let mut keys: Vec<_> = m.keys().collect();
            keys.sort();
            Json::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), avro_to_json(&m[k])))
                    .collect(),
            )
        }
        Value::Record(fields) => Json::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), avro_to_json(v)))
                .collect::<Map<_, _>>(),
        ),
        Value::TimestampMillis(ms) => timestamp_json(i128::from(*ms) * 1_000_000, *ms),
        Value::TimestampMicros(us) => timestamp_json(i128::from(*us) * 1_000, *us),
        Value::TimestampNanos(ns) => timestamp_json(i128::from(*ns), *ns),
        Value::Uuid(u) => Json::String(u.to_string()),
        Value::Decimal(d) => {
            // Without the schema's scale only the unscaled bytes are known.
            let bytes: Vec<u8> = d.try_into().unwrap_or_default();
            Json::String(bytes_to_string(&bytes))
        }
        Value::BigDecimal(d) => Json::String(d.to_string()),
        Value::Duration(d) => serde_json::json!({
            "months": u32::from(d.months()),
            "days": u32::from(d.days()),
            "millis": u32::from(d.millis()),
        }),
    }
}

/// [`avro_to_json`] taking the value, so strings and field names move into
/// the JSON instead of being copied (decoding builds a value only for this).
pub fn avro_into_json(value: Value) -> Json {
    match value {
        Value::String(s) | Value::Enum(_, s) => Json::String(s),
        Value::Union(_, inner) => avro_into_json(*inner),
        Value::Array(items) => Json::Array(items.into_iter().map(avro_into_json).collect()),
        Value::Map(m) => {
            let mut entries: Vec<(String, Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Json::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, avro_into_json(v)))
                    .collect(),
            )
        }
        Value::Record(fields) => Json::Object(
            fields
                .into_iter()
                .map(|(k, v)| (k, avro_into_json(v)))
                .collect::<Map<_, _>>(),
        ),
        other => avro_to_json(&other),
    }
}

/// An instant as RFC 3339, or the raw number if it is outside `time`'s range.
fn timestamp_json(nanos: i128, raw: i64) -> Json {
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .map(Json::String)
        .unwrap_or_else(|| Json::from(raw))
}

/// Avro's JSON form of bytes: one char per byte (ISO-8859-1).
fn bytes_to_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| char::from(*b)).collect()
}

/// The JSON type name used in messages; never the value (it may be secret).
fn json_kind(json: &Json) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

/// The schema type name used in messages.
fn schema_kind(schema: &Schema) -> String {
    match schema {
        Schema::Null => "null".into(),
        Schema::Boolean => "boolean".into(),
        Schema::Int => "int".into(),
        Schema::Long => "long".into(),
        Schema::Float => "float".into(),
        Schema::Double => "double".into(),
        Schema::Bytes => "bytes".into(),
        Schema::String => "string".into(),
        Schema::Array(_) => "array".into(),
        Schema::Map(_) => "map".into(),
        Schema::Union(u) => union_kind(u),
        Schema::Record(r) => format!("object ({})", r.name.name()),
        Schema::Enum(e) => format!("one of {}", e.symbols.join(", ")),
        Schema::Fixed(f) => format!("string of {} bytes", f.size),
        Schema::Uuid(_) => "uuid string".into(),
        Schema::Date => "date".into(),
        Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => "timestamp (RFC 3339 string or integer)".into(),
        Schema::TimeMillis | Schema::TimeMicros => "time of day".into(),
        Schema::Decimal(_) | Schema::BigDecimal => "decimal".into(),
        Schema::Duration(_) => "duration".into(),
        Schema::Ref { name } => name.name().to_string(),
    }
}

/// One step of a JSON path: an object key or an array index.
#[derive(Clone, Copy)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// The message name of a union: its branches' names joined by "or".
fn union_kind(u: &UnionSchema) -> String {
    u.variants()
        .iter()
        .map(schema_kind)
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Walks a JSON document along a schema, collecting errors.
///
/// The current JSON path is kept as a stack of segments and only formatted
/// (`$.a.b[2]`) when an error is recorded.
struct Walker<'a> {
    /// The schema being walked, to index named types on first need.
    root: &'a Schema,
    /// Named types, to follow `Schema::Ref`s; built lazily, once per call.
    names: Option<HashMap<Name, &'a Schema>>,
    /// Drafts: missing required fields are not errors.
    partial: bool,
    errors: Vec<FieldError>,
    /// Segments of the current path below `$`.
    path: Vec<Seg<'a>>,
    /// Nesting of union branch trials; inside one, errors are only counted.
    trial_depth: u32,
    /// Errors seen inside trials (ever increasing; compared before/after).
    trial_errors: usize,
}

impl<'a> Walker<'a> {
    fn new(root: &'a Schema, partial: bool) -> Self {
        Self {
            root,
            names: None,
            partial,
            errors: Vec::new(),
            path: Vec::with_capacity(8),
            trial_depth: 0,
            trial_errors: 0,
        }
    }

    fn into_errors(self) -> ValidationErrors {
        ValidationErrors {
            errors: self.errors,
        }
    }

    /// The current path, e.g. `$.lines[2].quantity`.
    fn format_path(&self) -> String {
        let mut out = String::from("$");
        for seg in &self.path {
            match *seg {
                Seg::Key(key) => {
                    let plain = !key.is_empty()
                        && key
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if plain {
                        out.push('.');
                        out.push_str(key);
                    } else {
                        let _ = write!(out, "[{}]", Json::String(key.to_string()));
                    }
                }
                Seg::Index(i) => {
                    let _ = write!(out, "[{i}]");
                }
            }
        }
        out
    }

    /// Records a problem at the current path; the message is built only if kept.
    fn error_with(&mut self, message: impl FnOnce() -> String) -> Option<Value> {
        if self.trial_depth > 0 {
            self.trial_errors += 1;
        } else {
            let path = self.format_path();
            self.errors.push(FieldError {
                path,
                message: message(),
            });
        }
        None
    }

    fn error(&mut self, message: &str) -> Option<Value> {
        self.error_with(|| message.to_string())
    }

    fn type_error(&mut self, schema: &Schema, json: &Json) -> Option<Value> {
        self.error_with(|| format!("expected {}, got {}", schema_kind(schema), json_kind(json)))
    }

    /// Converts `json` under `seg` of the current path.
    fn convert_at(
        &mut self,
        seg: Seg<'a>,
        schema: &'a Schema,
        ns: NamespaceRef<'a>,
        json: &'a Json,
    ) -> Option<Value> {
        self.path.push(seg);
        let value = self.convert(schema, ns, json);
        self.path.pop();
        value
    }

    /// Converts `json` at the current path; `None` means an error was recorded.
    fn convert(
        &mut self,
        schema: &'a Schema,
        ns: NamespaceRef<'a>,
        json: &'a Json,
    ) -> Option<Value> {
        match (schema, json) {
            (Schema::Null, Json::Null) => Some(Value::Null),
            (Schema::Boolean, Json::Bool(b)) => Some(Value::Boolean(*b)),
            (Schema::Int, Json::Number(n)) => match n.as_i64().map(i32::try_from) {
                Some(Ok(i)) => Some(Value::Int(i)),
                Some(Err(_)) => self.error("number out of range for int"),
                None => self.error("expected int, got a non-integer number"),
            },
            (Schema::Long, Json::Number(n)) => match n.as_i64() {
                Some(l) => Some(Value::Long(l)),
                None if n.is_u64() => self.error("number out of range for long"),
                None => self.error("expected long, got a non-integer number"),
            },
            (Schema::Float, Json::Number(n)) => n.as_f64().map(|f| Value::Float(f as f32)),
            (Schema::Double, Json::Number(n)) => n.as_f64().map(Value::Double),
            (Schema::String, Json::String(s)) => Some(Value::String(s.clone())),
            (Schema::Bytes, Json::String(s)) => string_to_bytes(s)
                .map(Value::Bytes)
                .or_else(|| self.error("bytes must be a string of chars U+0000..U+00FF")),
            (Schema::Fixed(f), Json::String(s)) => match string_to_bytes(s) {
                Some(b) if b.len() == f.size => Some(Value::Fixed(f.size, b)),
                _ => self.error_with(|| format!("expected a string of {} bytes", f.size)),
            },
            (Schema::Enum(e), Json::String(s)) => match e.symbols.iter().position(|x| x == s) {
                Some(i) => Some(Value::Enum(i as u32, s.clone())),
                // The value itself stays out: a secret-marked enum must not leak.
                None => self.error_with(|| format!("expected one of {}", e.symbols.join(", "))),
            },
            (Schema::Uuid(kind), Json::String(s)) => match apache_avro::Uuid::parse_str(s) {
                Ok(u) => match kind {
                    UuidSchema::String | UuidSchema::Bytes | UuidSchema::Fixed(_) => {
                        Some(Value::Uuid(u))
                    }
                },
                Err(_) => self.error("expected a UUID string"),
            },
            (Schema::Date, Json::Number(n)) => match n.as_i64().map(i32::try_from) {
                Some(Ok(d)) => Some(Value::Date(d)),
                _ => self.error("expected days since the epoch as an int"),
            },
            (Schema::Date, Json::String(s)) => {
                let fmt = time::macros::format_description!("[year]-[month]-[day]");
                match time::Date::parse(s, &fmt) {
                    Ok(d) => Some(Value::Date(
                        (d - time::Date::from_calendar_date(1970, time::Month::January, 1)
                            .expect("1970-01-01 is a valid date"))
                        .whole_days() as i32,
                    )),
                    Err(_) => self.error("expected a date YYYY-MM-DD"),
                }
            }
            (Schema::TimeMillis, Json::Number(n)) => match n.as_i64().map(i32::try_from) {
                Some(Ok(t)) => Some(Value::TimeMillis(t)),
                _ => self.error("expected milliseconds after midnight as an int"),
            },
            (Schema::TimeMicros, Json::Number(n)) => match n.as_i64() {
                Some(t) => Some(Value::TimeMicros(t)),
                None => self.error("expected microseconds after midnight as a long"),
            },
            (
                Schema::TimestampMillis
                | Schema::TimestampMicros
                | Schema::TimestampNanos
                | Schema::LocalTimestampMillis
                | Schema::LocalTimestampMicros
                | Schema::LocalTimestampNanos,
                Json::Number(_) | Json::String(_),
            ) => self.timestamp(schema, json),
            (Schema::Array(a), Json::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    match self.convert_at(Seg::Index(i), &a.items, ns, item) {
                        Some(v) if ok => out.push(v),
                        Some(_) => {}
                        None => ok = false,
                    }
                }
                ok.then_some(Value::Array(out))
            }
            (Schema::Map(m), Json::Object(obj)) => {
                let mut out = HashMap::with_capacity(obj.len());
                let mut ok = true;
                for (k, v) in obj {
                    match self.convert_at(Seg::Key(k), &m.types, ns, v) {
                        Some(v) if ok => {
                            out.insert(k.clone(), v);
                        }
                        Some(_) => {}
                        None => ok = false,
                    }
                }
                ok.then_some(Value::Map(out))
            }
            (Schema::Record(r), Json::Object(obj)) => self.record(r, ns, obj),
            (Schema::Union(u), _) => self.union(u, ns, json),
            (Schema::Ref { name }, _) => {
                let full = name.fully_qualified_name(ns);
                let root = self.root;
                let names = self.names.get_or_insert_with(|| {
                    let mut names = HashMap::new();
                    collect_names(root, None, &mut names);
                    names
                });
                match names.get(full.as_ref()).copied() {
                    Some(target) => self.convert(target, ns, json),
                    None => self.error_with(|| format!("schema refers to unknown type {full}")),
                }
            }
            (Schema::Decimal(_) | Schema::BigDecimal | Schema::Duration(_), _) => {
                self.error_with(|| {
                    format!("{} is not supported in JSON payloads", schema_kind(schema))
                })
            }
            _ => self.type_error(schema, json),
        }
    }

    fn timestamp(&mut self, schema: &Schema, json: &Json) -> Option<Value> {
        // Scale from nanoseconds to the schema's unit.
        let per_unit: i128 = match schema {
            Schema::TimestampMillis | Schema::LocalTimestampMillis => 1_000_000,
            Schema::TimestampMicros | Schema::LocalTimestampMicros => 1_000,
            _ => 1,
        };
        let raw = match json {
            Json::Number(n) => match n.as_i64() {
                Some(v) => v,
                None => return self.error("expected an integer timestamp"),
            },
            Json::String(s) => match OffsetDateTime::parse(s, &Rfc3339) {
                Ok(t) => match i64::try_from(t.unix_timestamp_nanos() / per_unit) {
                    Ok(v) => v,
                    Err(_) => return self.error("timestamp out of range"),
                },
                Err(_) => return self.error("expected an RFC 3339 timestamp"),
            },
            _ => return self.type_error(schema, json),
        };
        Some(match schema {
            Schema::TimestampMillis => Value::TimestampMillis(raw),
            Schema::TimestampMicros => Value::TimestampMicros(raw),
            Schema::TimestampNanos => Value::TimestampNanos(raw),
            Schema::LocalTimestampMillis => Value::LocalTimestampMillis(raw),
            Schema::LocalTimestampMicros => Value::LocalTimestampMicros(raw),
            _ => Value::LocalTimestampNanos(raw),
        })
    }

    fn record(
        &mut self,
        r: &'a RecordSchema,
        ns: NamespaceRef<'a>,
        obj: &'a Map<String, Json>,
    ) -> Option<Value> {
        let ns = r.name.namespace().or(ns);
        let mut out = Vec::with_capacity(r.fields.len());
        let mut ok = true;
        // Keys of `obj` that name a field; if all do, none is unknown.
        let mut present = 0usize;
        for field in &r.fields {
            let seg = Seg::Key(&field.name);
            let value = match (obj.get(&field.name), &field.default) {
                (Some(v), _) => {
                    present += 1;
                    self.convert_at(seg, &field.schema, ns, v)
                }
                // A default is plain JSON for the field's type (for a union, its
                // first branch), so it converts like a value would.
                (None, Some(default)) => self.convert_at(seg, &field.schema, ns, default),
                (None, None) if self.partial => {
                    ok = false;
                    continue;
                }
                (None, None) => {
                    self.path.push(seg);
                    self.error("missing required field");
                    self.path.pop();
                    None
                }
            };
            match value {
                Some(v) if ok => out.push((field.name.clone(), v)),
                Some(_) => {}
                None => ok = false,
            }
        }
        if present != obj.len() {
            for key in obj.keys() {
                if !r.lookup.contains_key(key) {
                    ok = false;
                    self.path.push(Seg::Key(key));
                    self.error("unknown field");
                    self.path.pop();
                }
            }
        }
        ok.then_some(Value::Record(out))
    }

    fn union(&mut self, u: &'a UnionSchema, ns: NamespaceRef<'a>, json: &'a Json) -> Option<Value> {
        let variants = u.variants();
        if json.is_null() {
            return match variants.iter().position(|s| matches!(s, Schema::Null)) {
                Some(i) => Some(Value::Union(i as u32, Box::new(Value::Null))),
                None => self
                    .error_with(|| format!("expected {}, got {}", union_kind(u), json_kind(json))),
            };
        }
        let mut non_null = variants
            .iter()
            .enumerate()
            .filter(|(_, s)| !matches!(s, Schema::Null));
        // ["null", T] is an optional T: report T's own errors, which name the
        // nested field that is wrong instead of "no branch matched".
        if let (Some((only, s)), None) = (non_null.next(), non_null.next()) {
            return self
                .convert(s, ns, json)
                .map(|v| Value::Union(only as u32, Box::new(v)));
        }
        for (i, s) in variants.iter().enumerate() {
            if matches!(s, Schema::Null) {
                continue;
            }
            // A trial: its errors are only counted, never kept.
            let before = self.trial_errors;
            self.trial_depth += 1;
            let value = self.convert(s, ns, json);
            self.trial_depth -= 1;
            if let Some(v) = value {
                if self.trial_errors == before {
                    return Some(Value::Union(i as u32, Box::new(v)));
                }
            }
            // A branch that did not match leaves no errors behind, even for an
            // enclosing trial.
            self.trial_errors = before;
        }
        self.error_with(|| format!("expected {}, got {}", union_kind(u), json_kind(json)))
    }
}

/// Avro's JSON form of bytes; `None` if a char is above U+00FF.
fn string_to_bytes(s: &str) -> Option<Vec<u8>> {
    s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect()
}

/// Indexes every named type under its full name, to resolve `Schema::Ref`.
pub(crate) fn collect_names<'s>(
    schema: &'s Schema,
    ns: NamespaceRef<'s>,
    names: &mut HashMap<Name, &'s Schema>,
) {
    match schema {
        Schema::Record(r) => {
            names.insert(r.name.fully_qualified_name(ns).into_owned(), schema);
            let inner = r.name.namespace().or(ns);
            for f in &r.fields {
                collect_names(&f.schema, inner, names);
            }
        }
        Schema::Enum(e) => {
            names.insert(e.name.fully_qualified_name(ns).into_owned(), schema);
        }
        Schema::Fixed(f) => {
            names.insert(f.name.fully_qualified_name(ns).into_owned(), schema);
        }
        Schema::Array(a) => collect_names(&a.items, ns, names),
        Schema::Map(m) => collect_names(&m.types, ns, names),
        Schema::Union(u) => {
            for v in u.variants() {
                collect_names(v, ns, names);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SchemaCatalog;
    use serde_json::json;

    fn schema(t: &str) -> Schema {
        SchemaCatalog::builtin().get(t).unwrap().schema().clone()
    }

    fn errors(t: &str, payload: Json) -> Vec<String> {
        json_to_avro(&schema(t), &payload)
            .unwrap_err()
            .errors
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn customer() -> Json {
        json!({
            "customer_id": "c-1", "name": "Ada", "email": "ada@example.com",
            "address": {"street": "Main 1", "city": "Utrecht", "postal_code": "3511", "country": "NL"},
        })
    }

    #[test]
    fn fills_defaults_and_round_trips() {
        let v = json_to_avro(&schema("customer.upsert.v1"), &customer()).unwrap();
        let back = avro_to_json(&v);
        assert_eq!(back["tier"], "STANDARD");
        assert_eq!(back["phone"], Json::Null);
        assert_eq!(back["seq"], Json::Null);
        assert_eq!(back["address"]["city"], "Utrecht");
        // The canonical form converts to itself.
        assert_eq!(
            avro_to_json(&json_to_avro(&schema("customer.upsert.v1"), &back).unwrap()),
            back
        );

        let order = json!({"order_id": "o-1", "customer_id": "c-1",
            "lines": [{"sku": "A", "quantity": 2, "unit_price_cents": 1999}]});
        let back = avro_to_json(&json_to_avro(&schema("order.place.v1"), &order).unwrap());
        assert_eq!(back["currency"], "EUR");
        assert_eq!(back["lines"][0]["quantity"], 2);
    }

    #[test]
    fn reports_every_error_with_its_path() {
        let mut bad = customer();
        bad["address"]["postal_code"] = json!(3511);
        bad["tier"] = json!("BRONZE");
        bad["foo"] = json!(1);
        bad.as_object_mut().unwrap().remove("email");
        let errs = errors("customer.upsert.v1", bad);
        assert_eq!(
            errs,
            [
                "$.email: missing required field",
                "$.address.postal_code: expected string, got number",
                "$.tier: expected one of STANDARD, GOLD, PLATINUM",
                "$.foo: unknown field",
            ]
        );
    }

    #[test]
    fn array_items_are_named_by_index() {
        let order = json!({"order_id": "o", "customer_id": "c", "lines": [
            {"sku": "A", "quantity": 1, "unit_price_cents": 1},
            {"sku": "B", "quantity": 1.5, "unit_price_cents": 1},
            {"sku": "C", "unit_price_cents": 1},
            {"sku": 7, "quantity": 3000000000i64, "unit_price_cents": "1"},
        ]});
        let errs = errors("order.place.v1", order);
        assert_eq!(
            errs,
            [
                "$.lines[1].quantity: expected int, got a non-integer number",
                "$.lines[2].quantity: missing required field",
                "$.lines[3].sku: expected string, got number",
                "$.lines[3].quantity: number out of range for int",
                "$.lines[3].unit_price_cents: expected long, got string",
            ]
        );
        let errs = errors(
            "order.place.v1",
            json!({"order_id": "o", "customer_id": "c", "lines": {}}),
        );
        assert_eq!(errs, ["$.lines: expected array, got object"]);
    }

    #[test]
    fn unions_take_null_or_plain_values_not_avro_json() {
        let s = schema("customer.upsert.v1");
        let mut c = customer();
        c["phone"] = json!(null);
        c["address"] = json!(null);
        c["seq"] = json!(7);
        let v = avro_to_json(&json_to_avro(&s, &c).unwrap());
        assert_eq!(
            (v["phone"].clone(), v["seq"].clone()),
            (Json::Null, json!(7))
        );
        c["phone"] = json!({"string": "+31"});
        let errs = errors("customer.upsert.v1", c.clone());
        assert_eq!(errs, ["$.phone: expected string, got object"]);
        c["phone"] = json!("+31");
        c["address"] = json!({"street": "s", "city": "c", "country": "NL", "zip": "x"});
        let errs = errors("customer.upsert.v1", c);
        assert_eq!(
            errs,
            [
                "$.address.postal_code: missing required field",
                "$.address.zip: unknown field"
            ]
        );
    }

    #[test]
    fn general_unions_pick_the_first_matching_branch() {
        let s = Schema::parse_str(
            r#"{"type":"record","name":"U","fields":[{"name":"v","type":["null","long","string"]}]}"#,
        )
        .unwrap();
        let v = json_to_avro(&s, &json!({"v": "x"})).unwrap();
        assert_eq!(
            v,
            Value::Record(vec![(
                "v".into(),
                Value::Union(2, Box::new(Value::String("x".into())))
            )])
        );
        let e = json_to_avro(&s, &json!({"v": true})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "$.v: expected null or long or string, got boolean"
        );
    }

    #[test]
    fn nested_general_unions_and_named_refs() {
        let s = Schema::parse_str(
            r#"{"type":"record","name":"U","namespace":"t","fields":[
                {"name":"v","type":["null","long",{"type":"record","name":"R","fields":[
                    {"name":"w","type":["long","string"]}]}]},
                {"name":"again","type":["null","R"],"default":null}]}"#,
        )
        .unwrap();
        // The inner union's failed "long" branch must not spoil the outer "R".
        let v = json_to_avro(&s, &json!({"v": {"w": "x"}, "again": {"w": 3}})).unwrap();
        assert_eq!(
            avro_to_json(&v),
            json!({"v": {"w": "x"}, "again": {"w": 3}})
        );
        let Value::Record(fields) = &v else { panic!() };
        assert!(matches!(fields[0].1, Value::Union(2, _)));
        let e = json_to_avro(&s, &json!({"v": {"w": true}, "again": {"w": true}})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "$.v: expected null or long or object (R), got object; \
             $.again.w: expected long or string, got boolean"
        );
        let e = validate_partial(&s, &json!({"again": {"x": 1}})).unwrap_err();
        assert_eq!(e.to_string(), "$.again.x: unknown field");
    }

    #[test]
    fn logical_types_accept_strings_and_numbers() {
        let status = SchemaCatalog::builtin()
            .status_schema()
            .unwrap()
            .schema()
            .clone();
        let base = json!({
            "submission_id": "6f1c1d5e-2d52-4b8e-9a57-5a0e8f0b7c11", "source": "/t/a", "id": "k1",
            "command_type": "customer.upsert.v1", "state": "APPLIED", "attempts": 1,
            "payload_fingerprint": "ab", "accepted_at": "2026-11-27T10:00:00.123Z",
            "applied_at": 1_795_000_000_000i64,
        });
        let v = json_to_avro(&status, &base).unwrap();
        let Value::Record(fields) = &v else { panic!() };
        assert!(matches!(fields[0].1, Value::Uuid(_)));
        assert!(fields.contains(&(
            "accepted_at".into(),
            Value::TimestampMillis(1_795_773_600_123)
        )));
        let back = avro_to_json(&v);
        assert_eq!(back["accepted_at"], "2026-11-27T10:00:00.123Z");
        let mut bad = base.clone();
        bad["submission_id"] = json!("nope");
        bad["accepted_at"] = json!("yesterday");
        let errs: Vec<_> = json_to_avro(&status, &bad)
            .unwrap_err()
            .errors
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(errs, ["$.submission_id", "$.accepted_at"]);
    }

    #[test]
    fn partial_validation_ignores_missing_but_checks_present() {
        let s = schema("customer.upsert.v1");
        assert!(validate_partial(&s, &json!({"name": "Ada"})).is_ok());
        assert!(validate_partial(&s, &json!({"address": {"city": "X"}})).is_ok());
        let e =
            validate_partial(&s, &json!({"name": 1, "address": {"city": 2}, "x": 0})).unwrap_err();
        let paths: Vec<_> = e.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["$.name", "$.address.city", "$.x"]);
        assert!(json_to_avro(&s, &json!({"name": "Ada"})).is_err());
    }

    #[test]
    fn top_level_must_be_an_object_and_odd_keys_are_quoted() {
        assert_eq!(
            errors("customer.delete.v1", json!([1])),
            ["$: expected object (CustomerDelete), got array"]
        );
        let errs = errors("customer.delete.v1", json!({"customer_id": "c", "a b": 1}));
        assert_eq!(errs, [r#"$["a b"]: unknown field"#]);
    }
}
