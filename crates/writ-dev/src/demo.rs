//! `writ demo`: the six patterns, driven over HTTP against a running stack.
//!
//! Every step goes through the real path — the ingress or the edge, Kafka,
//! a worker, the master, the status topic — and the demo only reports what
//! the services answered; it never reads the master or the topics itself, so
//! it works the same against `writ dev` and against a deployment.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::{json, Value};

/// Where the demo sends its requests.
#[derive(Debug, Clone)]
pub struct DemoTarget {
    /// Base URL of the ingress (CP-1..CP-4).
    pub ingress_url: String,
    /// Base URL of the edge service (CP-5, CP-6).
    pub edge_url: String,
    /// API key, when the target requires one.
    pub api_key: Option<String>,
    /// How long to wait for any one pattern to settle.
    pub timeout: Duration,
    /// Lines in the CP-3 bulk job.
    pub bulk_lines: usize,
}

impl DemoTarget {
    /// A target with the default timeout (30 s) and bulk size (1000 lines).
    pub fn new(ingress_url: impl Into<String>, edge_url: impl Into<String>) -> Self {
        Self {
            ingress_url: ingress_url.into(),
            edge_url: edge_url.into(),
            api_key: None,
            timeout: Duration::from_secs(30),
            bulk_lines: 1000,
        }
    }
}

/// One line of the demo's table.
#[derive(Debug, Clone)]
pub struct DemoRow {
    /// Pattern id and name (`CP-1 sync write`).
    pub pattern: &'static str,
    /// What was sent.
    pub sent: String,
    /// The final state the services reported (`APPLIED`, `SYNCED`, ...), or the failure.
    pub final_state: String,
    /// The master's id for the entity, when known.
    pub canonical_id: Option<String>,
    /// From the first request to the final state.
    pub latency: Duration,
    /// Whether the pattern reached the state it should.
    pub ok: bool,
}

struct Demo {
    client: Client,
    target: DemoTarget,
    run: String,
}

