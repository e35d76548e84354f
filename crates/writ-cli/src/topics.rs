//! `writ topics init|describe`: create a domain's topic layout (idempotent,
//! safe to run on every deploy) and show what the cluster actually has.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use writ_core::topics::{TopicLayout, TopicSettings};
use writ_kafka::{TopicAdmin, TopicOutcome};

use crate::kafka_args::{parse_duration_ms, KafkaArgs};

/// `writ topics ...`.
#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create `<domain>.commands`, `.bulk`, `.status` (compacted) and `.dlq`; existing topics are left alone.
    Init(InitArgs),
    /// Show partitions, leaders, replicas and configs of a domain's topics.
    Describe(DescribeArgs),
}

/// Arguments of `writ topics init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The domain, e.g. `customers`.
    #[arg(long)]
    domain: String,
    /// Partitions of the command and bulk topics.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Partitions of the status topic.
    #[arg(long, default_value_t = 6)]
    status_partitions: i32,
    /// Partitions of the DLQ topic.
    #[arg(long, default_value_t = 1)]
    dlq_partitions: i32,
    /// Replication factor of every topic (3 in production; also sets min.insync.replicas=2).
    #[arg(long, default_value_t = 1)]
    replication_factor: i32,
    /// Retention of command and bulk topics.
    #[arg(long, default_value = "7d", value_parser = parse_duration_ms)]
    command_retention: i64,
    /// Retention of the status topic: the dedupe window.
    #[arg(long, default_value = "7d", value_parser = parse_duration_ms)]
    status_retention: i64,
    /// Retention of the DLQ: how long ops have to replay.
    #[arg(long, default_value = "30d", value_parser = parse_duration_ms)]
    dlq_retention: i64,
    #[command(flatten)]
    kafka: KafkaArgs,
}

/// Arguments of `writ topics describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// The domain, e.g. `customers`.
    #[arg(long)]
    domain: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    kafka: KafkaArgs,
}

/// Runs a `writ topics` subcommand.
pub async fn run(cmd: TopicsCommand) -> Result<()> {
    match cmd {
        TopicsCommand::Init(a) => init(a).await,
        TopicsCommand::Describe(a) => describe(a).await,
    }
}

async fn init(a: InitArgs) -> Result<()> {
    let layout = TopicLayout::new(&a.domain)?;
    let settings = TopicSettings {
        partitions: a.partitions,
        status_partitions: a.status_partitions,
        dlq_partitions: a.dlq_partitions,
        replication_factor: a.replication_factor,
        command_retention_ms: a.command_retention,
        status_retention_ms: a.status_retention,
        dlq_retention_ms: a.dlq_retention,
    };
    let admin = TopicAdmin::new(&a.kafka.settings()?)?;
    let outcomes = admin
        .ensure_topics(&layout.specs(&settings))
        .await
        .with_context(|| {
            format!(
                "creating the topics of `{}` on {}",
                a.domain, a.kafka.bootstrap_servers
            )
        })?;
    for o in outcomes {
        match o {
            TopicOutcome::Created(name) => println!("created  {name}"),
            TopicOutcome::AlreadyExists(name) => println!("exists   {name}"),
        }
    }
    Ok(())
}

async fn describe(a: DescribeArgs) -> Result<()> {
    let layout = TopicLayout::new(&a.domain)?;
    let admin = TopicAdmin::new(&a.kafka.settings()?)?;
    let names: Vec<String> = [
        layout.commands(),
        layout.bulk(),
        layout.status(),
        layout.dlq(),
    ]
    .into();
    let topics = admin
        .describe(&names)
        .await
        .with_context(|| format!("describing the topics of `{}`", a.domain))?;
    if a.json {
        let out: Vec<_> = topics
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "exists": t.exists,
                    "partitions": t.partitions.iter().map(|p| json!({
                        "id": p.id, "leader": p.leader, "replicas": p.replicas, "isr": p.isr
                    })).collect::<Vec<_>>(),
                    "configs": t.configs.as_ref().map(|c| {
                        c.iter()
                            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                            .collect::<serde_json::Map<_, _>>()
                    }),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    for t in &topics {
        if !t.exists {
            println!(
                "{}  MISSING (run `writ topics init --domain {}`)",
                t.name, a.domain
            );
            continue;
        }
        println!("{}  partitions={}", t.name, t.partitions.len());
        match &t.configs {
            Some(configs) => {
                for (k, v) in configs {
                    println!("    {k}={v}");
                }
            }
            None => println!("    (broker does not describe configs)"),
        }
        for p in &t.partitions {
            println!(
                "    partition {:>3}  leader {:>3}  replicas {:?}  isr {:?}",
                p.id, p.leader, p.replicas, p.isr
            );
        }
    }
    Ok(())
}
