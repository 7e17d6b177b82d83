//! The Tempo poller: one replica (holding the Redis lease) searches Tempo every `poll_interval`
//! and ingests what it finds, without gaps.
//!
//! # Windows
//! All times are whole unix seconds, as Tempo's search takes them. Let `H = now - freshness`
//! (the newest second Tempo v3 shows; it cuts every search's end to `now - 30 s`, so a window
//! ending later would be cut short without Tempo saying so) and `C` the cursor in Redis, the end
//! of the last window fully ingested. A poll searches
//!
//! ```text
//!     start = C - lookback        end = min(H, C + lookback)
//! ```
//!
//! and then moves the cursor to `end`. Live, `C` is the previous poll's `H`, so each window is
//! `lookback + poll_interval` long and overlaps the previous one by `lookback`; after an outage
//! `end` grows by `lookback` per step until the poller is back at `H` ("catch-up"); a first
//! start (no cursor) takes `C = H - lookback`, so it polls `H - 2 * lookback..H`.
//!
//! Why `lookback` behind the cursor: a trace is searchable only once its spans have reached
//! Tempo, some time `d` after it ends (exporter batching, collectors, a late root span). A trace
//! ending at `e` and reaching Tempo at `e + d` is in the first window searched after `e + d`
//! if that window's start, at most `lookback` before the previous window's end, is at or before
//! `e`; the previous end is at most `H` at time `e + d`, i.e. `e + d - freshness`. So every
//! trace with `d <= lookback + freshness` (150 s with the defaults) is found, v3's 30 s cut
//! included, and a trace first seen partial is found again with its root if the root arrives
//! within that time. Overlapping windows return traces again; the per-trace dedup in Redis
//! makes that harmless. The cursor never passes `H`, so it never claims time Tempo hid.
//!
//! # Truncation
//! Tempo's search has no truncation flag and keeps an arbitrary subset of `limit` traces, so
//! a response with `limit` or more traces is treated as truncated: the window is split in
//! halves, recursively, down to `min_slice`. A slice still truncated there is ingested as far
//! as it goes and counted (`anomaly_tempo_windows_unsplittable_total`). A response larger than
//! `max_response_bytes` is split the same way (one that is still too large at `min_slice` is
//! skipped and counted).
//!
//! `limit` is `tempo.limit`, or the lower `max_result_limit` Tempo enforces: refused with a
//! 400 by v2.6+, applied silently by v2.0 to v2.5. [`crate::cap`] learns it either way and
//! says how a silent cap is proven and what is searched again when it is.
//!
//! # Failures
//! A failed search (after the client's retries) or a Redis error ends the poll with an error
//! and leaves the cursor where it was: the next poll searches the same time again. An outage
//! longer than `max_catchup` skips the older part (logged with the backfill command that fills
//! it, counted in `anomaly_poller_gap_seconds_total`) so a long-dead Tempo does not keep the
//! poller hours behind.
//!
//! # One poller
//! `poll_once` first takes or renews the lease; a replica that does not hold it does nothing.
//! The cursor moves only while the lease is held (a Redis script checks the owner), so a
//! deposed poller finishing a window late changes nothing but harmless duplicates.

mod fetch_spans;

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anomaly_runtime::lifecycle::CancellationToken;
use anomaly_store::poller::CursorAdvance;
use anomaly_store::{Store, StoreError};
use serde_json::Value;

use crate::cap::{CapSource, Slice, Verdict};
use crate::config::TempoSection;
use crate::ingest::{BatchReport, Ingest};
use crate::metrics::{IngestMetrics, Source};
use crate::tempo::{Search, TempoClient, TempoError};
use crate::trace::TraceItem;

pub use fetch_spans::{SpanFetch, SpanFetchStats};

