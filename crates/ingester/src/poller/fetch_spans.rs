//! `ingester.tempo.fetch_spans`: span baselines for deployments whose spans reach only Tempo.
//!
//! After a polled window's roots are stored, each complete trace seen for the first time is
//! queued; a worker beside the poller fetches it by ID ([`anomaly_traces::tempo::TraceFetcher`],
//! with the poller's tenant, auth, timeout and retries), validates its spans as OTLP ingest does
//! ([`crate::otlp::spans::convert`]) and hands the non-root ones to the span hook
//! ([`Ingest::child_spans`]). The poller never waits for it:
//! - **Once per trace**: windows overlap, so a trace comes back several times; a bounded memo
//!   of trace IDs (`memo`) lets it be fetched once. Span dedup in Redis would make a second
//!   fetch harmless, but it costs Tempo a request.
//! - **Bounded cost**: at most `rate` fetches start per second and `concurrency` run at once;
//!   at most `max_pending` wait. A trace that finds the queue full is dropped for now and
//!   forgotten, so a later window that still returns it offers it again.
//! - **Failures** (Tempo down, not found yet, Redis) are counted, logged at most every 10 s
//!   and the trace forgotten, so a later window offers it again; roots are already stored.
//! - Partial traces (root not yet in Tempo), ignored roots and invalid ones are not fetched:
//!   the trace is fetched once search lists it complete. Spans that reach Tempo after the
//!   fetch are not seen.

use prometheus_client::metrics::counter::Counter;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anomaly_core::TraceId;
use anomaly_runtime::telemetry::LogEvery;
use anomaly_traces::tempo::{FetchSpans, TraceFetcher};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use crate::ingest::Ingest;
use crate::metrics::{IngestMetrics, Source};
use crate::otlp::spans::{Rules, convert};
use crate::trace::{self, Parsed};

/// The failure warning, at most every 10 s.
static FAILURE_WARNING: LogEvery = LogEvery::new(Duration::from_secs(10));

/// Counts since start (all clones of a client share them): the outcomes are
/// `anomaly_tempo_span_fetches_total{result}`'s series.
#[derive(Debug, Default)]
struct Counters {
    queued: Counter,
    fetched: Counter,
    not_found: Counter,
    failed: Counter,
    dropped: Counter,
    spans: Counter,
}

impl Counters {
    fn registered(metrics: &IngestMetrics) -> Self {
        let result = |r: &str| metrics.span_fetch(r);
        Counters {
            queued: result("queued"),
            fetched: result("fetched"),
            not_found: result("not_found"),
            failed: result("failed"),
            dropped: result("dropped"),
            spans: Counter::default(),
        }
    }
}

/// What span fetching has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpanFetchStats {
    /// Traces queued to be fetched.
    pub queued: u64,
    /// Traces fetched whose spans went to the span hook.
    pub fetched: u64,
    /// Traces Tempo did not find by ID (yet).
    pub not_found: u64,
    /// Fetches that failed (Tempo, after retries, or Redis).
    pub failed: u64,
    /// Newly seen traces not queued because `max_pending` were waiting.
    pub dropped: u64,
    /// Non-root spans handed to the span hook.
    pub spans: u64,
    /// Trace-by-ID requests sent, retries included.
    pub requests: u64,
}

impl SpanFetchStats {
    /// Queued traces not finished yet.
    pub fn pending(&self) -> u64 {
        self.queued - self.fetched - self.not_found - self.failed
    }
}

/// Span fetching of one Tempo client; cheap to clone.
#[derive(Debug, Clone)]
pub struct SpanFetch {
    settings: FetchSpans,
    fetcher: TraceFetcher,
    memo: moka::sync::Cache<TraceId, ()>,
    counters: Arc<Counters>,
    /// Started by the first window that offers traces (it brings the span hook).
    queue: Arc<OnceLock<mpsc::Sender<TraceId>>>,
}

impl SpanFetch {
    pub(crate) fn new(
        settings: &FetchSpans,
        fetcher: TraceFetcher,
        metrics: &IngestMetrics,
    ) -> Self {
        SpanFetch {
            memo: moka::sync::Cache::builder()
                .max_capacity(settings.memo)
                // Long enough for every window that returns a trace; bounded anyway.
                .time_to_live(Duration::from_secs(3600))
                .build(),
            settings: settings.clone(),
            fetcher,
            counters: Arc::new(Counters::registered(metrics)),
            queue: Arc::new(OnceLock::new()),
        }
    }

