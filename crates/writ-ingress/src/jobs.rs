//! CP-3 bulk jobs: an NDJSON upload streamed onto `<domain>.bulk`.
//!
//! The body is read as a stream and cut into lines as it arrives; lines are
//! validated and produced in chunks (`limits.upload_chunk_lines`), so memory
//! holds one chunk, never the upload. Each line is one command whose
//! idempotency key is the configured `line_key` field or `<jobId>:<line>`,
//! carrying `ce_jobid` and `ce_jobline`. Invalid lines are recorded with their
//! line number and not produced. Every chunk follows the same order as a
//! single submission: `ACCEPTED` statuses acknowledged, then the commands.
//! The client gets `202` only when every produced record is acknowledged.
//!
//! The job id is derived from the upload's `Idempotency-Key`, so re-sending
//! an upload that failed halfway (a `503`) produces the same line keys again:
//! lines already applied are replayed, the rest are produced.

use std::collections::HashMap;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use time::OffsetDateTime;
use uuid::Uuid;
use writ_http::{Principal, Problem};

use crate::config::Limits;
use crate::store::{JobRecord, JobState, LineError};
use crate::submit::{
    entity_key, store_problem, Known, Prepared, SubmitExtras, Submitter, TypeRoute,
};

/// Raw line bytes that close a chunk early, bounding an upload's memory to
/// about this much (plus one line) whatever `upload_chunk_lines` is.
const CHUNK_MAX_BYTES: usize = 8 << 20;

/// The job id of an upload: stable for a given tenant and Idempotency-Key.
pub fn job_id(source: &str, idempotency_key: &str) -> String {
    writ_core::submission_id(source, &format!("job:{idempotency_key}")).to_string()
}

/// What stopped an upload early.
#[derive(Debug)]
pub struct UploadFailed {
    /// The job as far as it got (state `FAILED`).
    pub job: JobRecord,
    /// The answer for the client.
    pub problem: Problem,
}

/// Reads `body` line by line and produces every valid line to the bulk topic.
#[allow(clippy::too_many_arguments)]
pub async fn upload<S, E>(
    submitter: &Submitter,
    principal: &Principal,
    command_type: &str,
    route: &TypeRoute,
    job_id: String,
    staleness: Option<std::time::Duration>,
    limits: &Limits,
    body: S,
) -> Result<JobRecord, UploadFailed>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut job = JobRecord {
        job_id,
        source: principal.source(),
        command_type: command_type.to_owned(),
        state: JobState::Uploading,
        lines: 0,
        produced: 0,
        tracked: 0,
        invalid: 0,
        replayed: 0,
        created_at: OffsetDateTime::now_utc(),
    };
    let store = submitter.view().store();
    let fail = |mut job: JobRecord, problem: Problem| async move {
        job.state = JobState::Failed;
        if let Err(e) = submitter.view().store().put_job(&job).await {
            tracing::error!(error = %e, job_id = %job.job_id, "could not record the failed job");
        }
        UploadFailed { job, problem }
    };
    if let Err(e) = store.put_job(&job).await {
        return Err(fail(job, store_problem(e)).await);
    }
    let mut chunker = Chunker {
        submitter,
        principal,
        command_type,
        route,
        staleness,
        pending: Vec::new(),
        pending_bytes: 0,
        chunk_lines: limits.upload_chunk_lines,
    };
    let mut splitter = LineSplitter::new(limits.line_max_bytes);
    let mut total: u64 = 0;
    let mut body = body;
    loop {
        let next = body.next().await;
        let finished = next.is_none();
        let lines = match next {
            Some(Ok(bytes)) => {
                total += bytes.len() as u64;
                if total > limits.upload_max_bytes {
                    let id = job.job_id.clone();
                    let problem = Problem::payload_too_large(limits.upload_max_bytes as usize)
                        .with_detail(format!(
                            "the upload exceeds {} bytes; lines before the limit were processed (see the job)",
                            limits.upload_max_bytes
                        ))
                        .with_extension("jobId", id);
                    return Err(fail(job, problem).await);
                }
                splitter.push(&bytes)
            }
            Some(Err(e)) => {
                let id = job.job_id.clone();
                let problem = Problem::bad_request(
                    "upload-interrupted",
                    format!("reading the upload failed: {e}"),
                )
                .with_extension("jobId", id);
                return Err(fail(job, problem).await);
            }
            None => splitter.finish(),
        };
        for line in lines {
            chunker.add(&mut job, line);
            if chunker.pending.len() >= chunker.chunk_lines
                || chunker.pending_bytes >= CHUNK_MAX_BYTES
            {
                if let Err(p) = chunker.flush(&mut job).await {
                    let id = job.job_id.clone();
                    return Err(fail(job, p.with_extension("jobId", id)).await);
                }
            }
        }
        if finished {
            break;
        }
    }
    if let Err(p) = chunker.flush(&mut job).await {
        let id = job.job_id.clone();
        return Err(fail(job, p.with_extension("jobId", id)).await);
    }
    job.state = JobState::Uploaded;
    if let Err(e) = store.put_job(&job).await {
        return Err(fail(job, store_problem(e)).await);
    }
    Ok(job)
}

