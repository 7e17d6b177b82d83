//! What push, poll and backfill share: validate traces, store the samples, count outcomes.

use std::ops::AddAssign;
use std::sync::Arc;
use std::time::Duration;

use anomaly_core::spans::Renamed;
use anomaly_core::{BaselineKey, Bucketer, NameRules, SpanKind, SpanRules, UnixNanos};
use anomaly_runtime::error::ErrorCode;
use anomaly_runtime::telemetry::LogEvery;
use anomaly_store::{
    IngestItem, IngestSettings, SampleKind, SpanItem, SpanSettings, Store, StoreError,
};
use anomaly_traces::otlp::string_attribute;
use serde_json::Value;

use crate::detect::{Detector, Sample};
use crate::metrics::{IngestMetrics, Source, SpanOutcome};
use crate::otlp::ChildSpan;
use crate::trace::{self, IgnoreRules, ItemError, Parsed};

/// The key cap's warning, at most every 10 s (per process: every batch over the cap would
/// repeat it).
static KEY_CAP_WARNING: LogEvery = LogEvery::new(Duration::from_secs(10));
/// The same for the span key cap.
static SPAN_CAP_WARNING: LogEvery = LogEvery::new(Duration::from_secs(10));

/// What one batch of traces did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub partial: u64,
    pub ignored: u64,
    pub over_cardinality: u64,
    /// Refused items by index in the batch.
    pub errors: Vec<(usize, ItemError)>,
}

/// Adds the counts of another batch (the refused items stay with their own batch).
impl AddAssign<&BatchReport> for BatchReport {
    fn add_assign(&mut self, other: &BatchReport) {
        self.accepted += other.accepted;
        self.duplicates += other.duplicates;
        self.rejected += other.rejected;
        self.partial += other.partial;
        self.ignored += other.ignored;
        self.over_cardinality += other.over_cardinality;
    }
}

/// The rules samples are held to before they are stored.
#[derive(Debug, Clone)]
pub(crate) struct IngestRules {
    pub bucketer: Bucketer,
    /// `ingester.ignore`, for roots.
    pub ignore: IgnoreRules,
    /// `max_name_bytes`: the checker's limit, so no window is kept for a name it would refuse.
    pub names: NameRules,
    /// `spans:`, for span baselines.
    pub spans: SpanRules,
}

/// Validation and storage of traces; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Ingest {
    store: Store,
    settings: IngestSettings,
    bucketer: Bucketer,
    ignore: Arc<IgnoreRules>,
    names: NameRules,
    spans: SpanRules,
    metrics: IngestMetrics,
    detector: Detector,
}

/// What the span hook did with one batch of spans.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SpanReport {
    /// By [`SpanOutcome`], in the order of [`SpanOutcome::ALL`].
    pub counts: [u64; 6],
}

impl SpanReport {
    pub(crate) fn get(&self, outcome: SpanOutcome) -> u64 {
        self.counts[outcome as usize]
    }

    fn add(&mut self, outcome: SpanOutcome, n: u64) {
        self.counts[outcome as usize] += n;
    }
}

impl Ingest {
    pub(crate) fn new(
        store: Store,
        settings: IngestSettings,
        rules: IngestRules,
        metrics: IngestMetrics,
        detector: Detector,
    ) -> Self {
        Ingest {
            store,
            settings,
            bucketer: rules.bucketer,
            ignore: Arc::new(rules.ignore),
            names: rules.names,
            spans: rules.spans,
            metrics,
            detector,
        }
    }

