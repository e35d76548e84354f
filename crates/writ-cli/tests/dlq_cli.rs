//! `writ dlq ls|show|replay|purge` as an operator runs them: the compiled
//! binary, no terminal, against the test broker (tansu via tests/run.sh, or
//! the embedded mock cluster).

mod support;

use serde_json::Value;
use support::{command, dead_letter, without_lineage, writ, Domain};
use writ_core::dlq::{self, DlqReason};
use writ_kafka::OutgoingRecord;

/// Five dead letters on DLQ partition 0 (offsets 0..5), originals on partition 0.
async fn seeded(prefix: &str) -> (Domain, Vec<OutgoingRecord>) {
    let d = Domain::new(prefix, 1, 1).await;
    let originals = vec![
        command(&d.layout, "c-0", "cust-1", "Ada"),
        command(&d.layout, "c-1", "cust-2", "Grace"),
        command(&d.layout, "c-2", "cust-2", "Grace 2"),
        command(&d.layout, "c-3", "cust-3", "Edsger"),
        command(&d.layout, "c-4", "cust-4", "Barbara"),
    ];
    let how = [
        (DlqReason::Poison, "POISON"),
        (DlqReason::RetriesExhausted, "MASTER_UNAVAILABLE"),
        (DlqReason::RetriesExhausted, "MASTER_UNAVAILABLE"),
        (DlqReason::Poison, "VALIDATION"),
        (DlqReason::UnknownType, "UNKNOWN_TYPE"),
    ];
    let mut letters = Vec::new();
    for (i, (o, (reason, class))) in originals.iter().zip(how).enumerate() {
        letters.push(dead_letter(
            &d.layout,
            o,
            0,
            100 + i as i64,
            reason,
            class,
            0,
        ));
    }
    // One at a time: offsets 0..5 in this order.
    for l in &letters {
        d.produce(std::slice::from_ref(l)).await;
    }
    (d, originals)
}

fn ls(d: &Domain, extra: &[&str]) -> Value {
    let mut args = vec!["dlq", "ls", "--domain", d.domain(), "--json"];
    args.extend_from_slice(extra);
    writ(&args, d.bootstrap(), "").json()
}

