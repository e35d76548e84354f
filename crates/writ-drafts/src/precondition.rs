//! Entity tags and conditional requests (RFC 9110 §8.8.3, §13) for drafts:
//! what makes two browser tabs editing one draft safe.
//!
//! A draft's tag is strong and names its incarnation and version
//! (`"<incarnation>-<version>"`), so a tag taken from a deleted draft never
//! matches the draft re-created under the same id.

use axum::http::{header, HeaderMap};

use crate::store::Revision;

/// The strong entity tag of a draft revision, quotes included.
pub fn etag(revision: &Revision) -> String {
    format!("\"{}-{}\"", revision.incarnation, revision.version)
}

/// A parsed `If-Match` / `If-None-Match` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagList {
    /// `*`: any current representation.
    Any,
    /// Listed tags; `weak` ones never match under strong comparison.
    Tags(Vec<Tag>),
}

/// One entity tag from a request header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    /// Whether it carried the `W/` prefix.
    pub weak: bool,
    /// The tag with its quotes.
    pub opaque: String,
}

/// A header that is not a valid entity-tag list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{header} is not `*` or a list of quoted entity tags")]
pub struct BadTagList {
    /// The header's name.
    pub header: &'static str,
}

impl TagList {
    /// Parses a header value: `*`, or `"a", W/"b"`.
    pub fn parse(value: &str, header: &'static str) -> Result<Self, BadTagList> {
        let bad = BadTagList { header };
        let value = value.trim();
        if value == "*" {
            return Ok(Self::Any);
        }
        let mut tags = Vec::new();
        let mut rest = value;
        loop {
            rest = rest.trim_start();
            let (weak, after) = match rest.strip_prefix("W/") {
                Some(r) => (true, r),
                None => (false, rest),
            };
            let body = after.strip_prefix('"').ok_or_else(|| bad.clone())?;
            let end = body.find('"').ok_or_else(|| bad.clone())?;
            let inner = &body[..end];
            // etagc: visible ASCII except the quote, or obs-text.
            if !inner
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
            {
                return Err(bad);
            }
            tags.push(Tag {
                weak,
                opaque: format!("\"{inner}\""),
            });
            rest = body[end + 1..].trim_start();
            if rest.is_empty() {
                break;
            }
            rest = rest.strip_prefix(',').ok_or_else(|| bad.clone())?;
        }
        Ok(Self::Tags(tags))
    }

    /// Strong comparison (`If-Match`): does the current tag match?
    pub fn matches_strong(&self, current: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Tags(tags) => tags.iter().any(|t| !t.weak && t.opaque == current),
        }
    }

    /// Weak comparison (`If-None-Match`): does the current tag match?
    pub fn matches_weak(&self, current: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Tags(tags) => tags.iter().any(|t| t.opaque == current),
        }
    }
}

/// The conditional headers of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preconditions {
    /// `If-Match`.
    pub if_match: Option<TagList>,
    /// `If-None-Match`.
    pub if_none_match: Option<TagList>,
}

impl Preconditions {
    /// Reads `If-Match` and `If-None-Match`; several header lines are one list.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, BadTagList> {
        Ok(Self {
            if_match: list(headers, header::IF_MATCH, "If-Match")?,
            if_none_match: list(headers, header::IF_NONE_MATCH, "If-None-Match")?,
        })
    }
}

fn list(
    headers: &HeaderMap,
    name: header::HeaderName,
    label: &'static str,
) -> Result<Option<TagList>, BadTagList> {
    let mut values = Vec::new();
    for v in headers.get_all(&name) {
        values.push(v.to_str().map_err(|_| BadTagList { header: label })?);
    }
    if values.is_empty() {
        return Ok(None);
    }
    let joined = values.join(", ");
    TagList::parse(&joined, label).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(v: i64) -> Revision {
        Revision {
            incarnation: "a1b2".into(),
            version: v,
        }
    }

    #[test]
    fn tags_name_incarnation_and_version() {
        assert_eq!(etag(&rev(3)), "\"a1b2-3\"");
    }

    #[test]
    fn lists_parse_and_compare() {
        let current = etag(&rev(3));
        let l = TagList::parse(r#""x-1", W/"a1b2-3""#, "If-Match").unwrap();
        assert!(
            !l.matches_strong(&current),
            "weak tags never match strongly"
        );
        assert!(l.matches_weak(&current));
        let l = TagList::parse(r#" "x-1" ,"a1b2-3" "#, "If-Match").unwrap();
        assert!(l.matches_strong(&current));
        assert!(!TagList::parse(r#""a1b2-2""#, "If-Match")
            .unwrap()
            .matches_strong(&current));
        assert!(TagList::parse("*", "If-Match")
            .unwrap()
            .matches_strong(&current));
    }

    #[test]
    fn malformed_lists_are_refused() {
        for bad in ["a1b2-3", "\"open", "\"a\" \"b\"", "\"a\",", "\"a b\"", ""] {
            assert!(TagList::parse(bad, "If-Match").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn repeated_header_lines_form_one_list() {
        let mut h = HeaderMap::new();
        h.append(header::IF_MATCH, "\"x-1\"".parse().unwrap());
        h.append(header::IF_MATCH, "\"a1b2-3\"".parse().unwrap());
        let p = Preconditions::from_headers(&h).unwrap();
        assert!(p.if_match.unwrap().matches_strong(&etag(&rev(3))));
        assert_eq!(p.if_none_match, None);
    }
}