/// One line of the upload, or why it could not be taken.
#[derive(Debug, PartialEq)]
enum Line {
    /// A complete line (without its terminator).
    Text { number: u64, bytes: Vec<u8> },
    /// A line longer than the limit (its content was dropped).
    TooLong { number: u64 },
}

/// Cuts a byte stream into lines, keeping at most one line in memory.
#[derive(Debug)]
struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
    number: u64,
    skipping: bool,
}

impl LineSplitter {
    fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max,
            number: 0,
            skipping: false,
        }
    }

    fn push(&mut self, mut bytes: &[u8]) -> Vec<Line> {
        let mut out = Vec::new();
        while let Some(nl) = bytes.iter().position(|b| *b == b'\n') {
            self.take(&bytes[..nl]);
            out.extend(self.end_line());
            bytes = &bytes[nl + 1..];
        }
        self.take(bytes);
        out
    }

    fn take(&mut self, part: &[u8]) {
        if self.skipping {
            return;
        }
        if self.buf.len() + part.len() > self.max {
            // Dropped now, reported at the line's end: memory stays bounded.
            self.skipping = true;
            self.buf = Vec::new();
        } else {
            self.buf.extend_from_slice(part);
        }
    }

    fn end_line(&mut self) -> Option<Line> {
        self.number += 1;
        let number = self.number;
        if std::mem::take(&mut self.skipping) {
            return Some(Line::TooLong { number });
        }
        let mut bytes = std::mem::take(&mut self.buf);
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return None; // blank lines (a trailing newline) are not commands
        }
        Some(Line::Text { number, bytes })
    }

    fn finish(&mut self) -> Vec<Line> {
        if self.buf.is_empty() && !self.skipping {
            return Vec::new();
        }
        self.end_line().into_iter().collect()
    }
}

struct Chunker<'a> {
    submitter: &'a Submitter,
    principal: &'a Principal,
    command_type: &'a str,
    route: &'a TypeRoute,
    staleness: Option<std::time::Duration>,
    pending: Vec<(u64, Result<serde_json::Value, LineError>)>,
    /// Raw size of the pending lines: with long lines, bytes close a chunk before the line count does.
    pending_bytes: usize,
    chunk_lines: usize,
}

impl Chunker<'_> {
    fn add(&mut self, job: &mut JobRecord, line: Line) {
        job.lines += 1;
        if let Line::Text { bytes, .. } = &line {
            self.pending_bytes += bytes.len();
        }
        let parsed = match line {
            Line::TooLong { number } => (
                number,
                Err(LineError {
                    line: number,
                    code: "LINE_TOO_LONG".into(),
                    message: "the line is longer than limits.line_max_bytes".into(),
                }),
            ),
            Line::Text { number, bytes } => (
                number,
                serde_json::from_slice(&bytes).map_err(|e| LineError {
                    line: number,
                    code: "INVALID_JSON".into(),
                    message: format!("not valid JSON: {e}"),
                }),
            ),
        };
        self.pending.push(parsed);
    }

    async fn flush(&mut self, job: &mut JobRecord) -> Result<(), Problem> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let now = crate::submit::announcement_time();
        let extras = SubmitExtras {
            staleness: self.staleness,
            ..SubmitExtras::default()
        };
        let mut errors = Vec::new();
        let mut prepared: Vec<Prepared> = Vec::new();
        self.pending_bytes = 0;
        for (number, parsed) in std::mem::take(&mut self.pending) {
            let payload = match parsed {
                Ok(v) => v,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let key = match &self.route.line_key {
                Some(pointer) => match entity_key(&payload, pointer) {
                    Ok(k) => k,
                    Err(p) => {
                        errors.push(line_error(number, &p));
                        continue;
                    }
                },
                None => format!("{}:{number}", job.job_id),
            };
            if let Err(p) = crate::submit::validate_key(&key) {
                errors.push(line_error(number, &p));
                continue;
            }
            match self
                .submitter
                .prepare(
                    self.principal,
                    self.route,
                    self.command_type,
                    &payload,
                    key,
                    &extras,
                    now,
                )
                .await
            {
                Ok(mut p) => {
                    p.envelope.job_id = Some(job.job_id.clone());
                    p.envelope.job_line = Some(number as i64);
                    p.accepted.job_id = Some(job.job_id.clone());
                    p.accepted.job_line = Some(number as i64);
                    prepared.push(p);
                }
                // The registry being down is not the line's fault: stop the upload.
                Err(p) if p.status >= 500 => return Err(p),
                Err(p) => errors.push(line_error(number, &p)),
            }
        }
        let ids: Vec<Uuid> = prepared.iter().map(|p| p.accepted.submission_id).collect();
        let known = self
            .submitter
            .view()
            .get_many(&ids)
            .await
            .map_err(store_problem)?;
        let mut new = Vec::new();
        let mut again = Vec::new();
        let mut replayed = 0;
        let mut tracked = 0;
        // Lines an earlier, interrupted attempt of this job already produced
        // and the worker finished: produced by this job, not again now.
        let mut resumed = 0;
        // A key repeated inside the chunk is judged against its first line.
        let mut first_in_chunk: HashMap<Uuid, String> = HashMap::new();
        for p in prepared {
            let id = p.accepted.submission_id;
            let line = p.envelope.job_line.unwrap_or(0) as u64;
            if let Some(fp) = first_in_chunk.get(&id) {
                if *fp == p.accepted.payload_fingerprint {
                    replayed += 1;
                } else {
                    errors.push(reused(line));
                }
                continue;
            }
            first_in_chunk.insert(id, p.accepted.payload_fingerprint.clone());
            match Known::classify(known.get(&id).cloned(), &p.accepted.payload_fingerprint) {
                Known::New => {
                    tracked += 1;
                    new.push(p);
                }
                Known::Republish(e) => {
                    if e.job_id.as_deref() == Some(job.job_id.as_str()) {
                        tracked += 1;
                    }
                    let mut p = p;
                    p.envelope.time = Some(e.accepted_at);
                    p.envelope.stale_after = e.stale_after;
                    again.push(p);
                }
                // Finished in an earlier attempt of this very job: still this job's line.
                Known::Replay(e) if e.job_id.as_deref() == Some(job.job_id.as_str()) => {
                    tracked += 1;
                    resumed += 1;
                }
                Known::Replay(_) => replayed += 1,
                Known::Reused(_) => errors.push(reused(line)),
            }
        }
        let metrics = crate::metrics::IngressMetrics;
        self.submitter
            .publish_accepted(&self.route.layout, &new)
            .await?;
        new.extend(again);
        self.submitter
            .produce_commands(&self.route.layout.bulk(), &new)
            .await?;
        metrics.job_lines("produced", new.len() as u64);
        metrics.job_lines("invalid", errors.len() as u64);
        metrics.job_lines("replayed", replayed);
        job.produced += new.len() as u64 + resumed;
        job.tracked += tracked;
        job.invalid += errors.len() as u64;
        job.replayed += replayed;
        let store = self.submitter.view().store();
        store
            .add_job_errors(&job.job_id, &errors)
            .await
            .map_err(store_problem)?;
        store.put_job(job).await.map_err(store_problem)
    }
}

