//! Every metric the worker emits, named and labelled in one place.
//!
//! Call sites say what happened (`outcome`, `dead_lettered`, `retry`, ...);
//! this module owns the Prometheus names (`writ_<noun>_<unit>[_total]`), the
//! label sets (`domain` and `profile` on every series, plus at most one
//! low-cardinality label such as `outcome`, `reason` or `code`) and the
//! histogram buckets. The worker serves `/metrics` itself by rendering the
//! [`PrometheusHandle`] from [`install_recorder`].
//!
//! One deviation from the naming list: `metrics` counters are integers, so the
//! time spent waiting on the rate limiter is the histogram
//! `writ_rate_limit_wait_seconds`, whose `_sum` is the total seconds waited
//! (what a `_seconds_total` counter would hold) and `_count` the number of waits.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Label, SharedString, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use writ_core::dlq::DlqReason;
use writ_core::SubmissionState;

const RECORDS_CONSUMED: &str = "writ_records_consumed_total";
const COMMANDS: &str = "writ_commands_total";
const DEDUPE_HITS: &str = "writ_dedupe_hits_total";
const DLQ_RECORDS: &str = "writ_dlq_records_total";
const DLQ_VALUE_OMITTED: &str = "writ_dlq_value_omitted_total";
const BATCH_RECORDS: &str = "writ_batch_records";
const APPLY_DURATION: &str = "writ_apply_duration_seconds";
const APPLY_RETRIES: &str = "writ_apply_retries_total";
const BATCH_SPLITS: &str = "writ_batch_splits_total";
const RATE_LIMIT_WAIT: &str = "writ_rate_limit_wait_seconds";
const RATE_LIMIT_RATE: &str = "writ_rate_limit_records_per_second";
const CONSUMER_LAG: &str = "writ_consumer_lag_records";
const STALENESS_VIOLATIONS: &str = "writ_staleness_violations_total";
const OFFSET_COMMIT_FAILURES: &str = "writ_offset_commit_failures_total";
const STAGE_DURATION: &str = "writ_batch_stage_duration_seconds";

/// Batch sizes, from interactive (a handful) to bulk (thousands).
const BATCH_RECORDS_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1_000.0, 2_500.0, 5_000.0, 10_000.0,
];

/// Apply latency, from a fast local database to a master at its limits.
const APPLY_DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Rate-limiter waits, up to the longest `Retry-After` pause.
const RATE_LIMIT_WAIT_BUCKETS: &[f64] = &[
    0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Without a scrape, histogram samples pile up until upkeep folds them in.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once and returns its handle; later calls return the same handle.
///
/// Several workers share one process in tests and `writ dev`, and the
/// `metrics` facade allows one global recorder, so the first call wins. If a
/// different recorder was installed by someone else, that one keeps
/// receiving the metrics and this handle renders nothing; a warning says so.
pub fn install_recorder() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(BATCH_RECORDS.into()), BATCH_RECORDS_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(APPLY_DURATION.into()),
                        APPLY_DURATION_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(STAGE_DURATION.into()),
                        APPLY_DURATION_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(RATE_LIMIT_WAIT.into()),
                        RATE_LIMIT_WAIT_BUCKETS,
                    )
                })
                .expect("bucket lists are non-empty constants")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics will be empty");
            } else {
                describe_all();
            }
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("writ-metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_INTERVAL);
                    upkeep.run_upkeep();
                });
            if let Err(e) = spawned {
                // Rendering also folds samples in, so scrapes keep memory bounded.
                tracing::warn!(error = %e, "could not start the metrics upkeep thread");
            }
            handle
        })
        .clone()
}

