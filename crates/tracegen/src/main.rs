//! The `tracegen` binary: demo traffic served as a fake Tempo, pushed to the ingester or sent as
//! OTLP, and a helper telling which bucket an instant falls in.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anomaly_core::{Bucketer, TimeConfig};
use anyhow::Context;
use chrono::{NaiveDate, Weekday};
use clap::builder::TypedValueParser as _;
use clap::{Args as ClapArgs, Parser, Subcommand};
use tracegen::feed::{LiveFeed, unix_nanos};
use tracegen::otlp::{DEFAULT_SPANS_PER_TRACE, OtlpSender, OtlpSummary, SendOptions, SlowSpans};
use tracegen::push::{PushSummary, Pusher};
use tracegen::tempo::{FakeTempo, LimitCap, Mode};
use tracegen::traffic::{GenTrace, Generator, Profile};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Demo traffic and development helpers for latency-anomaly"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve generated traffic through a fake Tempo (`/api/search`, `/api/traces/{id}`,
    /// `/ready`): a history at start, then new traces as time passes.
    ServeTempo {
        #[arg(long, default_value = "127.0.0.1:3200")]
        listen: SocketAddr,
        /// Behave like Tempo v3 (hide the newest 30 s, `traces: []` when empty).
        #[arg(long)]
        v3: bool,
        /// History to generate before serving, e.g. `7d` (so a backfill has data).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
        history: Duration,
        /// Serve no traffic at all (an empty Tempo for poking at the ingester by hand).
        #[arg(long)]
        empty: bool,
        /// How often new traces are added.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
        tick: Duration,
        /// Cap every search's `limit` as `query_frontend.search.max_result_limit` does.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        max_limit: Option<u64>,
        /// How the cap is enforced: `clamp` (Tempo v2.0 to v2.5: silently lowered) or `reject`
        /// (v2.6 and later: 400 `limit 500 exceeds max limit N`).
        #[arg(long, value_enum, default_value_t = CapBehaviour::Clamp, requires = "max_limit")]
        max_limit_behaviour: CapBehaviour,
        /// Spans of each trace served by `/api/traces/{id}` (the root and its children).
        #[arg(long, value_name = "N", default_value_t = tracegen::otlp::DEFAULT_SPANS_PER_TRACE, value_parser = clap::value_parser!(u16).range(1..).map(usize::from))]
        spans_per_trace: usize,
        #[command(flatten)]
        traffic: TrafficArgs,
    },
    /// Push generated traffic to the ingester's `POST /v1/traces/ingest`: the last `--history`
    /// at once, then (with `--follow`) new traces every `--interval`.
    Push {
        /// The ingest endpoint, e.g. `http://127.0.0.1:8081/v1/traces/ingest`.
        #[arg(long)]
        url: String,
        /// Bearer token, when the ingester demands one.
        #[arg(long, env = "TRACEGEN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
        history: Duration,
        /// Keep pushing new traces until interrupted.
        #[arg(long)]
        follow: bool,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
        interval: Duration,
        /// Traces per request.
        #[arg(long, default_value_t = 500)]
        batch: usize,
        #[command(flatten)]
        traffic: TrafficArgs,
    },
    /// Send generated traffic as OTLP, each trace a root span and child spans: the last
    /// `--history` at once, then (with `--follow`) new traces every `--interval`.
    Otlp {
        /// OTLP/HTTP: the receiver's base URL, e.g. `http://127.0.0.1:8081` (`/v1/traces` is
        /// appended unless the URL ends with it); with `--grpc`, its OTLP/gRPC endpoint, e.g.
        /// `http://127.0.0.1:4317`.
        #[arg(long)]
        url: String,
        /// Send over OTLP/gRPC (`TraceService/Export`) instead of OTLP/HTTP protobuf.
        #[arg(long)]
        grpc: bool,
        /// Compress requests with gzip.
        #[arg(long)]
        gzip: bool,
        /// Bearer token, when the receiver demands one.
        #[arg(long, env = "TRACEGEN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
        history: Duration,
        /// Keep sending new traces until interrupted.
        #[arg(long)]
        follow: bool,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
        interval: Duration,
        /// Traces per request.
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// Spans per trace: the root, then children inside it.
        #[arg(
            long,
            default_value_t = DEFAULT_SPANS_PER_TRACE,
            value_parser = clap::value_parser!(u16).range(1..).map(usize::from)
        )]
        spans_per_trace: usize,
        /// Every Nth trace sent has one slow span three levels down (the `load` step's call),
        /// its root longer by as much; 0 never.
        #[arg(long, value_name = "N", default_value_t = 200)]
        slow_every: u64,
        /// How much longer that span is, ms.
        #[arg(long, value_name = "MS", default_value_t = 1000)]
        slow_extra_ms: u32,
        #[command(flatten)]
        traffic: TrafficArgs,
    },
    /// Print one OTLP/JSON trace (`{"resourceSpans": [...]}`, the body of the checker's
    /// `POST /v1/traces/analysis`) ending now, with its span three levels down slower by
    /// `--extra-ms`.
    SlowTrace {
        #[arg(long, default_value = "checkout")]
        service: String,
        #[arg(long, default_value = "POST /api/checkout")]
        endpoint: String,
        /// The trace's usual duration, ms, before the slow span's extra time.
        #[arg(long, default_value_t = 150)]
        duration_ms: u32,
        /// How much longer the slow span is, ms (the root is longer by as much).
        #[arg(long, default_value_t = 1000)]
        extra_ms: u32,
        #[arg(
            long,
            default_value_t = DEFAULT_SPANS_PER_TRACE,
            value_parser = clap::value_parser!(u16).range(4..).map(usize::from)
        )]
        spans_per_trace: usize,
    },
    /// Print the bucket (`HOUR DAYTYPE`, e.g. `14 weekday`) of an instant in the calendar.
    Bucket {
        /// Unix seconds; now when absent.
        #[arg(long)]
        at: Option<u64>,
        #[command(flatten)]
        calendar: CalendarArgs,
    },
}

