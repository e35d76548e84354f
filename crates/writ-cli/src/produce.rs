//! `writ produce --type T`: one command from JSON on stdin, for scripts.
//! The payload is validated and encoded with the schema catalog and the
//! record carries the same CloudEvents headers the ingress writes, so the
//! worker cannot tell the two apart. Anything wrong is reported before a
//! single byte reaches Kafka.

use std::io::Read;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;
use writ_codec::PayloadCodec;
use writ_core::{cloudevents, CommandEnvelope, ContentType, TopicLayout};
use writ_kafka::{OutgoingRecord, RecordProducer};

use crate::codec_args::CodecArgs;
use crate::kafka_args::KafkaArgs;

/// Payload encodings `writ produce` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// `application/avro` (Confluent framing when a registry is configured).
    Avro,
    /// `application/json`, canonical.
    Json,
}

/// Arguments of `writ produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// The command type with its version, e.g. `customer.upsert.v1`.
    #[arg(long = "type")]
    command_type: String,
    /// The domain, e.g. `customers`.
    #[arg(long)]
    domain: String,
    /// The entity key (`ce_subject` and the record key); without it the id is the key.
    #[arg(long)]
    key: Option<String>,
    /// The idempotency key (`ce_id`); a random UUID when omitted. Reuse it to retry safely.
    #[arg(long)]
    id: Option<String>,
    /// The producer (`ce_source`), a tenant-scoped URI.
    #[arg(
        long,
        env = "WRIT__SOURCE",
        default_value = "/tenants/default/writ-cli"
    )]
    source: String,
    /// Write to the bulk topic (`<domain>.bulk`) instead of `<domain>.commands`.
    #[arg(long)]
    bulk: bool,
    /// Payload encoding.
    #[arg(long, value_enum, default_value_t = Format::Avro)]
    format: Format,
    /// `ce_expectedversion`: apply only if the master's version is this one.
    #[arg(long)]
    expected_version: Option<i64>,
    /// `ce_staleafter`: an RFC 3339 instant past which the command is stale.
    #[arg(long)]
    stale_after: Option<String>,
    /// Print JSON (submission id, topic, partition, offset) instead of the bare id.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    codec: CodecArgs,
    #[command(flatten)]
    kafka: KafkaArgs,
}

/// A checked command ready to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The record.
    pub record: OutgoingRecord,
    /// Its submission id.
    pub submission_id: Uuid,
}

/// Validates `input` (the JSON on stdin) and the flags, and builds the record.
pub async fn prepare(
    a: &ProduceArgs,
    input: &str,
    codec: &PayloadCodec,
    now: OffsetDateTime,
) -> Result<Prepared> {
    let layout = TopicLayout::new(&a.domain)?;
    if input.trim().is_empty() {
        bail!("no command on stdin: pipe one JSON object, e.g. `echo '{{...}}' | writ produce --type {} ...`", a.command_type);
    }
    let payload: serde_json::Value = serde_json::from_str(input)
        .map_err(|e| anyhow::anyhow!("stdin is not one valid JSON document: {e}"))?;
    if codec.catalog().get(&a.command_type).is_none() {
        let known: Vec<&str> = codec.catalog().types().collect();
        bail!(
            "unknown command type `{}`; known types: {}",
            a.command_type,
            known.join(", ")
        );
    }
    let content_type = match a.format {
        Format::Avro => ContentType::Avro,
        Format::Json => ContentType::Json,
    };
    let encoded = codec
        .encode(&a.command_type, &payload, content_type)
        .await
        .with_context(|| format!("the payload is not a valid `{}`", a.command_type))?;
    let id = a.id.clone().unwrap_or_else(|| Uuid::new_v4().to_string());
    let mut envelope =
        CommandEnvelope::new(id, a.source.clone(), a.command_type.clone(), content_type);
    envelope.subject = a.key.clone();
    envelope.time = Some(now);
    envelope.data_schema = encoded.dataschema.clone();
    envelope.expected_version = a.expected_version;
    envelope.stale_after = a
        .stale_after
        .as_deref()
        .map(|s| {
            OffsetDateTime::parse(s, &Rfc3339)
                .with_context(|| format!("--stale-after `{s}` is not an RFC 3339 instant"))
        })
        .transpose()?;
    let topic = if a.bulk {
        layout.bulk()
    } else {
        layout.commands()
    };
    let record = OutgoingRecord::command(topic, &envelope, encoded.bytes);
    // The worker reads these headers strictly; check them the same way here.
    cloudevents::from_headers(&record.headers).context("the command's headers are invalid")?;
    Ok(Prepared {
        submission_id: envelope.submission_id(),
        record,
    })
}

