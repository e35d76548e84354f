//! `writ topics init|describe` as a user runs them: the real binary against
//! the test broker, twice, then described as JSON.

use std::process::Command;

use writ_testkit::{kafka, unique_name};

fn writ(args: &[&str], bootstrap: &str) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_writ"))
        .args(args)
        .args(["--bootstrap-servers", bootstrap])
        .output()
        .expect("run writ");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn init_is_idempotent_and_describe_shows_the_layout() {
    let k = kafka().await;
    if k.is_mock() {
        eprintln!("skipping: librdkafka's mock cluster has no CreateTopics (run tests/run.sh)");
        return;
    }
    let domain = unique_name("cli");
    let b = k.bootstrap_servers();
    let (ok, out, err) = writ(
        &["topics", "init", "--domain", &domain, "--partitions", "2"],
        b,
    );
    assert!(ok, "{err}");
    assert_eq!(out.matches("created").count(), 4, "{out}");
    let (ok, out, err) = writ(
        &["topics", "init", "--domain", &domain, "--partitions", "2"],
        b,
    );
    assert!(ok, "second init must succeed: {err}");
    assert_eq!(out.matches("exists").count(), 4, "{out}");

    let (ok, out, err) = writ(&["topics", "describe", "--domain", &domain, "--json"], b);
    assert!(ok, "{err}");
    let topics: serde_json::Value = serde_json::from_str(&out).unwrap();
    let find = |suffix: &str| {
        topics
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == format!("{domain}.{suffix}"))
            .cloned()
            .unwrap()
    };
    assert_eq!(find("commands")["partitions"].as_array().unwrap().len(), 2);
    assert_eq!(
        find("status")["configs"]["cleanup.policy"],
        "compact,delete"
    );
    assert_eq!(find("dlq")["configs"]["retention.ms"], "2592000000");
}

#[test]
fn bad_arguments_get_a_clear_error_and_touch_nothing() {
    let (ok, _, err) = writ(&["topics", "init", "--domain", "bad domain"], "127.0.0.1:1");
    assert!(!ok);
    assert!(err.contains("contains ` `"), "{err}");
    let (ok, _, err) = writ(
        &[
            "topics",
            "init",
            "--domain",
            "d",
            "--status-retention",
            "7 weeks",
        ],
        "127.0.0.1:1",
    );
    assert!(!ok);
    assert!(err.contains("duration"), "{err}");
    let (ok, _, err) = writ(
        &["topics", "init", "--domain", "d", "-X", "acks=1"],
        "127.0.0.1:1",
    );
    assert!(!ok);
    assert!(err.contains("acks=all"), "{err}");
}
