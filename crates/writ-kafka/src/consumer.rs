//! A batch consumer for at-least-once processing: records are handed out in
//! bounded batches, offsets are stored only when the caller says a record's
//! effects are acknowledged, and stored offsets are committed after each
//! batch and synchronously when partitions are revoked.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{debug, info, warn};
use writ_core::Headers;

use crate::batch::{BatchBuilder, BatchLimits, Batchable, Push};
use crate::error::KafkaClientError;
use crate::headers::from_kafka;
use crate::settings::{KafkaSettings, PREFETCH_KBYTES, PREFETCH_MESSAGES};

/// One record read from Kafka, owned, with writ headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes (None for a tombstone).
    pub value: Option<Vec<u8>>,
    /// Headers, in order.
    pub headers: Headers,
    /// Kafka timestamp, epoch ms.
    pub timestamp_ms: Option<i64>,
}

impl ConsumedRecord {
    /// Copies a borrowed librdkafka message.
    pub fn from_message(m: &BorrowedMessage<'_>) -> Self {
        Self {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers: from_kafka(m.headers()),
            timestamp_ms: m.timestamp().to_millis(),
        }
    }
}

impl Batchable for ConsumedRecord {
    fn topic_partition(&self) -> (&str, i32) {
        (&self.topic, self.partition)
    }

    fn byte_size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len)
            + self.value.as_ref().map_or(0, Vec::len)
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.map_or(0, <[u8]>::len))
                .sum::<usize>()
    }
}

/// Shared between the rebalance callbacks (on librdkafka's poll path) and the batcher.
#[derive(Debug, Default)]
struct RebalanceLog {
    revoked: HashSet<(String, i32)>,
    generation: u64,
    next_offsets: NextOffsets,
}

/// The offset each partition's next record should have, to notice records a
/// broker never delivered.
///
/// On Apache Kafka a jump is normal after transaction markers, compaction or
/// retention; with idempotent, non-transactional producers on an uncompacted
/// topic it means the broker skipped records. Only partitions seen since
/// their latest assignment are tracked: a new assignment starts wherever the
/// group's committed offset says.
#[derive(Debug, Default)]
pub(crate) struct NextOffsets {
    next: Vec<(String, i32, i64)>,
}

impl NextOffsets {
    /// Notes a delivered record; returns the skipped range `[expected, offset)`
    /// when it lies past the next expected offset.
    pub(crate) fn observe(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Option<(i64, i64)> {
        let Some(entry) = self
            .next
            .iter_mut()
            .find(|(t, p, _)| *p == partition && t == topic)
        else {
            self.next.push((topic.to_owned(), partition, offset + 1));
            return None;
        };
        let expected = entry.2;
        entry.2 = offset + 1;
        (offset > expected).then_some((expected, offset))
    }

    /// Stops tracking a partition (revoked or newly assigned).
    pub(crate) fn forget(&mut self, topic: &str, partition: i32) {
        self.next
            .retain(|(t, p, _)| !(*p == partition && t == topic));
    }
}

/// Commits stored offsets synchronously on revoke and tells the batcher
/// which partitions left, so no record of theirs is processed here again.
pub struct WritConsumerContext {
    log: Arc<Mutex<RebalanceLog>>,
}

impl ClientContext for WritConsumerContext {}

impl ConsumerContext for WritConsumerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                // Offsets stored so far belong to acknowledged work; commit them
                // before the partitions move so the new owner starts after them.
                match consumer.commit_consumer_state(CommitMode::Sync) {
                    Ok(()) => {}
                    Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                    Err(e) => {
                        warn!(error = %e, "commit on revoke failed; the new owner may re-apply (a no-op thanks to the inbox)")
                    }
                }
                let mut log = self
                    .log
                    .lock()
                    .expect("rebalance log poisoned by a panic in a callback");
                for e in tpl.elements() {
                    log.revoked.insert((e.topic().to_owned(), e.partition()));
                    log.next_offsets.forget(e.topic(), e.partition());
                }
                log.generation += 1;
                info!(partitions = tpl.count(), "partitions revoked");
            }
            Rebalance::Assign(tpl) => {
                let mut log = self
                    .log
                    .lock()
                    .expect("rebalance log poisoned by a panic in a callback");
                for e in tpl.elements() {
                    log.revoked.remove(&(e.topic().to_owned(), e.partition()));
                    log.next_offsets.forget(e.topic(), e.partition());
                }
                log.generation += 1;
                info!(partitions = tpl.count(), "partitions assigned");
            }
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            if !matches!(e, KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) {
                warn!(error = %e, "offset commit failed");
            }
        }
    }
}

