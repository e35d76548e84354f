//! The raw-Kafka half of the bad-input table: every kind of malformed record
//! a producer can put straight onto `<domain>.commands` ends as a DLQ record
//! with its reason and error code, the original key, value and headers byte
//! for byte, plus a DEAD_LETTERED status when its envelope was valid; the good
//! commands interleaved with them (same and other entities, JSON and
//! registry-framed Avro) are applied exactly once and in per-entity order;
//! and the worker is still running and applying afterwards. A poison record
//! as big as a default producer may send is dead-lettered as well.
//! (The ingress half is `crates/writ-ingress/tests/bad_input.rs`.)

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use support::Stack;
use writ_codec::{PayloadCodec, RegistrySettings, SchemaCatalog};
use writ_core::dlq::{self, DlqReason};
use writ_core::{cloudevents, CommandEnvelope, ContentType, Headers, StatusEvent, SubmissionState};
use writ_kafka::{ConsumedRecord, OutgoingRecord, RecordProducer};
use writ_testkit::registry::RegistryFixture;

const SOURCE: &str = "/tenants/acme/raw-producer";
const UPSERT: &str = "customer.upsert.v1";
/// Names the case on every bad record, so its DLQ copy can be found.
const CASE_HEADER: &str = "x-bad-input-case";
/// Entities that get good commands; bad records are keyed on them too, so
/// they sit in the same partitions, between the same entity's good commands.
const ENTITIES: [&str; 3] = ["cust-a", "cust-b", "cust-c"];

/// One row of the table.
struct Case {
    name: &'static str,
    record: OutgoingRecord,
    reason: DlqReason,
    /// `writ.dlq.error.class` (and the status error code).
    code: &'static str,
    /// Must appear in `writ.dlq.error.message`.
    message_has: &'static str,
    /// `ce_id` of the DEAD_LETTERED status expected; `None` when the record's
    /// identity (`ce_id`, `ce_source`) is broken: no submission to answer to.
    status_id: Option<String>,
}

fn headers_for(id: &str, subject: &str, content_type: ContentType) -> Headers {
    cloudevents::to_headers(
        &CommandEnvelope::new(id, SOURCE, UPSERT, content_type).with_subject(subject),
    )
}

fn customer(entity: &str, seq: i64) -> serde_json::Value {
    json!({"customer_id": entity, "name": format!("{entity} #{seq}"),
           "email": format!("{entity}@example.com"), "seq": seq})
}

/// A Confluent-framed datum: magic byte, 4-byte schema id, Avro bytes.
fn framed(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend_from_slice(&schema_id.to_be_bytes());
    v.extend_from_slice(datum);
    v
}

