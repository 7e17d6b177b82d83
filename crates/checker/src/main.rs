//! The `checker` binary: parse arguments, load configuration, start telemetry, run the service.

use anomaly_runtime::cli::{CommonArgs, load_or_exit};
use clap::Parser;

/// mimalloc: the check path allocates small, short-lived buffers at a high rate, which glibc's
/// malloc served at a measurable cost (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(version, about = "The latency anomaly check API")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (config, _telemetry) = load_or_exit::<checker::Section>(&args.common, "checker");
    let listener = tokio::net::TcpListener::bind(config.service.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.service.listen))?;
    checker::run(config, listener, anomaly_runtime::lifecycle::signal()).await
}
