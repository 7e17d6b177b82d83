//! The recomputer's own metrics (names are fixed: dashboards and alerts use them).

use std::time::Duration;

use anomaly_runtime::metrics::{MetricsBuilder, latency_histogram};
use anomaly_store::CommitOutcome;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

#[derive(Debug, Clone)]
pub struct RecomputeMetrics {
    /// `anomaly_dirty_backlog`: SCARD of the dirty set after the last drain.
    pub backlog: Gauge,
    /// `anomaly_recompute_keys_total`: baselines written.
    pub keys: Counter,
    /// `anomaly_recompute_stale_total`: computations discarded because the window moved on.
    pub stale: Counter,
    /// `anomaly_recompute_batch_duration_seconds`.
    pub batch_duration: Histogram,
    /// `anomaly_recompute_errors_total`: drains that failed.
    pub errors: Counter,
}

impl RecomputeMetrics {
    pub fn register(builder: &mut MetricsBuilder) -> Self {
        let m = Self::unregistered();
        let r = builder.registry();
        r.register(
            "dirty_backlog",
            "Keys awaiting recompute",
            m.backlog.clone(),
        );
        r.register("recompute_keys", "Baselines written", m.keys.clone());
        r.register(
            "recompute_stale",
            "Recomputes discarded because a newer sample arrived",
            m.stale.clone(),
        );
        r.register(
            "recompute_batch_duration_seconds",
            "Time to recompute one batch",
            m.batch_duration.clone(),
        );
        r.register("recompute_errors", "Drains that failed", m.errors.clone());
        m
    }

    /// Metrics that go nowhere, for tools and tests that do not serve them.
    pub fn unregistered() -> Self {
        RecomputeMetrics {
            backlog: Gauge::default(),
            keys: Counter::default(),
            stale: Counter::default(),
            batch_duration: latency_histogram(),
            errors: Counter::default(),
        }
    }

    pub(crate) fn batch_done(&self, took: Duration, outcome: CommitOutcome) {
        self.batch_duration.observe(took.as_secs_f64());
        self.keys.inc_by(outcome.written);
        self.stale.inc_by(outcome.stale);
    }
}
