//! `writ`: the operator's command-line tool. Each subcommand lives in its own
//! module; this file only parses arguments, sets up logging and maps errors to
//! a non-zero exit with every cause printed.

mod kafka_args;
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
