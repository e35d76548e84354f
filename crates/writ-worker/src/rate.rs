//! How fast the worker may write to the master, slowing down when it pushes back.
//!
//! A `governor` quota gates every batch. When the master answers 429, 503 or
//! "too many connections", the rate factor is halved (down to `min_factor`),
//! and a `Retry-After` pauses every batch that shares this limiter; each
//! successful batch then raises the factor by `recovery_step` until it is back
//! at 1.0 (additive increase, multiplicative decrease, as in TCP).
//!
//! Choices worth knowing:
//!
//! * **Unlimited (`records_per_second = 0`)**: no quota is checked until the
//!   master pushes back. The limiter counts the records it lets through, and a
//!   throttle turns that observed throughput (records in the last second-long
//!   window, or in the current one measured over at least a second) into a
//!   *learned* rate that the factor then applies to. When the factor recovers
//!   to 1.0 the learned rate is dropped and the limiter is unlimited again,
//!   which is the probe that finds out whether the master recovered. A
//!   throttle before any record went through has nothing to learn from: only
//!   the pause is honoured.
//! * **One decrease per congestion event**: batches in flight together are
//!   throttled together; halving once per batch would collapse the rate.
//!   Decreases closer than [`DECREASE_COOLDOWN`] to the previous one only
//!   extend the pause.
//! * **Retry-After is bounded** by [`MAX_PAUSE`], so a bogus header cannot
//!   stall a partition past its rebalance timeouts; the retry policy still
//!   decides whether the record waits that long.
//! * **Burst scales with the factor** (never below 1), so a slowed-down
//!   limiter does not release a full-size burst at once. A quota change builds
//!   a new `governor` limiter that starts *empty*, so recovering in steps
//!   never hands out a fresh burst per step.
//! * **Time is tokio's**: the `governor` clock reads `tokio::time::Instant` and
//!   waits use `tokio::time::sleep`, so tests drive it with paused time.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Decreases closer together than this count as one congestion event.
pub const DECREASE_COOLDOWN: Duration = Duration::from_secs(1);

/// The longest pause a `Retry-After` can impose.
pub const MAX_PAUSE: Duration = Duration::from_secs(60);

/// The window over which unlimited throughput is measured.
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(1);

/// Below this, the factor counts as fully recovered (float steps rarely land on 1.0).
const FULL: f64 = 1.0 - 1e-9;

/// The write rate a worker profile allows and how it adapts.
#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateSettings {
    /// Records per second at full speed; 0 means unlimited.
    pub records_per_second: u32,
    /// Records that may go at once; 0 means the same as `records_per_second` (at least 1).
    pub burst: u32,
    /// The lowest fraction of the rate that throttling can bring it down to.
    pub min_factor: f64,
    /// How much of the full rate each successful batch wins back.
    pub recovery_step: f64,
}

impl Default for RateSettings {
    fn default() -> Self {
        Self {
            records_per_second: 0,
            burst: 0,
            min_factor: 0.05,
            recovery_step: 0.05,
        }
    }
}

impl RateSettings {
    /// Checks the factors, for start-up; [`AdaptiveRateLimiter::new`] clamps instead.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.min_factor > 0.0 && self.min_factor <= 1.0) {
            return Err(format!(
                "rate.min_factor must be in (0, 1], got {}",
                self.min_factor
            ));
        }
        if !(self.recovery_step > 0.0 && self.recovery_step <= 1.0) {
            return Err(format!(
                "rate.recovery_step must be in (0, 1], got {}",
                self.recovery_step
            ));
        }
        Ok(())
    }

    /// The configured burst, with 0 meaning "one second's worth".
    fn effective_burst(&self) -> u32 {
        match self.burst {
            0 => self.records_per_second,
            b => b,
        }
        .max(1)
    }
}