/// A group consumer that hands out bounded batches.
pub struct BatchConsumer {
    // Declared before `consumer`: the queues go first, the consumer closes last.
    partition_queues: Vec<StreamPartitionQueue<WritConsumerContext>>,
    consumer: Arc<StreamConsumer<WritConsumerContext>>,
    /// Which partition queue a gather starts with, so none is always last.
    next_queue: AtomicUsize,
    log: Arc<Mutex<RebalanceLog>>,
    /// Records read past the end of the last batch, the next one last.
    carry_over: Mutex<Vec<ConsumedRecord>>,
}

impl BatchConsumer {
    /// Joins `group_id` and subscribes to `topics`.
    pub fn new(
        settings: &KafkaSettings,
        group_id: &str,
        topics: &[&str],
    ) -> Result<Self, KafkaClientError> {
        let config = settings.consumer_config(group_id)?;
        Self::create(config, Vec::new(), topics)
    }

    /// Like [`BatchConsumer::new`], with a queue of its own for every
    /// partition the topics have at start, so a batch takes records from all
    /// the partitions that have some instead of from whichever one the last
    /// fetch happened to fill.
    ///
    /// On a backlog a shared queue holds a run of one partition at a time, and
    /// a batch of one partition repeats its entities over and over (a master
    /// writing each entity once per statement then needs many statements).
    /// Split queues also make librdkafka's prefetch thresholds per partition,
    /// so it keeps fetching the partitions that run low. The total prefetch is
    /// kept: the thresholds are divided by the partition count, and
    /// `max.partition.fetch.bytes` is 256 KiB, unless configured.
    /// Partitions added to a topic later are read through the shared queue
    /// (a partition never changes queues, which would risk its order).
    pub async fn with_partition_queues(
        settings: &KafkaSettings,
        group_id: &str,
        topics: &[&str],
        timeout: Duration,
    ) -> Result<Self, KafkaClientError> {
        let partitions = partitions_of(settings, topics, timeout).await?;
        let count = partitions.len().max(1);
        let config = settings
            .clone()
            .or_with(
                "queued.min.messages",
                (PREFETCH_MESSAGES / count).max(500).to_string(),
            )
            .or_with(
                "queued.max.messages.kbytes",
                (PREFETCH_KBYTES / count).max(256).to_string(),
            )
            // A fetched message keeps its whole fetch response in memory
            // until it is consumed, and queues drained side by side keep one
            // response per partition alive: smaller per-partition responses
            // bound that.
            .or_with("max.partition.fetch.bytes", "262144")
            .consumer_config(group_id)?;
        Self::create(config, partitions, topics)
    }

    fn create(
        config: rdkafka::ClientConfig,
        split: Vec<(String, i32)>,
        topics: &[&str],
    ) -> Result<Self, KafkaClientError> {
        let log = Arc::new(Mutex::new(RebalanceLog::default()));
        let context = WritConsumerContext { log: log.clone() };
        let consumer: Arc<StreamConsumer<WritConsumerContext>> = Arc::new(
            config
                .create_with_context(context)
                .map_err(|e| KafkaClientError::kafka("create consumer", e))?,
        );
        // Split before subscribing: no record of these partitions can have
        // reached the shared queue yet, so each partition has one source for
        // the consumer's whole life, and its order is that source's order.
        let mut partition_queues = Vec::with_capacity(split.len());
        for (topic, partition) in &split {
            let queue = consumer
                .split_partition_queue(topic, *partition)
                .ok_or_else(|| {
                    KafkaClientError::kafka(
                        "split partition queue",
                        KafkaError::Subscription(format!("{topic}/{partition}")),
                    )
                })?;
            partition_queues.push(queue);
        }
        consumer
            .subscribe(topics)
            .map_err(|e| KafkaClientError::kafka("subscribe", e))?;
        Ok(Self {
            partition_queues,
            consumer,
            next_queue: AtomicUsize::new(0),
            log,
            carry_over: Mutex::new(Vec::new()),
        })
    }