fn positions(listing: &Value) -> Vec<String> {
    listing["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["position"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn ls_filters_and_counts_per_reason() {
    let (d, _) = seeded("dlq-ls").await;
    let all = ls(&d, &[]);
    assert_eq!(all["total"], 5);
    assert_eq!(all["counts"]["POISON"], 2);
    assert_eq!(all["counts"]["RETRIES_EXHAUSTED"], 2);
    assert_eq!(all["counts"]["UNKNOWN_TYPE"], 1);
    assert_eq!(all["records"][1]["key"], "cust-2");
    assert_eq!(all["records"][1]["type"], "customer.upsert.v1");
    assert_eq!(all["records"][1]["message"], "MASTER_UNAVAILABLE happened");

    assert_eq!(positions(&ls(&d, &["--reason", "poison"])), ["0:0", "0:3"]);
    assert_eq!(
        positions(&ls(&d, &["--reason", "POISON,UNKNOWN_TYPE"])),
        ["0:0", "0:3", "0:4"]
    );
    assert_eq!(
        positions(&ls(
            &d,
            &["--error-class", "MASTER_UNAVAILABLE", "--key", "cust-2"]
        )),
        ["0:1", "0:2"]
    );
    assert_eq!(positions(&ls(&d, &["--key", "cust-3"])), ["0:3"]);
    assert_eq!(ls(&d, &["--type", "invoice.void.v1"])["total"], 0);
    assert_eq!(
        ls(&d, &["--since", "1h"])["total"],
        5,
        "dead-lettered just now"
    );
    assert_eq!(ls(&d, &["--until", "1h"])["total"], 0);
    assert_eq!(ls(&d, &["--since", "2000-01-01T00:00:00Z"])["total"], 5);

    let table = writ(&["dlq", "ls", "--domain", d.domain()], d.bootstrap(), "");
    let out = table.success();
    assert!(out.starts_with("POSITION"), "{out}");
    assert!(
        out.contains("5 record(s): POISON=2 RETRIES_EXHAUSTED=2 UNKNOWN_TYPE=1"),
        "{out}"
    );

    let bad = writ(
        &["dlq", "ls", "--domain", d.domain(), "--reason", "LOST"],
        d.bootstrap(),
        "",
    );
    assert!(
        bad.failure().contains("unknown --reason `LOST`"),
        "{}",
        bad.stderr
    );
    let missing = writ(
        &["dlq", "ls", "--domain", "no-such-domain-x"],
        d.bootstrap(),
        "",
    );
    assert!(
        missing.failure().contains("does not exist"),
        "{}",
        missing.stderr
    );
}

#[tokio::test]
async fn show_prints_every_header_and_the_decoded_payload() {
    let (d, originals) = seeded("dlq-show").await;
    let run = writ(
        &["dlq", "show", "0:1", "--domain", d.domain(), "--json"],
        d.bootstrap(),
        "",
    );
    let v = run.json();
    assert_eq!(v["offset"], 1);
    assert_eq!(v["key"], "cust-2");
    assert_eq!(v["payload"]["name"], "Grace");
    assert_eq!(
        v["payload"]["tier"], "STANDARD",
        "decoded against the schema"
    );
    assert_eq!(v["dlq"]["reason"], "RETRIES_EXHAUSTED");
    assert_eq!(
        v["dlq"]["original"],
        format!("{}:0:101", d.layout.commands())
    );
    let names: Vec<&str> = v["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = dead_letter(
        &d.layout,
        &originals[1],
        0,
        101,
        DlqReason::RetriesExhausted,
        "MASTER_UNAVAILABLE",
        0,
    )
    .headers
    .iter()
    .map(|(n, _)| n.to_owned())
    .collect();
    assert_eq!(names, expected, "every header, in order");
    let binary = v["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "x-binary")
        .unwrap();
    assert_eq!(binary["value"]["base64"], "AP8Q");

    let text = writ(
        &["dlq", "show", "0:1", "--domain", d.domain()],
        d.bootstrap(),
        "",
    );
    let out = text.success();
    assert!(
        out.contains("RETRIES_EXHAUSTED after 3 attempt(s)"),
        "{out}"
    );
    assert!(out.contains("writ.dlq.worker.id: worker-test"), "{out}");

    let gone = writ(
        &["dlq", "show", "0:99", "--domain", d.domain()],
        d.bootstrap(),
        "",
    );
    assert!(
        gone.failure().contains("no record at 0:99"),
        "{}",
        gone.stderr
    );
    let bad = writ(
        &["dlq", "show", "0-1", "--domain", d.domain()],
        d.bootstrap(),
        "",
    );
    assert!(bad.failure().contains("PARTITION:OFFSET"), "{}", bad.stderr);
    let no_partition = writ(
        &["dlq", "show", "7:0", "--domain", d.domain()],
        d.bootstrap(),
        "",
    );
    assert!(
        no_partition.failure().contains("no partition 7"),
        "{}",
        no_partition.stderr
    );
}

fn replay(d: &Domain, extra: &[&str]) -> support::Run {
    let mut args = vec!["dlq", "replay", "--domain", d.domain()];
    args.extend_from_slice(extra);
    writ(&args, d.bootstrap(), "")
}

#[tokio::test]
async fn replay_is_byte_for_byte_with_lineage_and_resumes_by_name() {
    let (d, originals) = seeded("dlq-replay").await;

    // No terminal and no --yes: nothing happens.
    let refused = replay(&d, &[]);
    assert!(
        refused.failure().contains("pass --yes"),
        "{}",
        refused.stderr
    );
    // A dry run lists and produces nothing.
    let dry = replay(&d, &["--dry-run", "--name", "first"]);
    assert!(dry.success().contains("would replay 5"), "{}", dry.stdout);
    assert!(
        d.read_all(&d.layout.commands()).is_empty(),
        "dry run produced"
    );
    // Listed offsets that do not exist: refused before anything is produced.
    let missing = replay(&d, &["--offsets", "0:1,0:42", "--yes"]);
    assert!(
        missing.failure().contains("no record at 0:42"),
        "{}",
        missing.stderr
    );
    assert!(d.read_all(&d.layout.commands()).is_empty());

    let run = replay(&d, &["--name", "first", "--yes", "--rate", "200/s"]);
    assert!(
        run.success()
            .contains("selected=5 replayed=5 skipped=0 failed=0"),
        "{}",
        run.stdout
    );
    let replayed = d.read_all(&d.layout.commands());
    assert_eq!(replayed.len(), 5);
    for (i, (r, original)) in replayed.iter().zip(&originals).enumerate() {
        assert_eq!(r.key, original.key, "key of {i}");
        assert_eq!(r.value, original.value, "value of {i}, byte for byte");
        assert_eq!(
            without_lineage(&r.headers),
            original.headers,
            "original headers of {i}"
        );
        assert_eq!(r.headers.get_str(dlq::REPLAY_ID), Some("first"));
        assert_eq!(
            r.headers.get_str(dlq::REPLAY_FROM),
            Some(format!("{}:0:{i}", d.layout.dlq()).as_str())
        );
        assert!(r.headers.get_str(dlq::REPLAY_AT).is_some());
    }

    // Two more dead letters; the same named replay sends only those.
    let more = [
        command(&d.layout, "c-5", "cust-5", "Alan"),
        command(&d.layout, "c-6", "cust-6", "Ken"),
    ];
    for (i, o) in more.iter().enumerate() {
        let l = dead_letter(
            &d.layout,
            o,
            0,
            200 + i as i64,
            DlqReason::RetriesExhausted,
            "MASTER_UNAVAILABLE",
            0,
        );
        d.produce(&[l]).await;
    }
    let again = replay(&d, &["--name", "first", "--yes"]);
    assert!(
        again
            .success()
            .contains("selected=7 replayed=2 skipped=5 failed=0"),
        "{}",
        again.stdout
    );
    let after = d.read_all(&d.layout.commands());
    assert_eq!(after.len(), 7);
    assert_eq!(after[5].value, more[0].value);
    assert_eq!(
        after[6].headers.get_str(dlq::REPLAY_FROM),
        Some(format!("{}:0:6", d.layout.dlq()).as_str())
    );
    // Nothing new: a third run sends nothing.
    let third = replay(&d, &["--name", "first", "--yes"]);
    assert!(
        third.success().contains("replayed=0 skipped=7"),
        "{}",
        third.stdout
    );

    // A different name and a filter: its own position, only what matches.
    let filtered = replay(
        &d,
        &["--name", "poison-only", "--reason", "POISON", "--yes"],
    );
    assert!(
        filtered
            .success()
            .contains("selected=2 replayed=2 skipped=0"),
        "{}",
        filtered.stdout
    );
    // Explicit offsets, unnamed.
    let picked = replay(&d, &["--offsets", "0:4", "--yes"]);
    assert!(
        picked.success().contains("selected=1 replayed=1"),
        "{}",
        picked.stdout
    );
    let last = d.read_all(&d.layout.commands());
    assert_eq!(last.len(), 10);
    assert!(last[9]
        .headers
        .get_str(dlq::REPLAY_ID)
        .unwrap()
        .starts_with("adhoc-"));
    assert_eq!(last[9].value, originals[4].value);

    let bad_rate = replay(&d, &["--rate", "0/s", "--yes"]);
    assert!(bad_rate.failure().contains("never"), "{}", bad_rate.stderr);
    assert_eq!(
        d.read_all(&d.layout.commands()).len(),
        10,
        "bad input produced nothing"
    );
}

#[tokio::test]
async fn purge_deletes_only_a_matching_prefix_and_asks_first() {
    let (d, _) = seeded("dlq-purge").await;
    // Offsets 0 and 3 are POISON; 1 and 2 are not: only 0:0 can go, 0:3 must stay.
    let dry = writ(
        &[
            "dlq",
            "purge",
            "--domain",
            d.domain(),
            "--reason",
            "POISON",
            "--dry-run",
        ],
        d.bootstrap(),
        "",
    );
    let out = dry.success();
    assert!(out.contains("would delete 1 record(s)"), "{out}");
    assert!(
        out.contains("1 matching record(s) cannot be deleted"),
        "{out}"
    );

    let refused = writ(
        &["dlq", "purge", "--domain", d.domain(), "--reason", "POISON"],
        d.bootstrap(),
        "",
    );
    assert!(
        refused.failure().contains("pass --yes"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        d.read_all(&d.layout.dlq()).len(),
        5,
        "nothing deleted without confirmation"
    );

    let nothing = writ(
        &[
            "dlq",
            "purge",
            "--domain",
            d.domain(),
            "--reason",
            "UNKNOWN_TYPE",
            "--yes",
        ],
        d.bootstrap(),
        "",
    );
    assert!(
        nothing.success().contains("nothing to delete"),
        "{}",
        nothing.stdout
    );

    let purge = writ(
        &[
            "dlq",
            "purge",
            "--domain",
            d.domain(),
            "--reason",
            "POISON",
            "--yes",
        ],
        d.bootstrap(),
        "",
    );
    if purge.ok {
        // A broker with DeleteRecords (Apache Kafka): offset 0 is gone, the rest stays.
        assert!(
            purge.stdout.contains("deleted 1 record(s)"),
            "{}",
            purge.stdout
        );
        assert_eq!(positions(&ls(&d, &[])), ["0:1", "0:2", "0:3", "0:4"]);
    } else {
        // tansu and the mock cluster have no DeleteRecords: a clear error, nothing lost.
        assert!(
            purge.stderr.contains("does not support DeleteRecords"),
            "{}",
            purge.stderr
        );
        assert_eq!(d.read_all(&d.layout.dlq()).len(), 5);
    }
}

/// `(replayed, skipped, failed)` from a replay's summary line.
fn counts(out: &str) -> (usize, usize, usize) {
    let line = out
        .lines()
        .find(|l| l.starts_with("replay "))
        .unwrap_or_else(|| panic!("no summary in {out}"));
    let field = |name: &str| -> usize {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap()
            .parse()
            .unwrap()
    };
    (field("replayed"), field("skipped"), field("failed"))
}

/// Fault injection needs the embedded mock cluster, so this test always uses it.
#[tokio::test]
async fn a_failed_produce_keeps_the_position_and_a_rerun_sends_it() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    let d = Domain::on(writ_testkit::mock_kafka(1), "dlq-fail", 1, 1).await;
    for i in 0..3 {
        let o = command(&d.layout, &format!("f-{i}"), &format!("cust-{i}"), "x");
        d.produce(&[dead_letter(
            &d.layout,
            &o,
            0,
            i,
            DlqReason::RetriesExhausted,
            "MASTER_UNAVAILABLE",
            0,
        )])
        .await;
    }
    // The broker refuses writes to the command topic (a permanent error).
    d.kafka
        .request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 3],
        )
        .unwrap();
    let first = replay(&d, &["--name", "retry", "--yes"]);
    assert!(
        first.failure().contains("rerun the same named replay"),
        "{}",
        first.stderr
    );
    let (replayed, skipped, failed) = counts(&first.stdout);
    assert!(failed >= 1, "{}", first.stdout);
    assert_eq!((replayed + failed, skipped), (3, 0));

    d.kafka
        .clear_request_errors(RDKafkaApiKey::Produce)
        .unwrap();
    let second = replay(&d, &["--name", "retry", "--yes"]);
    let (replayed2, skipped2, failed2) = counts(second.success());
    assert_eq!(failed2, 0);
    assert_eq!(replayed2 + skipped2, 3);
    assert!(
        replayed2 >= failed,
        "every failed record is sent again: {}",
        second.stdout
    );

    let sent: std::collections::BTreeSet<String> = d
        .read_all(&d.layout.commands())
        .iter()
        .map(|r| r.headers.get_str(dlq::REPLAY_FROM).unwrap().to_owned())
        .collect();
    let dlq_topic = d.layout.dlq();
    let expected: std::collections::BTreeSet<String> =
        (0..3).map(|o| format!("{dlq_topic}:0:{o}")).collect();
    assert_eq!(sent, expected, "no dead letter was skipped over");
}
