//! Reading a topic as a log, outside any consumer group: every `writ`
//! command that looks at records (DLQ tooling, status, tail) scans through
//! here, so "the end of the topic" means the same thing everywhere.
//!
//! The end of a partition is the partition-EOF event of the fetch path, not
//! ListOffsets: some Kafka-protocol brokers (tansu) answer ListOffsets with
//! the base offset of the last batch, while the fetch response's high
//! watermark is exact.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use writ_kafka::{ConsumedRecord, KafkaClientError, KafkaSettings};

/// How long a bounded scan waits without any record or end-of-partition
/// event before it gives up: the broker is unreachable or stuck.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a scan failed.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The client could not be built or the broker refused a call.
    #[error(transparent)]
    Kafka(#[from] KafkaClientError),
    /// The topic is not in the cluster's metadata.
    #[error("topic `{0}` does not exist (create a domain's topics with `writ topics init`)")]
    NoSuchTopic(String),
    /// The topic has no partition of that number.
    #[error("topic `{topic}` has no partition {partition} (it has {count})")]
    NoSuchPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: i32,
        /// How many partitions it has.
        count: usize,
    },
    /// Nothing arrived for [`IDLE_TIMEOUT`] while reading to the end.
    #[error("no answer from the broker for {0:?} while reading `{1}`")]
    Stalled(Duration, String),
}

/// Where a scan starts in each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The oldest record still in the log.
    Beginning,
    /// Only records written from now on.
    End,
    /// The last `n` records of each partition.
    Tail(i64),
    /// A given offset.
    At(i64),
}

impl Start {
    fn offset(self) -> Offset {
        match self {
            Self::Beginning => Offset::Beginning,
            Self::End => Offset::End,
            Self::Tail(n) => Offset::OffsetTail(n),
            Self::At(o) => Offset::Offset(o),
        }
    }
}

/// What the caller wants after a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Keep reading.
    More,
    /// Stop the whole scan.
    Stop,
}

/// Keeps librdkafka's end-of-partition events out of the error log: a
/// reader expects them, they are how it knows it is done.
pub struct ReaderContext;

impl ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::PartitionEOF)
        ) || matches!(error, KafkaError::PartitionEOF(_));
        if !eof {
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }
}

impl ConsumerContext for ReaderContext {}

/// A group-less reader over one topic's partitions.
pub struct TopicReader {
    consumer: StreamConsumer<ReaderContext>,
    topic: String,
    partitions: Vec<i32>,
}

/// Where a bounded scan ended: per partition, the offset after the last
/// record read (absent for a partition in which nothing was read).
pub type ScanEnd = BTreeMap<i32, i64>;

impl TopicReader {
    /// Connects and looks the topic up.
    pub async fn open(settings: &KafkaSettings, topic: &str) -> Result<Self, ScanError> {
        Self::open_with_group(settings, topic, None).await
    }

