//! `anomaly-bench`: measures the hot paths against a real redis-server it starts itself, prints
//! one table and can rewrite the figures section of BENCHMARKS.md.
//!
//! Every comparison is a ratio of figures measured in the same run, because these machines are
//! noisy: two recomputers against one, measured back to back on the same seeded Redis.

// A command-line report: printing the table is its job.
#![allow(clippy::print_stdout)]

mod analysis;
mod contamination;
mod cpu;
mod http;
mod ingest_detect;
mod micro;
mod modes;
mod otlp;
mod quality;
mod recompute;
mod service;
mod soak;

use std::fmt::Write as _;
use std::path::PathBuf;

use anomaly_core::{BaselineKey, DayType};
use clap::{Args as ClapArgs, Parser, Subcommand};

/// The recomputer's allocator: the `recompute` figures run its `drain_once` in this process, so
/// they should allocate as the shipped binary does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    Recompute(RecomputeArgs),
    /// Check and ingest throughput and latency through the release binaries, driven by wrk (and,
    /// for OTLP ingest, by pre-encoded requests from this process).
    Http(HttpArgs),
    /// Criterion results of `cargo bench -p anomaly-core` (run it first).
    Micro(MicroArgs),
    /// A bounded run at a steady load through all three release binaries, sampled every few
    /// seconds; fails unless there are no errors, p99 stays bounded and memory stays flat
    /// (`just soak`; not part of `all`).
    Soak(SoakArgs),
    /// Detection quality on labelled traffic through the three release binaries: false
    /// positives, recall of 2x-10x slowdowns and insufficient data, exact buckets only against
    /// the fallback chain and one global window per endpoint (`just quality`; not part of
    /// `all`; `--write` rewrites the quality section).
    Quality(QualityArgs),
    /// Span baselines and trace analysis alone: OTLP ingest of multi-span traces with span
    /// baselines on, then off, and the latency of `POST /v1/traces/analysis` of a 50-span
    /// trace (both are also part of `all`).
    Spans {
        #[command(flatten)]
        http: HttpArgs,
        #[command(flatten)]
        analysis: AnalysisArgs,
    },
    /// The contamination guard alone: a one-hour incident with `stats.exclude_anomalies` off,
    /// then on (also part of `quality`, whose options it takes; `--write` is refused).
    Contamination(QualityArgs),
    /// Push API ingest with judging on ingest on, then off (`ingester.detect.enabled`),
    /// alternating twice, every key with a baseline (also part of `all`).
    Detect(HttpArgs),
    /// Standalone Redis against a 3-primary Redis Cluster through the store API, alternating
    /// (issue 18; not part of `all`; `--write` is refused).
    Modes(ModesArgs),
    /// Everything above, in one table (`just bench`).
    All {
        #[command(flatten)]
        recompute: RecomputeArgs,
        #[command(flatten)]
        http: HttpArgs,
        #[command(flatten)]
        micro: MicroArgs,
        #[command(flatten)]
        analysis: AnalysisArgs,
    },
}

#[derive(Debug, ClapArgs)]
struct AnalysisArgs {
    /// Trace analyses timed (one at a time), and as many `/healthz`.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(10..))]
    analysis_requests: u32,
}

#[derive(Debug, ClapArgs)]
struct ModesArgs {
    /// Keys the ingest spreads over, and full keys seeded for the drain, lookups and memory.
    #[arg(long = "modes-keys", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    keys: u32,
    /// Seconds of each timed load (ingest, lookups, pings).
    #[arg(long = "modes-seconds", default_value_t = 5)]
    seconds: u64,
    /// Rounds of standalone then cluster.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
}

#[derive(Debug, ClapArgs)]
struct RecomputeArgs {
    /// Dirty keys to recompute.
    #[arg(long, default_value_t = 10_000)]
    keys: u32,
    /// Samples in each key's window.
    #[arg(long, default_value_t = 1000)]
    samples: u32,
}