/// Gates batches by a rate that halves when the master pushes back and recovers step by step.
///
/// `Send + Sync`; share one per master through an `Arc`.
pub struct AdaptiveRateLimiter {
    min_factor: f64,
    recovery_step: f64,
    state: Mutex<State>,
    /// Wakes waiters when the quota or the pause changes, so a slow-down or a
    /// pause applies to batches already waiting.
    changed: Notify,
}

impl std::fmt::Debug for AdaptiveRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("AdaptiveRateLimiter")
            .field("base", &s.base)
            .field("factor", &s.factor)
            .field("paused_until", &s.paused_until)
            .finish_non_exhaustive()
    }
}

struct State {
    /// Configured rate; `None` = unlimited.
    configured: Option<Base>,
    /// The rate the factor applies to: configured, learned, or `None` (unlimited).
    base: Option<Base>,
    factor: f64,
    gate: Option<Arc<Gate>>,
    paused_until: Option<Instant>,
    last_decrease: Option<Instant>,
    throughput: Throughput,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Base {
    records_per_second: f64,
    burst: f64,
}

/// One `governor` limiter for one quota; replaced, never mutated, when the quota changes.
struct Gate {
    limiter: RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>,
    clock: TokioClock,
    burst: NonZeroU32,
}

/// `governor`'s clock on tokio's time, so paused test time drives the quota too.
#[derive(Debug, Clone, Copy)]
struct TokioClock {
    origin: Instant,
}

impl Clock for TokioClock {
    // `Duration` since an origin is a valid `governor` reference instant.
    type Instant = Duration;

    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.origin)
    }
}

/// Records let through while unlimited, to learn a rate from when throttled.
struct Throughput {
    window_start: Instant,
    records: u64,
    last_window_rate: Option<f64>,
}

impl Throughput {
    fn new(now: Instant) -> Self {
        Self {
            window_start: now,
            records: 0,
            last_window_rate: None,
        }
    }

    fn record(&mut self, now: Instant, n: u32) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= THROUGHPUT_WINDOW {
            self.last_window_rate = Some(self.records as f64 / elapsed.as_secs_f64());
            self.window_start = now;
            self.records = 0;
        }
        self.records += u64::from(n);
    }

    /// Records per second, or `None` when nothing went through yet.
    fn estimate(&self, now: Instant) -> Option<f64> {
        // A partial window is measured over a full one, so a fast start does
        // not extrapolate into an inflated rate.
        let elapsed = now
            .saturating_duration_since(self.window_start)
            .max(THROUGHPUT_WINDOW);
        let current = self.records as f64 / elapsed.as_secs_f64();
        let rate = self
            .last_window_rate
            .map_or(current, |last| last.max(current));
        (rate > 0.0).then_some(rate.max(1.0))
    }
}

impl AdaptiveRateLimiter {
    /// A limiter at full speed; settings out of range are clamped (see [`RateSettings::validate`]).
    pub fn new(settings: &RateSettings) -> Self {
        let now = Instant::now();
        let configured = (settings.records_per_second > 0).then(|| Base {
            records_per_second: f64::from(settings.records_per_second),
            burst: f64::from(settings.effective_burst()),
        });
        let mut state = State {
            configured,
            base: configured,
            factor: 1.0,
            gate: None,
            paused_until: None,
            last_decrease: None,
            throughput: Throughput::new(now),
        };
        // The first limiter starts full: a fresh worker may use its burst.
        state.rebuild_gate(false);
        Self {
            min_factor: clamp_or(settings.min_factor, 0.05),
            recovery_step: clamp_or(settings.recovery_step, 0.05),
            state: Mutex::new(state),
            changed: Notify::new(),
        }
    }

