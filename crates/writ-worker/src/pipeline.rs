//! One batch, start to finish: decode, apply under the rate limit with
//! retries and bisection, then produce every status event and dead letter and
//! wait for Kafka's acknowledgements. Only when this returns `Ok` may the
//! caller store the batch's offsets — that ordering is the at-least-once half
//! of the exactly-once effect (the inbox is the other half).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use time::OffsetDateTime;
use tracing::{debug, debug_span, info, info_span, warn, Instrument};
use writ_codec::{CodecError, PayloadCodec};
use writ_core::dlq::{self, dlq_headers, DlqFailure, DlqReason};
use writ_core::fingerprint::raw_fingerprint;
use writ_core::{
    cloudevents, Classified, CommandEnvelope, Headers, StatusError, StatusEvent, SubmissionState,
    TopicLayout,
};
use writ_kafka::{ConsumedRecord, KafkaClientError, OutgoingRecord, RecordProducer};
use writ_store::{ApplyResult, Command, Master, MasterError, Outcome};

use crate::config::StatusFormat;
use crate::decode::{decode_record, DeadLetter, Decoded};
use crate::metrics::WorkerMetrics;
use crate::rate::AdaptiveRateLimiter;
use crate::retry::RetryPolicy;

/// The largest dead letter produced with its value: the DLQ topic's record
/// limit less room for the record batch framing.
const DLQ_COPY_LIMIT: usize = writ_core::topics::DLQ_MAX_MESSAGE_BYTES - 4096;

/// A failure that stops the worker: offsets stay uncommitted, and a restart
/// replays the batch (a no-op for what was applied, thanks to the inbox).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The master is misconfigured; no retry can help until an operator acts.
    #[error(transparent)]
    Master(MasterError),
    /// Status events or dead letters could not be produced within the retry budget.
    #[error("producing status events / dead letters failed: {0}")]
    Produce(KafkaClientError),
    /// The schema registry stayed unreachable beyond the retry budget.
    #[error("decoding failed: {0}")]
    Codec(CodecError),
}

/// Counts of what one batch came to, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Records in the batch.
    pub records: usize,
    /// Commands applied now.
    pub applied: usize,
    /// Commands answered from the inbox.
    pub duplicates: usize,
    /// Commands rejected or in conflict.
    pub refused: usize,
    /// Records dead-lettered.
    pub dead_lettered: usize,
    /// Of those, commands dead-lettered because retries ran out (no inbox record).
    pub exhausted: usize,
}

/// A batch whose master effects are durable; its status events and dead
/// letters are still to be built and delivered ([`Pipeline::deliver`]).
pub struct Prepared {
    records: Vec<ConsumedRecord>,
    resolutions: Vec<Resolution>,
}

impl Prepared {
    /// (topic, partition, offset) of every record of the batch, in order.
    pub fn offsets(&self) -> Vec<(String, i32, i64)> {
        self.records
            .iter()
            .map(|r| (r.topic.clone(), r.partition, r.offset))
            .collect()
    }

    /// Some command was dead-lettered without an inbox record (retries
    /// exhausted against an unreachable master). Until this batch's offsets
    /// are committed, a crash would redeliver it and a recovered master would
    /// then apply it *after* newer commands of the same entity — so no later
    /// batch may be applied before that commit.
    pub fn needs_commit_before_next(&self) -> bool {
        self.resolutions
            .iter()
            .any(|r| matches!(r, Resolution::Exhausted { .. }))
    }
}

/// Everything a batch needs; shared by the run loop.
pub struct Pipeline {
    /// Payload codec.
    pub codec: Arc<PayloadCodec>,
    /// The system of record.
    pub master: Arc<dyn Master>,
    /// Producer for status events and dead letters.
    pub producer: RecordProducer,
    /// The domain's topics.
    pub layout: TopicLayout,
    /// Rate limit towards the master.
    pub limiter: Arc<AdaptiveRateLimiter>,
    /// Retry policy for retryable master failures.
    pub retry: RetryPolicy,
    /// Metrics.
    pub metrics: WorkerMetrics,
    /// This worker's id (DLQ headers).
    pub worker_id: String,
    /// Status event encoding.
    pub status_format: StatusFormat,
    /// Also dead-letter rejected commands.
    pub dead_letter_rejections: bool,
    /// Entity groups of a batch applied concurrently.
    pub apply_lanes: usize,
}

