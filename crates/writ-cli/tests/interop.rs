//! Interoperability with an independent Kafka client (python `confluent-kafka`,
//! not writ): a command produced with plain CloudEvents headers is decoded by
//! writ into the expected envelope and payload, and a command writ produces is
//! read by that client with the expected headers and body.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use serde_json::json;
use writ_codec::{PayloadCodec, SchemaCatalog};
use writ_core::{cloudevents, CommandEnvelope, ContentType};
use writ_kafka::{BatchConsumer, BatchLimits, KafkaSettings, OutgoingRecord, RecordProducer};
use writ_testkit::{kafka, python, run_interop, unique_group, unique_topic, TestKafka};

async fn create_topic(k: &TestKafka, topic: &str) {
    if k.is_mock() {
        k.create_mock_topic(topic, 3).unwrap();
        return;
    }
    let admin = writ_kafka::TopicAdmin::new(&KafkaSettings::new(k.bootstrap_servers())).unwrap();
    let spec = writ_core::topics::TopicSpec {
        name: topic.to_owned(),
        role: writ_core::topics::TopicRole::Commands,
        partitions: 3,
        replication_factor: 1,
        configs: vec![],
    };
    admin.ensure_topics(&[spec]).await.unwrap();
}

fn codec() -> PayloadCodec {
    PayloadCodec::new(SchemaCatalog::builtin(), None).unwrap()
}

#[tokio::test]
async fn a_command_from_an_independent_producer_is_decoded_by_writ() {
    if python().is_none() {
        return;
    }
    let k = kafka().await;
    let topic = unique_topic("interop-in");
    create_topic(&k, &topic).await;

    let payload =
        r#"{"customer_id":"cust-42","name":"Ada Lovelace","email":"ada@example.com","seq":1}"#;
    let produced = run_interop(
        "produce_command.py",
        &[
            "--bootstrap",
            k.bootstrap_servers(),
            "--topic",
            &topic,
            "--key",
            "cust-42",
            "--header",
            "ce_specversion=1.0",
            "--header",
            "ce_id=crm-7f3a",
            "--header",
            "ce_source=/tenants/acme/crm",
            "--header",
            "ce_type=customer.upsert.v1",
            "--header",
            "ce_subject=cust-42",
            "--header",
            "ce_time=2026-11-27T10:00:00Z",
            "--header",
            "content-type=application/json",
            "--header",
            "ce_expectedversion=4",
            "--header",
            "ce_staleafter=2026-11-27T10:05:00Z",
            "--header",
            "traceparent=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "--value-json",
            payload,
        ],
    )
    .await
    .expect("python producer");
    assert!(produced["offset"].as_i64().is_some(), "{produced}");

    let settings = KafkaSettings::new(k.bootstrap_servers()).with("session.timeout.ms", "6000");
    let consumer = BatchConsumer::new(&settings, &unique_group("interop"), &[&topic]).unwrap();
    let batch = tokio::time::timeout(
        Duration::from_secs(30),
        consumer.next_batch(BatchLimits::INTERACTIVE),
    )
    .await
    .expect("record within 30 s")
    .unwrap();
    let record = &batch[0];
    assert_eq!(record.key.as_deref(), Some(&b"cust-42"[..]));

    let envelope = cloudevents::from_headers(&record.headers).expect("valid CloudEvents headers");
    let mut expected = CommandEnvelope::new(
        "crm-7f3a",
        "/tenants/acme/crm",
        "customer.upsert.v1",
        ContentType::Json,
    )
    .with_subject("cust-42");
    expected.time = Some(time::macros::datetime!(2026-11-27 10:00 UTC));
    expected.expected_version = Some(4);
    expected.stale_after = Some(time::macros::datetime!(2026-11-27 10:05 UTC));
    expected.traceparent =
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned());
    assert_eq!(envelope, expected);
    assert_eq!(
        envelope.submission_id(),
        writ_core::submission_id("/tenants/acme/crm", "crm-7f3a")
    );

    let decoded = codec()
        .decode(
            &envelope.command_type,
            envelope.content_type.as_str(),
            record.value.as_deref().unwrap(),
        )
        .await
        .expect("payload valid against customer.upsert.v1");
    assert_eq!(decoded["customer_id"], "cust-42");
    assert_eq!(decoded["seq"], 1);
    assert_eq!(decoded["tier"], "STANDARD", "schema default filled in");
}

#[tokio::test]
async fn a_command_writ_produces_is_read_by_an_independent_consumer() {
    if python().is_none() {
        return;
    }
    let k = kafka().await;
    let topic = unique_topic("interop-out");
    create_topic(&k, &topic).await;

    let payload = json!({
        "customer_id": "cust-9",
        "name": "Grace Hopper",
        "email": "grace@example.com",
        "tier": "GOLD",
        "seq": 3
    });
    let encoded = codec()
        .encode("customer.upsert.v1", &payload, ContentType::Avro)
        .await
        .unwrap();
    let mut envelope = CommandEnvelope::new(
        "writ-out-1",
        "/tenants/acme/crm",
        "customer.upsert.v1",
        ContentType::Avro,
    )
    .with_subject("cust-9");
    envelope.data_schema = encoded.dataschema.clone();
    envelope.job_id = Some("job-1".into());
    envelope.job_line = Some(12);
    let producer = RecordProducer::new(&KafkaSettings::new(k.bootstrap_servers())).unwrap();
    producer
        .send(&OutgoingRecord::command(
            &topic,
            &envelope,
            encoded.bytes.clone(),
        ))
        .await
        .unwrap();

    let read = run_interop(
        "consume_one.py",
        &["--bootstrap", k.bootstrap_servers(), "--topic", &topic],
    )
    .await
    .expect("python consumer");
    assert_eq!(read["key"], "cust-9");
    let headers: BTreeMap<String, String> =
        serde_json::from_value(read["headers"].clone()).unwrap();
    let expected: BTreeMap<String, String> = [
        ("ce_specversion", "1.0"),
        ("ce_id", "writ-out-1"),
        ("ce_source", "/tenants/acme/crm"),
        ("ce_type", "customer.upsert.v1"),
        ("ce_subject", "cust-9"),
        ("content-type", "application/avro"),
        ("ce_dataschema", "urn:writ:schema:customer.upsert.v1"),
        ("ce_jobid", "job-1"),
        ("ce_jobline", "12"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(headers, expected);
    let value = base64::engine::general_purpose::STANDARD
        .decode(read["value_b64"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        value, encoded.bytes,
        "the body is the Avro datum, byte for byte"
    );
    let decoded = codec()
        .decode("customer.upsert.v1", "application/avro", &value)
        .await
        .unwrap();
    assert_eq!(decoded["name"], "Grace Hopper");
    assert_eq!(decoded["tier"], "GOLD");
}