/// Builds the table. `avro` is a valid registry-framed customer payload.
fn table(stack: &Stack, avro: &[u8]) -> Vec<Case> {
    let topic = stack.layout.commands();
    let mut n = 0usize;
    let mut case = |name: &'static str,
                    edit: &dyn Fn(&mut Headers),
                    value: Option<Vec<u8>>,
                    reason: DlqReason,
                    code: &'static str,
                    message_has: &'static str,
                    envelope_valid: bool| {
        let key = ENTITIES[n % ENTITIES.len()];
        let id = format!("bad-{n}");
        n += 1;
        let content_type = if value.as_deref().is_some_and(|v| v.first() == Some(&0)) {
            ContentType::Avro
        } else {
            ContentType::Json
        };
        let mut headers = headers_for(&id, key, content_type);
        edit(&mut headers);
        headers.push(CASE_HEADER, name);
        Case {
            name,
            record: OutgoingRecord {
                topic: topic.clone(),
                key: Some(key.as_bytes().to_vec()),
                value,
                headers,
                partition: None,
            },
            reason,
            code,
            message_has,
            status_id: envelope_valid.then_some(id),
        }
    };
    let keep = |_: &mut Headers| {};
    let json = |v: serde_json::Value| Some(v.to_string().into_bytes());
    let poison = DlqReason::Poison;
    vec![
        case(
            "malformed JSON value",
            &keep,
            Some(b"{\"customer_id\": \"cust-a\", \"name\": ".to_vec()),
            poison,
            "POISON",
            "not valid JSON",
            true,
        ),
        case(
            "wrong field types",
            &keep,
            json(json!({"customer_id": "cust-b", "name": 42, "email": true})),
            poison,
            "VALIDATION",
            "$.name",
            true,
        ),
        case(
            "missing required field",
            &keep,
            json(json!({"customer_id": "cust-c", "name": "No Email"})),
            poison,
            "VALIDATION",
            "$.email",
            true,
        ),
        case(
            "invalid UTF-8 in a JSON value",
            &keep,
            Some(
                b"{\"customer_id\": \"cust-a\", \"name\": \"Ad\xff\xfe\", \"email\": \"a@x\"}"
                    .to_vec(),
            ),
            poison,
            "POISON",
            "not valid JSON",
            true,
        ),
        case(
            "a JSON array, not an object",
            &keep,
            Some(b"[1, 2, 3]".to_vec()),
            poison,
            "VALIDATION",
            "expected object",
            true,
        ),
        case(
            "unknown ce_type",
            &|h| h.set(cloudevents::TYPE, "invoice.void.v1"),
            json(json!({"id": 1})),
            DlqReason::UnknownType,
            "UNKNOWN_TYPE",
            "invoice.void.v1",
            true,
        ),
        case(
            "missing ce_id",
            &|h| h.remove_where(|n| n == cloudevents::ID),
            json(customer("cust-c", 99)),
            poison,
            "INVALID_HEADERS",
            "missing required header `ce_id`",
            false,
        ),
        case(
            "missing ce_source",
            &|h| h.remove_where(|n| n == cloudevents::SOURCE),
            json(customer("cust-a", 99)),
            poison,
            "INVALID_HEADERS",
            "missing required header `ce_source`",
            false,
        ),
        case(
            "unsupported ce_specversion",
            &|h| h.set(cloudevents::SPECVERSION, "0.3"),
            json(customer("cust-b", 99)),
            poison,
            "INVALID_HEADERS",
            "specversion `0.3`",
            true,
        ),
        case(
            "ce_id twice",
            &|h| h.push(cloudevents::ID, "another-id"),
            json(customer("cust-c", 99)),
            poison,
            "INVALID_HEADERS",
            "more than once",
            false,
        ),
        case(
            "unsupported content-type",
            &|h| h.set(cloudevents::CONTENT_TYPE, "text/csv"),
            Some(b"customer_id,name\ncust-a,Ada\n".to_vec()),
            poison,
            "UNSUPPORTED_CONTENT_TYPE",
            "text/csv",
            true,
        ),
        case(
            "truncated Avro (registry-framed, body cut short)",
            &keep,
            Some(avro[..avro.len() / 2].to_vec()),
            poison,
            "POISON",
            "truncated Avro",
            true,
        ),
        case(
            "Avro framed with an unknown schema id",
            &keep,
            Some(framed(987_654, &avro[5..])),
            poison,
            "UNKNOWN_SCHEMA_ID",
            "987654",
            true,
        ),
        case(
            "Avro without the registry's magic byte",
            &|h| h.set(cloudevents::CONTENT_TYPE, "application/avro"),
            Some([&[1u8][..], &avro[1..]].concat()),
            poison,
            "POISON",
            "magic byte",
            true,
        ),
        case(
            "newline in ce_id",
            &|h| h.set(cloudevents::ID, "bad\nid"),
            json(customer("cust-a", 99)),
            poison,
            "INVALID_HEADERS",
            "forbidden character",
            false,
        ),
        case(
            "NUL in ce_id",
            &|h| h.set(cloudevents::ID, "bad\u{0}id"),
            json(customer("cust-b", 99)),
            poison,
            "INVALID_HEADERS",
            "forbidden character",
            false,
        ),
        case(
            "1000 headers",
            &|h| {
                for i in 0..1000 {
                    h.push(format!("x-filler-{i}"), i.to_string());
                }
            },
            json(customer("cust-c", 99)),
            poison,
            "INVALID_HEADERS",
            "at most 64 allowed",
            false,
        ),
        case(
            "empty value",
            &keep,
            Some(Vec::new()),
            poison,
            "EMPTY_PAYLOAD",
            "no value",
            true,
        ),
        case(
            "null value (no payload at all)",
            &keep,
            None,
            poison,
            "EMPTY_PAYLOAD",
            "no value",
            true,
        ),
        case(
            "ce_source not UTF-8",
            &|h| h.set(cloudevents::SOURCE, b"/tenants/\xff\xfe".to_vec()),
            json(customer("cust-c", 99)),
            poison,
            "INVALID_HEADERS",
            "not valid UTF-8",
            false,
        ),
    ]
}

/// Polls a topic until it holds `count` records (or panics after `timeout`).
fn wait_topic(stack: &Stack, topic: &str, count: usize, timeout: Duration) -> Vec<ConsumedRecord> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let records = stack.read_topic(topic);
        if records.len() >= count {
            return records;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {count} records on {topic} after {timeout:?}",
            records.len()
        );
    }
}