/// How one record ended.
enum Resolution {
    Answered {
        command: Command,
        result: ApplyResult,
        attempts: u32,
    },
    Exhausted {
        command: Command,
        error: MasterError,
        attempts: u32,
        first_failure: OffsetDateTime,
        last_failure: OffsetDateTime,
    },
    Dead(DeadLetter),
}

/// The lane of each record of a batch: records with the same key (the
/// entity key, DESIGN.md) share a lane, so every command of an entity is
/// applied by one lane in offset order; keyless records follow their
/// partition. Hashing keys rather than dealing out whole partitions keeps
/// every lane busy even when a batch comes from a single partition, which
/// is how fetches usually fill it.
fn lane_assignment(records: &[ConsumedRecord], lanes: usize) -> Vec<usize> {
    use std::hash::{Hash, Hasher};
    if lanes <= 1 {
        return vec![0; records.len()];
    }
    records
        .iter()
        .map(|r| {
            // Fixed keys: the same key gets the same lane in every batch and process.
            let mut h = std::collections::hash_map::DefaultHasher::new();
            match &r.key {
                Some(key) => key.hash(&mut h),
                None => (r.topic.as_str(), r.partition).hash(&mut h),
            }
            (h.finish() % lanes as u64) as usize
        })
        .collect()
}

/// A spawned task that is aborted when its handle is dropped unjoined.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    /// Waits for the task; its panic is resumed here.
    async fn join(mut self) -> T {
        match (&mut self.0).await {
            Ok(value) => value,
            Err(e) => match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(e) => unreachable!("a lane task is aborted only with its batch: {e}"),
            },
        }
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A run of commands applied together, with their positions in the batch.
struct Chunk {
    positions: Vec<usize>,
    commands: Vec<Command>,
    /// Set on the halves of a chunk that exhausted its retries: how many
    /// applies had succeeded at that moment (see `apply_all`).
    exhausted_split_at: Option<u64>,
}

impl Pipeline {
    /// Decodes a batch (the run loop does this for batch N+1 while N applies).
    pub async fn decode_batch(
        &self,
        records: &[ConsumedRecord],
    ) -> Result<Vec<Decoded>, PipelineError> {
        self.metrics.consumed(records.len() as u64);
        let t = Instant::now();
        let decoded = self.decode_all(records).await?;
        self.metrics.stage("decode", t.elapsed());
        Ok(decoded)
    }

    /// Applies a decoded batch. Its status events and dead letters are built
    /// by [`Pipeline::deliver`], on the delivery task, while the next batch
    /// applies: the apply is what the run loop waits for.
    pub async fn apply(
        self: &Arc<Self>,
        records: Vec<ConsumedRecord>,
        decoded: Vec<Decoded>,
    ) -> Result<Prepared, PipelineError> {
        let span = info_span!(
            "batch",
            records = records.len(),
            topic = records.first().map(|r| r.topic.as_str()).unwrap_or("")
        );
        async move {
            let mut resolutions: Vec<Option<Resolution>> =
                (0..records.len()).map(|_| None).collect();
            let lane_of = lane_assignment(&records, self.apply_lanes);
            let mut lanes: Vec<Chunk> = (0..self.apply_lanes.max(1))
                .map(|_| Chunk {
                    positions: Vec::new(),
                    commands: Vec::new(),
                    exhausted_split_at: None,
                })
                .collect();
            for (i, d) in decoded.into_iter().enumerate() {
                match d {
                    Decoded::Command(c) => {
                        let lane = &mut lanes[lane_of[i]];
                        lane.positions.push(i);
                        lane.commands.push(c);
                    }
                    Decoded::DeadLetter(dl) => resolutions[i] = Some(Resolution::Dead(dl)),
                }
            }
            let t = Instant::now();
            // Each lane holds every command of its entities, in offset order:
            // lanes may apply concurrently, each in its own transaction, so
            // the master works while another lane waits.
            let mut lanes: Vec<Chunk> = lanes
                .into_iter()
                .filter(|l| !l.commands.is_empty())
                .collect();
            let applied = if lanes.len() == 1 {
                vec![self.apply_all(lanes.remove(0)).await?]
            } else {
                // Each lane on a task of its own, so that building and reading
                // one lane's statements runs on another core while the other
                // lane does the same, not only their database waits. Dropping
                // this future (a drain timeout) aborts them: an abandoned batch
                // is replayed, and a lane's open transaction rolls back.
                let tasks: Vec<AbortOnDrop<_>> = lanes
                    .into_iter()
                    .map(|lane| {
                        let pipeline = self.clone();
                        AbortOnDrop(tokio::spawn(
                            async move { pipeline.apply_all(lane).await }.in_current_span(),
                        ))
                    })
                    .collect();
                let mut applied = Vec::with_capacity(tasks.len());
                for task in tasks {
                    applied.push(task.join().await?);
                }
                applied
            };
            for (i, r) in applied.into_iter().flatten() {
                resolutions[i] = Some(r);
            }
            self.metrics.stage("apply", t.elapsed());
            let resolutions = resolutions
                .into_iter()
                .map(|r| r.expect("every record of a batch is resolved exactly once"))
                .collect();
            Ok(Prepared {
                records,
                resolutions,
            })
        }
        .instrument(span)
        .await
    }

