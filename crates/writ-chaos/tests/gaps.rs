//! The broker-skip evidence end to end on the real broker: commands are
//! produced, a worker log names an offset gap, and only the lost commands
//! inside it are told apart as never delivered. Skips without a broker.

use writ_chaos::gaps::{explain, Gap};
use writ_chaos::plan::{Channel, Command};
use writ_chaos::traffic::raw_record;
use writ_core::topics::{TopicLayout, TopicSettings};
use writ_kafka::{KafkaSettings, RecordProducer, TopicAdmin};

#[tokio::test]
async fn lost_commands_inside_a_logged_gap_are_the_brokers_and_no_others() {
    let Some(kafka) = std::env::var("WRIT_TEST_KAFKA")
        .ok()
        .filter(|k| !k.trim().is_empty() && k.trim() != "mock")
    else {
        eprintln!("skipping: needs a real broker (WRIT_TEST_KAFKA; run tests/run.sh)");
        return;
    };
    let layout = TopicLayout::new(&writ_testkit::unique_name("gaps")).unwrap();
    let settings = KafkaSettings::new(&kafka);
    TopicAdmin::new(&settings)
        .unwrap()
        .ensure_topics(&layout.specs(&TopicSettings {
            partitions: 1,
            status_partitions: 1,
            ..TopicSettings::default()
        }))
        .await
        .unwrap();
    let producer = RecordProducer::new(&settings).unwrap();
    // One partition, one record per send: a#1 .. a#10 at offsets 0 .. 9.
    for seq in 1..=10 {
        let cmd = Command {
            entity: "a".into(),
            seq,
            name: format!("n{seq}"),
            channel: Channel::Raw,
        };
        let d = producer
            .send(&raw_record(&layout.commands(), &cmd, &cmd.name))
            .await
            .unwrap();
        assert_eq!(d.offset, seq - 1, "a fresh single-partition topic");
    }

    let logs = tempfile::tempdir().unwrap();
    std::fs::write(
        logs.path().join("worker-1.log"),
        format!(
            "\u{1b}[2m2026-11-27T17:00:00Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m partitions assigned partitions=1\n\
             \u{1b}[2m2026-11-27T17:00:01Z\u{1b}[0m \u{1b}[34mDEBUG\u{1b}[0m \u{1b}[2mwrit_kafka::gap\u{1b}[0m: offset gap: the broker delivered a later record than the next expected one \
             \u{1b}[3mtopic\u{1b}[0m\u{1b}[2m=\u{1b}[0m{} \u{1b}[3mpartition\u{1b}[0m\u{1b}[2m=\u{1b}[0m0 \u{1b}[3mexpected\u{1b}[0m\u{1b}[2m=\u{1b}[0m3 \u{1b}[3mreceived\u{1b}[0m\u{1b}[2m=\u{1b}[0m6\n",
            layout.commands()
        ),
    )
    .unwrap();
    std::fs::write(
        logs.path().join("notes.txt"),
        "offset gap topic=x partition=0 expected=0 received=9",
    )
    .unwrap();

    // a#4 and a#5 sit at offsets 3 and 4 (inside 3..6); a#9 at 8 was delivered.
    let lost = vec![
        ("a".to_owned(), 4),
        ("a".to_owned(), 5),
        ("a".to_owned(), 9),
    ];
    let evidence = explain(
        &settings,
        logs.path(),
        &[layout.commands(), layout.bulk()],
        &lost,
    )
    .await
    .unwrap();
    assert_eq!(
        evidence.gaps,
        vec![Gap {
            topic: layout.commands(),
            partition: 0,
            from: 3,
            to: 6
        }],
        "only *.log files are read"
    );
    assert_eq!(
        evidence.skipped.into_iter().collect::<Vec<_>>(),
        vec![("a".to_owned(), 4), ("a".to_owned(), 5)],
        "a#9 was delivered: its loss would be writ's"
    );
}
