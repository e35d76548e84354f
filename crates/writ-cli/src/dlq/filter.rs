//! Which DLQ records a command acts on: the filters `ls`, `replay` and
//! `purge` share, parsed once and evaluated without I/O, plus the summary
//! view of one DLQ record and the per-reason counts.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context, Result};
use clap::Args;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use writ_core::cloudevents;
use writ_core::dlq::{self, DlqReason};
use writ_kafka::ConsumedRecord;

use crate::kafka_args::parse_duration_ms;

/// The filter flags, as typed.
#[derive(Debug, Clone, Default, Args)]
pub struct FilterArgs {
    /// Only these reasons (POISON, UNKNOWN_TYPE, RETRIES_EXHAUSTED, REJECTED); comma-separated or repeated.
    #[arg(long, value_delimiter = ',')]
    pub reason: Vec<String>,
    /// Only these error classes (`writ.dlq.error.class`, e.g. MASTER_UNAVAILABLE).
    #[arg(long, value_delimiter = ',')]
    pub error_class: Vec<String>,
    /// Only these command types (`ce_type`, e.g. customer.upsert.v1).
    #[arg(long = "type", value_delimiter = ',')]
    pub command_type: Vec<String>,
    /// Only records with this key (the entity key).
    #[arg(long)]
    pub key: Vec<String>,
    /// Only records dead-lettered at or after this time: RFC 3339, or an age like `1h`, `30m`, `7d`.
    #[arg(long)]
    pub since: Option<String>,
    /// Only records dead-lettered before this time: RFC 3339, or an age like `1h`.
    #[arg(long)]
    pub until: Option<String>,
}

impl FilterArgs {
    /// Checks the flags and resolves relative times against `now`.
    pub fn resolve(&self, now: OffsetDateTime) -> Result<Filter> {
        let mut reasons = BTreeSet::new();
        for r in &self.reason {
            let upper = r.trim().to_ascii_uppercase();
            match DlqReason::parse(&upper) {
                Some(reason) => {
                    reasons.insert(reason.as_str());
                }
                None => bail!(
                    "unknown --reason `{r}`; use one of {}",
                    DlqReason::ALL.map(DlqReason::as_str).join(", ")
                ),
            }
        }
        let since = self
            .since
            .as_deref()
            .map(|s| parse_instant(s, now).context("--since"))
            .transpose()?;
        let until = self
            .until
            .as_deref()
            .map(|s| parse_instant(s, now).context("--until"))
            .transpose()?;
        if let (Some(s), Some(u)) = (since, until) {
            if s >= u {
                bail!("--since must be before --until");
            }
        }
        let set =
            |v: &[String]| -> BTreeSet<String> { v.iter().map(|s| s.trim().to_owned()).collect() };
        Ok(Filter {
            reasons,
            error_classes: set(&self.error_class),
            command_types: set(&self.command_type),
            keys: set(&self.key),
            since_ms: since.map(epoch_ms),
            until_ms: until.map(epoch_ms),
        })
    }
}

/// RFC 3339, or an age (`90s`, `15m`, `1h`, `7d`) meaning that long before `now`.
pub fn parse_instant(s: &str, now: OffsetDateTime) -> Result<OffsetDateTime> {
    if let Ok(t) = OffsetDateTime::parse(s.trim(), &Rfc3339) {
        return Ok(t);
    }
    let ms = parse_duration_ms(s)
        .with_context(|| format!("`{s}` is neither an RFC 3339 time nor an age like 1h"))?;
    Ok(now - time::Duration::milliseconds(ms))
}

fn epoch_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// A resolved filter: a record matches when it passes every given criterion
/// (any of the values of one criterion).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    reasons: BTreeSet<&'static str>,
    error_classes: BTreeSet<String>,
    command_types: BTreeSet<String>,
    keys: BTreeSet<String>,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
}

