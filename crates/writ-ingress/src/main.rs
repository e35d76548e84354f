//! `writ-ingress`: the deployable HTTP front door. Loads layered
//! configuration, turns SIGTERM/SIGINT into a graceful shutdown, and exits
//! non-zero on any fatal error with every cause printed.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use writ_ingress::{init_logging, Ingress, IngressConfig};

/// writ's HTTP ingress.
#[derive(Debug, Parser)]
#[command(name = "writ-ingress", version, about)]
struct Args {
    /// TOML configuration file; `WRIT__SECTION__KEY` environment variables override it.
    #[arg(long, short, env = "WRIT_CONFIG")]
    config: Option<PathBuf>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check: bool,
}

writ_alloc::install!();

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let config = match IngressConfig::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        println!(
            "configuration ok: listen={} types={} domains={}",
            config.listen,
            config.types.len(),
            config.domains().join(",")
        );
        return ExitCode::SUCCESS;
    }
    init_logging(&config.log);
    let shutdown = writ_config::shutdown_on_signal();
    let result = async {
        let ingress = Ingress::start(config).await?;
        ingress.run(shutdown).await
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => writ_config::report_failure("ingress", &e),
    }
}
