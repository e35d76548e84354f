//! Submitting a command: validate, encode, publish `ACCEPTED`, produce, and
//! optionally wait for the terminal status. The HTTP handler is a thin shell
//! around [`Submitter::submit`]; other front ends (the drafts router) call it
//! directly so every path into Kafka behaves the same.
//!
//! # Idempotency
//!
//! The idempotency identity is `(ce_source, ce_id)` = (the caller's tenant,
//! the `Idempotency-Key`), and the submission id is its UUIDv5. Before
//! producing anything the status view is consulted:
//!
//! - unknown → a new submission: an `ACCEPTED` status event carrying the
//!   payload fingerprint is published and acknowledged **before** the command
//!   is produced. The worker's terminal status is therefore always written
//!   after the `ACCEPTED` on the compacted status topic, so compaction can
//!   never keep an `ACCEPTED` that hides a terminal state.
//! - known, same fingerprint, terminal → the stored answer is replayed
//!   (`Idempotent-Replayed: true`), nothing is produced.
//! - known, same fingerprint, still `ACCEPTED` → the command is produced
//!   again. This is harmless (the worker's inbox dedupes by submission id) and
//!   it is what guarantees that a command whose first produce failed after its
//!   `ACCEPTED` was written (the client saw a `503` and retried) is never lost.
//! - known, different fingerprint → `422`: the key was reused for another payload.
//!
//! The view is materialized from `<domain>.status`, so this holds across
//! restarts and across replicas for as long as the status topic retains the
//! submission (its retention is the dedupe window). Two replicas answer a
//! key alike once each has read the other's `ACCEPTED`; within that
//! replication lag (milliseconds) a retry sent to the other replica is
//! produced again, which the worker's inbox turns into a no-op.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::Value;
use time::OffsetDateTime;
use tracing::{error, warn};
use writ_codec::{CodecError, PayloadCodec};
use writ_core::{
    cloudevents, payload_fingerprint, Classified, CommandEnvelope, ContentType, StatusEvent,
    SubmissionState, TopicLayout,
};
use writ_http::{FieldProblem, Principal, Problem};
use writ_kafka::{KafkaClientError, OutgoingRecord, RecordProducer};

use crate::config::{field_pointer, IngressConfig, WireFormat};
use crate::metrics::IngressMetrics;
use crate::store::StoreError;
use crate::view::StatusView;

/// Where one command type goes and how its commands are keyed.
#[derive(Debug, Clone)]
pub struct TypeRoute {
    /// The domain's topics.
    pub layout: TopicLayout,
    /// JSON pointer of the entity key in the payload.
    pub entity_key: Option<String>,
    /// JSON pointer of a bulk line's idempotency key.
    pub line_key: Option<String>,
    /// Staleness window and bounds.
    pub staleness: writ_core::StalenessWindow,
}

/// Optional parts of a submission beyond type, payload and key.
#[derive(Debug, Clone, Default)]
pub struct SubmitExtras {
    /// `ce_draftid`: the draft this command was submitted from.
    pub draft_id: Option<String>,
    /// `ce_tempid`: a temporary id handed out for the entity.
    pub temp_id: Option<String>,
    /// CP-1: how long to wait for the terminal status (capped by config).
    pub wait: Option<Duration>,
    /// The staleness window the client asks for (within the type's bounds).
    pub staleness: Option<Duration>,
    /// `ce_expectedversion`: optimistic concurrency.
    pub expected_version: Option<i64>,
    /// W3C `traceparent` to continue.
    pub traceparent: Option<String>,
}

/// The answer to a submission.
#[derive(Debug, Clone, PartialEq)]
pub struct SubmissionAnswer {
    /// The submission's state as known when answering.
    pub event: StatusEvent,
    /// Whether the key was seen before (`Idempotent-Replayed: true`).
    pub replayed: bool,
    /// The wait that was honoured (`Preference-Applied`), if any.
    pub waited: Option<Duration>,
}

/// A validated, encoded command and the `ACCEPTED` event that announces it.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The command's envelope.
    pub envelope: CommandEnvelope,
    /// The encoded payload.
    pub value: Vec<u8>,
    /// The `ACCEPTED` status event.
    pub accepted: StatusEvent,
}