impl Demo {
    fn auth(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.target.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    fn customer(&self, n: usize, name: &str) -> Value {
        json!({
            "customer_id": format!("demo-{}-{n}", self.run),
            "name": name,
            "email": format!("demo{n}@example.com"),
            "tier": "GOLD",
        })
    }

    async fn json(&self, request: RequestBuilder) -> anyhow::Result<(StatusCode, Value)> {
        let response = self.auth(request).send().await?;
        let status = response.status();
        let body = response.text().await?;
        let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
        Ok((status, value))
    }

    /// Polls `url` until `done` says the body is final, or the timeout.
    async fn poll(&self, url: &str, done: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        let deadline = Instant::now() + self.target.timeout;
        loop {
            let (status, body) = self.json(self.client.get(url)).await?;
            if status.is_success() && done(&body) {
                return Ok(body);
            }
            if Instant::now() > deadline {
                bail!(
                    "not settled after {:?}: last answer {status} {body}",
                    self.target.timeout
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn command_url(&self) -> String {
        format!("{}/v1/commands/customer.upsert.v1", self.target.ingress_url)
    }

    async fn cp1(&self) -> anyhow::Result<(String, Option<String>)> {
        let (status, body) = self
            .json(
                self.client
                    .post(self.command_url())
                    .header("Idempotency-Key", format!("demo-{}-cp1", self.run))
                    .header("Prefer", "wait=10")
                    .json(&self.customer(1, "Ada (sync)")),
            )
            .await?;
        if status != StatusCode::CREATED {
            bail!("expected 201 Created, got {status}: {body}");
        }
        Ok((str_field(&body, "state"), opt_field(&body, "canonicalId")))
    }

    async fn cp2(&self) -> anyhow::Result<(String, Option<String>)> {
        let (status, body) = self
            .json(
                self.client
                    .post(self.command_url())
                    .header("Idempotency-Key", format!("demo-{}-cp2", self.run))
                    .json(&self.customer(2, "Grace (async)")),
            )
            .await?;
        if status != StatusCode::ACCEPTED {
            bail!("expected 202 Accepted, got {status}: {body}");
        }
        let id = str_field(&body, "submissionId");
        let url = format!("{}/v1/submissions/{id}", self.target.ingress_url);
        let last = self.poll(&url, |b| b["state"] != "ACCEPTED").await?;
        Ok((str_field(&last, "state"), opt_field(&last, "canonicalId")))
    }

    async fn cp3(&self) -> anyhow::Result<(String, Option<String>)> {
        let mut upload = String::new();
        for n in 0..self.target.bulk_lines {
            upload.push_str(&self.customer(1000 + n, &format!("Bulk {n}")).to_string());
            upload.push('\n');
        }
        let (status, body) = self
            .json(
                self.client
                    .post(format!(
                        "{}/v1/jobs?type=customer.upsert.v1",
                        self.target.ingress_url
                    ))
                    .header("Idempotency-Key", format!("demo-{}-cp3", self.run))
                    .header("Content-Type", "application/x-ndjson")
                    .body(upload),
            )
            .await?;
        if status != StatusCode::ACCEPTED {
            bail!("expected 202 Accepted, got {status}: {body}");
        }
        let id = str_field(&body, "jobId");
        let url = format!("{}/v1/jobs/{id}", self.target.ingress_url);
        let last = self.poll(&url, |b| b["done"] == true).await?;
        let applied = last["counts"]["applied"].as_u64().unwrap_or(0);
        Ok((
            format!("{applied}/{} APPLIED", self.target.bulk_lines),
            Some(format!("job {id}")),
        ))
    }

    async fn cp4(&self) -> anyhow::Result<(String, Option<String>)> {
        let base = format!(
            "{}/v1/drafts/demo-{}-cp4",
            self.target.ingress_url, self.run
        );
        let mut partial = self.customer(4, "Linus (draft)");
        partial.as_object_mut().map(|o| o.remove("email"));
        let (status, body) = self
            .json(
                self.client
                    .put(&base)
                    .json(&json!({"type": "customer.upsert.v1", "data": partial})),
            )
            .await?;
        if !status.is_success() {
            bail!("saving the partial draft: {status}: {body}");
        }
        let etag = self
            .auth(self.client.get(&base))
            .send()
            .await?
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .context("the draft has no ETag")?;
        let (status, body) = self
            .json(self.client.put(&base).header("If-Match", etag).json(
                &json!({"type": "customer.upsert.v1", "data": self.customer(4, "Linus (draft)")}),
            ))
            .await?;
        if !status.is_success() {
            bail!("completing the draft: {status}: {body}");
        }
        let (status, body) = self
            .json(
                self.client
                    .post(format!("{base}/submit"))
                    .header("Prefer", "wait=10"),
            )
            .await?;
        if status != StatusCode::CREATED {
            bail!("expected 201 Created on submit, got {status}: {body}");
        }
        Ok((str_field(&body, "state"), opt_field(&body, "canonicalId")))
    }

    async fn edge_write(&self, collection: &str, n: usize, name: &str) -> anyhow::Result<String> {
        let (status, body) = self
            .json(
                self.client
                    .post(format!("{}/v1/records/{collection}", self.target.edge_url))
                    .json(&self.customer(n, name)),
            )
            .await?;
        if status != StatusCode::CREATED {
            bail!("expected 201 Created from the edge, got {status}: {body}");
        }
        Ok(str_field(&body, "id"))
    }

    async fn cp5(&self) -> anyhow::Result<(String, Option<String>)> {
        let temp = self.edge_write("customers", 5, "Edsger (edge)").await?;
        let url = format!("{}/v1/records/customers/{temp}", self.target.edge_url);
        let last = self.poll(&url, |b| b["syncState"] != "PENDING").await?;
        Ok((
            str_field(&last, "syncState"),
            opt_field(&last, "canonicalId"),
        ))
    }

    async fn cp6(&self) -> anyhow::Result<(String, Option<String>)> {
        let mut temps = Vec::new();
        for n in 0..3 {
            temps.push(
                self.edge_write("field_customers", 60 + n, &format!("Field {n}"))
                    .await?,
            );
        }
        let mut states = Vec::new();
        let mut canonical = None;
        for temp in &temps {
            let url = format!("{}/v1/records/field_customers/{temp}", self.target.edge_url);
            let last = self.poll(&url, |b| b["syncState"] != "PENDING").await?;
            states.push(str_field(&last, "syncState"));
            canonical = opt_field(&last, "canonicalId");
        }
        let synced = states.iter().filter(|s| *s == "SYNCED").count();
        Ok((format!("{synced}/3 SYNCED"), canonical))
    }
}

fn str_field(body: &Value, name: &str) -> String {
    body[name].as_str().unwrap_or_default().to_owned()
}

fn opt_field(body: &Value, name: &str) -> Option<String> {
    body[name].as_str().map(str::to_owned)
}

/// Whether a reported state is the expected one: `APPLIED`, or `n/n APPLIED` with every item there.
fn reached(state: &str, expected: &str) -> bool {
    match state.split_once(' ') {
        Some((count, rest)) => {
            rest == expected
                && count
                    .split_once('/')
                    .is_some_and(|(done, all)| done == all && done != "0")
        }
        None => state == expected,
    }
}

/// Runs the six patterns one after the other and returns one row each.
pub async fn run(target: DemoTarget) -> anyhow::Result<Vec<DemoRow>> {
    let demo = Demo {
        client: Client::builder().timeout(Duration::from_secs(60)).build()?,
        run: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
        target,
    };
    let steps: [(&'static str, String, &str); 6] = [
        (
            "CP-1 sync write",
            "POST /v1/commands + Prefer: wait=10".into(),
            "APPLIED",
        ),
        (
            "CP-2 async write",
            "POST /v1/commands, poll status".into(),
            "APPLIED",
        ),
        (
            "CP-3 bulk job",
            format!("POST /v1/jobs ({} NDJSON lines)", demo.target.bulk_lines),
            "APPLIED",
        ),
        (
            "CP-4 draft",
            "PUT partial, PUT full, submit".into(),
            "APPLIED",
        ),
        (
            "CP-5 edge copy",
            "POST edge /v1/records/customers".into(),
            "SYNCED",
        ),
        (
            "CP-6 dual copy",
            "3 writes, 2 s sync window".into(),
            "SYNCED",
        ),
    ];
    let mut rows = Vec::new();
    for (i, (pattern, sent, expected)) in steps.into_iter().enumerate() {
        let started = Instant::now();
        let result = match i {
            0 => demo.cp1().await,
            1 => demo.cp2().await,
            2 => demo.cp3().await,
            3 => demo.cp4().await,
            4 => demo.cp5().await,
            _ => demo.cp6().await,
        };
        let latency = started.elapsed();
        rows.push(match result {
            Ok((state, canonical_id)) => DemoRow {
                ok: reached(&state, expected),
                pattern,
                sent,
                final_state: state,
                canonical_id,
                latency,
            },
            Err(e) => DemoRow {
                pattern,
                sent,
                final_state: format!("FAILED: {e:#}"),
                canonical_id: None,
                latency,
                ok: false,
            },
        });
    }
    Ok(rows)
}

/// The rows as a plain-text table.
pub fn table(rows: &[DemoRow]) -> String {
    let header = ["pattern", "sent", "final state", "canonical id", "latency"];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.pattern.to_owned(),
                r.sent.clone(),
                r.final_state.clone(),
                r.canonical_id.clone().unwrap_or_else(|| "-".into()),
                format!("{} ms", r.latency.as_millis()),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: [&str; 5]| {
        cols.iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = line(header);
    out.push('\n');
    out.push_str(&line(
        widths.map(|w| "-".repeat(w)).each_ref().map(String::as_str),
    ));
    for row in &cells {
        out.push('\n');
        out.push_str(&line(row.each_ref().map(String::as_str)));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_count_only_when_complete() {
        assert!(reached("APPLIED", "APPLIED"));
        assert!(reached("3/3 SYNCED", "SYNCED"));
        assert!(!reached("2/3 SYNCED", "SYNCED"));
        assert!(!reached("0/0 APPLIED", "APPLIED"));
        assert!(!reached("REJECTED", "APPLIED"));
    }

    #[test]
    fn the_table_aligns_columns() {
        let rows = vec![DemoRow {
            pattern: "CP-1 sync write",
            sent: "POST".into(),
            final_state: "APPLIED".into(),
            canonical_id: Some("c-1".into()),
            latency: Duration::from_millis(42),
            ok: true,
        }];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("pattern          sent"));
        assert!(lines[2].contains("APPLIED") && lines[2].ends_with("42 ms"));
    }
}