    /// Waits for the next record, then gathers more until a limit or the linger
    /// deadline closes the batch. Never returns an empty batch.
    pub async fn next_batch(
        &self,
        limits: BatchLimits,
    ) -> Result<Vec<ConsumedRecord>, KafkaClientError> {
        let mut builder = BatchBuilder::new(limits);
        let mut generation = self.generation();
        // Records taken but not yet batched, the next one last (popped).
        let mut ready = std::mem::take(&mut *self.carry_over.lock().expect("carry-over poisoned"));
        ready.retain(|r| !self.is_revoked(r));
        let first = match ready.pop() {
            Some(r) => r,
            None => loop {
                let r = self.recv_any().await?;
                generation = self.generation();
                if !self.is_revoked(&r) {
                    break r;
                }
            },
        };
        if let Err(first) = builder.push(first) {
            unreachable!("an empty batch takes any record, got {first:?}");
        }
        let deadline = tokio::time::Instant::now() + limits.linger;
        while !builder.is_full() {
            if ready.is_empty() {
                let room = limits.max_records.saturating_sub(builder.len());
                self.take_ready(&mut ready, room)?;
            }
            let next = match ready.pop() {
                Some(record) => record,
                None => match tokio::time::timeout_at(deadline, self.recv_any()).await {
                    Ok(record) => record?,
                    Err(_) => break,
                },
            };
            if self.absorb_rebalance(&mut builder, &mut generation) {
                // A rebalance happened while gathering: close the batch with the
                // records still ours, so the new assignment settles quickly.
                ready.push(next);
                break;
            }
            match builder.push(next) {
                Ok(Push::TakenAndFull) => break,
                Ok(Push::Taken) => {}
                Err(overflow) => {
                    ready.push(overflow);
                    break;
                }
            }
        }
        // A consumer cannot un-read, and seeking would drop prefetched data:
        // what was taken past the batch's end starts the next one.
        *self.carry_over.lock().expect("carry-over poisoned") = ready;
        let mut batch = builder.take();
        batch.retain(|r| !self.is_revoked(r));
        debug!(records = batch.len(), "batch gathered");
        Ok(batch)
    }

