//! Telling a command writ lost from one the broker never delivered.
//!
//! Every writ consumer logs an offset gap (target `writ_kafka::gap`) when a
//! partition's next record is not the one after the previous. On an
//! uncompacted topic written by idempotent, non-transactional producers that
//! means the broker skipped records — tansu's memory engine does under load:
//! a producer's offsets are reserved before its batch is stored, so a fetch in
//! between that already sees a later producer's batch returns that one and the
//! consumer moves past the reserved range (`tests/lib/tansu_fetch_race.py`
//! shows it without writ). A lost command whose every copy in the topics lies
//! inside such a gap was never handed to a worker; anything else lost is writ's.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use writ_codec::{PayloadCodec, SchemaCatalog};
use writ_core::cloudevents;
use writ_kafka::KafkaSettings;

use crate::error::ChaosError;

/// Records a consumer never received: offsets `from..to` of one partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Gap {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// First skipped offset.
    pub from: i64,
    /// The offset delivered instead (first one after the gap).
    pub to: i64,
}

impl Gap {
    fn covers(&self, topic: &str, partition: i32, offset: i64) -> bool {
        self.partition == partition && self.topic == topic && (self.from..self.to).contains(&offset)
    }
}

/// Where a command sits in the topics: (topic, partition, offset) of each copy.
pub type Locations = HashMap<(String, i64), Vec<(String, i32, i64)>>;

/// Parses one `writ_kafka::gap` log line (human format, with or without
/// colours, or JSON); `None` for any other line.
pub fn parse_gap_line(line: &str) -> Option<Gap> {
    if !line.contains("offset gap") {
        return None;
    }
    if line.trim_start().starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        return Some(Gap {
            topic: v.get("topic")?.as_str()?.to_owned(),
            partition: i32::try_from(v.get("partition")?.as_i64()?).ok()?,
            from: v.get("expected")?.as_i64()?,
            to: v.get("received")?.as_i64()?,
        });
    }
    let plain = strip_ansi(line);
    let field = |name: &str| {
        plain
            .split_whitespace()
            .find_map(|t| t.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_owned)
    };
    Some(Gap {
        topic: field("topic")?,
        partition: field("partition")?.parse().ok()?,
        from: field("expected")?.parse().ok()?,
        to: field("received")?.parse().ok()?,
    })
}

/// Drops terminal colour sequences (`ESC [ … m`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Every gap logged by any process whose log (`*.log`) is in `dir`.
pub fn gaps_in_logs(dir: &Path) -> Result<Vec<Gap>, ChaosError> {
    let mut gaps = BTreeSet::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| ChaosError::io(format!("listing {}", dir.display()), e))?;
    for entry in entries {
        let path = entry
            .map_err(|e| ChaosError::io(format!("listing {}", dir.display()), e))?
            .path();
        if path.extension().is_some_and(|x| x == "log") {
            let text = std::fs::read(&path)
                .map_err(|e| ChaosError::io(format!("reading {}", path.display()), e))?;
            gaps.extend(
                String::from_utf8_lossy(&text)
                    .lines()
                    .filter_map(parse_gap_line),
            );
        }
    }
    Ok(gaps.into_iter().collect())
}

/// The lost commands the broker never delivered: every copy of each lies in a gap.
pub fn skipped_by_broker(
    lost: &[(String, i64)],
    located: &Locations,
    gaps: &[Gap],
) -> BTreeSet<(String, i64)> {
    lost.iter()
        .filter(|k| {
            located.get(*k).is_some_and(|copies| {
                !copies.is_empty()
                    && copies
                        .iter()
                        .all(|(t, p, o)| gaps.iter().any(|g| g.covers(t, *p, *o)))
            })
        })
        .cloned()
        .collect()
}

/// Finds every copy of the `wanted` commands (entity = `ce_subject`, seq from
/// the payload) in `topics`, reading each from its beginning until quiet.
pub async fn locate(
    settings: &KafkaSettings,
    topics: &[String],
    wanted: &HashSet<(String, i64)>,
    quiet: Duration,
) -> Result<Locations, ChaosError> {
    let codec = PayloadCodec::new(SchemaCatalog::builtin(), None)?;
    let mut found = Locations::new();
    for topic in topics {
        let records =
            writ_kafka::read_until_quiet(settings, topic, quiet, Duration::from_secs(120))?;
        for m in records {
            let Some(entity) = m.headers.get_str(cloudevents::SUBJECT) else {
                continue;
            };
            let (Some(command_type), Some(value)) =
                (m.headers.get_str(cloudevents::TYPE), m.value.as_deref())
            else {
                continue;
            };
            let content_type = m
                .headers
                .get_str(cloudevents::CONTENT_TYPE)
                .unwrap_or("application/avro");
            let Ok(payload) = codec.decode(command_type, content_type, value).await else {
                continue;
            };
            let Some(seq) = payload.get("seq").and_then(serde_json::Value::as_i64) else {
                continue;
            };
            let key = (entity.to_owned(), seq);
            if wanted.contains(&key) {
                found
                    .entry(key)
                    .or_default()
                    .push((m.topic.clone(), m.partition, m.offset));
            }
        }
    }
    Ok(found)
}