    pub fn stats(&self) -> SpanFetchStats {
        let c = &self.counters;
        SpanFetchStats {
            queued: c.queued.get(),
            fetched: c.fetched.get(),
            not_found: c.not_found.get(),
            failed: c.failed.get(),
            dropped: c.dropped.get(),
            spans: c.spans.get(),
            requests: self.fetcher.requests(),
        }
    }

    /// Queues the complete, valid, not ignored traces of a polled window that were not
    /// fetched before. Never waits.
    pub(crate) fn offer(&self, traces: &[Value], ingest: &Ingest) {
        let queue = self.queue.get_or_init(|| self.start(ingest.clone()));
        let (bucketer, ignore, names) = ingest.rules();
        for value in traces {
            let Ok(Parsed::Sample(item)) = trace::parse_with(value, bucketer, ignore, names) else {
                continue;
            };
            let id = item.trace_id;
            if !self.memo.entry(id).or_insert(()).is_fresh() {
                continue;
            }
            match queue.try_send(id) {
                Ok(()) => {
                    self.counters.queued.inc();
                }
                Err(_) => {
                    self.memo.invalidate(&id);
                    self.counters.dropped.inc();
                }
            }
        }
    }

    /// The worker: starts at most `rate` fetches a second, `concurrency` at a time, until
    /// every client clone (and so the queue) is gone.
    fn start(&self, ingest: Ingest) -> mpsc::Sender<TraceId> {
        let (tx, mut rx) = mpsc::channel::<TraceId>(self.settings.max_pending);
        let worker = Worker {
            fetcher: self.fetcher.clone(),
            memo: self.memo.clone(),
            counters: self.counters.clone(),
            ingest,
        };
        let gap = Duration::from_secs(1) / self.settings.rate.max(1);
        let permits = Arc::new(Semaphore::new(self.settings.concurrency.max(1)));
        tokio::spawn(async move {
            let mut next = Instant::now();
            while let Some(id) = rx.recv().await {
                tokio::time::sleep_until(next).await;
                next = next.max(Instant::now()) + gap;
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let worker = worker.clone();
                tokio::spawn(async move {
                    worker.fetch(id).await;
                    drop(permit);
                });
            }
        });
        tx
    }
}

#[derive(Debug, Clone)]
struct Worker {
    fetcher: TraceFetcher,
    memo: moka::sync::Cache<TraceId, ()>,
    counters: Arc<Counters>,
    ingest: Ingest,
}

