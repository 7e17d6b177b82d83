//! `ingester backfill`: walks Tempo's history so a first deployment has baselines on day one.
//!
//! The range is searched in steps of `window` (at most Tempo's 168 h search limit), each with
//! the poller's splitting and the same dedup, so running a backfill over time the poller
//! already covered only adds duplicates. After every step the progress is recorded in Redis
//! (`backfill:{job}`): an interrupted backfill run again resumes where it stopped. A finished
//! job is started afresh with the new range.

use std::io::IsTerminal;
use std::ops::AddAssign;
use std::time::{Duration, Instant, SystemTime};

use anomaly_store::Store;
use indicatif::{ProgressBar, ProgressStyle};
use tracing::Instrument as _;

use crate::config::TEMPO_MAX_RANGE;
use crate::ingest::BatchReport;
use crate::metrics::Source;
use crate::poller::{PollError, WindowFetcher, WindowReport, unix_secs};

/// What to backfill.
#[derive(Debug, Clone)]
pub struct BackfillArgs {
    /// Unix seconds.
    pub from: u64,
    pub to: u64,
    /// Step size, at most 168 h.
    pub window: Duration,
    /// Names the progress record, so separate backfills do not resume each other.
    pub job: String,
    /// Ignore recorded progress and start over.
    pub restart: bool,
    /// Draw a progress bar (only on a terminal).
    pub progress: bool,
}

/// What a backfill did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackfillReport {
    pub from: u64,
    pub to: u64,
    /// Where this run started (after resuming).
    pub resumed_at: u64,
    pub windows: u64,
    pub requests: u64,
    pub splits: u64,
    /// Answers checked for a silent cap, and how many Tempo had cut (see [`crate::cap`]).
    pub cap_checks: u64,
    pub clamped: u64,
    pub refetched: u64,
    pub unsplittable: u64,
    pub fetched: u64,
    pub traces: BatchReport,
}

/// Counts one more window.
impl AddAssign<&WindowReport> for BackfillReport {
    fn add_assign(&mut self, window: &WindowReport) {
        self.windows += 1;
        self.requests += window.requests;
        self.splits += window.splits;
        self.cap_checks += window.cap_checks;
        self.clamped += window.clamped;
        self.refetched += window.refetched;
        self.unsplittable += window.unsplittable;
        self.fetched += window.fetched;
        self.traces += &window.traces;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("--window must be from 1s to 168h")]
    Window,
    #[error("the range is empty: --from must be before --to (and before now - tempo.freshness)")]
    EmptyRange,
    #[error("the poller is off: set ingester.tempo.url")]
    NoTempo,
    #[error("backfill stopped at {done} ({remaining}s left); run it again to resume")]
    Stopped {
        done: u64,
        remaining: u64,
        #[source]
        source: PollError,
    },
    #[error(transparent)]
    Store(#[from] anomaly_store::StoreError),
}

pub(crate) async fn backfill(
    fetcher: &WindowFetcher,
    store: &Store,
    freshness: Duration,
    args: &BackfillArgs,
    now: SystemTime,
) -> Result<BackfillReport, BackfillError> {
    if args.window.as_secs() == 0 || args.window > TEMPO_MAX_RANGE {
        return Err(BackfillError::Window);
    }
    let horizon = unix_secs(now).saturating_sub(freshness.as_secs());
    let (mut from, mut to) = (args.from, args.to.min(horizon));
    let mut done = from;
    match store.backfill_progress(&args.job).await? {
        Some(p) if !p.finished() && !args.restart => {
            tracing::info!(job = %args.job, from = p.from, to = p.to, done = p.done, "resuming an interrupted backfill (pass --restart to start over)");
            (from, to, done) = (p.from, p.to, p.done);
        }
        _ => {
            if to <= from {
                return Err(BackfillError::EmptyRange);
            }
            store.start_backfill(&args.job, from, to).await?;
        }
    }
    let mut report = BackfillReport {
        from,
        to,
        resumed_at: done,
        ..BackfillReport::default()
    };
    let bar = if args.progress && std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(to - from);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] [{wide_bar}] {percent}% of the range, ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_position(done - from);
        bar
    } else {
        ProgressBar::hidden()
    };
    let step = args.window.as_secs();
    let started = Instant::now();
    while done < to {
        let end = (done + step).min(to);
        // A debug span for the whole step: the window's searches and the progress it records.
        let span = tracing::debug_span!("backfill window", start = done, end);
        let window = async {
            let window = fetcher
                .fetch(Source::Backfill, done, end)
                .await
                .map_err(|source| BackfillError::Stopped {
                    done,
                    remaining: to - done,
                    source,
                })?;
            store.record_backfill(&args.job, end).await?;
            Ok::<_, BackfillError>(window)
        }
        .instrument(span)
        .await?;
        report += &window;
        done = end;
        bar.set_position(done - from);
        bar.set_message(format!("{} accepted", report.traces.accepted));
        if bar.is_hidden() {
            let covered = (done - report.resumed_at) as f64;
            let eta = started.elapsed().as_secs_f64() / covered.max(1.0) * (to - done) as f64;
            tracing::info!(
                job = %args.job,
                done,
                to,
                percent = format!("{:.1}", (done - from) as f64 * 100.0 / (to - from) as f64),
                eta = %humantime::format_duration(Duration::from_secs(eta as u64)),
                accepted = report.traces.accepted,
                "backfill progress"
            );
        }
    }
    bar.finish_and_clear();
    tracing::info!(
        job = %args.job,
        from,
        to,
        resumed_at = report.resumed_at,
        windows = report.windows,
        requests = report.requests,
        splits = report.splits,
        cap_checks = report.cap_checks,
        clamped = report.clamped,
        unsplittable = report.unsplittable,
        fetched = report.fetched,
        accepted = report.traces.accepted,
        duplicates = report.traces.duplicates,
        partial = report.traces.partial,
        rejected = report.traces.rejected,
        ignored = report.traces.ignored,
        over_cardinality = report.traces.over_cardinality,
        "backfill done"
    );
    Ok(report)
}