/// Runs `writ produce`.
pub async fn run(a: ProduceArgs) -> Result<()> {
    let settings = a.kafka.settings()?;
    let codec = a.codec.codec()?;
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("reading the command from stdin (it must be UTF-8 JSON)")?;
    let prepared = prepare(&a, &input, &codec, OffsetDateTime::now_utc()).await?;
    let producer = RecordProducer::new(&settings)?;
    let delivered = producer
        .send(&prepared.record)
        .await
        .with_context(|| format!("producing to `{}`", prepared.record.topic))?;
    if a.json {
        println!(
            "{}",
            json!({
                "submission_id": prepared.submission_id,
                "topic": prepared.record.topic,
                "partition": delivered.partition,
                "offset": delivered.offset,
            })
        );
    } else {
        println!("{}", prepared.submission_id);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use time::macros::datetime;
    use writ_codec::SchemaCatalog;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ProduceArgs,
    }

    fn args(extra: &[&str]) -> ProduceArgs {
        let base = [
            "writ",
            "--type",
            "customer.upsert.v1",
            "--domain",
            "customers",
        ];
        Cli::parse_from(base.iter().chain(extra)).args
    }

    fn codec() -> PayloadCodec {
        PayloadCodec::new(SchemaCatalog::builtin(), None).unwrap()
    }

    const GOOD: &str = r#"{"customer_id":"cust-1","name":"Ada","email":"ada@example.com","seq":1}"#;
    const NOW: OffsetDateTime = datetime!(2026-11-27 12:00 UTC);

    #[tokio::test]
    async fn a_valid_command_gets_cloudevents_headers_and_a_stable_submission_id() {
        let a = args(&[
            "--key",
            "cust-1",
            "--id",
            "k-1",
            "--source",
            "/tenants/acme/ops",
            "--format",
            "json",
            "--expected-version",
            "3",
        ]);
        let p = prepare(&a, GOOD, &codec(), NOW).await.unwrap();
        assert_eq!(p.record.topic, "customers.commands");
        assert_eq!(p.record.key.as_deref(), Some(&b"cust-1"[..]));
        let env = cloudevents::from_headers(&p.record.headers).unwrap();
        assert_eq!(env.id, "k-1");
        assert_eq!(env.subject.as_deref(), Some("cust-1"));
        assert_eq!(env.expected_version, Some(3));
        assert_eq!(env.time, Some(NOW));
        assert_eq!(
            p.submission_id,
            writ_core::submission_id("/tenants/acme/ops", "k-1")
        );
        let value: serde_json::Value =
            serde_json::from_slice(p.record.value.as_deref().unwrap()).unwrap();
        assert_eq!(
            value["tier"], "STANDARD",
            "canonical JSON has defaults filled in"
        );

        let bulk = prepare(&args(&["--bulk"]), GOOD, &codec(), NOW)
            .await
            .unwrap();
        assert_eq!(bulk.record.topic, "customers.bulk");
        let env = cloudevents::from_headers(&bulk.record.headers).unwrap();
        assert_eq!(env.content_type, ContentType::Avro);
        assert_eq!(
            bulk.record.key.as_deref(),
            Some(env.id.as_bytes()),
            "no key: the id is the key"
        );
    }

    #[tokio::test]
    async fn bad_input_is_refused_with_the_reason() {
        let err = |a: ProduceArgs, input: &'static str| async move {
            format!("{:#}", prepare(&a, input, &codec(), NOW).await.unwrap_err())
        };
        assert!(err(args(&[]), "").await.contains("no command on stdin"));
        assert!(err(args(&[]), "{\"customer_id\": ")
            .await
            .contains("not one valid JSON"));
        assert!(err(args(&[]), "{} {}").await.contains("not one valid JSON"));
        let e = err(args(&[]), r#"{"customer_id":"c","name":42,"email":"e"}"#).await;
        assert!(e.contains("$.name"), "{e}");
        let mut a = args(&[]);
        a.command_type = "invoice.void.v1".into();
        assert!(
            err(a, GOOD).await.contains("customer.upsert.v1"),
            "lists known types"
        );
        assert!(err(args(&["--stale-after", "soon"]), GOOD)
            .await
            .contains("RFC 3339"));
        assert!(err(args(&["--source", "has space"]), GOOD)
            .await
            .contains("ce_source"));
        assert!(err(args(&["--id", ""]), GOOD).await.contains("ce_id"));
    }
}
