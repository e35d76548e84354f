//! Dead-letter records and replay lineage, as header transformations.
//!
//! A DLQ record is the original record untouched plus `writ.dlq.*` headers; a
//! replay strips those, replaces any older `writ.replay.*` headers with fresh
//! ones and sends the rest back byte-for-byte. Both directions are pure
//! functions here so the worker and the CLI cannot disagree.

use time::OffsetDateTime;

use crate::cloudevents::{format_time, Headers};

/// Prefix of every header writ adds to a DLQ record.
pub const DLQ_PREFIX: &str = "writ.dlq.";
/// Prefix of every replay lineage header.
pub const REPLAY_PREFIX: &str = "writ.replay.";

/// `writ.dlq.reason`.
pub const REASON: &str = "writ.dlq.reason";
/// `writ.dlq.error.class`.
pub const ERROR_CLASS: &str = "writ.dlq.error.class";
/// `writ.dlq.error.message`.
pub const ERROR_MESSAGE: &str = "writ.dlq.error.message";
/// `writ.dlq.attempts`.
pub const ATTEMPTS: &str = "writ.dlq.attempts";
/// `writ.dlq.original.topic`.
pub const ORIGINAL_TOPIC: &str = "writ.dlq.original.topic";
/// `writ.dlq.original.partition`.
pub const ORIGINAL_PARTITION: &str = "writ.dlq.original.partition";
/// `writ.dlq.original.offset`.
pub const ORIGINAL_OFFSET: &str = "writ.dlq.original.offset";
/// `writ.dlq.original.timestamp` (epoch milliseconds, as Kafka stores it).
pub const ORIGINAL_TIMESTAMP: &str = "writ.dlq.original.timestamp";
/// `writ.dlq.first.failure.at` (RFC 3339).
pub const FIRST_FAILURE_AT: &str = "writ.dlq.first.failure.at";
/// `writ.dlq.last.failure.at` (RFC 3339).
pub const LAST_FAILURE_AT: &str = "writ.dlq.last.failure.at";
/// `writ.dlq.worker.id`.
pub const WORKER_ID: &str = "writ.dlq.worker.id";
/// `writ.dlq.value.omitted`: the original value's size in bytes, on a dead
/// letter whose value had to be left out because the copy would not fit the
/// DLQ topic; the original stays at its topic/partition/offset while retained.
pub const VALUE_OMITTED: &str = "writ.dlq.value.omitted";
/// `writ.replay.id`.
pub const REPLAY_ID: &str = "writ.replay.id";
/// `writ.replay.from` (`dlq-topic:partition:offset`).
pub const REPLAY_FROM: &str = "writ.replay.from";
/// `writ.replay.at` (RFC 3339).
pub const REPLAY_AT: &str = "writ.replay.at";

/// Approximate bytes a record takes on the wire: key, value, header names
/// and values (what a produce limit counts, less the batch framing).
pub fn record_size(key: Option<&[u8]>, value: Option<&[u8]>, headers: &Headers) -> usize {
    key.map_or(0, <[u8]>::len)
        + value.map_or(0, <[u8]>::len)
        + headers
            .iter()
            .map(|(n, v)| n.len() + v.map_or(0, <[u8]>::len))
            .sum::<usize>()
}

/// Longest error message kept in a DLQ header (bytes).
pub const MAX_MESSAGE_LEN: usize = 1024;

/// Why a record was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DlqReason {
    /// Cannot be decoded: bad headers, bad payload, wrong content type.
    Poison,
    /// A well-formed command of a type this worker does not handle.
    UnknownType,
    /// A retryable failure that did not clear within the retry budget.
    RetriesExhausted,
    /// A permanent rejection, dead-lettered only where configured.
    Rejected,
}

impl DlqReason {
    /// Every reason.
    pub const ALL: [DlqReason; 4] = [
        Self::Poison,
        Self::UnknownType,
        Self::RetriesExhausted,
        Self::Rejected,
    ];

    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Poison => "POISON",
            Self::UnknownType => "UNKNOWN_TYPE",
            Self::RetriesExhausted => "RETRIES_EXHAUSTED",
            Self::Rejected => "REJECTED",
        }
    }

    /// Parses a header value.
    pub fn parse(v: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == v)
    }
}