/// `(customer_id, seq)` of every master write, in write order.
async fn history(stack: &Stack) -> Vec<(String, Option<i64>)> {
    sqlx::query_as("SELECT customer_id, seq FROM customer_history ORDER BY id")
        .fetch_all(stack.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_record_is_dead_lettered_with_its_reason_and_nothing_good_is_lost() {
    let Some(stack) = Stack::new("badraw", 3).await else {
        eprintln!("skipping: the raw-Kafka bad-input table needs PostgreSQL");
        return;
    };
    let started = std::time::Instant::now();
    // A registry, so Avro is Confluent-framed on both sides.
    let registry = RegistryFixture::start().await.unwrap();
    let avro_codec = PayloadCodec::new(
        SchemaCatalog::builtin(),
        Some(RegistrySettings::new(&registry.url)),
    )
    .unwrap();
    let sample = avro_codec
        .encode(UPSERT, &customer("cust-a", 0), ContentType::Avro)
        .await
        .unwrap();
    assert_eq!(sample.bytes[0], 0, "registry framing");

    let cases = table(&stack, &sample.bytes);
    assert!(cases.len() >= 15, "the issue asks for at least 15 kinds");

    // Good commands interleaved with the bad: one before each bad record and
    // one per entity after them, cycling through the entities; every third
    // one registry-framed Avro.
    let mut next_seq: BTreeMap<&str, i64> = ENTITIES.iter().map(|e| (*e, 1)).collect();
    let mut good_ids = Vec::new();
    let mut goods = Vec::new();
    for n in 0..cases.len() + ENTITIES.len() {
        let entity = ENTITIES[(n + 1) % ENTITIES.len()];
        let seq = next_seq[entity];
        next_seq.insert(entity, seq + 1);
        let id = format!("good-{entity}-{seq}");
        let payload = customer(entity, seq);
        let mut envelope = CommandEnvelope::new(id.as_str(), SOURCE, UPSERT, ContentType::Json)
            .with_subject(entity);
        let value = if n % 3 == 2 {
            let enc = avro_codec
                .encode(UPSERT, &payload, ContentType::Avro)
                .await
                .unwrap();
            envelope.content_type = ContentType::Avro;
            envelope.data_schema = enc.dataschema;
            enc.bytes
        } else {
            serde_json::to_vec(&payload).unwrap()
        };
        goods.push(OutgoingRecord::command(
            stack.layout.commands(),
            &envelope,
            value,
        ));
        good_ids.push(id);
    }
    let mut goods = goods.into_iter();
    let mut produced = Vec::new();
    for case in &cases {
        produced.push(goods.next().unwrap());
        produced.push(case.record.clone());
    }
    produced.extend(goods);
    let good_count = good_ids.len();
    stack.produce(&produced).await;

    let extra = format!(
        "registry_url = \"{}\"\nstatus_format = \"json\"",
        registry.url
    );
    let (token, handle) = stack.start_worker(&extra).await;
    let expected_statuses = good_count + cases.iter().filter(|c| c.status_id.is_some()).count();
    let statuses = stack
        .wait_statuses(expected_statuses, Duration::from_secs(120))
        .await;
    let dlq = wait_topic(
        &stack,
        &stack.layout.dlq(),
        cases.len(),
        Duration::from_secs(60),
    );
    let first_pass = started.elapsed();

    let mut failures = Vec::new();
    let mut rows = Vec::new();
    for case in &cases {
        let name = case.name;
        let mut check = |ok: bool, what: String| {
            if !ok {
                failures.push(format!("{name}: {what}"));
            }
        };
        let copies: Vec<&ConsumedRecord> = dlq
            .iter()
            .filter(|r| r.headers.get_str(CASE_HEADER) == Some(name))
            .collect();
        check(
            copies.len() == 1,
            format!("{} DLQ records, expected 1", copies.len()),
        );
        let Some(copy) = copies.first() else {
            rows.push((name, "<none>".to_owned(), "<none>".to_owned(), "-"));
            continue;
        };
        let reason = copy.headers.get_str(dlq::REASON).unwrap_or("<missing>");
        let class = copy
            .headers
            .get_str(dlq::ERROR_CLASS)
            .unwrap_or("<missing>");
        let message = copy.headers.get_str(dlq::ERROR_MESSAGE).unwrap_or("");
        check(
            reason == case.reason.as_str(),
            format!("reason {reason}, expected {}", case.reason),
        );
        check(
            class == case.code,
            format!("error class {class}, expected {}", case.code),
        );
        check(
            message.contains(case.message_has),
            format!(
                "error message {message:?} does not name `{}`",
                case.message_has
            ),
        );
        check(
            copy.key == case.record.key,
            format!("key {:?} changed", copy.key),
        );
        check(
            copy.value == case.record.value,
            format!(
                "value changed: {:?} -> {:?}",
                case.record.value.as_deref().map(String::from_utf8_lossy),
                copy.value.as_deref().map(String::from_utf8_lossy)
            ),
        );
        let mut original = copy.headers.clone();
        original.remove_where(|n| n.starts_with(dlq::DLQ_PREFIX));
        check(
            original == case.record.headers,
            "original headers not preserved byte for byte".to_owned(),
        );
        match dlq::parse_dlq_headers(&copy.headers) {
            Ok(f) => check(
                f.original_topic == stack.layout.commands() && !f.worker_id.is_empty(),
                format!("DLQ metadata {f:?}"),
            ),
            Err(e) => check(false, e.to_string()),
        }
        let status = match &case.status_id {
            Some(id) => {
                let found: Vec<_> = statuses.iter().filter(|s| &s.id == id).collect();
                check(
                    found.len() == 1
                        && found[0].state == SubmissionState::DeadLettered
                        && found[0].error.as_ref().map(|e| e.code.as_str()) == Some(case.code),
                    format!(
                        "expected one DEAD_LETTERED status with code {}, got {found:?}",
                        case.code
                    ),
                );
                "DEAD_LETTERED"
            }
            None => "- (no valid envelope)",
        };
        rows.push((name, reason.to_owned(), class.to_owned(), status));
    }
    println!(
        "\n{:<50} {:<14} {:<26} status",
        "case", "reason", "error class"
    );
    for (name, reason, class, status) in &rows {
        println!("{name:<50} {reason:<14} {class:<26} {status}");
    }

    // Nothing else was dead-lettered, and no status beyond the expected ones.
    if dlq.len() != cases.len() {
        failures.push(format!(
            "{} DLQ records for {} bad records",
            dlq.len(),
            cases.len()
        ));
    }
    if statuses.len() != expected_statuses {
        failures.push(format!(
            "{} status events, expected {expected_statuses}",
            statuses.len()
        ));
    }
    // Every good command: one APPLIED status, one master write, in order.
    for id in &good_ids {
        let found: Vec<_> = statuses.iter().filter(|s| &s.id == id).collect();
        if found.len() != 1 || found[0].state != SubmissionState::Applied {
            failures.push(format!("good command {id}: statuses {found:?}"));
        }
    }
    let writes = history(&stack).await;
    for entity in ENTITIES {
        let seqs: Vec<Option<i64>> = writes
            .iter()
            .filter(|(c, _)| c == entity)
            .map(|(_, s)| *s)
            .collect();
        let expected: Vec<Option<i64>> = (1..next_seq[entity]).map(Some).collect();
        if seqs != expected {
            failures.push(format!(
                "{entity}: master writes {seqs:?}, expected exactly {expected:?} in this order"
            ));
        }
    }
    if writes.len() != good_count {
        failures.push(format!(
            "{} master writes for {good_count} good commands",
            writes.len()
        ));
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));

    // The worker is still running: a good command after all the bad ones is applied.
    assert!(
        !handle.is_finished(),
        "the worker task ended during the bad input"
    );
    let last_seq = next_seq["cust-a"];
    stack
        .produce(&[OutgoingRecord::command(
            stack.layout.commands(),
            &CommandEnvelope::new("good-after-bad", SOURCE, UPSERT, ContentType::Json)
                .with_subject("cust-a"),
            serde_json::to_vec(&customer("cust-a", last_seq)).unwrap(),
        )])
        .await;
    // Its status is awaited, not just its master write: the write happens
    // before delivery, so only the status proves the whole pipeline runs.
    let after = stack
        .wait_statuses(expected_statuses + 1, Duration::from_secs(60))
        .await;
    let state = after
        .iter()
        .find(|s| s.id == "good-after-bad")
        .map(|s| s.state);
    assert_eq!(state, Some(SubmissionState::Applied), "{after:?}");
    let writes = history(&stack).await;
    assert_eq!(writes.len(), good_count + 1);
    assert_eq!(
        writes.last(),
        Some(&("cust-a".to_owned(), Some(last_seq))),
        "the command after the bad input is the last write"
    );
    assert!(!handle.is_finished(), "the worker task ended");
    support::stop_worker(token, handle)
        .await
        .expect("the worker stops without an error");
    println!(
        "{} bad kinds, {good_count} good commands: dead-lettered and applied in {first_pass:?}, total {:?}",
        cases.len(),
        started.elapsed()
    );
}

/// Serialized size of headers as librdkafka counts them against
/// `message.max.bytes` (name and value, with generous varint lengths).
fn headers_size(h: &Headers) -> usize {
    h.iter()
        .map(|(n, v)| n.len() + v.map_or(0, <[u8]>::len) + 4)
        .sum()
}

/// A poison record as big as a producer on librdkafka's defaults may send
/// (`message.max.bytes` = 1 000 000) is dead-lettered too, although its DLQ
/// copy is bigger than that (the `writ.dlq.*` headers). With the DLQ limited
/// like the original, the copy's produce failed permanently, the worker's
/// delivery stopped, the offsets were never committed and every restart
/// failed the same way: one big bad record stopped its partition for good.
/// Produces good, an unparseable record with a value of `value_len` bytes,
/// good (one entity) and runs a worker until all three are answered; returns
/// the statuses, the DLQ records and the big record as produced.
async fn run_big_poison(
    stack: &Stack,
    value_len: impl FnOnce(&OutgoingRecord) -> usize,
) -> (Vec<StatusEvent>, Vec<ConsumedRecord>, OutgoingRecord) {
    let good = |id: &str, seq: i64| {
        OutgoingRecord::command(
            stack.layout.commands(),
            &CommandEnvelope::new(id, SOURCE, UPSERT, ContentType::Json).with_subject("cust-a"),
            serde_json::to_vec(&customer("cust-a", seq)).unwrap(),
        )
    };
    let mut big = good("big-poison", 2);
    let mut value = b"{\"customer_id\": \"cust-a\", \"name\": \"".to_vec();
    value.resize(value_len(&big), b'x'); // an unterminated string: not JSON
    big.value = Some(value);
    // A producer whose limit is above the DLQ's, like one writing to a command
    // topic configured for bigger records.
    let producer =
        RecordProducer::new(&stack.settings.clone().with("message.max.bytes", "4000000")).unwrap();
    for r in producer
        .send_all(&[good("before-big", 1), big.clone(), good("after-big", 3)])
        .await
    {
        r.expect("produce");
    }

    let (token, handle) = stack.start_worker("").await;
    let statuses = stack.wait_statuses(3, Duration::from_secs(60)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let dlq = loop {
        let dlq = stack.read_topic(&stack.layout.dlq());
        if !dlq.is_empty() || std::time::Instant::now() > deadline {
            break dlq;
        }
    };
    let stopped = support::stop_worker(token, handle).await;
    assert_eq!(
        dlq.len(),
        1,
        "no DLQ copy of the big record; the worker stopped with {stopped:?}"
    );
    stopped.expect("the worker stops without an error");

    let state = |id: &str| statuses.iter().find(|s| s.id == id).map(|s| s.state);
    assert_eq!(state("big-poison"), Some(SubmissionState::DeadLettered));
    assert_eq!(state("after-big"), Some(SubmissionState::Applied));
    assert_eq!(dlq[0].headers.get_str(dlq::REASON), Some("POISON"));
    assert_eq!(dlq[0].headers.get_str(dlq::ERROR_CLASS), Some("POISON"));
    assert_eq!(
        history(stack).await,
        vec![
            ("cust-a".to_owned(), Some(1)),
            ("cust-a".to_owned(), Some(3))
        ],
        "the good commands around it are applied once, in order"
    );
    (statuses, dlq, big)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_at_the_size_limit_is_dead_lettered_too() {
    let Some(stack) = Stack::new("badbig", 1).await else {
        eprintln!("skipping: the raw-Kafka bad-input table needs PostgreSQL");
        return;
    };
    // As big as a producer on librdkafka's defaults may send.
    let (_, dlq, big) = run_big_poison(&stack, |r| {
        1_000_000 - 200 - r.key.as_ref().unwrap().len() - headers_size(&r.headers)
    })
    .await;
    assert!(
        dlq[0].value == big.value,
        "the DLQ copy keeps the whole value"
    );
    assert_eq!(dlq[0].headers.get_str(dlq::VALUE_OMITTED), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_too_big_for_the_dlq_is_dead_lettered_without_its_value() {
    let Some(stack) = Stack::new("badhuge", 1).await else {
        eprintln!("skipping: the raw-Kafka bad-input table needs PostgreSQL");
        return;
    };
    let (_, dlq, big) = run_big_poison(&stack, |_| 1_500_000).await;
    assert_eq!(dlq[0].value, None, "the value is left out");
    assert_eq!(
        dlq[0].headers.get_str(dlq::VALUE_OMITTED),
        Some("1500000"),
        "and its size said"
    );
    assert_eq!(dlq[0].key, big.key);
    let failure = dlq::parse_dlq_headers(&dlq[0].headers).unwrap();
    assert_eq!(failure.original_offset, 1, "where the original still is");
}