/// What the view knows about a key, and what to do about it.
#[derive(Debug, Clone, PartialEq)]
pub enum Known {
    /// Never seen: publish `ACCEPTED`, then the command.
    New,
    /// Seen with this payload and finished: answer the stored state.
    Replay(StatusEvent),
    /// Seen with this payload, not finished: produce the command again.
    Republish(StatusEvent),
    /// Seen with another payload: `422`.
    Reused(StatusEvent),
}

impl Known {
    /// Classifies a key by what the view holds for it.
    pub fn classify(existing: Option<StatusEvent>, fingerprint: &str) -> Self {
        match existing {
            None => Self::New,
            Some(e) if e.payload_fingerprint != fingerprint => Self::Reused(e),
            Some(e) if e.state.is_terminal() => Self::Replay(e),
            Some(e) => Self::Republish(e),
        }
    }
}

/// The submission engine shared by the HTTP handlers and embedders.
pub struct Submitter {
    routes: HashMap<String, TypeRoute>,
    codec: Arc<PayloadCodec>,
    producer: RecordProducer,
    view: Arc<StatusView>,
    payload_format: ContentType,
    status_format: ContentType,
    max_wait: Duration,
    retry_after: u64,
    idempotency_key_required: bool,
    metrics: IngressMetrics,
    in_flight: InFlight,
}

/// Keys (submission or job ids) whose request is being processed here, so a
/// concurrent retry of the same key gets `409` instead of racing the first
/// (IETF httpapi idempotency-key draft, "concurrent requests").
#[derive(Debug, Default)]
pub struct InFlight(std::sync::Mutex<std::collections::HashSet<String>>);

/// Holds a key in [`InFlight`] until dropped.
#[derive(Debug)]
pub struct InFlightGuard<'a> {
    set: &'a InFlight,
    key: String,
}

impl InFlight {
    /// Claims `key`, or `409` when a request with it is already in progress.
    pub fn claim(&self, key: String) -> Result<InFlightGuard<'_>, Problem> {
        let fresh = self
            .0
            .lock()
            .expect("in-flight set poisoned")
            .insert(key.clone());
        if fresh {
            Ok(InFlightGuard { set: self, key })
        } else {
            Err(Problem::new(
                StatusCode::CONFLICT,
                "idempotency-key-in-flight",
                "A request with this Idempotency-Key is in progress",
            )
            .with_detail("retry once the first request with this key has been answered"))
        }
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.set
            .0
            .lock()
            .expect("in-flight set poisoned")
            .remove(&self.key);
    }
}

