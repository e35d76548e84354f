//! `writ dlq replay`: dead letters back onto their original topic, byte for
//! byte (key, value, original headers), with fresh `writ.replay.*` lineage.
//!
//! Replaying is safe to repeat: the worker's inbox turns an already-applied
//! command into a no-op that re-emits its status. A named replay still keeps
//! its position (the DLQ offsets it is done with) in a consumer group,
//! `writ-replay-<domain>-<name>`, so a resumed or repeated run sends only
//! what is new; that state lives in Kafka, not on the operator's machine.
//! The position advances only after the broker acknowledged the replayed
//! records, and never past a record that failed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use time::OffsetDateTime;
use writ_core::dlq::{self, ReplayOrigin};
use writ_kafka::{ConsumedRecord, OutgoingRecord, RecordProducer};

use super::filter::{DlqEntry, FilterArgs, Position};
use super::rate::{Pacer, Rate};
use super::{render_table, Target};
use crate::confirm::confirm;
use crate::scan::{Next, Start};

/// Most records in flight between two position commits.
const MAX_CHUNK: usize = 500;

/// Arguments of `writ dlq replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    filter: FilterArgs,
    /// Only these records, as PARTITION:OFFSET, comma-separated (combined with any filter).
    #[arg(long, value_delimiter = ',')]
    offsets: Vec<Position>,
    /// Name this replay to make it resumable: its position is kept in the
    /// consumer group `writ-replay-<domain>-<name>`; reuse a name only with the same selection.
    #[arg(long)]
    name: Option<String>,
    /// At most this many records per second (`N/s`, `N/m`, `N/h`).
    #[arg(long)]
    rate: Option<Rate>,
    /// Show what would be replayed; produce nothing, move no position.
    #[arg(long)]
    dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    yes: bool,
}

/// What a replay run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Records the selection matched.
    pub selected: usize,
    /// Records written back and acknowledged.
    pub replayed: usize,
    /// Records this named replay had already sent in an earlier run.
    pub skipped: usize,
    /// Records that could not be replayed (no original topic, or the produce failed).
    pub failed: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "selected={} replayed={} skipped={} failed={}",
            self.selected, self.replayed, self.skipped, self.failed
        )
    }
}

/// The records to send, after the resume position took out what an earlier
/// run of the same named replay already sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// To replay.
    pub to_replay: BTreeSet<Position>,
    /// Selected but before the resume position.
    pub skipped: usize,
}

/// Splits `selected` by the resume position (partition -> next DLQ offset to replay).
pub fn plan(selected: impl IntoIterator<Item = Position>, resume: &BTreeMap<i32, i64>) -> Plan {
    let mut p = Plan {
        to_replay: BTreeSet::new(),
        skipped: 0,
    };
    for pos in selected {
        if resume
            .get(&pos.partition)
            .is_some_and(|&next| pos.offset < next)
        {
            p.skipped += 1;
        } else {
            p.to_replay.insert(pos);
        }
    }
    p
}

/// Why one DLQ record cannot go back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{position}: cannot be replayed: {reason}")]
pub struct Unreplayable {
    /// The DLQ record.
    pub position: String,
    /// Why.
    pub reason: String,
}

