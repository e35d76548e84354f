//! A direct Avro binary encoder for [`StatusEvent`], one per command in the
//! worker: no serde JSON, no `apache_avro::Value`, one buffer.
//!
//! It follows `schemas/writ/status-event.avsc` field by field. The codec only
//! uses it when the catalog's status schema has exactly that layout
//! ([`layout_matches`]); anything else takes the generic path. Tests check it
//! byte for byte against the generic (apache-avro) path.

use apache_avro::schema::{RecordSchema, Schema, UnionSchema, UuidSchema};
use time::OffsetDateTime;
use writ_core::{StatusEvent, SubmissionState};

/// The fields of `StatusEvent` in the schema, in order, with their types.
const FIELDS: [(&str, Kind); 18] = [
    ("submission_id", Kind::UuidString),
    ("source", Kind::String),
    ("id", Kind::String),
    ("command_type", Kind::String),
    ("subject", Kind::Opt(Inner::String)),
    ("state", Kind::State),
    ("canonical_id", Kind::Opt(Inner::String)),
    ("master_version", Kind::Opt(Inner::Long)),
    ("error", Kind::Opt(Inner::Error)),
    ("attempts", Kind::Int),
    ("payload_fingerprint", Kind::String),
    ("accepted_at", Kind::TimestampMillis),
    ("applied_at", Kind::Opt(Inner::TimestampMillis)),
    ("stale_after", Kind::Opt(Inner::TimestampMillis)),
    ("job_id", Kind::Opt(Inner::String)),
    ("job_line", Kind::Opt(Inner::Long)),
    ("draft_id", Kind::Opt(Inner::String)),
    ("temp_id", Kind::Opt(Inner::String)),
];

#[derive(Clone, Copy)]
enum Kind {
    UuidString,
    String,
    State,
    Int,
    TimestampMillis,
    /// `["null", T]`.
    Opt(Inner),
}

#[derive(Clone, Copy)]
enum Inner {
    String,
    Long,
    TimestampMillis,
    Error,
}

/// Whether `schema` is the status-event layout [`encode`] writes.
pub(crate) fn layout_matches(schema: &Schema) -> bool {
    let Schema::Record(r) = schema else {
        return false;
    };
    r.fields.len() == FIELDS.len()
        && r.fields
            .iter()
            .zip(FIELDS)
            .all(|(f, (name, kind))| f.name == name && kind_matches(&f.schema, kind))
}

fn kind_matches(schema: &Schema, kind: Kind) -> bool {
    match kind {
        Kind::UuidString => matches!(schema, Schema::Uuid(UuidSchema::String)),
        Kind::String => matches!(schema, Schema::String),
        Kind::Int => matches!(schema, Schema::Int),
        Kind::TimestampMillis => matches!(schema, Schema::TimestampMillis),
        Kind::State => match schema {
            Schema::Enum(e) => e
                .symbols
                .iter()
                .map(String::as_str)
                .eq(SubmissionState::ALL.map(SubmissionState::as_str)),
            _ => false,
        },
        Kind::Opt(inner) => match schema {
            Schema::Union(u) => optional_matches(u, inner),
            _ => false,
        },
    }
}

fn optional_matches(u: &UnionSchema, inner: Inner) -> bool {
    let [Schema::Null, t] = u.variants() else {
        return false;
    };
    match inner {
        Inner::String => matches!(t, Schema::String),
        Inner::Long => matches!(t, Schema::Long),
        Inner::TimestampMillis => matches!(t, Schema::TimestampMillis),
        Inner::Error => matches!(t, Schema::Record(r) if error_matches(r)),
    }
}

fn error_matches(r: &RecordSchema) -> bool {
    let [code, message, retryable] = &r.fields[..] else {
        return false;
    };
    code.name == "code"
        && matches!(code.schema, Schema::String)
        && message.name == "message"
        && matches!(message.schema, Schema::String)
        && retryable.name == "retryable"
        && matches!(retryable.schema, Schema::Boolean)
}

