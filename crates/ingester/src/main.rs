//! The `ingester` binary: parse arguments, load configuration, start telemetry, then serve
//! (default) or backfill.

use anomaly_runtime::cli::load_or_exit;
use clap::Parser;

/// mimalloc, as in the checker: many small, short-lived allocations per request or batch.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use ingester::cli::{Args, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (config, _telemetry) = load_or_exit::<ingester::Section>(&args.common, "ingester");
    match args.command {
        None | Some(Command::Serve) => {
            let listener = tokio::net::TcpListener::bind(config.service.listen)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.service.listen))?;
            ingester::run(config, listener, anomaly_runtime::lifecycle::signal()).await
        }
        Some(Command::Backfill(backfill)) => {
            let args = backfill.resolve(std::time::SystemTime::now());
            ingester::run_backfill(config, args).await.map(|_| ())
        }
    }
}
