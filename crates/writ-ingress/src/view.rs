//! The status view: `<domain>.status` materialized into the local store, so
//! duplicates, status reads and CP-1 waits are answered without asking Kafka.
//!
//! One reader per status topic, manually assigned to every partition (no
//! consumer group: every ingress replica reads everything). It starts from
//! the offsets stored with the view, or from the beginning when the store is
//! empty, and reports "caught up" once every partition reached its end once;
//! until then the ingress does not accept submissions, because a duplicate
//! could not be recognised yet. Each batch of events is written in one
//! transaction together with its offsets; then per-submission waiters (CP-1)
//! are woken and every change is broadcast to subscribers.
//!
//! Two things in memory keep the store off a request's path: a Bloom filter
//! of every id the view holds ([`SeenIds`]: a key never seen, the common case,
//! needs no lookup), and the `ACCEPTED` events this instance announced that
//! its reader has not read back yet (so this instance answers its own new
//! submissions at once, before they reach the store through the topic).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use time::OffsetDateTime;
use tokio::sync::{broadcast, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;
use writ_codec::PayloadCodec;
use writ_core::StatusEvent;
use writ_kafka::{KafkaClientError, KafkaSettings};

use crate::metrics::IngressMetrics;
use crate::seen::SeenIds;
use crate::store::{StatusStore, StoreError};

/// Most events written to the store in one transaction.
const BATCH_MAX: usize = 512;
/// How long a batch gathers after its first event: short, because CP-1
/// waiters are woken only once their event is in the store. Under load
/// batches grow anyway while the previous one is written.
const BATCH_LINGER: Duration = Duration::from_millis(1);
/// Capacity of the status broadcast; a slower subscriber sees `Lagged`.
const BROADCAST_CAPACITY: usize = 4096;

type Waiters = HashMap<Uuid, Vec<oneshot::Sender<StatusEvent>>>;

/// The materialized status view, shared by the HTTP handlers and the readers.
#[derive(Debug)]
pub struct StatusView {
    store: StatusStore,
    waiters: Mutex<Waiters>,
    /// Every submission id in the store (and announced here).
    seen: SeenIds,
    /// `ACCEPTED` events announced by this instance, until read back.
    announced: Mutex<HashMap<Uuid, StatusEvent>>,
    events: broadcast::Sender<StatusEvent>,
    caught_up: AtomicBool,
    metrics: IngressMetrics,
}

impl StatusView {
    /// A view over `store`, its id filter filled from what the store holds;
    /// nothing is read from Kafka until [`StatusView::spawn_readers`].
    pub async fn open(store: StatusStore, metrics: IngressMetrics) -> Result<Self, StoreError> {
        let seen = SeenIds::default();
        let held = store.for_each_submission_id(|id| seen.insert(id)).await?;
        debug!(held, "submission id filter filled from the store");
        Ok(Self {
            store,
            waiters: Mutex::new(HashMap::new()),
            seen,
            announced: Mutex::new(HashMap::new()),
            events: broadcast::channel(BROADCAST_CAPACITY).0,
            caught_up: AtomicBool::new(false),
            metrics,
        })
    }

    /// The store (jobs, counts, purge).
    pub fn store(&self) -> &StatusStore {
        &self.store
    }

    /// Every status change the view applies from now on, in the order applied.
    pub fn subscribe(&self) -> broadcast::Receiver<StatusEvent> {
        self.events.subscribe()
    }

    /// Whether every status partition was read to its end at least once.
    pub fn is_caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    /// The latest known state of a submission.
    pub async fn get(&self, submission_id: Uuid) -> Result<Option<StatusEvent>, StoreError> {
        if let Some(e) = self.announced_event(submission_id) {
            return Ok(Some(e));
        }
        if !self.seen.may_contain(submission_id) {
            return Ok(None);
        }
        self.store.get(submission_id).await
    }

    /// The latest known state of several submissions (unknown ones are absent).
    pub async fn get_many(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, StatusEvent>, StoreError> {
        let mut out = HashMap::new();
        let mut ask = Vec::new();
        for id in ids {
            match self.announced_event(*id) {
                Some(e) => {
                    out.insert(*id, e);
                }
                None if self.seen.may_contain(*id) => ask.push(*id),
                None => {}
            }
        }
        if !ask.is_empty() {
            out.extend(self.store.get_many(&ask).await?);
        }
        Ok(out)
    }

    fn announced_event(&self, submission_id: Uuid) -> Option<StatusEvent> {
        self.announced
            .lock()
            .expect("announced map poisoned")
            .get(&submission_id)
            .cloned()
    }

    /// Remembers `ACCEPTED` events this instance is about to publish, so it
    /// answers for them before its reader reads them back. Call before
    /// producing: the reader can then never read one back before it is here.
    pub fn announce(&self, events: &[StatusEvent]) {
        let mut announced = self.announced.lock().expect("announced map poisoned");
        for e in events {
            self.seen.insert(e.submission_id);
            announced.insert(e.submission_id, e.clone());
        }
    }

    /// Forgets announcements whose publication failed (the client will retry).
    pub fn withdraw(&self, ids: impl IntoIterator<Item = Uuid>) {
        let mut announced = self.announced.lock().expect("announced map poisoned");
        for id in ids {
            announced.remove(&id);
        }
    }

    /// Announced here and not yet read back from the status topic.
    pub fn announced_len(&self) -> usize {
        self.announced.lock().expect("announced map poisoned").len()
    }

    /// Applies events read from the status topic (with the offsets read up
    /// to), forgets the announcements they cover, and notifies waiters and
    /// subscribers of what changed.
    pub async fn apply(
        &self,
        events: &[StatusEvent],
        offsets: &[(String, i32, i64)],
    ) -> Result<(), StoreError> {
        // Into the filter before the store: a lookup in between then asks
        // the store (and finds nothing yet), never skips it.
        for e in events {
            self.seen.insert(e.submission_id);
        }
        let changed = self.store.apply(events, offsets).await?;
        // In the store now, which answers for them from here on.
        self.withdraw(events.iter().map(|e| e.submission_id));
        self.metrics.view_events(changed.len() as u64);
        let violations = changed
            .iter()
            .filter(|e| {
                e.state.is_terminal()
                    && matches!((e.applied_at, e.stale_after), (Some(done), Some(deadline)) if done > deadline)
            })
            .count();
        self.metrics.staleness_violations(violations as u64);
        {
            let mut waiters = self.waiters.lock().expect("waiter map poisoned");
            for e in changed.iter().filter(|e| e.state.is_terminal()) {
                if let Some(list) = waiters.remove(&e.submission_id) {
                    for w in list {
                        let _ = w.send(e.clone());
                    }
                }
            }
        }
        for e in changed {
            // No subscriber is fine: the broadcast is for embedders.
            let _ = self.events.send(e);
        }
        Ok(())
    }

    /// Registers interest in the terminal state of `submission_id`. Register
    /// before checking the view, so an event landing in between is not missed.
    pub fn waiter(self: &Arc<Self>, submission_id: Uuid) -> Waiter {
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .expect("waiter map poisoned")
            .entry(submission_id)
            .or_default()
            .push(tx);
        Waiter {
            view: self.clone(),
            submission_id,
            rx,
        }
    }

    /// Starts one reader per status topic; they stop with `shutdown`.
    pub async fn spawn_readers(
        self: &Arc<Self>,
        settings: &KafkaSettings,
        codec: Arc<PayloadCodec>,
        topics: Vec<String>,
        shutdown: CancellationToken,
    ) -> Result<Vec<tokio::task::JoinHandle<Result<(), ViewError>>>, ViewError> {
        let fresh = self.store.is_empty().await?;
        let remaining = Arc::new(Mutex::new(HashSet::new()));
        let mut readers = Vec::new();
        for topic in &topics {
            let reader = Reader::new(self.clone(), settings, codec.clone(), topic, fresh).await?;
            remaining
                .lock()
                .expect("catch-up set poisoned")
                .extend(reader.partitions.iter().map(|p| (topic.clone(), *p)));
            readers.push(reader);
        }
        if remaining.lock().expect("catch-up set poisoned").is_empty() {
            self.caught_up.store(true, Ordering::Release);
        }
        info!(topics = ?topics, rebuild = fresh, "status view readers started");
        Ok(readers
            .into_iter()
            .map(|r| tokio::spawn(r.run(remaining.clone(), shutdown.clone())))
            .collect())
    }
}

/// A registered CP-1 wait for one submission's terminal state.
#[derive(Debug)]
pub struct Waiter {
    view: Arc<StatusView>,
    submission_id: Uuid,
    rx: oneshot::Receiver<StatusEvent>,
}

impl Waiter {
    /// The terminal event, or `None` when `timeout` passes first.
    pub async fn wait(&mut self, timeout: Duration) -> Option<StatusEvent> {
        tokio::time::timeout(timeout, &mut self.rx).await.ok()?.ok()
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        // Forget this waiter's sender so ids that never finish do not pile up.
        self.rx.close();
        let mut waiters = self.view.waiters.lock().expect("waiter map poisoned");
        if let Some(list) = waiters.get_mut(&self.submission_id) {
            list.retain(|s| !s.is_closed());
            if list.is_empty() {
                waiters.remove(&self.submission_id);
            }
        }
    }
}

/// Why the view cannot be built or kept up to date.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Kafka failed (metadata, assignment, a fatal consume error).
    #[error(transparent)]
    Kafka(#[from] KafkaClientError),
    /// The status topic does not exist.
    #[error(
        "status topic `{0}` does not exist; create the domain's topics first (`writ topics init`)"
    )]
    MissingTopic(String),
}