    /// Validates every trace and stores the valid ones in one atomic-per-trace call.
    ///
    /// Partial traces are refused (`PARTIAL_TRACE`) when pushed and skipped when polled; either
    /// way they are not marked seen, so the complete trace is ingested once it is known. On a
    /// Redis error nothing is reported as stored and the batch may be retried whole: traces
    /// that did get stored then count as duplicates.
    pub(crate) async fn ingest(
        &self,
        source: Source,
        traces: &[Value],
    ) -> Result<BatchReport, StoreError> {
        let mut report = BatchReport::default();
        let mut items = Vec::with_capacity(traces.len());
        for (index, value) in traces.iter().enumerate() {
            match trace::parse_with(value, &self.bucketer, &self.ignore, self.names) {
                Ok(Parsed::Sample(item)) => items.push(item),
                Ok(Parsed::Ignored) => report.ignored += 1,
                Ok(Parsed::Partial) => {
                    report.partial += 1;
                    if source.is_client() {
                        report.rejected += 1;
                        report.errors.push((
                            index,
                            ItemError::new(
                                ErrorCode::PartialTrace,
                                format!(
                                    "rootServiceName is {:?}: the root span has not arrived, so \
                                     the names and duration are not the trace's; send it once \
                                     the trace is complete",
                                    trace::PARTIAL_ROOT
                                ),
                            ),
                        ));
                    }
                }
                Err(e) => {
                    report.rejected += 1;
                    report.errors.push((index, e));
                }
            }
        }
        if !source.is_client()
            && let Some((index, first)) = report.errors.first()
        {
            // One line per batch, not per trace: a Tempo full of odd traces must not flood logs.
            tracing::warn!(
                source = source.as_str(),
                invalid = report.errors.len(),
                first_index = index,
                first_code = first.code.as_str(),
                first_error = %first.message,
                "tempo returned traces that cannot become samples; skipped"
            );
        }
        self.store(source, &items, report).await
    }

    /// Stores validated samples and completes `report` (which already counts what was refused,
    /// ignored or partial before storage), counting every outcome in the metrics.
    pub(crate) async fn store(
        &self,
        source: Source,
        items: &[IngestItem],
        mut report: BatchReport,
    ) -> Result<BatchReport, StoreError> {
        let samples: Vec<Sample<'_>> = items.iter().map(Sample::from).collect();
        // History is not news: a backfill is stored, not judged (its verdicts would fill the
        // feed and the counters with anomalies of last week, judged against today's baselines).
        let judged = match source {
            Source::Backfill => None,
            _ => self.detector.judge(SampleKind::Root, &samples).await,
        };
        let skip = self.detector.skip_window(judged.as_deref());
        let (stored, outcomes) = self
            .store
            .ingest_detailed(items, &self.settings, &skip)
            .await?;
        if let Some(judged) = &judged {
            self.detector
                .record(SampleKind::Root, &samples, judged, &outcomes)
                .await;
        }
        report.accepted = stored.accepted;
        report.duplicates = stored.duplicates;
        report.over_cardinality = stored.over_cardinality;

        let m = &self.metrics;
        m.count(source, "accepted", report.accepted);
        m.count(source, "duplicate", report.duplicates);
        // A pushed partial trace is refused, but counted once, as partial.
        let refused_partial = if source.is_client() {
            report.partial
        } else {
            0
        };
        m.count(source, "rejected", report.rejected - refused_partial);
        m.count(source, "partial", report.partial);
        m.count(source, "ignored", report.ignored);
        m.count(source, "over_cardinality", report.over_cardinality);
        if report.over_cardinality > 0 {
            self.log_cap(source, report.over_cardinality);
        }
        Ok(report)
    }

