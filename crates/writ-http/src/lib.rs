//! Shared HTTP plumbing for writ's services (ingress, drafts, edge):
//! RFC 9457 problem responses and API-key authentication that maps a key to a
//! tenant, an optional owner and the command types the key may use.
//!
//! Every service answers errors the same way and scopes data to tenants the
//! same way, so one security review covers all of them.

// Handlers return `Result<_, Problem>`: a problem is built once per failed
// request and answered at once, so boxing it would only add an allocation to
// every error path.
#![allow(clippy::result_large_err)]

pub mod auth;
pub mod problem;

pub use auth::{
    authenticate, hash_api_key, ApiKeyConfig, ApiKeys, AuthConfig, AuthError, Principal,
};
pub use problem::{FieldProblem, Problem};
