//! The CloudEvents Kafka protocol binding, binary mode, for commands.
//!
//! Attributes travel as `ce_<name>` headers with UTF-8 values and the payload
//! is the record value, so a producer in any language can publish a command
//! with plain headers. Parsing is strict and total: every malformed or missing
//! header is a typed [`HeaderError`], never a panic, because header bytes come
//! from arbitrary producers.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::envelope::{CommandEnvelope, ContentType};
use crate::error::{Classified, ErrorDomain, Retryability};

/// `ce_specversion`.
pub const SPECVERSION: &str = "ce_specversion";
/// `ce_id`.
pub const ID: &str = "ce_id";
/// `ce_source`.
pub const SOURCE: &str = "ce_source";
/// `ce_type`.
pub const TYPE: &str = "ce_type";
/// `ce_subject`.
pub const SUBJECT: &str = "ce_subject";
/// `ce_time`.
pub const TIME: &str = "ce_time";
/// `content-type` (the binding maps `datacontenttype` to it).
pub const CONTENT_TYPE: &str = "content-type";
/// `ce_dataschema`.
pub const DATASCHEMA: &str = "ce_dataschema";
/// `ce_expectedversion` extension.
pub const EXPECTED_VERSION: &str = "ce_expectedversion";
/// `ce_staleafter` extension.
pub const STALE_AFTER: &str = "ce_staleafter";
/// `ce_jobid` extension.
pub const JOB_ID: &str = "ce_jobid";
/// `ce_jobline` extension.
pub const JOB_LINE: &str = "ce_jobline";
/// `ce_draftid` extension.
pub const DRAFT_ID: &str = "ce_draftid";
/// `ce_tempid` extension.
pub const TEMP_ID: &str = "ce_tempid";
/// W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// The only CloudEvents version writ speaks.
pub const SPEC_VERSION_1_0: &str = "1.0";
/// Longest `ce_id` accepted (bytes); matches the ingress' Idempotency-Key limit.
pub const MAX_ID_LEN: usize = 255;
/// Longest value accepted for any other attribute (bytes).
pub const MAX_ATTRIBUTE_LEN: usize = 1024;
/// More headers than this on one record is treated as malformed.
pub const MAX_HEADER_COUNT: usize = 64;

