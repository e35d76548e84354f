//! API-key authentication: `Authorization: Bearer <key>` mapped to a tenant.
//!
//! Keys are configured by their SHA-256 hash only (`writ auth hash-key` prints
//! one), so a leaked config file leaks no credential, and the plaintext key is
//! never stored or logged. A key grants one tenant, optionally one owner
//! (drafts and edge records are then private to it) and a set of command types.
//! The tenant becomes the CloudEvents `ce_source` (`/tenants/<tenant>`), which
//! is what scopes idempotency keys, submissions, jobs and drafts per tenant.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::problem::Problem;

/// Hex SHA-256 of an API key: the form keys take in configuration.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The `[auth]` configuration section shared by writ's HTTP services.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Tenant given to requests without an `Authorization` header. Unset (the
    /// default) means such requests get `401`; set it only for local development.
    #[serde(default)]
    pub anonymous_tenant: Option<String>,
    /// The accepted keys.
    #[serde(default)]
    pub keys: Vec<ApiKeyConfig>,
}

/// One accepted API key, by hash.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Hex SHA-256 of the key (`writ auth hash-key <key>`).
    pub sha256: String,
    /// The tenant this key acts for.
    pub tenant: String,
    /// The owner within the tenant; drafts and edge records are then private to it.
    #[serde(default)]
    pub owner: Option<String>,
    /// Command types this key may submit; empty or `["*"]` means all.
    #[serde(default)]
    pub types: Vec<String>,
}

/// Why an auth configuration was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// A configured hash is not 64 hex characters.
    #[error("auth.keys[{index}].sha256 must be 64 hex characters (the SHA-256 of the key; `writ auth hash-key` prints it)")]
    BadHash {
        /// Position of the key in the list.
        index: usize,
    },
    /// A tenant name cannot be used inside a `ce_source` URI.
    #[error("tenant {tenant:?} is not a valid tenant name: use 1-64 characters of a-z, A-Z, 0-9, '-', '_' or '.'")]
    BadTenant {
        /// The refused name.
        tenant: String,
    },
    /// Two entries carry the same hash.
    #[error("auth.keys[{index}] repeats a key hash configured earlier")]
    DuplicateKey {
        /// Position of the repeated key.
        index: usize,
    },
}

/// Who is calling: set by [`authenticate`] as a request extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The tenant.
    pub tenant: String,
    /// The owner within the tenant, when the key names one.
    pub owner: Option<String>,
    /// Allowed command types; `None` means all.
    types: Option<Arc<[String]>>,
}

impl Principal {
    /// A principal for `tenant` allowed every command type (tests, `writ dev`).
    pub fn tenant(tenant: impl Into<String>) -> Self {
        Self {
            tenant: tenant.into(),
            owner: None,
            types: None,
        }
    }

    /// Whether this principal may submit commands of `command_type`.
    pub fn may_use(&self, command_type: &str) -> bool {
        match &self.types {
            None => true,
            Some(types) => types.iter().any(|t| t == command_type),
        }
    }

    /// The CloudEvents `ce_source` for commands this principal submits.
    pub fn source(&self) -> String {
        format!("/tenants/{}", self.tenant)
    }

