//! What the harness reads back from Kafka: a live tail of the status topic
//! (the latest state of every submission, as any reader of the compacted
//! topic would see it) and a full read of the DLQ.
//!
//! End of topic is detected by quiet time, not high watermarks: tansu's
//! watermarks are not reliable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::StreamConsumer;
use tokio::task::JoinHandle;
use uuid::Uuid;
use writ_codec::{PayloadCodec, SchemaCatalog};
use writ_core::{dlq, StatusEvent, SubmissionState};
use writ_kafka::{ConsumedRecord, KafkaSettings};

use crate::error::ChaosError;

/// The latest status of one submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Its latest state.
    pub state: SubmissionState,
    /// The error code of that state, if any.
    pub code: Option<String>,
    /// Status events read for it.
    pub events: u32,
}

#[derive(Debug, Default)]
struct TailState {
    by_id: HashMap<Uuid, Seen>,
    by_job_line: HashMap<(String, i64), Uuid>,
    events: u64,
    undecodable: u64,
}

/// A background reader of `<domain>.status` from its beginning.
pub struct StatusTail {
    state: Arc<Mutex<TailState>>,
    task: JoinHandle<()>,
}

impl StatusTail {
    /// Starts reading every partition of `topic` from the beginning.
    pub fn start(settings: &KafkaSettings, topic: &str) -> Result<Self, ChaosError> {
        let consumer: StreamConsumer =
            writ_kafka::snapshot::reader_from_beginning(settings, topic)?;
        let state = Arc::new(Mutex::new(TailState::default()));
        let codec = PayloadCodec::new(SchemaCatalog::builtin(), None)?;
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let record = match consumer.recv().await {
                    Ok(m) => ConsumedRecord::from_message(&m),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let ct = record
                    .headers
                    .get_str("content-type")
                    .unwrap_or("application/avro")
                    .to_owned();
                let event = match record.value.as_deref() {
                    Some(v) => codec.decode_status(&ct, v).await.ok(),
                    None => None,
                };
                let mut s = shared.lock().expect("status tail lock");
                s.events += 1;
                match event {
                    Some(e) => record_event(&mut s, e),
                    None => s.undecodable += 1,
                }
            }
        });
        Ok(Self { state, task })
    }

    /// The latest status of a submission.
    pub fn get(&self, id: &Uuid) -> Option<Seen> {
        self.state
            .lock()
            .expect("status tail lock")
            .by_id
            .get(id)
            .cloned()
    }

    /// The submission id of a bulk job's line.
    pub fn job_line(&self, job_id: &str, line: i64) -> Option<Uuid> {
        self.state
            .lock()
            .expect("status tail lock")
            .by_job_line
            .get(&(job_id.to_owned(), line))
            .copied()
    }

    /// Latest states of many submissions at once (one lock).
    pub fn states(&self, ids: &[Uuid]) -> Vec<Option<Seen>> {
        let s = self.state.lock().expect("status tail lock");
        ids.iter().map(|id| s.by_id.get(id).cloned()).collect()
    }

    /// (events read, events that could not be decoded).
    pub fn counts(&self) -> (u64, u64) {
        let s = self.state.lock().expect("status tail lock");
        (s.events, s.undecodable)
    }
}

impl Drop for StatusTail {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn record_event(s: &mut TailState, e: StatusEvent) {
    if let (Some(job), Some(line)) = (&e.job_id, e.job_line) {
        s.by_job_line.insert((job.clone(), line), e.submission_id);
    }
    let seen = s.by_id.entry(e.submission_id).or_insert(Seen {
        state: e.state,
        code: None,
        events: 0,
    });
    // The topic is keyed by submission id, so one partition holds a
    // submission's events in order: the last one read is its state.
    seen.state = e.state;
    seen.code = e.error.map(|x| x.code);
    seen.events += 1;
}

/// One DLQ record, as the checks need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqEntry {
    /// `writ.dlq.reason`.
    pub reason: String,
    /// The record key (the entity key).
    pub key: Option<String>,
    /// `ce_id`, when the record had one.
    pub id: Option<String>,
    /// `ce_source`.
    pub source: Option<String>,
    /// `x-chaos-id` of a poison record.
    pub tag: Option<String>,
    /// `writ.dlq.original.topic`.
    pub original_topic: String,
    /// `writ.dlq.original.partition` and `writ.dlq.original.offset`.
    pub original_position: (i32, i64),
    /// `writ.dlq.worker.id`.
    pub worker: String,
    /// `writ.dlq.attempts`.
    pub attempts: u32,
    /// Where it was in the DLQ.
    pub position: (i32, i64),
}

