//! `writ status <submissionId>`: the latest state of one submission, read
//! from the compacted `<domain>.status` topic, which is the same changelog
//! the ingress materializes to answer status reads.

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use uuid::Uuid;
use writ_core::{cloudevents, StatusEvent, TopicLayout};
use writ_kafka::ConsumedRecord;

use crate::codec_args::CodecArgs;
use crate::display::time_text;
use crate::kafka_args::KafkaArgs;
use crate::scan::{Next, Start, TopicReader};

/// Arguments of `writ status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The submission id (a UUID, as the ingress and `writ produce` print it).
    submission_id: String,
    /// The domain, e.g. `customers`.
    #[arg(long)]
    domain: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    codec: CodecArgs,
    #[command(flatten)]
    kafka: KafkaArgs,
}

/// The latest of `records` for one key: the highest offset of the newest
/// partition (a key lives in one partition unless the partition count
/// changed, and then the newest timestamp decides).
pub fn latest(records: Vec<ConsumedRecord>) -> Option<ConsumedRecord> {
    records
        .into_iter()
        .max_by_key(|r| (r.timestamp_ms.unwrap_or(i64::MIN), r.offset))
}

/// The partition librdkafka's default (`consistent_random`) partitioner
/// gives a keyed record: CRC-32 of the key modulo the partition count.
pub fn default_partition(key: &[u8], partitions: usize) -> i32 {
    let count = u32::try_from(partitions.max(1)).unwrap_or(u32::MAX);
    i32::try_from(crc32(key) % count).unwrap_or(0)
}

/// CRC-32 (IEEE 802.3, reflected), as librdkafka's `rd_crc32`.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Every field of a status event, one per line.
pub fn render(event: &StatusEvent) -> String {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    let time = |t: Option<time::OffsetDateTime>| opt(t.map(cloudevents::format_time));
    let mut lines = vec![
        ("submission_id", event.submission_id.to_string()),
        ("state", event.state.to_string()),
        ("source", event.source.clone()),
        ("id", event.id.clone()),
        ("type", event.command_type.clone()),
        ("subject", opt(event.subject.clone())),
        ("canonical_id", opt(event.canonical_id.clone())),
        (
            "master_version",
            opt(event.master_version.map(|v| v.to_string())),
        ),
        ("attempts", event.attempts.to_string()),
        ("accepted_at", cloudevents::format_time(event.accepted_at)),
        ("applied_at", time(event.applied_at)),
        ("stale_after", time(event.stale_after)),
        ("payload_fingerprint", event.payload_fingerprint.clone()),
        ("job_id", opt(event.job_id.clone())),
        ("job_line", opt(event.job_line.map(|v| v.to_string()))),
        ("draft_id", opt(event.draft_id.clone())),
        ("temp_id", opt(event.temp_id.clone())),
    ];
    match &event.error {
        Some(e) => {
            lines.push(("error.code", e.code.clone()));
            lines.push(("error.message", e.message.clone()));
            lines.push(("error.retryable", e.retryable.to_string()));
        }
        None => lines.push(("error", "-".to_owned())),
    }
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    lines
        .iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect()
}

