//! Request path templates (`/customers/{customer_id}`): parsed once at start-up,
//! rendered per command with every substituted value percent-encoded, so an
//! entity key can never change the shape of the URL.

use crate::Command;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Copied as written.
    Literal(String),
    /// A payload field, by dot path (`address.city` → `["address", "city"]`).
    Field(Vec<String>),
    /// `{ce.subject}`: the entity key.
    Subject,
    /// `{ce.id}`: the producer's id.
    Id,
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// Why a template cannot be rendered for a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The payload lacks the field, or it is null.
    #[error("the path needs `{0}`, which is missing or null")]
    Missing(String),
    /// The field is an object or an array.
    #[error("the path needs `{0}` to be a string, number or boolean")]
    NotScalar(String),
    /// The value is `.` or `..` (or empty), which would change the path.
    #[error("the value of `{0}` is not usable in a URL path")]
    Unsafe(String),
}

impl Template {
    /// Parses `{name}` placeholders; `{{` and `}}` are literal braces.
    pub fn parse(s: &str) -> Result<Self, String> {
        if !s.starts_with('/') {
            return Err("must start with '/'".into());
        }
        if s.contains(['?', '#']) {
            return Err("must not contain '?' or '#'".into());
        }
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '}' => return Err("unmatched '}'".into()),
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some('{') | None => return Err("unterminated '{'".into()),
                            Some(c) => name.push(c),
                        }
                    }
                    let name = name.trim();
                    let part = match name {
                        "ce.subject" => Part::Subject,
                        "ce.id" => Part::Id,
                        n if n.starts_with("ce.") => {
                            return Err(format!(
                                "unknown attribute {{{n}}}: use ce.subject or ce.id"
                            ))
                        }
                        n => {
                            let path: Vec<String> = n.split('.').map(str::to_owned).collect();
                            if path.iter().any(|p| p.is_empty()) {
                                return Err(format!("invalid field name {{{n}}}"));
                            }
                            Part::Field(path)
                        }
                    };
                    if !lit.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut lit)));
                    }
                    parts.push(part);
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Literal(lit));
        }
        Ok(Self { parts })
    }

    /// Renders the path for a command.
    pub fn render(&self, command: &Command) -> Result<String, RenderError> {
        self.render_with(|part| match part {
            Part::Subject => command
                .envelope
                .subject
                .clone()
                .ok_or_else(|| RenderError::Missing("ce.subject".into())),
            Part::Id => Ok(command.envelope.id.clone()),
            Part::Field(path) => field(&command.payload, path),
            Part::Literal(_) => unreachable!("literals are not looked up"),
        })
    }

    /// Renders the path for a read: the first placeholder takes `entity_key`, the others must not exist.
    pub fn render_for_key(&self, entity_key: &str) -> Result<String, RenderError> {
        let mut first = true;
        self.render_with(|part| {
            if std::mem::take(&mut first) {
                Ok(entity_key.to_owned())
            } else {
                Err(RenderError::Missing(part_name(part)))
            }
        })
    }

    fn render_with(
        &self,
        mut value: impl FnMut(&Part) -> Result<String, RenderError>,
    ) -> Result<String, RenderError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                p => {
                    let v = value(p)?;
                    if v.is_empty() || v == "." || v == ".." {
                        return Err(RenderError::Unsafe(part_name(p)));
                    }
                    encode_into(&v, &mut out);
                }
            }
        }
        Ok(out)
    }
}

fn part_name(part: &Part) -> String {
    match part {
        Part::Literal(l) => l.clone(),
        Part::Field(p) => p.join("."),
        Part::Subject => "ce.subject".into(),
        Part::Id => "ce.id".into(),
    }
}

fn field(payload: &serde_json::Value, path: &[String]) -> Result<String, RenderError> {
    let name = || path.join(".");
    let mut v = payload;
    for key in path {
        v = v.get(key).ok_or_else(|| RenderError::Missing(name()))?;
    }
    match v {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        serde_json::Value::Bool(b) => Ok(b.to_string()),
        serde_json::Value::Null => Err(RenderError::Missing(name())),
        _ => Err(RenderError::NotScalar(name())),
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (so `/`, `?`, `%`, space are all encoded).
fn encode_into(value: &str, out: &mut String) {
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use writ_core::{CommandEnvelope, ContentType};

    fn cmd(payload: serde_json::Value) -> Command {
        let envelope =
            CommandEnvelope::new("id 1", "/t/a", "x.v1", ContentType::Json).with_subject("a/b c");
        Command {
            submission_id: envelope.submission_id(),
            envelope,
            payload,
            fingerprint: String::new(),
        }
    }

    #[test]
    fn parses_and_renders_fields_and_attributes() {
        let t =
            Template::parse("/c/{customer_id}/addr/{address.city}/{ce.subject}/{ce.id}").unwrap();
        let c = cmd(serde_json::json!({"customer_id": 7, "address": {"city": "Köln"}}));
        assert_eq!(
            t.render(&c).unwrap(),
            "/c/7/addr/K%C3%B6ln/a%2Fb%20c/id%201"
        );
    }

    #[test]
    fn values_are_encoded_so_they_stay_one_segment() {
        let t = Template::parse("/customers/{id}").unwrap();
        let c = cmd(serde_json::json!({"id": "x/../y?z=1#f%"}));
        assert_eq!(
            t.render(&c).unwrap(),
            "/customers/x%2F..%2Fy%3Fz%3D1%23f%25"
        );
        for bad in [".", "..", ""] {
            let c = cmd(serde_json::json!({ "id": bad }));
            assert_eq!(t.render(&c), Err(RenderError::Unsafe("id".into())));
        }
    }

    #[test]
    fn missing_and_non_scalar_fields_are_errors() {
        let t = Template::parse("/c/{a.b}").unwrap();
        assert_eq!(
            t.render(&cmd(serde_json::json!({}))),
            Err(RenderError::Missing("a.b".into()))
        );
        assert_eq!(
            t.render(&cmd(serde_json::json!({"a": {"b": null}}))),
            Err(RenderError::Missing("a.b".into()))
        );
        assert_eq!(
            t.render(&cmd(serde_json::json!({"a": {"b": [1]}}))),
            Err(RenderError::NotScalar("a.b".into()))
        );
    }

    #[test]
    fn parse_errors_and_escapes() {
        for bad in [
            "c/{x}",
            "/c/{x",
            "/c/x}",
            "/c/{}",
            "/c/{a..b}",
            "/c/{ce.type}",
            "/c?x=1",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
        let t = Template::parse("/c/{{lit}}").unwrap();
        assert_eq!(t.render(&cmd(serde_json::json!({}))).unwrap(), "/c/{lit}");
    }

    #[test]
    fn read_uses_the_first_placeholder_for_the_key() {
        let t = Template::parse("/customers/{customer_id}").unwrap();
        assert_eq!(t.render_for_key("a b/c").unwrap(), "/customers/a%20b%2Fc");
        let t = Template::parse("/t/{tenant}/c/{id}").unwrap();
        assert_eq!(
            t.render_for_key("k"),
            Err(RenderError::Missing("id".into()))
        );
    }
}