#[derive(Debug, ClapArgs)]
struct HttpArgs {
    /// Seeded keys the requests are spread over.
    #[arg(long = "http-keys", default_value_t = 10_000)]
    http_keys: u32,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// wrk connections.
    #[arg(long, default_value_t = 32)]
    connections: u32,
    /// Seconds of each wrk run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Items in each batch check request.
    #[arg(long, default_value_t = 1000)]
    batch_items: u32,
    /// Traces in each ingest request (push API and OTLP).
    #[arg(long, default_value_t = 500)]
    ingest_batch: u32,
    /// Spans in each trace of the OTLP ingest run: one root, the rest children.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    otlp_spans_per_trace: u32,
    /// Where the release `checker` and `ingester` binaries are (default: beside this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

#[derive(Debug, ClapArgs)]
struct SoakArgs {
    /// Length of the run.
    #[arg(long, default_value_t = 10)]
    minutes: u64,
    /// Memory growth is measured from the end of this (seconds).
    #[arg(long, default_value_t = 120)]
    warmup_seconds: u64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 5)]
    sample_seconds: u64,
    /// Keys the traffic spreads over.
    #[arg(long = "soak-keys", default_value_t = 2000)]
    keys: u32,
    /// Single checks a second.
    #[arg(long, default_value_t = 1000)]
    checks_per_sec: u32,
    /// Ingest requests a second.
    #[arg(long, default_value_t = 10)]
    ingests_per_sec: u32,
    /// Traces in each ingest request.
    #[arg(long = "soak-ingest-batch", default_value_t = 100)]
    ingest_batch: u32,
    /// Highest acceptable p99 of a check in any sample (ms).
    #[arg(long, default_value_t = 50)]
    max_check_p99_ms: u64,
    /// Highest acceptable p99 of an ingest request in any sample (ms).
    #[arg(long, default_value_t = 500)]
    max_ingest_p99_ms: u64,
    /// Where the release binaries are (default: beside this one).
    #[arg(long = "soak-bin-dir")]
    bin_dir: Option<PathBuf>,
}

impl SoakArgs {
    fn soak(&self) -> anyhow::Result<soak::Soak> {
        let seconds = |s: u64| std::time::Duration::from_secs(s);
        Ok(soak::Soak {
            bin_dir: bin_dir(self.bin_dir.as_ref())?,
            duration: seconds(self.minutes * 60),
            warmup: seconds(self.warmup_seconds.min(self.minutes * 30)),
            sample_every: seconds(self.sample_seconds.max(1)),
            keys: self.keys.max(1),
            checks_per_sec: self.checks_per_sec,
            ingests_per_sec: self.ingests_per_sec,
            ingest_batch: self.ingest_batch.max(1),
            max_check_p99: std::time::Duration::from_millis(self.max_check_p99_ms),
            max_ingest_p99: std::time::Duration::from_millis(self.max_ingest_p99_ms),
        })
    }
}

#[derive(Debug, ClapArgs)]
struct QualityArgs {
    /// Seed of the generated traffic: the same seed and dates give the same requests.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The test period ends at local midnight (the calendar's time zone, Asia/Taipei) at the
    /// start of this date, which must be in the past; the default keeps runs comparable.
    #[arg(long, default_value = "2026-11-30")]
    end: chrono::NaiveDate,
    /// Days of the test period, checked but not ingested.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..))]
    test_days: u32,
    /// Weeks of training history before it, ingested and recomputed.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    train_weeks: u32,
    /// Share of requests slowed down in the training history.
    #[arg(long, default_value_t = 0.002)]
    train_slowdown_rate: f64,
    /// Share of requests slowed down in the test period (recall is counted on these).
    #[arg(long, default_value_t = 0.1)]
    test_slowdown_rate: f64,
    /// Where the release binaries are (default: beside this one).
    #[arg(long = "quality-bin-dir")]
    bin_dir: Option<PathBuf>,
}

