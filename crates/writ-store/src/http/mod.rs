//! HTTP masters: each command type maps to one request against a system of
//! record's API; the exactly-once effect comes from an inbox in writ's own
//! store (claim `IN_PROGRESS` → request with `Idempotency-Key` → record
//! `DONE`), as DESIGN.md's "Exactly-once effect" describes.
//!
//! Layout: `config` (what operators write), `template` (request paths),
//! `response` (status mapping, `Retry-After`, bodies — pure), `inbox` (the
//! claim/record store), and here the batch runner and the request itself.
//!
//! Concurrency: commands of different entities (`ce_subject`, else `ce_id`)
//! run concurrently, up to `max_concurrency` requests in flight for the whole
//! master; commands of one entity run strictly in slice order.
//!
//! Limitation: [`Master::read`] GETs the type's path with the entity key as
//! its first placeholder and returns the response body as-is; it works for
//! REST-shaped APIs where that URL is the entity's resource and its body is
//! payload-shaped, and fails (misconfigured) for templates with more
//! placeholders.

mod config;
mod inbox;
mod response;
mod template;

pub use config::{BodyMode, HttpMasterConfig, HttpTypeMapping};

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use reqwest::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use time::OffsetDateTime;
use tokio::sync::Semaphore;

use crate::{ApplyResult, Command, Master, MasterError, Outcome};
use config::Mapping;
use inbox::{Claim, Inbox};
use response::Class;

/// Largest response body read (bytes); the rest is ignored.
const MAX_BODY_BYTES: usize = 1 << 20;

/// An HTTP master: a client, the compiled mappings and the inbox store.
pub struct HttpMaster {
    client: reqwest::Client,
    base_url: String,
    mappings: BTreeMap<String, Mapping>,
    inbox: Inbox,
    expiry: Duration,
    permits: Arc<Semaphore>,
    /// This process' claim identity (`claimed_by`).
    me: String,
}

impl std::fmt::Debug for HttpMaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpMaster")
            .field("base_url", &self.base_url)
            .field("types", &self.mappings.keys().collect::<Vec<_>>())
            .field("me", &self.me)
            .finish()
    }
}