fn reused(line: u64) -> LineError {
    LineError {
        line,
        code: "IDEMPOTENCY_KEY_REUSED".into(),
        message: "the line's key was already used for a different payload".into(),
    }
}

fn line_error(line: u64, p: &Problem) -> LineError {
    let slug = p.type_uri.rsplit(':').next().unwrap_or("invalid");
    let mut message = p.detail.clone().unwrap_or_else(|| p.title.clone());
    for f in &p.errors {
        message.push_str(&format!("; {}: {}", f.path, f.message));
    }
    LineError {
        line,
        code: slug.replace('-', "_").to_ascii_uppercase(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(lines: Vec<Line>) -> Vec<(u64, String)> {
        lines
            .into_iter()
            .map(|l| match l {
                Line::Text { number, bytes } => (number, String::from_utf8(bytes).unwrap()),
                Line::TooLong { number } => (number, "<too long>".into()),
            })
            .collect()
    }

    #[test]
    fn lines_are_cut_across_chunks_and_numbered_physically() {
        let mut s = LineSplitter::new(64);
        let mut out = s.push(b"{\"a\":1}\n{\"b\"");
        out.extend(s.push(b":2}\r\n\n  \n{\"c\":3}"));
        out.extend(s.finish());
        assert_eq!(
            texts(out),
            vec![
                (1, "{\"a\":1}".into()),
                (2, "{\"b\":2}".into()),
                (5, "{\"c\":3}".into())
            ]
        );
    }

    #[test]
    fn an_overlong_line_is_reported_and_the_next_one_read() {
        let mut s = LineSplitter::new(8);
        let mut out = s.push(b"0123456789");
        out.extend(s.push(b"abc\nok\n"));
        out.extend(s.finish());
        assert_eq!(texts(out), vec![(1, "<too long>".into()), (2, "ok".into())]);
    }

    #[test]
    fn job_ids_are_stable_per_tenant_and_key() {
        assert_eq!(job_id("/tenants/a", "k"), job_id("/tenants/a", "k"));
        assert_ne!(job_id("/tenants/a", "k"), job_id("/tenants/b", "k"));
    }

    #[test]
    fn problems_become_line_errors_with_field_paths() {
        let p = crate::submit::codec_problem(writ_codec::CodecError::Validation(
            writ_codec::ValidationErrors::single("$.email", "expected a string"),
        ));
        let e = line_error(7, &p);
        assert_eq!((e.line, e.code.as_str()), (7, "VALIDATION"));
        assert!(
            e.message.contains("/email: expected a string"),
            "{}",
            e.message
        );
    }
}
