//! The load: raw producers publishing CloudEvents records straight to Kafka,
//! ingress clients (CP-2, one sequential client per entity so its order is
//! defined), and the bulk uploader (CP-3). Clients retry exactly as a real
//! client should — same key, same payload — through connection errors and
//! `503`s while the ingress restarts.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use uuid::Uuid;
use writ_core::{CommandEnvelope, ContentType};
use writ_kafka::{OutgoingRecord, RecordProducer};

use crate::error::ChaosError;
use crate::observe::CHAOS_TAG;
use crate::plan::{
    payload, Command, IngressItem, Plan, Poison, PoisonKind, RawItem, CHANGED_PREFIX, COMMAND_TYPE,
    RAW_SOURCE, REUSED_PREFIX,
};

/// Counters every client updates; read by the director and the report.
#[derive(Debug, Default)]
pub struct Counters {
    /// Raw records produced (commands, duplicates, poison, key reuse).
    pub raw_produced: AtomicUsize,
    /// Raw key-reuse duplicates produced.
    pub raw_reused: AtomicUsize,
    /// Ingress items finished (any answer).
    pub ingress_done: AtomicUsize,
    /// Ingress commands answered 2xx.
    pub ingress_accepted: AtomicUsize,
    /// Same-payload duplicates sent to the ingress.
    pub same_sent: AtomicUsize,
    /// ... answered 2xx.
    pub same_2xx: AtomicUsize,
    /// ... answered with `Idempotent-Replayed: true`.
    pub same_replayed: AtomicUsize,
    /// Other-payload duplicates sent to the ingress.
    pub other_sent: AtomicUsize,
    /// ... answered 422.
    pub other_422: AtomicUsize,
    /// Bulk lines produced by the ingress (first uploads).
    pub bulk_lines: AtomicUsize,
    /// Bulk re-uploads answered as replays.
    pub bulk_resend_replayed: AtomicUsize,
    /// Uploads that completed as a resumption of an interrupted attempt.
    pub bulk_resumed: AtomicUsize,
    /// Bulk re-uploads sent.
    pub bulk_resent: AtomicUsize,
    /// Requests retried after a connection error or `503`.
    pub http_retries: AtomicUsize,
    /// Why requests were retried: `503`, `409`, `timeout`, `connect`, `other`.
    pub retry_reasons: std::sync::Mutex<std::collections::BTreeMap<&'static str, usize>>,
    /// Requests that got an answer they should not have.
    pub unexpected: AtomicUsize,
    /// HTTP requests sent in total.
    pub requests: AtomicU64,
    /// Of which failed below HTTP or answered 5xx.
    pub request_errors: AtomicU64,
}

/// The first unexpected answer, kept for the report.
#[derive(Debug, Default)]
pub struct FirstError(std::sync::Mutex<Option<String>>);

impl FirstError {
    /// Records `e` unless an earlier one is kept.
    pub fn set(&self, e: String) {
        let mut g = self.0.lock().expect("first error lock");
        if g.is_none() {
            *g = Some(e);
        }
    }

    /// The kept error.
    pub fn get(&self) -> Option<String> {
        self.0.lock().expect("first error lock").clone()
    }
}

/// A raw command record (JSON payload, CloudEvents binary-mode headers).
pub fn raw_record(topic: &str, c: &Command, name: &str) -> OutgoingRecord {
    let e = CommandEnvelope::new(c.key(), RAW_SOURCE, COMMAND_TYPE, ContentType::Json)
        .with_subject(c.entity.clone());
    let body = serde_json::to_vec(&payload(&c.entity, c.seq, name)).expect("JSON of a json! value");
    OutgoingRecord::command(topic, &e, body)
}

/// A poison record of its kind, tagged so it can be found in the DLQ.
pub fn poison_record(topic: &str, p: &Poison) -> OutgoingRecord {
    let (command_type, body): (&str, Vec<u8>) = match p.kind {
        PoisonKind::InvalidJson => (COMMAND_TYPE, b"{\"customer_id\": \"trunc".to_vec()),
        PoisonKind::UnknownType => (
            "customer.teleport.v1",
            serde_json::to_vec(&payload(&p.entity, 0, "x")).expect("JSON"),
        ),
        PoisonKind::MissingId => (
            COMMAND_TYPE,
            serde_json::to_vec(&payload(&p.entity, 0, "x")).expect("JSON"),
        ),
    };
    let e = CommandEnvelope::new(p.tag.clone(), RAW_SOURCE, command_type, ContentType::Json)
        .with_subject(p.entity.clone());
    let mut r = OutgoingRecord::command(topic, &e, body);
    if p.kind == PoisonKind::MissingId {
        r.headers.remove_where(|n| n == "ce_id");
    }
    r.headers.push(CHAOS_TAG, p.tag.as_str());
    r
}

