//! Executes the HTTP examples of this crate's README, in order, against the
//! router: each ```http request block is sent as written, and the ```http
//! response block after it must match — status, every header shown, and
//! every JSON member shown (members left out of the README are not checked).
//!
//! The README shows realistic ETags and submission ids; those are random per
//! run, so the first time one appears in a response it is learned, and later
//! blocks are read with the README's value replaced by the real one.
//! `<!-- readme-test: host outcome X -->` sets what the stand-in ingress
//! answers to a submit that waits.

mod common;

use axum::body::Body;
use axum::http::Request;
use serde_json::Value as Json;
use tower::ServiceExt;

use common::{App, Outcome, Reply};

/// One parsed ```http block.
struct Block {
    first: String,
    headers: Vec<(String, String)>,
    body: String,
}

enum Item {
    Outcome(Outcome),
    Http(String),
}

fn items(readme: &str) -> Vec<Item> {
    let mut out = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        if let Some(rest) = line.trim().strip_prefix("<!-- readme-test: host outcome ") {
            let outcome = match rest.trim_end_matches("-->").trim() {
                "applied" => Outcome::Applied,
                "rejected" => Outcome::Rejected("EMAIL_DOMAIN"),
                "pending" => Outcome::Pending,
                other => panic!("unknown readme-test outcome {other:?}"),
            };
            out.push(Item::Outcome(outcome));
        } else if line.trim() == "```http" {
            let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            out.push(Item::Http(block.join("\n")));
        }
    }
    out
}

fn parse(text: &str) -> Block {
    let mut lines = text.lines();
    let first = lines.next().expect("a non-empty block").trim().to_owned();
    let mut headers = Vec::new();
    for line in lines.by_ref() {
        if line.trim().is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').expect("`Name: value` header");
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let body = lines.collect::<Vec<_>>().join("\n").trim().to_owned();
    Block {
        first,
        headers,
        body,
    }
}

fn substitute(text: &str, subs: &[(String, String)]) -> String {
    subs.iter()
        .fold(text.to_owned(), |t, (from, to)| t.replace(from, to))
}

fn learn(subs: &mut Vec<(String, String)>, readme: &str, actual: &str) {
    if readme != actual && !subs.iter().any(|(f, _)| f == readme) {
        subs.push((readme.to_owned(), actual.to_owned()));
    }
}

/// The incarnation part of an ETag, `"<incarnation>-<version>"`.
fn incarnation(tag: &str) -> &str {
    tag.trim_matches('"')
        .rsplit_once('-')
        .map_or(tag, |(i, _)| i)
}

/// Learns the random values the README shows from the actual response.
fn learn_values(subs: &mut Vec<(String, String)>, expected: &Json, actual: &Json) {
    match (expected, actual) {
        (Json::Object(e), Json::Object(a)) => {
            for (k, ev) in e {
                let Some(av) = a.get(k) else { continue };
                if k == "submissionId" {
                    if let (Some(es), Some(as_)) = (ev.as_str(), av.as_str()) {
                        learn(subs, es, as_);
                    }
                }
                learn_values(subs, ev, av);
            }
        }
        (Json::Array(e), Json::Array(a)) => {
            for (ev, av) in e.iter().zip(a) {
                learn_values(subs, ev, av);
            }
        }
        _ => {}
    }
}

/// Every member the README shows is in the response with the same value.
fn assert_subset(expected: &Json, actual: &Json, path: &str) {
    match (expected, actual) {
        (Json::Object(e), Json::Object(a)) => {
            for (k, ev) in e {
                let av = a
                    .get(k)
                    .unwrap_or_else(|| panic!("{path}/{k} missing from {actual}"));
                assert_subset(ev, av, &format!("{path}/{k}"));
            }
        }
        (Json::Array(e), Json::Array(a)) => {
            assert_eq!(e.len(), a.len(), "{path}: {actual}");
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                assert_subset(ev, av, &format!("{path}/{i}"));
            }
        }
        _ => assert_eq!(expected, actual, "{path}"),
    }
}

#[tokio::test]
async fn the_readme_examples_hold() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let app = App::sqlite().await;
    let mut subs: Vec<(String, String)> = Vec::new();
    let mut pending: Option<(String, Reply)> = None;
    let mut exchanges = 0;
    for item in items(&readme) {
        let text = match item {
            Item::Outcome(o) => {
                app.host.set_outcome(o);
                continue;
            }
            Item::Http(text) => text,
        };
        if !text.trim_start().starts_with("HTTP/1.1 ") {
            assert!(pending.is_none(), "a request without a response block");
            let request = parse(&substitute(&text, &subs));
            let mut parts = request.first.split_whitespace();
            let (method, uri) = (parts.next().unwrap(), parts.next().unwrap());
            let mut builder = Request::builder().method(method).uri(uri);
            for (name, value) in &request.headers {
                builder = builder.header(name, value);
            }
            let response = app
                .router
                .clone()
                .oneshot(builder.body(Body::from(request.body.clone())).unwrap())
                .await
                .unwrap();
            pending = Some((request.first, Reply::read(response).await));
            continue;
        }
        let (request, reply) = pending.take().expect("a response block after a request");
        let raw = parse(&substitute(&text, &subs));
        if !raw.body.is_empty() {
            let expected: Json = serde_json::from_str(&raw.body)
                .unwrap_or_else(|e| panic!("README body after {request}: {e}"));
            learn_values(&mut subs, &expected, &reply.body);
        }
        for (name, value) in &raw.headers {
            if name == "etag" {
                if let Some(actual) = reply.header("etag") {
                    learn(&mut subs, incarnation(value), incarnation(actual));
                }
            }
        }
        let expected = parse(&substitute(&text, &subs));
        let status: u16 = expected
            .first
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(reply.status.as_u16(), status, "{request}: {:?}", reply.body);
        for (name, value) in &expected.headers {
            assert_eq!(
                reply.header(name),
                Some(value.as_str()),
                "{request}: header {name}"
            );
        }
        if !expected.body.is_empty() {
            let body: Json = serde_json::from_str(&expected.body).unwrap();
            assert_subset(&body, &reply.body, "");
        }
        exchanges += 1;
    }
    assert!(pending.is_none(), "the last request has no response block");
    assert!(
        exchanges >= 10,
        "only {exchanges} exchanges found in the README"
    );
}