impl HttpMaster {
    /// Validates the config, builds the client and opens the inbox (creating its table if missing).
    pub async fn connect(config: &HttpMasterConfig) -> Result<HttpMaster, MasterError> {
        let misconfigured = |message: String| MasterError::Misconfigured { message };
        let c = config::compile(config, |v| std::env::var(v).ok()).map_err(misconfigured)?;
        let client = reqwest::Client::builder()
            .timeout(c.timeout)
            .connect_timeout(c.timeout)
            .default_headers(c.headers)
            .user_agent(concat!("writ/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| misconfigured(format!("building the HTTP client: {e}")))?;
        let pool = u32::try_from(c.max_concurrency)
            .unwrap_or(u32::MAX)
            .saturating_add(2);
        let inbox = Inbox::connect(&config.inbox_url, pool).await?;
        let me = format!(
            "{}/{}/{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into()),
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        tracing::info!(
            base_url = %c.base_url,
            inbox = %config::redact_url(&config.inbox_url),
            types = c.mappings.len(),
            max_concurrency = c.max_concurrency,
            claim_id = %me,
            "HTTP master connected"
        );
        Ok(Self {
            client,
            base_url: c.base_url,
            mappings: c.mappings,
            inbox,
            expiry: c.expiry,
            permits: Arc::new(Semaphore::new(c.max_concurrency)),
            me,
        })
    }

    /// Claims, applies and records one command.
    async fn apply_one(&self, command: &Command) -> Result<ApplyResult, MasterError> {
        let id = command.submission_id;
        // Held from claim to record, so a claim never waits in a queue (its
        // expiry only has to cover one request).
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| MasterError::Unavailable {
                message: "HTTP master is shutting down".into(),
                retry_after: None,
            })?;
        let mapping = self
            .mappings
            .get(&command.envelope.command_type)
            .ok_or_else(|| MasterError::Misconfigured {
                message: format!("no HTTP mapping for type {}", command.envelope.command_type),
            })?;
        match self
            .inbox
            .claim(id, &command.fingerprint, &self.me, self.expiry)
            .await?
        {
            Claim::Done(done) => {
                if done.fingerprint != command.fingerprint {
                    tracing::warn!(submission_id = %id, "duplicate submission with a different payload fingerprint; answering the recorded outcome");
                }
                return Ok(ApplyResult {
                    outcome: done.outcome,
                    duplicate: true,
                    recorded_at: done.recorded_at,
                });
            }
            Claim::Busy => {
                return Err(MasterError::Unavailable {
                    message: format!("submission {id} is in progress on another worker"),
                    retry_after: None,
                })
            }
            Claim::Claimed { taken_over } => {
                if taken_over {
                    tracing::warn!(submission_id = %id, "took over an expired IN_PROGRESS claim (a worker crashed mid-request?)");
                }
            }
        }
        let outcome = match self.call(mapping, command).await {
            Ok(outcome) => outcome,
            Err(e) => {
                // Release so the retry can claim at once; if even that fails the claim expires.
                if let Err(release) = self.inbox.release(id, &self.me).await {
                    tracing::warn!(submission_id = %id, error = %release, "could not release a claim; it will expire");
                }
                return Err(e);
            }
        };
        match self.inbox.done(id, &self.me, &outcome).await? {
            Some(recorded_at) => Ok(ApplyResult {
                outcome,
                duplicate: false,
                recorded_at,
            }),
            // Our claim expired and another worker took it over: it repeats the
            // request under the same Idempotency-Key and records the outcome.
            None => Err(MasterError::Unavailable {
                message: format!("claim on submission {id} expired during the request"),
                retry_after: None,
            }),
        }
    }

    /// Sends one command's request and maps the response to an outcome or a retryable error.
    async fn call(&self, mapping: &Mapping, command: &Command) -> Result<Outcome, MasterError> {
        let path = match mapping.path.render(command) {
            Ok(p) => p,
            Err(e) => {
                return Ok(Outcome::Rejected {
                    code: "INVALID_PATH_VALUE".into(),
                    message: e.to_string(),
                })
            }
        };
        let url = format!("{}{path}", self.base_url);
        let mut req = self
            .client
            .request(mapping.method.clone(), url)
            .header("Idempotency-Key", command.submission_id.to_string());
        if let Some(tp) = command
            .envelope
            .traceparent
            .as_deref()
            .and_then(|t| HeaderValue::from_str(t).ok())
        {
            req = req.header("traceparent", tp);
        }
        if mapping.body == BodyMode::Payload {
            let body =
                serde_json::to_vec(&command.payload).map_err(|e| MasterError::Misconfigured {
                    message: format!("encoding the payload: {e}"),
                })?;
            req = req.header(CONTENT_TYPE, "application/json").body(body);
        }
        let (status, retry_after, body) = send(req).await?;
        let class = response::classify(status, retry_after.is_some());
        tracing::debug!(submission_id = %command.submission_id, status = status.as_u16(), "HTTP master answered");
        match response::outcome(
            &class,
            &body,
            mapping.canonical_id_pointer.as_deref(),
            mapping.version_pointer.as_deref(),
            command.envelope.subject.as_deref(),
        ) {
            Some(outcome) => Ok(outcome),
            None => Err(response::retryable_error(&class, status, retry_after)),
        }
    }
}

/// Sends a request; returns status, parsed `Retry-After` and the body (capped).
async fn send(
    req: reqwest::RequestBuilder,
) -> Result<(reqwest::StatusCode, Option<Duration>, Vec<u8>), MasterError> {
    let mut resp = req.send().await.map_err(transport_error)?;
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| response::parse_retry_after(v, SystemTime::now()));
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(transport_error)? {
        let room = MAX_BODY_BYTES.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if room <= chunk.len() {
            break;
        }
    }
    Ok((status, retry_after, body))
}

/// A transport failure (connect, timeout, reset): transient. The URL (which
/// holds payload values) is stripped from the message.
fn transport_error(e: reqwest::Error) -> MasterError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    MasterError::Unavailable {
        message: format!("HTTP master {what}: {}", e.without_url()),
        retry_after: None,
    }
}