/// Produces one raw shard round by round, `pause` between rounds.
pub async fn raw_shard(
    producer: RecordProducer,
    topic: String,
    plan: Arc<Plan>,
    shard: usize,
    pause: Duration,
    counters: Arc<Counters>,
) -> Result<(), ChaosError> {
    for round in &plan.raw[shard] {
        let records: Vec<OutgoingRecord> = round
            .iter()
            .map(|item| match item {
                RawItem::Command(i) | RawItem::Duplicate(i) => {
                    let c = &plan.commands[*i];
                    raw_record(&topic, c, &c.name)
                }
                RawItem::Poison(p) => poison_record(&topic, &plan.poison[*p]),
            })
            .collect();
        // A failed send is fatal: re-sending it after later records of its
        // entity were acknowledged would reorder the entity.
        for r in producer.send_all(&records).await {
            r?;
        }
        counters
            .raw_produced
            .fetch_add(records.len(), Ordering::Relaxed);
        tokio::time::sleep(pause).await;
    }
    Ok(())
}

/// The submission id of a raw command.
pub fn raw_submission(c: &Command) -> Uuid {
    writ_core::submission_id(RAW_SOURCE, &c.key())
}

/// The ingress endpoint and key.
#[derive(Debug, Clone)]
pub struct IngressTarget {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The API key (plain; the ingress knows its hash).
    pub api_key: String,
    /// How long a request keeps being retried through restarts.
    pub give_up_after: Duration,
}

/// One HTTP answer: status, `Idempotent-Replayed`, body.
struct Answer {
    status: StatusCode,
    replayed: bool,
    body: String,
}

/// Sends a request until it gets an answer that is not a connection error,
/// `503` or `409` (same key in flight), within the target's patience.
async fn send_retrying(
    http: &reqwest::Client,
    target: &IngressTarget,
    counters: &Counters,
    build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
) -> Result<Answer, String> {
    let deadline = tokio::time::Instant::now() + target.give_up_after;
    let mut backoff = Duration::from_millis(50);
    loop {
        counters.requests.fetch_add(1, Ordering::Relaxed);
        let outcome = build(http).bearer_auth(&target.api_key).send().await;
        let (class, retry_reason) = match outcome {
            Ok(r) => {
                let status = r.status();
                if status.is_server_error() {
                    counters.request_errors.fetch_add(1, Ordering::Relaxed);
                }
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    ("503", status.to_string())
                } else if status == StatusCode::CONFLICT {
                    ("409", status.to_string())
                } else {
                    let replayed = r
                        .headers()
                        .get("idempotent-replayed")
                        .is_some_and(|v| v == "true");
                    let body = r.text().await.unwrap_or_default();
                    return Ok(Answer {
                        status,
                        replayed,
                        body,
                    });
                }
            }
            Err(e) => {
                counters.request_errors.fetch_add(1, Ordering::Relaxed);
                let class = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connect"
                } else {
                    "other"
                };
                (class, e.to_string())
            }
        };
        *counters
            .retry_reasons
            .lock()
            .expect("retry reasons lock")
            .entry(class)
            .or_default() += 1;
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "gave up after {:?}: {retry_reason}",
                target.give_up_after
            ));
        }
        counters.http_retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// One ingress client: an entity's items in order.