/// Why a poll (or a backfill step) failed; the cursor did not move.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Tempo(#[from] TempoError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What searching one window did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowReport {
    /// Unix seconds.
    pub start: u64,
    pub end: u64,
    /// Searches made (a refusal of the limit answered by asking again counts once).
    pub requests: u64,
    /// Windows split because Tempo's answer held `limit` traces or more.
    pub splits: u64,
    /// Answers smaller than the limit checked by splitting (see [`crate::cap`]), and how many
    /// of them Tempo had cut at a cap it did not report.
    pub cap_checks: u64,
    pub clamped: u64,
    /// Slices of earlier windows searched again because a proven cap may have cut them.
    pub refetched: u64,
    /// Slices still truncated at `min_slice`.
    pub unsplittable: u64,
    /// Traces Tempo returned, before dedup.
    pub fetched: u64,
    pub traces: BatchReport,
}

/// What one `poll_once` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollOutcome {
    /// Another replica holds the lease.
    Standby,
    /// Nothing to search yet (the cursor is at the horizon).
    Idle,
    /// A window was searched and ingested and the cursor moved to `cursor`.
    Polled {
        window: WindowReport,
        cursor: u64,
        /// Whether the cursor reached the horizon (else more catch-up steps follow).
        caught_up: bool,
    },
    /// The lease was lost while searching; the cursor was left alone.
    LostLease,
}

/// Trace IDs found in a slice, normalised, to compare a whole window's answer with its halves'.
type Found = HashSet<String>;

type Walk<'a> = Pin<Box<dyn Future<Output = Result<Found, PollError>> + Send + 'a>>;

/// Fetches windows from Tempo, splitting truncated ones, and ingests what they hold.
#[derive(Debug, Clone)]
pub struct WindowFetcher {
    pub(crate) tempo: TempoClient,
    pub(crate) ingest: Ingest,
    pub(crate) metrics: IngestMetrics,
    pub(crate) min_slice: u64,
}

