//! Judge on ingest: every sample stored through push, poll or OTLP is judged against its
//! bucket's baseline as it stood before the sample, with the checker's rule, fallback chain and
//! overrides (`Verdict::judge` in anomaly-core, the one implementation) and the checker's
//! cache (anomaly-runtime's `BaselineCache`: a hot key costs no Redis round trip). Anomalies go
//! to the feed (the `anomalies` stream) and, for roots, to `anomaly_detected_total` with the
//! trace ID as exemplar; every judged root counts in `anomaly_judged_total`.
//!
//! Detection never costs an accepted trace: the verdicts are computed before the ingest
//! script runs (a failed baseline read leaves the batch unjudged, counted and logged), and the
//! feed is written after it (a failed write is counted and logged); neither fails the ingest.
//! Only samples the store accepted are counted and recorded, so a re-sent batch is judged
//! once.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anomaly_core::{
    BaselineKey, Baselines, DurationMs, Overrides, StatsConfig, Status, TraceId, Verdict,
};
use anomaly_runtime::cache::{BaselineCache, CacheMetrics, CacheSettings};
use anomaly_runtime::metrics::{CommonMetrics, MetricsBuilder};
use anomaly_runtime::telemetry::LogEvery;
use anomaly_store::{
    FeedEntry, FeedSettings, IngestItem, ItemOutcome, SampleKind, SpanItem, Store,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Deserialize;

use crate::detect_metrics::DetectMetrics;

/// A failure to judge or to record, at most every 10 s.
static FAILURE_WARNING: LogEvery = LogEvery::new(Duration::from_secs(10));

/// `ingester.detect`: judge on ingest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectSection {
    /// Judge every stored sample (roots, and spans with span baselines).
    pub enabled: bool,
    /// The baselines judged against, cached as the checker caches them.
    pub cache: CacheSettings,
    /// Anomalies kept in the feed, about (`XADD MAXLEN ~`).
    pub feed_max_len: u64,
    /// Anomalies older than this leave the feed (`XTRIM MINID ~`); 0s keeps them until
    /// `feed_max_len` pushes them out.
    #[serde(with = "humantime_serde")]
    pub feed_retention: Duration,
    /// Services with their own label on `anomaly_judged_total` and `anomaly_detected_total`;
    /// the rest count as `other`.
    pub max_service_labels: usize,
    /// Endpoints per labelled service with their own label on `anomaly_detected_total`.
    pub max_endpoint_labels: usize,
}

impl Default for DetectSection {
    fn default() -> Self {
        DetectSection {
            enabled: true,
            cache: CacheSettings::default(),
            feed_max_len: 100_000,
            feed_retention: Duration::from_secs(7 * 86_400),
            max_service_labels: 200,
            max_endpoint_labels: 50,
        }
    }
}

impl DetectSection {
    pub(crate) fn validate(&self) -> Result<(), anomaly_core::ConfigError> {
        let err = |key: &str, msg: &str| {
            Err(anomaly_core::ConfigError::new(
                format!("ingester.detect.{key}"),
                msg,
            ))
        };
        if self.cache.ttl > Duration::from_secs(3600) {
            return err("cache.ttl", "must be at most 1h");
        }
        if self.cache.max_entries == 0 {
            return err("cache.max_entries", "must be at least 1");
        }
        if self.feed_max_len == 0 {
            return err("feed_max_len", "must be at least 1");
        }
        if self.max_service_labels > 10_000 || self.max_endpoint_labels > 10_000 {
            return err("max_service_labels", "label caps must be at most 10000");
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: &'static str,
}

/// A sample's verdict and the override that tuned its rule.
#[derive(Debug, Clone)]
pub(crate) struct Judgement {
    pub(crate) verdict: Verdict,
    pub(crate) override_index: Option<usize>,
}

/// What a sample to judge is: its trace, key, duration and start.
pub(crate) struct Sample<'a> {
    pub(crate) trace_id: &'a TraceId,
    pub(crate) key: &'a BaselineKey,
    pub(crate) duration: DurationMs,
    pub(crate) start_ms: i64,
}

impl<'a> From<&'a IngestItem> for Sample<'a> {
    fn from(i: &'a IngestItem) -> Self {
        Sample {
            trace_id: &i.trace_id,
            key: &i.key,
            duration: i.duration,
            start_ms: i.start_ms,
        }
    }
}

impl<'a> From<&'a SpanItem> for Sample<'a> {
    fn from(i: &'a SpanItem) -> Self {
        Sample {
            trace_id: &i.trace_id,
            key: &i.key,
            duration: i.duration,
            start_ms: i.start_ms,
        }
    }
}

/// Judges samples on ingest; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Detector(Option<Arc<Inner>>);

#[derive(Debug)]
struct Inner {
    store: Store,
    roots: BaselineCache,
    spans: BaselineCache,
    stats: StatsConfig,
    overrides: Overrides,
    feed: FeedSettings,
    metrics: DetectMetrics,
    /// `anomaly_detect_failures_total{stage}`: `judge` (baselines unreadable: the batch was
    /// stored unjudged) or `feed` (anomalies found but not recorded).
    failures: Family<StageLabels, Counter>,
}

