//! The checker's own metrics: verdicts by status and service (the baseline cache's are
//! anomaly-runtime's `cache::CacheMetrics`).
//! (Requests by route and status, latency and Redis errors are the runtime's common metrics.)
//!
//! - `anomaly_checks_total{status, service}`: `status` is `NORMAL`, `ANOMALY` or
//!   `INSUFFICIENT_DATA`; `service` is the checked `rootServiceName`, or `other` for services
//!   without a baseline and for services beyond `checker.max_service_labels`.
//!
//! It is on the hot path, so a known service costs one read-locked map lookup by `&str` and
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
    /// Services with a label of their own: admitted only when they have a baseline (so a
    /// caller inventing names cannot create series), and only up to the cap.
    services: CappedLabels<StatusCounters>,
}

impl CheckerMetrics {
    pub(crate) fn register(builder: &mut MetricsBuilder, max_services: usize) -> CheckerMetrics {
        let checks = Family::<CheckLabels, Counter>::default();
        builder.registry().register(
            "checks",
            "Checks answered, by status (NORMAL, ANOMALY, INSUFFICIENT_DATA) and service",
            checks.clone(),
        );
        let services = CappedLabels::new(max_services, counters(&checks, OTHER));
        CheckerMetrics { checks, services }
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
        let cache = anomaly_runtime::cache::CacheMetrics::register(&mut builder);
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
        cache.lookups(3, 2, 1);
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
