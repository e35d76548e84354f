//! What every writ binary does at its edge besides configuration: turn
//! SIGTERM/SIGINT into a drain, and report a fatal error with its causes.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGTERM or SIGINT: the drain signal every
/// writ binary passes to its run loop. Call it inside a tokio runtime.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())
            .expect("installing a SIGTERM handler cannot fail on unix");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        }
        cancel.cancel();
    });
    token
}

/// Logs `error` and prints it with every cause to stderr; the exit code of a
/// binary that failed (`component`: `worker`, `ingress`, `edge`).
pub fn report_failure(component: &str, error: &(dyn std::error::Error + 'static)) -> ExitCode {
    let mut chain = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push(cause.to_string());
        source = cause.source();
    }
    tracing::error!(error = chain.join(": "), "{component} failed");
    eprintln!("error: {}", chain[0]);
    for cause in &chain[1..] {
        eprintln!("  caused by: {cause}");
    }
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_failure_is_a_failing_exit_code() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(report_failure("test", &e), ExitCode::FAILURE);
    }

    #[tokio::test]
    async fn the_token_starts_uncancelled() {
        assert!(!shutdown_on_signal().is_cancelled());
    }
}
