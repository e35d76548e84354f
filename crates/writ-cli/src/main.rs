//! `writ`: the operator's command-line tool. Each subcommand lives in its own
//! module; this file only parses arguments, sets up logging and maps errors to
//! a non-zero exit with every cause printed.

mod auth;
mod codec_args;
mod confirm;
mod dev;
mod display;
mod dlq;
mod kafka_args;
mod produce;
mod reconcile;
mod scan;
mod status;
mod tail;
mod topics;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// writ — safe writes to a system of record over Kafka.
#[derive(Debug, Parser)]
#[command(name = "writ", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create and inspect a domain's topics.
    #[command(subcommand)]
    Topics(topics::TopicsCommand),
    /// Inspect, replay and purge a domain's dead letters.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Show the latest status of a submission.
    Status(status::StatusArgs),
    /// Print the last records of a topic, decoded; `-f` follows.
    Tail(tail::TailArgs),
    /// Produce one command from JSON on stdin; prints its submission id.
    Produce(produce::ProduceArgs),
    /// API key helpers.
    #[command(subcommand)]
    Auth(auth::AuthCommand),
    /// Run the whole stack in one process: embedded broker, SQLite master, ingress, workers, edge.
    Dev(dev::DevArgs),
    /// Drive the six patterns against a running stack and print what happened.
    Demo(dev::DemoArgs),
    /// Compare an edge collection's local copy with the master (and repair it).
    Reconcile(reconcile::ReconcileArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WRIT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Topics(cmd) => topics::run(cmd).await,
        Command::Dlq(cmd) => dlq::run(cmd).await,
        Command::Status(a) => status::run(a).await,
        Command::Tail(a) => tail::run(a).await,
        Command::Produce(a) => produce::run(a).await,
        Command::Auth(cmd) => auth::run(cmd),
        Command::Dev(a) => dev::run_dev(a).await,
        Command::Demo(a) => dev::run_demo(a).await,
        Command::Reconcile(a) => reconcile::run(a).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
