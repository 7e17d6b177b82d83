//! The `recomputer` binary: parse arguments, load configuration, start telemetry, then run the
//! service or a one-off rebuild.

use anomaly_runtime::cli::{CommonArgs, load_or_exit};
use clap::{Parser, Subcommand};

/// mimalloc, as in the checker: every drain allocates and frees thousands of windows.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(version, about = "Recomputes latency baselines from sample windows")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Recompute every baseline (after changing stats settings), then exit. Safe beside live
    /// recomputers.
    Rebuild,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (config, _telemetry) = load_or_exit::<recomputer::Section>(&args.common, "recomputer");
    match args.command {
        Some(Command::Rebuild) => recomputer::cli::rebuild(config).await,
        None => {
            let listener = tokio::net::TcpListener::bind(config.service.listen)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.service.listen))?;
            recomputer::run(config, listener, anomaly_runtime::lifecycle::signal()).await
        }
    }
}
