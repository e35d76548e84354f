//! Every metric the edge emits, named and labelled in one place
//! (`writ_edge_<noun>_<unit>[_total]`, low-cardinality labels only), and the
//! process-wide Prometheus recorder `/metrics` renders.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

const WRITES: &str = "writ_edge_writes_total";
const PUBLISHED: &str = "writ_edge_outbox_published_total";
const PUBLISH_FAILURES: &str = "writ_edge_publish_failures_total";
const PENDING: &str = "writ_edge_outbox_pending_records";
const STATUSES: &str = "writ_edge_statuses_applied_total";
const CONFLICTS: &str = "writ_edge_conflicts_total";
const RESOLUTIONS: &str = "writ_edge_conflict_resolutions_total";
const RESOLUTION_FAILURES: &str = "writ_edge_conflict_resolution_failures_total";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder once per process and returns its handle.
///
/// The `metrics` facade allows one global recorder; when another component
/// of the same process (a worker in `writ dev` or in tests) installed one
/// first, its recorder receives these metrics and this returns `None`.
pub fn install_recorder() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => Some(handle),
                Err(_) => {
                    tracing::warn!(
                        "a metrics recorder is already installed; /metrics of the edge stays empty"
                    );
                    None
                }
            }
        })
        .clone()
}

/// A local write was committed (`op` = `create` | `update`).
pub fn write(collection: &str, op: &'static str) {
    metrics::counter!(WRITES, "collection" => collection.to_owned(), "op" => op).increment(1);
}

/// Outbox rows acknowledged by Kafka.
pub fn published(collection: &str, n: usize) {
    metrics::counter!(PUBLISHED, "collection" => collection.to_owned()).increment(n as u64);
}

/// Outbox rows whose publish failed (they stay pending).
pub fn publish_failed(collection: &str, n: usize) {
    metrics::counter!(PUBLISH_FAILURES, "collection" => collection.to_owned()).increment(n as u64);
}

/// Rows waiting in the outbox of a collection.
pub fn pending(collection: &str, n: u64) {
    metrics::gauge!(PENDING, "collection" => collection.to_owned()).set(n as f64);
}

/// A status event changed a local record (`state` = the status state).
pub fn status_applied(state: &'static str) {
    metrics::counter!(STATUSES, "state" => state).increment(1);
}

/// A version conflict was recorded under `policy`.
pub fn conflict(policy: &'static str) {
    metrics::counter!(CONFLICTS, "policy" => policy).increment(1);
}

/// A conflict was resolved (`take` = `local` | `master`).
pub fn resolution(take: &'static str) {
    metrics::counter!(RESOLUTIONS, "take" => take).increment(1);
}

/// An automatic resolution failed and will be retried.
pub fn resolution_failed() {
    metrics::counter!(RESOLUTION_FAILURES).increment(1);
}