impl std::fmt::Display for DlqReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything the `writ.dlq.*` headers record about a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqFailure {
    /// Why.
    pub reason: DlqReason,
    /// The stable error code (`Classified::code`).
    pub error_class: String,
    /// The error message (truncated, control characters replaced).
    pub error_message: String,
    /// Apply attempts made.
    pub attempts: u32,
    /// Where the record was read.
    pub original_topic: String,
    /// Its partition.
    pub original_partition: i32,
    /// Its offset.
    pub original_offset: i64,
    /// Its Kafka timestamp, epoch ms.
    pub original_timestamp_ms: Option<i64>,
    /// First failed attempt.
    pub first_failure_at: OffsetDateTime,
    /// Last failed attempt.
    pub last_failure_at: OffsetDateTime,
    /// The worker that gave up.
    pub worker_id: String,
}

/// The malformed `writ.dlq.*` header that prevented reading DLQ metadata.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("DLQ header `{0}` is missing or malformed")]
pub struct DlqHeaderError(pub &'static str);

/// The headers of a DLQ record: the original ones plus `writ.dlq.*`.
pub fn dlq_headers(original: &Headers, failure: &DlqFailure) -> Headers {
    let mut h = original.clone();
    h.remove_where(|n| n.starts_with(DLQ_PREFIX));
    h.push(REASON, failure.reason.as_str());
    h.push(ERROR_CLASS, sanitize(&failure.error_class));
    h.push(ERROR_MESSAGE, sanitize(&failure.error_message));
    h.push(ATTEMPTS, failure.attempts.to_string());
    h.push(ORIGINAL_TOPIC, failure.original_topic.as_str());
    h.push(ORIGINAL_PARTITION, failure.original_partition.to_string());
    h.push(ORIGINAL_OFFSET, failure.original_offset.to_string());
    if let Some(ts) = failure.original_timestamp_ms {
        h.push(ORIGINAL_TIMESTAMP, ts.to_string());
    }
    h.push(FIRST_FAILURE_AT, format_time(failure.first_failure_at));
    h.push(LAST_FAILURE_AT, format_time(failure.last_failure_at));
    h.push(WORKER_ID, sanitize(&failure.worker_id));
    h
}

/// Reads the failure metadata back from a DLQ record's headers.
pub fn parse_dlq_headers(h: &Headers) -> Result<DlqFailure, DlqHeaderError> {
    use time::format_description::well_known::Rfc3339;
    let s = |name: &'static str| h.get_str(name).ok_or(DlqHeaderError(name));
    let num = |name: &'static str| -> Result<i64, DlqHeaderError> {
        s(name)?.parse().map_err(|_| DlqHeaderError(name))
    };
    let at = |name: &'static str| {
        OffsetDateTime::parse(s(name)?, &Rfc3339).map_err(|_| DlqHeaderError(name))
    };
    Ok(DlqFailure {
        reason: DlqReason::parse(s(REASON)?).ok_or(DlqHeaderError(REASON))?,
        error_class: s(ERROR_CLASS)?.to_owned(),
        error_message: s(ERROR_MESSAGE)?.to_owned(),
        attempts: u32::try_from(num(ATTEMPTS)?).map_err(|_| DlqHeaderError(ATTEMPTS))?,
        original_topic: s(ORIGINAL_TOPIC)?.to_owned(),
        original_partition: i32::try_from(num(ORIGINAL_PARTITION)?)
            .map_err(|_| DlqHeaderError(ORIGINAL_PARTITION))?,
        original_offset: num(ORIGINAL_OFFSET)?,
        original_timestamp_ms: h
            .get(ORIGINAL_TIMESTAMP)
            .map(|_| num(ORIGINAL_TIMESTAMP))
            .transpose()?,
        first_failure_at: at(FIRST_FAILURE_AT)?,
        last_failure_at: at(LAST_FAILURE_AT)?,
        worker_id: s(WORKER_ID)?.to_owned(),
    })
}

/// Where one replayed record came from, for lineage headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayOrigin {
    /// Names this replay run (resumable replays reuse it).
    pub replay_id: String,
    /// The DLQ topic.
    pub dlq_topic: String,
    /// The DLQ partition.
    pub dlq_partition: i32,
    /// The DLQ offset.
    pub dlq_offset: i64,
    /// When the replay happened.
    pub at: OffsetDateTime,
}

