//! The registry path of the codec against writ-testkit's in-process Schema
//! Registry: Confluent framing, subjects, caching, and the failure classes.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;
use writ_codec::{CodecError, PayloadCodec, PayloadFormat, RegistrySettings, SchemaCatalog};
use writ_core::Classified;
use writ_testkit::registry::RegistryFixture;

fn settings(url: &str) -> RegistrySettings {
    RegistrySettings {
        timeout: Duration::from_secs(2),
        ..RegistrySettings::new(url)
    }
}

fn codec(url: &str) -> PayloadCodec {
    PayloadCodec::new(SchemaCatalog::builtin(), Some(settings(url))).unwrap()
}

fn upsert() -> serde_json::Value {
    json!({"customer_id": "c-1", "name": "Ada", "email": "ada@example.com", "tier": "PLATINUM"})
}

#[tokio::test]
async fn avro_uses_confluent_framing_and_round_trips() {
    let sr = RegistryFixture::start().await.unwrap();
    let producer = codec(&sr.url);
    let enc = producer
        .encode("customer.upsert.v1", &upsert(), PayloadFormat::Avro)
        .await
        .unwrap();
    assert_eq!(enc.content_type, "application/avro");
    assert_eq!(enc.bytes[0], 0, "magic byte");
    let id = u32::from_be_bytes(enc.bytes[1..5].try_into().unwrap());
    assert_eq!(enc.dataschema, Some(format!("{}/schemas/ids/{id}", sr.url)));
    assert_eq!(sr.subjects(), ["io.writ.customers.v1.CustomerUpsert"]);

    // A second encode is served from the cache.
    let before = sr.requests();
    producer
        .encode("customer.upsert.v1", &upsert(), PayloadFormat::Avro)
        .await
        .unwrap();
    assert_eq!(sr.requests(), before);

    // A fresh consumer fetches the writer schema by id once.
    let consumer = codec(&sr.url);
    let back = consumer
        .decode("customer.upsert.v1", "application/avro", &enc.bytes)
        .await
        .unwrap();
    assert_eq!(back["tier"], "PLATINUM");
    assert_eq!(back["phone"], serde_json::Value::Null);
    consumer
        .decode("customer.upsert.v1", "application/avro", &enc.bytes)
        .await
        .unwrap();
    assert_eq!(sr.requests(), before + 1);
}

#[tokio::test]
async fn status_events_round_trip_through_the_registry() {
    let sr = RegistryFixture::start().await.unwrap();
    let c = codec(&sr.url);
    let event = writ_core::StatusEvent {
        submission_id: writ_core::submission_id("/t/a", "k"),
        source: "/t/a".into(),
        id: "k".into(),
        command_type: "customer.delete.v1".into(),
        subject: None,
        state: writ_core::SubmissionState::Applied,
        canonical_id: Some("C1".into()),
        master_version: Some(2),
        error: None,
        attempts: 1,
        payload_fingerprint: "ff".into(),
        accepted_at: time::macros::datetime!(2026-11-27 09:00:00 UTC),
        applied_at: None,
        stale_after: None,
        job_id: None,
        job_line: None,
        draft_id: None,
        temp_id: None,
    };
    let bytes = c.encode_status(&event, PayloadFormat::Avro).await.unwrap();
    assert_eq!(bytes[0], 0);
    assert_eq!(
        c.decode_status("application/avro", &bytes).await.unwrap(),
        event
    );
    assert!(sr.subjects().contains(&"io.writ.StatusEvent".to_string()));
}

#[tokio::test]
async fn older_writer_schema_resolves_to_the_local_one() {
    let sr = RegistryFixture::start().await.unwrap();
    // v1 of customer.delete before `reason` existed.
    let old = r#"{"type":"record","name":"CustomerDelete","namespace":"io.writ.customers.v1","fields":[{"name":"customer_id","type":"string"}]}"#;
    let id = sr.register("io.writ.customers.v1.CustomerDelete", old);
    let mut bytes = vec![0];
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend_from_slice(&[2, b'c']);
    let back = codec(&sr.url)
        .decode("customer.delete.v1", "application/avro", &bytes)
        .await
        .unwrap();
    assert_eq!(back, json!({"customer_id": "c", "reason": null}));
}