    /// Waits until `n` records may go (in burst-sized chunks) and any pause is over; returns the time waited.
    pub async fn acquire(&self, n: u32) -> Duration {
        let start = Instant::now();
        let mut remaining = n;
        while remaining > 0 {
            // Registered before reading the state, so a change made after the
            // read still wakes this waiter.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();

            let now = Instant::now();
            let (pause, gate) = {
                let mut s = self.lock();
                match (s.paused_until, &s.gate) {
                    (Some(until), _) if until > now => (Some(until), None),
                    (_, None) => {
                        s.throughput.record(now, remaining);
                        remaining = 0;
                        (None, None)
                    }
                    (_, Some(gate)) => (None, Some(Arc::clone(gate))),
                }
            };
            let wait = match (pause, gate) {
                (Some(until), _) => until - now,
                (None, Some(gate)) => {
                    let chunk = remaining.min(gate.burst.get());
                    let cells = NonZeroU32::new(chunk).unwrap_or(NonZeroU32::MIN);
                    match gate.limiter.check_n(cells) {
                        Ok(Ok(())) => {
                            remaining -= chunk;
                            continue;
                        }
                        Ok(Err(not_until)) => not_until.wait_time_from(gate.clock.now()),
                        // Unreachable as chunks never exceed the gate's burst;
                        // re-reading the state picks up the current gate.
                        Err(_) => continue,
                    }
                }
                (None, None) => continue,
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = &mut changed => {}
            }
        }
        start.elapsed()
    }

    /// The master pushed back: halve the factor (not below `min_factor`) and honour `retry_after` for everyone.
    pub fn on_throttled(&self, retry_after: Option<Duration>) {
        let now = Instant::now();
        {
            let mut s = self.lock();
            if let Some(after) = retry_after {
                let until = now + after.min(MAX_PAUSE);
                s.paused_until = Some(s.paused_until.map_or(until, |p| p.max(until)));
            }
            let in_cooldown = s
                .last_decrease
                .is_some_and(|at| now.saturating_duration_since(at) < DECREASE_COOLDOWN);
            if !in_cooldown {
                if s.base.is_none() {
                    s.base = s.throughput.estimate(now).map(|rate| Base {
                        records_per_second: rate,
                        burst: rate,
                    });
                }
                if s.base.is_some() {
                    s.factor = (s.factor * 0.5).max(self.min_factor);
                    s.last_decrease = Some(now);
                    s.rebuild_gate(true);
                }
            }
        }
        self.changed.notify_waiters();
    }

    /// A batch succeeded: raise the factor by `recovery_step`, up to 1.0.
    pub fn on_success(&self) {
        {
            let mut s = self.lock();
            if s.factor >= FULL {
                return;
            }
            s.factor = (s.factor + self.recovery_step).min(1.0);
            if s.factor >= FULL {
                s.factor = 1.0;
                if s.configured.is_none() {
                    // Fully recovered from a learned rate: unlimited again, and
                    // measure afresh.
                    s.base = None;
                    s.throughput = Throughput::new(Instant::now());
                }
            }
            s.rebuild_gate(true);
        }
        self.changed.notify_waiters();
    }

    /// Current effective records/s, or `None` when unlimited.
    pub fn current_rate(&self) -> Option<f64> {
        let s = self.lock();
        s.base.map(|b| b.records_per_second * s.factor)
    }

    /// The current rate factor, 1.0 at full speed.
    pub fn factor(&self) -> f64 {
        self.lock().factor
    }

    /// When the `Retry-After` pause ends, if one is in force.
    pub fn paused_until(&self) -> Option<Instant> {
        let s = self.lock();
        s.paused_until.filter(|until| *until > Instant::now())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every update
        // is a plain assignment.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn rebuild_gate(&mut self, start_empty: bool) {
        self.gate = self.base.map(|base| {
            let rate = (base.records_per_second * self.factor).max(f64::MIN_POSITIVE);
            let burst = NonZeroU32::new((base.burst * self.factor).floor() as u32)
                .unwrap_or(NonZeroU32::MIN);
            // governor refuses a zero period; one nanosecond is beyond any real rate.
            let period = Duration::from_secs_f64((1.0 / rate).min(u32::MAX as f64))
                .max(Duration::from_nanos(1));
            let quota = Quota::with_period(period)
                .expect("period is at least one nanosecond")
                .allow_burst(burst);
            let clock = TokioClock {
                origin: Instant::now(),
            };
            let limiter = RateLimiter::direct_with_clock(quota, clock);
            if start_empty {
                // Drains the fresh burst; the result is irrelevant.
                let _ = limiter.check_n(burst);
            }
            Arc::new(Gate {
                limiter,
                clock,
                burst,
            })
        });
    }
}

