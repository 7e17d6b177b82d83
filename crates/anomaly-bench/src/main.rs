//! `anomaly-bench`: measures the hot paths against a real redis-server it starts itself, prints
//! one table and can rewrite the figures section of BENCHMARKS.md.
//!
//! Every comparison is a ratio of figures measured in the same run, because these machines are
//! noisy: two recomputers against one, measured back to back on the same seeded Redis.

// A command-line report: printing the table is its job.
#![allow(clippy::print_stdout)]

mod recompute;

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "Benchmarks of the latency anomaly detector")]
struct Args {
    /// Rewrite the figures section of this file (between the figures markers).
    #[arg(long, global = true)]
    write: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Recompute throughput (one and two recomputers) and Redis memory per full key.
    Recompute {
        #[arg(long, default_value_t = 10_000)]
        keys: u32,
        #[arg(long, default_value_t = 1000)]
        samples: u32,
    },
}

/// One row of the results table.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) name: String,
    pub(crate) value: String,
    pub(crate) target: String,
    pub(crate) verdict: &'static str,
}

impl Row {
    pub(crate) fn new(
        name: impl Into<String>,
        value: impl Into<String>,
        target: impl Into<String>,
        met: Option<bool>,
    ) -> Row {
        Row {
            name: name.into(),
            value: value.into(),
            target: target.into(),
            verdict: match met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "",
            },
        }
    }
}

fn table(rows: &[Row]) -> String {
    let mut out = String::from("| measurement | result | target | |\n|---|---|---|---|\n");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            r.name, r.value, r.target, r.verdict
        );
    }
    out
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let rows = match args.command {
        Command::Recompute { keys, samples } => runtime.block_on(recompute::run(keys, samples))?,
    };
    let table = table(&rows);
    println!("{table}");
    if let Some(path) = args.write {
        write_figures(&path, &command_line, &table)?;
    }
    Ok(())
}

const START: &str = "<!-- figures:start -->";
const END: &str = "<!-- figures:end -->";

fn write_figures(path: &PathBuf, command_line: &str, table: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)?;
    let (Some(a), Some(b)) = (text.find(START), text.find(END)) else {
        anyhow::bail!("{} has no {START} ... {END} section", path.display());
    };
    let machine = machine();
    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    let section =
        format!("{START}\nMeasured {date} on {machine} with `{command_line}`:\n\n{table}{END}");
    let updated = format!("{}{section}{}", &text[..a], &text[b + END.len()..]);
    std::fs::write(path, updated)?;
    Ok(())
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let redis = std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    format!("{cpus} x {model}, {redis}")
}
