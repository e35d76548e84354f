//! The idempotent producer every writ component writes with: commands, status
//! events, DLQ records and replays all go through [`RecordProducer`], so
//! `acks=all` + idempotence and the error classification apply everywhere.

use std::time::Duration;

use futures::future::join_all;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use writ_core::{cloudevents, CommandEnvelope, Headers};

use crate::error::KafkaClientError;
use crate::headers::to_kafka;
use crate::settings::KafkaSettings;

/// A record to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingRecord {
    /// Destination topic.
    pub topic: String,
    /// Key bytes (the partitioner hashes it).
    pub key: Option<Vec<u8>>,
    /// Value bytes; None produces a tombstone.
    pub value: Option<Vec<u8>>,
    /// Headers, in order.
    pub headers: Headers,
    /// An explicit partition, bypassing the partitioner.
    pub partition: Option<i32>,
}

impl OutgoingRecord {
    /// A keyed record with a value and headers.
    pub fn new(
        topic: impl Into<String>,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        headers: Headers,
    ) -> Self {
        Self {
            topic: topic.into(),
            key: Some(key.into()),
            value: Some(value.into()),
            headers,
            partition: None,
        }
    }

    /// A command record: key = entity key (or id), CloudEvents binary-mode headers.
    pub fn command(topic: impl Into<String>, envelope: &CommandEnvelope, payload: Vec<u8>) -> Self {
        Self::new(
            topic,
            envelope.partition_key().as_bytes(),
            payload,
            cloudevents::to_headers(envelope),
        )
    }
}

/// Where an acknowledged record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// An idempotent (`acks=all`) producer.
#[derive(Clone)]
pub struct RecordProducer {
    producer: FutureProducer,
    queue_timeout: Duration,
}

impl RecordProducer {
    /// Builds a producer from settings.
    pub fn new(settings: &KafkaSettings) -> Result<Self, KafkaClientError> {
        let producer = settings
            .producer_config()?
            .create()
            .map_err(|e| KafkaClientError::kafka("create producer", e))?;
        Ok(Self {
            producer,
            queue_timeout: Duration::from_secs(5),
        })
    }

    /// How long `send` waits for room when librdkafka's local queue is full.
    pub fn with_queue_timeout(mut self, timeout: Duration) -> Self {
        self.queue_timeout = timeout;
        self
    }

    /// Produces one record and waits for the broker's acknowledgement.
    pub async fn send(&self, record: &OutgoingRecord) -> Result<Delivered, KafkaClientError> {
        let future_record = to_future_record(record);
        // librdkafka retries transient broker errors itself until
        // `message.timeout.ms`; `queue_timeout` only covers a full local queue.
        match self
            .producer
            .send(future_record, Timeout::After(self.queue_timeout))
            .await
        {
            Ok(d) => Ok(Delivered {
                partition: d.partition,
                offset: d.offset,
            }),
            Err((e, _)) => Err(KafkaClientError::kafka("produce", e)),
        }
    }

    /// Produces records pipelined and waits for every acknowledgement.
    ///
    /// Results are in input order. Records of one key keep their order because
    /// the producer is idempotent (ordering is guaranteed with up to 5 in flight).
    pub async fn send_all(
        &self,
        records: &[OutgoingRecord],
    ) -> Vec<Result<Delivered, KafkaClientError>> {
        let mut pending = Vec::with_capacity(records.len());
        for record in records {
            let attempt_deadline = tokio::time::Instant::now() + self.queue_timeout;
            loop {
                match self.producer.send_result(to_future_record(record)) {
                    Ok(delivery) => {
                        pending.push(Ok(delivery));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                        if tokio::time::Instant::now() < attempt_deadline =>
                    {
                        // Keep the record and let librdkafka drain its queue.
                        self.producer.poll(Duration::from_millis(0));
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err((e, _)) => {
                        pending.push(Err(KafkaClientError::kafka("produce", e)));
                        break;
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(pending.len());
        let futures = pending.into_iter().map(|p| async move {
            match p {
                Err(e) => Err(e),
                Ok(fut) => match fut.await {
                    Ok(Ok(d)) => Ok(Delivered {
                        partition: d.partition,
                        offset: d.offset,
                    }),
                    Ok(Err((e, _))) => Err(KafkaClientError::kafka("produce", e)),
                    Err(_canceled) => Err(KafkaClientError::kafka("produce", KafkaError::Canceled)),
                },
            }
        });
        out.extend(join_all(futures).await);
        out
    }

    /// Waits until every queued record is acknowledged or `timeout` passes.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaClientError> {
        self.producer
            .flush(Timeout::After(timeout))
            .map_err(|e| KafkaClientError::kafka("flush", e))
    }

    /// The underlying rdkafka producer, for what this wrapper does not cover.
    pub fn inner(&self) -> &FutureProducer {
        &self.producer
    }
}

fn to_future_record(record: &OutgoingRecord) -> FutureRecord<'_, [u8], [u8]> {
    let mut r = FutureRecord::to(&record.topic).headers(to_kafka(&record.headers));
    if let Some(k) = &record.key {
        r = r.key(k.as_slice());
    }
    if let Some(v) = &record.value {
        r = r.payload(v.as_slice());
    }
    if let Some(p) = record.partition {
        r = r.partition(p);
    }
    r
}