    /// The span hook: valid non-root spans (received over OTLP, or fetched from Tempo with
    /// `ingester.tempo.fetch_spans`), called before the request is acknowledged (so a store
    /// error here is the client's 503 too). Spans of the kinds in `spans.kinds` are renamed by
    /// the `spans:` rules, bucketed by their own start, and stored in the span key space,
    /// deduplicated per span; every span is counted by outcome in
    /// `anomaly_span_samples_total`.
    pub(crate) async fn child_spans(
        &self,
        source: Source,
        spans: &[ChildSpan<'_>],
    ) -> Result<SpanReport, StoreError> {
        let mut report = SpanReport::default();
        if !self.spans.enabled() || spans.is_empty() {
            return Ok(report);
        }
        let mut items = Vec::with_capacity(spans.len());
        let mut renamed: Vec<(Renamed, u64)> = Vec::new();
        for child in spans {
            match self.span_item(child) {
                Ok((item, how)) => {
                    if how != Renamed::No {
                        match renamed.iter_mut().find(|(r, _)| *r == how) {
                            Some((_, n)) => *n += 1,
                            None => renamed.push((how, 1)),
                        }
                    }
                    items.push(item);
                }
                Err(outcome) => report.add(outcome, 1),
            }
        }
        let settings = SpanSettings {
            window_size: self.settings.window_size,
            dedup_ttl: self.settings.dedup_ttl,
            retention: self.settings.retention,
            max_keys_per_service: self.spans.max_keys_per_service(),
        };
        let samples: Vec<Sample<'_>> = items.iter().map(Sample::from).collect();
        let judged = self.detector.judge(SampleKind::Span, &samples).await;
        let skip = self.detector.skip_window(judged.as_deref());
        let (stored, outcomes) = self.store.ingest_spans(&items, &settings, &skip).await?;
        if let Some(judged) = &judged {
            self.detector
                .record(SampleKind::Span, &samples, judged, &outcomes)
                .await;
        }
        report.add(SpanOutcome::Accepted, stored.accepted);
        report.add(SpanOutcome::Duplicate, stored.duplicates);
        report.add(SpanOutcome::OverCardinality, stored.over_cardinality);
        for outcome in SpanOutcome::ALL {
            self.metrics
                .span_samples(source, outcome, report.get(outcome));
        }
        for (how, n) in renamed {
            let rule = match how {
                Renamed::HttpRoute => "http_route".to_owned(),
                Renamed::Rewrite(i) => format!("normalize[{i}]"),
                Renamed::No => continue,
            };
            self.metrics.span_renamed(&rule, n);
        }
        if stored.over_cardinality > 0 && SPAN_CAP_WARNING.ready() {
            tracing::warn!(
                source = source.as_str(),
                dropped = stored.over_cardinality,
                max_keys_per_service = self.spans.max_keys_per_service(),
                "spans for new span keys dropped: a service reached spans.max_keys_per_service; \
                 add a spans.normalize rule for names with IDs in them, or spans.ignore \
                 (logged at most every 10s, see \
                 anomaly_span_samples_total{{outcome=\"over_cardinality\"}})"
            );
        }
        Ok(report)
    }

    /// One span through the `spans:` rules, or the outcome that dropped it.
    fn span_item(&self, child: &ChildSpan<'_>) -> Result<(SpanItem, Renamed), SpanOutcome> {
        let span = child.span;
        if !self.spans.keeps(SpanKind::from_otlp(span.kind)) {
            return Err(SpanOutcome::Kind);
        }
        let route = string_attribute(&span.attributes, "http.route");
        let method = string_attribute(&span.attributes, "http.request.method")
            .or_else(|| string_attribute(&span.attributes, "http.method"));
        let named = self.spans.name(&span.name, route, method);
        let start = UnixNanos::new(span.start_time_unix_nano).map_err(|_| SpanOutcome::Invalid)?;
        let bucket = self.bucketer.bucket(start.to_datetime());
        let key = BaselineKey::with_rules(
            child.service,
            named.name.as_ref(),
            bucket.hour,
            bucket.day_type,
            self.names,
        )
        .map_err(|_| SpanOutcome::Invalid)?;
        if self.spans.ignored(child.service, &named.name) {
            return Err(SpanOutcome::Ignored);
        }
        let span_id = <[u8; 8]>::try_from(span.span_id.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| SpanOutcome::Invalid)?;
        Ok((
            SpanItem {
                trace_id: child.trace_id,
                span_id,
                key,
                duration: child.duration,
                start_ms: start.as_millis(),
            },
            named.renamed,
        ))
    }

    /// The rules a sample is held to: time buckets, ignore rules and names, as push and poll
    /// apply them.
    pub(crate) fn rules(&self) -> (&Bucketer, &IgnoreRules, NameRules) {
        (&self.bucketer, &self.ignore, self.names)
    }

    fn log_cap(&self, source: Source, dropped: u64) {
        if KEY_CAP_WARNING.ready() {
            tracing::warn!(
                source = source.as_str(),
                dropped,
                max_keys = self.settings.max_keys,
                "traces for new keys dropped: the key cap (ingester.max_keys) is reached; \
                 existing keys keep working (logged at most every 10s, see \
                 anomaly_ingest_traces_total{{outcome=\"over_cardinality\"}})"
            );
        }
    }
}