impl Worker {
    #[tracing::instrument(name = "fetch spans", level = "debug", skip_all, fields(trace_id = %id))]
    async fn fetch(&self, id: TraceId) {
        let c = &self.counters;
        let error = match self.fetcher.fetch(&id).await {
            Ok(Some(resource_spans)) => {
                let request = ExportTraceServiceRequest { resource_spans };
                let (bucketer, ignore, names) = self.ingest.rules();
                let converted = convert(
                    &request,
                    Rules {
                        bucketer,
                        ignore,
                        names,
                    },
                );
                match self
                    .ingest
                    .child_spans(Source::Poll, &converted.children)
                    .await
                {
                    Ok(_) => {
                        c.fetched.inc();
                        c.spans.inc_by(converted.children.len() as u64);
                        return;
                    }
                    Err(e) => e.to_string(),
                }
            }
            Ok(None) => {
                // Search listed it, so it will be there: a later window offers it again.
                self.memo.invalidate(&id);
                c.not_found.inc();
                return;
            }
            Err(e) => e.to_string(),
        };
        self.memo.invalidate(&id);
        c.failed.inc();
        if FAILURE_WARNING.ready() {
            tracing::warn!(
                trace_id = %id,
                error = %error,
                failed = c.failed.get(),
                "fetching a trace's spans from tempo failed; a later window offers it again \
                 (logged at most every 10s)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use anomaly_store::Store;
    use tracegen::tempo::{FakeTempo, Fault, RunningTempo, Trace};

    use super::*;
    use crate::{Config, Ingester, PollOutcome, Poller, Section};

    /// 2026-11-25T06:00:00Z.
    const T0: u64 = 1_795_586_400;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn config(test: &str, tempo: &str) -> Config {
        let mut c: Config = anomaly_runtime::load::<Section>(None).expect("defaults load");
        c.common.redis = anomaly_testkit::redis_config(&anomaly_testkit::shared_redis_url(), test);
        c.common.stats.window_size = 100_000;
        let t = &mut c.service.tempo;
        t.url = tempo.to_owned();
        t.retries = 1;
        t.backoff = Duration::from_millis(5);
        t.max_backoff = Duration::from_millis(5);
        t.timeout = Duration::from_secs(5);
        t.fetch_spans.enabled = true;
        t.fetch_spans.rate = 10_000;
        c.service.otlp.grpc_listen = None;
        c
    }

    fn trace(n: u64, start_s: u64) -> Trace {
        Trace::new(
            format!("{:032x}", 0xabc0_0000 + n),
            "checkout",
            "POST /pay",
            start_s * 1_000_000_000 + n * 1_000_000,
            200 + n as u32,
        )
    }

    /// Waits until every queued fetch has finished.
    async fn settled(poller: &Poller) -> SpanFetchStats {
        let spans = poller.span_fetch().expect("fetch_spans is on");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let stats = spans.stats();
            if stats.pending() == 0 {
                return stats;
            }
            assert!(std::time::Instant::now() < deadline, "{stats:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Samples in every span window, and the span names seen.
    async fn span_windows(store: &Store) -> (usize, Vec<String>) {
        let spans = store.spans();
        let (mut keys, mut cursor) = (Vec::new(), 0);
        loop {
            let (next, step) = spans.scan_keys(cursor, 1000).await.unwrap();
            keys.extend(step);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        let samples = if keys.is_empty() {
            0
        } else {
            spans
                .read_windows(&keys)
                .await
                .unwrap()
                .iter()
                .map(Vec::len)
                .sum()
        };
        let mut names: Vec<String> = keys.iter().map(|k| k.endpoint().to_owned()).collect();
        names.sort();
        names.dedup();
        (samples, names)
    }

    /// Non-root spans and CLIENT spans (the span kinds kept by default besides SERVER, which
    /// only the root is) of a trace as the fake Tempo serves it.
    fn shape(tempo: &FakeTempo, trace: &Trace) -> (u64, u64) {
        let spans: Vec<_> = tempo
            .spans_of(&trace.trace_id)
            .unwrap()
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans)
            .collect();
        assert!(spans.len() >= 4, "{}", spans.len());
        let clients = spans.iter().filter(|s| s.kind == 3).count();
        ((spans.len() - 1) as u64, clients as u64)
    }

    fn polled(outcome: &PollOutcome) -> u64 {
        match outcome {
            PollOutcome::Polled { window, .. } => window.traces.accepted,
            other => panic!("expected a polled window, got {other:?}"),
        }
    }

    async fn start(test: &str) -> (RunningTempo, Ingester, Poller) {
        let tempo = FakeTempo::start().await;
        tempo.set_now(at(T0 + 600));
        let ing = Ingester::new(config(test, &tempo.url())).unwrap();
        let poller = ing.poller().unwrap();
        (tempo, ing, poller)
    }

    /// A fake Tempo holding 10-span traces (a SERVER root, INTERNAL steps, CLIENT calls):
    /// polling stores the roots, fetches each trace once by ID, and its CLIENT spans
    /// (the default span kinds) become span windows; overlapping windows fetch nothing again.
    #[tokio::test]
    async fn polled_traces_feed_span_windows_once() {
        let (tempo, ing, poller) = start("fetch-spans").await;
        // In both this window ([T0+330, T0+570]) and the next ([T0+450, T0+585]).
        tempo.upsert_all((0..20).map(|n| trace(n, T0 + 500)));
        // Partial traces are not fetched: their root, and so their names, are not known yet.
        tempo.upsert(Trace::partial("fedcba", (T0 + 500) * 1_000_000_000, 50));

        let (children, clients) = shape(&tempo, &trace(0, T0 + 500));

        let first = poller.poll_once(tempo.now()).await.unwrap();
        assert_eq!(polled(&first), 20);
        let stats = settled(&poller).await;
        assert_eq!(
            stats,
            SpanFetchStats {
                queued: 20,
                fetched: 20,
                spans: 20 * children,
                requests: 20,
                ..SpanFetchStats::default()
            }
        );
        let (samples, names) = span_windows(ing.store()).await;
        assert_eq!(samples as u64, 20 * clients, "the CLIENT spans, once each");
        assert!(names.iter().any(|n| n == "SELECT carts"), "{names:?}");
        assert!(
            !names.iter().any(|n| n == "checkout.handle"),
            "INTERNAL: {names:?}"
        );
        // Roots stay root samples only.
        assert!(!names.iter().any(|n| n == "POST /pay"), "{names:?}");

        // The next window overlaps this one: the same traces come back and are not fetched.
        tempo.advance(Duration::from_secs(15));
        let second = poller.poll_once(tempo.now()).await.unwrap();
        let PollOutcome::Polled { window, .. } = &second else {
            panic!("{second:?}");
        };
        assert_eq!((window.fetched, window.traces.duplicates), (21, 20));
        let again = settled(&poller).await;
        assert_eq!((again.queued, again.requests), (20, 20));
        assert_eq!(span_windows(ing.store()).await.0 as u64, 20 * clients);
    }

    /// Tempo failing trace by ID neither stops the poller nor loses roots; the failed traces
    /// are fetched when a later window returns them and Tempo answers again.
    #[tokio::test]
    async fn failed_fetches_are_counted_and_offered_again() {
        let (tempo, ing, poller) = start("fetch-spans-fail").await;
        tempo.upsert_all((0..5).map(|n| trace(n, T0 + 500)));
        let (_, clients) = shape(&tempo, &trace(0, T0 + 500));
        tempo.fail_lookups_until_cleared(Fault::unavailable());
        assert_eq!(polled(&poller.poll_once(tempo.now()).await.unwrap()), 5);
        let stats = settled(&poller).await;
        assert_eq!((stats.queued, stats.failed, stats.fetched), (5, 5, 0));
        assert_eq!(stats.requests, 10, "one retry each");
        assert_eq!(span_windows(ing.store()).await.0, 0);

        tempo.clear_faults();
        tempo.advance(Duration::from_secs(15));
        poller.poll_once(tempo.now()).await.unwrap();
        let stats = settled(&poller).await;
        assert_eq!((stats.queued, stats.failed, stats.fetched), (10, 5, 5));
        assert_eq!(span_windows(ing.store()).await.0 as u64, 5 * clients);
    }

    /// The cost of fetch_spans per trace against the fake Tempo: wall time from the poll to
    /// the last span stored, and trace-by-ID requests per trace. `FETCH_SPANS_TRACES` sets
    /// the number of traces (default 200).
    #[tokio::test]
    async fn cost_per_trace() {
        let n: u64 = std::env::var("FETCH_SPANS_TRACES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200);
        let (tempo, ing, poller) = start("fetch-spans-cost").await;
        // Spread over the window, so that it is not split.
        tempo.upsert_all((0..n).map(|i| trace(i, T0 + 340 + i * 200 / n)));
        let (_, clients) = shape(&tempo, &trace(0, T0 + 340));
        let started = std::time::Instant::now();
        let outcome = poller.poll_once(tempo.now()).await.unwrap();
        let PollOutcome::Polled { window, .. } = &outcome else {
            panic!("{outcome:?}");
        };
        // A window over `limit` traces is split: its first searches find no new traces.
        let roots = window.traces.accepted;
        let poll = started.elapsed();
        let stats = settled(&poller).await;
        let all = started.elapsed();
        assert_eq!(roots, n);
        assert_eq!(stats.fetched, roots);
        assert_eq!(stats.requests, stats.fetched, "one request per trace");
        assert_eq!(span_windows(ing.store()).await.0 as u64, roots * clients);
        eprintln!(
            "fetch_spans cost: {roots} traces of 10 spans, poll (roots) {poll:.1?}, spans done \
             {all:.1?}: {:.2} ms per trace, {:.2} requests per trace",
            (all - poll).as_secs_f64() * 1000.0 / roots as f64,
            stats.requests as f64 / roots as f64
        );
    }
}