#[tokio::test]
async fn framing_errors_and_unknown_ids_are_permanent() {
    let sr = RegistryFixture::start().await.unwrap();
    let c = codec(&sr.url);
    let e = c
        .decode(
            "customer.delete.v1",
            "application/avro",
            &[0, 0, 0, 0, 99, 2, b'c'],
        )
        .await
        .unwrap_err();
    assert!(matches!(e, CodecError::UnknownSchemaId(99)), "{e}");
    assert!(!e.is_retryable());
    let e = c
        .decode(
            "customer.delete.v1",
            "application/avro",
            &[1, 0, 0, 0, 1, 2],
        )
        .await
        .unwrap_err();
    assert!(matches!(e, CodecError::Malformed(_)) && e.to_string().contains("magic byte"));
    let e = c
        .decode("customer.delete.v1", "application/avro", &[0, 0])
        .await
        .unwrap_err();
    assert!(matches!(e, CodecError::Malformed(_)));

    // Truncated and trailing bytes after a valid header.
    let enc = c
        .encode(
            "customer.delete.v1",
            &json!({"customer_id": "c-1"}),
            PayloadFormat::Avro,
        )
        .await
        .unwrap();
    let e = c
        .decode(
            "customer.delete.v1",
            "application/avro",
            &enc.bytes[..enc.bytes.len() - 1],
        )
        .await
        .unwrap_err();
    assert!(matches!(e, CodecError::Malformed(_)), "{e}");
    let mut long = enc.bytes.clone();
    long.push(0);
    let e = c
        .decode("customer.delete.v1", "application/avro", &long)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("trailing"), "{e}");
}

#[tokio::test]
async fn registry_down_is_retryable() {
    let mut sr = RegistryFixture::start().await.unwrap();
    sr.fail_with(Some(StatusCode::INTERNAL_SERVER_ERROR));
    let c = codec(&sr.url);
    let e = c
        .encode("customer.upsert.v1", &upsert(), PayloadFormat::Avro)
        .await
        .unwrap_err();
    assert!(matches!(e, CodecError::RegistryUnavailable(_)), "{e}");
    assert!(e.is_retryable());
    assert_eq!(e.code(), "REGISTRY_UNAVAILABLE");
    let e = c
        .decode(
            "customer.delete.v1",
            "application/avro",
            &[0, 0, 0, 0, 1, 0],
        )
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e}");

    // Healed: the failure was not cached.
    sr.fail_with(None);
    c.encode("customer.upsert.v1", &upsert(), PayloadFormat::Avro)
        .await
        .unwrap();

    // Gone: connection refused is retryable too.
    sr.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let e = c
        .encode(
            "customer.delete.v1",
            &json!({"customer_id": "c"}),
            PayloadFormat::Avro,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, CodecError::RegistryUnavailable(_)), "{e}");
}

#[tokio::test]
async fn lookup_only_mode_does_not_register() {
    let sr = RegistryFixture::start().await.unwrap();
    let c = PayloadCodec::new(
        SchemaCatalog::builtin(),
        Some(RegistrySettings {
            auto_register: false,
            ..settings(&sr.url)
        }),
    )
    .unwrap();
    let e = c
        .encode("customer.upsert.v1", &upsert(), PayloadFormat::Avro)
        .await
        .unwrap_err();
    assert!(matches!(e, CodecError::RegistryRejected(_)), "{e}");
    assert!(sr.subjects().is_empty());
    let schema = SchemaCatalog::builtin()
        .get("customer.upsert.v1")
        .unwrap()
        .raw()
        .to_string();
    let id = sr.register("io.writ.customers.v1.CustomerUpsert", &schema);
    let enc = c
        .encode("customer.upsert.v1", &upsert(), PayloadFormat::Avro)
        .await
        .unwrap();
    assert_eq!(u32::from_be_bytes(enc.bytes[1..5].try_into().unwrap()), id);
}