impl WindowFetcher {
    /// Searches `start..end`, splitting in halves while Tempo truncates, and ingests every
    /// trace found as `source`. Slices of earlier windows that a newly proven cap may have cut
    /// are searched again first (see [`crate::cap`]).
    #[tracing::instrument(
        name = "tempo window",
        skip_all,
        fields(source = source.as_str(), start = start, end = end)
    )]
    pub async fn fetch(
        &self,
        source: Source,
        start: u64,
        end: u64,
    ) -> Result<WindowReport, PollError> {
        let mut report = WindowReport {
            start,
            end,
            ..WindowReport::default()
        };
        self.tempo.read_configured_cap().await;
        self.refetch(source, &mut report).await?;
        self.walk(source, &mut report, start, end, true).await?;
        // A cap proven during this window queues its own slices that reached the cap.
        self.refetch(source, &mut report).await?;
        Ok(report)
    }

    /// Searches again the slices a proven cap may have cut, until none is left.
    async fn refetch(&self, source: Source, report: &mut WindowReport) -> Result<(), PollError> {
        loop {
            let slices = self.tempo.cap().take_refetch();
            if slices.is_empty() {
                return Ok(());
            }
            tracing::info!(
                slices = slices.len(),
                limit = self.tempo.cap().limit(),
                "searching again the slices tempo may have cut at its cap"
            );
            for (i, slice) in slices.iter().enumerate() {
                if let Err(e) = self
                    .walk(source, report, slice.start, slice.end, true)
                    .await
                {
                    self.tempo.cap().requeue(slices[i..].to_vec());
                    return Err(e);
                }
                report.refetched += 1;
            }
        }
    }

    /// Searches `s..e` and ingests what it holds, splitting (depth-first, earliest half first,
    /// so progress moves forward in time) while Tempo truncates; returns the trace IDs found.
    /// `may_check` is false for the halves of a check: checking them in turn could go on to
    /// `min_slice` (a few long traces overlap every slice), and a cap the check misses because
    /// one half was cut as well is proven by a later check, which searches that half again.
    fn walk<'a>(
        &'a self,
        source: Source,
        report: &'a mut WindowReport,
        s: u64,
        e: u64,
        may_check: bool,
    ) -> Walk<'a> {
        Box::pin(async move {
            let splittable = e - s >= 2 * self.min_slice;
            report.requests += 1;
            let search = match self.tempo.search(s, e).await {
                Ok(search) => search,
                Err(TempoError::TooLarge(_)) if splittable => {
                    return self.split(source, report, s, e, may_check).await;
                }
                Err(err @ TempoError::TooLarge(_)) => {
                    tracing::error!(start = s, end = e, error = %err, "a one-slice window is too large to read; skipped");
                    report.unsplittable += 1;
                    self.metrics.windows_unsplittable.inc();
                    return Ok(Found::new());
                }
                Err(err) => return Err(err.into()),
            };
            let returned = search.traces.len();
            match self.tempo.cap().judge(returned, search.limit) {
                Verdict::Truncated if splittable => {
                    return self.split(source, report, s, e, may_check).await;
                }
                Verdict::Truncated => {
                    report.unsplittable += 1;
                    self.metrics.windows_unsplittable.inc();
                    tracing::warn!(
                        start = s,
                        end = e,
                        returned,
                        limit = search.limit,
                        "tempo truncated a window that cannot be split further; raise tempo.limit"
                    );
                }
                Verdict::Suspect if splittable && may_check => {
                    return self.check(source, report, s, e, search).await;
                }
                Verdict::Suspect | Verdict::Complete => {}
            }
            let found = self.ingest(source, report, &search.traces).await?;
            self.tempo.cap().remember(Slice {
                start: s,
                end: e,
                returned,
            });
            Ok(found)
        })
    }

    async fn split(
        &self,
        source: Source,
        report: &mut WindowReport,
        s: u64,
        e: u64,
        may_check: bool,
    ) -> Result<Found, PollError> {
        report.splits += 1;
        self.metrics.window_splits.inc();
        tracing::debug!(start = s, end = e, "tempo truncated the window; splitting");
        self.halves(source, report, s, e, may_check).await
    }

    /// Walks `s..mid` then `mid..e`, earliest first; returns the trace IDs found in both.
    async fn halves(
        &self,
        source: Source,
        report: &mut WindowReport,
        s: u64,
        e: u64,
        may_check: bool,
    ) -> Result<Found, PollError> {
        let mid = s + (e - s) / 2;
        let mut found = self.walk(source, report, s, mid, may_check).await?;
        found.extend(self.walk(source, report, mid, e, may_check).await?);
        Ok(found)
    }

    /// Checks an answer smaller than the limit that a silent cap may have cut: searches the
    /// halves and lowers the limit if they hold more traces than the whole did. The halves'
    /// traces are ingested as they come, then whatever of the whole's they did not return
    /// (normally nothing), so each trace is counted once.
    async fn check(
        &self,
        source: Source,
        report: &mut WindowReport,
        s: u64,
        e: u64,
        search: Search,
    ) -> Result<Found, PollError> {
        let returned = search.traces.len();
        // Distinct IDs: v2.0.1 can list a trace twice when several shards answer.
        let whole: Found = trace_ids(&search.traces).collect();
        report.cap_checks += 1;
        tracing::debug!(
            start = s,
            end = e,
            returned,
            "checking whether tempo cut this answer"
        );
        let mut found = self.halves(source, report, s, e, false).await?;
        if !whole.is_subset(&found) {
            let missed: Vec<Value> = search
                .traces
                .into_iter()
                .filter(|t| trace_id(t).is_some_and(|id| !found.contains(&id)))
                .collect();
            found.extend(self.ingest(source, report, &missed).await?);
        }
        let clamped = found.len() > whole.len();
        self.metrics.cap_check(clamped);
        if clamped {
            report.clamped += 1;
            tracing::debug!(
                start = s,
                end = e,
                returned,
                found = found.len(),
                "the halves hold more traces than the whole: tempo cut the answer"
            );
            self.tempo.cap().lower(returned, CapSource::Clamped);
        }
        Ok(found)
    }

    async fn ingest(
        &self,
        source: Source,
        report: &mut WindowReport,
        traces: &[Value],
    ) -> Result<Found, PollError> {
        report.fetched += traces.len() as u64;
        let batch = self.ingest.ingest(source, traces).await?;
        report.traces += &batch;
        // Only live polling: a backfill's history would queue far more than the rate allows.
        if source == Source::Poll
            && let Some(spans) = self.tempo.span_fetch()
        {
            spans.offer(traces, &self.ingest);
        }
        Ok(trace_ids(traces).collect())
    }
}

