//! `--rate N/s` for replays: the master that failed the first time must not
//! be flooded by the replay. Records are released one by one at an even pace
//! (burst of one), so a rate holds over any window, not just on average.

use std::num::NonZeroU32;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use governor::{Quota, RateLimiter};

/// A replay rate: `count` records per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Records per window.
    pub count: NonZeroU32,
    /// The window.
    pub per: Duration,
}

impl Rate {
    /// The governor quota: one record every `per / count`, no burst.
    pub fn quota(self) -> Result<Quota> {
        let interval = self.per / self.count.get();
        Quota::with_period(interval)
            .map(|q| q.allow_burst(NonZeroU32::MIN))
            .context("the rate is too high to pace (more than one record per nanosecond)")
    }

    /// How many records the rate admits in `tick` (at least one): the
    /// largest batch that keeps bursts within one tick's worth.
    pub fn per_tick(self, tick: Duration) -> usize {
        let n = u128::from(self.count.get()) * tick.as_nanos() / self.per.as_nanos().max(1);
        usize::try_from(n).unwrap_or(usize::MAX).max(1)
    }
}

impl std::str::FromStr for Rate {
    type Err = anyhow::Error;

    /// `100`, `100/s`, `6000/m` or `50000/h`.
    fn from_str(s: &str) -> Result<Self> {
        let (n, unit) = s.trim().split_once('/').unwrap_or((s.trim(), "s"));
        let count: u32 = n
            .trim()
            .parse()
            .with_context(|| format!("`{s}` is not a rate; use e.g. 100/s, 6000/m"))?;
        let Some(count) = NonZeroU32::new(count) else {
            bail!("a rate of 0 would never replay anything");
        };
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            other => bail!("unknown rate unit `{other}` in `{s}`; use /s, /m or /h"),
        };
        Ok(Self { count, per })
    }
}

/// Releases records at the configured rate, or immediately without one.
pub struct Pacer {
    limiter: Option<governor::DefaultDirectRateLimiter>,
}

impl Pacer {
    /// A pacer for `rate` (None: unlimited).
    pub fn new(rate: Option<Rate>) -> Result<Self> {
        Ok(Self {
            limiter: rate
                .map(|r| r.quota().map(RateLimiter::direct))
                .transpose()?,
        })
    }

    /// Waits until the next record may go.
    pub async fn ready(&self) {
        if let Some(l) = &self.limiter {
            l.until_ready().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn rates_parse_with_units_and_refuse_nonsense() {
        let r: Rate = "6000/m".parse().unwrap();
        assert_eq!((r.count.get(), r.per), (6000, Duration::from_secs(60)));
        assert_eq!("25".parse::<Rate>().unwrap().per, Duration::from_secs(1));
        assert!("0/s"
            .parse::<Rate>()
            .unwrap_err()
            .to_string()
            .contains("never"));
        assert!("5/d"
            .parse::<Rate>()
            .unwrap_err()
            .to_string()
            .contains("unit"));
        assert!("fast".parse::<Rate>().is_err());
        let tick = Duration::from_millis(100);
        assert_eq!("1000/s".parse::<Rate>().unwrap().per_tick(tick), 100);
        assert_eq!("60/m".parse::<Rate>().unwrap().per_tick(tick), 1);
    }

    /// Counts releases, not time: at 5/s, one second admits five records
    /// (plus the single one available at the start), never a burst.
    #[test]
    fn the_quota_releases_exactly_the_rate_per_window_without_bursts() {
        let rate: Rate = "5/s".parse().unwrap();
        let clock = FakeRelativeClock::default();
        let limiter = RateLimiter::direct_with_clock(rate.quota().unwrap(), clock.clone());
        let mut released = 0;
        for _ in 0..100 {
            if limiter.check().is_ok() {
                released += 1;
            }
        }
        assert_eq!(released, 1, "no burst at the start");
        for _ in 0..100 {
            clock.advance(Duration::from_millis(10));
            while limiter.check().is_ok() {
                released += 1;
            }
        }
        assert_eq!(released, 1 + 5, "five more in one second");
    }
}
