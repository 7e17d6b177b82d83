//! The checker's own metrics: verdicts by status and service, baseline cache results.
//! (Requests by route and status, latency and Redis errors are the runtime's common metrics.)
//!
//! - `anomaly_checks_total{status, service}`: `status` is `NORMAL`, `ANOMALY` or
//!   `INSUFFICIENT_DATA`; `service` is the checked `rootServiceName`, or `other` for services
//!   without a baseline and for services beyond `checker.max_service_labels`.
//! - `anomaly_baseline_cache_requests_total{result}`: `hit` (a baseline served from memory),
//!   `negative` (a remembered absence served from memory) or `miss` (looked up in Redis).
//!
//! Both are on the hot path, so a known service costs one read-locked map lookup by `&str` and
//! an atomic increment: no label is built and nothing is allocated per check.

use anomaly_core::Status;
use anomaly_runtime::metrics::{CappedLabels, MetricsBuilder, OTHER};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    status: &'static str,
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    result: &'static str,
}

const STATUSES: [Status; 3] = [Status::Normal, Status::Anomaly, Status::InsufficientData];

/// The three verdict counters of one `service` label, indexed like [`STATUSES`].
type StatusCounters = [Counter; 3];

fn index(status: Status) -> usize {
    match status {
        Status::Normal => 0,
        Status::Anomaly => 1,
        Status::InsufficientData => 2,
    }
}

#[derive(Debug, Clone)]
pub(crate) struct CheckerMetrics {
    checks: Family<CheckLabels, Counter>,
    hits: Counter,
    negative_hits: Counter,
    misses: Counter,
    /// Services with a label of their own: admitted only when they have a baseline (so a
    /// caller inventing names cannot create series), and only up to the cap.
    services: CappedLabels<StatusCounters>,
}

impl CheckerMetrics {
    pub(crate) fn register(builder: &mut MetricsBuilder, max_services: usize) -> CheckerMetrics {
        let checks = Family::<CheckLabels, Counter>::default();
        let cache = Family::<CacheLabels, Counter>::default();
        builder.registry().register(
            "checks",
            "Checks answered, by status (NORMAL, ANOMALY, INSUFFICIENT_DATA) and service",
            checks.clone(),
        );
        builder.registry().register(
            "baseline_cache_requests",
            "Baseline lookups by result: hit (baseline in memory), negative (known absence in \
             memory), miss (read from Redis)",
            cache.clone(),
        );
        // Every series exists from the start, so ratios are defined before the first miss.
        let result = |result| cache.get_or_create(&CacheLabels { result }).clone();
        let (hits, negative_hits, misses) = (result("hit"), result("negative"), result("miss"));
        let services = CappedLabels::new(max_services, counters(&checks, OTHER));
        CheckerMetrics {
            checks,
            hits,
            negative_hits,
            misses,
            services,
        }
    }

    /// Counts one answered check.
    pub(crate) fn check(&self, service: &str, status: Status, has_baseline: bool) {
        self.services.with(
            service,
            has_baseline,
            |service| counters(&self.checks, service),
            |c| c[index(status)].inc(),
        );
    }

    /// Counts cache lookups: baselines and absences served from memory, and keys read from
    /// Redis.
    pub(crate) fn cache_lookups(&self, hits: u64, negative_hits: u64, misses: u64) {
        self.hits.inc_by(hits);
        self.negative_hits.inc_by(negative_hits);
        self.misses.inc_by(misses);
    }
}

/// The counters of `service`, one per status, created in the family (so they are exported).
fn counters(family: &Family<CheckLabels, Counter>, service: &str) -> StatusCounters {
    STATUSES.map(|status| {
        family
            .get_or_create(&CheckLabels {
                status: status.as_str(),
                service: service.to_owned(),
            })
            .clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_labels_are_bounded() {
        let mut builder = MetricsBuilder::new();
        let m = CheckerMetrics::register(&mut builder, 2);
        // (service, has_baseline): at most two services get labels, and only with a baseline.
        let cases = [
            ("invented", false),
            ("a", true),
            ("a", false),
            ("b", true),
            ("c", true),
            ("b", true),
            ("invented", false),
        ];
        for (service, has_baseline) in cases {
            m.check(service, Status::Anomaly, has_baseline);
        }
        m.check("a", Status::Normal, true);
        m.cache_lookups(3, 2, 1);
        let text = builder.freeze().encode();
        for line in [
            r#"anomaly_checks_total{status="ANOMALY",service="a"} 2"#,
            r#"anomaly_checks_total{status="NORMAL",service="a"} 1"#,
            r#"anomaly_checks_total{status="ANOMALY",service="b"} 2"#,
            r#"anomaly_checks_total{status="ANOMALY",service="other"} 3"#,
            r#"anomaly_checks_total{status="INSUFFICIENT_DATA",service="other"} 0"#,
            r#"anomaly_baseline_cache_requests_total{result="hit"} 3"#,
            r#"anomaly_baseline_cache_requests_total{result="negative"} 2"#,
            r#"anomaly_baseline_cache_requests_total{result="miss"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(!text.contains(r#"service="c""#) && !text.contains("invented"));
    }
}