/// The Avro datum of `event`, or `None` when the generic path must decide
/// (it reports these as errors): `attempts` above `i32::MAX`, or a timestamp
/// that has no RFC 3339 form (the generic path goes through one).
pub(crate) fn encode(event: &StatusEvent) -> Option<Vec<u8>> {
    let attempts = i32::try_from(event.attempts).ok()?;
    let accepted_at = millis(event.accepted_at)?;
    let applied_at = event.applied_at.map(millis);
    let stale_after = event.stale_after.map(millis);
    if applied_at.is_some_and(|t| t.is_none()) || stale_after.is_some_and(|t| t.is_none()) {
        return None;
    }

    let mut out = Vec::with_capacity(
        128 + event.source.len()
            + event.id.len()
            + event.command_type.len()
            + event.payload_fingerprint.len()
            + event
                .error
                .as_ref()
                .map_or(0, |e| e.code.len() + e.message.len()),
    );
    let w = &mut out;
    let mut uuid = [0u8; 45];
    string(w, event.submission_id.hyphenated().encode_lower(&mut uuid));
    string(w, &event.source);
    string(w, &event.id);
    string(w, &event.command_type);
    opt_string(w, event.subject.as_deref());
    long(w, state_index(event.state));
    opt_string(w, event.canonical_id.as_deref());
    opt_long(w, event.master_version);
    match &event.error {
        None => long(w, 0),
        Some(e) => {
            long(w, 1);
            string(w, &e.code);
            string(w, &e.message);
            w.push(u8::from(e.retryable));
        }
    }
    long(w, i64::from(attempts));
    string(w, &event.payload_fingerprint);
    long(w, accepted_at);
    opt_long(w, applied_at.flatten());
    opt_long(w, stale_after.flatten());
    opt_string(w, event.job_id.as_deref());
    opt_long(w, event.job_line);
    opt_string(w, event.draft_id.as_deref());
    opt_string(w, event.temp_id.as_deref());
    Some(out)
}

/// Milliseconds since the epoch as the generic path computes them: from the
/// RFC 3339 form (so only when there is one), truncated toward zero.
fn millis(t: OffsetDateTime) -> Option<i64> {
    let offset = t.offset();
    let formattable = (0..10_000).contains(&t.year())
        && offset.whole_hours().unsigned_abs() <= 23
        && offset.seconds_past_minute() == 0;
    if !formattable {
        return None;
    }
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

fn state_index(state: SubmissionState) -> i64 {
    match state {
        SubmissionState::Accepted => 0,
        SubmissionState::Applied => 1,
        SubmissionState::Rejected => 2,
        SubmissionState::Conflict => 3,
        SubmissionState::DeadLettered => 4,
    }
}

/// A zigzag varint (Avro `int` and `long` alike).
fn long(w: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        w.push((z as u8) | 0x80);
        z >>= 7;
    }
    w.push(z as u8);
}

fn string(w: &mut Vec<u8>, s: &str) {
    long(w, s.len() as i64);
    w.extend_from_slice(s.as_bytes());
}

/// `["null", "string"]`: branch index, then the value.
fn opt_string(w: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => long(w, 0),
        Some(s) => {
            long(w, 1);
            string(w, s);
        }
    }
}

/// `["null", "long"]` (or a timestamp-millis long).
fn opt_long(w: &mut Vec<u8>, n: Option<i64>) {
    match n {
        None => long(w, 0),
        Some(n) => {
            long(w, 1);
            long(w, n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zigzag_matches_the_spec() {
        let enc = |n| {
            let mut v = Vec::new();
            long(&mut v, n);
            v
        };
        assert_eq!(enc(0), [0]);
        assert_eq!(enc(-1), [1]);
        assert_eq!(enc(1), [2]);
        assert_eq!(enc(-64), [0x7f]);
        assert_eq!(enc(64), [0x80, 0x01]);
        assert_eq!(
            enc(i64::MAX),
            [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
        assert_eq!(
            enc(i64::MIN),
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
    }
}