/// A search result's trace ID, normalised; `None` when it has none that is valid.
fn trace_id(trace: &Value) -> Option<String> {
    let id = TraceItem::from_json(trace).ok()?.trace_id().ok()?;
    Some(id.as_str().to_owned())
}

fn trace_ids(traces: &[Value]) -> impl Iterator<Item = String> + '_ {
    traces.iter().filter_map(trace_id)
}

/// The live poller of one replica.
#[derive(Debug, Clone)]
pub struct Poller {
    fetcher: WindowFetcher,
    store: Store,
    settings: TempoSection,
    metrics: IngestMetrics,
    owner: String,
    /// Whether this replica holds the lease, as far as it last heard from Redis: the state
    /// `keep_lease` and the log of changes go by. The `anomaly_poller_lease_held` gauge only
    /// reports it.
    lease_held: Arc<AtomicBool>,
}

pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

impl Poller {
    pub(crate) fn new(
        fetcher: WindowFetcher,
        store: Store,
        settings: TempoSection,
        owner: String,
    ) -> Self {
        Poller {
            metrics: fetcher.metrics.clone(),
            fetcher,
            store,
            settings,
            owner,
            lease_held: Arc::default(),
        }
    }

    /// This replica's lease owner ID.
    /// Span fetching (`ingester.tempo.fetch_spans`), when enabled.
    pub fn span_fetch(&self) -> Option<&SpanFetch> {
        self.fetcher.tempo.span_fetch()
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Gives the lease up (if held) so another replica takes over at once; returns whether it
    /// was held. [`Poller::run`] does this when it stops.
    pub async fn release(&self) -> Result<bool, StoreError> {
        let released = self.store.release_lease(&self.owner).await?;
        self.set_lease_held(false);
        Ok(released)
    }

    /// One step: take or renew the lease, search the next window (see the module docs) and
    /// move the cursor. Tests call it directly with the fake Tempo's clock.
    #[tracing::instrument(name = "poll", skip_all, fields(owner = %self.owner))]
    pub async fn poll_once(&self, now: SystemTime) -> Result<PollOutcome, PollError> {
        if !self.hold_lease().await? {
            // The lag is the holder's to report; a standby replica reports none.
            self.metrics.cursor_lag.set(0);
            return Ok(PollOutcome::Standby);
        }
        let lookback = self.settings.lookback.as_secs().max(1);
        let now_s = unix_secs(now);
        let horizon = now_s.saturating_sub(self.settings.freshness.as_secs());
        // A first start acts as if the previous window had ended `lookback` ago, so it searches
        // `2 * lookback` back from the horizon.
        let cursor = self.store.poll_cursor().await?;
        let mut from = cursor.unwrap_or(horizon.saturating_sub(lookback));
        self.set_lag(now_s, cursor.unwrap_or(from));
        let max_catchup = self.settings.max_catchup.as_secs();
        if horizon > from + max_catchup {
            let resume = horizon - max_catchup;
            tracing::warn!(
                cursor = from,
                resume,
                skipped_seconds = resume - from,
                backfill = format!(
                    "ingester backfill --from {} --to {resume}",
                    from.saturating_sub(lookback)
                ),
                "the poller is further behind than tempo.max_catchup; skipping ahead (run the backfill command to fill the gap)"
            );
            self.metrics.gap_seconds.inc_by(resume - from);
            from = resume;
        }
        let end = horizon.min(from + lookback);
        let start = from.saturating_sub(lookback);
        if end <= from {
            // Nothing new is visible since the last window (two polls within one second).
            return Ok(PollOutcome::Idle);
        }
        let window = self.fetcher.fetch(Source::Poll, start, end).await?;
        match self.store.advance_poll_cursor(&self.owner, end).await? {
            CursorAdvance::At(cursor) => {
                self.set_lag(now_s, cursor);
                if cursor < horizon {
                    // At most max_catchup / lookback lines per outage: worth seeing at info.
                    tracing::info!(
                        start,
                        end,
                        behind_seconds = horizon - cursor,
                        accepted = window.traces.accepted,
                        "catching up after a gap"
                    );
                } else {
                    tracing::debug!(
                        start,
                        end,
                        fetched = window.fetched,
                        accepted = window.traces.accepted,
                        "window ingested"
                    );
                }
                Ok(PollOutcome::Polled {
                    window,
                    cursor,
                    caught_up: cursor >= horizon,
                })
            }
            CursorAdvance::NotLeader => {
                self.set_lease_held(false);
                tracing::warn!(owner = %self.owner, "lost the poller lease during a poll; another replica polls now");
                Ok(PollOutcome::LostLease)
            }
        }
    }

    fn set_lag(&self, now_s: u64, cursor: u64) {
        let lag = i64::try_from(now_s.saturating_sub(cursor)).unwrap_or(i64::MAX);
        self.metrics.cursor_lag.set(lag);
    }

    async fn hold_lease(&self) -> Result<bool, StoreError> {
        let held = self
            .store
            .acquire_lease(&self.owner, self.settings.lease_ttl)
            .await;
        let now = *held.as_ref().unwrap_or(&false);
        if self.set_lease_held(now) != now {
            tracing::info!(owner = %self.owner, held = now, "poller lease changed");
        }
        held
    }

    /// Records whether the lease is held and reports it on the gauge; returns what it was.
    fn set_lease_held(&self, held: bool) -> bool {
        self.metrics.lease_held.set(i64::from(held));
        self.lease_held.swap(held, Ordering::Relaxed)
    }

    /// Polls until `shutdown` is cancelled, then releases the lease so another replica takes
    /// over at once.
    ///
    /// A replica without the lease tries to take it every `lease_ttl / 3`, so it takes over
    /// within `lease_ttl + lease_ttl / 3` of the holder dying. The holder polls every
    /// `poll_interval`, back to back while catching up, renews the lease every `lease_ttl / 3`
    /// even while a long poll (many splits, retries) runs, and after a failed poll waits with
    /// exponential backoff (capped at `poll_interval`) before searching the same time again.
    pub async fn run(self, shutdown: CancellationToken) {
        let renew_every = self.settings.lease_ttl / 3;
        let first_backoff = self.settings.backoff.min(self.settings.poll_interval);
        let mut backoff = first_backoff;
        loop {
            let started = tokio::time::Instant::now();
            let polled = tokio::select! {
                () = shutdown.cancelled() => break,
                outcome = self.poll_once(SystemTime::now()) => outcome,
                () = self.keep_lease(renew_every) => unreachable!("keep_lease never returns"),
            };
            if polled.is_ok() {
                backoff = first_backoff;
            }
            let next = match polled {
                Ok(PollOutcome::Polled {
                    caught_up: false, ..
                }) => started,
                Ok(PollOutcome::Polled { .. } | PollOutcome::Idle) => {
                    started + self.settings.poll_interval
                }
                Ok(PollOutcome::Standby | PollOutcome::LostLease) => started + renew_every,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "poll failed; the same time is searched again");
                    let wait = backoff;
                    backoff = (backoff * 2).min(self.settings.poll_interval);
                    tokio::time::Instant::now() + wait
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep_until(next) => {}
                () = self.keep_lease(renew_every) => unreachable!("keep_lease never returns"),
            }
        }
        match self.release().await {
            Ok(true) => tracing::info!(owner = %self.owner, "poller lease released"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not release the poller lease; it expires by itself")
            }
        }
    }

    /// Renews the lease every `every` while this replica holds it; never returns. Run beside a
    /// poll or a wait, so the lease cannot lapse while the holder is busy or idle.
    async fn keep_lease(&self, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            if !self.lease_held.load(Ordering::Relaxed) {
                continue;
            }
            match self
                .store
                .renew_lease(&self.owner, self.settings.lease_ttl)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    self.set_lease_held(false);
                    tracing::warn!(owner = %self.owner, "the poller lease was lost; another replica polls now");
                }
                Err(e) => tracing::warn!(error = %e, "cannot renew the poller lease"),
            }
        }
    }
}