    /// The next record from any queue, waiting for one; after a transient
    /// error ([`received`]) it waits a moment before trying again.
    async fn recv_any(&self) -> Result<ConsumedRecord, KafkaClientError> {
        loop {
            let record = if self.partition_queues.is_empty() {
                received(self.consumer.recv().await)?
            } else {
                // The shared queue is polled too: it serves the rebalance
                // callbacks, and carries partitions added after start.
                let mut waits = Vec::with_capacity(self.partition_queues.len() + 1);
                waits.push(self.consumer.recv().map(received).boxed());
                for queue in &self.partition_queues {
                    waits.push(queue.recv().map(received).boxed());
                }
                futures::future::select_all(waits).await.0?
            };
            match record {
                Some(record) => {
                    self.note_position(&record);
                    return Ok(record);
                }
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Takes up to `room` records that are already prefetched, one per
    /// partition queue in turn, so the batch mixes the partitions evenly; the
    /// records end up in `out` in reverse order (popped from the back). The
    /// shared queue is tried once per call to serve rebalance callbacks.
    fn take_ready(
        &self,
        out: &mut Vec<ConsumedRecord>,
        room: usize,
    ) -> Result<(), KafkaClientError> {
        let queues = self.partition_queues.len();
        if queues == 0 || room == 0 {
            return Ok(());
        }
        let mut taken = Vec::new();
        if let Some(m) = self.consumer.recv().now_or_never() {
            taken.extend(received(m)?);
        }
        let start = self.next_queue.fetch_add(1, Ordering::Relaxed) % queues;
        let mut exhausted = vec![false; queues];
        let mut live = queues;
        let mut i = start;
        while taken.len() < room && live > 0 {
            if !exhausted[i] {
                // An empty queue, or one that just reported an error, sits
                // out the rest of this gather.
                match self.partition_queues[i].recv().now_or_never() {
                    Some(m) => match received(m)? {
                        Some(record) => taken.push(record),
                        None => {
                            exhausted[i] = true;
                            live -= 1;
                        }
                    },
                    None => {
                        exhausted[i] = true;
                        live -= 1;
                    }
                }
            }
            i = (i + 1) % queues;
        }
        for record in &taken {
            self.note_position(record);
        }
        out.extend(taken.into_iter().rev());
        Ok(())
    }

    /// Logs records the broker skipped (target `writ_kafka::gap`, debug): the
    /// evidence that tells a lost command the worker never received from one it
    /// mishandled.
    fn note_position(&self, r: &ConsumedRecord) {
        let skipped = self
            .log
            .lock()
            .expect("rebalance log poisoned")
            .next_offsets
            .observe(&r.topic, r.partition, r.offset);
        if let Some((expected, received)) = skipped {
            debug!(
                target: "writ_kafka::gap",
                topic = %r.topic,
                partition = r.partition,
                expected,
                received,
                "offset gap: the broker delivered a later record than the next expected one"
            );
        }
    }

    fn generation(&self) -> u64 {
        self.log.lock().expect("rebalance log poisoned").generation
    }

    fn is_revoked(&self, r: &ConsumedRecord) -> bool {
        let log = self.log.lock().expect("rebalance log poisoned");
        log.revoked.contains(&(r.topic.clone(), r.partition))
    }

    /// Drops records of revoked partitions; true when a rebalance happened.
    fn absorb_rebalance(
        &self,
        builder: &mut BatchBuilder<ConsumedRecord>,
        generation: &mut u64,
    ) -> bool {
        let log = self.log.lock().expect("rebalance log poisoned");
        if log.generation == *generation {
            return false;
        }
        *generation = log.generation;
        let dropped = builder.drop_partitions(&log.revoked);
        if dropped > 0 {
            debug!(dropped, "dropped records of revoked partitions");
        }
        true
    }

    /// Marks records as done: their offsets (+1) become committable.
    ///
    /// Call only after every effect of these records (master apply, status or
    /// DLQ produce) is acknowledged. Partitions revoked meanwhile are skipped.
    pub fn store_offsets<'a>(
        &self,
        done: impl IntoIterator<Item = (&'a str, i32, i64)>,
    ) -> Result<(), KafkaClientError> {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, offset) in done {
            let next = offset + 1;
            let stored = tpl
                .find_partition(topic, partition)
                .map(|e| e.offset().to_raw().unwrap_or(-1));
            let result = match stored {
                None => tpl.add_partition_offset(topic, partition, Offset::Offset(next)),
                Some(s) if s < next => {
                    tpl.set_partition_offset(topic, partition, Offset::Offset(next))
                }
                Some(_) => Ok(()),
            };
            result.map_err(|e| KafkaClientError::kafka("store offsets", e))?;
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        match self.consumer.store_offsets(&tpl) {
            Ok(()) => Ok(()),
            // A partition revoked since the batch was read: its new owner redoes the work.
            Err(KafkaError::StoreOffset(RDKafkaErrorCode::State)) => {
                debug!("some offsets not stored: partitions no longer assigned");
                Ok(())
            }
            Err(e) => Err(KafkaClientError::kafka("store offsets", e)),
        }
    }

    /// Commits stored offsets (`Async` after a batch, `Sync` at shutdown).
    pub fn commit(&self, mode: CommitMode) -> Result<(), KafkaClientError> {
        match self.consumer.commit_consumer_state(mode) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
            Err(e) => Err(KafkaClientError::kafka("commit", e)),
        }
    }

    /// Pauses fetching of these partitions (back-pressure).
    pub fn pause(&self, partitions: &[(&str, i32)]) -> Result<(), KafkaClientError> {
        self.consumer
            .pause(&tpl_of(partitions))
            .map_err(|e| KafkaClientError::kafka("pause", e))
    }

    /// Resumes fetching of these partitions.
    pub fn resume(&self, partitions: &[(&str, i32)]) -> Result<(), KafkaClientError> {
        self.consumer
            .resume(&tpl_of(partitions))
            .map_err(|e| KafkaClientError::kafka("resume", e))
    }

    /// Currently assigned (topic, partition) pairs.
    pub fn assignment(&self) -> Result<Vec<(String, i32)>, KafkaClientError> {
        let tpl = self
            .consumer
            .assignment()
            .map_err(|e| KafkaClientError::kafka("assignment", e))?;
        Ok(tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect())
    }

    /// Consumer lag per assigned partition: high watermark minus committed offset.
    pub fn lag(&self, timeout: Duration) -> Result<Vec<(String, i32, i64)>, KafkaClientError> {
        let committed = self
            .consumer
            .committed(timeout)
            .map_err(|e| KafkaClientError::kafka("committed offsets", e))?;
        let mut out = Vec::new();
        for e in committed.elements() {
            let (low, high) = self
                .consumer
                .fetch_watermarks(e.topic(), e.partition(), timeout)
                .map_err(|err| KafkaClientError::kafka("fetch watermarks", err))?;
            let position = match e.offset() {
                Offset::Offset(o) => o,
                _ => low,
            };
            out.push((
                e.topic().to_owned(),
                e.partition(),
                (high - position).max(0),
            ));
        }
        Ok(out)
    }

    /// The underlying rdkafka consumer, for what this wrapper does not cover.
    pub fn inner(&self) -> &StreamConsumer<WritConsumerContext> {
        &self.consumer
    }

    /// How many partitions have a queue of their own
    /// ([`BatchConsumer::with_partition_queues`]).
    pub fn partition_queue_count(&self) -> usize {
        self.partition_queues.len()
    }
}

/// A received message, owned; `None` after a transient consumer error (a
/// broker going away, a leader moving), which is logged and skipped:
/// librdkafka recovers from it by itself, and stopping the worker would only
/// add a restart to the outage.
fn received(
    m: KafkaResult<BorrowedMessage<'_>>,
) -> Result<Option<ConsumedRecord>, KafkaClientError> {
    match m {
        Ok(m) => Ok(Some(ConsumedRecord::from_message(&m))),
        Err(e @ KafkaError::MessageConsumptionFatal(_)) => {
            Err(KafkaClientError::kafka("consume", e))
        }
        Err(e) => {
            warn!(error = %e, "consumer error; librdkafka will recover");
            Ok(None)
        }
    }
}

/// Every (topic, partition) of `topics`, from the cluster's metadata.
async fn partitions_of(
    settings: &KafkaSettings,
    topics: &[&str],
    timeout: Duration,
) -> Result<Vec<(String, i32)>, KafkaClientError> {
    let client: BaseConsumer = settings
        .reader_config()?
        .create()
        .map_err(|e| KafkaClientError::kafka("create metadata client", e))?;
    let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for topic in &topics {
            let in_topic = |code| KafkaClientError::Item {
                operation: "fetch metadata",
                item: topic.clone(),
                code,
            };
            let metadata = client.fetch_metadata(Some(topic), timeout).map_err(|e| {
                match e.rdkafka_error_code() {
                    Some(code) => in_topic(code),
                    None => KafkaClientError::kafka("fetch metadata", e),
                }
            })?;
            for t in metadata.topics() {
                if let Some(e) = t.error() {
                    return Err(in_topic(e.into()));
                }
                out.extend(t.partitions().iter().map(|p| (t.name().to_owned(), p.id())));
            }
        }
        Ok(out)
    })
    .await
    .expect("metadata lookup panicked")
}

