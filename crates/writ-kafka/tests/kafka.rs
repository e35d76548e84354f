//! writ-kafka against a real Kafka-protocol broker (or the embedded mock when
//! none is given): topic layout creation, idempotent produce, batch consume
//! with manual offsets, and redelivery of everything not stored.

use std::time::Duration;

use rdkafka::consumer::CommitMode;
use writ_core::cloudevents;
use writ_core::topics::{TopicLayout, TopicSettings};
use writ_core::{CommandEnvelope, ContentType};
use writ_kafka::{
    BatchConsumer, BatchLimits, KafkaSettings, OutgoingRecord, RecordProducer, TopicAdmin,
    TopicOutcome,
};
use writ_testkit::{kafka, unique_group, unique_name};

fn settings(bootstrap: &str) -> KafkaSettings {
    // Faster group joins for tests; harmless on Apache Kafka.
    KafkaSettings::new(bootstrap).with("session.timeout.ms", "6000")
}

fn limits(max_records: usize) -> BatchLimits {
    BatchLimits {
        max_records,
        max_bytes: 1 << 20,
        linger: Duration::from_millis(300),
    }
}

async fn create_layout(
    k: &writ_testkit::TestKafka,
    s: &KafkaSettings,
    domain: &str,
    partitions: i32,
) -> TopicLayout {
    let layout = TopicLayout::new(domain).unwrap();
    if k.is_mock() {
        // librdkafka's mock cluster has no CreateTopics handler.
        for topic in [
            layout.commands(),
            layout.bulk(),
            layout.status(),
            layout.dlq(),
        ] {
            k.create_mock_topic(&topic, partitions).unwrap();
        }
        return layout;
    }
    let admin = TopicAdmin::new(s).unwrap();
    let specs = layout.specs(&TopicSettings {
        partitions,
        status_partitions: partitions,
        ..TopicSettings::default()
    });
    admin.ensure_topics(&specs).await.unwrap();
    layout
}

