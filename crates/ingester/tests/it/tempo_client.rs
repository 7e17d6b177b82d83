//! The Tempo client over HTTP against every recorded search response (status, headers and body
//! as a real Tempo sent them), and against a response streamed past the size cap.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anomaly_runtime::metrics::MetricsBuilder;
use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use ingester::metrics::IngestMetrics;
use ingester::tempo::{TempoClient, TempoError, TempoStatus};
use serde_json::Value;

/// A recorded answer: status, content type, body.
type Recorded = (u16, String, Vec<u8>);

#[derive(Clone, Default)]
struct Canned {
    response: Arc<Mutex<Option<Recorded>>>,
    streamed: Arc<Mutex<Option<(u16, usize)>>>,
    hits: Arc<Mutex<u32>>,
}

async fn answer(axum::extract::State(c): axum::extract::State<Canned>) -> Response {
    *c.hits.lock().unwrap() += 1;
    if let Some((status, bytes)) = *c.streamed.lock().unwrap() {
        // A body of many chunks with no Content-Length, as a proxy re-chunking it would send.
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let chunks =
            (0..bytes.div_ceil(chunk.len())).map(move |_| Ok::<_, std::io::Error>(chunk.clone()));
        return Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(futures::stream::iter(chunks)))
            .unwrap();
    }
    let (status, content_type, body) = c.response.lock().unwrap().clone().unwrap();
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .unwrap()
}

async fn canned_tempo() -> (Canned, String) {
    let canned = Canned::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = axum::Router::new()
        .route("/api/search", get(answer))
        .with_state(canned.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (canned, format!("http://{addr}"))
}

fn client(url: &str, max_response_bytes: usize) -> TempoClient {
    let mut settings = ingester::TempoSection {
        url: url.to_owned(),
        retries: 2,
        backoff: std::time::Duration::from_millis(1),
        max_response_bytes,
        ..Default::default()
    };
    settings.max_backoff = settings.backoff;
    let mut builder = MetricsBuilder::new();
    let metrics = IngestMetrics::register(builder.registry());
    TempoClient::new(&settings, "test", metrics, TempoStatus::default()).unwrap()
}

#[tokio::test]
async fn every_recorded_search_response_over_http() {
    let (canned, url) = canned_tempo().await;
    let tempo = client(&url, 32 * 1024 * 1024);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tempo");
    let mut checked = 0;
    for version in ["v2.0.1", "v3.0.3"] {
        let dir = root.join(version);
        let mut stems: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| {
                e.unwrap()
                    .file_name()
                    .into_string()
                    .unwrap()
                    .strip_suffix(".url")
                    .map(str::to_owned)
            })
            .collect();
        stems.sort();
        for stem in stems {
            let path = std::fs::read_to_string(dir.join(format!("{stem}.url"))).unwrap();
            if !path.trim().starts_with("/api/search") || path.contains("/api/search/") {
                continue;
            }
            let headers = std::fs::read_to_string(dir.join(format!("{stem}.headers")))
                .unwrap_or_else(|_| "HTTP/1.1 200 OK\nContent-Type: application/json".into());
            let status: u16 = headers.split_whitespace().nth(1).unwrap().parse().unwrap();
            let content_type = headers
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-type:")
                        .map(|v| v.trim().to_owned())
                })
                .unwrap_or_else(|| "application/json".into());
            let body = std::fs::read(dir.join(format!("{stem}.json"))).unwrap();
            *canned.response.lock().unwrap() = Some((status, content_type.clone(), body.clone()));
            *canned.hits.lock().unwrap() = 0;
            let result = tempo.search(1, 2).await;
            let name = format!("{version}/{stem}");
            let hits = *canned.hits.lock().unwrap();
            if status == 200 && content_type.contains("json") {
                let want = serde_json::from_slice::<Value>(&body).unwrap()["traces"]
                    .as_array()
                    .map_or(0, Vec::len);
                assert_eq!(
                    result
                        .unwrap_or_else(|e| panic!("{name}: {e}"))
                        .traces
                        .len(),
                    want,
                    "{name}"
                );
                assert_eq!(hits, 1, "{name}");
            } else if status == 200 {
                // Tempo's protobuf answer to an `Accept: application/protobuf` request: the
                // client never asks for it, and would not take it for JSON.
                assert!(
                    matches!(result, Err(TempoError::Malformed(_))),
                    "{name}: {result:?}"
                );
            } else {
                let Err(TempoError::Status {
                    status: got,
                    body: text,
                }) = &result
                else {
                    panic!("{name}: {result:?}")
                };
                assert_eq!(*got, status, "{name}");
                assert_eq!(
                    text,
                    String::from_utf8_lossy(&body).trim(),
                    "{name}: logged verbatim"
                );
                assert_eq!(hits, 1, "{name}: a request error is not retried");
            }
            checked += 1;
        }
    }
    assert!(checked >= 50, "only {checked} recorded searches");
}