/// The `# HELP` lines, so a scrape explains itself.
fn describe_all() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(RECORDS_CONSUMED, Unit::Count, "Records read from Kafka.");
    describe_counter!(
        COMMANDS,
        Unit::Count,
        "Commands that reached a terminal outcome, by outcome."
    );
    describe_counter!(
        DEDUPE_HITS,
        Unit::Count,
        "Duplicate commands answered from the dedupe table without applying."
    );
    describe_counter!(
        DLQ_RECORDS,
        Unit::Count,
        "Records sent to the DLQ, by reason."
    );
    describe_counter!(
        DLQ_VALUE_OMITTED,
        Unit::Count,
        "Dead letters produced without their value: the copy would not fit the DLQ topic."
    );
    describe_histogram!(BATCH_RECORDS, Unit::Count, "Records per applied batch.");
    describe_histogram!(
        STAGE_DURATION,
        Unit::Seconds,
        "Time per batch in each pipeline stage (decode, apply, emit, produce, commit)."
    );
    describe_histogram!(
        APPLY_DURATION,
        Unit::Seconds,
        "Time to apply one batch to the master."
    );
    describe_counter!(
        APPLY_RETRIES,
        Unit::Count,
        "Retries of a failed apply, by error code."
    );
    describe_counter!(
        BATCH_SPLITS,
        Unit::Count,
        "Failing batches split to isolate a poison record."
    );
    describe_histogram!(
        RATE_LIMIT_WAIT,
        Unit::Seconds,
        "Time batches waited on the rate limiter; _sum is the total."
    );
    describe_gauge!(
        RATE_LIMIT_RATE,
        "Current rate limit in records per second; -1 when unlimited."
    );
    describe_gauge!(
        CONSUMER_LAG,
        Unit::Count,
        "Records between the committed offset and the end of the partition."
    );
    describe_counter!(
        STALENESS_VIOLATIONS,
        Unit::Count,
        "Commands applied after their staleness deadline."
    );
    describe_counter!(
        OFFSET_COMMIT_FAILURES,
        Unit::Count,
        "Failed Kafka offset commits."
    );
}

/// The worker's metrics, labelled with its domain and profile.
#[derive(Debug, Clone)]
pub struct WorkerMetrics {
    domain: SharedString,
    profile: SharedString,
}

impl WorkerMetrics {
    /// Metrics for the worker of `domain` running `profile`.
    pub fn new(domain: impl Into<String>, profile: impl Into<String>) -> Self {
        // Shared strings make the per-call label clone a reference-count bump.
        let shared = |s: String| SharedString::from(Arc::<str>::from(s));
        Self {
            domain: shared(domain.into()),
            profile: shared(profile.into()),
        }
    }

    /// Records read from Kafka.
    pub fn consumed(&self, records: u64) {
        metrics::counter!(RECORDS_CONSUMED, self.labels()).increment(records);
    }

    /// Commands that reached `state` (`applied`, `rejected`, `conflict`, `dead_lettered`).
    pub fn outcome(&self, state: SubmissionState, n: u64) {
        let labels = self.labels_with("outcome", outcome_label(state));
        metrics::counter!(COMMANDS, labels).increment(n);
    }

    /// Duplicates answered from the dedupe table.
    pub fn dedupe_hit(&self, n: u64) {
        metrics::counter!(DEDUPE_HITS, self.labels()).increment(n);
    }

    /// Records sent to the DLQ for `reason`.
    pub fn dead_lettered(&self, reason: DlqReason, n: u64) {
        let labels = self.labels_with("reason", reason_label(reason));
        metrics::counter!(DLQ_RECORDS, labels).increment(n);
    }

    /// A dead letter was produced without its value (too large for the DLQ topic).
    pub fn dlq_value_omitted(&self) {
        metrics::counter!(DLQ_VALUE_OMITTED, self.labels()).increment(1);
    }

    /// One batch applied: its size and how long the apply took.
    pub fn batch(&self, records: usize, apply_latency: Duration) {
        metrics::histogram!(BATCH_RECORDS, self.labels()).record(records as f64);
        metrics::histogram!(APPLY_DURATION, self.labels()).record(apply_latency.as_secs_f64());
    }

