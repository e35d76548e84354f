//! What operators write under `[master]` for an HTTP master, and its
//! compilation into checked mappings (templates parsed, methods and JSON
//! pointers validated, `${VAR}` header values resolved from the environment).

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Method;
use serde::Deserialize;

use super::template::Template;

/// `[master]` with `kind = "http"`: the API, the inbox store and one mapping per command type.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpMasterConfig {
    /// The API's base URL; type paths are appended to it (`https://crm.example.com/api`).
    pub base_url: String,
    /// Per-request timeout in milliseconds (default 10000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Static request headers; `${VAR}` inside a value is replaced from the environment.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// writ's own inbox store: `postgres://...` or `sqlite://writ-inbox.db?mode=rwc`.
    pub inbox_url: String,
    /// An IN_PROGRESS claim older than this may be taken over (default 300000); must exceed `timeout_ms`.
    #[serde(default = "default_expiry_ms")]
    pub in_progress_expiry_ms: u64,
    /// How many commands (of different entities) may be in flight at once (default 8).
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// One request template per command type (`[master.types."customer.upsert.v1"]`).
    #[serde(default)]
    pub types: BTreeMap<String, HttpTypeMapping>,
}

/// How one command type becomes one HTTP request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTypeMapping {
    /// The HTTP method (`PUT`, `POST`, `PATCH`, `DELETE`, ...).
    pub method: String,
    /// Path template: `{field}` / `{a.b}` from the payload, `{ce.subject}`, `{ce.id}`; values are URL-encoded.
    pub path: String,
    /// JSON pointer to the canonical id in the response body (default: the entity key).
    #[serde(default)]
    pub canonical_id_pointer: Option<String>,
    /// JSON pointer to the entity's version in the response body.
    #[serde(default)]
    pub version_pointer: Option<String>,
    /// What is sent as the request body (default `payload`).
    #[serde(default)]
    pub body: BodyMode,
}

/// The request body of a mapped command.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyMode {
    /// The decoded payload as JSON.
    #[default]
    Payload,
    /// No body (e.g. DELETE).
    None,
}

fn default_timeout_ms() -> u64 {
    10_000
}
fn default_expiry_ms() -> u64 {
    300_000
}
fn default_max_concurrency() -> usize {
    8
}

impl std::fmt::Debug for HttpMasterConfig {
    // Header values may hold secrets and the inbox URL a password: never print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpMasterConfig")
            .field("base_url", &self.base_url)
            .field("timeout_ms", &self.timeout_ms)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("inbox_url", &redact_url(&self.inbox_url))
            .field("in_progress_expiry_ms", &self.in_progress_expiry_ms)
            .field("max_concurrency", &self.max_concurrency)
            .field("types", &self.types)
            .finish()
    }
}

/// A compiled type mapping.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// The method.
    pub method: Method,
    /// The parsed path template.
    pub path: Template,
    /// Pointer to the canonical id.
    pub canonical_id_pointer: Option<String>,
    /// Pointer to the version.
    pub version_pointer: Option<String>,
    /// The body mode.
    pub body: BodyMode,
}

/// The checked, ready-to-use configuration.
#[derive(Debug)]
pub struct Compiled {
    /// The base URL without a trailing slash.
    pub base_url: String,
    /// Request timeout.
    pub timeout: Duration,
    /// Static headers, marked sensitive.
    pub headers: HeaderMap,
    /// Claim expiry.
    pub expiry: Duration,
    /// Concurrency limit (at least 1).
    pub max_concurrency: usize,
    /// Mappings by command type.
    pub mappings: BTreeMap<String, Mapping>,
}