#[async_trait]
impl Master for HttpMaster {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn handles(&self, command_type: &str) -> bool {
        self.mappings.contains_key(command_type)
    }

    async fn apply(&self, batch: &[Command]) -> Result<Vec<ApplyResult>, MasterError> {
        // Group by entity in first-appearance order; each group runs in slice order.
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut by_key: HashMap<&str, usize> = HashMap::new();
        for (i, c) in batch.iter().enumerate() {
            let key = c.envelope.partition_key();
            let g = *by_key.entry(key).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[g].push(i);
        }
        // After a failure no new command starts: the retry repeats the batch anyway.
        let failed = AtomicBool::new(false);
        let runs = groups.iter().map(|group| {
            let failed = &failed;
            async move {
                let mut out = Vec::with_capacity(group.len());
                for &i in group {
                    if failed.load(Ordering::Acquire) {
                        break;
                    }
                    let r = self.apply_one(&batch[i]).await;
                    let stop = r.is_err();
                    out.push((i, r));
                    if stop {
                        failed.store(true, Ordering::Release);
                        break;
                    }
                }
                out
            }
        });
        let mut results: Vec<Option<ApplyResult>> = vec![None; batch.len()];
        let mut first_error: Option<(usize, MasterError)> = None;
        for (i, r) in futures::future::join_all(runs).await.into_iter().flatten() {
            match r {
                Ok(a) => results[i] = Some(a),
                Err(e) => {
                    if first_error.as_ref().is_none_or(|(j, _)| i < *j) {
                        first_error = Some((i, e));
                    }
                }
            }
        }
        if let Some((_, e)) = first_error {
            return Err(e);
        }
        Ok(results
            .into_iter()
            .map(|r| r.expect("every command ran: nothing failed, so no group stopped early"))
            .collect())
    }

    async fn read(
        &self,
        command_type: &str,
        entity_key: &str,
    ) -> Result<Option<(serde_json::Value, Option<i64>)>, MasterError> {
        let misconfigured = |message: String| MasterError::Misconfigured { message };
        let mapping = self
            .mappings
            .get(command_type)
            .ok_or_else(|| misconfigured(format!("no HTTP mapping for type {command_type}")))?;
        let path = mapping
            .path
            .render_for_key(entity_key)
            .map_err(|e| misconfigured(format!("read of {command_type}: {e}")))?;
        let req = self
            .client
            .get(format!("{}{path}", self.base_url))
            .header("Accept", "application/json");
        let (status, retry_after, body) = send(req).await?;
        if matches!(status.as_u16(), 404 | 410) {
            return Ok(None);
        }
        match response::classify(status, retry_after.is_some()) {
            Class::Applied => {
                let json: serde_json::Value =
                    serde_json::from_slice(&body).map_err(|e| MasterError::Unavailable {
                        message: format!("read of {command_type}: response is not JSON: {e}"),
                        retry_after: None,
                    })?;
                let version = mapping
                    .version_pointer
                    .as_deref()
                    .and_then(|p| json.pointer(p))
                    .and_then(|v| match v {
                        serde_json::Value::Number(n) => n.as_i64(),
                        serde_json::Value::String(s) => s.parse().ok(),
                        _ => None,
                    });
                Ok(Some((json, version)))
            }
            class @ (Class::Throttled | Class::Unavailable) => {
                Err(response::retryable_error(&class, status, retry_after))
            }
            Class::Conflict | Class::Rejected(_) => Err(misconfigured(format!(
                "read of {command_type}: HTTP {status}"
            ))),
        }
    }

    async fn expire_inbox(&self, older_than: OffsetDateTime) -> Result<u64, MasterError> {
        self.inbox.expire(older_than).await
    }
}
