//! `writ dev` and `writ demo`: the whole stack in one process, and a driver
//! that walks the six patterns against it (or any deployment).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;
use writ_dev::{demo, DemoTarget, DevOptions, DevStack};

/// `writ dev`: embedded broker, SQLite master, ingress, two workers, edge.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Directory for the SQLite files (master, status view, drafts, edge store).
    #[arg(long, default_value = ".writ-dev")]
    data_dir: PathBuf,
    /// Address the HTTP services bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Ingress port (CP-1..CP-4).
    #[arg(long, default_value_t = 8080)]
    ingress_port: u16,
    /// Edge port (CP-5, CP-6).
    #[arg(long, default_value_t = 8090)]
    edge_port: u16,
    /// Metrics port of the interactive worker (the bulk worker takes the next one).
    #[arg(long, default_value_t = 9464)]
    worker_port: u16,
}

/// `writ demo`: the six patterns against a running stack.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Base URL of the ingress.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    ingress: String,
    /// Base URL of the edge service.
    #[arg(long, default_value = "http://127.0.0.1:8090")]
    edge: String,
    /// API key, when the target requires one.
    #[arg(long, env = "WRIT_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Lines in the CP-3 bulk job.
    #[arg(long, default_value_t = 1000)]
    bulk_lines: usize,
    /// Seconds to wait for each pattern to settle.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

/// Runs `writ dev` until Ctrl-C.
pub async fn run_dev(args: DevArgs) -> anyhow::Result<()> {
    let stack = DevStack::start(DevOptions {
        data_dir: args.data_dir.clone(),
        host: args.host,
        ingress_port: args.ingress_port,
        edge_port: args.edge_port,
        worker_port: args.worker_port,
        ..DevOptions::default()
    })
    .await
    .context("starting the dev stack")?;
    println!("writ dev is up (data in {})", args.data_dir.display());
    println!(
        "  ingress  {}   (CP-1..CP-4, /openapi.json, /metrics)",
        stack.ingress_url()
    );
    println!("  edge     {}   (CP-5, CP-6)", stack.edge_url());
    println!(
        "  kafka    {}   (embedded; e.g. writ tail customers.status -b {} --from-beginning)",
        stack.bootstrap_servers(),
        stack.bootstrap_servers()
    );
    println!();
    println!("Try:");
    println!(
        "  curl -s {}/v1/commands/customer.upsert.v1 -H 'Content-Type: application/json' \\\n    -H 'Idempotency-Key: hello-1' -H 'Prefer: wait=5' \\\n    -d '{{\"customer_id\": \"cust-1\", \"name\": \"Ada Lovelace\", \"email\": \"ada@example.com\"}}'",
        stack.ingress_url()
    );
    println!("  writ demo");
    println!();
    println!("Ctrl-C stops everything.");
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        on_signal.cancel();
    });
    stack.run(stop).await?;
    println!("writ dev stopped");
    Ok(())
}

/// Runs `writ demo` and prints its table; fails when a pattern did not settle as expected.
pub async fn run_demo(args: DemoArgs) -> anyhow::Result<()> {
    let mut target = DemoTarget::new(args.ingress, args.edge);
    target.api_key = args.api_key;
    target.bulk_lines = args.bulk_lines;
    target.timeout = Duration::from_secs(args.timeout);
    let rows = demo::run(target).await?;
    print!("{}", demo::table(&rows));
    let failed = rows.iter().filter(|r| !r.ok).count();
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} patterns did not reach their expected state",
            rows.len()
        );
    }
    Ok(())
}
