//! `writ reconcile`: compares an edge collection's local copy with the master.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use writ_edge::{reconcile, EdgeConfig};

/// Arguments of `writ reconcile`.
#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// The edge service's configuration (its store and master sections are used).
    #[arg(long, env = "WRIT_EDGE_CONFIG")]
    config: PathBuf,
    /// The collection to compare.
    #[arg(long)]
    collection: String,
    /// Repair what is found: re-enqueue local writes or refresh from the master, per the collection's policy.
    #[arg(long)]
    repair: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs the reconciliation; fails (exit 1) when drift remains.
pub async fn run(args: ReconcileArgs) -> anyhow::Result<()> {
    let config = EdgeConfig::load(Some(&args.config))
        .with_context(|| format!("loading {}", args.config.display()))?;
    let report = reconcile::run_with_config(&config, &args.collection, args.repair).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    if report.is_clean() || (args.repair && report.unrepaired == 0) {
        Ok(())
    } else {
        anyhow::bail!(
            "the local copy of {} differs from the master",
            args.collection
        )
    }
}