/// `value` within (0, 1], or `fallback` for anything not a usable factor.
fn clamp_or(value: f64, fallback: f64) -> f64 {
    if value.is_finite() && value > 0.0 {
        value.min(1.0)
    } else {
        fallback
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(rps: u32, burst: u32) -> AdaptiveRateLimiter {
        AdaptiveRateLimiter::new(&RateSettings {
            records_per_second: rps,
            burst,
            ..RateSettings::default()
        })
    }

    fn approx(actual: Duration, expected_ms: u64) {
        let expected = Duration::from_millis(expected_ms);
        let slack = Duration::from_millis(15);
        assert!(
            actual + slack >= expected && actual <= expected + slack,
            "waited {actual:?}, expected about {expected:?}"
        );
    }

    fn close(actual: Option<f64>, expected: f64) {
        let actual = actual.expect("a rate");
        assert!(
            (actual - expected).abs() < 1e-6,
            "rate {actual}, expected {expected}"
        );
    }

    #[test]
    fn settings_defaults_and_unknown_keys() {
        let s: RateSettings = serde_json::from_str(r#"{"records_per_second": 100}"#).unwrap();
        assert_eq!(s.records_per_second, 100);
        assert_eq!(s.effective_burst(), 100);
        assert_eq!(RateSettings::default().effective_burst(), 1);
        assert!(s.validate().is_ok());
        assert!(serde_json::from_str::<RateSettings>(r#"{"rps": 1}"#).is_err());
        let bad = RateSettings {
            min_factor: 0.0,
            ..RateSettings::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn limiter_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<AdaptiveRateLimiter>();
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_never_waits() {
        let l = AdaptiveRateLimiter::new(&RateSettings::default());
        assert_eq!(l.current_rate(), None);
        for _ in 0..100 {
            assert_eq!(l.acquire(1_000_000).await, Duration::ZERO);
        }
        assert_eq!(l.acquire(0).await, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn paces_to_the_configured_rate_in_burst_sized_chunks() {
        let l = limited(100, 10);
        close(l.current_rate(), 100.0);
        // The first 10 go at once; the other 40 at 100/s.
        approx(l.acquire(50).await, 400);
        approx(l.acquire(100).await, 1_000);
    }

    #[tokio::test]
    async fn paces_in_real_time_too() {
        // A functional check on the real clock, not a benchmark: about 0.2 s,
        // within bounds generous enough for a loaded machine.
        let l = limited(100, 10);
        let waited = l.acquire(30).await;
        assert!(waited >= Duration::from_millis(150), "waited {waited:?}");
        assert!(waited < Duration::from_secs(2), "waited {waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn throttle_halves_the_factor_down_to_min_factor() {
        let l = limited(100, 100);
        l.on_throttled(None);
        close(l.current_rate(), 50.0);
        tokio::time::advance(DECREASE_COOLDOWN).await;
        l.on_throttled(None);
        close(l.current_rate(), 25.0);
        for _ in 0..10 {
            tokio::time::advance(DECREASE_COOLDOWN).await;
            l.on_throttled(None);
        }
        close(l.current_rate(), 5.0);
        assert!((l.factor() - 0.05).abs() < 1e-9);
    }

    #[tokio::test(start_paused = true)]
    async fn simultaneous_throttles_count_once() {
        let l = limited(100, 100);
        for _ in 0..5 {
            l.on_throttled(None);
        }
        close(l.current_rate(), 50.0);
    }

    #[tokio::test(start_paused = true)]
    async fn slowed_limiter_paces_slower_and_starts_empty() {
        let l = limited(100, 10);
        l.on_throttled(None);
        // 50/s with a burst of 5, and no fresh burst after the change.
        approx(l.acquire(25).await, 500);
    }

    #[tokio::test(start_paused = true)]
    async fn success_recovers_gradually() {
        let l = limited(100, 100);
        l.on_throttled(None);
        close(l.current_rate(), 50.0);
        l.on_success();
        close(l.current_rate(), 55.0);
        l.on_success();
        close(l.current_rate(), 60.0);
        for _ in 0..20 {
            l.on_success();
        }
        close(l.current_rate(), 100.0);
        assert_eq!(l.factor(), 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_pauses_every_waiter() {
        let l = Arc::new(limited(1_000, 1_000));
        l.on_throttled(Some(Duration::from_secs(2)));
        assert!(l.paused_until().is_some());
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let l = Arc::clone(&l);
                tokio::spawn(async move { l.acquire(1).await })
            })
            .collect();
        for w in waiters {
            let waited = w.await.unwrap();
            assert!(waited >= Duration::from_secs(2), "waited {waited:?}");
            assert!(waited < Duration::from_millis(2_100), "waited {waited:?}");
        }
        assert_eq!(l.paused_until(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_reaches_batches_already_waiting() {
        let l = Arc::new(limited(10, 1));
        l.acquire(1).await;
        let waiter = {
            let l = Arc::clone(&l);
            tokio::spawn(async move { l.acquire(1).await })
        };
        tokio::task::yield_now().await;
        l.on_throttled(Some(Duration::from_secs(3)));
        let waited = waiter.await.unwrap();
        assert!(waited >= Duration::from_secs(3), "waited {waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_recovery_reaches_batches_already_waiting() {
        let l = Arc::new(limited(1, 1));
        for _ in 0..5 {
            l.on_throttled(None);
            tokio::time::advance(DECREASE_COOLDOWN).await;
        }
        close(l.current_rate(), 0.05);
        l.acquire(1).await;
        // At 0.05/s this waiter would sleep 20 s on the gate it first saw.
        let waiter = {
            let l = Arc::clone(&l);
            tokio::spawn(async move { l.acquire(1).await })
        };
        tokio::task::yield_now().await;
        for _ in 0..19 {
            l.on_success();
        }
        close(l.current_rate(), 1.0);
        // The new 1/s gate starts empty: one interval, not the old 20 s.
        approx(waiter.await.unwrap(), 1_000);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_bounded() {
        let l = AdaptiveRateLimiter::new(&RateSettings::default());
        l.on_throttled(Some(Duration::from_secs(86_400)));
        approx(l.acquire(1).await, MAX_PAUSE.as_millis() as u64);
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_honours_the_pause_and_learns_a_rate() {
        let l = AdaptiveRateLimiter::new(&RateSettings::default());
        assert_eq!(l.acquire(400).await, Duration::ZERO);
        l.on_throttled(Some(Duration::from_millis(500)));
        // 400 records in the first second, halved.
        close(l.current_rate(), 200.0);
        approx(l.acquire(1).await, 500);
        // Recovery back to 1.0 returns to unlimited.
        for _ in 0..10 {
            l.on_success();
        }
        assert_eq!(l.current_rate(), None);
        assert_eq!(l.acquire(10_000).await, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_throttled_before_any_record_only_pauses() {
        let l = AdaptiveRateLimiter::new(&RateSettings::default());
        l.on_throttled(Some(Duration::from_secs(1)));
        assert_eq!(l.current_rate(), None);
        approx(l.acquire(5).await, 1_000);
        assert_eq!(l.acquire(5).await, Duration::ZERO);
    }
}
