//! The `ingester` binary: parse arguments, load configuration, start telemetry, run the service.

use anomaly_runtime::cli::{CommonArgs, load_or_exit};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(version, about = "Turns Tempo traces into latency samples")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (config, _telemetry) = load_or_exit::<ingester::Section>(&args.common, "ingester");
    let listener = tokio::net::TcpListener::bind(config.service.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.service.listen))?;
    ingester::run(config, listener, anomaly_runtime::shutdown::signal()).await
}