    /// Builds an applied batch's status events and dead letters, produces
    /// them and waits for every acknowledgement. Dead letters go first: a
    /// `DEAD_LETTERED` status must never announce a DLQ record that a failed
    /// produce left unwritten.
    pub async fn deliver(&self, prepared: Prepared) -> Result<BatchReport, PipelineError> {
        let Prepared {
            records,
            resolutions,
        } = prepared;
        let t = Instant::now();
        let mut report = BatchReport {
            records: records.len(),
            ..BatchReport::default()
        };
        let mut outgoing = Vec::with_capacity(records.len());
        for (record, resolution) in records.iter().zip(resolutions) {
            self.emit(record, resolution, &mut outgoing, &mut report)
                .await?;
        }
        self.metrics.stage("emit", t.elapsed());
        let t = Instant::now();
        let dlq = self.layout.dlq();
        let (dead_letters, statuses): (Vec<_>, Vec<_>) =
            outgoing.into_iter().partition(|r| r.topic == dlq);
        if !dead_letters.is_empty() {
            self.produce_all(dead_letters).await?;
        }
        self.produce_all(statuses).await?;
        self.metrics.stage("produce", t.elapsed());
        debug!(?report, "batch delivered");
        Ok(report)
    }

    async fn decode_all(&self, records: &[ConsumedRecord]) -> Result<Vec<Decoded>, PipelineError> {
        let mut out = Vec::with_capacity(records.len());
        for record in records {
            let mut attempts = 0;
            let started = Instant::now();
            loop {
                attempts += 1;
                match decode_record(record, &self.codec, self.master.as_ref()).await {
                    Ok(d) => {
                        out.push(d);
                        break;
                    }
                    Err(e) => match self.next_delay(attempts, started.elapsed(), None) {
                        Some(delay) => {
                            warn!(error = %e, ?delay, "decode failed; retrying");
                            self.metrics.retry(e.code());
                            tokio::time::sleep(delay).await;
                        }
                        None => return Err(PipelineError::Codec(e)),
                    },
                }
            }
        }
        Ok(out)
    }