/// Runs `writ status`.
pub async fn run(a: StatusArgs) -> Result<()> {
    let id: Uuid = a
        .submission_id
        .trim()
        .parse()
        .with_context(|| format!("`{}` is not a submission id (a UUID)", a.submission_id))?;
    let codec = a.codec.codec()?;
    let topic = TopicLayout::new(&a.domain)?.status();
    let reader = TopicReader::open(&a.kafka.settings()?, &topic)
        .await
        .with_context(|| format!("opening `{topic}` on {}", a.kafka.bootstrap_servers))?;
    let key = id.to_string();
    let partitions = reader.partitions();
    let likely = default_partition(key.as_bytes(), partitions.len());
    // The partition librdkafka's default partitioner picked first; the
    // others only when it is not there (a producer with another partitioner).
    let order: Vec<Vec<i32>> = vec![
        vec![likely],
        partitions
            .iter()
            .copied()
            .filter(|p| *p != likely)
            .collect(),
    ];
    let mut matches = Vec::new();
    for group in order {
        let starts = group.iter().map(|&p| (p, Start::Beginning)).collect();
        reader
            .scan(&starts, false, |r| {
                if r.key.as_deref() == Some(key.as_bytes()) {
                    matches.push(r);
                }
                Next::More
            })
            .await
            .with_context(|| format!("reading `{topic}`"))?;
        if !matches.is_empty() {
            break;
        }
    }
    let Some(record) = latest(matches) else {
        bail!(
            "no status for submission {id} in `{topic}`: never submitted to this domain, \
             or older than the dedupe window"
        );
    };
    let Some(value) = record.value.as_deref() else {
        bail!(
            "the status of submission {id} was deleted (tombstone at {}:{})",
            record.partition,
            record.offset
        );
    };
    let content_type = record
        .headers
        .get_str(cloudevents::CONTENT_TYPE)
        .unwrap_or("application/avro");
    let event = codec
        .decode_status(content_type, value)
        .await
        .with_context(|| {
            format!(
                "decoding the status event at {}:{}",
                record.partition, record.offset
            )
        })?;
    if a.json {
        let mut v = serde_json::to_value(&event)?;
        v["_record"] = json!({
            "topic": topic,
            "partition": record.partition,
            "offset": record.offset,
            "timestamp": time_text(record.timestamp_ms),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", render(&event));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;
    use writ_core::{Headers, StatusError, SubmissionState};

    fn rec(offset: i64, ts: i64) -> ConsumedRecord {
        ConsumedRecord {
            topic: "d.status".into(),
            partition: 0,
            offset,
            key: Some(b"k".to_vec()),
            value: None,
            headers: Headers::new(),
            timestamp_ms: Some(ts),
        }
    }

    #[test]
    fn the_default_partition_is_librdkafkas_crc32() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926, "the CRC-32 check value");
        assert_eq!(crc32(b""), 0);
        assert_eq!(
            default_partition(b"123456789", 6),
            (0xCBF4_3926u32 % 6) as i32
        );
        assert_eq!(default_partition(b"anything", 1), 0);
    }

    /// Checked against librdkafka itself: keyed records produced with writ's
    /// producer settings land where `default_partition` looks first.
    #[tokio::test]
    async fn the_default_partition_is_where_librdkafka_puts_a_key() {
        let kafka = writ_testkit::mock_kafka(1);
        kafka.create_mock_topic("crc-check", 6).unwrap();
        let producer = writ_kafka::RecordProducer::new(&writ_kafka::KafkaSettings::new(
            kafka.bootstrap_servers(),
        ))
        .unwrap();
        for i in 0..20 {
            let key = Uuid::new_v5(&Uuid::NAMESPACE_OID, &[i]).to_string();
            let delivered = producer
                .send(&writ_kafka::OutgoingRecord::new(
                    "crc-check",
                    key.clone(),
                    "v",
                    Headers::new(),
                ))
                .await
                .unwrap();
            assert_eq!(
                delivered.partition,
                default_partition(key.as_bytes(), 6),
                "{key}"
            );
        }
    }

    #[test]
    fn the_latest_record_wins() {
        assert_eq!(
            latest(vec![rec(1, 10), rec(5, 10), rec(3, 10)])
                .unwrap()
                .offset,
            5
        );
        assert_eq!(latest(vec![rec(9, 1), rec(2, 50)]).unwrap().offset, 2);
        assert!(latest(vec![]).is_none());
    }

    #[test]
    fn every_field_is_printed() {
        let event = StatusEvent {
            submission_id: Uuid::nil(),
            source: "/tenants/acme/crm".into(),
            id: "k-1".into(),
            command_type: "customer.upsert.v1".into(),
            subject: Some("cust-1".into()),
            state: SubmissionState::Rejected,
            canonical_id: None,
            master_version: Some(3),
            error: Some(StatusError {
                code: "VALIDATION".into(),
                message: "$.email: required".into(),
                retryable: false,
            }),
            attempts: 1,
            payload_fingerprint: "abc".into(),
            accepted_at: datetime!(2026-11-27 10:00 UTC),
            applied_at: Some(datetime!(2026-11-27 10:00:01 UTC)),
            stale_after: None,
            job_id: None,
            job_line: None,
            draft_id: None,
            temp_id: Some("tmp-1".into()),
        };
        let text = render(&event);
        for needle in [
            "state                REJECTED",
            "master_version       3",
            "error.code           VALIDATION",
            "error.retryable      false",
            "applied_at           2026-11-27T10:00:01Z",
            "temp_id              tmp-1",
            "canonical_id         -",
        ] {
            assert!(text.contains(needle), "{needle}\n{text}");
        }
    }
}
