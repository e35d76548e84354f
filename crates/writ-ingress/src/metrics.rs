//! Every metric the ingress emits, named and labelled in one place
//! (`writ_ingress_<noun>_<unit>[_total]`, low-cardinality labels only).

use std::sync::OnceLock;
use std::time::Duration;

use metrics::Unit;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

const REQUESTS: &str = "writ_ingress_requests_total";
const SUBMISSIONS: &str = "writ_ingress_submissions_total";
const PRODUCE_FAILURES: &str = "writ_ingress_produce_failures_total";
const JOB_LINES: &str = "writ_ingress_job_lines_total";
const VIEW_EVENTS: &str = "writ_ingress_view_events_total";
const VIEW_DECODE_FAILURES: &str = "writ_ingress_view_decode_failures_total";
const STALENESS_VIOLATIONS: &str = "writ_ingress_staleness_violations_total";
const STALE_PENDING: &str = "writ_ingress_stale_pending_submissions";
const WAIT_DURATION: &str = "writ_ingress_wait_duration_seconds";
const UNREAD_ANNOUNCEMENTS: &str = "writ_ingress_view_unread_announcements";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once and returns its handle.
///
/// The `metrics` facade allows one global recorder; when another component
/// in the same process (a worker in `writ dev`) installed its own first, the
/// metrics go there and this handle renders nothing.
pub fn install_recorder() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics renders only what this handle sees");
            } else {
                describe_all();
            }
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("writ-ingress-metrics".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                });
            handle
        })
        .clone()
}

fn describe_all() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        REQUESTS,
        Unit::Count,
        "HTTP answers by route and status class."
    );
    describe_counter!(
        SUBMISSIONS,
        Unit::Count,
        "Submissions by outcome (accepted, replayed, republished, key_reused)."
    );
    describe_counter!(
        PRODUCE_FAILURES,
        Unit::Count,
        "Produces that failed (answered 503), by topic role."
    );
    describe_counter!(JOB_LINES, Unit::Count, "Bulk upload lines by outcome.");
    describe_counter!(
        VIEW_EVENTS,
        Unit::Count,
        "Status events applied to the local view."
    );
    describe_counter!(
        VIEW_DECODE_FAILURES,
        Unit::Count,
        "Status records the view could not decode (skipped)."
    );
    describe_counter!(
        STALENESS_VIOLATIONS,
        Unit::Count,
        "Submissions that reached a terminal state after their staleness window, as seen by this replica's view (every replica sees every submission: do not sum across replicas)."
    );
    describe_gauge!(
        STALE_PENDING,
        Unit::Count,
        "Pending submissions currently past their staleness window."
    );
    describe_gauge!(
        UNREAD_ANNOUNCEMENTS,
        Unit::Count,
        "ACCEPTED events this replica published that its status reader has not read back yet (held in memory meanwhile); growing means the reader is stuck."
    );
    describe_histogram!(
        WAIT_DURATION,
        Unit::Seconds,
        "Time CP-1 requests waited for their status event."
    );
}

/// Emits the ingress metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct IngressMetrics;

impl IngressMetrics {
    /// One HTTP answer.
    pub fn request(&self, route: &'static str, status: u16) {
        let class = match status {
            200..=299 => "2xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        metrics::counter!(REQUESTS, "route" => route, "status" => class).increment(1);
    }

    /// One submission outcome.
    pub fn submission(&self, outcome: &'static str) {
        metrics::counter!(SUBMISSIONS, "outcome" => outcome).increment(1);
    }

    /// A failed produce.
    pub fn produce_failure(&self, role: &'static str, n: u64) {
        metrics::counter!(PRODUCE_FAILURES, "role" => role).increment(n);
    }

    /// Bulk lines by outcome.
    pub fn job_lines(&self, outcome: &'static str, n: u64) {
        if n > 0 {
            metrics::counter!(JOB_LINES, "outcome" => outcome).increment(n);
        }
    }

    /// Events applied to the view.
    pub fn view_events(&self, n: u64) {
        metrics::counter!(VIEW_EVENTS).increment(n);
    }

    /// A status record the view could not decode.
    pub fn view_decode_failure(&self) {
        metrics::counter!(VIEW_DECODE_FAILURES).increment(1);
    }

    /// Submissions that became terminal past their window.
    pub fn staleness_violations(&self, n: u64) {
        if n > 0 {
            metrics::counter!(STALENESS_VIOLATIONS).increment(n);
        }
    }

    /// Pending submissions past their window right now.
    pub fn stale_pending(&self, n: u64) {
        metrics::gauge!(STALE_PENDING).set(n as f64);
    }

    /// Announcements held in memory until the reader reads them back.
    pub fn unread_announcements(&self, n: usize) {
        metrics::gauge!(UNREAD_ANNOUNCEMENTS).set(n as f64);
    }

    /// How long a CP-1 request waited.
    pub fn waited(&self, d: Duration) {
        metrics::histogram!(WAIT_DURATION).record(d.as_secs_f64());
    }
}
