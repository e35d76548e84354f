//! Config-level proof that a cluster's TLS and SASL settings reach
//! librdkafka unchanged for every client role writ creates, from the same
//! `[kafka]` section operators write, and that librdkafka itself accepts
//! them (a client is built; nothing connects).

use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::BaseProducer;
use rdkafka::ClientConfig;
use writ_kafka::KafkaSettings;

/// The `[kafka]` section of a SASL_SSL deployment, as the binaries
/// deserialize it (the same struct the worker, ingress and CLI embed).
fn sasl_ssl_settings() -> KafkaSettings {
    serde_json::from_value(serde_json::json!({
        "bootstrap_servers": "broker-1.example.internal:9093,broker-2.example.internal:9093",
        "client_id": "writ-acme",
        "properties": {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "writ-worker",
            "sasl.password": "s3cr3t-scram-password",
            "ssl.endpoint.identification.algorithm": "https",
            "ssl.ca.location": "/etc/writ/tls/ca.pem",
            "ssl.certificate.location": "/etc/writ/tls/client.pem",
            "ssl.key.location": "/etc/writ/tls/client.key",
            "ssl.key.password": "s3cr3t-key-password"
        }
    }))
    .expect("a [kafka] section with TLS and SASL properties deserializes")
}

const EXPECTED: &[(&str, &str)] = &[
    ("security.protocol", "SASL_SSL"),
    ("sasl.mechanism", "SCRAM-SHA-512"),
    ("sasl.username", "writ-worker"),
    ("sasl.password", "s3cr3t-scram-password"),
    ("ssl.endpoint.identification.algorithm", "https"),
    ("ssl.ca.location", "/etc/writ/tls/ca.pem"),
    ("ssl.certificate.location", "/etc/writ/tls/client.pem"),
    ("ssl.key.location", "/etc/writ/tls/client.key"),
    ("ssl.key.password", "s3cr3t-key-password"),
    (
        "bootstrap.servers",
        "broker-1.example.internal:9093,broker-2.example.internal:9093",
    ),
];

fn expected_value(key: &str) -> Option<&'static str> {
    EXPECTED.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

fn roles(s: &KafkaSettings) -> Vec<(&'static str, ClientConfig)> {
    vec![
        ("producer", s.producer_config().unwrap()),
        (
            "consumer",
            s.consumer_config("writ-acme-interactive").unwrap(),
        ),
        ("reader", s.reader_config().unwrap()),
        ("admin", s.admin_config().unwrap()),
    ]
}

#[test]
fn tls_and_sasl_properties_reach_every_client_role_verbatim() {
    let settings = sasl_ssl_settings();
    settings.validate().unwrap();
    for (role, config) in roles(&settings) {
        for (key, value) in EXPECTED {
            // `get` reads what `create` hands to librdkafka: secrets must
            // arrive as given, not as rdkafka's "[sanitized for safety]"
            // placeholder (which `config_map` substitutes).
            assert_eq!(config.get(key), Some(*value), "{role}: `{key}`");
        }
        // The secrets stay out of any `Debug` of the config, where logs would show them.
        for secret in ["sasl.password", "ssl.key.password"] {
            assert_ne!(
                config.config_map().get(secret).copied(),
                expected_value(secret),
                "{role}: `{secret}` masked"
            );
        }
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("s3cr3t"),
            "{role}: a secret in the config's Debug output"
        );
        assert_eq!(
            config.get("client.id"),
            Some(format!("writ-acme-{role}").as_str()),
            "{role}"
        );
    }
}

#[test]
fn tls_settings_do_not_weaken_the_pinned_delivery_guarantees() {
    let producer = sasl_ssl_settings().producer_config().unwrap();
    assert_eq!(producer.get("enable.idempotence"), Some("true"));
    assert_eq!(producer.get("acks"), Some("all"));
    let consumer = sasl_ssl_settings().consumer_config("g").unwrap();
    assert_eq!(consumer.get("enable.auto.commit"), Some("false"));
    assert_eq!(consumer.get("enable.auto.offset.store"), Some("false"));
}

/// librdkafka validates property names and values when a client is built:
/// a SASL_SSL client that builds proves the pass-through is understood, not
/// silently dropped (the TLS files are left out: librdkafka opens them at
/// build time, and their paths were checked above).
#[test]
fn librdkafka_accepts_the_passed_through_sasl_ssl_settings() {
    let settings = KafkaSettings::new("127.0.0.1:1")
        .with("security.protocol", "SASL_SSL")
        .with("sasl.mechanism", "SCRAM-SHA-256")
        .with("sasl.username", "writ")
        .with("sasl.password", "s3cr3t")
        .with("ssl.endpoint.identification.algorithm", "https");
    let producer: Result<BaseProducer, _> = settings.producer_config().unwrap().create();
    assert!(producer.is_ok(), "producer: {:?}", producer.err());
    let consumer: Result<BaseConsumer, _> = settings.consumer_config("g").unwrap().create();
    assert!(consumer.is_ok(), "consumer: {:?}", consumer.err());

    // The same path refuses what librdkafka does not know, so a typo in a
    // security property fails at start-up instead of connecting in plaintext.
    let typo = KafkaSettings::new("127.0.0.1:1").with("security.protocoll", "SASL_SSL");
    let refused: Result<BaseProducer, _> = typo.producer_config().unwrap().create();
    let err = refused.err().expect("an unknown property is refused");
    assert!(err.to_string().contains("security.protocoll"), "{err}");
    let bad_value = KafkaSettings::new("127.0.0.1:1").with("security.protocol", "TLS");
    let refused: Result<BaseProducer, _> = bad_value.producer_config().unwrap().create();
    assert!(refused.is_err(), "an invalid security.protocol is refused");
}

#[test]
fn a_plaintext_default_carries_no_security_properties() {
    let settings = KafkaSettings::new("localhost:9092");
    for (role, config) in roles(&settings) {
        for (key, _) in &EXPECTED[..EXPECTED.len() - 1] {
            assert!(
                !config.config_map().contains_key(key),
                "{role}: `{key}` not invented"
            );
        }
    }
}