    /// Like [`TopicReader::open`], with a consumer group to read and commit
    /// positions in (the group is never joined: partitions are assigned).
    pub async fn open_with_group(
        settings: &KafkaSettings,
        topic: &str,
        group: Option<&str>,
    ) -> Result<Self, ScanError> {
        let mut config = settings.reader_config().map_err(KafkaClientError::from)?;
        // An offset already deleted by retention restarts at the oldest record
        // still there, never silently at the end.
        config.set("auto.offset.reset", "earliest");
        if let Some(g) = group {
            config.set("group.id", g);
        }
        let consumer: StreamConsumer<ReaderContext> = config
            .create_with_context(ReaderContext)
            .map_err(|e| KafkaClientError::kafka("create reader", e))?;
        let topic_owned = topic.to_owned();
        let (consumer, metadata) = tokio::task::spawn_blocking(move || {
            let md = consumer.fetch_metadata(Some(&topic_owned), Duration::from_secs(15));
            (consumer, md)
        })
        .await
        .expect("metadata lookup does not panic");
        let metadata = metadata.map_err(|e| KafkaClientError::kafka("fetch metadata", e))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().iter().map(|p| p.id()).collect())
            .unwrap_or_default();
        if partitions.is_empty() {
            return Err(ScanError::NoSuchTopic(topic.to_owned()));
        }
        let mut partitions = partitions;
        partitions.sort_unstable();
        Ok(Self {
            consumer,
            topic: topic.to_owned(),
            partitions,
        })
    }

    /// The topic's partitions, ascending.
    pub fn partitions(&self) -> &[i32] {
        &self.partitions
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Fails unless `partition` exists.
    pub fn check_partition(&self, partition: i32) -> Result<(), ScanError> {
        if self.partitions.contains(&partition) {
            Ok(())
        } else {
            Err(ScanError::NoSuchPartition {
                topic: self.topic.clone(),
                partition,
                count: self.partitions.len(),
            })
        }
    }

    /// Starts reading `starts` (partition -> start); the scan ends at the
    /// end of each partition as it is when reached, or never with `follow`.
    pub fn open_scan(
        &self,
        starts: &BTreeMap<i32, Start>,
        follow: bool,
    ) -> Result<Scan<'_>, ScanError> {
        let mut tpl = TopicPartitionList::new();
        for (&p, start) in starts {
            self.check_partition(p)?;
            tpl.add_partition_offset(&self.topic, p, start.offset())
                .map_err(|e| KafkaClientError::kafka("assign", e))?;
        }
        self.consumer
            .assign(&tpl)
            .map_err(|e| KafkaClientError::kafka("assign", e))?;
        Ok(Scan {
            reader: self,
            open: starts.keys().copied().collect(),
            follow,
            end: ScanEnd::new(),
        })
    }

    /// Reads `starts` like [`TopicReader::open_scan`], handing every record
    /// to `on_record` in offset order per partition.
    pub async fn scan(
        &self,
        starts: &BTreeMap<i32, Start>,
        follow: bool,
        mut on_record: impl FnMut(ConsumedRecord) -> Next,
    ) -> Result<ScanEnd, ScanError> {
        let mut scan = self.open_scan(starts, follow)?;
        while let Some(record) = scan.next().await? {
            if on_record(record) == Next::Stop {
                break;
            }
        }
        Ok(scan.end.clone())
    }

    /// Reads every partition from the beginning to its end.
    pub async fn scan_all(
        &self,
        on_record: impl FnMut(ConsumedRecord) -> Next,
    ) -> Result<ScanEnd, ScanError> {
        let starts = self
            .partitions
            .iter()
            .map(|&p| (p, Start::Beginning))
            .collect();
        self.scan(&starts, false, on_record).await
    }

    /// The positions committed for this reader's group (partitions without one are absent).
    pub async fn committed(&self) -> Result<BTreeMap<i32, i64>, ScanError> {
        let mut tpl = TopicPartitionList::new();
        for &p in &self.partitions {
            tpl.add_partition(&self.topic, p);
        }
        let committed = self
            .consumer
            .committed_offsets(tpl, Duration::from_secs(15))
            .map_err(|e| KafkaClientError::kafka("fetch committed offsets", e))?;
        Ok(committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect())
    }

    /// Commits positions (partition -> next offset to read) for this reader's group, synchronously.
    pub fn commit(&self, positions: &BTreeMap<i32, i64>) -> Result<(), ScanError> {
        if positions.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (&p, &o) in positions {
            tpl.add_partition_offset(&self.topic, p, Offset::Offset(o))
                .map_err(|e| KafkaClientError::kafka("commit", e))?;
        }
        self.consumer
            .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
            .map_err(|e| KafkaClientError::kafka("commit replay position", e))?;
        Ok(())
    }

    /// Reads the one record at `partition:offset`, if it is still in the log.
    pub async fn read_one(
        &self,
        partition: i32,
        offset: i64,
    ) -> Result<Option<ConsumedRecord>, ScanError> {
        self.check_partition(partition)?;
        // A fetch past the end never reaches end-of-partition on some brokers,
        // and their ListOffsets may report the end a little early: start at
        // the reported end when the offset lies beyond it and read forward.
        // A blocking call of at most 15 s; `block_in_place` needs the
        // multi-threaded runtime, which `main` runs.
        let (_, high) = tokio::task::block_in_place(|| {
            self.consumer
                .fetch_watermarks(&self.topic, partition, Duration::from_secs(15))
        })
        .map_err(|e| KafkaClientError::kafka("fetch watermarks", e))?;
        let start = if offset >= high { high } else { offset };
        let mut found = None;
        let starts = [(partition, Start::At(start))].into_iter().collect();
        self.scan(&starts, false, |r| {
            if r.offset < offset {
                return Next::More;
            }
            if r.offset == offset {
                found = Some(r);
            }
            // Found, or past it (deleted or compacted away): done either way.
            Next::Stop
        })
        .await?;
        Ok(found)
    }
}

/// One pass over assigned partitions; dropping it unassigns them, so the
/// reader can start another.
pub struct Scan<'a> {
    reader: &'a TopicReader,
    open: BTreeSet<i32>,
    follow: bool,
    end: ScanEnd,
}

impl Scan<'_> {
    /// The next record, or None once every partition reached its end.
    pub async fn next(&mut self) -> Result<Option<ConsumedRecord>, ScanError> {
        let topic = &self.reader.topic;
        loop {
            if self.open.is_empty() {
                return Ok(None);
            }
            let next = if self.follow {
                Ok(self.reader.consumer.recv().await)
            } else {
                tokio::time::timeout(IDLE_TIMEOUT, self.reader.consumer.recv()).await
            };
            match next {
                Err(_) => return Err(ScanError::Stalled(IDLE_TIMEOUT, topic.clone())),
                Ok(Ok(m)) => {
                    let record = ConsumedRecord::from_message(&m);
                    if !self.open.contains(&record.partition) {
                        continue;
                    }
                    self.end.insert(record.partition, record.offset + 1);
                    return Ok(Some(record));
                }
                Ok(Err(KafkaError::PartitionEOF(p))) => {
                    if !self.follow {
                        self.open.remove(&p);
                    }
                }
                Ok(Err(e @ KafkaError::MessageConsumptionFatal(_))) => {
                    return Err(KafkaClientError::kafka("consume", e).into())
                }
                Ok(Err(e)) => {
                    // Transient (a leader moving, a broker restarting): librdkafka recovers.
                    tracing::warn!(error = %e, %topic, "read error; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

impl Drop for Scan<'_> {
    fn drop(&mut self) {
        // Leave the consumer reusable for another scan.
        let _ = self.reader.consumer.unassign();
    }
}