/// The record to produce for one DLQ record: its original topic (and
/// partition, so per-entity order holds whatever partitioner the original
/// producer used), key and value untouched, `writ.dlq.*` headers dropped,
/// lineage added.
pub fn outgoing(
    record: &ConsumedRecord,
    replay_id: &str,
    at: OffsetDateTime,
) -> Result<OutgoingRecord, Unreplayable> {
    let position = format!("{}:{}", record.partition, record.offset);
    let topic = record
        .headers
        .get_str(dlq::ORIGINAL_TOPIC)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Unreplayable {
            position: position.clone(),
            reason: format!("no `{}` header", dlq::ORIGINAL_TOPIC),
        })?;
    if let Some(bytes) = record.headers.get_str(dlq::VALUE_OMITTED) {
        return Err(Unreplayable {
            position,
            reason: format!(
                "its {bytes}-byte value did not fit the DLQ and was omitted; the original is at {topic}:{}@{} while retained",
                record.headers.get_str(dlq::ORIGINAL_PARTITION).unwrap_or("?"),
                record.headers.get_str(dlq::ORIGINAL_OFFSET).unwrap_or("?"),
            ),
        });
    }
    let partition = record
        .headers
        .get_str(dlq::ORIGINAL_PARTITION)
        .and_then(|p| p.parse::<i32>().ok())
        .filter(|p| *p >= 0);
    let origin = ReplayOrigin {
        replay_id: replay_id.to_owned(),
        dlq_topic: record.topic.clone(),
        dlq_partition: record.partition,
        dlq_offset: record.offset,
        at,
    };
    Ok(OutgoingRecord {
        topic: topic.to_owned(),
        key: record.key.clone(),
        value: record.value.clone(),
        headers: dlq::replay_headers(&record.headers, &origin),
        partition,
    })
}

/// The outcome of one record of a chunk, for the position bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged by the broker.
    Replayed,
    /// Can never be replayed (not a writ DLQ record): counted as failed, but
    /// the position moves past it, since no retry would change it.
    Unreplayable,
    /// The produce failed: the position stays before it, a rerun tries again.
    Failed,
}

/// Moves positions (partition -> next DLQ offset) past the leading records
/// of each partition that are done; a failed record blocks its partition.
pub fn advance(
    positions: &mut BTreeMap<i32, i64>,
    blocked: &mut BTreeSet<i32>,
    outcomes: &[(i32, i64, Outcome)],
) {
    for &(partition, offset, outcome) in outcomes {
        if blocked.contains(&partition) {
            continue;
        }
        match outcome {
            Outcome::Replayed | Outcome::Unreplayable => {
                let pos = positions.entry(partition).or_insert(0);
                *pos = (*pos).max(offset + 1);
            }
            Outcome::Failed => {
                blocked.insert(partition);
            }
        }
    }
}

/// Consumer group names are free text to Kafka, but this one is typed on a
/// command line and shown in tooling: keep it to a safe alphabet.
fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 100
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        bail!("--name `{name}` must be 1-100 characters of A-Z a-z 0-9 . _ -");
    }
    Ok(())
}

