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

/// Feeds serde_json's compact output straight into the hash, so keys and
/// scalars are written without an intermediate `String` each.
struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn write_canonical(value: &Value, out: &mut Sha256) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.update(b"{");
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.update(b",");
                }
                write_json(key, out);
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
        scalar => write_json(scalar, out),
    }
}

/// Compact JSON of a key or scalar, byte for byte what `to_string` gives.
fn write_json<T: serde::Serialize + ?Sized>(value: &T, out: &mut Sha256) {
    serde_json::to_writer(HashWriter(out), value)
        .expect("serializing a string or JSON scalar into a hash cannot fail");
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

    #[test]
    fn the_canonical_form_is_stable_across_releases() {
        // Fingerprints are stored in inbox rows and status events: a change of
        // the canonical bytes would make every earlier retry look like a reused key.
        let payload = json!({
            "name": "Zoë \"Q\" Ada\n", "seq": 42, "ratio": 0.5, "big": 12345678901234_i64,
            "neg": -7, "ok": true, "none": null, "tags": ["a", "b\u{0001}"],
            "address": {"zip": "75001", "city": "Paris", "lines": []}, "": {}
        });
        assert_eq!(
            payload_fingerprint(&payload),
            "eadc59148de6ef105369dc04fa370614e29162827d7d090884d79000f0582385"
        );
    }
}