impl std::fmt::Debug for Submitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submitter")
            .field("types", &self.routes.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Submitter {
    /// Builds the engine; routes are derived from the configured types.
    pub fn new(
        config: &IngressConfig,
        codec: Arc<PayloadCodec>,
        producer: RecordProducer,
        view: Arc<StatusView>,
    ) -> Result<Self, crate::IngressError> {
        let mut routes = HashMap::new();
        for (name, t) in &config.types {
            if codec.catalog().get(name).is_none() {
                return Err(crate::IngressError::Config(format!(
                    "types.\"{name}\" has no schema (known: {})",
                    codec.catalog().types().collect::<Vec<_>>().join(", ")
                )));
            }
            let layout = TopicLayout::new(&t.domain)
                .map_err(|e| crate::IngressError::Config(e.to_string()))?;
            routes.insert(
                name.clone(),
                TypeRoute {
                    layout,
                    entity_key: t.entity_key.as_deref().map(field_pointer),
                    line_key: t.line_key.as_deref().map(field_pointer),
                    staleness: t.staleness.window(),
                },
            );
        }
        Ok(Self {
            routes,
            codec,
            producer,
            view,
            payload_format: config.payload_format.content_type(),
            status_format: match config.status_format {
                WireFormat::Avro => ContentType::Avro,
                WireFormat::Json => ContentType::Json,
            },
            max_wait: Duration::from_millis(config.limits.max_wait_ms),
            retry_after: config.limits.retry_after_seconds,
            idempotency_key_required: config.idempotency_key_required,
            metrics: IngressMetrics,
            in_flight: InFlight::default(),
        })
    }

    /// Keys being processed on this instance (jobs claim their job id here).
    pub fn in_flight(&self) -> &InFlight {
        &self.in_flight
    }

    /// The status view the submitter answers from.
    pub fn view(&self) -> &Arc<StatusView> {
        &self.view
    }

    /// The producer commands and `ACCEPTED` events go through.
    pub fn producer(&self) -> &RecordProducer {
        &self.producer
    }

    /// The codec (schemas for `GET /v1/types`).
    pub fn codec(&self) -> &PayloadCodec {
        &self.codec
    }

    /// Configured command types and their routes.
    pub fn routes(&self) -> &HashMap<String, TypeRoute> {
        &self.routes
    }

    /// The route of `command_type`, if `principal` may use it: unknown → `404`, not allowed → `403`.
    pub fn route(&self, principal: &Principal, command_type: &str) -> Result<&TypeRoute, Problem> {
        let route = self.routes.get(command_type).ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_FOUND,
                "unknown-type",
                "Unknown command type",
            )
            .with_detail(format!(
                "no command type `{command_type}`; GET /v1/types lists them"
            ))
        })?;
        if !principal.may_use(command_type) {
            return Err(Problem::forbidden(format!(
                "this API key may not submit `{command_type}` commands"
            )));
        }
        Ok(route)
    }

    /// Checks or generates the idempotency key: required by default.
    pub fn idempotency_key(&self, key: Option<&str>) -> Result<String, Problem> {
        match key {
            Some(k) => validate_key(k).map(str::to_owned),
            None if self.idempotency_key_required => Err(Problem::bad_request(
                "idempotency-key-missing",
                "send an `Idempotency-Key` header: a retry with the same key is answered, not applied twice",
            )),
            None => Ok(uuid::Uuid::new_v4().to_string()),
        }
    }

    /// 503 while the view has not read the status topic to its end once:
    /// before that a duplicate could not be recognised.
    pub fn ensure_ready(&self) -> Result<(), Problem> {
        if self.view.is_caught_up() {
            Ok(())
        } else {
            Err(Problem::unavailable(
                "the status view is still catching up with the status topic",
                self.retry_after,
            ))
        }
    }

    /// Submits one command: the one path every front end uses.
    pub async fn submit(
        &self,
        principal: &Principal,
        command_type: &str,
        payload: &Value,
        idempotency_key: Option<&str>,
        extras: SubmitExtras,
    ) -> Result<SubmissionAnswer, Problem> {
        let route = self.route(principal, command_type)?;
        let key = self.idempotency_key(idempotency_key)?;
        self.ensure_ready()?;
        let now = announcement_time();
        let prepared = self
            .prepare(principal, route, command_type, payload, key, &extras, now)
            .await?;
        let submission_id = prepared.accepted.submission_id;
        // Held while the key is looked up and produced; released before a CP-1 wait.
        let in_flight = self.in_flight.claim(submission_id.to_string())?;
        let wait = extras
            .wait
            .map(|w| w.min(self.max_wait))
            .filter(|w| !w.is_zero());
        // Registered before anything is produced, so a fast answer is not missed.
        let mut waiter = wait.map(|_| self.view.waiter(submission_id));
        let existing = self.view.get(submission_id).await.map_err(store_problem)?;
        let (event, replayed) =
            match Known::classify(existing, &prepared.accepted.payload_fingerprint) {
                Known::Reused(_) => {
                    self.metrics.submission("key_reused");
                    return Err(key_reused(submission_id));
                }
                Known::Replay(e) => {
                    self.metrics.submission("replayed");
                    return Ok(SubmissionAnswer {
                        event: e,
                        replayed: true,
                        waited: None,
                    });
                }
                Known::Republish(e) => {
                    // Produced again as first announced: same time, window and job line.
                    let mut again = prepared;
                    again.envelope.time = Some(e.accepted_at);
                    again.envelope.stale_after = e.stale_after;
                    again.envelope.job_id = e.job_id.clone();
                    again.envelope.job_line = e.job_line;
                    let topic = if e.job_id.is_some() {
                        route.layout.bulk()
                    } else {
                        route.layout.commands()
                    };
                    self.produce_commands(&topic, &[again]).await?;
                    self.metrics.submission("republished");
                    (e, true)
                }
                Known::New => {
                    self.publish_accepted(&route.layout, std::slice::from_ref(&prepared))
                        .await?;
                    let accepted = prepared.accepted.clone();
                    self.produce_commands(&route.layout.commands(), &[prepared])
                        .await?;
                    self.metrics.submission("accepted");
                    (accepted, false)
                }
            };
        drop(in_flight);
        let (Some(wait), Some(waiter)) = (wait, waiter.as_mut()) else {
            return Ok(SubmissionAnswer {
                event,
                replayed,
                waited: None,
            });
        };
        let started = Instant::now();
        let done = waiter.wait(wait).await;
        self.metrics.waited(started.elapsed());
        Ok(SubmissionAnswer {
            event: done.unwrap_or(event),
            replayed,
            waited: Some(wait),
        })
    }

    /// Validates and encodes one command and builds its `ACCEPTED` event.
    #[allow(clippy::too_many_arguments)]
    pub async fn prepare(
        &self,
        principal: &Principal,
        route: &TypeRoute,
        command_type: &str,
        payload: &Value,
        key: String,
        extras: &SubmitExtras,
        now: OffsetDateTime,
    ) -> Result<Prepared, Problem> {
        let stale_after = route
            .staleness
            .stale_after(extras.staleness, now)
            .map_err(|e| Problem::bad_request("staleness-window", e.to_string()))?;
        let schema = self
            .codec
            .catalog()
            .get(command_type)
            .ok_or_else(|| codec_problem(CodecError::UnknownType(command_type.to_owned())))?;
        let value = writ_codec::json_to_avro(schema.schema(), payload)
            .map_err(|e| codec_problem(CodecError::Validation(e)))?;
        let canonical = writ_codec::avro_to_json(&value);
        let subject = match &route.entity_key {
            None => None,
            Some(pointer) => Some(entity_key(&canonical, pointer)?),
        };
        let fingerprint = payload_fingerprint(&canonical);
        let encoded = self
            .codec
            .encode_validated(command_type, value, self.payload_format)
            .await
            .map_err(codec_problem)?;
        let content_type = ContentType::parse(encoded.content_type).unwrap_or(self.payload_format);
        let mut envelope =
            CommandEnvelope::new(key, principal.source(), command_type, content_type);
        envelope.subject = subject;
        envelope.time = Some(now);
        envelope.data_schema = encoded.dataschema;
        envelope.expected_version = extras.expected_version;
        envelope.stale_after = Some(stale_after);
        envelope.draft_id = extras.draft_id.clone();
        envelope.temp_id = extras.temp_id.clone();
        envelope.traceparent = extras.traceparent.clone();
        let accepted = accepted_event(&envelope, fingerprint, now);
        Ok(Prepared {
            envelope,
            value: encoded.bytes,
            accepted,
        })
    }

    /// Publishes the `ACCEPTED` events and waits for every acknowledgement.
    /// The view answers for them from the moment they are announced (before
    /// producing, so its reader cannot read one back first) until the reader
    /// stores them; if producing fails they are withdrawn again.
    pub async fn publish_accepted(
        &self,
        layout: &TopicLayout,
        prepared: &[Prepared],
    ) -> Result<(), Problem> {
        if prepared.is_empty() {
            return Ok(());
        }
        let mut records = Vec::with_capacity(prepared.len());
        for p in prepared {
            let value = self
                .codec
                .encode_status(&p.accepted, self.status_format)
                .await
                .map_err(codec_problem)?;
            let mut headers = writ_core::Headers::new();
            headers.push(cloudevents::CONTENT_TYPE, self.status_format.as_str());
            records.push(OutgoingRecord::new(
                layout.status(),
                p.accepted.submission_id.to_string(),
                value,
                headers,
            ));
        }
        let events: Vec<StatusEvent> = prepared.iter().map(|p| p.accepted.clone()).collect();
        self.view.announce(&events);
        let sent = self.send(&records, "status").await;
        if sent.is_err() {
            self.view.withdraw(events.iter().map(|e| e.submission_id));
        }
        sent
    }

    /// Produces commands to `topic` and waits for every acknowledgement.
    pub async fn produce_commands(
        &self,
        topic: &str,
        prepared: &[Prepared],
    ) -> Result<(), Problem> {
        let records: Vec<OutgoingRecord> = prepared
            .iter()
            .map(|p| OutgoingRecord::command(topic, &p.envelope, p.value.clone()))
            .collect();
        self.send(&records, "command").await
    }

    async fn send(&self, records: &[OutgoingRecord], role: &'static str) -> Result<(), Problem> {
        let failures: Vec<KafkaClientError> = self
            .producer
            .send_all(records)
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect();
        let Some(first) = failures.first() else {
            return Ok(());
        };
        self.metrics.produce_failure(role, failures.len() as u64);
        if first.is_retryable() {
            warn!(error = %first, failed = failures.len(), role, "produce failed; answering 503");
            Err(Problem::unavailable(
                "Kafka did not acknowledge the write in time; nothing is lost by retrying with the same Idempotency-Key",
                self.retry_after,
            ))
        } else {
            error!(error = %first, failed = failures.len(), role, "produce refused permanently");
            Err(Problem::internal())
        }
    }
}

