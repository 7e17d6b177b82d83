//! The metrics of judge-on-ingest: every judged root sample and every anomaly found, by service.
//!
//! - `anomaly_judged_total{service, status}`: root samples judged on ingest; `status` is
//!   `NORMAL`, `ANOMALY` or `INSUFFICIENT_DATA`.
//! - `anomaly_detected_total{service, endpoint}`: anomalous root samples. In OpenMetrics (what
//!   Prometheus asks for) each series carries an exemplar with the `trace_id` of its latest
//!   anomaly, timestamped when it was found, so a Grafana panel with exemplars on shows it as a
//!   dot that opens the trace in Tempo.
//!
//! Labels are capped as the checker's `anomaly_checks_total` is, by the same
//! [`CappedLabels`]: a service gets a label of its own on its first verdict (NORMAL or
//! ANOMALY, which need a baseline, so a name made up by a client cannot take a place) and
//! only while fewer than `max_services` have one; the rest count as `other`. One map decides
//! for both counters, so `detected / judged` by service divides like with like. An endpoint
//! gets a label on its service's first anomaly there, up to `max_endpoints` per labelled
//! service; the rest count as `endpoint="other"` (every endpoint of service `other` does).
//!
//! Judging is on the ingest path: a known service costs a read-locked lookup by `&str` and an
//! atomic increment. Only an anomaly allocates (the exemplar's trace ID).
//!
//! Span samples are judged too (their anomalies reach the feed as `kind: span`), but are not
//! counted here: these series' ratios assume one judgment per trace, and a trace brings many
//! spans. A span count would need its own counter (or a `kind` label).

use std::time::SystemTime;

use anomaly_core::{Status, TraceId};
use anomaly_runtime::metrics::{CappedLabels, MetricsBuilder, OTHER};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::CounterWithExemplar;
use prometheus_client::metrics::family::Family;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JudgedLabels {
    service: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DetectedLabels {
    service: String,
    endpoint: String,
}

/// The exemplar of an anomaly count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TraceLabels {
    trace_id: String,
}

type Detected = CounterWithExemplar<TraceLabels>;

const STATUSES: [Status; 3] = [Status::Normal, Status::Anomaly, Status::InsufficientData];

fn index(status: Status) -> usize {
    match status {
        Status::Normal => 0,
        Status::Anomaly => 1,
        Status::InsufficientData => 2,
    }
}

/// The counters of one `service` label.
#[derive(Debug, Clone)]
struct ServiceMetrics {
    /// `anomaly_judged_total`, indexed like [`STATUSES`].
    judged: [Counter; 3],
    /// `anomaly_detected_total` by endpoint.
    endpoints: CappedLabels<Detected>,
}

/// Judge-on-ingest's counters; cheap to clone (clones count into the same series).
#[derive(Debug, Clone)]
pub struct DetectMetrics {
    judged: Family<JudgedLabels, Counter>,
    detected: Family<DetectedLabels, Detected>,
    services: CappedLabels<ServiceMetrics>,
    max_endpoints: usize,
}

impl DetectMetrics {
    /// Registers `anomaly_judged_total` and `anomaly_detected_total`, with at most
    /// `max_services` service labels and `max_endpoints` endpoint labels per service. The
    /// `other` service's series exist from the start, so both families are exported before the
    /// first trace.
    pub fn new(builder: &mut MetricsBuilder, max_services: usize, max_endpoints: usize) -> Self {
        let judged = Family::<JudgedLabels, Counter>::default();
        let detected = Family::<DetectedLabels, Detected>::default();
        builder.registry().register(
            "judged",
            "Root samples judged on ingest, by service and status (NORMAL, ANOMALY, \
             INSUFFICIENT_DATA)",
            judged.clone(),
        );
        builder.registry().register(
            "detected",
            "Anomalous root samples found on ingest, by service and endpoint; the exemplar is \
             the latest one's trace ID",
            detected.clone(),
        );
        let other = ServiceMetrics {
            judged: judged_counters(&judged, OTHER),
            endpoints: CappedLabels::new(0, detected_counter(&detected, OTHER, OTHER)),
        };
        DetectMetrics {
            judged,
            detected,
            services: CappedLabels::new(max_services, other),
            max_endpoints,
        }
    }

    /// Counts one judged root sample of `service`.
    pub fn judged(&self, service: &str, status: Status) {
        let has_baseline = matches!(status, Status::Normal | Status::Anomaly);
        self.services.with(
            service,
            has_baseline,
            |service| self.service_metrics(service),
            |m| m.judged[index(status)].inc(),
        );
    }

    /// Counts one anomalous root sample of `service` and `endpoint`, with `trace_id` as the
    /// series' exemplar. Call it besides [`DetectMetrics::judged`] with `Status::Anomaly`.
    pub fn detected(&self, service: &str, endpoint: &str, trace_id: &TraceId) {
        let exemplar = TraceLabels {
            trace_id: trace_id.as_str().to_owned(),
        };
        // An anomaly was judged against a baseline, so the service and endpoint are real.
        self.services.with(
            service,
            true,
            |service| self.service_metrics(service),
            |m| {
                m.endpoints.with(
                    endpoint,
                    true,
                    |endpoint| detected_counter(&self.detected, service, endpoint),
                    |c| c.inc_by(1, Some(exemplar), Some(SystemTime::now())),
                )
            },
        );
    }