/// The calendar the patterns follow; use the services' `timezone`, `weekend_days` and
/// `holidays`, or the slow hour lands in another bucket.
/// How the fake Tempo enforces `--max-limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CapBehaviour {
    Clamp,
    Reject,
}

#[derive(Debug, Clone, ClapArgs)]
struct CalendarArgs {
    /// IANA time zone.
    #[arg(long, default_value = "Asia/Taipei")]
    timezone: String,
    #[arg(long, value_delimiter = ',', default_value = "Sat,Sun")]
    weekend_days: Vec<String>,
    /// ISO dates bucketed as weekend.
    #[arg(long, value_delimiter = ',')]
    holidays: Vec<String>,
}

impl CalendarArgs {
    fn time_config(&self) -> anyhow::Result<TimeConfig> {
        let timezone = self
            .timezone
            .parse()
            .map_err(|e| anyhow::anyhow!("--timezone {:?}: {e}", self.timezone))?;
        let weekend_days = self
            .weekend_days
            .iter()
            .map(|d| {
                d.parse::<Weekday>()
                    .map_err(|_| anyhow::anyhow!("--weekend-days: {d:?} is not a weekday"))
            })
            .collect::<anyhow::Result<_>>()?;
        let holidays = self
            .holidays
            .iter()
            .map(|d| {
                NaiveDate::parse_from_str(d, "%Y-%m-%d")
                    .with_context(|| format!("--holidays: {d:?} is not YYYY-MM-DD"))
            })
            .collect::<anyhow::Result<_>>()?;
        let config = TimeConfig {
            timezone,
            weekend_days,
            holidays,
        };
        config.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(config)
    }
}

#[derive(Debug, Clone, ClapArgs)]
struct TrafficArgs {
    /// Same seed, same traces (IDs, start times, durations).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Share of traces injected as anomalies (0-1).
    #[arg(long, default_value_t = 0.005)]
    anomaly_rate: f64,
    /// Local hour in which `checkout POST /api/checkout` is 3x slower.
    #[arg(long, default_value_t = 14, value_parser = clap::value_parser!(u8).range(0..24))]
    slow_hour: u8,
    /// Multiplies every endpoint's request rate (about 6.2 requests a minute in all at 1).
    #[arg(long, default_value_t = 1.0)]
    rate_scale: f64,
    #[command(flatten)]
    calendar: CalendarArgs,
}

