//! `writ dlq purge`: delete dead letters, honestly. Kafka can only delete a
//! partition's prefix (DeleteRecords moves the log start offset), so per
//! partition the longest prefix whose records all match the filter is
//! deleted, and matching records behind a non-matching one are reported as
//! kept rather than silently left behind.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};
use time::OffsetDateTime;

use super::filter::{DlqEntry, FilterArgs};
use super::Target;
use crate::confirm::confirm;
use crate::scan::Next;

/// Arguments of `writ dlq purge`.
#[derive(Debug, Args)]
pub struct PurgeArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    filter: FilterArgs,
    /// Show what would be deleted; delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    yes: bool,
}

/// What purging one partition does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionPurge {
    /// The partition.
    pub partition: i32,
    /// DeleteRecords offset: every record before it goes (None: nothing to delete).
    pub delete_before: Option<i64>,
    /// Matching records that will be deleted.
    pub deletable: usize,
    /// Matching records that stay because a non-matching record precedes them.
    pub kept: usize,
}

/// Plans the purge of each partition from its records in offset order
/// (offset, whether the record matches the filter).
pub fn plan(scanned: &BTreeMap<i32, Vec<(i64, bool)>>) -> Vec<PartitionPurge> {
    scanned
        .iter()
        .map(|(&partition, records)| {
            let first_kept = records.iter().position(|(_, matches)| !matches);
            let deletable = first_kept.unwrap_or(records.len());
            let kept = first_kept.map_or(0, |i| records[i..].iter().filter(|(_, m)| *m).count());
            let delete_before = match (deletable, first_kept) {
                (0, _) => None,
                // Up to the first record that stays: gaps (transaction markers) go too.
                (_, Some(i)) => Some(records[i].0),
                (n, None) => Some(records[n - 1].0 + 1),
            };
            PartitionPurge {
                partition,
                delete_before,
                deletable,
                kept,
            }
        })
        .collect()
}

/// Runs `writ dlq purge`.
pub async fn run(a: PurgeArgs) -> Result<()> {
    let filter = a.filter.resolve(OffsetDateTime::now_utc())?;
    let reader = a.target.dlq_reader(None).await?;
    let topic = reader.topic().to_owned();
    let mut scanned: BTreeMap<i32, Vec<(i64, bool)>> = BTreeMap::new();
    reader
        .scan_all(|r| {
            let matches = filter.matches(&DlqEntry::of(&r));
            scanned
                .entry(r.partition)
                .or_default()
                .push((r.offset, matches));
            Next::More
        })
        .await
        .with_context(|| format!("reading `{topic}`"))?;
    let plan = plan(&scanned);
    let deletable: usize = plan.iter().map(|p| p.deletable).sum();
    let kept: usize = plan.iter().map(|p| p.kept).sum();
    for p in &plan {
        if p.deletable > 0 || p.kept > 0 {
            println!(
                "partition {:>3}: delete {} record(s){}{}",
                p.partition,
                p.deletable,
                p.delete_before
                    .map(|o| format!(" (everything before offset {o})"))
                    .unwrap_or_default(),
                if p.kept > 0 {
                    format!(
                        ", keep {} matching record(s) behind a non-matching one",
                        p.kept
                    )
                } else {
                    String::new()
                }
            );
        }
    }
    let kept_note = if kept > 0 {
        format!(
            "; {kept} matching record(s) cannot be deleted: Kafka deletes only a partition's \
             prefix, and non-matching records precede them (replay or wait for retention)"
        )
    } else {
        String::new()
    };
    if deletable == 0 {
        println!("nothing to delete{kept_note}");
        return Ok(());
    }
    if a.dry_run {
        println!("dry run, nothing deleted: would delete {deletable} record(s){kept_note}");
        return Ok(());
    }
    if !confirm(
        &format!("Delete {deletable} record(s) from `{topic}`? This cannot be undone."),
        a.yes,
    )? {
        bail!("purge cancelled; nothing was deleted");
    }

    let mut tpl = TopicPartitionList::new();
    for p in &plan {
        if let Some(before) = p.delete_before {
            tpl.add_partition_offset(&topic, p.partition, Offset::Offset(before))
                .context("building the DeleteRecords request")?;
        }
    }
    let admin: AdminClient<DefaultClientContext> = a
        .target
        .kafka
        .settings()?
        .admin_config()?
        .create()
        .context("creating the admin client")?;
    let opts = AdminOptions::new()
        .request_timeout(Some(Duration::from_secs(30)))
        .operation_timeout(Some(Duration::from_secs(30)));
    let result = admin.delete_records(&tpl, &opts).await.map_err(|e| {
        anyhow::anyhow!(
            "DeleteRecords on `{topic}` failed: {e}; {}; nothing was deleted",
            explain(&e)
        )
    })?;
    let mut errors = Vec::new();
    let mut purged = Vec::new();
    for e in result.elements() {
        match e.error() {
            Ok(()) => purged.push(e.partition()),
            Err(err) => errors.push((e.partition(), err)),
        }
    }
    if let Some((_, first)) = errors.first() {
        let detail: Vec<String> = errors
            .iter()
            .map(|(p, err)| format!("partition {p}: {err}"))
            .collect();
        let outcome = if purged.is_empty() {
            "nothing was deleted".to_owned()
        } else {
            format!("partitions {purged:?} were purged")
        };
        bail!(
            "DeleteRecords on `{topic}` failed for {}; {}; {outcome}",
            detail.join(", "),
            explain(first)
        );
    }
    println!("deleted {deletable} record(s) from `{topic}`{kept_note}");
    Ok(())
}