    fn service_metrics(&self, service: &str) -> ServiceMetrics {
        ServiceMetrics {
            judged: judged_counters(&self.judged, service),
            endpoints: CappedLabels::new(
                self.max_endpoints,
                detected_counter(&self.detected, service, OTHER),
            ),
        }
    }
}

/// The judged counters of `service`, one per status, created in the family (so exported).
fn judged_counters(family: &Family<JudgedLabels, Counter>, service: &str) -> [Counter; 3] {
    STATUSES.map(|status| {
        family
            .get_or_create(&JudgedLabels {
                service: service.to_owned(),
                status: status.as_str(),
            })
            .clone()
    })
}

fn detected_counter(
    family: &Family<DetectedLabels, Detected>,
    service: &str,
    endpoint: &str,
) -> Detected {
    family
        .get_or_create(&DetectedLabels {
            service: service.to_owned(),
            endpoint: endpoint.to_owned(),
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use anomaly_runtime::metrics::Exposition;

    use super::*;

    fn trace(n: u8) -> TraceId {
        TraceId::from_bytes(&[n; 16])
    }

    /// Two service labels, one endpoint label per service: the rest is `other`, and the two
    /// counters agree on which services have a label.
    #[test]
    fn labels_are_capped_alike_for_both_counters() {
        let mut builder = MetricsBuilder::new();
        let m = DetectMetrics::new(&mut builder, 2, 1);
        // Without a verdict a new service gets no label, then keeps it once it has one.
        m.judged("invented", Status::InsufficientData);
        m.judged("a", Status::InsufficientData);
        m.judged("a", Status::Normal);
        m.judged("a", Status::InsufficientData);
        m.judged("a", Status::Anomaly);
        m.detected("a", "GET /x", &trace(1));
        m.detected("a", "GET /y", &trace(2));
        m.detected("a", "GET /x", &trace(3));
        // An anomaly admits its service as a verdict does; the third service is over the cap.
        m.detected("b", "GET /z", &trace(4));
        m.judged("b", Status::Anomaly);
        m.judged("c", Status::Anomaly);
        m.detected("c", "GET /c", &trace(5));
        let text = builder.freeze().encode_as(Exposition::OpenMetrics);
        let t = |n: u8| trace(n).as_str().to_owned();
        for line in [
            r#"anomaly_judged_total{service="other",status="INSUFFICIENT_DATA"} 2"#.to_owned(),
            r#"anomaly_judged_total{service="a",status="NORMAL"} 1"#.into(),
            r#"anomaly_judged_total{service="a",status="ANOMALY"} 1"#.into(),
            r#"anomaly_judged_total{service="a",status="INSUFFICIENT_DATA"} 1"#.into(),
            r#"anomaly_judged_total{service="b",status="ANOMALY"} 1"#.into(),
            r#"anomaly_judged_total{service="other",status="ANOMALY"} 1"#.into(),
            r#"anomaly_judged_total{service="other",status="NORMAL"} 0"#.into(),
            format!(
                r#"anomaly_detected_total{{service="a",endpoint="GET /x"}} 2 # {{trace_id="{}"}} 1.0 "#,
                t(3)
            ),
            format!(
                r#"anomaly_detected_total{{service="a",endpoint="other"}} 1 # {{trace_id="{}"}} 1.0 "#,
                t(2)
            ),
            format!(
                r#"anomaly_detected_total{{service="b",endpoint="GET /z"}} 1 # {{trace_id="{}"}} 1.0 "#,
                t(4)
            ),
            format!(
                r#"anomaly_detected_total{{service="other",endpoint="other"}} 1 # {{trace_id="{}"}} 1.0 "#,
                t(5)
            ),
        ] {
            assert!(text.contains(&line), "{line} missing from:\n{text}");
        }
        assert!(
            !text.contains("invented") && !text.contains(r#"service="c""#),
            "{text}"
        );
        assert!(
            !text.contains("GET /y") && !text.contains("GET /c"),
            "{text}"
        );
    }

    /// Both families are there before the first trace, and the classic format has no exemplar.
    #[test]
    fn families_exist_from_the_start_and_exemplars_only_in_openmetrics() {
        let mut builder = MetricsBuilder::new();
        let m = DetectMetrics::new(&mut builder, 10, 10);
        let metrics = builder.freeze();
        let text = metrics.encode_as(Exposition::Prometheus);
        for line in [
            r#"anomaly_judged_total{service="other",status="NORMAL"} 0"#,
            r#"anomaly_detected_total{service="other",endpoint="other"} 0"#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        m.judged("a", Status::Anomaly);
        m.detected("a", "GET /x", &trace(7));
        let classic = metrics.encode_as(Exposition::Prometheus);
        assert!(
            classic.contains(r#"anomaly_detected_total{service="a",endpoint="GET /x"} 1"#)
                && !classic.contains("trace_id=")
                && !classic.contains("# {"),
            "{classic}"
        );
        let om = metrics.encode_as(Exposition::OpenMetrics);
        assert!(
            om.contains(&format!(r#"{{trace_id="{}"}}"#, trace(7))),
            "{om}"
        );
    }
}
