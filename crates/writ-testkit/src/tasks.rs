//! Stopping what a test started on the runtime.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Cancels `token` and waits for the task to end; panics unless it ends
/// within `within` and without panicking, and returns what it returned.
pub async fn cancel_and_join<T>(
    token: &CancellationToken,
    handle: JoinHandle<T>,
    within: Duration,
) -> T {
    token.cancel();
    tokio::time::timeout(within, handle)
        .await
        .unwrap_or_else(|_| panic!("the task did not end within {within:?} of its cancellation"))
        .expect("the task panicked")
}