impl Filter {
    /// Whether `entry` passes.
    pub fn matches(&self, entry: &DlqEntry) -> bool {
        fn any(set: &BTreeSet<String>, v: Option<&str>) -> bool {
            set.is_empty() || v.is_some_and(|v| set.contains(v))
        }
        (self.reasons.is_empty()
            || entry
                .reason
                .as_deref()
                .is_some_and(|r| self.reasons.contains(r)))
            && any(&self.error_classes, entry.error_class.as_deref())
            && any(&self.command_types, entry.command_type.as_deref())
            && any(&self.keys, entry.key.as_deref())
            && self
                .since_ms
                .is_none_or(|s| entry.time_ms.is_some_and(|t| t >= s))
            && self
                .until_ms
                .is_none_or(|u| entry.time_ms.is_some_and(|t| t < u))
    }
}

/// What an operator sees of one DLQ record, read from its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqEntry {
    /// DLQ partition.
    pub partition: i32,
    /// DLQ offset.
    pub offset: i64,
    /// When it was dead-lettered: the DLQ record's timestamp, else `writ.dlq.last.failure.at`.
    pub time_ms: Option<i64>,
    /// `writ.dlq.reason` (as written, even if not a known reason).
    pub reason: Option<String>,
    /// `writ.dlq.error.class`.
    pub error_class: Option<String>,
    /// `writ.dlq.error.message`.
    pub message: Option<String>,
    /// `ce_type`.
    pub command_type: Option<String>,
    /// The record key, when UTF-8.
    pub key: Option<String>,
}

impl DlqEntry {
    /// Reads the entry of a DLQ record; missing headers stay `None`.
    pub fn of(r: &ConsumedRecord) -> Self {
        let h = &r.headers;
        let header_time = h
            .get_str(dlq::LAST_FAILURE_AT)
            .and_then(|v| OffsetDateTime::parse(v, &Rfc3339).ok())
            .map(epoch_ms);
        Self {
            partition: r.partition,
            offset: r.offset,
            time_ms: r.timestamp_ms.filter(|t| *t >= 0).or(header_time),
            reason: h.get_str(dlq::REASON).map(str::to_owned),
            error_class: h.get_str(dlq::ERROR_CLASS).map(str::to_owned),
            message: h.get_str(dlq::ERROR_MESSAGE).map(str::to_owned),
            command_type: h.get_str(cloudevents::TYPE).map(str::to_owned),
            key: r
                .key
                .as_deref()
                .and_then(|k| std::str::from_utf8(k).ok())
                .map(str::to_owned),
        }
    }

    /// The `partition:offset` that names this record.
    pub fn position(&self) -> String {
        format!("{}:{}", self.partition, self.offset)
    }
}

/// Records per reason; records without a reason header count as `(none)`.
pub fn counts_by_reason<'a>(
    entries: impl IntoIterator<Item = &'a DlqEntry>,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for e in entries {
        *counts
            .entry(e.reason.clone().unwrap_or_else(|| "(none)".to_owned()))
            .or_insert(0) += 1;
    }
    counts
}

/// A `partition:offset` position in the DLQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

impl std::str::FromStr for Position {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let Some((p, o)) = s.trim().split_once(':') else {
            bail!("`{s}` is not a position; expected PARTITION:OFFSET, e.g. 0:42");
        };
        let partition: i32 = p
            .parse()
            .ok()
            .filter(|p| *p >= 0)
            .with_context(|| format!("`{p}` in `{s}` is not a partition number"))?;
        let offset: i64 = o
            .parse()
            .ok()
            .filter(|o| *o >= 0)
            .with_context(|| format!("`{o}` in `{s}` is not an offset"))?;
        Ok(Self { partition, offset })
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.partition, self.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;
    use writ_core::Headers;

    const NOW: OffsetDateTime = datetime!(2026-11-27 12:00 UTC);

    fn entry(reason: &str, class: &str, ty: &str, key: &str, at: OffsetDateTime) -> DlqEntry {
        DlqEntry {
            partition: 0,
            offset: 1,
            time_ms: Some(epoch_ms(at)),
            reason: Some(reason.into()),
            error_class: Some(class.into()),
            message: Some("m".into()),
            command_type: Some(ty.into()),
            key: Some(key.into()),
        }
    }

    fn filter(f: impl FnOnce(&mut FilterArgs)) -> Filter {
        let mut a = FilterArgs::default();
        f(&mut a);
        a.resolve(NOW).unwrap()
    }

