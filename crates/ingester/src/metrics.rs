//! The ingester's own metrics (names are fixed: dashboards use them).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Where a trace came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Push,
    Poll,
    Backfill,
    /// Root spans received over OTLP.
    Otlp(Transport),
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Push => "push",
            Source::Poll => "poll",
            Source::Backfill => "backfill",
            Source::Otlp(Transport::Http) => "otlp_http",
            Source::Otlp(Transport::Grpc) => "otlp_grpc",
        }
    }

    /// Whether items came from a client (refusals are the client's to see, not logged).
    pub fn is_client(self) -> bool {
        matches!(self, Source::Push | Source::Otlp(_))
    }
}

/// How an OTLP request arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Http,
    Grpc,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Grpc => "grpc",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OtlpLabels {
    pub transport: &'static str,
    /// Spans: root, child or rejected. Requests: ok, partial, invalid, too_large,
    /// unsupported, unauthenticated, overloaded, unavailable.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceLabels {
    pub source: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

/// Registered once per service instance.
#[derive(Debug, Clone)]
pub struct IngestMetrics {
    /// `anomaly_ingest_traces_total{source, outcome}`; outcome is accepted, duplicate,
    /// rejected, partial, ignored or over_cardinality.
    pub traces: Family<TraceLabels, Counter>,
    /// `anomaly_tempo_requests_total{status}`: HTTP status, or timeout, connect, malformed,
    /// too_large.
    pub tempo_requests: Family<StatusLabels, Counter>,
    pub tempo_duration: Histogram,
    pub tempo_traces_fetched: Counter,
    pub window_splits: Counter,
    /// Windows still truncated at the smallest slice: some traces in them may be missing.
    pub windows_unsplittable: Counter,
    pub cursor_lag: Gauge,
    pub lease_held: Gauge,
    /// Seconds the poller skipped because the gap was longer than `max_catchup`.
    pub gap_seconds: Counter,
    /// The `limit` searches ask for: `tempo.limit`, or the lower cap Tempo enforces.
    pub search_limit: Gauge,
    /// `anomaly_tempo_cap_checks_total{result}`: suspect answers checked by splitting, by
    /// result (`clamped`: Tempo had cut the answer; `complete`).
    pub cap_checks: Family<ResultLabels, Counter>,
    /// `anomaly_otlp_spans_total{transport, outcome}`: root (valid root spans, stored or
    /// deduplicated as `anomaly_ingest_traces_total{source="otlp_*"}` says), child (valid
    /// non-root spans) or rejected (counted in the answer's partialSuccess).
    pub otlp_spans: Family<OtlpLabels, Counter>,
    /// `anomaly_otlp_requests_total{transport, outcome}`.
    pub otlp_requests: Family<OtlpLabels, Counter>,
    /// `anomaly_span_samples_total{source, outcome}`: non-root spans offered to span baselines,
    /// by what became of them (see [`SpanOutcome`]).
    pub span_samples: Family<TraceLabels, Counter>,
    /// `anomaly_span_names_rewritten_total{rule}`: span names changed on the way to their key,
    /// by the rule that changed them (`http_route`, `normalize[i]`).
    pub span_renames: Family<RuleLabels, Counter>,
    /// `anomaly_tempo_span_fetches_total{result}`: traces fetched by ID for span baselines
    /// (`ingester.tempo.fetch_spans`): queued, fetched, not_found, failed, dropped (the queue
    /// was full).
    pub span_fetches: Family<ResultLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub rule: String,
}

/// What became of a span offered to span baselines; each rule that drops spans has its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanOutcome {
    Accepted,
    Duplicate,
    /// A new key over `spans.max_keys_per_service`.
    OverCardinality,
    /// A kind not in `spans.kinds`.
    Kind,
    /// Matched `spans.ignore`.
    Ignored,
    /// A name (service or span, after renaming) empty or over `max_name_bytes`, or a start
    /// outside 2000..2100.
    Invalid,
}