    /// Whether a record with CloudEvents source `source` belongs to this
    /// principal's tenant (`/tenants/<tenant>` or below it).
    pub fn owns_source(&self, source: &str) -> bool {
        let own = self.source();
        source == own
            || source
                .strip_prefix(own.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// The configured keys, indexed by hash.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    by_hash: HashMap<String, Principal>,
    anonymous: Option<Principal>,
}

fn valid_tenant(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl ApiKeys {
    /// Validates the configuration and indexes the keys.
    pub fn from_config(config: &AuthConfig) -> Result<Self, AuthError> {
        let mut by_hash = HashMap::new();
        for (index, key) in config.keys.iter().enumerate() {
            let hash = key.sha256.to_ascii_lowercase();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(AuthError::BadHash { index });
            }
            if !valid_tenant(&key.tenant) {
                return Err(AuthError::BadTenant {
                    tenant: key.tenant.clone(),
                });
            }
            let types = if key.types.is_empty() || key.types.iter().any(|t| t == "*") {
                None
            } else {
                Some(key.types.clone().into())
            };
            let principal = Principal {
                tenant: key.tenant.clone(),
                owner: key.owner.clone(),
                types,
            };
            if by_hash.insert(hash, principal).is_some() {
                return Err(AuthError::DuplicateKey { index });
            }
        }
        let anonymous = match &config.anonymous_tenant {
            Some(tenant) if !valid_tenant(tenant) => {
                return Err(AuthError::BadTenant {
                    tenant: tenant.clone(),
                })
            }
            Some(tenant) => Some(Principal::tenant(tenant.clone())),
            None => None,
        };
        Ok(Self { by_hash, anonymous })
    }

    /// The principal for an `Authorization` header value (or its absence).
    pub fn principal(&self, authorization: Option<&str>) -> Result<Principal, Problem> {
        let Some(value) = authorization else {
            return self.anonymous.clone().ok_or_else(|| {
                Problem::unauthorized("send an API key as `Authorization: Bearer <key>`")
            });
        };
        let key = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| Problem::unauthorized("the Authorization scheme must be Bearer"))?;
        self.by_hash
            .get(&hash_api_key(key))
            .cloned()
            .ok_or_else(|| Problem::unauthorized("unknown API key"))
    }
}

/// Middleware: resolves the caller's [`Principal`] and stores it as a request
/// extension, or answers `401`. Use with
/// `axum::middleware::from_fn_with_state(keys, authenticate)`.
pub async fn authenticate(
    State(keys): State<Arc<ApiKeys>>,
    mut request: Request,
    next: Next,
) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""));
    match keys.principal(authorization) {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(problem) => {
            // The key itself is never logged; the path helps spot misconfigured clients.
            tracing::info!(path = %request.uri().path(), "request refused: {problem}");
            problem.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request as HttpRequest, StatusCode};
    use axum::routing::get;
    use axum::{Extension, Router};
    use tower::ServiceExt;

    fn config() -> AuthConfig {
        AuthConfig {
            anonymous_tenant: None,
            keys: vec![
                ApiKeyConfig {
                    sha256: hash_api_key("acme-secret"),
                    tenant: "acme".into(),
                    owner: Some("alice".into()),
                    types: vec!["customer.upsert.v1".into()],
                },
                ApiKeyConfig {
                    sha256: hash_api_key("globex-secret").to_uppercase(),
                    tenant: "globex".into(),
                    owner: None,
                    types: vec!["*".into()],
                },
            ],
        }
    }

    #[test]
    fn keys_map_to_tenants_and_types() {
        let keys = ApiKeys::from_config(&config()).unwrap();
        let acme = keys.principal(Some("Bearer acme-secret")).unwrap();
        assert_eq!(acme.tenant, "acme");
        assert_eq!(acme.owner.as_deref(), Some("alice"));
        assert!(acme.may_use("customer.upsert.v1"));
        assert!(!acme.may_use("customer.delete.v1"));
        let globex = keys.principal(Some("Bearer globex-secret")).unwrap();
        assert!(globex.may_use("customer.delete.v1"));
        assert_eq!(globex.source(), "/tenants/globex");
    }

    #[test]
    fn missing_unknown_or_malformed_keys_are_unauthorized() {
        let keys = ApiKeys::from_config(&config()).unwrap();
        for header in [
            None,
            Some("Bearer nope"),
            Some("Basic abc"),
            Some("Bearer "),
        ] {
            let problem = keys.principal(header).unwrap_err();
            assert_eq!(problem.status, 401, "{header:?}");
            // The presented key never shows up in the answer.
            assert!(!problem.to_string().contains("nope"));
        }
    }

    #[test]
    fn an_anonymous_tenant_serves_requests_without_a_key() {
        let keys = ApiKeys::from_config(&AuthConfig {
            anonymous_tenant: Some("dev".into()),
            keys: vec![],
        })
        .unwrap();
        assert_eq!(keys.principal(None).unwrap().tenant, "dev");
    }

    #[test]
    fn bad_configuration_is_refused_with_the_reason() {
        let mut bad_hash = config();
        bad_hash.keys[1].sha256 = "abc".into();
        assert_eq!(
            ApiKeys::from_config(&bad_hash).unwrap_err(),
            AuthError::BadHash { index: 1 }
        );
        let mut bad_tenant = config();
        bad_tenant.keys[0].tenant = "acme/evil".into();
        assert!(matches!(
            ApiKeys::from_config(&bad_tenant),
            Err(AuthError::BadTenant { .. })
        ));
        let mut duplicate = config();
        duplicate.keys[1].sha256 = duplicate.keys[0].sha256.clone();
        assert_eq!(
            ApiKeys::from_config(&duplicate).unwrap_err(),
            AuthError::DuplicateKey { index: 1 }
        );
    }

    #[test]
    fn sources_are_owned_by_their_tenant_only() {
        let acme = Principal::tenant("acme");
        assert!(acme.owns_source("/tenants/acme"));
        assert!(acme.owns_source("/tenants/acme/edge"));
        assert!(!acme.owns_source("/tenants/acme-evil"));
        assert!(!acme.owns_source("/tenants/globex"));
    }

    #[tokio::test]
    async fn the_middleware_sets_the_principal_or_answers_401() {
        let keys = Arc::new(ApiKeys::from_config(&config()).unwrap());
        let app = Router::new()
            .route(
                "/whoami",
                get(|Extension(p): Extension<Principal>| async move { p.tenant }),
            )
            .layer(axum::middleware::from_fn_with_state(keys, authenticate));
        let ok = app
            .clone()
            .oneshot(
                HttpRequest::get("/whoami")
                    .header("authorization", "Bearer acme-secret")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        let denied = app
            .oneshot(HttpRequest::get("/whoami").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            denied.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }
}
