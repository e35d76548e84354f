//! Explicit staleness windows: every command says by when it must have reached
//! a terminal state (`ce_staleafter`); past that, readers flag it as stale and
//! a metric counts the violation, instead of a silent, unbounded delay.

use std::time::Duration;

use time::OffsetDateTime;

use crate::status::SubmissionState;

/// The window a command type gets by default, and the bounds a client may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StalenessWindow {
    /// Used when the client asks for nothing.
    pub default: Duration,
    /// The shortest window a client may ask for.
    pub min: Duration,
    /// The longest window a client may ask for.
    pub max: Duration,
}

/// A requested window outside the configured bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("staleness window of {requested_ms} ms is outside the allowed {min_ms}..={max_ms} ms")]
pub struct StalenessError {
    /// What the client asked for, in milliseconds.
    pub requested_ms: u128,
    /// Lower bound, in milliseconds.
    pub min_ms: u128,
    /// Upper bound, in milliseconds.
    pub max_ms: u128,
}

impl Default for StalenessWindow {
    fn default() -> Self {
        Self {
            default: Duration::from_secs(60),
            min: Duration::from_secs(1),
            max: Duration::from_secs(24 * 3600),
        }
    }
}

impl StalenessWindow {
    /// The instant after which a command accepted at `now` is stale.
    pub fn stale_after(
        &self,
        requested: Option<Duration>,
        now: OffsetDateTime,
    ) -> Result<OffsetDateTime, StalenessError> {
        let window = match requested {
            None => self.default,
            Some(w) if w >= self.min && w <= self.max => w,
            Some(w) => {
                return Err(StalenessError {
                    requested_ms: w.as_millis(),
                    min_ms: self.min.as_millis(),
                    max_ms: self.max.as_millis(),
                })
            }
        };
        Ok(now + window)
    }
}

/// Whether a submission in `state` with the given deadline is stale at `now`.
pub fn is_stale(
    state: SubmissionState,
    stale_after: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> bool {
    !state.is_terminal() && stale_after.is_some_and(|deadline| now > deadline)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn default_and_bounded_requests() {
        let w = StalenessWindow::default();
        let now = datetime!(2026-01-01 00:00 UTC);
        assert_eq!(
            w.stale_after(None, now).unwrap(),
            datetime!(2026-01-01 00:01 UTC)
        );
        assert_eq!(
            w.stale_after(Some(Duration::from_secs(10)), now).unwrap(),
            datetime!(2026-01-01 00:00:10 UTC)
        );
        let err = w
            .stale_after(Some(Duration::from_millis(10)), now)
            .unwrap_err();
        assert_eq!(err.requested_ms, 10);
        assert!(w
            .stale_after(Some(Duration::from_secs(2 * 86400)), now)
            .is_err());
    }

    #[test]
    fn only_pending_submissions_go_stale() {
        let deadline = Some(datetime!(2026-01-01 00:01 UTC));
        let after = datetime!(2026-01-01 00:02 UTC);
        let before = datetime!(2026-01-01 00:00:30 UTC);
        assert!(is_stale(SubmissionState::Accepted, deadline, after));
        assert!(!is_stale(SubmissionState::Accepted, deadline, before));
        assert!(!is_stale(SubmissionState::Applied, deadline, after));
        assert!(!is_stale(SubmissionState::Accepted, None, after));
    }
}
