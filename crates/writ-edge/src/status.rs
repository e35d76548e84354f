//! The status consumer: reads `<domain>.status`, keeps the events that answer
//! this edge's outbox rows (`ce_source` `/tenants/<tenant>/edge`, `ce_id` an
//! outbox id) and moves the rows and their records: `APPLIED` → `SYNCED` with
//! the canonical id and master version, `REJECTED` / `DEAD_LETTERED` →
//! `REJECTED` with the error, `CONFLICT` → a conflicts row for the policy.
//!
//! Offsets are stored only after the local transaction committed, so a crash
//! re-reads the events, and applying an event twice is a no-op (the row has
//! left its awaiting state).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::CommitMode;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use writ_codec::PayloadCodec;
use writ_core::{Classified, StatusEvent};
use writ_kafka::{BatchConsumer, BatchLimits, ConsumedRecord, KafkaClientError};

use crate::backoff::Backoff;
use crate::config::CollectionConfig;
use crate::metrics;
use crate::store::{LocalStore, StatusEffect};
use crate::sync::ConflictPolicy;

/// The suffix of the `ce_source` the relay publishes with.
pub const EDGE_SOURCE_SUFFIX: &str = "/edge";

/// The `ce_source` of an edge write for a principal's source (`/tenants/acme`).
pub fn edge_source(principal_source: &str) -> String {
    format!("{principal_source}{EDGE_SOURCE_SUFFIX}")
}

/// Whether a status event can answer an edge write at all (a cheap filter
/// before the store lookup, which is the real test).
pub fn is_edge_source(source: &str) -> bool {
    source.starts_with("/tenants/") && source.ends_with(EDGE_SOURCE_SUFFIX)
}

const LIMITS: BatchLimits = BatchLimits {
    max_records: 500,
    max_bytes: 4 << 20,
    linger: Duration::from_millis(20),
};

/// Applies status events to the local store.
pub struct StatusConsumer {
    consumer: BatchConsumer,
    codec: Arc<PayloadCodec>,
    store: LocalStore,
    collections: Arc<BTreeMap<String, CollectionConfig>>,
    conflicts: Arc<Notify>,
}

impl StatusConsumer {
    /// A consumer of the status topic; `conflicts` is notified when an
    /// automatically resolved conflict is recorded.
    pub fn new(
        consumer: BatchConsumer,
        codec: Arc<PayloadCodec>,
        store: LocalStore,
        collections: Arc<BTreeMap<String, CollectionConfig>>,
        conflicts: Arc<Notify>,
    ) -> Self {
        Self {
            consumer,
            codec,
            store,
            collections,
            conflicts,
        }
    }

    /// Consumes until `shutdown`; fails only when the consumer itself is broken.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), KafkaClientError> {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        loop {
            let batch = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                batch = self.consumer.next_batch(LIMITS) => batch?,
            };
            for record in &batch {
                if !self.handle(record, &mut backoff, &shutdown).await {
                    // Shut down mid-batch: nothing of it is stored, so it is read again.
                    return self.finish();
                }
            }
            self.consumer.store_offsets(
                batch
                    .iter()
                    .map(|r| (r.topic.as_str(), r.partition, r.offset)),
            )?;
            if let Err(e) = self.consumer.commit(CommitMode::Async) {
                warn!(error = %e, "status offset commit failed; the next commit covers it");
            }
        }
        self.finish()
    }

    fn finish(&self) -> Result<(), KafkaClientError> {
        if let Err(e) = self.consumer.commit(CommitMode::Sync) {
            warn!(error = %e, "final status offset commit failed; events are re-read (no-ops)");
        }
        Ok(())
    }

    /// Applies one record, retrying store and registry failures; false on shutdown.
    async fn handle(
        &self,
        record: &ConsumedRecord,
        backoff: &mut Backoff,
        shutdown: &CancellationToken,
    ) -> bool {
        let Some(value) = record.value.as_deref() else {
            return true;
        };
        let content_type = record
            .headers
            .get_str(writ_core::cloudevents::CONTENT_TYPE)
            .unwrap_or("application/avro")
            .to_owned();
        loop {
            let attempt = async {
                let event = match self.codec.decode_status(&content_type, value).await {
                    Ok(e) => e,
                    Err(e) if e.is_retryable() => return Err(e.to_string()),
                    Err(e) => {
                        warn!(error = %e, topic = %record.topic, partition = record.partition,
                              offset = record.offset, "undecodable status event skipped");
                        return Ok(());
                    }
                };
                if !is_edge_source(&event.source) {
                    return Ok(());
                }
                self.apply(&event).await.map_err(|e| e.to_string())
            };
            match attempt.await {
                Ok(()) => {
                    backoff.reset();
                    return true;
                }
                Err(e) => {
                    warn!(error = %e, "applying a status event failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
    }

    async fn apply(&self, event: &StatusEvent) -> Result<(), crate::store::StoreError> {
        let collections = self.collections.clone();
        let effect = self
            .store
            .apply_status(event, move |c| {
                collections
                    .get(c)
                    .map_or(ConflictPolicy::Manual, |c| c.conflict)
            })
            .await?;
        match effect {
            StatusEffect::Ignored => {}
            StatusEffect::Applied(state) => {
                metrics::status_applied(state.as_str());
                debug!(id = %event.id, state = %state, "edge write answered");
            }
            StatusEffect::Conflict {
                conflict_id,
                policy,
            } => {
                metrics::status_applied(event.state.as_str());
                metrics::conflict(policy.as_str());
                debug!(id = %event.id, conflict = %conflict_id, policy = policy.as_str(), "edge write conflicted");
                if policy != ConflictPolicy::Manual {
                    self.conflicts.notify_one();
                }
            }
        }
        Ok(())
    }
}
