//! `tracegen push` sends batches in the ingest API's shape and sums the answers; failures name
//! the status and body.

use std::sync::{Arc, Mutex};

use anomaly_core::TimeConfig;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use tracegen::push::{PushError, PushSummary, Pusher};
use tracegen::traffic::{Generator, Profile};

const SECOND: u64 = 1_000_000_000;
const T0: u64 = (1_795_363_200 + 10 * 3_600) * SECOND;

/// One request as received: its `Authorization` header and its body.
type Request = (Option<String>, Value);

#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Request>>>);

/// An ingest endpoint that records every request and calls every second trace a duplicate.
async fn receiver(
    State(received): State<Received>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    let n = body["traces"].as_array().map_or(0, Vec::len);
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    received.0.lock().unwrap().push((auth, body));
    Json(json!({"accepted": n - n / 2, "duplicates": n / 2, "rejected": 0, "errors": []}))
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}/v1/traces/ingest")
}

#[tokio::test]
async fn pushes_batches_in_the_ingest_shape() {
    let received = Received::default();
    let url = serve(
        Router::new()
            .route("/v1/traces/ingest", post(receiver))
            .with_state(received.clone()),
    )
    .await;
    let traces = Generator::new(Profile::demo(), 31, &TimeConfig::default())
        .traces_between(T0, T0 + 3_600 * SECOND);
    assert!(traces.len() > 300);

    let pusher = Pusher::new(&url, Some("s3cret".to_owned()), 100);
    let summary = pusher.push(&traces).await.unwrap();

    let requests = received.0.lock().unwrap().clone();
    assert_eq!(requests.len(), traces.len().div_ceil(100));
    assert_eq!(summary.batches, requests.len() as u64);
    assert_eq!(summary.accepted + summary.duplicates, traces.len() as u64);
    assert_eq!(summary.rejected, 0);
    let items: Vec<&Value> = requests
        .iter()
        .flat_map(|(_, b)| b["traces"].as_array().unwrap())
        .collect();
    assert_eq!(items.len(), traces.len());
    for ((auth, body), _) in requests.iter().zip(0..) {
        assert_eq!(auth.as_deref(), Some("Bearer s3cret"));
        assert!(body["traces"].as_array().unwrap().len() <= 100);
    }
    for (item, trace) in items.iter().zip(&traces) {
        assert_eq!(item["traceID"], trace.trace_id);
        assert_eq!(item["rootServiceName"], trace.service);
        assert_eq!(item["rootTraceName"], trace.endpoint);
        assert_eq!(item["startTimeUnixNano"], trace.start_unix_nano.to_string());
        match trace.duration_ms {
            0 => assert!(item.get("durationMs").is_none(), "{item}"),
            ms => assert_eq!(item["durationMs"], ms),
        }
    }
    assert!(
        items.iter().any(|i| i.get("durationMs").is_none()),
        "zero durations are omitted"
    );
}

#[tokio::test]
async fn a_refused_batch_is_an_error_naming_the_status() {
    let url = serve(Router::new().route(
        "/v1/traces/ingest",
        post(|| async {
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": {"code": "UNAUTHORIZED", "message": "missing bearer token"}})),
            )
        }),
    ))
    .await;
    let traces = Generator::new(Profile::demo(), 32, &TimeConfig::default())
        .traces_between(T0, T0 + 600 * SECOND);
    let err = Pusher::new(&url, None, 500)
        .push(&traces)
        .await
        .unwrap_err();
    match &err {
        PushError::Status { status, body, .. } => {
            assert_eq!(*status, 401);
            assert!(body.contains("missing bearer token"), "{body}");
        }
        other => panic!("expected a status error, got {other:?}"),
    }
    assert!(err.to_string().contains("401"), "{err}");
}

#[tokio::test]
async fn an_unreachable_ingester_is_an_error_naming_the_url() {
    // Bind and drop a listener: nothing listens on that port afterwards.
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{addr}/v1/traces/ingest");
    let traces = Generator::new(Profile::demo(), 33, &TimeConfig::default())
        .traces_between(T0, T0 + 600 * SECOND);
    let err = Pusher::new(&url, None, 500)
        .push(&traces)
        .await
        .unwrap_err();
    assert!(matches!(err, PushError::Http { .. }), "{err:?}");
    assert!(err.to_string().contains(&url), "{err}");
    assert_eq!(
        Pusher::new(&url, None, 500).push(&[]).await.unwrap(),
        PushSummary::default(),
        "nothing to push sends nothing"
    );
}
