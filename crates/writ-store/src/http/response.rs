//! Turning an HTTP response into an outcome or a retryable error: the status
//! code mapping, `Retry-After` parsing, and safe extraction of ids, versions
//! and (truncated) error messages from response bodies. Pure: no I/O.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;

use crate::{MasterError, Outcome};

/// Longest error message taken from a response body, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 512;

/// What a status code means for the command that got it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// 2xx: applied.
    Applied,
    /// 409/412: version or state conflict.
    Conflict,
    /// A permanent refusal, with its code (`HTTP_422`).
    Rejected(String),
    /// 429, or 503 with `Retry-After`: slow down.
    Throttled,
    /// 408, other 5xx: transient.
    Unavailable,
}

/// Maps a status code (and whether `Retry-After` was present) to its class.
pub fn classify(status: StatusCode, has_retry_after: bool) -> Class {
    match status.as_u16() {
        200..=299 => Class::Applied,
        409 | 412 => Class::Conflict,
        429 => Class::Throttled,
        503 if has_retry_after => Class::Throttled,
        // 408: the server gave up waiting for us; nothing was decided.
        408 | 500..=599 => Class::Unavailable,
        s => Class::Rejected(format!("HTTP_{s}")),
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date (relative to `now`; a past date is zero).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v.parse::<u64>().ok().map(Duration::from_secs);
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The retryable error for a throttling or unavailable response.
pub fn retryable_error(
    class: &Class,
    status: StatusCode,
    retry_after: Option<Duration>,
) -> MasterError {
    let message = format!("HTTP {status}");
    match class {
        Class::Throttled => MasterError::Throttled {
            message,
            retry_after,
        },
        _ => MasterError::Unavailable {
            message,
            retry_after,
        },
    }
}

/// The outcome of a response whose class is final (applied, conflict, rejected).
///
/// `entity_key` is the fallback canonical id when the pointer finds nothing.
pub fn outcome(
    class: &Class,
    body: &[u8],
    canonical_id_pointer: Option<&str>,
    version_pointer: Option<&str>,
    entity_key: Option<&str>,
) -> Option<Outcome> {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let version = || {
        json.as_ref()
            .zip(version_pointer)
            .and_then(|(j, p)| j.pointer(p))
            .and_then(as_version)
    };
    Some(match class {
        Class::Applied => Outcome::Applied {
            canonical_id: json
                .as_ref()
                .zip(canonical_id_pointer)
                .and_then(|(j, p)| j.pointer(p))
                .and_then(as_id)
                .or_else(|| entity_key.map(str::to_owned)),
            version: version(),
        },
        Class::Conflict => Outcome::Conflict {
            message: message(body, json.as_ref()),
            current_version: version(),
        },
        Class::Rejected(code) => Outcome::Rejected {
            code: code.clone(),
            message: message(body, json.as_ref()),
        },
        Class::Throttled | Class::Unavailable => return None,
    })
}

fn as_id(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn as_version(v: &serde_json::Value) -> Option<i64> {
    match v {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.trim().trim_matches('"').parse().ok(),
        _ => None,
    }
}

/// A readable message from an error body: a problem+json `detail`/`title`, a
/// `message`/`error` field, or the raw text; truncated to [`MAX_MESSAGE_BYTES`].
pub fn message(body: &[u8], json: Option<&serde_json::Value>) -> String {
    let from_json = json.and_then(|j| {
        ["detail", "message", "error", "title"]
            .iter()
            .find_map(|k| j.get(k).and_then(|v| v.as_str()).map(str::to_owned))
    });
    let text = from_json.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    truncate(text, MAX_MESSAGE_BYTES)
}

/// Cuts `s` to at most `max` bytes on a char boundary, marking the cut with `…`.
pub fn truncate(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut cut = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(code: u16) -> StatusCode {
        StatusCode::from_u16(code).unwrap()
    }

    #[test]
    fn status_codes_map_to_classes() {
        assert_eq!(classify(st(200), false), Class::Applied);
        assert_eq!(classify(st(204), false), Class::Applied);
        assert_eq!(classify(st(409), false), Class::Conflict);
        assert_eq!(classify(st(412), true), Class::Conflict);
        assert_eq!(classify(st(400), false), Class::Rejected("HTTP_400".into()));
        assert_eq!(classify(st(422), false), Class::Rejected("HTTP_422".into()));
        assert_eq!(classify(st(404), false), Class::Rejected("HTTP_404".into()));
        assert_eq!(classify(st(429), false), Class::Throttled);
        assert_eq!(classify(st(503), true), Class::Throttled);
        assert_eq!(classify(st(503), false), Class::Unavailable);
        assert_eq!(classify(st(500), true), Class::Unavailable);
        assert_eq!(classify(st(502), false), Class::Unavailable);
        assert_eq!(classify(st(408), false), Class::Unavailable);
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }

    #[test]
    fn outcomes_read_pointers_with_fallbacks() {
        let body = br#"{"id": 42, "version": "7"}"#;
        assert_eq!(
            outcome(
                &Class::Applied,
                body,
                Some("/id"),
                Some("/version"),
                Some("k")
            ),
            Some(Outcome::Applied {
                canonical_id: Some("42".into()),
                version: Some(7)
            })
        );
        assert_eq!(
            outcome(
                &Class::Applied,
                b"",
                Some("/id"),
                Some("/version"),
                Some("k")
            ),
            Some(Outcome::Applied {
                canonical_id: Some("k".into()),
                version: None
            })
        );
        assert_eq!(
            outcome(
                &Class::Conflict,
                br#"{"detail": "stale", "version": 3}"#,
                None,
                Some("/version"),
                None
            ),
            Some(Outcome::Conflict {
                message: "stale".into(),
                current_version: Some(3)
            })
        );
        assert_eq!(
            outcome(
                &Class::Rejected("HTTP_422".into()),
                b"bad email",
                None,
                None,
                None
            ),
            Some(Outcome::Rejected {
                code: "HTTP_422".into(),
                message: "bad email".into()
            })
        );
        assert_eq!(outcome(&Class::Throttled, b"", None, None, None), None);
    }

    #[test]
    fn messages_are_truncated_on_char_boundaries() {
        let long = "é".repeat(600);
        let m = message(long.as_bytes(), None);
        assert!(m.len() <= MAX_MESSAGE_BYTES, "{}", m.len());
        assert!(m.ends_with('…'));
        assert_eq!(truncate("short".into(), 512), "short");
    }
}
