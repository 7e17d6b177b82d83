//! The `tracegen` binary: development helpers. For now it serves the fake Tempo.

use std::net::SocketAddr;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(version, about = "Development helpers for latency-anomaly")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serves a fake Tempo search API (empty; for poking at the ingester by hand).
    ServeTempo {
        #[arg(long, default_value = "127.0.0.1:3200")]
        listen: SocketAddr,
        /// Behave like Tempo v3 (hide the newest 30 s, `traces: []` when empty).
        #[arg(long)]
        v3: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::ServeTempo { listen, v3 } => {
            let listener = tokio::net::TcpListener::bind(listen).await?;
            let tempo = tracegen::tempo::FakeTempo::new();
            if v3 {
                tempo.set_mode(tracegen::tempo::Mode::V3);
            }
            eprintln!("fake tempo on http://{}", listener.local_addr()?);
            tempo.serve(listener).await?;
            Ok(())
        }
    }
}
