//! Logs and traces of the services themselves.
//!
//! Logs are structured (`json` by default, one object per line) and filtered by
//! `telemetry.log_level`, which `RUST_LOG` overrides. [`init`] returns a guard to hold for the
//! life of the process; dropping it flushes whatever exporters it owns. A warning that would
//! repeat for every request goes through a [`LogEvery`].
//!
//! Traces: a non-empty `telemetry.otlp_endpoint` turns on OpenTelemetry export over OTLP/gRPC
//! (tonic; batched on a background thread), with the resource `service.name` =
//! `<service_namespace>-<service>`. Empty (the default) builds no exporter, so nothing is
//! exported and nothing connects anywhere. Either way [`parent_context`] reads an incoming W3C
//! `traceparent`, and `http::trace` makes it the parent of the request span, so a caller's
//! trace continues through the service whenever export is on. Request spans are at `info`;
//! the spans at I/O boundaries (each Redis operation, Tempo request, drain and backfill window)
//! are at `debug`, so they are built and exported only when `telemetry.log_level` (or
//! `RUST_LOG`, e.g. `info,anomaly_store=debug`) lets them through, and cost nothing otherwise.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, TelemetryConfig};

/// Keeps telemetry alive; flushes on drop.
#[must_use = "telemetry stops when the guard is dropped"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("otlp_export", &self.provider.is_some())
            .finish()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            // The subscriber may already be gone at exit, so this goes to stderr directly.
            eprintln!("telemetry: flushing spans failed: {e}");
        }
    }
}

/// Installs the global subscriber (and, with an OTLP endpoint, the exporter). Safe to call more
/// than once (later calls do nothing), which tests that start several services in one process
/// rely on. With an endpoint it must be called inside a Tokio runtime: the gRPC channel lives
/// there.
pub fn init(config: &TelemetryConfig, service: &'static str) -> TelemetryGuard {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (provider, export_error) = match otlp_provider(config, service) {
        Ok(provider) => (provider, None),
        Err(e) => (None, Some(e)),
    };
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service)));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let result = match config.log_format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            )
            .try_init(),
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer()).try_init(),
    };
    if result.is_err() {
        // Someone installed a subscriber first; an exporter nobody feeds is pointless.
        if let Some(p) = provider {
            let _ = p.shutdown();
        }
        return TelemetryGuard { provider: None };
    }
    tracing::info!(
        service,
        version = env!("CARGO_PKG_VERSION"),
        otlp_export = provider.is_some(),
        "telemetry started"
    );
    if let Some(e) = export_error {
        // Traces are an aid, not a dependency: the service runs on without them.
        tracing::error!(error = %e, endpoint = %config.otlp_endpoint, "otlp export is off");
    }
    if let Some(p) = &provider {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        opentelemetry::global::set_tracer_provider(p.clone());
    }
    TelemetryGuard { provider }
}

/// The tracer provider exporting to `telemetry.otlp_endpoint`, or `None` when it is empty.
fn otlp_provider(
    config: &TelemetryConfig,
    service: &'static str,
) -> Result<Option<SdkTracerProvider>, opentelemetry_otlp::ExporterBuildError> {
    use opentelemetry_otlp::WithExportConfig;

    if config.otlp_endpoint.is_empty() {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(config.otlp_endpoint.clone())
        .build()?;
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource(config, service))
            .build(),
    ))
}

fn resource(config: &TelemetryConfig, service: &str) -> Resource {
    let namespace = config.service_namespace.as_str();
    let name = if namespace.is_empty() {
        service.to_owned()
    } else {
        format!("{namespace}-{service}")
    };
    Resource::builder()
        .with_service_name(name)
        .with_attribute(opentelemetry::KeyValue::new(
            "service.namespace",
            namespace.to_owned(),
        ))
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build()
}

