//! `writ-edge`: the deployable edge service (CP-5/CP-6). Loads layered
//! configuration, serves until SIGTERM/SIGINT, and offers
//! `writ-edge reconcile --collection C [--repair]` for operators.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use writ_edge::{init_logging, reconcile, Edge, EdgeConfig};

/// writ's edge service: local writes now, synced to the master later.
#[derive(Debug, Parser)]
#[command(name = "writ-edge", version, about)]
struct Args {
    /// TOML configuration file; `WRIT__SECTION__KEY` environment variables override it.
    #[arg(long, short, env = "WRIT_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Compare a collection's local copy with the master and report missing,
    /// stale and diverged records; exits 1 when drift remains.
    Reconcile {
        /// The collection.
        #[arg(long)]
        collection: String,
        /// Repair what is found: re-enqueue local writes or refresh from the master, per policy.
        #[arg(long)]
        repair: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

writ_alloc::install!();

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let config = match EdgeConfig::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        if let Err(e) = writ_edge::service::catalog(&config) {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
        println!(
            "configuration ok: domain={} collections={}",
            config.domain,
            config
                .collections
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(",")
        );
        return ExitCode::SUCCESS;
    }
    init_logging(&config.log);
    match args.command {
        Some(Command::Reconcile {
            collection,
            repair,
            json,
        }) => match reconcile::run_with_config(&config, &collection, repair).await {
            Ok(report) => {
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&report).expect("reports serialize")
                    );
                } else {
                    println!("{report}");
                }
                if report.is_clean() || (repair && report.unrepaired == 0) {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        None => serve(config).await,
    }
}

async fn serve(config: EdgeConfig) -> ExitCode {
    let shutdown = writ_config::shutdown_on_signal();
    let result = async {
        let edge = Edge::connect(config).await?;
        edge.run(shutdown).await
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => writ_config::report_failure("edge", &e),
    }
}