pub async fn ingress_client(
    http: reqwest::Client,
    target: IngressTarget,
    plan: Arc<Plan>,
    client: usize,
    counters: Arc<Counters>,
    first_error: Arc<FirstError>,
    submissions: Arc<std::sync::Mutex<Vec<(usize, Uuid)>>>,
) {
    let url = format!("{}/v1/commands/{COMMAND_TYPE}", target.base);
    for item in &plan.ingress[client] {
        let (idx, name) = match *item {
            IngressItem::Submit(i) | IngressItem::SamePayload(i) => {
                (i, plan.commands[i].name.clone())
            }
            IngressItem::OtherPayload(i) => {
                (i, format!("{CHANGED_PREFIX}-{}", plan.commands[i].seq))
            }
        };
        let c = &plan.commands[idx];
        let body = payload(&c.entity, c.seq, &name);
        let key = c.key();
        let answer = send_retrying(&http, &target, &counters, |h| {
            h.post(&url).header("idempotency-key", &key).json(&body)
        })
        .await;
        counters.ingress_done.fetch_add(1, Ordering::Relaxed);
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                counters.unexpected.fetch_add(1, Ordering::Relaxed);
                first_error.set(format!("{key}: {e}"));
                continue;
            }
        };
        let ok = answer.status.is_success();
        match item {
            IngressItem::Submit(_) => {
                if ok {
                    counters.ingress_accepted.fetch_add(1, Ordering::Relaxed);
                    let id = serde_json::from_str::<serde_json::Value>(&answer.body)
                        .ok()
                        .and_then(|v| {
                            v["submissionId"]
                                .as_str()
                                .and_then(|s| Uuid::parse_str(s).ok())
                        });
                    match id {
                        Some(id) => submissions
                            .lock()
                            .expect("submissions lock")
                            .push((idx, id)),
                        None => {
                            counters.unexpected.fetch_add(1, Ordering::Relaxed);
                            first_error
                                .set(format!("{key}: 2xx without submissionId: {}", answer.body));
                        }
                    }
                } else {
                    counters.unexpected.fetch_add(1, Ordering::Relaxed);
                    first_error.set(format!("{key}: {} {}", answer.status, answer.body));
                }
            }
            IngressItem::SamePayload(_) => {
                counters.same_sent.fetch_add(1, Ordering::Relaxed);
                if ok {
                    counters.same_2xx.fetch_add(1, Ordering::Relaxed);
                }
                if answer.replayed {
                    counters.same_replayed.fetch_add(1, Ordering::Relaxed);
                }
            }
            IngressItem::OtherPayload(_) => {
                counters.other_sent.fetch_add(1, Ordering::Relaxed);
                if answer.status == StatusCode::UNPROCESSABLE_ENTITY {
                    counters.other_422.fetch_add(1, Ordering::Relaxed);
                } else {
                    first_error.set(format!(
                        "{key} with another payload: {} {}",
                        answer.status, answer.body
                    ));
                }
            }
        }
    }
}

/// The ingress' answer to an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedJob {
    /// Its index in the plan.
    pub index: usize,
    /// The job id the ingress gave it.
    pub job_id: String,
    /// Lines in the upload.
    pub lines: usize,
}