/// Kafka record headers, in order; a `None` value is a null header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, Option<Vec<u8>>)>);

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Appends a header (duplicates allowed, as in Kafka).
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) {
        self.0.push((name.into(), Some(value.into())));
    }

    /// Appends a header with a null value.
    pub fn push_null(&mut self, name: impl Into<String>) {
        self.0.push((name.into(), None));
    }

    /// The first value of `name`, if present and not null.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// The first value of `name` as UTF-8, if present and valid.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Removes every header whose name satisfies `pred`.
    pub fn remove_where(&mut self, mut pred: impl FnMut(&str) -> bool) {
        self.0.retain(|(n, _)| !pred(n));
    }

    /// Replaces every header named `name` with one header of this value.
    pub fn set(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        self.remove_where(|n| n == name);
        self.push(name, value);
    }

    /// All headers, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_deref()))
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(String, Option<Vec<u8>>)> for Headers {
    fn from_iter<T: IntoIterator<Item = (String, Option<Vec<u8>>)>>(iter: T) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// Why a record's headers are not a valid command envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// A required header is absent (or null).
    #[error("missing required header `{0}`")]
    Missing(&'static str),
    /// A header that must appear once appears several times.
    #[error("header `{0}` appears more than once")]
    Duplicate(&'static str),
    /// A header value is not UTF-8.
    #[error("header `{0}` is not valid UTF-8")]
    NotUtf8(&'static str),
    /// A header value is empty.
    #[error("header `{0}` is empty")]
    Empty(&'static str),
    /// A header value contains a control character (or whitespace where none is allowed).
    #[error("header `{name}` contains a forbidden character at byte {at}")]
    ForbiddenCharacter {
        /// The header.
        name: &'static str,
        /// Byte offset of the first offending character.
        at: usize,
    },
    /// A header value is longer than allowed.
    #[error("header `{name}` is {len} bytes long; at most {max} allowed")]
    TooLong {
        /// The header.
        name: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A header value does not parse as its type.
    #[error("header `{name}` is invalid: {reason}")]
    Invalid {
        /// The header.
        name: &'static str,
        /// What was expected.
        reason: String,
    },
    /// `ce_specversion` is not `1.0`.
    #[error("unsupported CloudEvents specversion `{0}`; writ speaks 1.0")]
    UnsupportedSpecVersion(String),
    /// `content-type` is neither JSON nor Avro.
    #[error("unsupported content-type `{0}`; use application/json or application/avro")]
    UnsupportedContentType(String),
    /// The record has an absurd number of headers.
    #[error("record has {count} headers; at most {max} allowed")]
    TooManyHeaders {
        /// How many there were.
        count: usize,
        /// The limit.
        max: usize,
    },
}

impl Classified for HeaderError {
    fn domain(&self) -> ErrorDomain {
        ErrorDomain::Input
    }
    fn retryability(&self) -> Retryability {
        Retryability::Permanent
    }
    fn code(&self) -> &'static str {
        match self {
            Self::UnsupportedContentType(_) => "UNSUPPORTED_CONTENT_TYPE",
            _ => "INVALID_HEADERS",
        }
    }
}

/// The Kafka headers of a command, in binary mode.
pub fn to_headers(envelope: &CommandEnvelope) -> Headers {
    let mut h = Headers::new();
    h.push(SPECVERSION, SPEC_VERSION_1_0);
    h.push(ID, envelope.id.as_str());
    h.push(SOURCE, envelope.source.as_str());
    h.push(TYPE, envelope.command_type.as_str());
    h.push(CONTENT_TYPE, envelope.content_type.as_str());
    if let Some(v) = &envelope.subject {
        h.push(SUBJECT, v.as_str());
    }
    if let Some(t) = envelope.time {
        h.push(TIME, format_time(t));
    }
    if let Some(v) = &envelope.data_schema {
        h.push(DATASCHEMA, v.as_str());
    }
    if let Some(v) = envelope.expected_version {
        h.push(EXPECTED_VERSION, v.to_string());
    }
    if let Some(t) = envelope.stale_after {
        h.push(STALE_AFTER, format_time(t));
    }
    if let Some(v) = &envelope.job_id {
        h.push(JOB_ID, v.as_str());
    }
    if let Some(v) = envelope.job_line {
        h.push(JOB_LINE, v.to_string());
    }
    if let Some(v) = &envelope.draft_id {
        h.push(DRAFT_ID, v.as_str());
    }
    if let Some(v) = &envelope.temp_id {
        h.push(TEMP_ID, v.as_str());
    }
    if let Some(v) = &envelope.traceparent {
        h.push(TRACEPARENT, v.as_str());
    }
    h
}

/// Reads a command envelope from Kafka headers; unknown headers are ignored.
pub fn from_headers(headers: &Headers) -> Result<CommandEnvelope, HeaderError> {
    if headers.len() > MAX_HEADER_COUNT {
        return Err(HeaderError::TooManyHeaders {
            count: headers.len(),
            max: MAX_HEADER_COUNT,
        });
    }
    let spec = required(headers, SPECVERSION, 16)?;
    if spec != SPEC_VERSION_1_0 {
        return Err(HeaderError::UnsupportedSpecVersion(spec.to_owned()));
    }
    let (id, source) = identity(headers)?;
    let command_type = required(headers, TYPE, 255)?;
    no_whitespace(TYPE, command_type)?;
    let content_type_raw = required(headers, CONTENT_TYPE, 255)?;
    let content_type = ContentType::parse(content_type_raw)
        .ok_or_else(|| HeaderError::UnsupportedContentType(content_type_raw.to_owned()))?;

    let mut envelope = CommandEnvelope::new(id, source, command_type, content_type);
    envelope.subject = optional(headers, SUBJECT, MAX_ATTRIBUTE_LEN)?.map(str::to_owned);
    envelope.time = optional(headers, TIME, 64)?
        .map(|v| parse_time(TIME, v))
        .transpose()?;
    envelope.data_schema = optional(headers, DATASCHEMA, MAX_ATTRIBUTE_LEN)?.map(str::to_owned);
    envelope.expected_version = optional(headers, EXPECTED_VERSION, 20)?
        .map(|v| parse_int(EXPECTED_VERSION, v))
        .transpose()?;
    envelope.stale_after = optional(headers, STALE_AFTER, 64)?
        .map(|v| parse_time(STALE_AFTER, v))
        .transpose()?;
    envelope.job_id = optional(headers, JOB_ID, MAX_ATTRIBUTE_LEN)?.map(str::to_owned);
    envelope.job_line = optional(headers, JOB_LINE, 20)?
        .map(|v| parse_int(JOB_LINE, v))
        .transpose()?;
    envelope.draft_id = optional(headers, DRAFT_ID, MAX_ATTRIBUTE_LEN)?.map(str::to_owned);
    envelope.temp_id = optional(headers, TEMP_ID, MAX_ATTRIBUTE_LEN)?.map(str::to_owned);
    // A broken trace header must not make a command poison: it is dropped.
    envelope.traceparent = optional(headers, TRACEPARENT, 128)
        .ok()
        .flatten()
        .filter(|v| is_valid_traceparent(v))
        .map(str::to_owned);
    Ok(envelope)
}

/// For a record [`from_headers`] refused: an envelope carrying just its
/// identity — a valid `ce_id` and `ce_source`, so the submitter can still be
/// told on the status topic that it was dead-lettered. `None` when the
/// identity itself is what is broken (or the header count is abusive).
/// `ce_type` is kept when readable, else `unknown`; the content type is a
/// placeholder: nothing is decoded with this envelope.
pub fn identity_from_headers(headers: &Headers) -> Option<CommandEnvelope> {
    if headers.len() > MAX_HEADER_COUNT {
        return None;
    }
    let (id, source) = identity(headers).ok()?;
    let command_type = required(headers, TYPE, 255)
        .ok()
        .filter(|t| no_whitespace(TYPE, t).is_ok())
        .unwrap_or("unknown");
    let mut envelope = CommandEnvelope::new(id, source, command_type, ContentType::Json);
    envelope.subject = optional(headers, SUBJECT, MAX_ATTRIBUTE_LEN)
        .ok()
        .flatten()
        .map(str::to_owned);
    Some(envelope)
}

/// `ce_id` and `ce_source`: what names a submission (its id is derived from them).
fn identity(headers: &Headers) -> Result<(&str, &str), HeaderError> {
    let id = required(headers, ID, MAX_ID_LEN)?;
    let source = required(headers, SOURCE, MAX_ATTRIBUTE_LEN)?;
    no_whitespace(SOURCE, source)?;
    Ok((id, source))
}

/// Formats an instant as RFC 3339 (UTC, as CloudEvents `Timestamp` requires).
pub fn format_time(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .expect("RFC 3339 formatting of a UTC instant cannot fail for years 0..=9999")
}

fn parse_time(name: &'static str, v: &str) -> Result<OffsetDateTime, HeaderError> {
    OffsetDateTime::parse(v, &Rfc3339).map_err(|e| HeaderError::Invalid {
        name,
        reason: format!("expected an RFC 3339 timestamp ({e})"),
    })
}

fn parse_int(name: &'static str, v: &str) -> Result<i64, HeaderError> {
    v.parse::<i64>().map_err(|_| HeaderError::Invalid {
        name,
        reason: format!("expected an integer, got `{v}`"),
    })
}

fn required<'h>(h: &'h Headers, name: &'static str, max: usize) -> Result<&'h str, HeaderError> {
    optional(h, name, max)?.ok_or(HeaderError::Missing(name))
}

fn optional<'h>(
    h: &'h Headers,
    name: &'static str,
    max: usize,
) -> Result<Option<&'h str>, HeaderError> {
    let mut found = None;
    for (n, value) in h.iter() {
        if n != name {
            continue;
        }
        if found.is_some() {
            return Err(HeaderError::Duplicate(name));
        }
        found = Some(value);
    }
    let Some(Some(bytes)) = found else {
        return Ok(None);
    };
    if bytes.len() > max {
        return Err(HeaderError::TooLong {
            name,
            len: bytes.len(),
            max,
        });
    }
    let s = std::str::from_utf8(bytes).map_err(|_| HeaderError::NotUtf8(name))?;
    if s.is_empty() {
        return Err(HeaderError::Empty(name));
    }
    if let Some((at, _)) = s.char_indices().find(|(_, c)| c.is_control()) {
        return Err(HeaderError::ForbiddenCharacter { name, at });
    }
    Ok(Some(s))
}

fn no_whitespace(name: &'static str, v: &str) -> Result<(), HeaderError> {
    match v.char_indices().find(|(_, c)| c.is_whitespace()) {
        Some((at, _)) => Err(HeaderError::ForbiddenCharacter { name, at }),
        None => Ok(()),
    }
}

/// `version-traceid-parentid-flags`, lowercase hex, per W3C Trace Context.
fn is_valid_traceparent(v: &str) -> bool {
    let parts: Vec<&str> = v.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn full_envelope() -> CommandEnvelope {
        let mut e = CommandEnvelope::new(
            "order-42-try",
            "/tenants/acme/crm",
            "customer.upsert.v1",
            ContentType::Avro,
        );
        e.subject = Some("cust-7".into());
        e.time = Some(datetime!(2026-11-27 10:00:00.123 UTC));
        e.data_schema = Some("urn:writ:schema:customer.upsert.v1".into());
        e.expected_version = Some(3);
        e.stale_after = Some(datetime!(2026-11-27 10:01:00 UTC));
        e.job_id = Some("job-1".into());
        e.job_line = Some(17);
        e.draft_id = Some("draft-9".into());
        e.temp_id = Some("tmp-5".into());
        e.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        e
    }

    fn minimal_headers() -> Headers {
        let mut h = Headers::new();
        h.push(SPECVERSION, "1.0");
        h.push(ID, "k-1");
        h.push(SOURCE, "/tenants/acme/crm");
        h.push(TYPE, "customer.upsert.v1");
        h.push(CONTENT_TYPE, "application/json");
        h
    }

    #[test]
    fn round_trips_every_attribute() {
        let e = full_envelope();
        assert_eq!(from_headers(&to_headers(&e)).unwrap(), e);
        let minimal = CommandEnvelope::new("a", "/s", "t.v1", ContentType::Json);
        assert_eq!(from_headers(&to_headers(&minimal)).unwrap(), minimal);
    }

    #[test]
    fn headers_are_plain_cloudevents_names() {
        let h = to_headers(&full_envelope());
        assert_eq!(h.get_str("ce_specversion"), Some("1.0"));
        assert_eq!(h.get_str("ce_id"), Some("order-42-try"));
        assert_eq!(h.get_str("content-type"), Some("application/avro"));
        assert_eq!(h.get_str("ce_time"), Some("2026-11-27T10:00:00.123Z"));
        assert_eq!(h.get_str("ce_expectedversion"), Some("3"));
    }

    #[test]
    fn a_refused_record_keeps_its_identity_when_id_and_source_are_sound() {
        let mut h = minimal_headers();
        h.set(CONTENT_TYPE, "text/csv");
        h.set(SPECVERSION, "0.3");
        assert!(from_headers(&h).is_err());
        let e = identity_from_headers(&h).expect("id and source are fine");
        assert_eq!(
            e.submission_id(),
            from_headers(&minimal_headers()).unwrap().submission_id()
        );
        h.remove_where(|n| n == TYPE);
        assert_eq!(identity_from_headers(&h).unwrap().command_type, "unknown");
        for broken in [ID, SOURCE] {
            let mut h = minimal_headers();
            h.set(broken, "a\nb");
            assert_eq!(identity_from_headers(&h), None, "{broken}");
            h.remove_where(|n| n == broken);
            assert_eq!(identity_from_headers(&h), None, "{broken} missing");
        }
        let mut twice = minimal_headers();
        twice.push(ID, "other");
        assert_eq!(identity_from_headers(&twice), None, "ambiguous id");
        let mut flood = minimal_headers();
        for i in 0..=MAX_HEADER_COUNT {
            flood.push(format!("x-{i}"), "v");
        }
        assert_eq!(identity_from_headers(&flood), None);
    }

    #[test]
    fn each_missing_required_header_is_named() {
        for name in [SPECVERSION, ID, SOURCE, TYPE, CONTENT_TYPE] {
            let mut h = minimal_headers();
            h.remove_where(|n| n == name);
            assert_eq!(from_headers(&h), Err(HeaderError::Missing(name)), "{name}");
        }
    }

    #[test]
    fn malformed_values_are_typed_errors() {
        let cases: Vec<(&str, Vec<u8>, HeaderError)> = vec![
            (
                SPECVERSION,
                b"0.3".to_vec(),
                HeaderError::UnsupportedSpecVersion("0.3".into()),
            ),
            (ID, vec![0xff, 0xfe], HeaderError::NotUtf8(ID)),
            (ID, b"".to_vec(), HeaderError::Empty(ID)),
            (
                ID,
                b"a\nb".to_vec(),
                HeaderError::ForbiddenCharacter { name: ID, at: 1 },
            ),
            (
                SOURCE,
                b"/a b".to_vec(),
                HeaderError::ForbiddenCharacter {
                    name: SOURCE,
                    at: 2,
                },
            ),
            (
                ID,
                vec![b'x'; 256],
                HeaderError::TooLong {
                    name: ID,
                    len: 256,
                    max: 255,
                },
            ),
            (
                CONTENT_TYPE,
                b"text/csv".to_vec(),
                HeaderError::UnsupportedContentType("text/csv".into()),
            ),
        ];
        for (name, value, expected) in cases {
            let mut h = minimal_headers();
            h.set(name, value);
            assert_eq!(from_headers(&h), Err(expected), "{name}");
        }
        let mut h = minimal_headers();
        h.push(EXPECTED_VERSION, "three");
        assert!(matches!(
            from_headers(&h),
            Err(HeaderError::Invalid {
                name: EXPECTED_VERSION,
                ..
            })
        ));
        let mut h = minimal_headers();
        h.push(STALE_AFTER, "tomorrow");
        assert!(matches!(
            from_headers(&h),
            Err(HeaderError::Invalid {
                name: STALE_AFTER,
                ..
            })
        ));
        let mut h = minimal_headers();
        h.push(ID, "k-2");
        assert_eq!(from_headers(&h), Err(HeaderError::Duplicate(ID)));
        let mut h = minimal_headers();
        h.push_null(SUBJECT);
        assert_eq!(from_headers(&h).unwrap().subject, None);
    }

    #[test]
    fn too_many_headers_is_refused_and_unknown_ones_ignored() {
        let mut h = minimal_headers();
        h.push("x-team", "billing");
        assert!(from_headers(&h).is_ok());
        for i in 0..MAX_HEADER_COUNT {
            h.push(format!("x-{i}"), "v");
        }
        assert!(matches!(
            from_headers(&h),
            Err(HeaderError::TooManyHeaders { .. })
        ));
    }

    #[test]
    fn a_broken_traceparent_is_dropped_not_fatal() {
        let mut h = minimal_headers();
        h.push(TRACEPARENT, "00-zz-00-01");
        assert_eq!(from_headers(&h).unwrap().traceparent, None);
    }

    #[test]
    fn arbitrary_header_bytes_never_panic() {
        // A cheap deterministic fuzz: every single-byte value in every attribute.
        for name in [
            SPECVERSION,
            ID,
            SOURCE,
            TYPE,
            CONTENT_TYPE,
            TIME,
            JOB_LINE,
            TRACEPARENT,
        ] {
            for b in 0u8..=255 {
                let mut h = minimal_headers();
                h.set(name, vec![b, b'1', b]);
                let _ = from_headers(&h);
            }
        }
    }
}
