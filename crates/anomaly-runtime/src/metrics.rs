//! Prometheus metrics: one registry per service instance (so tests can run several services
//! in one process), with the metrics every service has. Names carry the `anomaly_` prefix.
//!
//! `/metrics` speaks two text formats ([`Exposition`]): OpenMetrics 1.0 when the scraper asks
//! for it (Prometheus does by default), which carries exemplars (the trace ID of an anomaly),
//! and otherwise the classic Prometheus text format 0.0.4, which has no syntax for exemplars, so
//! they are left out rather than breaking its parsers. [`CappedLabels`] bounds a label's values
//! (services, endpoints) for every metric that takes one from traffic.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

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
    /// The OpenMetrics exposition, exemplars and `# EOF` included.
    pub fn encode(&self) -> String {
        self.encode_as(Exposition::OpenMetrics)
    }

    /// The exposition in `format`.
    pub fn encode_as(&self, format: Exposition) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = match format {
            Exposition::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &self.registry)
            }
            Exposition::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            }
        };
        out
    }
}

/// The text formats `/metrics` answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposition {
    /// OpenMetrics 1.0: counters with exemplars, `# EOF` at the end.
    OpenMetrics,
    /// The classic Prometheus text format 0.0.4, without exemplars (it cannot express them).
    Prometheus,
}

impl Exposition {
    /// The format an `Accept` header asks for. OpenMetrics when the header names
    /// `application/openmetrics-text` (version 1.0.0, 0.0.1 or none) at least as high as it
    /// rates `text/plain`, or accepts `application/*` and not `text/plain`; the classic format
    /// otherwise, also with no header and with a bare `*/*` (curl's), as a scraper that never
    /// asked for OpenMetrics may not parse exemplars. Prometheus 2.x asks for OpenMetrics first
    /// by default, as does 3.x unless `scrape_protocols` says otherwise.
    pub fn negotiate(accept: Option<&str>) -> Exposition {
        // (specificity, q) of the most specific media range matching each format: 2 for the
        // type itself, 1 for `type/*`, 0 for `*/*`. A more specific range overrides (RFC 9110).
        let (mut om, mut text) = (None::<(u8, f32)>, None::<(u8, f32)>);
        for range in accept.unwrap_or_default().split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let (mut q, mut version) = (1.0_f32, None);
            for param in parts {
                let Some((key, value)) = param.split_once('=') else {
                    continue;
                };
                let value = value.trim().trim_matches('"');
                match key.trim().to_ascii_lowercase().as_str() {
                    "q" => q = value.parse::<f32>().map_or(0.0, |q| q.clamp(0.0, 1.0)),
                    "version" => version = Some(value.to_owned()),
                    _ => {}
                }
            }
            let om_match = match media.as_str() {
                "application/openmetrics-text"
                    if matches!(version.as_deref(), None | Some("1.0.0" | "0.0.1")) =>
                {
                    Some(2)
                }
                "application/*" => Some(1),
                "*/*" => Some(0),
                _ => None,
            };
            let text_match = match media.as_str() {
                // 1.0.0 is Prometheus 3's UTF-8 variant, of which 0.0.4 output is a subset.
                "text/plain" if matches!(version.as_deref(), None | Some("0.0.4" | "1.0.0")) => {
                    Some(2)
                }
                "text/*" => Some(1),
                "*/*" => Some(0),
                _ => None,
            };
            for (best, found) in [(&mut om, om_match), (&mut text, text_match)] {
                if let Some(spec) = found {
                    let better = best.is_none_or(|(s, bq)| spec > s || (spec == s && q > bq));
                    if better {
                        *best = Some((spec, q));
                    }
                }
            }
        }
        let q = |best: Option<(u8, f32)>| best.map_or(0.0, |(_, q)| q);
        let (q_om, q_text) = (q(om), q(text));
        let named = om.is_some_and(|(spec, _)| spec > 0);
        if q_om > 0.0 && (q_om > q_text || (q_om == q_text && named)) {
            Exposition::OpenMetrics
        } else {
            Exposition::Prometheus
        }
    }

    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Exposition::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

/// The label value shared by everything that did not get a label of its own.
pub const OTHER: &str = "other";