/// Uploads the bulk jobs one after another (the next only after the previous
/// is durably in Kafka, which keeps each entity's order across jobs).
pub async fn bulk_uploader(
    http: reqwest::Client,
    target: IngressTarget,
    plan: Arc<Plan>,
    run_tag: String,
    pause: Duration,
    counters: Arc<Counters>,
    first_error: Arc<FirstError>,
) -> Vec<UploadedJob> {
    let url = format!("{}/v1/jobs?type={COMMAND_TYPE}", target.base);
    let mut uploaded = Vec::new();
    for (index, job) in plan.bulk.iter().enumerate() {
        let mut ndjson = String::new();
        for &i in &job.lines {
            let c = &plan.commands[i];
            ndjson.push_str(&payload(&c.entity, c.seq, &c.name).to_string());
            ndjson.push('\n');
        }
        let key = format!("{run_tag}-job-{index}");
        let sends = if job.resend { 2 } else { 1 };
        for attempt in 0..sends {
            let answer = send_retrying(&http, &target, &counters, |h| {
                h.post(&url)
                    .header("idempotency-key", &key)
                    .header("content-type", "application/x-ndjson")
                    .body(ndjson.clone())
            })
            .await;
            let a = match answer {
                Ok(a) if a.status == StatusCode::ACCEPTED => a,
                Ok(a) => {
                    counters.unexpected.fetch_add(1, Ordering::Relaxed);
                    first_error.set(format!("job {key}: {} {}", a.status, a.body));
                    break;
                }
                Err(e) => {
                    counters.unexpected.fetch_add(1, Ordering::Relaxed);
                    first_error.set(format!("job {key}: {e}"));
                    break;
                }
            };
            let body: serde_json::Value = serde_json::from_str(&a.body).unwrap_or_default();
            if attempt == 0 {
                let produced = body["produced"].as_u64().unwrap_or(0) as usize
                    + body["replayed"].as_u64().unwrap_or(0) as usize;
                // Lines finished by an earlier, interrupted attempt of the same
                // upload (a client timeout, the ingress restart) are counted by
                // neither: fewer is a resumed upload, more or invalid is wrong.
                if body["state"] != "UPLOADED"
                    || body["invalid"].as_u64() != Some(0)
                    || body["lines"].as_u64() != Some(job.lines.len() as u64)
                    || produced > job.lines.len()
                {
                    counters.unexpected.fetch_add(1, Ordering::Relaxed);
                    first_error.set(format!(
                        "job {key}: {} lines sent, answer {}",
                        job.lines.len(),
                        a.body
                    ));
                } else if produced < job.lines.len() {
                    counters.bulk_resumed.fetch_add(1, Ordering::Relaxed);
                }
                counters.bulk_lines.fetch_add(produced, Ordering::Relaxed);
                match body["jobId"].as_str() {
                    Some(id) => uploaded.push(UploadedJob {
                        index,
                        job_id: id.to_owned(),
                        lines: job.lines.len(),
                    }),
                    None => first_error.set(format!("job {key}: no jobId in {}", a.body)),
                }
            } else {
                counters.bulk_resent.fetch_add(1, Ordering::Relaxed);
                if a.replayed {
                    counters
                        .bulk_resend_replayed
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        tokio::time::sleep(pause).await;
    }
    uploaded
}

/// A key-reuse duplicate of an applied raw command: same `ce_id`, another payload.
pub fn reused_record(topic: &str, c: &Command) -> OutgoingRecord {
    raw_record(topic, c, &format!("{REUSED_PREFIX}-{}", c.seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Channel;
    use writ_core::Headers;

    fn header_names(h: &Headers) -> Vec<String> {
        h.iter().map(|(n, _)| n.to_owned()).collect()
    }

    fn cmd() -> Command {
        Command {
            entity: "r00001".into(),
            seq: 4,
            name: "n4".into(),
            channel: Channel::Raw,
        }
    }

    #[test]
    fn raw_records_follow_the_wire_contract() {
        let r = raw_record("d.commands", &cmd(), "n4");
        assert_eq!(r.key.as_deref(), Some(&b"r00001"[..]));
        assert_eq!(r.headers.get_str("ce_id"), Some("raw-r00001-4"));
        assert_eq!(r.headers.get_str("ce_source"), Some(RAW_SOURCE));
        assert_eq!(r.headers.get_str("ce_type"), Some(COMMAND_TYPE));
        let v: serde_json::Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
        assert_eq!(v["seq"], 4);
        let reused = reused_record("d.commands", &cmd());
        assert_eq!(
            reused.headers.get_str("ce_id"),
            Some("raw-r00001-4"),
            "same key"
        );
        assert_ne!(reused.value, r.value, "another payload");
        assert_eq!(
            raw_submission(&cmd()),
            writ_core::submission_id(RAW_SOURCE, "raw-r00001-4")
        );
    }

    #[test]
    fn poison_records_are_broken_as_their_kind_says_and_tagged() {
        let p = |kind| Poison {
            tag: "poison-1".into(),
            entity: "r1".into(),
            kind,
        };
        let bad_json = poison_record("t", &p(PoisonKind::InvalidJson));
        assert!(
            serde_json::from_slice::<serde_json::Value>(bad_json.value.as_deref().unwrap())
                .is_err()
        );
        let unknown = poison_record("t", &p(PoisonKind::UnknownType));
        assert_eq!(
            unknown.headers.get_str("ce_type"),
            Some("customer.teleport.v1")
        );
        let no_id = poison_record("t", &p(PoisonKind::MissingId));
        assert!(!header_names(&no_id.headers).contains(&"ce_id".to_owned()));
        for r in [bad_json, unknown, no_id] {
            assert_eq!(r.headers.get_str(CHAOS_TAG), Some("poison-1"));
        }
    }
}
