//! What push, poll and backfill share: validate traces, store the samples, count outcomes.

use std::ops::AddAssign;
use std::sync::Arc;
use std::time::Duration;

use anomaly_core::{Bucketer, NameRules};
use anomaly_runtime::error::ErrorCode;
use anomaly_runtime::telemetry::LogEvery;
use anomaly_store::{IngestItem, IngestSettings, Store, StoreError};
use serde_json::Value;

use crate::metrics::{IngestMetrics, Source, Transport};
use crate::otlp::ChildSpan;
use crate::trace::{self, IgnoreRules, ItemError, Parsed};

/// The key cap's warning, at most every 10 s (per process: every batch over the cap would
/// repeat it).
static KEY_CAP_WARNING: LogEvery = LogEvery::new(Duration::from_secs(10));

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

/// Validation and storage of traces; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Ingest {
    store: Store,
    settings: IngestSettings,
    bucketer: Bucketer,
    ignore: Arc<IgnoreRules>,
    /// `max_name_bytes`: the checker's limit, so no window is kept for a name it would refuse.
    names: NameRules,
    metrics: IngestMetrics,
}

impl Ingest {
    pub(crate) fn new(
        store: Store,
        settings: IngestSettings,
        bucketer: Bucketer,
        ignore: IgnoreRules,
        names: NameRules,
        metrics: IngestMetrics,
    ) -> Self {
        Ingest {
            store,
            settings,
            bucketer,
            ignore: Arc::new(ignore),
            names,
            metrics,
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
        let stored = self.store.ingest(items, &self.settings).await?;
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

    /// The span hook: valid non-root spans received over OTLP, called before the request is
    /// acknowledged (so a store error here is the client's 503 too). Span baselines will keep
    /// them; until then they are only counted (`anomaly_otlp_spans_total{outcome="child"}`).
    pub(crate) async fn child_spans(
        &self,
        _transport: Transport,
        _spans: &[ChildSpan<'_>],
    ) -> Result<(), StoreError> {
        Ok(())
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
