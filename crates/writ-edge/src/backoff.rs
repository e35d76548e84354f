//! Exponential back-off with full jitter, shared by the relay, the status
//! consumer and the resolver: while the broker, the local store or the master
//! is down, every instance retries at a spread-out, bounded pace.

use std::time::Duration;

/// Doubling delays between `initial` and `max`, each drawn uniformly below the bound.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    bound: Duration,
}

impl Backoff {
    /// Starts at `initial`, never above `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            bound: initial,
        }
    }

    /// The next delay (full jitter: uniform in `[bound/2, bound]`), doubling the bound.
    pub fn next_delay(&mut self) -> Duration {
        let bound = self.bound;
        self.bound = (self.bound * 2).min(self.max);
        let half = bound / 2;
        let spread = bound.saturating_sub(half).as_millis() as u64;
        half + Duration::from_millis(if spread == 0 {
            0
        } else {
            rand::random_range(0..=spread)
        })
    }

    /// Back to the initial delay after a success.
    pub fn reset(&mut self) {
        self.bound = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let d1 = b.next_delay();
        assert!(
            d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100),
            "{d1:?}"
        );
        let d2 = b.next_delay();
        assert!(
            d2 >= Duration::from_millis(100) && d2 <= Duration::from_millis(200),
            "{d2:?}"
        );
        for _ in 0..10 {
            assert!(b.next_delay() <= Duration::from_millis(400));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