/// What a failed DeleteRecords means: brokers without the API answer
/// "unsupported" or just drop the connection.
fn explain(e: &KafkaError) -> &'static str {
    // rdkafka reports admin results as AdminOp/OffsetFetch(code) and does
    // not expose that code through `rdkafka_error_code`.
    let code = match e {
        KafkaError::AdminOp(code) | KafkaError::OffsetFetch(code) => Some(*code),
        other => other.rdkafka_error_code(),
    };
    match code {
        Some(
            RDKafkaErrorCode::UnsupportedFeature
            | RDKafkaErrorCode::UnsupportedVersion
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown,
        ) => {
            "the broker does not support DeleteRecords (Apache Kafka does since 0.11; \
             tansu and librdkafka's mock cluster do not)"
        }
        Some(
            RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed,
        ) => "DeleteRecords needs the DELETE permission on the topic",
        Some(RDKafkaErrorCode::PolicyViolation) => {
            "the topic does not allow it (DeleteRecords needs cleanup.policy=delete)"
        }
        _ => "the broker refused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanned(parts: &[(i32, &[(i64, bool)])]) -> BTreeMap<i32, Vec<(i64, bool)>> {
        parts.iter().map(|(p, r)| (*p, r.to_vec())).collect()
    }

    #[test]
    fn only_the_matching_prefix_is_deleted_and_the_rest_is_counted() {
        let p = plan(&scanned(&[
            // All match: everything goes.
            (0, &[(10, true), (11, true), (12, true)]),
            // A non-matching record stops the prefix; a gap before it goes too.
            (
                1,
                &[
                    (0, true),
                    (1, true),
                    (4, false),
                    (5, true),
                    (6, false),
                    (7, true),
                ],
            ),
            // Starts with a non-matching record: nothing can go.
            (2, &[(3, false), (4, true)]),
            // Empty partition: nothing.
            (3, &[]),
        ]));
        assert_eq!(
            p,
            vec![
                PartitionPurge {
                    partition: 0,
                    delete_before: Some(13),
                    deletable: 3,
                    kept: 0
                },
                PartitionPurge {
                    partition: 1,
                    delete_before: Some(4),
                    deletable: 2,
                    kept: 2
                },
                PartitionPurge {
                    partition: 2,
                    delete_before: None,
                    deletable: 0,
                    kept: 1
                },
                PartitionPurge {
                    partition: 3,
                    delete_before: None,
                    deletable: 0,
                    kept: 0
                },
            ]
        );
    }

    #[test]
    fn an_unsupported_broker_gets_a_clear_error() {
        for e in [
            KafkaError::AdminOp(RDKafkaErrorCode::BrokerTransportFailure),
            KafkaError::OffsetFetch(RDKafkaErrorCode::UnsupportedFeature),
        ] {
            assert!(
                explain(&e).contains("does not support DeleteRecords"),
                "{e}"
            );
        }
        assert!(explain(&KafkaError::AdminOp(
            RDKafkaErrorCode::TopicAuthorizationFailed
        ))
        .contains("DELETE permission"));
    }
}