#[tokio::test]
async fn a_body_streamed_past_the_cap_is_refused() {
    let (canned, url) = canned_tempo().await;
    let tempo = client(&url, 256 * 1024);
    *canned.streamed.lock().unwrap() = Some((200, 8 * 1024 * 1024));
    let result = tempo.search(1, 2).await;
    assert!(
        matches!(result, Err(TempoError::TooLarge(262_144))),
        "{result:?}"
    );
    assert_eq!(
        *canned.hits.lock().unwrap(),
        1,
        "too large is not retried; the window is split"
    );

    // An enormous error body is cut to its start and the status kept.
    *canned.streamed.lock().unwrap() = Some((502, 8 * 1024 * 1024));
    *canned.hits.lock().unwrap() = 0;
    let result = tempo.search(1, 2).await;
    let Err(TempoError::Status { status: 502, body }) = &result else {
        panic!("{result:?}")
    };
    assert!(body.len() <= 1000);
    assert_eq!(*canned.hits.lock().unwrap(), 3, "a 502 is retried");
}

fn recorded(rel: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/tempo")
        .join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Tempo v3's recorded answers about trace `c1`, before and after its root span arrived, fed to
/// the poller in turn: the partial answer stores nothing, the complete one stores the trace once
/// with the root's duration.
#[tokio::test]
async fn a_recorded_partial_trace_is_stored_once_its_recorded_root_arrives() {
    let (canned, url) = canned_tempo().await;
    let ing = crate::ingester(&crate::config(
        &anomaly_testkit::shared_redis_url(),
        "recorded-c1",
        &url,
    ));
    let p = crate::poller(&ing);
    let json = |body: Vec<u8>| Some((200, "application/json".to_owned(), body));
    let polled = |outcome: ingester::PollOutcome| match outcome {
        ingester::PollOutcome::Polled { window, .. } => window.traces,
        other => panic!("{other:?}"),
    };

    *canned.response.lock().unwrap() = json(recorded("v3.0.3/37_c1_before_root.json"));
    let before = polled(p.poll_once(crate::at(crate::T0 + 600)).await.unwrap());
    assert_eq!((before.partial, before.accepted), (1, 0));
    assert!(crate::all_durations(ing.store()).await.is_empty());

    *canned.response.lock().unwrap() = json(recorded("v3.0.3/40_c1_after_root_tag_scheduler.json"));
    let after = polled(p.poll_once(crate::at(crate::T0 + 615)).await.unwrap());
    assert_eq!((after.partial, after.accepted), (0, 1));
    let again = polled(p.poll_once(crate::at(crate::T0 + 630)).await.unwrap());
    assert_eq!((again.accepted, again.duplicates), (0, 1));
    assert_eq!(crate::all_durations(ing.store()).await, [100.0]);
    let windows = crate::samples(ing.store()).await;
    assert_eq!(windows.len(), 1);
    assert!(
        windows.keys().all(|k| k.starts_with("scheduler|job root|")),
        "{windows:?}"
    );
}