/// Now, to the millisecond: what status events carry on the wire, so an
/// announcement answered from memory equals the one read back from Kafka.
pub fn announcement_time() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_millisecond(now.millisecond())
        .expect("a millisecond of a valid time is valid")
}

/// The `ACCEPTED` status event of a command about to be produced.
pub fn accepted_event(
    envelope: &CommandEnvelope,
    fingerprint: String,
    now: OffsetDateTime,
) -> StatusEvent {
    StatusEvent {
        submission_id: envelope.submission_id(),
        source: envelope.source.clone(),
        id: envelope.id.clone(),
        command_type: envelope.command_type.clone(),
        subject: envelope.subject.clone(),
        state: SubmissionState::Accepted,
        canonical_id: None,
        master_version: None,
        error: None,
        attempts: 0,
        payload_fingerprint: fingerprint,
        accepted_at: now,
        applied_at: None,
        stale_after: envelope.stale_after,
        job_id: envelope.job_id.clone(),
        job_line: envelope.job_line,
        draft_id: envelope.draft_id.clone(),
        temp_id: envelope.temp_id.clone(),
    }
}

/// An idempotency key must fit `ce_id`: 1-255 bytes, no control characters.
pub fn validate_key(key: &str) -> Result<&str, Problem> {
    let bad = |why: &str| {
        Problem::bad_request(
            "idempotency-key-invalid",
            format!("the Idempotency-Key {why}"),
        )
    };
    if key.is_empty() {
        return Err(bad("is empty"));
    }
    if key.len() > cloudevents::MAX_ID_LEN {
        return Err(bad(&format!(
            "is longer than {} bytes",
            cloudevents::MAX_ID_LEN
        )));
    }
    if key.chars().any(char::is_control) {
        return Err(bad("contains a control character"));
    }
    Ok(key)
}

