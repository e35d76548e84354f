//! `writ dlq ls|show|replay|purge`: look at a domain's dead letters, send
//! them back to their original topic, or delete them. The pure parts
//! (filters, the replay plan, the purge plan) live in the submodules; this
//! file parses arguments and does the listing and showing.

/// Which records a command acts on.
pub mod filter;
/// `writ dlq purge`.
pub mod purge;
/// `--rate` pacing of replays.
pub mod rate;
/// `writ dlq replay`.
pub mod replay;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use time::OffsetDateTime;
use writ_core::dlq;
use writ_core::TopicLayout;
use writ_kafka::ConsumedRecord;

use crate::codec_args::CodecArgs;
use crate::display::{self, time_text};
use crate::kafka_args::KafkaArgs;
use crate::scan::{Next, TopicReader};
use filter::{counts_by_reason, DlqEntry, Filter, FilterArgs, Position};

/// `writ dlq ...`.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters (filtered) with counts per reason.
    Ls(LsArgs),
    /// Show one dead letter: every header and the decoded payload.
    Show(ShowArgs),
    /// Write dead letters back to their original topic, byte for byte.
    Replay(replay::ReplayArgs),
    /// Delete dead letters (Kafka deletes a partition's prefix only).
    Purge(purge::PurgeArgs),
}

/// The domain and cluster every DLQ command works on.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// The domain, e.g. `customers` (its DLQ is `<domain>.dlq`).
    #[arg(long)]
    pub domain: String,
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

impl Target {
    /// The domain's topic layout.
    pub fn layout(&self) -> Result<TopicLayout> {
        Ok(TopicLayout::new(&self.domain)?)
    }

    /// A reader over the domain's DLQ topic.
    pub async fn dlq_reader(&self, group: Option<&str>) -> Result<TopicReader> {
        let topic = self.layout()?.dlq();
        TopicReader::open_with_group(&self.kafka.settings()?, &topic, group)
            .await
            .with_context(|| format!("opening `{topic}` on {}", self.kafka.bootstrap_servers))
    }
}

/// Arguments of `writ dlq ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    filter: FilterArgs,
    /// Print JSON (`records`, `counts`, `total`) instead of a table.
    #[arg(long)]
    json: bool,
}

/// Arguments of `writ dlq show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The record, as PARTITION:OFFSET (the first column of `writ dlq ls`).
    position: Position,
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    codec: CodecArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Show fields the schema marks secret instead of `***`.
    #[arg(long)]
    show_secrets: bool,
}

/// Runs a `writ dlq` subcommand.
pub async fn run(cmd: DlqCommand) -> Result<()> {
    match cmd {
        DlqCommand::Ls(a) => ls(a).await,
        DlqCommand::Show(a) => show(a).await,
        DlqCommand::Replay(a) => replay::run(a).await,
        DlqCommand::Purge(a) => purge::run(a).await,
    }
}

/// Scans the whole DLQ and keeps the records `filter` selects.
pub async fn select(reader: &TopicReader, filter: &Filter) -> Result<Vec<ConsumedRecord>> {
    let mut selected = Vec::new();
    reader
        .scan_all(|r| {
            if filter.matches(&DlqEntry::of(&r)) {
                selected.push(r);
            }
            Next::More
        })
        .await
        .with_context(|| format!("reading `{}`", reader.topic()))?;
    Ok(selected)
}

async fn ls(a: LsArgs) -> Result<()> {
    let filter = a.filter.resolve(OffsetDateTime::now_utc())?;
    let reader = a.target.dlq_reader(None).await?;
    let entries: Vec<DlqEntry> = select(&reader, &filter)
        .await?
        .iter()
        .map(DlqEntry::of)
        .collect();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&ls_json(&entries))?);
    } else {
        print!("{}", render_table(&entries));
    }
    Ok(())
}

/// The JSON form of a listing.
pub fn ls_json(entries: &[DlqEntry]) -> serde_json::Value {
    json!({
        "records": entries.iter().map(|e| json!({
            "position": e.position(),
            "partition": e.partition,
            "offset": e.offset,
            "time": time_text(e.time_ms),
            "reason": e.reason,
            "error_class": e.error_class,
            "type": e.command_type,
            "key": e.key,
            "message": e.message,
        })).collect::<Vec<_>>(),
        "counts": counts_by_reason(entries),
        "total": entries.len(),
    })
}

/// Longest message shown in a table cell; `show` prints it whole.
const MESSAGE_WIDTH: usize = 60;

