//! `writ-chaos`: runs the chaos run (`run`) or the soak (`soak`) against a
//! real broker and PostgreSQL, prints the report, and exits non-zero when any
//! assertion failed (1) or the run could not be carried out (2).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use writ_chaos::master::Faults;
use writ_chaos::plan::PlanConfig;
use writ_chaos::world::WorldConfig;
use writ_chaos::{RunConfig, SoakConfig};

/// writ's chaos run and soak.
#[derive(Debug, Parser)]
#[command(name = "writ-chaos", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The chaos run: kills, restarts, scaling, master faults, duplicates, poison, then replay and checks.
    Run(RunArgs),
    /// Steady mixed load for a while, sampling every process' memory.
    Soak(SoakArgs),
}

#[derive(Debug, Args)]
struct Services {
    /// Kafka bootstrap servers.
    #[arg(long, env = "WRIT_TEST_KAFKA")]
    kafka: String,
    /// PostgreSQL URL of a server where the run may create a database.
    #[arg(long, env = "WRIT_TEST_POSTGRES_URL")]
    postgres: String,
    /// Where writ-worker, writ-ingress and writ are (default: next to this executable).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Partitions of the command topics.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Keep the configs and process logs of the run.
    #[arg(long)]
    keep_logs: bool,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    services: Services,
    /// Full size: 100k commands over 1k entities (overrides --commands/--entities defaults).
    #[arg(long)]
    full: bool,
    /// Unique valid commands (default 10 000; 100 000 with --full).
    #[arg(long)]
    commands: Option<usize>,
    /// Entities (default 200; 1 000 with --full).
    #[arg(long)]
    entities: Option<usize>,
    /// Seed of the workload.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Probability that a master transaction (one batch apply) fails with SQLSTATE 40001.
    #[arg(long, default_value_t = 0.05)]
    fault_rate: f64,
    /// Probability of a latency spike per master transaction.
    #[arg(long, default_value_t = 0.02)]
    spike_rate: f64,
    /// Roll the faults per write statement instead of per transaction (many
    /// more batches fail and exhaust their retries).
    #[arg(long)]
    fault_per_statement: bool,
    /// Latency spike length, ms.
    #[arg(long, default_value_t = 250)]
    spike_ms: u64,
    /// Commands the master fails until it is fixed (always dead-lettered, then replayed).
    #[arg(long)]
    flaky: Option<usize>,
    /// Worker retry budget (attempts); small so that some commands exhaust it.
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
    /// SIGKILL a worker this often, ms.
    #[arg(long, default_value_t = 4000)]
    kill_every_ms: u64,
    /// Pause between raw producer rounds, ms (default: the raw load spread over ~20 s).
    #[arg(long)]
    raw_round_ms: Option<u64>,
    /// Longest wait for all answers (after the load, after the replay), s.
    #[arg(long, default_value_t = 180)]
    drain_timeout_s: u64,
}

#[derive(Debug, Args)]
struct SoakArgs {
    #[command(flatten)]
    services: Services,
    /// How long the load runs, s.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Sampling interval, s.
    #[arg(long, default_value_t = 3)]
    sample_every_s: u64,
    /// Raw commands per second.
    #[arg(long, default_value_t = 300)]
    raw_per_second: u32,
    /// Concurrent ingress clients.
    #[arg(long, default_value_t = 8)]
    ingress_clients: usize,
}

fn world(s: &Services, max_attempts: u32) -> WorldConfig {
    WorldConfig {
        kafka: s.kafka.clone(),
        postgres: s.postgres.clone(),
        partitions: s.partitions,
        max_attempts,
        max_elapsed_ms: 10_000,
        bin_dir: s.bin_dir.clone(),
        keep_logs: s.keep_logs,
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<bool> = async {
        match cli.command {
            Cmd::Run(a) => {
                let base = if a.full {
                    PlanConfig::full()
                } else {
                    PlanConfig::ci()
                };
                let plan = PlanConfig {
                    commands: a.commands.unwrap_or(base.commands),
                    entities: a.entities.unwrap_or(base.entities),
                    flaky: a.flaky.unwrap_or(base.flaky),
                    seed: a.seed,
                    ..base
                };
                let mut config = RunConfig::new(world(&a.services, a.max_attempts), plan);
                config.faults = Faults {
                    error_probability: a.fault_rate,
                    spike_probability: a.spike_rate,
                    spike_ms: a.spike_ms,
                    per_statement: a.fault_per_statement,
                };
                config.kill_every = Duration::from_millis(a.kill_every_ms);
                if let Some(ms) = a.raw_round_ms {
                    config.raw_round_pause = Duration::from_millis(ms);
                }
                config.drain_timeout = Duration::from_secs(a.drain_timeout_s);
                let report = writ_chaos::run(&config).await?;
                print!("{}", report.render());
                Ok(report.passed())
            }
            Cmd::Soak(a) => {
                let mut config = SoakConfig::new(world(&a.services, 8), a.seconds);
                config.sample_every = Duration::from_secs(a.sample_every_s);
                config.raw_per_second = a.raw_per_second;
                config.ingress_clients = a.ingress_clients;
                let report = writ_chaos::soak(&config).await?;
                print!("{}", report.render());
                Ok(report.passed())
            }
        }
    }
    .await;
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(2)
        }
    }
}
