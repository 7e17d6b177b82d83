//! An incoming W3C `traceparent` becomes the parent of the request span, so a caller's trace
//! continues through the checker when OTLP export is on.

use anomaly_core::DayType;
use anomaly_testkit::shared_redis_url;
use axum::body::Body;
use axum::http::{Request, header};
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;

use crate::{App, body, config, key};

#[tokio::test]
async fn the_request_span_continues_the_callers_trace() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    // A current-thread runtime: the subscriber set here sees every poll of the request.
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = App::new(&config(&shared_redis_url(), "trace"));
    let k = key("svc", "GET /a", 1, DayType::Weekday);
    let send = |traceparent: Option<&'static str>| {
        let mut request =
            Request::post("/v1/anomaly/check").header(header::CONTENT_TYPE, "application/json");
        if let Some(tp) = traceparent {
            request = request.header("traceparent", tp);
        }
        app.send(request.body(Body::from(body(&k, 1.0).to_string())).unwrap())
    };
    let r = send(Some(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ))
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = send(None).await;
    assert_eq!(r.status, 200);
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let requests: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "POST /v1/anomaly/check")
        .collect();
    assert_eq!(requests.len(), 2, "{spans:#?}");
    let continued = requests[0];
    assert_eq!(
        continued.span_context.trace_id(),
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
    );
    assert_eq!(
        continued.parent_span_id,
        SpanId::from_hex("00f067aa0ba902b7").unwrap()
    );
    assert!(continued.parent_span_is_remote);
    // Without a traceparent the request starts a trace of its own.
    let fresh = requests[1];
    assert_ne!(
        fresh.span_context.trace_id(),
        continued.span_context.trace_id()
    );
    assert_eq!(fresh.parent_span_id, SpanId::INVALID);
}
