//! The outbox relay: publishes pending outbox rows as commands on
//! `<domain>.commands` when their collection's sync window is due, and marks
//! a row published only after Kafka acknowledged it.
//!
//! Crash safety comes from identity, not from bookkeeping: a row's `ce_id` is
//! its outbox id and `ce_source` is the tenant's edge source, so a row
//! published again after a crash (acked, but not yet marked) is the same
//! submission and the worker's inbox answers it as a duplicate. Order per
//! entity comes from the store: a row is only publishable when no earlier
//! write of its entity is pending, in flight or parked in a conflict.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::Producer as _;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use writ_codec::{CodecError, PayloadCodec};
use writ_core::{Classified, CommandEnvelope, StatusError, TopicLayout};
use writ_kafka::{KafkaSettings, OutgoingRecord, RecordProducer};

use crate::backoff::Backoff;
use crate::config::{CollectionConfig, CommandFormat, RelayConfig};
use crate::metrics;
use crate::store::{LocalStore, Publishable, StoreError};
use crate::sync::expected_version;

/// How often finished outbox rows are pruned.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// Failed rounds in a row after which the producer is built afresh. An
/// idempotent producer whose in-flight requests timed out must re-establish
/// its producer id; a broker that answers slowly or wrongly after an outage
/// can leave it stuck, and a new producer (same rows, same `ce_id`s, so
/// duplicates are deduplicated downstream) is the way out.
const REBUILD_AFTER_FAILED_ROUNDS: u32 = 5;

/// What one relay round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Rows acknowledged by Kafka and marked published.
    pub published: usize,
    /// Rows whose publish failed; they stay pending for the next round.
    pub failed: usize,
    /// Rows refused locally because they can no longer be encoded.
    pub refused: usize,
    /// The first publish error of the round, for the log.
    pub first_error: Option<String>,
    /// A publish failed in a way only a new producer recovers from (fenced,
    /// unknown producer id, out-of-order sequence, fatal).
    pub producer_broken: bool,
}

/// Errors that leave an idempotent producer unable to publish again: after
/// in-flight requests timed out (a frozen broker), the producer bumps its
/// epoch, and a broker that then answers `ProducerFenced` or similar fences it
/// for good.
fn breaks_the_producer(e: &writ_kafka::KafkaClientError) -> bool {
    use rdkafka::types::RDKafkaErrorCode::*;
    matches!(
        e.code(),
        Some(
            ProducerFenced
                | InvalidProducerEpoch
                | UnknownProducerId
                | OutOfOrderSequenceNumber
                | InvalidProducerIdMapping
                | Fatal
        )
    )
}

/// Publishes the outbox.
pub struct Relay {
    store: LocalStore,
    producer: std::sync::Mutex<RecordProducer>,
    settings: Option<KafkaSettings>,
    codec: Arc<PayloadCodec>,
    layout: TopicLayout,
    collections: Arc<BTreeMap<String, CollectionConfig>>,
    config: RelayConfig,
    format: CommandFormat,
    wake: Arc<Notify>,
    retention: Duration,
}