    /// Applies commands in order, splitting failing chunks to isolate the
    /// records that fail them; retryable failures back off and retry.
    ///
    /// A chunk that exhausts its retries is split once more before anything
    /// is dead-lettered: one command that keeps failing (a row locked for
    /// good, a trigger that always aborts) must not take its whole batch to
    /// the DLQ. Its halves are split further only while the master is
    /// answering other work (an apply succeeded since the split); with a
    /// master that is simply down, that stops after one split.
    async fn apply_all(&self, all: Chunk) -> Result<Vec<(usize, Resolution)>, PipelineError> {
        let mut queue = VecDeque::from([all]);
        let mut out = Vec::new();
        let mut successes: u64 = 0;
        while let Some(chunk) = queue.pop_front() {
            let started = Instant::now();
            let mut attempts: u32 = 0;
            let mut first_failure = None;
            loop {
                let waited = self.limiter.acquire(chunk.commands.len() as u32).await;
                self.metrics.rate_limit_wait(waited);
                attempts += 1;
                let t = Instant::now();
                let result = self.master.apply(&chunk.commands).await;
                match result {
                    Ok(results) => {
                        successes += 1;
                        self.limiter.on_success();
                        self.metrics.rate_current(self.limiter.current_rate());
                        self.metrics.batch(chunk.commands.len(), t.elapsed());
                        assert_eq!(
                            results.len(),
                            chunk.commands.len(),
                            "Master contract: one result per command"
                        );
                        for ((pos, command), result) in
                            chunk.positions.into_iter().zip(chunk.commands).zip(results)
                        {
                            out.push((
                                pos,
                                Resolution::Answered {
                                    command,
                                    result,
                                    attempts,
                                },
                            ));
                        }
                        break;
                    }
                    Err(MasterError::BatchFailed { message }) if chunk.commands.len() > 1 => {
                        debug!(size = chunk.commands.len(), %message, "batch failed; splitting");
                        self.metrics.batch_split();
                        let (left, right) = split(chunk);
                        queue.push_front(right);
                        queue.push_front(left);
                        break;
                    }
                    Err(MasterError::BatchFailed { message }) => {
                        // A master must answer a lone failing command with Rejected; treat a
                        // violation of that contract as a rejection rather than loop forever.
                        warn!(%message, "master failed a single-command batch; rejecting it");
                        let command = chunk
                            .commands
                            .into_iter()
                            .next()
                            .expect("single-command chunk");
                        let result = ApplyResult {
                            outcome: Outcome::Rejected {
                                code: "BATCH_FAILED".into(),
                                message,
                            },
                            duplicate: false,
                            recorded_at: OffsetDateTime::now_utc(),
                        };
                        out.push((
                            chunk.positions[0],
                            Resolution::Answered {
                                command,
                                result,
                                attempts,
                            },
                        ));
                        break;
                    }
                    Err(e @ MasterError::Misconfigured { .. }) => {
                        return Err(PipelineError::Master(e))
                    }
                    Err(e) => {
                        let now = OffsetDateTime::now_utc();
                        let first = *first_failure.get_or_insert(now);
                        let hint = match &e {
                            MasterError::Throttled { retry_after, .. } => {
                                self.limiter.on_throttled(*retry_after);
                                self.metrics.rate_current(self.limiter.current_rate());
                                *retry_after
                            }
                            MasterError::Unavailable { retry_after, .. } => *retry_after,
                            _ => None,
                        };
                        self.metrics.retry(e.code());
                        match self.next_delay(attempts, started.elapsed(), hint) {
                            Some(delay) => {
                                warn!(error = %e, attempts, ?delay, size = chunk.commands.len(), "apply failed; retrying");
                                tokio::time::sleep(delay).await;
                            }
                            None if chunk.commands.len() > 1
                                && chunk.exhausted_split_at.is_none_or(|at| successes > at) =>
                            {
                                warn!(error = %e, attempts, size = chunk.commands.len(), "retries exhausted; splitting to find the commands that keep failing");
                                self.metrics.batch_split();
                                let (mut left, mut right) = split(chunk);
                                left.exhausted_split_at = Some(successes);
                                right.exhausted_split_at = Some(successes);
                                queue.push_front(right);
                                queue.push_front(left);
                                break;
                            }
                            None => {
                                warn!(error = %e, attempts, size = chunk.commands.len(), "retries exhausted; dead-lettering");
                                for (pos, command) in
                                    chunk.positions.into_iter().zip(chunk.commands)
                                {
                                    out.push((
                                        pos,
                                        Resolution::Exhausted {
                                            command,
                                            error: e.clone(),
                                            attempts,
                                            first_failure: first,
                                            last_failure: now,
                                        },
                                    ));
                                }
                                break;
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Turns a resolution into its status event and/or dead letter.
    async fn emit(
        &self,
        record: &ConsumedRecord,
        resolution: Resolution,
        outgoing: &mut Vec<OutgoingRecord>,
        report: &mut BatchReport,
    ) -> Result<(), PipelineError> {
        let now = OffsetDateTime::now_utc();
        match resolution {
            Resolution::Answered {
                command,
                result,
                attempts,
            } => {
                let state = result.outcome.state();
                if result.duplicate {
                    report.duplicates += 1;
                    self.metrics.dedupe_hit(1);
                } else if state == SubmissionState::Applied {
                    report.applied += 1;
                } else {
                    report.refused += 1;
                }
                self.metrics.outcome(state, 1);
                let mut event = base_event(
                    &command.envelope,
                    record,
                    &command.fingerprint,
                    state,
                    attempts,
                );
                event.applied_at = Some(result.recorded_at);
                match &result.outcome {
                    Outcome::Applied {
                        canonical_id,
                        version,
                    } => {
                        event.canonical_id = canonical_id.clone();
                        event.master_version = *version;
                    }
                    Outcome::Rejected { code, message } => {
                        event.error = Some(StatusError {
                            code: code.clone(),
                            message: message.clone(),
                            retryable: false,
                        });
                    }
                    Outcome::Conflict {
                        message,
                        current_version,
                    } => {
                        event.master_version = *current_version;
                        event.error = Some(StatusError {
                            code: "VERSION_MISMATCH".into(),
                            message: message.clone(),
                            retryable: false,
                        });
                    }
                }
                if event
                    .stale_after
                    .is_some_and(|deadline| result.recorded_at > deadline)
                    && !result.duplicate
                {
                    self.metrics.stale(1);
                }
                // Per-command spans are debug-level: at 20k commands/s an
                // info span per command costs more than the status encoding.
                let span = debug_span!("command", submission_id = %command.submission_id, command_type = %command.envelope.command_type, traceparent = command.envelope.traceparent.as_deref().unwrap_or(""));
                span.in_scope(|| debug!(state = %state, duplicate = result.duplicate, "answered"));
                if state != SubmissionState::Applied && !result.duplicate {
                    info!(submission_id = %command.submission_id, command_type = %command.envelope.command_type, state = %state, "command not applied");
                }
                if state == SubmissionState::Rejected
                    && self.dead_letter_rejections
                    && !result.duplicate
                {
                    let (code, message) = match &result.outcome {
                        Outcome::Rejected { code, message } => (code.clone(), message.clone()),
                        _ => unreachable!("state is Rejected"),
                    };
                    outgoing.push(self.dead_letter(
                        record,
                        DlqReason::Rejected,
                        &code,
                        &message,
                        attempts,
                        now,
                        now,
                    ));
                    report.dead_lettered += 1;
                    self.metrics.dead_lettered(DlqReason::Rejected, 1);
                }
                outgoing.push(self.status_record(&event).await?);
            }
            Resolution::Exhausted {
                command,
                error,
                attempts,
                first_failure,
                last_failure,
            } => {
                report.dead_lettered += 1;
                report.exhausted += 1;
                self.metrics.dead_lettered(DlqReason::RetriesExhausted, 1);
                self.metrics.outcome(SubmissionState::DeadLettered, 1);
                outgoing.push(self.dead_letter(
                    record,
                    DlqReason::RetriesExhausted,
                    error.code(),
                    &error.to_string(),
                    attempts,
                    first_failure,
                    last_failure,
                ));
                let mut event = base_event(
                    &command.envelope,
                    record,
                    &command.fingerprint,
                    SubmissionState::DeadLettered,
                    attempts,
                );
                event.applied_at = Some(now);
                event.error = Some(StatusError {
                    code: error.code().into(),
                    message: error.to_string(),
                    retryable: true,
                });
                outgoing.push(self.status_record(&event).await?);
            }
            Resolution::Dead(dl) => {
                warn!(
                    reason = dl.reason.as_str(),
                    code = %dl.code,
                    submission_id = %dl.envelope.as_ref().map(|e| e.submission_id().to_string()).unwrap_or_default(),
                    topic = %record.topic,
                    partition = record.partition,
                    offset = record.offset,
                    "record dead-lettered"
                );
                report.dead_lettered += 1;
                self.metrics.dead_lettered(dl.reason, 1);
                outgoing.push(self.dead_letter(
                    record,
                    dl.reason,
                    &dl.code,
                    &dl.message,
                    0,
                    now,
                    now,
                ));
                if let Some(envelope) = &dl.envelope {
                    self.metrics.outcome(SubmissionState::DeadLettered, 1);
                    let fingerprint = raw_fingerprint(record.value.as_deref().unwrap_or_default());
                    let mut event = base_event(
                        envelope,
                        record,
                        &fingerprint,
                        SubmissionState::DeadLettered,
                        0,
                    );
                    event.applied_at = Some(now);
                    event.error = Some(StatusError {
                        code: dl.code.clone(),
                        message: dl.message.clone(),
                        retryable: false,
                    });
                    outgoing.push(self.status_record(&event).await?);
                }
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn dead_letter(
        &self,
        record: &ConsumedRecord,
        reason: DlqReason,
        code: &str,
        message: &str,
        attempts: u32,
        first_failure: OffsetDateTime,
        last_failure: OffsetDateTime,
    ) -> OutgoingRecord {
        let failure = DlqFailure {
            reason,
            error_class: code.to_owned(),
            error_message: message.to_owned(),
            attempts,
            original_topic: record.topic.clone(),
            original_partition: record.partition,
            original_offset: record.offset,
            original_timestamp_ms: record.timestamp_ms,
            first_failure_at: first_failure,
            last_failure_at: last_failure,
            worker_id: self.worker_id.clone(),
        };
        let mut headers = dlq_headers(&record.headers, &failure);
        let mut value = record.value.clone();
        let size = dlq::record_size(record.key.as_deref(), value.as_deref(), &headers);
        if size > DLQ_COPY_LIMIT {
            // A copy that cannot be produced would stop this partition for
            // good; a copy without its value still tells the operator what
            // failed and where the original is.
            let omitted = value.take().map_or(0, |v| v.len());
            headers.push(dlq::VALUE_OMITTED, omitted.to_string());
            tracing::error!(
                topic = %record.topic,
                partition = record.partition,
                offset = record.offset,
                bytes = size,
                limit = DLQ_COPY_LIMIT,
                "dead letter too large for the DLQ topic: its value is omitted; the original stays at its offset while retained"
            );
            self.metrics.dlq_value_omitted();
        }
        OutgoingRecord {
            topic: self.layout.dlq(),
            key: record.key.clone(),
            value,
            headers,
            partition: None,
        }
    }

    async fn status_record(&self, event: &StatusEvent) -> Result<OutgoingRecord, PipelineError> {
        let format = self.status_format.content_type();
        let value = self
            .codec
            .encode_status(event, format)
            .await
            .map_err(PipelineError::Codec)?;
        let mut headers = Headers::new();
        headers.push(cloudevents::CONTENT_TYPE, format.as_str());
        Ok(OutgoingRecord::new(
            self.layout.status(),
            event.submission_id.to_string(),
            value,
            headers,
        ))
    }

    /// Produces everything and waits for every acknowledgement, retrying
    /// failed sends; gives up (fatal) only after the retry budget.
    async fn produce_all(&self, mut outgoing: Vec<OutgoingRecord>) -> Result<(), PipelineError> {
        let started = Instant::now();
        let mut attempts = 0;
        while !outgoing.is_empty() {
            attempts += 1;
            let results = self.producer.send_all(&outgoing).await;
            let mut failed = Vec::new();
            let mut last_error = None;
            for (record, result) in outgoing.into_iter().zip(results) {
                if let Err(e) = result {
                    if !e.is_retryable() {
                        return Err(PipelineError::Produce(e));
                    }
                    failed.push(record);
                    last_error = Some(e);
                }
            }
            outgoing = failed;
            if let Some(e) = last_error {
                match self.next_delay(attempts, started.elapsed(), None) {
                    Some(delay) => {
                        warn!(error = %e, remaining = outgoing.len(), ?delay, "produce failed; retrying");
                        tokio::time::sleep(delay).await;
                    }
                    None => return Err(PipelineError::Produce(e)),
                }
            }
        }
        Ok(())
    }
}

impl Pipeline {
    /// The retry policy's next delay, jittered with the thread-local RNG
    /// (kept inside this call so no RNG is held across an await).
    fn next_delay(
        &self,
        attempts: u32,
        elapsed: std::time::Duration,
        hint: Option<std::time::Duration>,
    ) -> Option<std::time::Duration> {
        self.retry
            .next_delay(attempts, elapsed, hint, &mut rand::rng())
    }
}

fn split(chunk: Chunk) -> (Chunk, Chunk) {
    let mid = chunk.commands.len() / 2;
    let mut positions = chunk.positions;
    let mut commands = chunk.commands;
    let right = Chunk {
        positions: positions.split_off(mid),
        commands: commands.split_off(mid),
        exhausted_split_at: chunk.exhausted_split_at,
    };
    (
        Chunk {
            positions,
            commands,
            exhausted_split_at: chunk.exhausted_split_at,
        },
        right,
    )
}

fn base_event(
    envelope: &CommandEnvelope,
    record: &ConsumedRecord,
    fingerprint: &str,
    state: SubmissionState,
    attempts: u32,
) -> StatusEvent {
    let accepted_at = envelope
        .time
        .or_else(|| {
            record.timestamp_ms.and_then(|ms| {
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
            })
        })
        .unwrap_or_else(OffsetDateTime::now_utc);
    StatusEvent {
        submission_id: envelope.submission_id(),
        source: envelope.source.clone(),
        id: envelope.id.clone(),
        command_type: envelope.command_type.clone(),
        subject: envelope.subject.clone(),
        state,
        canonical_id: None,
        master_version: None,
        error: None,
        attempts,
        payload_fingerprint: fingerprint.to_owned(),
        accepted_at,
        applied_at: None,
        stale_after: envelope.stale_after,
        job_id: envelope.job_id.clone(),
        job_line: envelope.job_line,
        draft_id: envelope.draft_id.clone(),
        temp_id: envelope.temp_id.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(topic: &str, partition: i32, offset: i64) -> ConsumedRecord {
        ConsumedRecord {
            topic: topic.into(),
            partition,
            offset,
            key: None,
            value: None,
            headers: Headers::new(),
            timestamp_ms: None,
        }
    }

    /// Fails (retryably) every batch holding one of `failing`, or every batch
    /// while `down`; with `hang`, never answers; applies the rest. Counts
    /// calls, and the calls still running.
    #[derive(Default)]
    struct ScriptedMaster {
        failing: Vec<String>,
        down: bool,
        hang: bool,
        calls: std::sync::atomic::AtomicU32,
        running: Arc<std::sync::atomic::AtomicI32>,
    }

    /// Counts a call as running until it is dropped (finished or cancelled).
    struct Running(Arc<std::sync::atomic::AtomicI32>);

    impl Drop for Running {
        fn drop(&mut self) {
            self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[async_trait::async_trait]
    impl Master for ScriptedMaster {
        fn kind(&self) -> &'static str {
            "scripted"
        }
        fn handles(&self, _: &str) -> bool {
            true
        }
        async fn apply(&self, batch: &[Command]) -> Result<Vec<ApplyResult>, MasterError> {
            self.calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.running
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _running = Running(self.running.clone());
            if self.hang {
                std::future::pending::<()>().await;
            }
            if self.down || batch.iter().any(|c| self.failing.contains(&c.envelope.id)) {
                return Err(MasterError::Unavailable {
                    message: "could not obtain lock".into(),
                    retry_after: None,
                });
            }
            Ok(batch
                .iter()
                .map(|_| ApplyResult {
                    outcome: Outcome::Applied {
                        canonical_id: None,
                        version: None,
                    },
                    duplicate: false,
                    recorded_at: OffsetDateTime::now_utc(),
                })
                .collect())
        }
        async fn read(
            &self,
            _: &str,
            _: &str,
        ) -> Result<Option<(serde_json::Value, Option<i64>)>, MasterError> {
            Ok(None)
        }
        async fn expire_inbox(&self, _: OffsetDateTime) -> Result<u64, MasterError> {
            Ok(0)
        }
    }

    fn pipeline(master: Arc<ScriptedMaster>) -> Pipeline {
        Pipeline {
            codec: Arc::new(PayloadCodec::new(writ_codec::SchemaCatalog::builtin(), None).unwrap()),
            master,
            // Never used by `apply_all`; creating it connects nowhere.
            producer: RecordProducer::new(&writ_kafka::KafkaSettings::new("127.0.0.1:9")).unwrap(),
            layout: TopicLayout::new("t").unwrap(),
            limiter: Arc::new(AdaptiveRateLimiter::new(&Default::default())),
            retry: RetryPolicy {
                max_attempts: 2,
                initial_backoff_ms: 1,
                max_backoff_ms: 2,
                max_elapsed_ms: 10_000,
            },
            metrics: WorkerMetrics::new("t", "bulk"),
            worker_id: "w".into(),
            status_format: StatusFormat::Json,
            dead_letter_rejections: false,
            apply_lanes: 1,
        }
    }

    fn chunk(n: usize) -> Chunk {
        let commands: Vec<Command> = (0..n)
            .map(|i| {
                let envelope = CommandEnvelope::new(
                    format!("c-{i}"),
                    "/t",
                    "customer.upsert.v1",
                    writ_core::ContentType::Json,
                );
                Command {
                    submission_id: envelope.submission_id(),
                    envelope,
                    payload: serde_json::json!({}),
                    fingerprint: String::new(),
                }
            })
            .collect();
        Chunk {
            positions: (0..n).collect(),
            commands,
            exhausted_split_at: None,
        }
    }

    fn exhausted_ids(out: &[(usize, Resolution)]) -> Vec<String> {
        let mut ids: Vec<String> = out
            .iter()
            .filter_map(|(_, r)| match r {
                Resolution::Exhausted { command, .. } => Some(command.envelope.id.clone()),
                _ => None,
            })
            .collect();
        ids.sort();
        ids
    }

    #[tokio::test]
    async fn one_command_that_keeps_failing_does_not_take_its_batch_to_the_dlq() {
        for stuck in ["c-0", "c-5", "c-15"] {
            let master = Arc::new(ScriptedMaster {
                failing: vec![stuck.into()],
                ..Default::default()
            });
            let out = pipeline(master).apply_all(chunk(16)).await.unwrap();
            assert_eq!(out.len(), 16, "one resolution per command");
            let exhausted = exhausted_ids(&out);
            // The half holding it goes when its sibling had not succeeded yet
            // (it comes first); otherwise only the stuck command goes.
            assert!(
                exhausted.contains(&stuck.to_owned()),
                "{stuck}: {exhausted:?}"
            );
            assert!(
                exhausted.len() <= 8,
                "{stuck}: {} dead-lettered",
                exhausted.len()
            );
            if stuck == "c-15" {
                assert_eq!(exhausted, ["c-15"], "isolated once the master answers");
            }
        }
    }

    #[tokio::test]
    async fn a_master_that_is_down_is_not_bisected_command_by_command() {
        let master = Arc::new(ScriptedMaster {
            down: true,
            ..Default::default()
        });
        let out = pipeline(master.clone()).apply_all(chunk(16)).await.unwrap();
        assert_eq!(exhausted_ids(&out).len(), 16, "everything is dead-lettered");
        // The batch, then each half once: 3 chunks × 2 attempts.
        assert_eq!(master.calls.load(std::sync::atomic::Ordering::Relaxed), 6);
    }

    #[tokio::test]
    async fn an_abandoned_batch_stops_the_applies_of_its_lanes() {
        use std::sync::atomic::Ordering::{Relaxed, SeqCst};
        let master = Arc::new(ScriptedMaster {
            hang: true,
            ..Default::default()
        });
        let pipeline = Arc::new(Pipeline {
            apply_lanes: 2,
            ..pipeline(master.clone())
        });
        let all = chunk(32);
        let records: Vec<ConsumedRecord> = all
            .commands
            .iter()
            .enumerate()
            .map(|(i, c)| ConsumedRecord {
                key: Some(c.envelope.id.clone().into_bytes()),
                ..at("t", 0, i as i64)
            })
            .collect();
        let decoded = all.commands.into_iter().map(Decoded::Command).collect();
        let apply = pipeline.apply(records, decoded);
        // The drain timeout of the run loop: the batch is abandoned.
        let abandoned = tokio::time::timeout(std::time::Duration::from_millis(200), apply).await;
        assert!(abandoned.is_err(), "a hanging master never answers");
        assert_eq!(master.calls.load(Relaxed), 2, "both lanes were applying");
        // Aborted tasks are dropped on the runtime's next turn.
        for _ in 0..100 {
            if master.running.load(SeqCst) == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(
            master.running.load(SeqCst),
            0,
            "no lane keeps applying an abandoned batch"
        );
    }

    #[test]
    fn an_entity_keeps_one_lane_and_one_partition_fills_every_lane() {
        let keyed = |partition, offset, key: &str| ConsumedRecord {
            key: Some(key.as_bytes().to_vec()),
            ..at("t", partition, offset)
        };
        // One partition, 64 entities, each twice.
        let records: Vec<ConsumedRecord> = (0..128)
            .map(|i| keyed(0, i, &format!("entity-{}", i % 64)))
            .collect();
        let lanes = lane_assignment(&records, 2);
        for i in 0..64 {
            assert_eq!(lanes[i], lanes[i + 64], "entity-{i} spans two lanes");
        }
        let first = lanes.iter().filter(|&&l| l == 0).count();
        assert!(
            (32..=96).contains(&first),
            "one partition's entities spread over both lanes: {first} of 128 in lane 0"
        );
        // The same key gets the same lane in another batch, on another partition.
        assert_eq!(lane_assignment(&[keyed(3, 9, "entity-7")], 2)[0], lanes[7]);
        // Keyless records stay with their partition.
        let keyless = vec![at("t", 5, 0), at("t", 0, 0), at("t", 5, 1), at("t", 0, 1)];
        let lanes = lane_assignment(&keyless, 4);
        assert_eq!((lanes[0], lanes[1]), (lanes[2], lanes[3]));
        assert!(lane_assignment(&records, 1).iter().all(|&l| l == 0));
    }
}