/// The headers a replayed record carries on its original topic: the original
/// headers, without `writ.dlq.*` and older `writ.replay.*`, plus fresh lineage.
pub fn replay_headers(dlq_record_headers: &Headers, origin: &ReplayOrigin) -> Headers {
    let mut h = dlq_record_headers.clone();
    h.remove_where(|n| n.starts_with(DLQ_PREFIX) || n.starts_with(REPLAY_PREFIX));
    h.push(REPLAY_ID, origin.replay_id.as_str());
    h.push(
        REPLAY_FROM,
        format!(
            "{}:{}:{}",
            origin.dlq_topic, origin.dlq_partition, origin.dlq_offset
        ),
    );
    h.push(REPLAY_AT, format_time(origin.at));
    h
}

/// Header-safe text: bounded length, control characters replaced.
fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > MAX_MESSAGE_LEN {
        let mut cut = MAX_MESSAGE_LEN;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn failure() -> DlqFailure {
        DlqFailure {
            reason: DlqReason::RetriesExhausted,
            error_class: "MASTER_UNAVAILABLE".into(),
            error_message: "connection refused\nretry later".into(),
            attempts: 7,
            original_topic: "customers.commands".into(),
            original_partition: 3,
            original_offset: 1042,
            original_timestamp_ms: Some(1_764_230_400_000),
            first_failure_at: datetime!(2026-11-27 10:00 UTC),
            last_failure_at: datetime!(2026-11-27 10:05 UTC),
            worker_id: "worker-a".into(),
        }
    }

    fn original() -> Headers {
        let mut h = Headers::new();
        h.push("ce_id", "k-1");
        h.push("ce_type", "customer.upsert.v1");
        h.push("x-custom", vec![0u8, 159, 146, 150]);
        h
    }

    #[test]
    fn dlq_headers_keep_the_original_and_round_trip() {
        let h = dlq_headers(&original(), &failure());
        assert_eq!(h.get("x-custom"), Some(&[0u8, 159, 146, 150][..]));
        assert_eq!(h.get_str(REASON), Some("RETRIES_EXHAUSTED"));
        let mut expected = failure();
        expected.error_message = "connection refused retry later".into();
        assert_eq!(parse_dlq_headers(&h).unwrap(), expected);
    }

    #[test]
    fn replay_restores_original_headers_and_lineage_never_piles_up() {
        let dlq = dlq_headers(&original(), &failure());
        let origin = ReplayOrigin {
            replay_id: "r1".into(),
            dlq_topic: "customers.dlq".into(),
            dlq_partition: 0,
            dlq_offset: 9,
            at: datetime!(2026-11-27 11:00 UTC),
        };
        let replayed = replay_headers(&dlq, &origin);
        let without_lineage = {
            let mut h = replayed.clone();
            h.remove_where(|n| n.starts_with(REPLAY_PREFIX));
            h
        };
        assert_eq!(without_lineage, original());
        assert_eq!(replayed.get_str(REPLAY_FROM), Some("customers.dlq:0:9"));

        // Dead-lettered again, then replayed again: still one set of lineage headers.
        let dlq2 = dlq_headers(&replayed, &failure());
        let replayed2 = replay_headers(
            &dlq2,
            &ReplayOrigin {
                replay_id: "r2".into(),
                ..origin
            },
        );
        let lineage: Vec<_> = replayed2
            .iter()
            .filter(|(n, _)| n.starts_with(REPLAY_PREFIX))
            .collect();
        assert_eq!(lineage.len(), 3);
        assert_eq!(replayed2.get_str(REPLAY_ID), Some("r2"));
    }

    #[test]
    fn long_messages_are_truncated_on_a_char_boundary() {
        let mut f = failure();
        f.error_message = "é".repeat(MAX_MESSAGE_LEN);
        let h = dlq_headers(&Headers::new(), &f);
        let m = h.get_str(ERROR_MESSAGE).unwrap();
        assert!(m.len() <= MAX_MESSAGE_LEN);
        assert!(parse_dlq_headers(&Headers::new()).is_err());
    }
}