    /// Time one batch spent in a pipeline stage (`decode`, `apply`, `emit`, `produce`, `commit`).
    pub fn stage(&self, stage: &'static str, took: Duration) {
        metrics::histogram!(STAGE_DURATION, self.labels_with("stage", stage))
            .record(took.as_secs_f64());
    }

    /// One retry of a failed apply; `code` is the stable error code, never a message.
    pub fn retry(&self, code: &'static str) {
        metrics::counter!(APPLY_RETRIES, self.labels_with("code", code)).increment(1);
    }

    /// A failing batch was split to isolate a poison record.
    pub fn batch_split(&self) {
        metrics::counter!(BATCH_SPLITS, self.labels()).increment(1);
    }

    /// Time one acquire waited on the rate limiter (zero waits count too).
    pub fn rate_limit_wait(&self, waited: Duration) {
        metrics::histogram!(RATE_LIMIT_WAIT, self.labels()).record(waited.as_secs_f64());
    }

    /// The limiter's current rate; `None` (unlimited) is exported as -1.
    pub fn rate_current(&self, rate: Option<f64>) {
        metrics::gauge!(RATE_LIMIT_RATE, self.labels()).set(rate.unwrap_or(-1.0));
    }

    /// Lag of one assigned partition, in records.
    pub fn consumer_lag(&self, topic: &str, partition: i32, lag: i64) {
        let mut labels = self.labels();
        labels.push(Label::new("topic", topic.to_owned()));
        labels.push(Label::new("partition", partition.to_string()));
        metrics::gauge!(CONSUMER_LAG, labels).set(lag as f64);
    }

    /// Commands applied after their staleness deadline.
    pub fn stale(&self, n: u64) {
        metrics::counter!(STALENESS_VIOLATIONS, self.labels()).increment(n);
    }

    /// A Kafka offset commit failed.
    pub fn commit_failed(&self) {
        metrics::counter!(OFFSET_COMMIT_FAILURES, self.labels()).increment(1);
    }

    fn labels(&self) -> Vec<Label> {
        vec![
            Label::new("domain", self.domain.clone()),
            Label::new("profile", self.profile.clone()),
        ]
    }

    fn labels_with(&self, key: &'static str, value: &'static str) -> Vec<Label> {
        let mut labels = self.labels();
        labels.push(Label::new(key, value));
        labels
    }
}

/// Prometheus-style lower case; `accepted` is not an outcome but maps rather than panics.
fn outcome_label(state: SubmissionState) -> &'static str {
    match state {
        SubmissionState::Accepted => "accepted",
        SubmissionState::Applied => "applied",
        SubmissionState::Rejected => "rejected",
        SubmissionState::Conflict => "conflict",
        SubmissionState::DeadLettered => "dead_lettered",
    }
}

