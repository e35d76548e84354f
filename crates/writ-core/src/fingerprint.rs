//! Payload fingerprints tell a retry (same key, same payload) from a reused
//! key (same key, different payload), independent of encoding and key order.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// SHA-256 (hex) of the canonical JSON form of a decoded payload.
///
/// Canonical form: object keys sorted, no insignificant whitespace, numbers as
/// serde_json prints them. The same record sent as JSON with keys in another
/// order, or as Avro, has the same fingerprint.
pub fn payload_fingerprint(payload: &Value) -> String {
    let mut hasher = Sha256::new();
    write_canonical(payload, &mut hasher);
    hex::encode(hasher.finalize())
}

/// SHA-256 (hex) of raw payload bytes, for records that could not be decoded.
pub fn raw_fingerprint(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn write_canonical(value: &Value, out: &mut Sha256) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.update(b"{");
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.update(b",");
                }
                out.update(Value::String(key.clone()).to_string().as_bytes());
                out.update(b":");
                write_canonical(&map[key], out);
            }
            out.update(b"}");
        }
        Value::Array(items) => {
            out.update(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.update(b",");
                }
                write_canonical(item, out);
            }
            out.update(b"]");
        }
        scalar => out.update(scalar.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_does_not_matter_but_values_do() {
        let a = json!({"name": "Ada", "address": {"city": "Paris", "zip": "75001"}});
        let b: Value =
            serde_json::from_str(r#"{ "address": {"zip":"75001","city":"Paris"}, "name":"Ada" }"#)
                .unwrap();
        assert_eq!(payload_fingerprint(&a), payload_fingerprint(&b));
        let c = json!({"name": "Ada", "address": {"city": "Lyon", "zip": "75001"}});
        assert_ne!(payload_fingerprint(&a), payload_fingerprint(&c));
        assert_eq!(payload_fingerprint(&a).len(), 64);
    }

    #[test]
    fn structure_is_part_of_the_fingerprint() {
        assert_ne!(
            payload_fingerprint(&json!(["a", "b"])),
            payload_fingerprint(&json!(["a,\"b"]))
        );
        assert_ne!(
            payload_fingerprint(&json!(1)),
            payload_fingerprint(&json!("1"))
        );
    }
}