impl Detector {
    /// A detector, or one that judges nothing when `section.enabled` is off.
    pub(crate) fn new(
        section: &DetectSection,
        store: &Store,
        stats: &StatsConfig,
        overrides: Overrides,
        builder: &mut MetricsBuilder,
        common: &CommonMetrics,
    ) -> Detector {
        if !section.enabled {
            return Detector(None);
        }
        let cache_metrics = CacheMetrics::register(builder);
        let failures = Family::<StageLabels, Counter>::default();
        builder.registry().register(
            "detect_failures",
            "Judge-on-ingest failures by stage: judge (baselines unreadable; the batch was \
             stored unjudged) or feed (anomalies found but not written to the feed)",
            failures.clone(),
        );
        for stage in ["judge", "feed"] {
            drop(failures.get_or_create(&StageLabels { stage }));
        }
        let cache = |store: Store| {
            BaselineCache::new(store, &section.cache, cache_metrics.clone(), common.clone())
        };
        Detector(Some(Arc::new(Inner {
            roots: cache(store.clone()),
            spans: cache(store.spans()),
            store: store.clone(),
            stats: stats.clone(),
            overrides,
            feed: FeedSettings {
                max_len: section.feed_max_len,
                retention: section.feed_retention,
            },
            metrics: DetectMetrics::new(
                builder,
                section.max_service_labels,
                section.max_endpoint_labels,
            ),
            failures,
        })))
    }

    /// The verdict of every sample against its baseline as it stands now (before the samples
    /// are stored); `None` when detection is off or the baselines cannot be read (counted and
    /// logged: the samples are then stored unjudged).
    pub(crate) async fn judge(
        &self,
        kind: SampleKind,
        samples: &[Sample<'_>],
    ) -> Option<Vec<Judgement>> {
        let inner = self.0.as_ref()?;
        if samples.is_empty() {
            return Some(Vec::new());
        }
        // Distinct keys in first-seen order, each looked up once.
        let mut index = std::collections::HashMap::with_capacity(samples.len());
        let mut keys: Vec<BaselineKey> = Vec::new();
        let slots: Vec<usize> = samples
            .iter()
            .map(|s| {
                *index.entry(s.key).or_insert_with(|| {
                    keys.push(s.key.clone());
                    keys.len() - 1
                })
            })
            .collect();
        let cache = match kind {
            SampleKind::Root => &inner.roots,
            SampleKind::Span => &inner.spans,
        };
        let stored = match cache.get_many(&keys).await {
            Ok(stored) => stored,
            Err(e) => {
                inner.failed("judge", samples.len(), &e);
                return None;
            }
        };
        let empty = Baselines::default();
        Some(
            samples
                .iter()
                .zip(slots)
                .map(|(sample, slot)| {
                    let applied = inner
                        .overrides
                        .find(sample.key.service(), sample.key.endpoint());
                    let rule = inner.stats.rule(applied.map(|a| a.over));
                    let baselines = stored[slot].as_deref().unwrap_or(&empty);
                    Judgement {
                        verdict: Verdict::judge(
                            sample.duration,
                            baselines,
                            &rule,
                            &inner.stats.fallback,
                        ),
                        override_index: applied.map(|a| a.index),
                    }
                })
                .collect(),
        )
    }

    /// Which samples stay out of their window: those judged anomalous, with
    /// `stats.exclude_anomalies`; none otherwise.
    pub(crate) fn skip_window(&self, judged: Option<&[Judgement]>) -> Vec<bool> {
        match (&self.0, judged) {
            (Some(inner), Some(judged)) if inner.stats.exclude_anomalies => {
                judged.iter().map(|j| j.verdict.is_anomaly()).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Counts the judged samples the store accepted and records their anomalies in the feed.
    /// Never fails: a feed that cannot be written is counted and logged.
    pub(crate) async fn record(
        &self,
        kind: SampleKind,
        samples: &[Sample<'_>],
        judged: &[Judgement],
        outcomes: &[ItemOutcome],
    ) {
        let Some(inner) = &self.0 else { return };
        let at_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let mut entries = Vec::new();
        for ((sample, judgement), outcome) in samples.iter().zip(judged).zip(outcomes) {
            if *outcome != ItemOutcome::Accepted {
                continue;
            }
            let status = judgement.verdict.status;
            if kind == SampleKind::Root {
                inner.metrics.judged(sample.key.service(), status);
            }
            if status != Status::Anomaly {
                continue;
            }
            if kind == SampleKind::Root {
                inner.metrics.detected(
                    sample.key.service(),
                    sample.key.endpoint(),
                    sample.trace_id,
                );
            }
            entries.push(FeedEntry {
                trace_id: *sample.trace_id,
                key: sample.key.clone(),
                kind,
                start_ms: sample.start_ms,
                at_ms,
                verdict: judgement.verdict.clone(),
                override_index: judgement.override_index,
            });
        }
        if let Err(e) = inner.store.append_anomalies(&entries, &inner.feed).await {
            inner.failed("feed", entries.len(), &e);
        }
    }
}

impl Inner {
    fn failed(&self, stage: &'static str, samples: usize, error: &anomaly_store::StoreError) {
        self.failures.get_or_create(&StageLabels { stage }).inc();
        if FAILURE_WARNING.ready() {
            tracing::warn!(
                stage,
                samples,
                error = %error,
                "detection on ingest failed; the samples are stored, unjudged (judge) or \
                 without their feed entries (feed) (logged at most every 10s, see \
                 anomaly_detect_failures_total)"
            );
        }
    }
}
