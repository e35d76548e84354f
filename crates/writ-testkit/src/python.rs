//! Runs the independent Python Kafka client in `tests/interop/` (confluent_kafka, not writ) for interop tests.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};

/// Default limit for one interop script run.
pub const INTEROP_TIMEOUT: Duration = Duration::from_secs(60);

/// The interpreter from `WRIT_TEST_PYTHON` (set by tests/run.sh), or `None` with a skip notice.
pub fn python() -> Option<PathBuf> {
    match std::env::var_os("WRIT_TEST_PYTHON").filter(|p| !p.is_empty()) {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            eprintln!("skipping: no interop Python (set WRIT_TEST_PYTHON or run tests/run.sh)");
            None
        }
    }
}

/// The repository root (two levels above this crate's manifest).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// Runs `tests/interop/<script> <args>` with `WRIT_TEST_PYTHON` and parses its JSON stdout (60 s limit).
pub async fn run_interop(script: &str, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    run_interop_with_timeout(script, args, INTEROP_TIMEOUT).await
}

/// [`run_interop`] with an explicit time limit; the child is killed when it runs over.
pub async fn run_interop_with_timeout(
    script: &str,
    args: &[&str],
    timeout: Duration,
) -> anyhow::Result<serde_json::Value> {
    let Some(py) = std::env::var_os("WRIT_TEST_PYTHON").filter(|p| !p.is_empty()) else {
        bail!("WRIT_TEST_PYTHON is not set (run under tests/run.sh, or check python() first)");
    };
    let path = repo_root().join("tests/interop").join(script);
    let child = tokio::process::Command::new(&py)
        .arg(&path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} {}", py.to_string_lossy(), path.display()))?;
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .with_context(|| format!("{script} ran over {timeout:?}"))??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("{script} failed ({}): {}", out.status, stderr.trim());
    }
    serde_json::from_str(stdout.trim())
        .with_context(|| format!("{script} printed no JSON: {stdout:?} (stderr: {stderr:?})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{kafka, unique_topic};
    use base64::Engine as _;
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    #[test]
    fn repo_root_holds_the_interop_scripts() {
        assert!(repo_root()
            .join("tests/interop/produce_command.py")
            .is_file());
    }

    #[tokio::test]
    async fn python_client_and_rdkafka_interoperate() {
        if python().is_none() {
            return;
        }
        let k = kafka().await;
        let b = k.bootstrap_servers().to_owned();

        // Python produces, Python reads back: headers and bytes survive.
        let topic = unique_topic("interop");
        let p = run_interop(
            "produce_command.py",
            &[
                "--bootstrap",
                &b,
                "--topic",
                &topic,
                "--key",
                "cust-1",
                "--header",
                "ce_specversion=1.0",
                "--header",
                "ce_id=abc-1",
                "--value-json",
                r#"{"name":"Ada"}"#,
            ],
        )
        .await
        .unwrap();
        assert!(p["offset"].as_i64().is_some(), "{p}");
        let c = run_interop("consume_one.py", &["--bootstrap", &b, "--topic", &topic])
            .await
            .unwrap();
        assert_eq!(c["key"], "cust-1");
        assert_eq!(c["headers"]["ce_id"], "abc-1");
        assert_eq!(c["offset"], p["offset"]);

        // rdkafka produces, Python reads: what writ would put on the wire.
        let topic = unique_topic("interop");
        let producer: FutureProducer = k.client_config().create().unwrap();
        producer
            .send(
                FutureRecord::to(&topic)
                    .key("k")
                    .payload(&b"\x00\x01bin"[..])
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "ce_type",
                        value: Some("customer.upsert.v1"),
                    })),
                Duration::from_secs(20),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        let c = run_interop("consume_one.py", &["--bootstrap", &b, "--topic", &topic])
            .await
            .unwrap();
        assert_eq!(c["headers"]["ce_type"], "customer.upsert.v1");
        let v = base64::engine::general_purpose::STANDARD
            .decode(c["value_b64"].as_str().unwrap())
            .unwrap();
        assert_eq!(v, b"\x00\x01bin");
    }

    #[tokio::test]
    async fn interop_timeout_is_an_error() {
        if python().is_none() {
            return;
        }
        let k = kafka().await;
        let err = run_interop(
            "consume_one.py",
            &[
                "--bootstrap",
                k.bootstrap_servers(),
                "--topic",
                &unique_topic("empty"),
                "--timeout",
                "1",
            ],
        )
        .await
        .unwrap_err();
        assert!(format!("{err:#}").contains("timeout"), "{err:#}");
    }
}
