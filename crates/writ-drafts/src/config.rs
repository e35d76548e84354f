//! The `[drafts]` configuration section, embedded by the host's configuration
//! (the ingress), so drafts are configured in the same file and by the same
//! `WRIT__DRAFTS__*` environment variables as the rest of the service.

use std::time::Duration;

use serde::Deserialize;

/// Default time a draft lives after its last change: 30 days.
pub const DEFAULT_TTL_MS: u64 = 30 * 24 * 3600 * 1000;

/// Default time between two purge runs: 10 minutes.
pub const DEFAULT_PURGE_INTERVAL_MS: u64 = 10 * 60 * 1000;

/// Default largest `PUT` body: 1 MiB, like the ingress' command bodies.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// Settings of the drafts store and its purge.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DraftsConfig {
    /// Where drafts live: `sqlite:<path>` (the default, next to the service) or
    /// `postgres://...` (shared by several replicas).
    pub store_url: String,
    /// Connections to the store.
    pub pool_size: u32,
    /// How long to wait for a store connection before answering `503`, ms.
    pub acquire_timeout_ms: u64,
    /// A draft not changed for this long is purged, ms.
    pub ttl_ms: u64,
    /// Time between two purge runs, ms.
    pub purge_interval_ms: u64,
    /// Largest accepted `PUT /v1/drafts/{id}` body, bytes.
    pub max_body_bytes: usize,
}

impl Default for DraftsConfig {
    fn default() -> Self {
        Self {
            store_url: "sqlite:writ-drafts.db".to_owned(),
            pool_size: 5,
            acquire_timeout_ms: 5_000,
            ttl_ms: DEFAULT_TTL_MS,
            purge_interval_ms: DEFAULT_PURGE_INTERVAL_MS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// A `[drafts]` section that cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DraftsConfigError {
    /// The store URL names no supported backend.
    #[error("drafts.store_url must start with sqlite: or postgres:// (got {0:?})")]
    StoreUrl(String),
    /// A setting that must be positive is zero.
    #[error("drafts.{0} must be positive")]
    Zero(&'static str),
    /// Purging less often than drafts expire would keep them far past their TTL.
    #[error("drafts.purge_interval_ms ({interval}) must not exceed drafts.ttl_ms ({ttl})")]
    IntervalOverTtl {
        /// The configured interval.
        interval: u64,
        /// The configured TTL.
        ttl: u64,
    },
}

impl DraftsConfig {
    /// Checks the section; the host calls this at start-up and for `--check`.
    pub fn validate(&self) -> Result<(), DraftsConfigError> {
        let url = self.store_url.as_str();
        let known = url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://");
        if !known {
            return Err(DraftsConfigError::StoreUrl(redact_url(url)));
        }
        for (name, value) in [
            ("pool_size", u64::from(self.pool_size)),
            ("acquire_timeout_ms", self.acquire_timeout_ms),
            ("ttl_ms", self.ttl_ms),
            ("purge_interval_ms", self.purge_interval_ms),
            ("max_body_bytes", self.max_body_bytes as u64),
        ] {
            if value == 0 {
                return Err(DraftsConfigError::Zero(name));
            }
        }
        if self.purge_interval_ms > self.ttl_ms {
            return Err(DraftsConfigError::IntervalOverTtl {
                interval: self.purge_interval_ms,
                ttl: self.ttl_ms,
            });
        }
        Ok(())
    }

    /// The store's connection wait as a duration.
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.acquire_timeout_ms)
    }

    /// The TTL as a duration.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }

    /// The purge interval as a duration.
    pub fn purge_interval(&self) -> Duration {
        Duration::from_millis(self.purge_interval_ms)
    }
}

/// `url` with any password replaced, so an error message never carries a credential.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_owned()
            };
            format!("{}{masked}{}", &url[..scheme_end], &url[scheme_end + at..])
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::{Format, Toml};
    use figment::Figment;

    fn parse(toml: &str) -> Result<DraftsConfig, Box<figment::Error>> {
        Ok(Figment::new().merge(Toml::string(toml)).extract()?)
    }

    #[test]
    fn defaults_are_sqlite_and_thirty_days() {
        let c = parse("").unwrap();
        assert_eq!(c, DraftsConfig::default());
        assert!(c.store_url.starts_with("sqlite:"));
        assert_eq!(c.ttl(), Duration::from_secs(30 * 24 * 3600));
        c.validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = parse("ttl_days = 3").unwrap_err();
        assert!(err.to_string().contains("ttl_days"), "{err}");
    }

    #[test]
    fn bad_values_are_refused_with_the_reason() {
        let mut c = parse("store_url = \"mysql://u:secret@h/db\"").unwrap();
        let err = c.validate().unwrap_err();
        assert!(matches!(err, DraftsConfigError::StoreUrl(_)));
        assert!(!err.to_string().contains("secret"), "{err}");
        c.store_url = "postgres://h/db".into();
        c.validate().unwrap();
        c.ttl_ms = 0;
        assert_eq!(c.validate(), Err(DraftsConfigError::Zero("ttl_ms")));
        c.ttl_ms = 1000;
        c.purge_interval_ms = 2000;
        assert!(matches!(
            c.validate(),
            Err(DraftsConfigError::IntervalOverTtl { .. })
        ));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://writ:pw@db:5432/x"),
            "postgres://writ:***@db:5432/x"
        );
        assert_eq!(redact_url("postgres://db/x"), "postgres://db/x");
        assert_eq!(redact_url("sqlite:drafts.db"), "sqlite:drafts.db");
    }
}