#[tokio::test]
async fn topic_layout_is_created_once_and_described() {
    writ_testkit::init_tracing();
    let k = kafka().await;
    if k.is_mock() {
        eprintln!("skipping: librdkafka's mock cluster has no CreateTopics/DescribeConfigs (run tests/run.sh)");
        return;
    }
    let s = settings(k.bootstrap_servers());
    let layout = TopicLayout::new(&unique_name("layout")).unwrap();
    let specs = layout.specs(&TopicSettings {
        partitions: 3,
        ..TopicSettings::default()
    });
    let admin = TopicAdmin::new(&s).unwrap();

    let first = admin.ensure_topics(&specs).await.unwrap();
    assert_eq!(first.len(), 4);
    assert!(
        first.iter().all(|o| matches!(o, TopicOutcome::Created(_))),
        "{first:?}"
    );
    let second = admin.ensure_topics(&specs).await.unwrap();
    assert!(
        second
            .iter()
            .all(|o| matches!(o, TopicOutcome::AlreadyExists(_))),
        "running init twice must not fail: {second:?}"
    );

    // Metadata can lag creation briefly on any broker.
    let names: Vec<String> = specs.iter().map(|t| t.name.clone()).collect();
    let mut described = Vec::new();
    for _ in 0..50 {
        described = admin.describe(&names).await.unwrap();
        if described.iter().all(|d| d.exists) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let commands = described
        .iter()
        .find(|d| d.name == layout.commands())
        .unwrap();
    assert!(commands.exists);
    assert_eq!(commands.partitions.len(), 3);
    let status = described
        .iter()
        .find(|d| d.name == layout.status())
        .unwrap();
    if let Some(configs) = &status.configs {
        let policy = configs.iter().find(|(k, _)| k == "cleanup.policy");
        assert_eq!(
            policy.map(|(_, v)| v.as_str()),
            Some("compact,delete"),
            "{configs:?}"
        );
    } else {
        eprintln!(
            "broker does not describe topic configs ({:?}); skipped config check",
            k.kind()
        );
    }
    let missing = admin
        .describe(&["writ-no-such-topic-x".to_owned()])
        .await
        .unwrap();
    assert!(!missing[0].exists);
}

/// Produces `count` commands (`seq` 0..count) over `subjects` entities, all acknowledged.
async fn produce_commands(
    producer: &RecordProducer,
    layout: &TopicLayout,
    count: usize,
    subjects: usize,
) -> Vec<Result<writ_kafka::Delivered, writ_kafka::KafkaClientError>> {
    let records: Vec<OutgoingRecord> = (0..count)
        .map(|i| {
            let e = CommandEnvelope::new(
                format!("k-{i}"),
                "/tenants/acme/crm",
                "customer.upsert.v1",
                ContentType::Json,
            )
            .with_subject(format!("cust-{}", i % subjects));
            OutgoingRecord::command(
                layout.commands(),
                &e,
                format!("{{\"seq\":{i}}}").into_bytes(),
            )
        })
        .collect();
    let delivered = producer.send_all(&records).await;
    assert!(delivered.iter().all(Result::is_ok), "{delivered:?}");
    delivered
}

#[tokio::test]
async fn commands_round_trip_and_unstored_offsets_are_redelivered() {
    writ_testkit::init_tracing();
    let k = kafka().await;
    let s = settings(k.bootstrap_servers());
    let layout = create_layout(&k, &s, &unique_name("rt"), 2).await;
    let producer = RecordProducer::new(&s).unwrap();

    produce_commands(&producer, &layout, 10, 3).await;

    let group = unique_group("rt");
    let consumer = BatchConsumer::new(&s, &group, &[&layout.commands()]).unwrap();
    let mut seen = Vec::new();
    while seen.len() < 10 {
        let batch = tokio::time::timeout(Duration::from_secs(30), consumer.next_batch(limits(4)))
            .await
            .expect("records within 30 s")
            .unwrap();
        assert!(
            !batch.is_empty() && batch.len() <= 4,
            "batch of {}",
            batch.len()
        );
        seen.extend(batch);
    }
    assert_eq!(seen.len(), 10);
    // Same entity, same partition, offset order = production order.
    for subject in ["cust-0", "cust-1", "cust-2"] {
        let seqs: Vec<i64> = seen
            .iter()
            .filter(|r| r.key.as_deref() == Some(subject.as_bytes()))
            .map(|r| {
                let v: serde_json::Value =
                    serde_json::from_slice(r.value.as_ref().unwrap()).unwrap();
                v["seq"].as_i64().unwrap()
            })
            .collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{subject}: {seqs:?}");
    }
    let envelope = cloudevents::from_headers(&seen[0].headers).unwrap();
    assert_eq!(envelope.source, "/tenants/acme/crm");
    assert_eq!(envelope.command_type, "customer.upsert.v1");

    // Acknowledge only the records of one partition, then leave.
    let acked_partition = seen[0].partition;
    let acked: Vec<_> = seen
        .iter()
        .filter(|r| r.partition == acked_partition)
        .collect();
    consumer
        .store_offsets(
            acked
                .iter()
                .map(|r| (r.topic.as_str(), r.partition, r.offset)),
        )
        .unwrap();
    consumer.commit(CommitMode::Sync).unwrap();
    drop(consumer);

    // A new member of the group gets exactly the unacknowledged records again.
    let consumer = BatchConsumer::new(&s, &group, &[&layout.commands()]).unwrap();
    let expected = seen.len() - acked.len();
    let mut again = Vec::new();
    while again.len() < expected {
        let batch = tokio::time::timeout(Duration::from_secs(30), consumer.next_batch(limits(100)))
            .await
            .expect("redelivery within 30 s")
            .unwrap();
        again.extend(batch);
    }
    assert_eq!(again.len(), expected);
    assert!(again.iter().all(|r| r.partition != acked_partition));
    // Nothing more arrives: the acknowledged partition was not redelivered.
    let extra =
        tokio::time::timeout(Duration::from_secs(2), consumer.next_batch(limits(100))).await;
    assert!(extra.is_err(), "unexpected redelivery: {extra:?}");
}

#[tokio::test]
async fn partition_queues_mix_partitions_in_a_batch_and_keep_each_partitions_order() {
    writ_testkit::init_tracing();
    let k = kafka().await;
    let s = settings(k.bootstrap_servers());
    let partitions = 4;
    let layout = create_layout(&k, &s, &unique_name("pq"), partitions).await;
    let producer = RecordProducer::new(&s).unwrap();
    // A backlog first, as a worker finds it after an outage or a bulk load.
    let total = 800;
    let delivered = produce_commands(&producer, &layout, total, 16).await;
    let used: std::collections::HashSet<i32> = delivered
        .iter()
        .map(|d| d.as_ref().unwrap().partition)
        .collect();
    assert!(
        used.len() >= 3,
        "the keys spread over the partitions: {used:?}"
    );

    let consumer = BatchConsumer::with_partition_queues(
        &s,
        &unique_group("pq"),
        &[&layout.commands()],
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(consumer.partition_queue_count(), partitions as usize);
    let mut seen = Vec::new();
    let mut widest = 0;
    while seen.len() < total {
        let batch = tokio::time::timeout(Duration::from_secs(30), consumer.next_batch(limits(40)))
            .await
            .expect("records within 30 s")
            .unwrap();
        assert!(batch.len() <= 40, "batch of {}", batch.len());
        let in_batch: std::collections::HashSet<i32> = batch.iter().map(|r| r.partition).collect();
        widest = widest.max(in_batch.len());
        seen.extend(batch);
        // A worker applies a batch before it gathers the next. Without that
        // pause this loop outruns librdkafka, which hands a fetch response
        // over partition by partition as it parses it: every gather would find
        // only the partition just parsed, and the test would measure the race.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen.len(), total, "every record once");
    // A shared queue hands out a partition's run at a time (a batch of 40
    // then spans at most two partitions of 200 records each).
    assert!(
        widest >= 3,
        "batches took from at most {widest} partitions at once"
    );
    for p in &used {
        let offsets: Vec<i64> = seen
            .iter()
            .filter(|r| r.partition == *p)
            .map(|r| r.offset)
            .collect();
        assert!(
            offsets.windows(2).all(|w| w[0] + 1 == w[1]),
            "partition {p} out of order or with holes: {offsets:?}"
        );
    }
    let extra =
        tokio::time::timeout(Duration::from_secs(2), consumer.next_batch(limits(100))).await;
    assert!(extra.is_err(), "unexpected redelivery: {extra:?}");
}

#[tokio::test]
async fn partition_queues_for_a_missing_topic_fail_at_start_and_name_it() {
    let k = kafka().await;
    let s = settings(k.bootstrap_servers());
    let topic = unique_name("no-such-topic");
    let result = BatchConsumer::with_partition_queues(
        &s,
        &unique_group("pq-missing"),
        &[&topic],
        Duration::from_secs(10),
    )
    .await;
    let error = result
        .err()
        .expect("no queues without partitions")
        .to_string();
    assert!(error.contains(&topic), "{error}");
}

#[tokio::test]
async fn unsafe_settings_never_reach_a_client() {
    let s = KafkaSettings::new("127.0.0.1:1").with("enable.idempotence", "false");
    assert!(RecordProducer::new(&s).is_err());
    let s = KafkaSettings::new("127.0.0.1:1").with("enable.auto.offset.store", "true");
    assert!(BatchConsumer::new(&s, "g", &["t"]).is_err());
}

#[tokio::test]
async fn a_whole_topic_is_read_once_and_a_missing_one_is_an_error() {
    let k = kafka().await;
    let s = settings(k.bootstrap_servers());
    let layout = create_layout(&k, &s, &unique_name("snap"), 2).await;
    let producer = RecordProducer::new(&s).unwrap();
    let records: Vec<OutgoingRecord> = (0..10)
        .map(|i| {
            OutgoingRecord::new(
                layout.commands(),
                format!("e-{}", i % 4),
                format!("v-{i}"),
                writ_core::Headers::new(),
            )
        })
        .collect();
    assert!(producer.send_all(&records).await.iter().all(Result::is_ok));

    let read = writ_kafka::snapshot::read_topic(&s, &layout.commands()).unwrap();
    let mut values: Vec<String> = read
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap()).unwrap())
        .collect();
    values.sort();
    let mut want: Vec<String> = (0..10).map(|i| format!("v-{i}")).collect();
    want.sort();
    assert_eq!(values, want, "every record once, from both partitions");

    let missing = format!("{}-never-created", unique_name("snap"));
    let err = writ_kafka::snapshot::read_topic(&s, &missing).unwrap_err();
    assert!(
        err.to_string().contains(&missing) && err.to_string().contains("UnknownTopicOrPartition"),
        "{err}"
    );
}