/// The readers' client context: reaching the end of a partition is how the
/// view knows it caught up, not an error worth a log line (librdkafka's
/// default context logs every one at ERROR).
struct ReaderContext;

impl ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF);
        if !eof {
            warn!(error = %error, reason, "status reader client error");
        }
    }
}

impl ConsumerContext for ReaderContext {}

struct Reader {
    view: Arc<StatusView>,
    consumer: Arc<StreamConsumer<ReaderContext>>,
    codec: Arc<PayloadCodec>,
    topic: String,
    partitions: Vec<i32>,
}

impl Reader {
    async fn new(
        view: Arc<StatusView>,
        settings: &KafkaSettings,
        codec: Arc<PayloadCodec>,
        topic: &str,
        fresh: bool,
    ) -> Result<Self, ViewError> {
        let mut config = settings.reader_config().map_err(KafkaClientError::from)?;
        // A stored offset past the retention restarts at the oldest record, never the newest.
        config.set("auto.offset.reset", "earliest");
        if !settings.properties.contains_key("fetch.wait.max.ms") {
            // CP-1 answers wait on this reader: a broker that does not answer
            // a fetch as soon as data arrives must not add librdkafka's
            // 500 ms default to each of them.
            config.set("fetch.wait.max.ms", "50");
        }
        let consumer: Arc<StreamConsumer<ReaderContext>> = Arc::new(
            config
                .create_with_context(ReaderContext)
                .map_err(|e| KafkaClientError::kafka("create status reader", e))?,
        );
        let md = {
            let consumer = consumer.clone();
            let topic = topic.to_owned();
            tokio::task::spawn_blocking(move || {
                consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))
            })
            .await
            .expect("metadata fetch does not panic")
            .map_err(|e| KafkaClientError::kafka("fetch status topic metadata", e))?
        };
        let partitions: Vec<i32> = md
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().iter().map(|p| p.id()).collect())
            .unwrap_or_default();
        if partitions.is_empty() {
            return Err(ViewError::MissingTopic(topic.to_owned()));
        }
        let stored = if fresh {
            HashMap::new()
        } else {
            view.store.offsets(topic).await?
        };
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            let offset = stored
                .get(p)
                .map_or(Offset::Beginning, |o| Offset::Offset(*o));
            tpl.add_partition_offset(topic, *p, offset)
                .map_err(|e| KafkaClientError::kafka("assign status partitions", e))?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| KafkaClientError::kafka("assign status partitions", e))?;
        Ok(Self {
            view,
            consumer,
            codec,
            topic: topic.to_owned(),
            partitions,
        })
    }

    async fn run(
        self,
        remaining: Arc<Mutex<HashSet<(String, i32)>>>,
        shutdown: CancellationToken,
    ) -> Result<(), ViewError> {
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                m = self.consumer.recv() => m,
            };
            let mut events = Vec::new();
            let mut offsets: HashMap<i32, i64> = HashMap::new();
            let mut eof = Vec::new();
            self.take(first, &mut events, &mut offsets, &mut eof)
                .await?;
            let deadline = tokio::time::Instant::now() + BATCH_LINGER;
            while events.len() < BATCH_MAX {
                match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                    Ok(m) => self.take(m, &mut events, &mut offsets, &mut eof).await?,
                    Err(_) => break,
                }
            }
            if !events.is_empty() || !offsets.is_empty() {
                let offsets: Vec<(String, i32, i64)> = offsets
                    .into_iter()
                    .map(|(p, o)| (self.topic.clone(), p, o))
                    .collect();
                self.view.apply(&events, &offsets).await?;
                debug!(topic = %self.topic, events = events.len(), "status batch applied");
            }
            if !eof.is_empty() && !self.view.is_caught_up() {
                let mut left = remaining.lock().expect("catch-up set poisoned");
                for p in eof {
                    left.remove(&(self.topic.clone(), p));
                }
                if left.is_empty() {
                    self.view.caught_up.store(true, Ordering::Release);
                    info!("status view caught up");
                }
            }
        }
    }

    async fn take(
        &self,
        message: Result<rdkafka::message::BorrowedMessage<'_>, KafkaError>,
        events: &mut Vec<StatusEvent>,
        offsets: &mut HashMap<i32, i64>,
        eof: &mut Vec<i32>,
    ) -> Result<(), ViewError> {
        let m = match message {
            Ok(m) => m,
            Err(KafkaError::PartitionEOF(p)) => {
                eof.push(p);
                return Ok(());
            }
            Err(e @ KafkaError::MessageConsumptionFatal(_)) => {
                return Err(KafkaClientError::kafka("read status topic", e).into())
            }
            Err(e) => {
                // librdkafka recovers from transient errors by itself.
                warn!(error = %e, topic = %self.topic, "status reader error; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Ok(());
            }
        };
        offsets.insert(m.partition(), m.offset() + 1);
        let Some(value) = m.payload() else {
            return Ok(()); // a tombstone: writ never writes them; nothing to materialize
        };
        let headers = writ_kafka::headers::from_kafka(m.headers());
        let content_type = headers
            .get_str(writ_core::cloudevents::CONTENT_TYPE)
            .unwrap_or("application/avro");
        match self.codec.decode_status(content_type, value).await {
            Ok(e) => events.push(e),
            Err(e) => {
                self.view.metrics.view_decode_failure();
                warn!(error = %e, topic = %self.topic, partition = m.partition(), offset = m.offset(), "undecodable status record skipped");
            }
        }
        Ok(())
    }
}