/// Runs `writ dlq replay`.
///
/// Two passes over the DLQ keep memory bounded by the number of selected
/// records, not their size: the first selects positions (and counts them
/// for the confirmation and the progress bar), the second reads those
/// records again and sends them, chunk by chunk.
pub async fn run(a: ReplayArgs) -> Result<()> {
    let filter = a.filter.resolve(OffsetDateTime::now_utc())?;
    if let Some(n) = &a.name {
        check_name(n)?;
    }
    let layout = a.target.layout()?;
    let group = a
        .name
        .as_ref()
        .map(|n| format!("writ-replay-{}-{n}", layout.domain()));
    let replay_id = a
        .name
        .clone()
        .unwrap_or_else(|| format!("adhoc-{}", uuid::Uuid::new_v4()));
    let reader = a.target.dlq_reader(group.as_deref()).await?;
    for p in &a.offsets {
        reader.check_partition(p.partition)?;
    }
    let resume = match &group {
        Some(g) => reader
            .committed()
            .await
            .with_context(|| format!("reading the position of replay group `{g}`"))?,
        None => BTreeMap::new(),
    };

    // Pass 1: which records.
    let wanted: BTreeSet<Position> = a.offsets.iter().copied().collect();
    let mut found = BTreeSet::new();
    let mut selected = Vec::new();
    let mut listing = Vec::new();
    let scan_end = reader
        .scan_all(|r| {
            let position = Position {
                partition: r.partition,
                offset: r.offset,
            };
            let listed = wanted.is_empty() || wanted.contains(&position);
            if listed {
                found.insert(position);
            }
            let entry = DlqEntry::of(&r);
            if listed && filter.matches(&entry) {
                selected.push(position);
                if a.dry_run {
                    listing.push(entry);
                }
            }
            Next::More
        })
        .await
        .with_context(|| format!("reading `{}`", reader.topic()))?;
    let missing: Vec<String> = wanted.difference(&found).map(Position::to_string).collect();
    if !missing.is_empty() {
        bail!(
            "no record at {} in `{}`; nothing was replayed",
            missing.join(", "),
            reader.topic()
        );
    }

    let mut summary = Summary {
        selected: selected.len(),
        ..Summary::default()
    };
    let plan = plan(selected, &resume);
    summary.skipped = plan.skipped;
    if a.dry_run {
        listing.retain(|e| {
            plan.to_replay.contains(&Position {
                partition: e.partition,
                offset: e.offset,
            })
        });
        print!("{}", render_table(&listing));
        println!(
            "dry run, nothing produced: would replay {} (skipped {} already replayed)",
            listing.len(),
            plan.skipped
        );
        return Ok(());
    }
    if !plan.to_replay.is_empty() {
        let question = format!(
            "Replay {} record(s) from `{}` to their original topics?",
            plan.to_replay.len(),
            reader.topic()
        );
        if !confirm(&question, a.yes)? {
            bail!("replay cancelled; nothing was produced");
        }
    }

    // Pass 2: read the selected records again and send them.
    let producer = RecordProducer::new(&a.target.kafka.settings()?)?;
    let pacer = Pacer::new(a.rate)?;
    let progress = progress_bar(plan.to_replay.len());
    // Rate-limited chunks hold a tenth of a second's worth, so the produce
    // pipeline never releases more than that at once.
    let chunk_size = a
        .rate
        .map_or(MAX_CHUNK, |r| {
            r.per_tick(std::time::Duration::from_millis(100))
        })
        .clamp(1, MAX_CHUNK);
    let mut sender = Sender {
        producer: &producer,
        pacer: &pacer,
        progress: &progress,
        replay_id: &replay_id,
        summary: &mut summary,
        positions: resume.clone(),
        blocked: BTreeSet::new(),
    };
    let mut starts: BTreeMap<i32, Start> = BTreeMap::new();
    for p in &plan.to_replay {
        starts.entry(p.partition).or_insert(Start::At(p.offset));
    }
    let mut seen = 0;
    {
        let mut scan = reader.open_scan(&starts, false)?;
        let mut chunk = Vec::with_capacity(chunk_size);
        while let Some(r) = scan.next().await? {
            let position = Position {
                partition: r.partition,
                offset: r.offset,
            };
            if !plan.to_replay.contains(&position) {
                continue;
            }
            seen += 1;
            chunk.push(r);
            if chunk.len() == chunk_size {
                sender.send(std::mem::take(&mut chunk)).await;
                if group.is_some() {
                    reader.commit(&changed(&resume, &sender.positions))?;
                }
                if !sender.blocked.is_empty() {
                    break;
                }
            }
        }
        if sender.blocked.is_empty() && !chunk.is_empty() {
            sender.send(chunk).await;
            if group.is_some() {
                reader.commit(&changed(&resume, &sender.positions))?;
            }
        }
    }
    let blocked = !sender.blocked.is_empty();
    let mut positions = std::mem::take(&mut sender.positions);
    progress.finish_and_clear();
    if !blocked && seen < plan.to_replay.len() {
        // Deleted by retention (or a purge) between the two passes.
        let gone = plan.to_replay.len() - seen;
        eprintln!("warning: {gone} selected record(s) were deleted before they could be replayed");
        summary.failed += gone;
    }
    if group.is_some() && !blocked {
        // Everything up to the end of the first pass is handled, selected or not.
        for (&p, &end) in &scan_end {
            let pos = positions.entry(p).or_insert(end);
            *pos = (*pos).max(end);
        }
        reader.commit(&changed(&resume, &positions))?;
    }
    let name = a.name.as_deref().unwrap_or("(unnamed)");
    println!("replay {name}: {summary}");
    if summary.failed > 0 {
        bail!(
            "{} record(s) failed; {}",
            summary.failed,
            if group.is_some() {
                "rerun the same named replay to retry them"
            } else {
                "rerun with --name to make the replay resumable"
            }
        );
    }
    Ok(())
}