    #[test]
    fn every_criterion_must_pass_and_any_value_of_one_does() {
        let e = entry(
            "POISON",
            "VALIDATION",
            "customer.upsert.v1",
            "cust-1",
            datetime!(2026-11-27 11:30 UTC),
        );
        assert!(filter(|_| {}).matches(&e));
        assert!(filter(|a| a.reason = vec!["poison".into(), "REJECTED".into()]).matches(&e));
        assert!(!filter(|a| a.reason = vec!["REJECTED".into()]).matches(&e));
        assert!(filter(|a| a.error_class = vec!["VALIDATION".into()]).matches(&e));
        assert!(!filter(|a| a.error_class = vec!["MASTER_UNAVAILABLE".into()]).matches(&e));
        assert!(!filter(|a| a.command_type = vec!["customer.delete.v1".into()]).matches(&e));
        assert!(!filter(|a| {
            a.reason = vec!["POISON".into()];
            a.key = vec!["cust-2".into()];
        })
        .matches(&e));
        let missing = DlqEntry {
            reason: None,
            key: None,
            ..e.clone()
        };
        assert!(!filter(|a| a.reason = vec!["POISON".into()]).matches(&missing));
        assert!(!filter(|a| a.key = vec!["cust-1".into()]).matches(&missing));
    }

    #[test]
    fn time_ranges_are_half_open_and_accept_ages() {
        let at = |t| entry("POISON", "C", "t", "k", t);
        let f = filter(|a| a.since = Some("1h".into()));
        assert!(
            f.matches(&at(datetime!(2026-11-27 11:00 UTC))),
            "inclusive start"
        );
        assert!(!f.matches(&at(datetime!(2026-11-27 10:59:59 UTC))));
        let f = filter(|a| a.until = Some("2026-11-27T11:00:00Z".into()));
        assert!(
            !f.matches(&at(datetime!(2026-11-27 11:00 UTC))),
            "exclusive end"
        );
        assert!(f.matches(&at(datetime!(2026-11-27 10:00 UTC))));
        let untimed = DlqEntry {
            time_ms: None,
            ..at(NOW)
        };
        assert!(!f.matches(&untimed), "no time never matches a time filter");
    }

    #[test]
    fn bad_filters_are_refused_with_the_reason() {
        let err = |f: fn(&mut FilterArgs)| {
            let mut a = FilterArgs::default();
            f(&mut a);
            format!("{:#}", a.resolve(NOW).unwrap_err())
        };
        assert!(err(|a| a.reason = vec!["BROKEN".into()]).contains("RETRIES_EXHAUSTED"));
        assert!(err(|a| a.since = Some("yesterday".into())).contains("RFC 3339"));
        assert!(err(|a| {
            a.since = Some("1h".into());
            a.until = Some("2h".into());
        })
        .contains("before"));
    }

    #[test]
    fn entries_read_headers_and_fall_back_to_the_failure_time() {
        let mut h = Headers::new();
        h.push(dlq::REASON, "UNKNOWN_TYPE");
        h.push(dlq::LAST_FAILURE_AT, "2026-11-27T10:00:00Z");
        h.push(cloudevents::TYPE, "invoice.void.v1");
        let r = ConsumedRecord {
            topic: "d.dlq".into(),
            partition: 2,
            offset: 9,
            key: Some(vec![0xff]),
            value: None,
            headers: h,
            timestamp_ms: None,
        };
        let e = DlqEntry::of(&r);
        assert_eq!(e.position(), "2:9");
        assert_eq!(e.time_ms, Some(epoch_ms(datetime!(2026-11-27 10:00 UTC))));
        assert_eq!(e.key, None, "a binary key cannot match a --key filter");
        assert_eq!(e.command_type.as_deref(), Some("invoice.void.v1"));
        let counts = counts_by_reason([
            &e,
            &e,
            &DlqEntry {
                reason: None,
                ..e.clone()
            },
        ]);
        assert_eq!(counts["UNKNOWN_TYPE"], 2);
        assert_eq!(counts["(none)"], 1);
    }

    #[test]
    fn positions_parse_strictly() {
        assert_eq!(
            "3:42".parse::<Position>().unwrap(),
            Position {
                partition: 3,
                offset: 42
            }
        );
        for bad in ["3", "a:1", "1:b", "-1:0", "0:-5", ""] {
            assert!(bad.parse::<Position>().is_err(), "{bad}");
        }
    }
}
