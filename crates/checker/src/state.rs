//! What every handler shares: the store behind its cache, the bucketer, the rule's settings,
//! the input limits and the metrics. Built once per service instance; cheap to clone.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anomaly_core::{Bucketer, DayType, NameRules, Overrides, SpanRules, StatsConfig, TimeConfig};
use anomaly_runtime::metrics::{Metrics, MetricsBuilder};
use anomaly_store::Store;

use crate::Config;
use anomaly_traces::tempo::TraceFetcher;

use crate::analysis::Analyzer;
use crate::metrics::CheckerMetrics;
use anomaly_runtime::cache::{BaselineCache, CacheMetrics, CacheSettings};

#[derive(Debug, Clone)]
pub(crate) struct AppState(Arc<Inner>);

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) cache: BaselineCache,
    /// The same over span baselines (the store's span key space).
    pub(crate) span_cache: BaselineCache,
    /// `spans:`, compiled: how a span's name becomes its key, as the ingester does it.
    pub(crate) spans: SpanRules,
    pub(crate) analyzer: Analyzer,
    /// `links`: the trace URL template of answers with a trace ID.
    pub(crate) links: anomaly_runtime::links::LinksConfig,
    pub(crate) bucketer: Bucketer,
    /// [`Bucketer::describe`] of every bucket, computed once: weekday hours 0-23, then weekend.
    descriptions: Vec<String>,
    pub(crate) time: TimeConfig,
    pub(crate) stats: StatsConfig,
    /// `overrides`, compiled.
    pub(crate) overrides: Overrides,
    pub(crate) limits: InputLimits,
    pub(crate) checks: CheckerMetrics,
    pub(crate) metrics: Metrics,
}

/// Bounds on what a request may carry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InputLimits {
    pub(crate) max_batch_items: usize,
    /// `max_name_bytes`, shared with the ingester.
    pub(crate) names: NameRules,
    pub(crate) max_future_skew: Duration,
}

impl AppState {
    pub(crate) fn new(config: &Config) -> anyhow::Result<AppState> {
        let store = Store::connect(&config.common.redis)?;
        let mut builder = MetricsBuilder::new();
        let checks = CheckerMetrics::register(&mut builder, config.service.max_service_labels);
        let cache_metrics = CacheMetrics::register(&mut builder);
        let metrics = builder.freeze();
        let settings = CacheSettings {
            ttl: config.service.cache.ttl,
            max_entries: config.service.cache.max_entries,
        };
        let span_cache = BaselineCache::new(
            store.spans(),
            &settings,
            cache_metrics.clone(),
            metrics.common.clone(),
        );
        let cache = BaselineCache::new(store, &settings, cache_metrics, metrics.common.clone());
        let time = config.common.time();
        let bucketer = Bucketer::new(&time);
        let descriptions = [DayType::Weekday, DayType::Weekend]
            .into_iter()
            .flat_map(|d| (0..24).map(move |h| (h, d)))
            .map(|(h, d)| bucketer.describe(h, d))
            .collect();
        Ok(AppState(Arc::new(Inner {
            cache,
            span_cache,
            spans: config.common.span_rules()?,
            links: config.common.links.clone(),
            analyzer: Analyzer {
                tempo: config
                    .service
                    .tempo
                    .enabled()
                    .then(|| {
                        let agent =
                            format!("latency-anomaly-checker/{}", env!("CARGO_PKG_VERSION"));
                        TraceFetcher::new(&config.service.tempo, &agent)
                    })
                    .transpose()?,
                max_spans: config.service.analysis.max_spans,
            },
            bucketer,
            descriptions,
            time,
            stats: config.common.stats.clone(),
            overrides: config.common.compiled_overrides()?,
            limits: InputLimits {
                max_batch_items: config.service.max_batch_items,
                names: config.common.names,
                max_future_skew: config.service.max_future_skew,
            },
            checks,
            metrics,
        })))
    }

    pub(crate) fn store(&self) -> &Store {
        self.0.cache.store()
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }
}

impl Inner {
    /// The bucket in words, e.g. "weekdays 14:00-15:00 Asia/Taipei".
    pub(crate) fn describe(&self, hour: u8, day_type: DayType) -> &str {
        let offset = match day_type {
            DayType::Weekday => 0,
            DayType::Weekend => 24,
        };
        &self.descriptions[offset + usize::from(hour.min(23))]
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The wall clock, read once per request: bucket and baseline age need it, and the domain
/// crate never reads it itself.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Now {
    pub(crate) unix_nanos: u128,
}

impl Now {
    pub(crate) fn read() -> Now {
        let unix_nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Now { unix_nanos }
    }

    pub(crate) fn unix_millis(self) -> i64 {
        i64::try_from(self.unix_nanos / 1_000_000).unwrap_or(i64::MAX)
    }
}