impl QualityArgs {
    fn quality(&self) -> anyhow::Result<quality::Quality> {
        for rate in [self.train_slowdown_rate, self.test_slowdown_rate] {
            anyhow::ensure!(
                (0.0..=1.0).contains(&rate),
                "a slowdown rate is a share from 0 to 1, not {rate}"
            );
        }
        Ok(quality::Quality {
            bin_dir: bin_dir(self.bin_dir.as_ref())?,
            seed: self.seed,
            end: self.end,
            test_days: self.test_days,
            train_weeks: self.train_weeks,
            train_slowdown_rate: self.train_slowdown_rate,
            test_slowdown_rate: self.test_slowdown_rate,
        })
    }
}

impl QualityArgs {
    fn contamination(&self) -> anyhow::Result<Vec<contamination::Contamination>> {
        Ok(self.quality()?.contamination())
    }
}

/// `dir`, or the directory of this executable (where cargo puts the service binaries).
fn bin_dir(dir: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    Ok(match dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default(),
    })
}

#[derive(Debug, ClapArgs)]
struct MicroArgs {
    /// Criterion's output directory.
    #[arg(long, default_value = "target/criterion")]
    criterion_dir: PathBuf,
}

impl HttpArgs {
    fn setup(&self) -> anyhow::Result<http::Setup> {
        let bin_dir = match &self.bin_dir {
            Some(dir) => dir.clone(),
            None => std::env::current_exe()?
                .parent()
                .map(PathBuf::from)
                .unwrap_or_default(),
        };
        Ok(http::Setup {
            bin_dir,
            keys: self.http_keys,
            load: http::Load {
                threads: self.threads,
                connections: self.connections,
                duration: std::time::Duration::from_secs(self.seconds),
            },
            batch_items: self.batch_items,
            ingest_batch: self.ingest_batch,
            otlp_spans_per_trace: self.otlp_spans_per_trace,
        })
    }
}