/// The metrics of each value of one label taken from traffic (a service, an endpoint), with at
/// most `cap` values labelled; every other value shares the metrics labelled [`OTHER`]. A value
/// gets its label on first use, and only when the caller vouches for it (`admit`: it has a
/// baseline, say), so that made-up names cannot take the places of real ones.
///
/// Counting for a labelled value costs a read-locked map lookup by `&str`: no label is built and
/// nothing is allocated. Clones share the values.
#[derive(Debug, Clone)]
pub struct CappedLabels<T> {
    other: T,
    labelled: Arc<RwLock<HashMap<Box<str>, T>>>,
    cap: usize,
}

impl<T> CappedLabels<T> {
    /// At most `cap` labelled values; `other` are the metrics of the rest.
    pub fn new(cap: usize, other: T) -> Self {
        CappedLabels {
            other,
            labelled: Arc::default(),
            cap,
        }
    }

    /// Runs `f` on the metrics of `value`: its own when it has a label, or gets one now because
    /// it is `admit`ted and fewer than `cap` values have one (`make` creates its metrics, given
    /// the value); else the shared [`OTHER`] metrics.
    pub fn with<R>(
        &self,
        value: &str,
        admit: bool,
        make: impl FnOnce(&str) -> T,
        f: impl FnOnce(&T) -> R,
    ) -> R {
        // A poisoned lock only means another thread panicked mid-insert; the map is still valid.
        if let Some(metrics) = self
            .labelled
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(value)
        {
            return f(metrics);
        }
        if !admit {
            return f(&self.other);
        }
        let mut labelled = self
            .labelled
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // Another thread may have labelled it between the two locks.
        if !labelled.contains_key(value) && labelled.len() >= self.cap {
            drop(labelled);
            return f(&self.other);
        }
        f(labelled.entry(value.into()).or_insert_with(|| make(value)))
    }

    /// The metrics of everything without a label of its own.
    pub fn other(&self) -> &T {
        &self.other
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::process::Stdio;
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use anomaly_store::Store;
    use anomaly_testkit::{free_port, redis_config};
    use prometheus_client::metrics::exemplar::CounterWithExemplar;
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct EndpointLabels {
        service: String,
        endpoint: String,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct TraceLabels {
        trace_id: String,
    }

    const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

    /// A registry with a counter shaped like the ingester's `anomaly_detected_total`, its one
    /// series carrying an exemplar with [`TRACE_ID`].
    fn with_exemplar() -> Metrics {
        let mut builder = MetricsBuilder::new();
        let detected = Family::<EndpointLabels, CounterWithExemplar<TraceLabels>>::default();
        builder
            .registry()
            .register("detected", "Anomalous traces", detected.clone());
        detected
            .get_or_create(&EndpointLabels {
                service: "checkout".into(),
                endpoint: "GET /cart".into(),
            })
            .inc_by(
                1,
                Some(TraceLabels {
                    trace_id: TRACE_ID.into(),
                }),
                Some(SystemTime::now()),
            );
        builder.freeze()
    }

    #[test]
    fn negotiates_the_format_from_accept() {
        use Exposition::{OpenMetrics, Prometheus};
        let cases = [
            (None, Prometheus),
            (Some(""), Prometheus),
            (Some("*/*"), Prometheus),
            (Some("text/plain"), Prometheus),
            (Some("application/json"), Prometheus),
            (Some("application/openmetrics-text"), OpenMetrics),
            (
                Some("Application/OpenMetrics-Text; Version=1.0.0"),
                OpenMetrics,
            ),
            (
                Some("application/openmetrics-text;version=0.0.1"),
                OpenMetrics,
            ),
            // A version this encoder does not write is not what was asked for.
            (
                Some("application/openmetrics-text;version=2.0.0"),
                Prometheus,
            ),
            (Some("application/openmetrics-text;q=0"), Prometheus),
            (
                Some("application/openmetrics-text;q=0.3, text/plain;q=0.5"),
                Prometheus,
            ),
            (
                Some("application/openmetrics-text, text/plain"),
                OpenMetrics,
            ),
            (Some("application/*"), OpenMetrics),
            // Prometheus 2.x's default scrape header.
            (
                Some(
                    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                     version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                ),
                OpenMetrics,
            ),
            // Prometheus 3.x's default, and with scrape_protocols: [PrometheusText0.0.4].
            (
                Some(
                    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,\
                     application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;\
                     escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
                ),
                OpenMetrics,
            ),
            (Some("text/plain;version=0.0.4;q=0.3,*/*;q=0.2"), Prometheus),
        ];
        for (accept, want) in cases {
            assert_eq!(Exposition::negotiate(accept), want, "{accept:?}");
        }
    }

    #[test]
    fn only_openmetrics_carries_exemplars() {
        let metrics = with_exemplar();
        let om = metrics.encode_as(Exposition::OpenMetrics);
        let line = format!(
            r#"anomaly_detected_total{{service="checkout",endpoint="GET /cart"}} 1 # {{trace_id="{TRACE_ID}"}} 1.0 "#
        );
        assert!(om.contains(&line), "{line} missing from:\n{om}");
        assert!(om.ends_with("# EOF\n"), "{om}");
        let classic = metrics.encode_as(Exposition::Prometheus);
        assert!(
            classic
                .contains(r#"anomaly_detected_total{service="checkout",endpoint="GET /cart"} 1"#),
            "{classic}"
        );
        assert!(
            !classic.contains("trace_id") && !classic.contains("# EOF"),
            "{classic}"
        );
    }

    /// promtool, or prometheus, from `target/tools/bin` (`scripts/prometheus-tools.sh` puts them
    /// there; `just test` runs it) or the PATH.
    fn tool(name: &str) -> PathBuf {
        let unpacked = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/tools/bin");
        std::iter::once(unpacked)
            .chain(std::env::split_paths(
                &std::env::var_os("PATH").unwrap_or_default(),
            ))
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "{name} is missing: run `bash scripts/prometheus-tools.sh` (`just test` does), \
                     or apt-get install prometheus"
                )
            })
    }