impl TrafficArgs {
    fn generator(&self) -> anyhow::Result<Generator> {
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.anomaly_rate),
            "--anomaly-rate must be from 0 to 1"
        );
        anyhow::ensure!(
            self.rate_scale.is_finite() && self.rate_scale > 0.0,
            "--rate-scale must be more than 0"
        );
        let mut profile = Profile::demo();
        profile.anomaly_rate = self.anomaly_rate;
        profile.slow_hour = self.slow_hour;
        profile.rate_scale = self.rate_scale;
        Ok(Generator::new(
            profile,
            self.seed,
            &self.calendar.time_config()?,
        ))
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match dispatch(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line with the causes, not a backtrace: this is a command-line tool.
            eprintln!("tracegen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::ServeTempo {
            listen,
            v3,
            history,
            empty,
            tick,
            max_limit,
            max_limit_behaviour,
            spans_per_trace,
            traffic,
        } => {
            let cap = max_limit.map(|n| match max_limit_behaviour {
                CapBehaviour::Clamp => LimitCap::Clamp(n),
                CapBehaviour::Reject => LimitCap::Reject(n),
            });
            let tempo = FakeTempo::new();
            if v3 {
                tempo.set_mode(Mode::V3);
            }
            tempo.set_max_limit(cap);
            tempo.set_spans_per_trace(spans_per_trace);
            serve_tempo(tempo, listen, history, empty, tick, &traffic).await
        }
        Command::Push {
            url,
            token,
            history,
            follow,
            interval,
            batch,
            traffic,
        } => {
            let generator = traffic.generator()?;
            let pusher = Pusher::new(url, token, batch);
            let mut total = PushSummary::default();
            stream(&generator, history, follow, interval, async |traces| {
                let summary = pusher.push(traces).await?;
                total += summary;
                eprintln!(
                    "tracegen: pushed {} traces: {} accepted, {} duplicates, {} rejected",
                    traces.len(),
                    summary.accepted,
                    summary.duplicates,
                    summary.rejected
                );
                Ok(())
            })
            .await?;
            eprintln!(
                "tracegen: total {} accepted, {} duplicates, {} rejected in {} requests",
                total.accepted, total.duplicates, total.rejected, total.batches
            );
            Ok(())
        }
        Command::Otlp {
            url,
            grpc,
            gzip,
            token,
            history,
            follow,
            interval,
            batch,
            spans_per_trace,
            slow_every,
            slow_extra_ms,
            traffic,
        } => {
            let generator = traffic.generator()?;
            let options = SendOptions {
                token,
                batch_size: batch,
                spans_per_trace,
                gzip,
            };
            let sender = if grpc {
                OtlpSender::grpc(&url, options).await?
            } else {
                OtlpSender::http(&url, options)
            }
            .with_slow_spans(SlowSpans {
                every: slow_every,
                extra_ms: slow_extra_ms,
            });
            let mut total = OtlpSummary::default();
            stream(&generator, history, follow, interval, async |traces| {
                let summary = sender.send(traces).await?;
                eprintln!(
                    "tracegen: sent {} traces ({} spans) to {}: {} spans rejected{}",
                    summary.traces,
                    summary.spans,
                    sender.url(),
                    summary.rejected_spans,
                    summary
                        .first_error
                        .as_deref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                );
                total += summary;
                Ok(())
            })
            .await?;
            eprintln!(
                "tracegen: total {} traces, {} spans, {} spans rejected in {} requests",
                total.traces, total.spans, total.rejected_spans, total.requests
            );
            Ok(())
        }
        Command::SlowTrace {
            service,
            endpoint,
            duration_ms,
            extra_ms,
            spans_per_trace,
        } => {
            let now = unix_nanos(SystemTime::now());
            let total_nanos = (u64::from(duration_ms) + u64::from(extra_ms)) * 1_000_000;
            let trace = GenTrace {
                // Unique per nanosecond and never zero.
                trace_id: format!("{:032x}", (u128::from(now) << 32) | 0x510e),
                service,
                endpoint,
                start_unix_nano: now.saturating_sub(total_nanos),
                duration_ms,
                anomaly: true,
                root: tracegen::traffic::Root::OnTime,
            };
            let request = tracegen::otlp::export_request_slow(
                &[trace],
                spans_per_trace,
                SlowSpans { every: 1, extra_ms },
                0,
            );
            writeln!(std::io::stdout(), "{}", tracegen::otlp::to_json(&request))?;
            Ok(())
        }
        Command::Bucket { at, calendar } => {
            let bucketer = Bucketer::new(&calendar.time_config()?);
            let secs = at.unwrap_or_else(|| unix_nanos(SystemTime::now()) / 1_000_000_000);
            let instant = chrono::DateTime::from_timestamp(i64::try_from(secs)?, 0)
                .context("--at is out of range")?;
            let b = bucketer.bucket(instant);
            writeln!(std::io::stdout(), "{} {}", b.hour, b.day_type)?;
            Ok(())
        }
    }
}

/// Serves `tempo` (mode and cap already set) with generated traffic.
async fn serve_tempo(
    tempo: FakeTempo,
    listen: SocketAddr,
    history: Duration,
    empty: bool,
    tick: Duration,
    traffic: &TrafficArgs,
) -> anyhow::Result<()> {
    let feed = if empty {
        None
    } else {
        let now = unix_nanos(SystemTime::now());
        let started = Instant::now();
        let from = now.saturating_sub(u64::try_from(history.as_nanos())?);
        let mut feed = LiveFeed::new(traffic.generator()?, from);
        let report = feed.step(&tempo, now);
        eprintln!(
            "tracegen: {} traces of history ({}; {} partial) in {:.1?}",
            report.traces(),
            humantime::format_duration(history),
            report.partial,
            started.elapsed()
        );
        Some(feed)
    };
    // Bound only now, so `/ready` answers once the history is in.
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    eprintln!("tracegen: fake tempo on http://{}", listener.local_addr()?);
    if let Some(feed) = feed {
        tokio::spawn(feed.run(tempo.clone(), tick, std::future::pending()));
    }
    axum::serve(listener, tempo.router())
        .with_graceful_shutdown(shutdown())
        .await?;
    Ok(())
}

/// Hands `send` the traces of the last `history`, then, with `follow`, the new ones every
/// `interval` until Ctrl-C or SIGTERM; stops at the first error.
async fn stream(
    generator: &Generator,
    history: Duration,
    follow: bool,
    interval: Duration,
    mut send: impl AsyncFnMut(&[GenTrace]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let now = unix_nanos(SystemTime::now());
    let mut cursor = now.saturating_sub(u64::try_from(history.as_nanos())?);
    let stop = shutdown();
    tokio::pin!(stop);
    loop {
        let now = unix_nanos(SystemTime::now());
        let traces = generator.traces_between(cursor, now);
        cursor = now;
        send(&traces).await?;
        if !follow {
            return Ok(());
        }
        tokio::select! {
            () = &mut stop => return Ok(()),
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