/// Sends chunks of DLQ records and keeps the counts and positions.
struct Sender<'a> {
    producer: &'a RecordProducer,
    pacer: &'a Pacer,
    progress: &'a ProgressBar,
    replay_id: &'a str,
    summary: &'a mut Summary,
    positions: BTreeMap<i32, i64>,
    blocked: BTreeSet<i32>,
}

impl Sender<'_> {
    /// Produces a chunk at the configured pace and waits for every
    /// acknowledgement before the positions move.
    async fn send(&mut self, chunk: Vec<ConsumedRecord>) {
        let mut outcomes = Vec::with_capacity(chunk.len());
        let mut sendable = Vec::with_capacity(chunk.len());
        let mut sendable_at = Vec::with_capacity(chunk.len());
        for record in &chunk {
            match outgoing(record, self.replay_id, OffsetDateTime::now_utc()) {
                Ok(out) => {
                    self.pacer.ready().await;
                    sendable_at.push(outcomes.len());
                    sendable.push(out);
                    outcomes.push((record.partition, record.offset, Outcome::Replayed));
                }
                Err(e) => {
                    self.progress.suspend(|| eprintln!("warning: {e}"));
                    outcomes.push((record.partition, record.offset, Outcome::Unreplayable));
                }
            }
        }
        let results = self.producer.send_all(&sendable).await;
        for (i, result) in sendable_at.into_iter().zip(results) {
            if let Err(e) = result {
                let (p, o, _) = outcomes[i];
                self.progress
                    .suspend(|| eprintln!("error: replaying {p}:{o}: {e}"));
                outcomes[i].2 = Outcome::Failed;
            }
        }
        for (_, _, o) in &outcomes {
            match o {
                Outcome::Replayed => self.summary.replayed += 1,
                Outcome::Unreplayable | Outcome::Failed => self.summary.failed += 1,
            }
        }
        advance(&mut self.positions, &mut self.blocked, &outcomes);
        self.progress.inc(chunk.len() as u64);
        self.progress.set_message(format!(
            "replayed {} failed {}",
            self.summary.replayed, self.summary.failed
        ));
    }
}

/// Only the positions that moved: committing an unchanged one is a no-op at best.
fn changed(before: &BTreeMap<i32, i64>, after: &BTreeMap<i32, i64>) -> BTreeMap<i32, i64> {
    after
        .iter()
        .filter(|(p, o)| before.get(p) != Some(o))
        .map(|(&p, &o)| (p, o))
        .collect()
}

