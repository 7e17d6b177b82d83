//! `tracegen otlp` sends protobuf over OTLP/HTTP (optionally gzip) and OTLP/gRPC, with the
//! bearer token, in batches, and sums `partialSuccess`; HTTP failures carry the
//! `google.rpc.Status` message.

use std::io::Read as _;
use std::sync::{Arc, Mutex};

use anomaly_core::TimeConfig;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;
use tracegen::otlp::{OtlpError, OtlpSender, SendOptions};
use tracegen::traffic::{GenTrace, Generator, Profile};

const SECOND: u64 = 1_000_000_000;
const T0: u64 = (1_795_363_200 + 10 * 3_600) * SECOND;

/// One request as received: its `Authorization`, its content encoding and the decoded export.
type Request = (Option<String>, Option<String>, ExportTraceServiceRequest);

#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Request>>>);

fn spans(request: &ExportTraceServiceRequest) -> usize {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

/// Rejects one span of every request, as a receiver does with a span it cannot take.
fn partly_rejected() -> ExportTraceServiceResponse {
    ExportTraceServiceResponse {
        partial_success: Some(ExportTracePartialSuccess {
            rejected_spans: 1,
            error_message: "1 span without service.name".to_owned(),
        }),
    }
}

async fn http_receiver(
    State(received): State<Received>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        header("content-type").as_deref(),
        Some("application/x-protobuf")
    );
    let encoding = header("content-encoding");
    let mut bytes = body.to_vec();
    if encoding.as_deref() == Some("gzip") {
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(bytes.as_slice())
            .read_to_end(&mut plain)
            .unwrap();
        bytes = plain;
    }
    let request = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
    received
        .0
        .lock()
        .unwrap()
        .push((header("authorization"), encoding, request));
    (
        [("content-type", "application/x-protobuf")],
        partly_rejected().encode_to_vec(),
    )
}

async fn listen() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

async fn serve(router: Router) -> String {
    let (listener, url) = listen().await;
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

fn hour_of_traffic() -> Vec<GenTrace> {
    let traces = Generator::new(Profile::demo(), 31, &TimeConfig::default())
        .traces_between(T0, T0 + 3_600 * SECOND);
    assert!(traces.len() > 300);
    traces
}

#[tokio::test]
async fn sends_protobuf_batches_over_http_with_gzip_and_the_token() {
    for gzip in [false, true] {
        let received = Received::default();
        let base = serve(
            Router::new()
                .route("/v1/traces", post(http_receiver))
                .with_state(received.clone()),
        )
        .await;
        let traces = hour_of_traffic();
        let options = SendOptions {
            token: Some("s3cret".to_owned()),
            batch_size: 100,
            spans_per_trace: 4,
            gzip,
        };
        // The base URL gets `/v1/traces`; the full endpoint is taken as it is.
        for url in [base.clone(), format!("{base}/v1/traces/")] {
            let sender = OtlpSender::http(&url, options.clone());
            assert_eq!(sender.url(), format!("{base}/v1/traces"));
        }
        let summary = OtlpSender::http(&base, options)
            .send(&traces)
            .await
            .unwrap();

        let requests = received.0.lock().unwrap().clone();
        assert_eq!(requests.len(), traces.len().div_ceil(100));
        assert_eq!(summary.requests, requests.len() as u64);
        assert_eq!(summary.traces, traces.len() as u64);
        assert_eq!(summary.spans, 4 * traces.len() as u64);
        assert_eq!(summary.rejected_spans, requests.len() as u64);
        assert_eq!(
            summary.first_error.as_deref(),
            Some("1 span without service.name")
        );
        let sent: usize = requests.iter().map(|(_, _, r)| spans(r)).sum();
        assert_eq!(sent, 4 * traces.len());
        for (auth, encoding, _) in &requests {
            assert_eq!(auth.as_deref(), Some("Bearer s3cret"));
            assert_eq!(encoding.as_deref(), gzip.then_some("gzip"));
        }
    }
}

#[tokio::test]
async fn http_failures_name_the_status_and_the_receivers_message() {
    // google.rpc.Status{code: 14 (UNAVAILABLE), message: ...}, as an OTLP receiver answers.
    let mut status = vec![0x08, 14, 0x12];
    let message = b"redis is unavailable";
    status.push(message.len() as u8);
    status.extend_from_slice(message);
    let base = serve(Router::new().route(
        "/v1/traces",
        post(move || async move {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [("content-type", "application/x-protobuf")],
                status.clone(),
            )
        }),
    ))
    .await;
    let err = OtlpSender::http(&base, SendOptions::default())
        .send(&hour_of_traffic())
        .await
        .unwrap_err();
    match &err {
        OtlpError::Status {
            status, message, ..
        } => {
            assert_eq!(*status, 503);
            assert_eq!(message, "redis is unavailable");
        }
        other => panic!("expected a status error, got {other:?}"),
    }
    assert!(err.to_string().contains("503"), "{err}");
}

/// A TraceService recording what it receives.
#[derive(Clone, Default)]
struct GrpcReceiver(Received);

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let metadata = |name: &str| {
            request
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let auth = metadata("authorization");
        let encoding = metadata("grpc-encoding");
        self.0
            .0
            .lock()
            .unwrap()
            .push((auth, encoding, request.into_inner()));
        Ok(tonic::Response::new(partly_rejected()))
    }
}

#[tokio::test]
async fn sends_over_grpc_with_gzip_and_the_token() {
    let received = Received::default();
    let (listener, url) = listen().await;
    let incoming = futures::stream::unfold(listener, |listener| async move {
        let stream = listener.accept().await.map(|(stream, _)| stream);
        Some((stream, listener))
    });
    let service = TraceServiceServer::new(GrpcReceiver(received.clone()))
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    );
    let traces = hour_of_traffic();
    let sender = OtlpSender::grpc(
        &url,
        SendOptions {
            token: Some("s3cret".to_owned()),
            batch_size: 200,
            spans_per_trace: 10,
            gzip: true,
        },
    )
    .await
    .unwrap();
    let summary = sender.send(&traces).await.unwrap();

    let requests = received.0.lock().unwrap().clone();
    assert_eq!(requests.len(), traces.len().div_ceil(200));
    assert_eq!(summary.requests, requests.len() as u64);
    assert_eq!(summary.spans, 10 * traces.len() as u64);
    assert_eq!(summary.rejected_spans, requests.len() as u64);
    let sent: usize = requests.iter().map(|(_, _, r)| spans(r)).sum();
    assert_eq!(sent, 10 * traces.len());
    for (auth, encoding, _) in &requests {
        assert_eq!(auth.as_deref(), Some("Bearer s3cret"));
        assert_eq!(encoding.as_deref(), Some("gzip"));
    }
}

#[tokio::test]
async fn grpc_connection_failures_name_the_endpoint() {
    let port = anomaly_testkit::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let err = OtlpSender::grpc(&url, SendOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, OtlpError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains(&url), "{err}");
}