    /// `promtool check metrics` (the classic text format's parser and linter) on `text`.
    async fn promtool_check_metrics(text: &str) -> std::process::Output {
        let mut child = tokio::process::Command::new(tool("promtool"))
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).await.unwrap();
        drop(stdin);
        child.wait_with_output().await.unwrap()
    }

    /// The classic answer parses with promtool's text-format parser; the OpenMetrics one, with
    /// its exemplar, does not, which is why it is only sent to a scraper that asks for it.
    #[tokio::test]
    async fn the_classic_format_parses_and_exemplars_would_not() {
        let metrics = with_exemplar();
        let classic = promtool_check_metrics(&metrics.encode_as(Exposition::Prometheus)).await;
        assert!(
            classic.status.success(),
            "promtool refused the classic format: {}{}",
            String::from_utf8_lossy(&classic.stdout),
            String::from_utf8_lossy(&classic.stderr)
        );
        let om = promtool_check_metrics(&metrics.encode_as(Exposition::OpenMetrics)).await;
        let said = String::from_utf8_lossy(&om.stderr);
        assert!(
            !om.status.success() && said.contains("parsing error"),
            "{said}"
        );
    }

    /// A real Prometheus with exemplar storage scrapes `/metrics` with its own `Accept` header,
    /// gets OpenMetrics, and keeps the exemplar: its query API gives the trace ID back, as
    /// Grafana asks for it to draw the dot that opens the trace.
    #[tokio::test]
    async fn prometheus_scrapes_the_exemplar() {
        let url = format!("redis://127.0.0.1:{}", free_port());
        let store = Store::connect(&redis_config(&url, "exemplars")).unwrap();
        let app = crate::http::probes(store, with_exemplar(), Vec::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, scrape_timeout: 1s}}\n\
                 scrape_configs:\n  - job_name: svc\n    static_configs:\n      \
                 - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let _prometheus = tokio::process::Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--enable-feature=exemplar-storage")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();

        let client = reqwest::Client::new();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let query = format!(
            "http://127.0.0.1:{port}/api/v1/query_exemplars?query=anomaly_detected_total\
             &start={}&end={}",
            now - 600,
            now + 600
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Ok(r) = client.get(&query).send().await {
                last = r.text().await.unwrap_or_default();
                if let Ok(body) = serde_json::from_str::<serde_json::Value>(&last) {
                    let found = body["data"].as_array().into_iter().flatten().any(|series| {
                        series["seriesLabels"]["service"] == "checkout"
                            && series["seriesLabels"]["endpoint"] == "GET /cart"
                            && series["exemplars"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .any(|e| e["labels"]["trace_id"] == TRACE_ID && e["value"] == "1")
                    });
                    if found {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let targets = client
            .get(format!("http://127.0.0.1:{port}/api/v1/targets"))
            .send()
            .await
            .map(|r| r.text());
        let targets = match targets {
            Ok(text) => text.await.unwrap_or_default(),
            Err(e) => e.to_string(),
        };
        let log = std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
        panic!("no exemplar after 60 s; last answer: {last}\ntargets: {targets}\nlog:\n{log}");
    }
}