fn tpl_of(partitions: &[(&str, i32)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (t, p) in partitions {
        tpl.add_partition(t, *p);
    }
    tpl
}

#[cfg(test)]
mod tests {
    use super::NextOffsets;

    #[test]
    fn consecutive_offsets_are_no_gap_and_a_jump_is_reported_once() {
        let mut n = NextOffsets::default();
        assert_eq!(n.observe("t", 0, 10), None, "first record after assignment");
        assert_eq!(n.observe("t", 0, 11), None);
        assert_eq!(n.observe("t", 1, 3), None, "partitions are tracked apart");
        assert_eq!(n.observe("u", 0, 50), None, "topics are tracked apart");
        assert_eq!(n.observe("t", 0, 20), Some((12, 20)));
        assert_eq!(
            n.observe("t", 0, 21),
            None,
            "tracking goes on after the gap"
        );
        assert_eq!(n.observe("t", 1, 4), None);
    }

    #[test]
    fn a_forgotten_partition_starts_again_without_a_gap() {
        let mut n = NextOffsets::default();
        n.observe("t", 0, 10);
        n.forget("t", 0);
        assert_eq!(
            n.observe("t", 0, 500),
            None,
            "a new assignment starts anywhere"
        );
        assert_eq!(
            n.observe("t", 0, 400),
            None,
            "going back (a re-read) is no gap"
        );
        assert_eq!(n.observe("t", 0, 402), Some((401, 402)));
    }
}