/// What became of lost commands: which the broker skipped, and the gaps seen.
#[derive(Debug, Clone, Default)]
pub struct LossEvidence {
    /// Lost commands never delivered to a worker.
    pub skipped: BTreeSet<(String, i64)>,
    /// Every gap the processes logged.
    pub gaps: Vec<Gap>,
}

/// Looks up the `lost` commands in the topics and the processes' gap logs.
pub async fn explain(
    settings: &KafkaSettings,
    log_dir: &Path,
    topics: &[String],
    lost: &[(String, i64)],
) -> Result<LossEvidence, ChaosError> {
    if lost.is_empty() {
        return Ok(LossEvidence::default());
    }
    let gaps = gaps_in_logs(log_dir)?;
    if gaps.is_empty() {
        return Ok(LossEvidence::default());
    }
    let wanted: HashSet<(String, i64)> = lost.iter().cloned().collect();
    let located = locate(settings, topics, &wanted, Duration::from_secs(3)).await?;
    Ok(LossEvidence {
        skipped: skipped_by_broker(lost, &located, &gaps),
        gaps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gap(topic: &str, partition: i32, from: i64, to: i64) -> Gap {
        Gap {
            topic: topic.into(),
            partition,
            from,
            to,
        }
    }

    #[test]
    fn gap_lines_are_read_in_human_colour_and_json_form() {
        let coloured = "\u{1b}[2m2026-11-27T16:38:17.1Z\u{1b}[0m \u{1b}[34mDEBUG\u{1b}[0m \u{1b}[2mwrit_kafka::gap\u{1b}[0m\u{1b}[2m:\u{1b}[0m offset gap: the broker delivered a later record than the next expected one \u{1b}[3mtopic\u{1b}[0m\u{1b}[2m=\u{1b}[0mchaos_ab.commands \u{1b}[3mpartition\u{1b}[0m\u{1b}[2m=\u{1b}[0m2 \u{1b}[3mexpected\u{1b}[0m\u{1b}[2m=\u{1b}[0m120 \u{1b}[3mreceived\u{1b}[0m\u{1b}[2m=\u{1b}[0m135";
        assert_eq!(
            parse_gap_line(coloured),
            Some(gap("chaos_ab.commands", 2, 120, 135))
        );
        let json = r#"{"timestamp":"t","level":"DEBUG","message":"offset gap: the broker delivered a later record than the next expected one","topic":"c.commands","partition":0,"expected":7,"received":9,"target":"writ_kafka::gap"}"#;
        assert_eq!(parse_gap_line(json), Some(gap("c.commands", 0, 7, 9)));
        assert_eq!(
            parse_gap_line("INFO partitions assigned partitions=3"),
            None
        );
        assert_eq!(
            parse_gap_line("offset gap topic=t partition=x expected=1 received=2"),
            None
        );
    }

    #[test]
    fn only_commands_whose_every_copy_was_skipped_are_the_brokers() {
        let gaps = [gap("c", 0, 10, 20)];
        let lost = vec![
            ("a".to_owned(), 1), // inside the gap
            ("b".to_owned(), 1), // delivered (outside any gap): writ lost it
            ("c".to_owned(), 1), // one copy skipped, the other delivered: writ's
            ("d".to_owned(), 1), // not found in the topics at all
            ("e".to_owned(), 1), // same offset, other partition
        ];
        let mut located = Locations::new();
        located.insert(("a".into(), 1), vec![("c".into(), 0, 10)]);
        located.insert(("b".into(), 1), vec![("c".into(), 0, 20)]);
        located.insert(
            ("c".into(), 1),
            vec![("c".into(), 0, 15), ("c".into(), 0, 30)],
        );
        located.insert(("e".into(), 1), vec![("c".into(), 1, 15)]);
        let skipped = skipped_by_broker(&lost, &located, &gaps);
        assert_eq!(skipped, BTreeSet::from([("a".to_owned(), 1)]));
    }
}