/// Counts pending submissions past their window and forgets what left the
/// dedupe window, periodically, until `shutdown`.
pub async fn housekeeping(
    view: Arc<StatusView>,
    retention: Duration,
    shutdown: CancellationToken,
) -> Result<(), ViewError> {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    let mut purged_at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let now = OffsetDateTime::now_utc();
        view.metrics
            .stale_pending(view.store.stale_pending(now).await?);
        view.metrics.unread_announcements(view.announced_len());
        if purged_at.elapsed() >= Duration::from_secs(600) {
            let gone = view.store.purge(now - retention).await?;
            purged_at = tokio::time::Instant::now();
            if gone > 0 {
                info!(
                    submissions = gone,
                    "purged submissions past the dedupe window"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests_support::event;
    use writ_core::SubmissionState;

    #[tokio::test]
    async fn announced_events_answer_until_stored_and_terminal_events_wake_waiters() {
        let store = StatusStore::open(None).await.unwrap();
        let view = Arc::new(StatusView::open(store, IngressMetrics).await.unwrap());
        let mut changes = view.subscribe();
        let accepted = event("k0", SubmissionState::Accepted);
        let id = accepted.submission_id;
        assert_eq!(view.get(id).await.unwrap(), None);
        view.announce(std::slice::from_ref(&accepted));
        assert_eq!(view.get(id).await.unwrap(), Some(accepted.clone()));
        assert_eq!(view.get_many(&[id]).await.unwrap()[&id], accepted);
        assert_eq!(view.store().get(id).await.unwrap(), None, "not stored yet");

        let mut waiter = view.waiter(id);
        // Read back: stored, no longer held in memory, announced to subscribers.
        view.apply(std::slice::from_ref(&accepted), &[])
            .await
            .unwrap();
        assert_eq!(view.announced_len(), 0);
        assert_eq!(view.get(id).await.unwrap(), Some(accepted.clone()));
        assert_eq!(changes.recv().await.unwrap(), accepted);
        let applied = event("k0", SubmissionState::Applied);
        view.apply(std::slice::from_ref(&applied), &[])
            .await
            .unwrap();
        assert_eq!(
            waiter.wait(Duration::from_secs(10)).await,
            Some(applied.clone())
        );
        assert_eq!(changes.recv().await.unwrap(), applied);
        assert_eq!(view.get(id).await.unwrap(), Some(applied));
        drop(waiter);
        assert!(
            view.waiters.lock().unwrap().is_empty(),
            "no waiter left behind"
        );

        // A failed publication is withdrawn: the key is new again.
        let other = event("k1", SubmissionState::Accepted);
        view.announce(std::slice::from_ref(&other));
        view.withdraw([other.submission_id]);
        assert_eq!(view.get(other.submission_id).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_reopened_view_finds_every_stored_id_through_its_filter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("view.db");
        let events: Vec<StatusEvent> = (0..300)
            .map(|i| event(&format!("k{i}"), SubmissionState::Applied))
            .collect();
        {
            let store = StatusStore::open(Some(&path)).await.unwrap();
            let view = StatusView::open(store, IngressMetrics).await.unwrap();
            view.apply(&events, &[]).await.unwrap();
        }
        let store = StatusStore::open(Some(&path)).await.unwrap();
        let view = StatusView::open(store, IngressMetrics).await.unwrap();
        for e in &events {
            assert_eq!(view.get(e.submission_id).await.unwrap().as_ref(), Some(e));
        }
        let ids: Vec<Uuid> = events.iter().map(|e| e.submission_id).collect();
        assert_eq!(view.get_many(&ids).await.unwrap().len(), 300);
    }

    #[tokio::test]
    async fn a_wait_without_an_answer_times_out_and_cleans_up() {
        let store = StatusStore::open(None).await.unwrap();
        let view = Arc::new(StatusView::open(store, IngressMetrics).await.unwrap());
        // Paused after the pool is up: sqlx' own timeouts must not auto-advance.
        tokio::time::pause();
        let id = event("k9", SubmissionState::Accepted).submission_id;
        let mut waiter = view.waiter(id);
        assert_eq!(waiter.wait(Duration::from_secs(30)).await, None);
        drop(waiter);
        assert!(view.waiters.lock().unwrap().is_empty());
    }
}
