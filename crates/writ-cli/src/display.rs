//! How records look to an operator: header values, keys, timestamps and
//! decoded payloads, as text and as JSON. Shared by `dlq show`, `tail` and
//! `status` so the same record reads the same everywhere.

use base64::Engine as _;
use serde_json::{json, Value};
use time::OffsetDateTime;
use writ_codec::PayloadCodec;
use writ_core::{cloudevents, Headers};
use writ_kafka::ConsumedRecord;

/// Bytes as text when they are UTF-8, else `base64:<...>` so nothing is lost.
pub fn bytes_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => format!(
            "base64:{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ),
    }
}

/// An optional byte string (key, header value) as text; `None` is `(null)`.
pub fn opt_text(bytes: Option<&[u8]>) -> String {
    bytes.map_or_else(|| "(null)".to_owned(), bytes_text)
}

/// Headers as a JSON array of `{name, value}` in record order (duplicates
/// kept); a binary value is `{"base64": ...}`, a null value `null`.
pub fn headers_json(headers: &Headers) -> Value {
    Value::Array(
        headers
            .iter()
            .map(|(name, value)| json!({ "name": name, "value": bytes_json(value) }))
            .collect(),
    )
}

/// Optional bytes as JSON: a string when UTF-8, `{"base64": ...}` otherwise.
pub fn bytes_json(bytes: Option<&[u8]>) -> Value {
    match bytes {
        None => Value::Null,
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => Value::String(s.to_owned()),
            Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) }),
        },
    }
}

/// Epoch milliseconds as RFC 3339 (UTC).
pub fn time_text(ms: Option<i64>) -> String {
    ms.and_then(|ms| OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok())
        .map_or_else(|| "-".to_owned(), cloudevents::format_time)
}

/// A payload decoded for display, or why it could not be.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A tombstone.
    Tombstone,
    /// Decoded against its schema (a command or a status event).
    Decoded(Value),
    /// Not decodable: the reason, and the bytes as text or base64.
    Raw {
        /// Why it was not decoded.
        reason: String,
        /// The value, as [`bytes_text`] shows it.
        text: String,
    },
}

impl Payload {
    /// As JSON: the decoded value, `null`, or `{"undecoded": ..., "reason": ...}`.
    pub fn to_json(&self) -> Value {
        match self {
            Self::Tombstone => Value::Null,
            Self::Decoded(v) => v.clone(),
            Self::Raw { reason, text } => json!({ "undecoded": text, "reason": reason }),
        }
    }

    /// As indented text for a terminal.
    pub fn to_text(&self) -> String {
        match self {
            Self::Tombstone => "(tombstone)".to_owned(),
            Self::Decoded(v) => serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()),
            Self::Raw { reason, text } => format!("(not decoded: {reason})\n{text}"),
        }
    }
}

/// Decodes a record's value: a command by its `ce_type` and `content-type`
/// headers, a status event on a `.status` topic, anything else as raw bytes.
///
/// Fields the command's schema marks `"writ.secret": true` show as `***`
/// unless `reveal_secrets`: a terminal, a ticket or a chat log is no place
/// for a tax id. (Bytes that are not even JSON cannot be redacted.)
pub async fn decode_payload(
    codec: &PayloadCodec,
    record: &ConsumedRecord,
    reveal_secrets: bool,
) -> Payload {
    let Some(value) = record.value.as_deref() else {
        return Payload::Tombstone;
    };
    let raw = |reason: String| Payload::Raw {
        reason,
        text: bytes_text(value),
    };
    let content_type = record.headers.get_str(cloudevents::CONTENT_TYPE);
    if let Some(command_type) = record.headers.get_str(cloudevents::TYPE) {
        let redact = |v: serde_json::Value| match codec.catalog().get(command_type) {
            Some(schema) if !reveal_secrets => schema.redact(&v),
            _ => v,
        };
        let Some(ct) = content_type else {
            return raw("no content-type header".to_owned());
        };
        return match codec.decode(command_type, ct, value).await {
            Ok(v) => Payload::Decoded(redact(v)),
            // Invalid against the schema but still JSON: show it, redacted.
            Err(e) => match serde_json::from_slice::<serde_json::Value>(value) {
                Ok(json) => Payload::Raw {
                    reason: e.to_string(),
                    text: redact(json).to_string(),
                },
                Err(_) => raw(e.to_string()),
            },
        };
    }
    if record.topic.ends_with(".status") {
        // The worker always writes content-type; Avro is its default format.
        let ct = content_type.unwrap_or("application/avro");
        return match codec.decode_status(ct, value).await {
            Ok(event) => match serde_json::to_value(&event) {
                Ok(v) => Payload::Decoded(v),
                Err(e) => raw(e.to_string()),
            },
            Err(e) => raw(e.to_string()),
        };
    }
    match content_type.map(writ_core::ContentType::parse) {
        Some(Some(writ_core::ContentType::Json)) => match serde_json::from_slice(value) {
            Ok(v) => Payload::Decoded(v),
            Err(e) => raw(format!("not valid JSON: {e}")),
        },
        _ => raw("no ce_type header: not a command".to_owned()),
    }
}