impl SpanOutcome {
    pub const ALL: [SpanOutcome; 6] = [
        SpanOutcome::Accepted,
        SpanOutcome::Duplicate,
        SpanOutcome::OverCardinality,
        SpanOutcome::Kind,
        SpanOutcome::Ignored,
        SpanOutcome::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SpanOutcome::Accepted => "accepted",
            SpanOutcome::Duplicate => "duplicate",
            SpanOutcome::OverCardinality => "over_cardinality",
            SpanOutcome::Kind => "kind",
            SpanOutcome::Ignored => "ignored",
            SpanOutcome::Invalid => "invalid",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

impl ResultLabels {
    /// `clamped` (Tempo had cut the answer) or `complete`.
    fn of(clamped: bool) -> Self {
        let result = if clamped { "clamped" } else { "complete" };
        ResultLabels {
            result: result.to_owned(),
        }
    }
}

impl IngestMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = IngestMetrics {
            traces: Family::default(),
            tempo_requests: Family::default(),
            tempo_duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            tempo_traces_fetched: Counter::default(),
            window_splits: Counter::default(),
            windows_unsplittable: Counter::default(),
            cursor_lag: Gauge::default(),
            lease_held: Gauge::default(),
            gap_seconds: Counter::default(),
            search_limit: Gauge::default(),
            cap_checks: Family::default(),
            otlp_spans: Family::default(),
            otlp_requests: Family::default(),
            span_samples: Family::default(),
            span_renames: Family::default(),
            span_fetches: Family::default(),
        };
        registry.register(
            "ingest_traces",
            "Traces handled, by source (push, poll, backfill) and outcome",
            m.traces.clone(),
        );
        registry.register(
            "tempo_requests",
            "Tempo search requests by HTTP status (or timeout, connect, malformed, too_large)",
            m.tempo_requests.clone(),
        );
        registry.register(
            "tempo_request_duration_seconds",
            "Tempo search latency",
            m.tempo_duration.clone(),
        );
        registry.register(
            "tempo_traces_fetched",
            "Traces returned by Tempo searches (before dedup)",
            m.tempo_traces_fetched.clone(),
        );
        registry.register(
            "tempo_window_splits",
            "Search windows split in halves because Tempo truncated the answer",
            m.window_splits.clone(),
        );
        registry.register(
            "tempo_windows_unsplittable",
            "Windows still truncated at min_slice: traces in them may be missed",
            m.windows_unsplittable.clone(),
        );
        registry.register(
            "poller_cursor_lag_seconds",
            "Seconds between now and the end of the last window fully ingested",
            m.cursor_lag.clone(),
        );
        registry.register(
            "poller_lease_held",
            "1 while this replica holds the poller lease",
            m.lease_held.clone(),
        );
        registry.register(
            "poller_gap_seconds",
            "Seconds of history skipped because an outage outlasted max_catchup (backfill them)",
            m.gap_seconds.clone(),
        );
        registry.register(
            "tempo_search_limit",
            "The limit searches ask Tempo for: tempo.limit, or the lower max_result_limit Tempo enforces",
            m.search_limit.clone(),
        );
        // Both series exist from the start at 0, so `increase()` sees the first cut.
        for clamped in [true, false] {
            drop(m.cap_checks.get_or_create(&ResultLabels::of(clamped)));
        }
        registry.register(
            "tempo_cap_checks",
            "Answers smaller than the limit checked by splitting, by result (clamped: Tempo had cut the answer at a cap it did not report)",
            m.cap_checks.clone(),
        );
        registry.register(
            "otlp_spans",
            "OTLP spans received, by transport (http, grpc) and outcome (root, child, rejected)",
            m.otlp_spans.clone(),
        );
        registry.register(
            "otlp_requests",
            "OTLP export requests by transport and outcome (ok, partial, invalid, too_large, unsupported, unauthenticated, overloaded, unavailable)",
            m.otlp_requests.clone(),
        );
        registry.register(
            "span_samples",
            "Non-root spans offered to span baselines, by source and outcome (accepted, duplicate, over_cardinality, kind, ignored, invalid)",
            m.span_samples.clone(),
        );
        registry.register(
            "tempo_span_fetches",
            "Traces fetched from Tempo by ID for span baselines (ingester.tempo.fetch_spans), by result: queued, fetched, not_found, failed, dropped (queue full)",
            m.span_fetches.clone(),
        );
        registry.register(
            "span_names_rewritten",
            "Span names changed on the way to their key, by rule (http_route, normalize[i])",
            m.span_renames.clone(),
        );
        m
    }

    pub fn span_samples(&self, source: Source, outcome: SpanOutcome, n: u64) {
        if n > 0 {
            self.span_samples
                .get_or_create(&TraceLabels {
                    source: source.as_str().to_owned(),
                    outcome: outcome.as_str().to_owned(),
                })
                .inc_by(n);
        }
    }

    /// The counter of one `anomaly_tempo_span_fetches_total` result (created, so exported).
    pub fn span_fetch(&self, result: &str) -> Counter {
        self.span_fetches
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .clone()
    }

    pub fn span_renamed(&self, rule: &str, n: u64) {
        if n > 0 {
            self.span_renames
                .get_or_create(&RuleLabels {
                    rule: rule.to_owned(),
                })
                .inc_by(n);
        }
    }

    pub fn otlp_spans(&self, transport: Transport, outcome: &'static str, n: u64) {
        if n > 0 {
            let labels = OtlpLabels {
                transport: transport.as_str(),
                outcome,
            };
            self.otlp_spans.get_or_create(&labels).inc_by(n);
        }
    }

    pub fn otlp_request(&self, transport: Transport, outcome: &'static str) {
        let labels = OtlpLabels {
            transport: transport.as_str(),
            outcome,
        };
        self.otlp_requests.get_or_create(&labels).inc();
    }

    pub fn count(&self, source: Source, outcome: &str, n: u64) {
        if n > 0 {
            self.traces
                .get_or_create(&TraceLabels {
                    source: source.as_str().to_owned(),
                    outcome: outcome.to_owned(),
                })
                .inc_by(n);
        }
    }

    pub fn cap_check(&self, clamped: bool) {
        self.cap_checks
            .get_or_create(&ResultLabels::of(clamped))
            .inc();
    }

    pub fn tempo_request(&self, status: &str) {
        self.tempo_requests
            .get_or_create(&StatusLabels {
                status: status.to_owned(),
            })
            .inc();
    }
}
