//! Executes the request/response examples of README.md (fenced blocks tagged
//! `http request` / `http response`) against the real router and an
//! in-memory store, in order, so the documentation cannot drift from the
//! service. In expected bodies, `"<...>"` matches any value and `<id>` is
//! the id the first created record got; objects match as subsets.

mod support;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

const README: &str = include_str!("../README.md");

const CUSTOMERS: &str = r#"
[collections.customers]
command_type = "customer.upsert.v1"
key_field = "customer_id"
"#;

/// Fenced blocks with their info string.
fn blocks(markdown: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in markdown.lines() {
        if let Some(info) = line.strip_prefix("```") {
            match current.take() {
                Some(block) => out.push(block),
                None => current = Some((info.trim().to_owned(), String::new())),
            }
        } else if let Some((_, body)) = current.as_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

/// Start line, headers, body.
fn parse(block: &str) -> (String, Vec<(String, String)>, String) {
    let (head, body) = block.split_once("\n\n").unwrap_or((block, ""));
    let mut lines = head.lines();
    let start = lines.next().unwrap().trim().to_owned();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').expect("header line");
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    (start, headers, body.trim().to_owned())
}

fn matches(expected: &Value, actual: &Value, id: &str, at: &str) -> Result<(), String> {
    match (expected, actual) {
        (Value::String(e), a) if e == "<id>" => (a == &Value::String(id.to_owned()))
            .then_some(())
            .ok_or(format!("{at}: expected the record id, got {a}")),
        (Value::String(e), _) if e.starts_with('<') && e.ends_with('>') => Ok(()),
        (Value::Object(e), Value::Object(a)) => {
            for (k, v) in e {
                let a = a.get(k).ok_or(format!("{at}.{k}: missing"))?;
                matches(v, a, id, &format!("{at}.{k}"))?;
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => e
            .iter()
            .zip(a)
            .enumerate()
            .try_for_each(|(i, (e, a))| matches(e, a, id, &format!("{at}[{i}]"))),
        (e, a) => (e == a)
            .then_some(())
            .ok_or(format!("{at}: expected {e}, got {a}")),
    }
}

#[tokio::test]
async fn the_readme_examples_run_as_documented() {
    let (app, _store, _wake) = support::router_for(CUSTOMERS).await;
    let blocks = blocks(README);
    let mut id = String::new();
    let mut executed = 0;
    let mut pending_request: Option<String> = None;
    for (info, body) in blocks {
        match info.as_str() {
            "http request" => pending_request = Some(body),
            "http response" => {
                let request = pending_request
                    .take()
                    .expect("a response follows a request");
                let (start, headers, req_body) = parse(&request);
                let (method, path) = start.split_once(' ').unwrap();
                let path = path.replace("<id>", &id);
                let mut builder = Request::builder().method(method).uri(&path);
                for (k, v) in &headers {
                    let v = v
                        .replace("acme-secret", support::ACME_KEY)
                        .replace("globex-secret", support::GLOBEX_KEY);
                    builder = builder.header(k, v);
                }
                let resp = app
                    .clone()
                    .oneshot(builder.body(Body::from(req_body)).unwrap())
                    .await
                    .unwrap();
                let status = resp.status();
                let resp_headers = resp.headers().clone();
                let bytes = resp.into_body().collect().await.unwrap().to_bytes();
                let actual: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);

                let (status_line, expected_headers, expected_body) = parse(&body);
                let code: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
                assert_eq!(status.as_u16(), code, "{start}: {actual}");
                if id.is_empty() {
                    if let Some(new) = actual["id"].as_str() {
                        id = new.to_owned();
                    }
                }
                for (k, v) in expected_headers {
                    let v = v.replace("<id>", &id);
                    assert_eq!(
                        resp_headers.get(&k).and_then(|h| h.to_str().ok()),
                        Some(v.as_str()),
                        "{start}: header {k}"
                    );
                }
                if !expected_body.is_empty() {
                    let expected: Value = serde_json::from_str(&expected_body)
                        .unwrap_or_else(|e| panic!("README body after {start} is not JSON: {e}"));
                    if let Err(e) = matches(&expected, &actual, &id, "$") {
                        panic!("{start}: {e}\nactual: {actual}");
                    }
                }
                executed += 1;
            }
            _ => {}
        }
    }
    assert!(executed >= 8, "only {executed} README examples found");
}

#[test]
fn the_matcher_can_fail() {
    let id = "x";
    assert!(matches(
        &serde_json::json!({"a": 1}),
        &serde_json::json!({"a": 2}),
        id,
        "$"
    )
    .is_err());
    assert!(matches(
        &serde_json::json!({"a": "<any>"}),
        &serde_json::json!({}),
        id,
        "$"
    )
    .is_err());
    assert!(matches(
        &serde_json::json!(["<id>"]),
        &serde_json::json!(["y"]),
        id,
        "$"
    )
    .is_err());
    assert!(matches(
        &serde_json::json!({"a": "<any>"}),
        &serde_json::json!({"a": 3, "b": 1}),
        id,
        "$"
    )
    .is_ok());
}