/// A record (metadata, headers, decoded payload) as one JSON object.
pub fn record_json(record: &ConsumedRecord, payload: &Payload) -> Value {
    json!({
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": time_text(record.timestamp_ms),
        "key": bytes_json(record.key.as_deref()),
        "headers": headers_json(&record.headers),
        "payload": payload.to_json(),
    })
}

/// A record as a block of text: a title line, headers, then the payload.
pub fn record_text(record: &ConsumedRecord, payload: &Payload) -> String {
    let mut out = format!(
        "{}:{}:{}  {}  key={}\n",
        record.topic,
        record.partition,
        record.offset,
        time_text(record.timestamp_ms),
        opt_text(record.key.as_deref())
    );
    for (name, value) in record.headers.iter() {
        out.push_str(&format!("  {name}: {}\n", opt_text(value)));
    }
    for line in payload.to_text().lines() {
        out.push_str("  | ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use writ_codec::SchemaCatalog;

    fn record(topic: &str, headers: Headers, value: Option<&[u8]>) -> ConsumedRecord {
        ConsumedRecord {
            topic: topic.into(),
            partition: 1,
            offset: 7,
            key: Some(b"cust-1".to_vec()),
            value: value.map(<[u8]>::to_vec),
            headers,
            timestamp_ms: Some(1_795_000_000_000),
        }
    }

    #[test]
    fn binary_values_survive_as_base64_and_nulls_stay_null() {
        let mut h = Headers::new();
        h.push("text", "héllo");
        h.push("bin", vec![0xff, 0x00]);
        h.push_null("nothing");
        assert_eq!(
            headers_json(&h),
            json!([
                {"name": "text", "value": "héllo"},
                {"name": "bin", "value": {"base64": "/wA="}},
                {"name": "nothing", "value": null},
            ])
        );
        assert_eq!(opt_text(Some(&[0xff, 0x00])), "base64:/wA=");
        assert_eq!(opt_text(None), "(null)");
        assert_eq!(time_text(Some(0)), "1970-01-01T00:00:00Z");
        assert_eq!(time_text(None), "-");
    }

    #[tokio::test]
    async fn commands_decode_by_type_and_garbage_stays_visible() {
        let codec = PayloadCodec::new(SchemaCatalog::builtin(), None).unwrap();
        let mut h = Headers::new();
        h.push("ce_type", "customer.upsert.v1");
        h.push("content-type", "application/json");
        let good = br#"{"customer_id":"c","name":"n","email":"e@x","seq":1}"#;
        match decode_payload(&codec, &record("d.commands", h.clone(), Some(good)), false).await {
            Payload::Decoded(v) => assert_eq!(v["tier"], "STANDARD"),
            other => panic!("{other:?}"),
        }
        let secret = br#"{"customer_id":"c","name":"n","email":"e@x","tax_id":"DE-123"}"#;
        let r = record("d.commands", h.clone(), Some(secret));
        match decode_payload(&codec, &r, false).await {
            Payload::Decoded(v) => assert_eq!(v["tax_id"], "***"),
            other => panic!("{other:?}"),
        }
        match decode_payload(&codec, &r, true).await {
            Payload::Decoded(v) => assert_eq!(v["tax_id"], "DE-123"),
            other => panic!("{other:?}"),
        }
        let invalid = br#"{"customer_id":"c","name":42,"tax_id":"DE-123"}"#;
        match decode_payload(&codec, &record("d.dlq", h.clone(), Some(invalid)), false).await {
            Payload::Raw { reason, text } => {
                assert!(reason.contains("$.name"), "{reason}");
                assert!(text.contains("***") && !text.contains("DE-123"), "{text}");
            }
            other => panic!("{other:?}"),
        }
        match decode_payload(&codec, &record("d.dlq", h, Some(b"{oops")), false).await {
            Payload::Raw { reason, text } => {
                assert!(reason.contains("JSON"), "{reason}");
                assert_eq!(text, "{oops");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            decode_payload(&codec, &record("d.dlq", Headers::new(), None), false).await,
            Payload::Tombstone
        );
    }
}