impl Relay {
    /// A relay over `store`, publishing with `producer`. `wake` is notified by
    /// every local write, so immediate collections do not wait for the poll.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: LocalStore,
        producer: RecordProducer,
        codec: Arc<PayloadCodec>,
        layout: TopicLayout,
        collections: Arc<BTreeMap<String, CollectionConfig>>,
        config: RelayConfig,
        format: CommandFormat,
        wake: Arc<Notify>,
        retention: Duration,
    ) -> Self {
        Self {
            store,
            producer: std::sync::Mutex::new(producer),
            settings: None,
            codec,
            layout,
            collections,
            config,
            format,
            wake,
            retention,
        }
    }

    /// Lets the relay build a fresh producer from `settings` when publishing
    /// keeps failing (or librdkafka reports a fatal producer error).
    pub fn with_rebuild(mut self, settings: KafkaSettings) -> Self {
        self.settings = Some(settings);
        self
    }

    fn producer(&self) -> RecordProducer {
        self.producer
            .lock()
            .expect("producer slot poisoned by a panic")
            .clone()
    }

    /// Replaces the producer; the old one is dropped off the async runtime
    /// (dropping purges and briefly flushes). Rows it held stay pending.
    async fn rebuild_producer(&self, why: &str) {
        let Some(settings) = &self.settings else {
            return;
        };
        match RecordProducer::new(settings) {
            Ok(fresh) => {
                warn!(reason = why, "building a new Kafka producer for the relay");
                let old = std::mem::replace(
                    &mut *self
                        .producer
                        .lock()
                        .expect("producer slot poisoned by a panic"),
                    fresh,
                );
                let _ = tokio::task::spawn_blocking(move || drop(old)).await;
            }
            Err(e) => {
                warn!(error = %e, "building a new Kafka producer failed; keeping the old one")
            }
        }
    }

    /// One round: for every collection whose window is due at `now`, publish
    /// what may be published — including rows published more than
    /// `relay.republish_after_ms` ago and still unanswered. Failed rows stay pending.
    pub async fn run_once(&self, now: OffsetDateTime) -> Result<RoundReport, StoreError> {
        let mut report = RoundReport::default();
        let unanswered_before = now - self.config.republish_after();
        for summary in self.store.pending_summary(unanswered_before).await? {
            metrics::pending(&summary.collection, summary.pending);
            let Some(collection) = self.collections.get(&summary.collection) else {
                warn!(collection = %summary.collection, pending = summary.pending,
                      "outbox rows of a collection that is no longer configured stay pending");
                continue;
            };
            let age = (now - summary.oldest).try_into().unwrap_or(Duration::ZERO);
            if !collection.window().is_due(summary.pending, age) {
                continue;
            }
            loop {
                let rows = self
                    .store
                    .publishable(
                        &summary.collection,
                        self.config.max_batch,
                        unanswered_before,
                    )
                    .await?;
                let full = rows.len() == self.config.max_batch;
                if rows.is_empty() {
                    break;
                }
                let round = self.publish(&summary.collection, collection, rows).await?;
                report.published += round.published;
                report.failed += round.failed;
                report.refused += round.refused;
                if report.first_error.is_none() {
                    report.first_error = round.first_error;
                }
                report.producer_broken |= round.producer_broken;
                if round.failed > 0 || !full {
                    break;
                }
            }
        }
        Ok(report)
    }

    async fn publish(
        &self,
        name: &str,
        collection: &CollectionConfig,
        rows: Vec<Publishable>,
    ) -> Result<RoundReport, StoreError> {
        let mut report = RoundReport::default();
        let mut records = Vec::with_capacity(rows.len());
        let mut ids = Vec::with_capacity(rows.len());
        let mut retry_encoding = 0;
        for row in rows {
            match self.record(collection, &row).await {
                Ok(record) => {
                    records.push(record);
                    ids.push(row.event_id.clone());
                }
                Err(e) if e.is_retryable() => {
                    warn!(error = %e, event_id = %row.event_id, "cannot encode now (registry?); will retry");
                    retry_encoding += 1;
                }
                Err(e) => {
                    warn!(error = %e, event_id = %row.event_id, "queued write no longer matches its schema; refused");
                    let error = StatusError {
                        code: Classified::code(&e).to_owned(),
                        message: e.to_string(),
                        retryable: false,
                    };
                    self.store.reject_unpublishable(&row, &error).await?;
                    report.refused += 1;
                }
            }
        }
        let results = self.producer().send_all(&records).await;
        let mut acked = Vec::with_capacity(ids.len());
        for (id, result) in ids.into_iter().zip(results) {
            match result {
                Ok(_) => acked.push(id),
                Err(e) => {
                    debug!(error = %e, event_id = %id, "publish failed; the row stays pending");
                    report.first_error.get_or_insert_with(|| e.to_string());
                    report.producer_broken |= breaks_the_producer(&e);
                    report.failed += 1;
                }
            }
        }
        report.failed += retry_encoding;
        if !acked.is_empty() {
            self.store.mark_published(&acked).await?;
        }
        report.published = acked.len();
        metrics::published(name, report.published);
        if report.failed > 0 {
            metrics::publish_failed(name, report.failed);
        }
        Ok(report)
    }

    async fn record(
        &self,
        collection: &CollectionConfig,
        row: &Publishable,
    ) -> Result<OutgoingRecord, CodecError> {
        let format = self.format.content_type();
        let encoded = self
            .codec
            .encode(&row.command_type, &row.payload, format)
            .await?;
        let mut envelope = CommandEnvelope::new(
            row.event_id.clone(),
            row.source.clone(),
            row.command_type.clone(),
            format,
        )
        .with_subject(row.entity_key.clone());
        envelope.time = Some(row.created_at);
        envelope.data_schema = encoded.dataschema;
        envelope.temp_id = Some(row.record_id.clone());
        envelope.expected_version = expected_version(
            collection.versioned,
            row.expectation,
            row.known_master_version,
        );
        Ok(OutgoingRecord::command(
            self.layout.commands(),
            &envelope,
            encoded.bytes,
        ))
    }

    /// Runs rounds until `shutdown`: on every write, every poll interval, and
    /// after a back-off while publishing fails (the broker is down).
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(
            Duration::from_millis(self.config.initial_backoff_ms),
            Duration::from_millis(self.config.max_backoff_ms),
        );
        let mut prune = tokio::time::interval(PRUNE_INTERVAL);
        let mut failed_rounds = 0u32;
        let mut since_rebuild = 0u32;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.config.poll_interval()) => {}
                _ = prune.tick() => {
                    match self.store.prune(OffsetDateTime::now_utc() - self.retention).await {
                        Ok(n) if n > 0 => info!(deleted = n, "pruned finished outbox rows and conflicts"),
                        Ok(_) => {}
                        Err(e) => warn!(error = %e, "pruning the outbox failed; will retry"),
                    }
                    continue;
                }
            }
            let outcome = self.run_once(OffsetDateTime::now_utc()).await;
            let delay = match outcome {
                Ok(r) if r.failed == 0 => {
                    if failed_rounds > 0 {
                        info!(failed_rounds, "publishing recovered");
                        failed_rounds = 0;
                        since_rebuild = 0;
                    }
                    backoff.reset();
                    continue;
                }
                Ok(r) => {
                    failed_rounds += 1;
                    since_rebuild += 1;
                    if failed_rounds == 1 {
                        warn!(
                            failed = r.failed,
                            published = r.published,
                            error = r.first_error.as_deref().unwrap_or(""),
                            "publishing to Kafka failed; rows stay pending, backing off"
                        );
                    }
                    let fatal = self.producer().inner().client().fatal_error();
                    if let Some((code, reason)) = fatal {
                        self.rebuild_producer(&format!("fatal producer error {code:?}: {reason}"))
                            .await;
                        since_rebuild = 0;
                    } else if r.producer_broken {
                        let why = r.first_error.as_deref().unwrap_or("producer fenced");
                        self.rebuild_producer(why).await;
                        since_rebuild = 0;
                    } else if since_rebuild >= REBUILD_AFTER_FAILED_ROUNDS {
                        self.rebuild_producer(&format!("{failed_rounds} failed rounds in a row"))
                            .await;
                        since_rebuild = 0;
                    }
                    backoff.next_delay()
                }
                Err(e) => {
                    warn!(error = %e, "relay round failed on the local store; backing off");
                    backoff.next_delay()
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        let producer = self.producer();
        // Records still queued in librdkafka are either acked now or stay
        // pending in the outbox and are published again (deduplicated) later.
        let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(5))).await;
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use writ_kafka::KafkaClientError;

    use super::breaks_the_producer;

    fn produce_error(code: RDKafkaErrorCode) -> KafkaClientError {
        KafkaClientError::kafka("produce", KafkaError::MessageProduction(code))
    }

    #[test]
    fn fenced_producers_are_replaced_and_outages_are_waited_out() {
        assert!(breaks_the_producer(&produce_error(
            RDKafkaErrorCode::ProducerFenced
        )));
        assert!(breaks_the_producer(&produce_error(
            RDKafkaErrorCode::UnknownProducerId
        )));
        assert!(!breaks_the_producer(&produce_error(
            RDKafkaErrorCode::MessageTimedOut
        )));
        assert!(!breaks_the_producer(&produce_error(
            RDKafkaErrorCode::BrokerTransportFailure
        )));
    }
}
