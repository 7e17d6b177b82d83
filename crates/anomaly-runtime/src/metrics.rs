//! Prometheus metrics: one registry per service instance (so tests can run several services
//! in one process), with the metrics every service has. Names carry the `anomaly_` prefix.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: String,
}

/// A latency histogram from 100 µs to about 3 s.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// The metrics every service exposes.
#[derive(Debug, Clone)]
pub struct CommonMetrics {
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<RouteLabels, Histogram>,
    pub redis_errors: Family<OpLabels, Counter>,
    pub redis_up: Gauge,
}

impl CommonMetrics {
    pub fn redis_error(&self, op: &str) {
        self.redis_errors
            .get_or_create(&OpLabels { op: op.to_owned() })
            .inc();
    }
}

/// A registry under construction: services register their own metrics, then [`freeze`] it.
///
/// [`freeze`]: MetricsBuilder::freeze
#[derive(Debug)]
pub struct MetricsBuilder {
    registry: Registry,
    common: CommonMetrics,
}

impl Default for MetricsBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl MetricsBuilder {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("anomaly");
        let common = CommonMetrics {
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_histogram),
            redis_errors: Family::default(),
            redis_up: Gauge::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            common.http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            common.http_duration.clone(),
        );
        registry.register(
            "redis_errors",
            "Failed Redis operations by operation",
            common.redis_errors.clone(),
        );
        registry.register(
            "redis_up",
            "1 when the last Redis check succeeded",
            common.redis_up.clone(),
        );
        MetricsBuilder { registry, common }
    }

    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    pub fn common(&self) -> &CommonMetrics {
        &self.common
    }

    pub fn freeze(self) -> Metrics {
        Metrics {
            registry: Arc::new(self.registry),
            common: self.common,
        }
    }
}

/// A finished registry and the common metrics; cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub common: CommonMetrics,
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