/// The entity key at `pointer`: a string, or a number printed as JSON does.
pub fn entity_key(payload: &Value, pointer: &str) -> Result<String, Problem> {
    let problem = |message: &str| {
        Problem::validation(
            "the entity key cannot be read from the payload",
            vec![FieldProblem {
                path: pointer.to_owned(),
                message: message.to_owned(),
            }],
        )
    };
    match payload.pointer(pointer) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(Value::String(_)) => Err(problem("the entity key is empty")),
        Some(_) => Err(problem("the entity key must be a string or a number")),
        None => Err(problem("the entity key is missing")),
    }
}

/// `$.lines[2].quantity` → `/lines/2/quantity`: codec paths as JSON pointers.
pub fn json_pointer(path: &str) -> String {
    let rest = path.strip_prefix('$').unwrap_or(path);
    let mut out = String::new();
    for part in rest.split(['.', '[']).filter(|p| !p.is_empty()) {
        out.push('/');
        out.push_str(
            &part
                .trim_end_matches(']')
                .replace('~', "~0")
                .replace('/', "~1"),
        );
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// A codec failure as the client sees it.
pub fn codec_problem(e: CodecError) -> Problem {
    match e {
        CodecError::Validation(v) => {
            let errors: Vec<FieldProblem> = v
                .errors
                .iter()
                .map(|f| FieldProblem {
                    path: json_pointer(&f.path),
                    message: f.message.clone(),
                })
                .collect();
            let detail = format!(
                "{} field(s) do not match the schema: {}",
                errors.len(),
                errors
                    .iter()
                    .map(|f| f.path.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Problem::validation(detail, errors)
        }
        CodecError::UnknownType(t) => Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-type",
            "Unknown command type",
        )
        .with_detail(format!("no schema for command type `{t}`")),
        CodecError::RegistryUnavailable(m) => {
            warn!(error = %m, "schema registry unavailable; answering 503");
            Problem::unavailable("the schema registry is unreachable", 5)
        }
        other => {
            error!(error = %other, "codec failure");
            Problem::internal()
        }
    }
}

/// A store failure: logged, answered as a generic 500.
pub fn store_problem(e: StoreError) -> Problem {
    error!(error = %e, "status store failure");
    Problem::internal()
}

/// `422` for a key reused with another payload.
pub fn key_reused(submission_id: uuid::Uuid) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
        "Idempotency-Key reused with a different payload",
    )
    .with_detail("this Idempotency-Key was already used for a different payload; use a new key for a new command")
    .with_extension("submissionId", submission_id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_key_in_flight_is_refused_until_released() {
        let set = InFlight::default();
        let guard = set.claim("k".into()).unwrap();
        assert_eq!(set.claim("k".into()).unwrap_err().status, 409);
        assert!(set.claim("other".into()).is_ok());
        drop(guard);
        assert!(set.claim("k".into()).is_ok());
    }

    #[test]
    fn codec_paths_become_json_pointers() {
        assert_eq!(json_pointer("$"), "/");
        assert_eq!(json_pointer("$.email"), "/email");
        assert_eq!(json_pointer("$.lines[2].quantity"), "/lines/2/quantity");
    }

    #[test]
    fn entity_keys_are_strings_or_numbers() {
        let p = json!({"customer_id": "c-1", "n": 7, "empty": "", "obj": {}});
        assert_eq!(entity_key(&p, "/customer_id").unwrap(), "c-1");
        assert_eq!(entity_key(&p, "/n").unwrap(), "7");
        for bad in ["/empty", "/obj", "/missing"] {
            let problem = entity_key(&p, bad).unwrap_err();
            assert_eq!(problem.status, 422);
            assert_eq!(problem.errors[0].path, bad);
        }
    }

    #[test]
    fn keys_must_fit_ce_id() {
        assert!(validate_key("order-42").is_ok());
        for bad in ["", "a\nb", &"x".repeat(256)] {
            assert_eq!(validate_key(bad).unwrap_err().status, 400);
        }
    }

    #[test]
    fn a_key_is_classified_by_state_and_fingerprint() {
        let mut e = crate::store::tests_support::event("k", SubmissionState::Accepted);
        e.payload_fingerprint = "f1".into();
        assert_eq!(Known::classify(None, "f1"), Known::New);
        assert_eq!(
            Known::classify(Some(e.clone()), "f1"),
            Known::Republish(e.clone())
        );
        assert_eq!(
            Known::classify(Some(e.clone()), "f2"),
            Known::Reused(e.clone())
        );
        e.state = SubmissionState::Applied;
        assert_eq!(
            Known::classify(Some(e.clone()), "f1"),
            Known::Replay(e.clone())
        );
        assert_eq!(Known::classify(Some(e.clone()), "f2"), Known::Reused(e));
    }
}
