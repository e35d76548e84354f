//! Payload values: dot-path extraction from the JSON payload, the SQL value a
//! JSON value binds as, and the reverse (columns back into payload shape).

use std::fmt;

use serde_json::{Map, Value};

/// A dot path into a JSON payload (`address.city`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath(Vec<String>);

impl JsonPath {
    /// Parses a dot path; empty segments are refused.
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<String> = s.split('.').map(str::to_owned).collect();
        if parts.iter().any(String::is_empty) {
            return Err(format!("invalid JSON path {s:?}: empty segment"));
        }
        Ok(Self(parts))
    }

    /// The value at this path; `None` when any segment is absent (or not an object).
    pub fn get<'v>(&self, payload: &'v Value) -> Option<&'v Value> {
        self.0
            .iter()
            .try_fold(payload, |v, seg| v.as_object()?.get(seg))
    }

    /// Sets the value at this path, creating intermediate objects as needed.
    pub fn set(&self, target: &mut Map<String, Value>, value: Value) {
        let (last, parents) = self.0.split_last().expect("a parsed path has a segment");
        let mut obj = target;
        for seg in parents {
            let entry = obj
                .entry(seg.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            obj = entry.as_object_mut().expect("just made an object");
        }
        obj.insert(last.clone(), value);
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// What a JSON value binds as.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// JSON null or an absent path.
    Null,
    /// A boolean.
    Bool(bool),
    /// A number that fits in i64.
    Int(i64),
    /// Any other number.
    Float(f64),
    /// A string.
    Text(String),
    /// A nested object or array, as JSON text.
    Json(String),
}

impl SqlValue {
    /// The bind value for a JSON value (absent = null).
    pub fn from_json(v: Option<&Value>) -> Self {
        match v {
            None | Some(Value::Null) => Self::Null,
            Some(Value::Bool(b)) => Self::Bool(*b),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) => Self::Int(i),
                None => n.as_f64().map_or(Self::Text(n.to_string()), Self::Float),
            },
            Some(Value::String(s)) => Self::Text(s.clone()),
            Some(v @ (Value::Array(_) | Value::Object(_))) => Self::Json(v.to_string()),
        }
    }
}

/// The text form of a key value, used to tell entities apart inside a batch
/// (`"42"` and `42` are the same entity). `None` for null/absent.
pub fn key_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Splits an entity key into `n` key-column values: the values joined by `:`
/// (the last column takes the rest, so only it may contain `:`).
pub fn split_entity_key(entity_key: &str, n: usize) -> Option<Vec<&str>> {
    let parts: Vec<&str> = entity_key.splitn(n, ':').collect();
    (parts.len() == n).then_some(parts)
}

/// Turns a row (as a JSON object keyed by column) back into payload shape
/// (the reverse of the column -> path mapping) and reads its version.
pub fn unmap(m: &super::config::Mapping, row: &Value) -> (Value, Option<i64>) {
    let mut out = Map::new();
    for c in m.written() {
        let v = row.get(c.column.as_str()).cloned().unwrap_or(Value::Null);
        c.path.set(&mut out, v);
    }
    let version = m
        .version
        .as_ref()
        .and_then(|v| row.get(v.as_str()))
        .and_then(Value::as_i64);
    (Value::Object(out), version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_extract_nested_values() {
        let p = json!({"name": "A", "address": {"city": "Oslo", "geo": {"lat": 1.5}}, "tags": [1]});
        let get = |s: &str| JsonPath::parse(s).unwrap().get(&p).cloned();
        assert_eq!(get("name"), Some(json!("A")));
        assert_eq!(get("address.city"), Some(json!("Oslo")));
        assert_eq!(get("address.geo.lat"), Some(json!(1.5)));
        assert_eq!(get("address.zip"), None);
        assert_eq!(get("name.first"), None);
        assert_eq!(get("tags.0"), None);
        assert!(JsonPath::parse("a..b").is_err());
        assert!(JsonPath::parse("").is_err());
    }

    #[test]
    fn paths_build_payload_shape() {
        let mut m = Map::new();
        JsonPath::parse("address.city")
            .unwrap()
            .set(&mut m, json!("Oslo"));
        JsonPath::parse("address.zip")
            .unwrap()
            .set(&mut m, json!("0150"));
        JsonPath::parse("name").unwrap().set(&mut m, json!("A"));
        assert_eq!(
            Value::Object(m),
            json!({"address": {"city": "Oslo", "zip": "0150"}, "name": "A"})
        );
    }

    #[test]
    fn json_values_bind_by_kind() {
        assert_eq!(SqlValue::from_json(None), SqlValue::Null);
        assert_eq!(SqlValue::from_json(Some(&json!(null))), SqlValue::Null);
        assert_eq!(
            SqlValue::from_json(Some(&json!(true))),
            SqlValue::Bool(true)
        );
        assert_eq!(SqlValue::from_json(Some(&json!(7))), SqlValue::Int(7));
        assert_eq!(
            SqlValue::from_json(Some(&json!(1.25))),
            SqlValue::Float(1.25)
        );
        assert_eq!(
            SqlValue::from_json(Some(&json!(u64::MAX))),
            SqlValue::Float(u64::MAX as f64)
        );
        assert_eq!(
            SqlValue::from_json(Some(&json!("x"))),
            SqlValue::Text("x".into())
        );
        assert_eq!(
            SqlValue::from_json(Some(&json!({"a": [1]}))),
            SqlValue::Json("{\"a\":[1]}".into())
        );
    }

    #[test]
    fn keys_compare_as_text() {
        assert_eq!(key_text(Some(&json!(42))), key_text(Some(&json!("42"))));
        assert_eq!(key_text(Some(&json!(null))), None);
        assert_eq!(key_text(None), None);
        assert_eq!(split_entity_key("a:b:c", 2), Some(vec!["a", "b:c"]));
        assert_eq!(split_entity_key("a", 2), None);
        assert_eq!(split_entity_key("a:b", 1), Some(vec!["a:b"]));
    }
}