/// Validates `config`, reading `${VAR}` header values through `env`; errors name the offending key.
pub fn compile(
    config: &HttpMasterConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Compiled, String> {
    let base_url = config.base_url.trim_end_matches('/').to_owned();
    let parsed = reqwest::Url::parse(&base_url).map_err(|e| format!("master.base_url: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("master.base_url: scheme must be http or https".into());
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("master.base_url: must not have a query or fragment".into());
    }
    if config.timeout_ms == 0 {
        return Err("master.timeout_ms: must be positive".into());
    }
    // A claim must outlive the request it guards, or a slow request could be
    // taken over (and sent twice) while still in flight.
    if config.in_progress_expiry_ms <= config.timeout_ms {
        return Err(format!(
            "master.in_progress_expiry_ms ({}) must exceed master.timeout_ms ({})",
            config.in_progress_expiry_ms, config.timeout_ms
        ));
    }
    if config.max_concurrency == 0 {
        return Err("master.max_concurrency: must be at least 1".into());
    }
    let mut headers = HeaderMap::new();
    for (name, value) in &config.headers {
        let key = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("master.headers: invalid header name {name:?}"))?;
        let value = expand_env(value, &env).map_err(|e| format!("master.headers.{name}: {e}"))?;
        let mut value = HeaderValue::from_str(&value)
            .map_err(|_| format!("master.headers.{name}: invalid header value"))?;
        value.set_sensitive(true);
        headers.insert(key, value);
    }
    let mut mappings = BTreeMap::new();
    for (ty, m) in &config.types {
        let at = |what: &str| format!("master.types.\"{ty}\".{what}");
        let method = Method::from_bytes(m.method.trim().to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("{}: invalid method {:?}", at("method"), m.method))?;
        let path = Template::parse(&m.path).map_err(|e| format!("{}: {e}", at("path")))?;
        for (name, p) in [
            ("canonical_id_pointer", &m.canonical_id_pointer),
            ("version_pointer", &m.version_pointer),
        ] {
            if let Some(p) = p {
                if !p.is_empty() && !p.starts_with('/') {
                    return Err(format!("{}: a JSON pointer starts with '/'", at(name)));
                }
            }
        }
        mappings.insert(
            ty.clone(),
            Mapping {
                method,
                path,
                canonical_id_pointer: m.canonical_id_pointer.clone(),
                version_pointer: m.version_pointer.clone(),
                body: m.body,
            },
        );
    }
    Ok(Compiled {
        base_url,
        timeout: Duration::from_millis(config.timeout_ms),
        headers,
        expiry: Duration::from_millis(config.in_progress_expiry_ms),
        max_concurrency: config.max_concurrency,
        mappings,
    })
}

/// Replaces every `${VAR}` in `value` with the variable's value; errors name the variable, never a value.
pub fn expand_env(value: &str, env: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unterminated ${ in value".to_owned())?;
        let var = &after[..end];
        if var.is_empty() {
            return Err("empty ${} in value".into());
        }
        let v = env(var).ok_or_else(|| format!("environment variable {var} is not set"))?;
        out.push_str(&v);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `url` with any password replaced by `***`, for logs.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..]
        .find(['/', '?'])
        .map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!(
                "{}{user}:***@{}",
                &url[..scheme_end],
                &url[scheme_end + at + 1..]
            )
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "CRM_TOKEN").then(|| "s3cret".to_owned())
    }

    fn base() -> HttpMasterConfig {
        serde_json::from_value(serde_json::json!({
            "base_url": "https://crm.example.com/api/",
            "headers": {"Authorization": "Bearer ${CRM_TOKEN}"},
            "inbox_url": "postgres://writ:pw@db/inbox",
            "types": {"customer.upsert.v1": {
                "method": "put", "path": "/customers/{customer_id}",
                "canonical_id_pointer": "/id", "version_pointer": "/version"
            }}
        }))
        .unwrap()
    }

    #[test]
    fn compiles_with_defaults_and_env_headers() {
        let c = compile(&base(), env).unwrap();
        assert_eq!(c.base_url, "https://crm.example.com/api");
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert_eq!(c.expiry, Duration::from_secs(300));
        assert_eq!(c.max_concurrency, 8);
        let auth = &c.headers["authorization"];
        assert_eq!(auth.to_str().unwrap(), "Bearer s3cret");
        assert!(auth.is_sensitive());
        let m = &c.mappings["customer.upsert.v1"];
        assert_eq!(m.method, Method::PUT);
        assert_eq!(m.body, BodyMode::Payload);
    }

    #[test]
    fn rejects_bad_configs_naming_the_key() {
        let err = |f: &dyn Fn(&mut HttpMasterConfig)| {
            let mut c = base();
            f(&mut c);
            compile(&c, env).unwrap_err()
        };
        assert!(err(&|c| c.base_url = "ftp://x".into()).contains("base_url"));
        assert!(err(&|c| c.in_progress_expiry_ms = 5_000).contains("in_progress_expiry_ms"));
        assert!(err(&|c| c.max_concurrency = 0).contains("max_concurrency"));
        let e = err(&|c| {
            c.headers.insert("X-Key".into(), "${MISSING}".into());
        });
        assert!(e.contains("MISSING") && e.contains("X-Key"), "{e}");
        let e = err(&|c| {
            c.types.get_mut("customer.upsert.v1").unwrap().path = "/c/{ce.nope}".into();
        });
        assert!(
            e.contains("customer.upsert.v1") && e.contains("path"),
            "{e}"
        );
        let e = err(&|c| {
            c.types
                .get_mut("customer.upsert.v1")
                .unwrap()
                .version_pointer = Some("v".into());
        });
        assert!(e.contains("version_pointer"), "{e}");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let r: Result<HttpMasterConfig, _> = serde_json::from_value(serde_json::json!({
            "base_url": "http://x", "inbox_url": "sqlite::memory:", "timeout": 5
        }));
        assert!(r.unwrap_err().to_string().contains("timeout"));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let s = format!("{:?}", base());
        assert!(!s.contains("CRM_TOKEN") && !s.contains("pw@"), "{s}");
        assert!(
            s.contains("Authorization") && s.contains("writ:***@db/inbox"),
            "{s}"
        );
    }

    #[test]
    fn env_expansion() {
        assert_eq!(expand_env("a${CRM_TOKEN}b", env).unwrap(), "as3cretb");
        assert_eq!(expand_env("plain", env).unwrap(), "plain");
        assert!(expand_env("${CRM_TOKEN", env).is_err());
        assert!(expand_env("${}", env).is_err());
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact_url("postgres://u:p@h/db"), "postgres://u:***@h/db");
        assert_eq!(
            redact_url("sqlite://x.db?mode=rwc"),
            "sqlite://x.db?mode=rwc"
        );
    }
}