/// Header carrying a poison record's tag through the DLQ (headers are kept untouched).
pub const CHAOS_TAG: &str = "x-chaos-id";

/// Reads the whole DLQ: polls until it has been quiet for `quiet`.
pub fn read_dlq(
    settings: &KafkaSettings,
    topic: &str,
    quiet: Duration,
) -> Result<Vec<DlqEntry>, ChaosError> {
    let records = writ_kafka::read_until_quiet(settings, topic, quiet, Duration::from_secs(120))?;
    Ok(records
        .into_iter()
        .map(|r| DlqEntry {
            reason: r.headers.get_str(dlq::REASON).unwrap_or("").to_owned(),
            key: r
                .key
                .as_deref()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            id: r.headers.get_str("ce_id").map(str::to_owned),
            source: r.headers.get_str("ce_source").map(str::to_owned),
            tag: r.headers.get_str(CHAOS_TAG).map(str::to_owned),
            original_topic: r
                .headers
                .get_str(dlq::ORIGINAL_TOPIC)
                .unwrap_or("")
                .to_owned(),
            original_position: (
                number(&r.headers, dlq::ORIGINAL_PARTITION) as i32,
                number(&r.headers, dlq::ORIGINAL_OFFSET),
            ),
            worker: r.headers.get_str(dlq::WORKER_ID).unwrap_or("").to_owned(),
            attempts: number(&r.headers, dlq::ATTEMPTS) as u32,
            position: (r.partition, r.offset),
        })
        .collect())
}

/// A numeric header, -1 when missing or malformed.
fn number(h: &writ_core::Headers, name: &str) -> i64 {
    h.get_str(name).and_then(|v| v.parse().ok()).unwrap_or(-1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use writ_core::StatusError;

    fn event(state: SubmissionState, job: Option<(&str, i64)>) -> StatusEvent {
        StatusEvent {
            submission_id: Uuid::from_u128(1),
            source: "/tenants/chaos".into(),
            id: "k".into(),
            command_type: "customer.upsert.v1".into(),
            subject: Some("c".into()),
            state,
            canonical_id: None,
            master_version: None,
            error: (state == SubmissionState::DeadLettered).then(|| StatusError {
                code: "MASTER_UNAVAILABLE".into(),
                message: "m".into(),
                retryable: true,
            }),
            attempts: 1,
            payload_fingerprint: "f".into(),
            accepted_at: time::OffsetDateTime::UNIX_EPOCH,
            applied_at: None,
            stale_after: None,
            job_id: job.map(|(j, _)| j.to_owned()),
            job_line: job.map(|(_, l)| l),
            draft_id: None,
            temp_id: None,
        }
    }

    #[test]
    fn the_last_event_is_the_state_and_job_lines_are_indexed() {
        let mut s = TailState::default();
        record_event(&mut s, event(SubmissionState::Accepted, Some(("j1", 3))));
        record_event(
            &mut s,
            event(SubmissionState::DeadLettered, Some(("j1", 3))),
        );
        let seen = s.by_id[&Uuid::from_u128(1)].clone();
        assert_eq!(seen.state, SubmissionState::DeadLettered);
        assert_eq!(seen.code.as_deref(), Some("MASTER_UNAVAILABLE"));
        record_event(&mut s, event(SubmissionState::Applied, None));
        let seen = s.by_id[&Uuid::from_u128(1)].clone();
        assert_eq!(
            (seen.state, seen.code, seen.events),
            (SubmissionState::Applied, None, 3)
        );
        assert_eq!(s.by_job_line[&("j1".to_owned(), 3)], Uuid::from_u128(1));
    }
}