/// The `i`-th key of the seeded set: 50 services, about 200 endpoints, every hour and day type.
pub(crate) fn key(i: u32) -> BaselineKey {
    let day = if i.is_multiple_of(2) {
        DayType::Weekday
    } else {
        DayType::Weekend
    };
    BaselineKey::new(
        format!("service-{}", i % 50),
        format!("GET /api/v1/resource/{}", i / 48),
        (i % 24) as u8,
        day,
    )
    .expect("valid key")
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
    if let Command::Quality(q) = &args.command {
        // A missing section should stop the run before it starts, not after.
        if let Some(path) = &args.write {
            let text = std::fs::read_to_string(path)?;
            anyhow::ensure!(
                text.contains(QUALITY.0) && text.contains(QUALITY.1),
                "{} has no {} ... {} section",
                path.display(),
                QUALITY.0,
                QUALITY.1
            );
        }
        let report = runtime.block_on(quality::run(&q.quality()?))?;
        let text = format!("{}\n{}", report.table, table(&report.rows));
        println!("{text}");
        if let Some(path) = &args.write {
            let header = format!(
                "seed {}, {} weeks of training and {} days of checks to {} 00:00 Asia/Taipei, {:.0} s",
                q.seed,
                q.train_weeks,
                q.test_days,
                q.end,
                report.elapsed.as_secs_f64()
            );
            write_section(path, QUALITY, &command_line, &header, &text)?;
        }
        return Ok(());
    }
    if let Command::Modes(m) = &args.command {
        anyhow::ensure!(
            args.write.is_none(),
            "--write rewrites the benchmark figures; paste this table by hand"
        );
        let modes = modes::Modes {
            keys: m.keys,
            samples: 1000,
            seconds: m.seconds.max(1),
            rounds: m.rounds,
        };
        println!("{}", runtime.block_on(modes::run(&modes))?);
        return Ok(());
    }
    let soak_run = matches!(args.command, Command::Soak(_));
    if (soak_run
        || matches!(
            args.command,
            Command::Spans { .. } | Command::Detect(_) | Command::Contamination(_)
        ))
        && args.write.is_some()
    {
        // The figures section holds the whole benchmark table; these tables go beside it.
        anyhow::bail!("--write rewrites the benchmark figures; paste this table by hand");
    }
    let rows = match args.command {
        Command::Recompute(r) => runtime.block_on(recompute::run(r.keys, r.samples))?,
        Command::Http(h) => runtime.block_on(http::run(&h.setup()?))?,
        Command::Micro(m) => micro::rows(&m.criterion_dir)?,
        Command::Soak(s) => runtime.block_on(soak::run(&s.soak()?))?,
        Command::Quality(_) | Command::Modes(_) => unreachable!("handled above"),
        Command::Contamination(q) => {
            let mut rows = Vec::new();
            for c in q.contamination()? {
                let report = runtime.block_on(contamination::run(&c))?;
                println!("{}", report.table);
                rows.extend(report.rows);
            }
            rows
        }
        Command::Detect(h) => runtime.block_on(ingest_detect::run(&h.setup()?, DETECT_ROUNDS))?,
        Command::Spans { http, analysis } => {
            let setup = http.setup()?;
            let keys: Vec<BaselineKey> = (0..setup.keys).map(key).collect();
            let connections = setup.load.connections.min(http::INGEST_CONNECTIONS);
            runtime.block_on(async {
                let on = otlp::ingest(&setup, &keys, connections, true).await?;
                let off = otlp::ingest(&setup, &keys, connections, false).await?;
                let mut rows = otlp::rows(&setup, connections, &on, &off);
                rows.extend(analysis::run(&setup.bin_dir, analysis.analysis_requests).await?);
                anyhow::Ok(rows)
            })?
        }
        Command::All {
            recompute,
            http,
            micro,
            analysis,
        } => {
            let mut rows = micro::rows(&micro.criterion_dir)?;
            let setup = http.setup()?;
            rows.extend(runtime.block_on(http::run(&setup))?);
            rows.extend(runtime.block_on(ingest_detect::run(&setup, DETECT_ROUNDS))?);
            rows.extend(
                runtime.block_on(analysis::run(&setup.bin_dir, analysis.analysis_requests))?,
            );
            rows.extend(runtime.block_on(recompute::run(recompute.keys, recompute.samples))?);
            rows
        }
    };
    let table = table(&rows);
    println!("{table}");
    if let Some(path) = args.write {
        write_section(&path, FIGURES, &command_line, "", &table)?;
    }
    let missed: Vec<&str> = rows
        .iter()
        .filter(|r| r.verdict == "MISSED")
        .map(|r| r.name.as_str())
        .collect();
    if soak_run && !missed.is_empty() {
        anyhow::bail!("the soak missed: {}", missed.join("; "));
    }
    Ok(())
}

/// Runs of push ingest with detection on, and as many off, alternating.
const DETECT_ROUNDS: u32 = 2;

/// The markers around the benchmark figures, and around the quality figures.
const FIGURES: (&str, &str) = ("<!-- figures:start -->", "<!-- figures:end -->");
const QUALITY: (&str, &str) = ("<!-- quality:start -->", "<!-- quality:end -->");

/// Replaces the section between `markers` in `path` with `table`, under a line naming the
/// date, the machine, the command and `details` (when not empty).
fn write_section(
    path: &PathBuf,
    (start, end): (&str, &str),
    command_line: &str,
    details: &str,
    table: &str,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)?;
    let (Some(a), Some(b)) = (text.find(start), text.find(end)) else {
        anyhow::bail!("{} has no {start} ... {end} section", path.display());
    };
    let machine = machine();
    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    let details = if details.is_empty() {
        String::new()
    } else {
        format!(" ({details})")
    };
    let section = format!(
        "{start}\nMeasured {date} on {machine} with `{command_line}`{details}:\n\n{table}{end}"
    );
    let updated = format!("{}{section}{}", &text[..a], &text[b + end.len()..]);
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
