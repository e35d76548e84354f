//! The README's walkthrough, executed: every shell block marked
//! `<!-- dev-test -->` runs against an in-process `writ dev` stack (its
//! `localhost:8080` / `localhost:8090` rewritten to the stack's ports), and the
//! JSON block that follows it, if any, must be contained in the output
//! (`"…"` matches any value). Blocks are retried for a while, because the
//! asynchronous patterns settle a moment after the request.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use writ_dev::{DevOptions, DevStack};

struct Step {
    line: usize,
    script: String,
    expect: Option<Value>,
}

/// The tested blocks of a Markdown document.
fn steps(markdown: &str) -> Vec<Step> {
    let lines: Vec<&str> = markdown.lines().collect();
    let mut steps = Vec::new();
    let mut i = 0;
    let block = |start: usize| -> (String, usize) {
        let mut body = String::new();
        let mut j = start + 1;
        while j < lines.len() && !lines[j].starts_with("```") {
            body.push_str(lines[j]);
            body.push('\n');
            j += 1;
        }
        (body, j + 1)
    };
    while i < lines.len() {
        if lines[i].trim() == "<!-- dev-test -->"
            && lines.get(i + 1).is_some_and(|l| l.starts_with("```sh"))
        {
            let (script, next) = block(i + 1);
            let mut expect = None;
            let mut k = next;
            while k < lines.len() && lines[k].trim().is_empty() {
                k += 1;
            }
            if lines.get(k).is_some_and(|l| l.starts_with("```json")) {
                let (json, after) = block(k);
                expect = Some(serde_json::from_str(&json).unwrap_or_else(|e| {
                    panic!("README line {}: expected output is not JSON: {e}", k + 1)
                }));
                i = after;
            } else {
                i = next;
            }
            steps.push(Step {
                line: i + 1,
                script,
                expect,
            });
            continue;
        }
        i += 1;
    }
    steps
}

/// Whether `actual` contains everything `expected` says (`"…"` = anything).
fn contains(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (_, Value::String(s)) if s == "…" => !actual.is_null(),
        (Value::Object(a), Value::Object(e)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|av| contains(av, v))),
        (Value::Array(a), Value::Array(e)) => {
            a.len() == e.len() && a.iter().zip(e).all(|(av, ev)| contains(av, ev))
        }
        _ => actual == expected,
    }
}

#[test]
fn containment_is_strict_where_it_matters() {
    let actual: Value = serde_json::json!({"state": "APPLIED", "id": "x", "n": [1, 2]});
    assert!(contains(
        &actual,
        &serde_json::json!({"state": "APPLIED", "id": "…"})
    ));
    assert!(!contains(
        &actual,
        &serde_json::json!({"state": "REJECTED"})
    ));
    assert!(!contains(&actual, &serde_json::json!({"missing": "…"})));
    assert!(!contains(&actual, &serde_json::json!({"n": [1]})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_readme_walkthrough_runs_against_writ_dev() {
    writ_testkit::init_tracing();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let steps = steps(&readme);
    assert!(
        steps.len() >= 6,
        "the README walkthrough has {} tested blocks",
        steps.len()
    );

    let dir = tempfile::tempdir().unwrap();
    let stack = DevStack::start(DevOptions {
        data_dir: dir.path().to_owned(),
        ingress_port: 0,
        edge_port: 0,
        worker_port: 0,
        ..DevOptions::default()
    })
    .await
    .unwrap();
    let ingress = stack.ingress_url().trim_start_matches("http://").to_owned();
    let edge = stack.edge_url().trim_start_matches("http://").to_owned();
    let stop = CancellationToken::new();
    let running = tokio::spawn(stack.run(stop.clone()));

    for step in &steps {
        let script = step
            .script
            .replace("localhost:8080", &ingress)
            .replace("localhost:8090", &edge);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let output = tokio::process::Command::new("bash")
                .arg("-c")
                .arg(format!("set -euo pipefail\n{script}"))
                .output()
                .await
                .expect("bash runs");
            let stdout = String::from_utf8_lossy(&output.stdout).to_string();
            let verdict = if !output.status.success() {
                Err(format!(
                    "exit {}: {}{}",
                    output.status,
                    stdout,
                    String::from_utf8_lossy(&output.stderr)
                ))
            } else if let Some(expect) = &step.expect {
                // The last JSON document printed is the answer to compare.
                let last = stdout
                    .lines()
                    .rev()
                    .find_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
                    .or_else(|| serde_json::from_str::<Value>(stdout.trim()).ok());
                match last {
                    Some(actual) if contains(&actual, expect) => Ok(()),
                    Some(actual) => Err(format!("got {actual}, expected to contain {expect}")),
                    None => Err(format!("no JSON in the output: {stdout}")),
                }
            } else {
                Ok(())
            };
            match verdict {
                Ok(()) => break,
                Err(e) if Instant::now() > deadline => {
                    panic!(
                        "README block ending at line {}:\n{}\n{e}",
                        step.line, step.script
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
    writ_testkit::cancel_and_join(&stop, running, Duration::from_secs(30))
        .await
        .unwrap();
}
