//! Reading a whole topic once, for tools and tests: every record present
//! now, from the beginning of each partition.
//!
//! The end is found by quiet time rather than high watermarks, which some
//! Kafka-protocol brokers (tansu) report per produce batch instead of per
//! record; the cost is the quiet time at the end of every read.

use std::time::{Duration, Instant};

use rdkafka::config::FromClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::consumer::ConsumedRecord;
use crate::error::KafkaClientError;
use crate::settings::KafkaSettings;

/// [`read_until_quiet`] with 1.5 s of quiet and a one-minute limit: enough
/// for a local broker that has acknowledged everything it will get.
pub fn read_topic(
    settings: &KafkaSettings,
    topic: &str,
) -> Result<Vec<ConsumedRecord>, KafkaClientError> {
    read_until_quiet(
        settings,
        topic,
        Duration::from_millis(1500),
        Duration::from_secs(60),
    )
}

/// A consumer outside any group, assigned every partition of `topic` from its
/// beginning; a topic without partitions (one that does not exist) is an error.
pub fn reader_from_beginning<C: FromClientConfig + Consumer>(
    settings: &KafkaSettings,
    topic: &str,
) -> Result<C, KafkaClientError> {
    let consumer: C = settings
        .reader_config()?
        .set("enable.partition.eof", "false")
        .create()
        .map_err(|e| KafkaClientError::kafka("create a topic reader", e))?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| KafkaClientError::kafka("metadata", e))?;
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .map_err(|e| KafkaClientError::kafka("assign", e))?;
        }
    }
    if tpl.count() == 0 {
        return Err(KafkaClientError::Item {
            operation: "read",
            item: topic.to_owned(),
            code: RDKafkaErrorCode::UnknownTopicOrPartition,
        });
    }
    consumer
        .assign(&tpl)
        .map_err(|e| KafkaClientError::kafka("assign", e))?;
    Ok(consumer)
}

/// Reads every partition of `topic` from its beginning until no record has
/// arrived for `quiet`, or `limit` has passed. Blocking.
pub fn read_until_quiet(
    settings: &KafkaSettings,
    topic: &str,
    quiet: Duration,
    limit: Duration,
) -> Result<Vec<ConsumedRecord>, KafkaClientError> {
    let consumer: BaseConsumer = reader_from_beginning(settings, topic)?;
    let mut out = Vec::new();
    let mut last = Instant::now();
    let deadline = last + limit;
    while last.elapsed() < quiet && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            last = Instant::now();
            out.push(ConsumedRecord::from_message(&m));
        }
    }
    Ok(out)
}