/// A progress bar on a terminal; hidden when stderr is piped or logged.
fn progress_bar(len: usize) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(len as u64), target);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40.cyan/blue} {pos}/{len} {msg} ({per_sec}, eta {eta})")
    {
        bar.set_style(style);
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;
    use writ_core::dlq::{DlqFailure, DlqReason};
    use writ_core::Headers;

    fn dlq_record(partition: i32, offset: i64) -> ConsumedRecord {
        let mut original = Headers::new();
        original.push("ce_id", format!("id-{offset}"));
        original.push("x-bin", vec![0u8, 0xff]);
        original.push("writ.replay.id", "an-older-replay");
        let failure = DlqFailure {
            reason: DlqReason::RetriesExhausted,
            error_class: "MASTER_UNAVAILABLE".into(),
            error_message: "down".into(),
            attempts: 5,
            original_topic: "customers.commands".into(),
            original_partition: 4,
            original_offset: 100 + offset,
            original_timestamp_ms: None,
            first_failure_at: datetime!(2026-11-27 10:00 UTC),
            last_failure_at: datetime!(2026-11-27 10:01 UTC),
            worker_id: "w".into(),
        };
        ConsumedRecord {
            topic: "customers.dlq".into(),
            partition,
            offset,
            key: Some(b"cust-1".to_vec()),
            value: Some(vec![1, 2, 3, 0xff]),
            headers: dlq::dlq_headers(&original, &failure),
            timestamp_ms: Some(0),
        }
    }

    #[test]
    fn the_outgoing_record_is_the_original_plus_fresh_lineage() {
        let r = dlq_record(2, 7);
        let out = outgoing(&r, "nightly", datetime!(2026-11-27 12:00 UTC)).unwrap();
        assert_eq!(out.topic, "customers.commands");
        assert_eq!(out.partition, Some(4));
        assert_eq!(out.key, r.key);
        assert_eq!(out.value, r.value);
        let names: Vec<&str> = out.headers.iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "ce_id",
                "x-bin",
                "writ.replay.id",
                "writ.replay.from",
                "writ.replay.at"
            ]
        );
        assert_eq!(out.headers.get("x-bin"), Some(&[0u8, 0xff][..]));
        assert_eq!(out.headers.get_str(dlq::REPLAY_ID), Some("nightly"));
        assert_eq!(
            out.headers.get_str(dlq::REPLAY_FROM),
            Some("customers.dlq:2:7")
        );
        assert_eq!(
            out.headers.get_str(dlq::REPLAY_AT),
            Some("2026-11-27T12:00:00Z")
        );

        let mut foreign = r.clone();
        foreign.headers = Headers::new();
        let err = outgoing(&foreign, "n", datetime!(2026-11-27 12:00 UTC)).unwrap_err();
        assert_eq!(err.position, "2:7");
    }

    #[test]
    fn a_dead_letter_without_its_value_is_not_replayed_as_an_empty_command() {
        let mut r = dlq_record(0, 3);
        r.value = None;
        r.headers.push(dlq::VALUE_OMITTED, "1200000");
        let err = outgoing(&r, "n", datetime!(2026-11-27 12:00 UTC)).unwrap_err();
        assert!(
            err.reason.contains("1200000-byte value")
                && err.reason.contains("customers.commands:4@103"),
            "{err}"
        );
    }

    #[test]
    fn the_resume_position_skips_what_was_already_sent() {
        let pos = |partition, offset| Position { partition, offset };
        let selected = [pos(0, 1), pos(0, 5), pos(1, 2), pos(1, 9), pos(2, 0)];
        let resume = [(0, 5), (1, 3)].into_iter().collect();
        let p = plan(selected, &resume);
        assert_eq!(p.skipped, 2);
        assert_eq!(
            p.to_replay,
            [pos(0, 5), pos(1, 9), pos(2, 0)].into_iter().collect()
        );
        assert_eq!(plan([pos(3, 0)], &BTreeMap::new()).skipped, 0);
    }

    #[test]
    fn positions_never_move_past_a_failed_record() {
        let mut positions = [(0, 3)].into_iter().collect();
        let mut blocked = BTreeSet::new();
        advance(
            &mut positions,
            &mut blocked,
            &[
                (0, 3, Outcome::Replayed),
                (1, 0, Outcome::Unreplayable),
                (0, 4, Outcome::Failed),
                (1, 4, Outcome::Replayed),
                (0, 6, Outcome::Replayed),
            ],
        );
        assert_eq!(positions, [(0, 4), (1, 5)].into_iter().collect());
        assert_eq!(blocked, [0].into_iter().collect());
        let before = [(0, 4)].into_iter().collect();
        assert_eq!(changed(&before, &positions), [(1, 5)].into_iter().collect());
        assert_eq!(
            Summary {
                selected: 4,
                replayed: 2,
                skipped: 1,
                failed: 1
            }
            .to_string(),
            "selected=4 replayed=2 skipped=1 failed=1"
        );
    }

    #[test]
    fn replay_names_are_checked() {
        assert!(check_name("nightly-2026.11_27").is_ok());
        for bad in ["", "has space", "slash/y", &"x".repeat(101)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
