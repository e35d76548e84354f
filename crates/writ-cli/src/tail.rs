//! `writ tail <topic>`: the last records of any topic, decoded (commands by
//! their CloudEvents headers, status events on `.status` topics) with every
//! header shown, optionally following new records as they arrive.

use std::collections::{BTreeMap, VecDeque};

use anyhow::{Context, Result};
use clap::Args;
use writ_codec::PayloadCodec;
use writ_kafka::ConsumedRecord;

use crate::codec_args::CodecArgs;
use crate::display;
use crate::kafka_args::KafkaArgs;
use crate::scan::{Start, TopicReader};

/// Arguments of `writ tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// The topic, e.g. `customers.commands`.
    topic: String,
    /// Start at the oldest record instead of the last few.
    #[arg(long, conflicts_with = "lines")]
    from_beginning: bool,
    /// How many of the last records of each partition to show first.
    #[arg(short = 'n', long = "lines", default_value_t = 10)]
    lines: u32,
    /// Keep waiting for new records (Ctrl-C to stop).
    #[arg(short = 'f', long)]
    follow: bool,
    /// One JSON object per record (JSON Lines) instead of text.
    #[arg(long)]
    json: bool,
    /// Show fields the schema marks secret instead of `***`.
    #[arg(long)]
    show_secrets: bool,
    #[command(flatten)]
    codec: CodecArgs,
    #[command(flatten)]
    kafka: KafkaArgs,
}

/// Keeps the last `n` records of each partition.
#[derive(Debug)]
pub struct LastN {
    n: usize,
    per_partition: BTreeMap<i32, VecDeque<ConsumedRecord>>,
}

impl LastN {
    /// Keeps `n` per partition (`None`: keep all).
    pub fn new(n: Option<usize>) -> Self {
        Self {
            n: n.unwrap_or(usize::MAX),
            per_partition: BTreeMap::new(),
        }
    }

    /// Offers a record; the oldest of its partition falls out past `n`.
    pub fn push(&mut self, r: ConsumedRecord) {
        if self.n == 0 {
            return;
        }
        let q = self.per_partition.entry(r.partition).or_default();
        if q.len() == self.n {
            q.pop_front();
        }
        q.push_back(r);
    }

    /// The kept records, oldest first across partitions (by timestamp, then position).
    pub fn into_sorted(self) -> Vec<ConsumedRecord> {
        let mut all: Vec<ConsumedRecord> = self.per_partition.into_values().flatten().collect();
        all.sort_by_key(|r| (r.timestamp_ms.unwrap_or(i64::MIN), r.partition, r.offset));
        all
    }
}

async fn print(codec: &PayloadCodec, record: &ConsumedRecord, a: &TailArgs) -> Result<()> {
    let payload = display::decode_payload(codec, record, a.show_secrets).await;
    let json = a.json;
    if json {
        println!(
            "{}",
            serde_json::to_string(&display::record_json(record, &payload))?
        );
    } else {
        println!("{}", display::record_text(record, &payload));
    }
    Ok(())
}

/// Runs `writ tail`.
pub async fn run(a: TailArgs) -> Result<()> {
    let codec = a.codec.codec()?;
    let reader = TopicReader::open(&a.kafka.settings()?, &a.topic)
        .await
        .with_context(|| format!("opening `{}` on {}", a.topic, a.kafka.bootstrap_servers))?;
    let start = match (a.from_beginning, a.lines) {
        (true, _) => Start::Beginning,
        (false, 0) => Start::End,
        (false, n) => Start::Tail(i64::from(n)),
    };
    let starts = reader.partitions().iter().map(|&p| (p, start)).collect();
    let mut scan = reader.open_scan(&starts, a.follow)?;
    if a.follow {
        while let Some(r) = scan.next().await? {
            print(&codec, &r, &a).await?;
        }
        return Ok(());
    }
    // The tail start comes from ListOffsets, which some brokers answer
    // loosely; keeping the last N as read makes the output exact anyway.
    let keep = (!a.from_beginning).then_some(a.lines as usize);
    let mut last = LastN::new(keep);
    while let Some(r) = scan.next().await? {
        last.push(r);
    }
    for r in last.into_sorted() {
        print(&codec, &r, &a).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use writ_core::Headers;

    fn rec(partition: i32, offset: i64, ts: i64) -> ConsumedRecord {
        ConsumedRecord {
            topic: "t".into(),
            partition,
            offset,
            key: None,
            value: None,
            headers: Headers::new(),
            timestamp_ms: Some(ts),
        }
    }

    #[test]
    fn keeps_the_last_n_of_each_partition_in_time_order() {
        let mut last = LastN::new(Some(2));
        for (p, o, ts) in [
            (0, 0, 1),
            (0, 1, 2),
            (1, 0, 3),
            (0, 2, 6),
            (1, 1, 4),
            (1, 2, 5),
        ] {
            last.push(rec(p, o, ts));
        }
        let got: Vec<(i32, i64)> = last
            .into_sorted()
            .iter()
            .map(|r| (r.partition, r.offset))
            .collect();
        assert_eq!(got, [(0, 1), (1, 1), (1, 2), (0, 2)]);
        let mut none = LastN::new(Some(0));
        none.push(rec(0, 0, 0));
        assert!(none.into_sorted().is_empty());
        let mut all = LastN::new(None);
        (0..50).for_each(|o| all.push(rec(0, o, o)));
        assert_eq!(all.into_sorted().len(), 50);
    }
}
