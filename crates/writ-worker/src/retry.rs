//! When to try a failed apply again, and when to give up and dead-letter it.
//!
//! This is pure policy: it computes a delay and never sleeps, so the worker
//! owns the clock and the tests own the randomness. Backoff is exponential
//! with *full* jitter (a uniform draw in `[0, cap]`), which spreads retries of
//! many workers hit by the same outage instead of letting them return in
//! lock-step. A server's `Retry-After` is honoured as a floor, but only within
//! the elapsed-time budget: a record that cannot be retried in time goes to
//! the DLQ as `RETRIES_EXHAUSTED` rather than blocking its partition.

use std::time::Duration;

use rand::Rng;

/// How often and for how long a retryable failure is retried.
#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts in total, the first one included; reaching it gives up.
    pub max_attempts: u32,
    /// Upper bound of the first delay; doubles with every attempt.
    pub initial_backoff_ms: u64,
    /// Upper bound of any single jittered delay.
    pub max_backoff_ms: u64,
    /// Budget from the first attempt; no retry is scheduled past it.
    pub max_elapsed_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            initial_backoff_ms: 100,
            max_backoff_ms: 10_000,
            max_elapsed_ms: 120_000,
        }
    }
}

impl RetryPolicy {
    /// Checks the settings that would make the policy meaningless, for start-up.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err("retry.max_attempts must be at least 1".into());
        }
        if self.initial_backoff_ms > self.max_backoff_ms {
            return Err(format!(
                "retry.initial_backoff_ms ({}) must not exceed retry.max_backoff_ms ({})",
                self.initial_backoff_ms, self.max_backoff_ms
            ));
        }
        Ok(())
    }

    /// Delay before the next attempt, or `None` to give up (dead-letter with `RETRIES_EXHAUSTED`).
    ///
    /// `attempts_made` counts attempts already made (the first failure is 1);
    /// `elapsed` runs from the first attempt. The jittered delay is uniform in
    /// `[0, min(max_backoff, initial * 2^(attempts_made-1))]`, and also never
    /// longer than the remaining budget, so giving up on time is decided by the
    /// budget and the hint, not by a random draw. `server_hint` (`Retry-After`)
    /// is a floor; when that floor does not fit in the budget, this gives up.
    pub fn next_delay(
        &self,
        attempts_made: u32,
        elapsed: Duration,
        server_hint: Option<Duration>,
        rng: &mut impl Rng,
    ) -> Option<Duration> {
        if attempts_made >= self.max_attempts {
            return None;
        }
        let budget = Duration::from_millis(self.max_elapsed_ms);
        // An exhausted budget gives up even when a zero delay would still "fit".
        let remaining = budget.checked_sub(elapsed).filter(|r| !r.is_zero())?;

        let cap_ms = self
            .backoff_cap_ms(attempts_made)
            .min(u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX));
        let jittered = Duration::from_millis(rng.random_range(0..=cap_ms));
        let delay = server_hint.map_or(jittered, |hint| jittered.max(hint));
        (delay <= remaining).then_some(delay)
    }

    /// The exponential cap for this attempt, saturating instead of overflowing.
    fn backoff_cap_ms(&self, attempts_made: u32) -> u64 {
        let doublings = attempts_made.saturating_sub(1);
        let exponential = 1u64.checked_shl(doublings).map_or(u64::MAX, |factor| {
            self.initial_backoff_ms.saturating_mul(factor)
        });
        exponential.min(self.max_backoff_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(0x5EED)
    }

    const ZERO: Duration = Duration::ZERO;

    #[test]
    fn defaults_match_the_documented_values() {
        let p = RetryPolicy::default();
        assert_eq!(
            (
                p.max_attempts,
                p.initial_backoff_ms,
                p.max_backoff_ms,
                p.max_elapsed_ms
            ),
            (8, 100, 10_000, 120_000)
        );
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn deserializes_partial_config_and_rejects_unknown_keys() {
        let p: RetryPolicy = serde_json::from_str(r#"{"max_attempts": 3}"#).unwrap();
        assert_eq!(
            p,
            RetryPolicy {
                max_attempts: 3,
                ..RetryPolicy::default()
            }
        );
        assert!(serde_json::from_str::<RetryPolicy>(r#"{"max_attempt": 3}"#).is_err());
    }

    #[test]
    fn validate_rejects_meaningless_settings() {
        let zero = RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        };
        assert!(zero.validate().is_err());
        let inverted = RetryPolicy {
            initial_backoff_ms: 20_000,
            ..RetryPolicy::default()
        };
        assert!(inverted.validate().is_err());
    }

    #[test]
    fn jittered_delay_stays_within_the_exponential_bound() {
        let p = RetryPolicy::default();
        let mut rng = rng();
        for attempt in 1..p.max_attempts {
            let bound = Duration::from_millis((100u64 << (attempt - 1)).min(10_000));
            let mut max_seen = ZERO;
            let mut min_seen = bound;
            for _ in 0..2_000 {
                let d = p.next_delay(attempt, ZERO, None, &mut rng).unwrap();
                assert!(d <= bound, "attempt {attempt}: {d:?} > {bound:?}");
                max_seen = max_seen.max(d);
                min_seen = min_seen.min(d);
            }
            // Full jitter: draws cover the whole range, not just its top.
            assert!(
                max_seen > bound * 9 / 10,
                "attempt {attempt}: max {max_seen:?}"
            );
            assert!(min_seen < bound / 10, "attempt {attempt}: min {min_seen:?}");
        }
    }

    #[test]
    fn delay_is_capped_by_max_backoff() {
        let p = RetryPolicy {
            max_attempts: 100,
            ..RetryPolicy::default()
        };
        let mut rng = rng();
        let cap = Duration::from_millis(p.max_backoff_ms);
        for _ in 0..2_000 {
            assert!(p.next_delay(20, ZERO, None, &mut rng).unwrap() <= cap);
        }
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let p = RetryPolicy {
            max_attempts: u32::MAX,
            initial_backoff_ms: u64::MAX,
            max_backoff_ms: u64::MAX,
            max_elapsed_ms: u64::MAX,
        };
        let mut rng = rng();
        for attempts in [1, 63, 64, 65, 1_000, u32::MAX - 1] {
            assert!(p.next_delay(attempts, ZERO, None, &mut rng).is_some());
        }
        let default_caps = RetryPolicy {
            max_attempts: u32::MAX,
            ..RetryPolicy::default()
        };
        let d = default_caps
            .next_delay(u32::MAX - 1, ZERO, None, &mut rng)
            .unwrap();
        assert!(d <= Duration::from_millis(10_000));
    }

    #[test]
    fn server_hint_is_a_floor() {
        let p = RetryPolicy::default();
        let mut rng = rng();
        let hint = Duration::from_secs(3);
        for _ in 0..500 {
            // Attempt 1 jitters within [0, 100 ms]; the hint wins every time.
            assert_eq!(p.next_delay(1, ZERO, Some(hint), &mut rng), Some(hint));
        }
        // A hint below the jitter range does not shorten the delay range.
        let tiny = Duration::from_millis(1);
        let draws: Vec<_> = (0..500)
            .map(|_| p.next_delay(7, ZERO, Some(tiny), &mut rng).unwrap())
            .collect();
        assert!(draws.iter().all(|d| *d >= tiny));
        assert!(draws.iter().any(|d| *d > Duration::from_secs(3)));
    }

    #[test]
    fn gives_up_when_attempts_are_exhausted() {
        let p = RetryPolicy::default();
        let mut rng = rng();
        assert!(p.next_delay(7, ZERO, None, &mut rng).is_some());
        assert_eq!(p.next_delay(8, ZERO, None, &mut rng), None);
        assert_eq!(p.next_delay(9, ZERO, None, &mut rng), None);
    }

    #[test]
    fn gives_up_when_the_elapsed_budget_is_spent() {
        let p = RetryPolicy::default();
        let mut rng = rng();
        let budget = Duration::from_millis(p.max_elapsed_ms);
        assert_eq!(p.next_delay(1, budget, None, &mut rng), None);
        assert_eq!(p.next_delay(1, budget * 2, None, &mut rng), None);
    }

    #[test]
    fn jitter_shrinks_to_fit_the_remaining_budget() {
        let p = RetryPolicy::default();
        let mut rng = rng();
        let elapsed = Duration::from_millis(p.max_elapsed_ms - 50);
        for _ in 0..500 {
            let d = p.next_delay(7, elapsed, None, &mut rng).unwrap();
            assert!(d <= Duration::from_millis(50));
        }
    }

    #[test]
    fn gives_up_when_the_hint_does_not_fit_the_budget() {
        let p = RetryPolicy::default();
        let mut rng = rng();
        let elapsed = Duration::from_secs(110);
        assert_eq!(
            p.next_delay(1, elapsed, Some(Duration::from_secs(10)), &mut rng),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            p.next_delay(1, elapsed, Some(Duration::from_secs(11)), &mut rng),
            None
        );
    }
}