/// The caller's trace context from a W3C `traceparent` (and `tracestate`) header; an empty
/// context when the header is absent or malformed.
pub fn parent_context(headers: &http::HeaderMap) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// The caller's trace ID in lowercase hex, when `headers` carry a valid `traceparent`.
pub fn incoming_trace_id(headers: &http::HeaderMap) -> Option<String> {
    let cx = parent_context(headers);
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// Lets a repeated warning through at most once per period: during a condition that lasts
/// (Redis down, the key cap reached) every request or batch would log the same line and flood
/// the log pipeline, while a metric already counts every occurrence. Usable as a `static`.
#[derive(Debug)]
pub struct LogEvery {
    every_ms: u64,
    /// Unix milliseconds of the last line let through.
    last_ms: AtomicU64,
}

impl LogEvery {
    pub const fn new(every: Duration) -> Self {
        LogEvery {
            every_ms: every.as_millis() as u64,
            last_ms: AtomicU64::new(0),
        }
    }

    /// Whether a line may be logged now; when it may, the next one waits a period. Of callers
    /// racing for the same line, one wins.
    pub fn ready(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.ready_at(now)
    }

    fn ready_at(&self, now_ms: u64) -> bool {
        let last = self.last_ms.load(Ordering::Relaxed);
        // A clock stepped back lets a line through rather than silencing it for the step.
        let due = now_ms < last || now_ms - last >= self.every_ms;
        due && self
            .last_ms
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_every_lets_one_line_through_per_period() {
        let every = LogEvery::new(Duration::from_secs(1));
        // (unix milliseconds, let through)
        let cases = [
            (100_000, true),
            (100_000, false),
            (100_999, false),
            (101_000, true),
            (101_500, false),
            (103_000, true),
            (102_000, true),
            (102_100, false),
        ];
        for (now, logged) in cases {
            assert_eq!(every.ready_at(now), logged, "at {now} ms");
        }
    }

    #[test]
    fn reads_traceparent() {
        let cases = [
            (
                Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
                Some("4bf92f3577b34da6a3ce929d0e0e4736"),
            ),
            (None, None),
            (Some("garbage"), None),
            // An all-zero trace ID is invalid by the W3C spec.
            (
                Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
                None,
            ),
        ];
        for (header, want) in cases {
            let mut headers = http::HeaderMap::new();
            if let Some(h) = header {
                headers.insert("traceparent", http::HeaderValue::from_static(h));
            }
            assert_eq!(incoming_trace_id(&headers).as_deref(), want, "{header:?}");
        }
    }

    #[tokio::test]
    async fn an_empty_endpoint_builds_no_exporter() {
        let config = TelemetryConfig::default();
        assert!(otlp_provider(&config, "checker").unwrap().is_none());
        let config = TelemetryConfig {
            otlp_endpoint: "http://127.0.0.1:4317".into(),
            ..TelemetryConfig::default()
        };
        // Building connects lazily: no collector needs to listen for this to succeed.
        let provider = otlp_provider(&config, "checker")
            .unwrap()
            .expect("exporter");
        let _ = provider.shutdown();
    }

    /// With an endpoint, spans really leave the process: a stand-in collector sees the gRPC
    /// (HTTP/2) connection preface when the guard flushes. The only test in this binary that
    /// installs the global subscriber, so it holds under `cargo test` as well as nextest.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exports_spans_when_an_endpoint_is_configured() {
        use tokio::io::AsyncReadExt as _;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = TelemetryConfig {
            otlp_endpoint: format!("http://{}", listener.local_addr().unwrap()),
            ..TelemetryConfig::default()
        };
        let collector = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut preface = [0u8; 24];
            socket.read_exact(&mut preface).await.unwrap();
            // Dropping the connection fails the export at once, so the flush does not wait.
            preface
        });
        let guard = init(&config, "checker");
        assert!(format!("{guard:?}").contains("otlp_export: true"));
        tracing::info_span!("exported").in_scope(|| tracing::info!("inside"));
        // Dropping the guard flushes, blocking; keep it off the runtime's threads.
        let flush = std::thread::spawn(move || drop(guard));
        let preface = tokio::time::timeout(std::time::Duration::from_secs(20), collector)
            .await
            .expect("the exporter connects to the configured endpoint")
            .unwrap();
        assert_eq!(&preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        flush.join().unwrap();
    }
}