fn reason_label(reason: DlqReason) -> &'static str {
    match reason {
        DlqReason::Poison => "poison",
        DlqReason::UnknownType => "unknown_type",
        DlqReason::RetriesExhausted => "retries_exhausted",
        DlqReason::Rejected => "rejected",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each test uses its own domain: the recorder is global to the test binary.
    fn metrics_for(domain: &str) -> (PrometheusHandle, WorkerMetrics) {
        (install_recorder(), WorkerMetrics::new(domain, "bulk"))
    }

    fn assert_has(text: &str, line: &str) {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }

    #[test]
    fn install_is_idempotent() {
        let (first, m) = metrics_for("idem");
        let second = install_recorder();
        m.batch_split();
        let expected = r#"writ_batch_splits_total{domain="idem",profile="bulk"} 1"#;
        assert_has(&first.render(), expected);
        assert_has(&second.render(), expected);
    }

    #[test]
    fn counters_carry_domain_profile_and_their_label() {
        let (handle, m) = metrics_for("orders");
        m.consumed(10);
        m.consumed(5);
        m.outcome(SubmissionState::Applied, 3);
        m.outcome(SubmissionState::DeadLettered, 1);
        m.outcome(SubmissionState::Conflict, 2);
        m.dedupe_hit(4);
        m.dead_lettered(DlqReason::RetriesExhausted, 1);
        m.retry("MASTER_UNAVAILABLE");
        m.retry("MASTER_UNAVAILABLE");
        m.stale(1);
        m.commit_failed();
        let text = handle.render();
        for line in [
            r#"writ_records_consumed_total{domain="orders",profile="bulk"} 15"#,
            r#"writ_commands_total{domain="orders",profile="bulk",outcome="applied"} 3"#,
            r#"writ_commands_total{domain="orders",profile="bulk",outcome="dead_lettered"} 1"#,
            r#"writ_commands_total{domain="orders",profile="bulk",outcome="conflict"} 2"#,
            r#"writ_dedupe_hits_total{domain="orders",profile="bulk"} 4"#,
            r#"writ_dlq_records_total{domain="orders",profile="bulk",reason="retries_exhausted"} 1"#,
            r#"writ_apply_retries_total{domain="orders",profile="bulk",code="MASTER_UNAVAILABLE"} 2"#,
            r#"writ_staleness_violations_total{domain="orders",profile="bulk"} 1"#,
            r#"writ_offset_commit_failures_total{domain="orders",profile="bulk"} 1"#,
        ] {
            assert_has(&text, line);
        }
        assert!(text.contains("# HELP writ_commands_total"), "{text}");
    }

    #[test]
    fn histograms_use_the_configured_buckets() {
        let (handle, m) = metrics_for("hist");
        m.batch(100, Duration::from_millis(30));
        m.batch(3, Duration::from_millis(2));
        m.rate_limit_wait(Duration::from_millis(1_500));
        m.rate_limit_wait(Duration::ZERO);
        let text = handle.render();
        for line in [
            r#"writ_batch_records_bucket{domain="hist",profile="bulk",le="5"} 1"#,
            r#"writ_batch_records_bucket{domain="hist",profile="bulk",le="100"} 2"#,
            r#"writ_batch_records_sum{domain="hist",profile="bulk"} 103"#,
            r#"writ_batch_records_count{domain="hist",profile="bulk"} 2"#,
            r#"writ_apply_duration_seconds_bucket{domain="hist",profile="bulk",le="0.0025"} 1"#,
            r#"writ_apply_duration_seconds_bucket{domain="hist",profile="bulk",le="0.05"} 2"#,
            r#"writ_apply_duration_seconds_count{domain="hist",profile="bulk"} 2"#,
            r#"writ_rate_limit_wait_seconds_sum{domain="hist",profile="bulk"} 1.5"#,
            r#"writ_rate_limit_wait_seconds_count{domain="hist",profile="bulk"} 2"#,
        ] {
            assert_has(&text, line);
        }
    }

    #[test]
    fn gauges_for_rate_and_lag() {
        let (handle, m) = metrics_for("gauges");
        m.rate_current(Some(250.0));
        m.consumer_lag("gauges.commands", 3, 42);
        let text = handle.render();
        assert_has(
            &text,
            r#"writ_rate_limit_records_per_second{domain="gauges",profile="bulk"} 250"#,
        );
        assert_has(
            &text,
            r#"writ_consumer_lag_records{domain="gauges",profile="bulk",topic="gauges.commands",partition="3"} 42"#,
        );
        m.rate_current(None);
        assert_has(
            &handle.render(),
            r#"writ_rate_limit_records_per_second{domain="gauges",profile="bulk"} -1"#,
        );
    }

    #[test]
    fn every_outcome_and_reason_has_a_distinct_label() {
        let outcomes: std::collections::HashSet<_> = SubmissionState::ALL
            .into_iter()
            .map(outcome_label)
            .collect();
        assert_eq!(outcomes.len(), SubmissionState::ALL.len());
        let reasons: std::collections::HashSet<_> =
            DlqReason::ALL.into_iter().map(reason_label).collect();
        assert_eq!(reasons.len(), DlqReason::ALL.len());
    }
}