/// The table form of a listing, with counts per reason below it.
pub fn render_table(entries: &[DlqEntry]) -> String {
    let headers = [
        "POSITION", "TIME", "REASON", "CLASS", "TYPE", "KEY", "MESSAGE",
    ];
    let dash = || "-".to_owned();
    let rows: Vec<[String; 7]> = entries
        .iter()
        .map(|e| {
            [
                e.position(),
                time_text(e.time_ms),
                e.reason.clone().unwrap_or_else(dash),
                e.error_class.clone().unwrap_or_else(dash),
                e.command_type.clone().unwrap_or_else(dash),
                e.key.clone().unwrap_or_else(dash),
                truncate(e.message.as_deref().unwrap_or("-"), MESSAGE_WIDTH),
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(&headers.map(str::to_owned));
    for row in &rows {
        out.push_str(&line(row));
    }
    out.push_str(&format!("\n{} record(s)", entries.len()));
    let counts = counts_by_reason(entries);
    if !counts.is_empty() {
        let parts: Vec<String> = counts.iter().map(|(r, n)| format!("{r}={n}")).collect();
        out.push_str(&format!(": {}", parts.join(" ")));
    }
    out.push('\n');
    out
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

async fn show(a: ShowArgs) -> Result<()> {
    let codec = a.codec.codec()?;
    let reader = a.target.dlq_reader(None).await?;
    reader.check_partition(a.position.partition)?;
    let Some(record) = reader
        .read_one(a.position.partition, a.position.offset)
        .await?
    else {
        bail!(
            "no record at {} in `{}` (past the end, or already deleted by retention or purge)",
            a.position,
            reader.topic()
        );
    };
    let payload = display::decode_payload(&codec, &record, a.show_secrets).await;
    let failure = dlq::parse_dlq_headers(&record.headers);
    if a.json {
        let mut v = display::record_json(&record, &payload);
        v["dlq"] = match &failure {
            Ok(f) => json!({
                "reason": f.reason.as_str(),
                "error_class": f.error_class,
                "error_message": f.error_message,
                "attempts": f.attempts,
                "original": format!("{}:{}:{}", f.original_topic, f.original_partition, f.original_offset),
                "first_failure_at": writ_core::cloudevents::format_time(f.first_failure_at),
                "last_failure_at": writ_core::cloudevents::format_time(f.last_failure_at),
                "worker_id": f.worker_id,
            }),
            Err(e) => json!({ "error": e.to_string() }),
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    match &failure {
        Ok(f) => println!(
            "{} after {} attempt(s): {} — {}\noriginally {}:{}:{}, worker {}\n",
            f.reason,
            f.attempts,
            f.error_class,
            f.error_message,
            f.original_topic,
            f.original_partition,
            f.original_offset,
            f.worker_id
        ),
        Err(e) => println!("not a writ DLQ record: {e}\n"),
    }
    print!("{}", display::record_text(&record, &payload));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(offset: i64, reason: Option<&str>, message: &str) -> DlqEntry {
        DlqEntry {
            partition: 0,
            offset,
            time_ms: Some(0),
            reason: reason.map(str::to_owned),
            error_class: Some("MASTER_UNAVAILABLE".into()),
            message: Some(message.into()),
            command_type: Some("customer.upsert.v1".into()),
            key: Some("cust-1".into()),
        }
    }

    #[test]
    fn the_table_has_a_row_per_record_and_counts_per_reason() {
        let long = "x".repeat(200);
        let entries = [
            entry(3, Some("POISON"), "bad"),
            entry(12, Some("RETRIES_EXHAUSTED"), &long),
            entry(13, Some("POISON"), "bad too"),
            entry(14, None, "foreign"),
        ];
        let table = render_table(&entries);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("POSITION"), "{table}");
        assert!(lines[1].starts_with("0:3 "), "{table}");
        assert!(lines[2].ends_with('…') && lines[2].chars().count() < 200);
        assert!(
            table.contains("4 record(s): (none)=1 POISON=2 RETRIES_EXHAUSTED=1"),
            "{table}"
        );
        let v = ls_json(&entries);
        assert_eq!(v["total"], 4);
        assert_eq!(v["counts"]["POISON"], 2);
        assert_eq!(v["records"][1]["message"].as_str().unwrap().len(), 200);
        assert_eq!(render_table(&[]).lines().last(), Some("0 record(s)"));
    }
}
