//! OTLP ingest through real clients: the Rust SDK's OTLP exporter over HTTP/protobuf,
//! HTTP/JSON and gRPC, the generated tonic client, and OTLP/JSON recorded from pushes to a
//! real Tempo (`testdata/otlp/`).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anomaly_testkit::{RedisServer, shared_redis_url};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{
    Compression, Protocol, SpanExporter, WithExportConfig as _, WithHttpConfig as _,
    WithTonicConfig as _,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue as ProtoKeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource as ProtoResource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as ProtoSpan};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use prost::Message as _;
use serde_json::{Value, json};

use crate::{Config, T0, config, ingester, nanos, samples, serve};

/// The ingester's HTTP router and its OTLP/gRPC router, each on a loopback socket.
struct Running {
    ing: ingester::Ingester,
    http: SocketAddr,
    grpc: SocketAddr,
    _tasks: [tokio::task::JoinHandle<()>; 2],
}

async fn start(c: &Config) -> Running {
    let ing = ingester(c);
    let (http, task) = serve(&ing).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = listener.local_addr().unwrap();
    let router = ing.grpc_router();
    let grpc_task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Running {
        ing,
        http,
        grpc,
        _tasks: [task, grpc_task],
    }
}

fn otlp_config(redis: &str, test: &str) -> Config {
    config(redis, test, "")
}

/// How a test sends: the SDK exporter over one of its transports.
#[derive(Debug, Clone, Copy)]
enum Client {
    HttpProtobuf,
    HttpJson,
    HttpProtobufGzip,
    GrpcGzip,
}

const CLIENTS: [Client; 4] = [
    Client::HttpProtobuf,
    Client::HttpJson,
    Client::HttpProtobufGzip,
    Client::GrpcGzip,
];

fn exporter(client: Client, at: &Running, service: &str, token: Option<&str>) -> SpanExporter {
    let headers: HashMap<String, String> = token
        .map(|t| ("authorization".to_owned(), format!("Bearer {t}")))
        .into_iter()
        .collect();
    let mut exporter = match client {
        Client::GrpcGzip => {
            let mut metadata = tonic::metadata::MetadataMap::new();
            if let Some(t) = token {
                metadata.insert("authorization", format!("Bearer {t}").parse().unwrap());
            }
            SpanExporter::builder()
                .with_tonic()
                .with_endpoint(format!("http://{}", at.grpc))
                .with_compression(Compression::Gzip)
                .with_metadata(metadata)
                .with_timeout(Duration::from_secs(5))
                .build()
                .unwrap()
        }
        http => {
            let builder = SpanExporter::builder()
                .with_http()
                .with_endpoint(format!("http://{}/v1/traces", at.http))
                .with_headers(headers)
                .with_timeout(Duration::from_secs(5));
            let builder = match http {
                Client::HttpJson => builder.with_protocol(Protocol::HttpJson),
                Client::HttpProtobufGzip => builder
                    .with_protocol(Protocol::HttpBinary)
                    .with_compression(Compression::Gzip),
                _ => builder.with_protocol(Protocol::HttpBinary),
            };
            builder.build().unwrap()
        }
    };
    exporter.set_resource(
        &Resource::builder_empty()
            .with_service_name(service.to_owned())
            .build(),
    );
    exporter
}

fn unix(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

/// One span of trace `trace`, `span` its ID (parent 0 for a root).
fn span(trace: u128, span: u64, parent: u64, name: &str, start_ns: u64, dur_ns: u64) -> SpanData {
    SpanData {
        span_context: SpanContext::new(
            TraceId::from(trace),
            SpanId::from(span),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        ),
        parent_span_id: if parent == 0 {
            SpanId::INVALID
        } else {
            SpanId::from(parent)
        },
        parent_span_is_remote: false,
        span_kind: if parent == 0 {
            SpanKind::Server
        } else {
            SpanKind::Client
        },
        name: Cow::Owned(name.to_owned()),
        start_time: unix(start_ns),
        end_time: unix(start_ns + dur_ns),
        attributes: vec![KeyValue::new("http.route", name.to_owned())],
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: InstrumentationScope::builder("otlp-test").build(),
    }
}

/// `n` traces of a root (`POST /pay`) with two children each; root `i` lasts
/// `10 ms + i * 1.234567 ms` (sub-millisecond precision), children are inside it.
fn traces(first: u128, n: u64) -> Vec<SpanData> {
    let mut out = Vec::new();
    for i in 0..n {
        let trace = first + u128::from(i);
        let start = nanos(T0 + 10, 0) + i * 1_000_000_000;
        let dur = 10_000_000 + i * 1_234_567;
        let root = 0x1000 + i;
        out.push(span(trace, root, 0, "POST /pay", start, dur));
        out.push(span(
            trace,
            root + 0x100,
            root,
            "SELECT orders",
            start + 1_000,
            dur / 4,
        ));
        out.push(span(
            trace,
            root + 0x200,
            root,
            "GET inventory",
            start + dur / 2,
            dur / 4,
        ));
    }
    out
}

/// The samples the store holds for `checkout|POST /pay` (T0 is 14:00 on a Taipei weekday).
async fn pay(ing: &ingester::Ingester) -> Vec<f64> {
    samples(ing.store())
        .await
        .remove("checkout|POST /pay|14|weekday")
        .unwrap_or_default()
}

/// What the stored window holds for a root of `dur_ns`: whole microseconds.
fn stored_ms(dur_ns: u64) -> f64 {
    (dur_ns as f64 / 1000.0).round() / 1000.0
}

fn metric(ing: &ingester::Ingester, line_start: &str) -> f64 {
    let text = ing.metrics().encode();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Every transport stores each root once, with its exact duration, and counts the children;
/// the same batch again stores nothing.
#[tokio::test]
async fn roots_from_the_sdk_exporter_are_stored_once_with_exact_durations() {
    for (n, client) in CLIENTS.into_iter().enumerate() {
        let c = otlp_config(&shared_redis_url(), &format!("otlp-sdk-{n}"));
        let at = start(&c).await;
        let exporter = exporter(client, &at, "checkout", None);
        let batch = traces(0xabc0_0000 + (n as u128) * 0x100, 4);
        exporter.export(batch.clone()).await.unwrap();
        let want: Vec<f64> = (0..4)
            .map(|i| stored_ms(10_000_000 + i * 1_234_567))
            .collect();
        assert_eq!(pay(&at.ing).await, want, "{client:?}");
        // Only roots are stored: one key.
        assert_eq!(samples(at.ing.store()).await.len(), 1, "{client:?}");

        exporter.export(batch).await.unwrap();
        assert_eq!(
            pay(&at.ing).await,
            want,
            "{client:?}: a re-sent batch counts once"
        );
        let transport = if matches!(client, Client::GrpcGzip) {
            "grpc"
        } else {
            "http"
        };
        let spans = |outcome: &str| {
            metric(
                &at.ing,
                &format!(
                    "anomaly_otlp_spans_total{{transport=\"{transport}\",outcome=\"{outcome}\"}}"
                ),
            )
        };
        assert_eq!(
            (spans("root"), spans("child"), spans("rejected")),
            (8.0, 16.0, 0.0),
            "{client:?}"
        );
        let source = format!("anomaly_ingest_traces_total{{source=\"otlp_{transport}\",outcome=");
        assert_eq!(metric(&at.ing, &format!("{source}\"accepted\"}}")), 4.0);
        assert_eq!(metric(&at.ing, &format!("{source}\"duplicate\"}}")), 4.0);
    }
}

async fn post(addr: SocketAddr, content_type: &str, body: Vec<u8>) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{addr}/v1/traces"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// OTLP/JSON exactly as it was pushed to a real Tempo: roots become samples, a trace whose
/// root comes in a later request gets its sample then, and the leading-zero trace ID
/// deduplicates against the same trace pushed with Tempo's stripped spelling.
#[tokio::test]
async fn recorded_otlp_json_pushed_to_tempo() {
    let c = otlp_config(&shared_redis_url(), "otlp-recorded");
    let at = start(&c).await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/otlp");
    let read = |name: &str| std::fs::read(format!("{dir}/pushed_{name}.otlp.json")).unwrap();

    // The leading-zero trace, first through the push API as Tempo's search spells it.
    let zeros: Value = serde_json::from_slice(&read("zeros")).unwrap();
    let root = &zeros["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    let pushed = json!({"traces": [{"traceID": "af7651916cd43dd", "rootServiceName": "legacy-jaeger",
        "rootTraceName": "GET /legacy", "startTimeUnixNano": root["startTimeUnixNano"], "durationMs": 30}]});
    let r = reqwest::Client::new()
        .post(format!("http://{}/v1/traces/ingest", at.http))
        .json(&pushed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["accepted"], 1);

    for name in ["single", "multi", "lateroot_children", "zeros"] {
        let r = post(at.http, "application/json", read(name)).await;
        assert_eq!(r.status(), 200, "{name}");
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({}),
            "{name}: nothing refused"
        );
    }
    let got: BTreeMap<String, Vec<f64>> = samples(at.ing.store())
        .await
        .into_iter()
        .map(|(k, v)| (k.rsplitn(3, '|').last().unwrap().to_owned(), v))
        .collect();
    let want: BTreeMap<String, Vec<f64>> = [
        ("cron|nightly-report", vec![3.0]),
        ("frontend|GET /checkout", vec![250.0]),
        ("legacy-jaeger|GET /legacy", vec![30.0]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(
        got, want,
        "one sample per root; the zeros trace was already pushed"
    );
    assert_eq!(
        metric(
            &at.ing,
            "anomaly_otlp_spans_total{transport=\"http\",outcome=\"child\"}"
        ),
        9.0
    );

    // The late root arrives: now that trace has its sample.
    let r = post(at.http, "application/json", read("lateroot_root")).await;
    assert_eq!(r.status(), 200);
    let stored = samples(at.ing.store()).await;
    assert_eq!(
        stored
            .iter()
            .find(|(k, _)| k.starts_with("scheduler|POST /jobs|"))
            .map(|(_, v)| v.clone()),
        Some(vec![50.0])
    );
}

/// A trace counts once whether it arrives by OTLP, push or the poller, in any order.
#[tokio::test]
async fn a_trace_counts_once_across_otlp_push_and_the_poller() {
    let tempo = tracegen::tempo::FakeTempo::start().await;
    tempo.set_now(crate::at(T0 + 100));
    let c = config(&shared_redis_url(), "otlp-dedup", &tempo.url());
    let at = start(&c).await;
    // Tempo's durationMs covers the whole trace; the root span lasted 10 ms.
    tempo.upsert(tracegen::tempo::Trace::new(
        "0000000000000000000000000000abc1",
        "checkout",
        "POST /pay",
        nanos(T0 + 10, 0),
        14,
    ));
    let exporter = exporter(Client::HttpProtobuf, &at, "checkout", None);
    exporter.export(traces(0xabc1, 1)).await.unwrap();

    let pushed = json!({"traces": [{"traceID": "ABC1", "rootServiceName": "checkout",
        "rootTraceName": "POST /pay", "startTimeUnixNano": nanos(T0 + 10, 0).to_string(), "durationMs": 14}]});
    let r: Value = reqwest::Client::new()
        .post(format!("http://{}/v1/traces/ingest", at.http))
        .json(&pushed)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (r["accepted"].clone(), r["duplicates"].clone()),
        (json!(0), json!(1))
    );
    let outcome = crate::poller(&at.ing).poll_once(tempo.now()).await.unwrap();
    let ingester::PollOutcome::Polled { window, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!((window.traces.accepted, window.traces.duplicates), (0, 1));
    // The first to arrive wins: the root span's 10 ms, not Tempo's 14.
    assert_eq!(pay(&at.ing).await, [10.0]);
}

fn kv(key: &str, value: &str) -> ProtoKeyValue {
    ProtoKeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
    }
}

fn proto_span(
    trace: &[u8],
    span: u64,
    parent: Option<u64>,
    start_ns: u64,
    end_ns: u64,
) -> ProtoSpan {
    ProtoSpan {
        trace_id: trace.to_vec(),
        span_id: span.to_be_bytes().to_vec(),
        parent_span_id: parent.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default(),
        name: "POST /pay".to_owned(),
        kind: 2,
        start_time_unix_nano: start_ns,
        end_time_unix_nano: end_ns,
        ..ProtoSpan::default()
    }
}

fn resource_spans(service: Option<&str>, spans: Vec<ProtoSpan>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(ProtoResource {
            attributes: service
                .map(|s| vec![kv("service.name", s)])
                .unwrap_or_default(),
            ..ProtoResource::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..ScopeSpans::default()
        }],
        ..ResourceSpans::default()
    }
}

/// Two good roots and a good child, and one span of each kind of fault.
fn mixed_request(first: u8) -> ExportTraceServiceRequest {
    let t0 = nanos(T0 + 10, 0);
    let id = |n: u8| [vec![first; 15], vec![n]].concat();
    ExportTraceServiceRequest {
        resource_spans: vec![
            resource_spans(
                Some("checkout"),
                vec![
                    proto_span(&id(1), 1, None, t0, t0 + 7_000_000),
                    proto_span(&id(2), 2, None, t0, t0 + 9_000_000),
                    proto_span(&id(2), 3, Some(2), t0, t0 + 1_000_000),
                    // End before start.
                    proto_span(&id(3), 4, None, t0, t0 - 1),
                    // An 8-byte trace ID, and an all-zero one.
                    proto_span(&[first; 8], 5, None, t0, t0 + 1),
                    proto_span(&[0; 16], 6, None, t0, t0 + 1),
                    // Seconds where nanoseconds belong.
                    proto_span(&id(4), 7, None, T0, T0 + 1),
                ],
            ),
            // No service.name.
            resource_spans(None, vec![proto_span(&id(5), 8, None, t0, t0 + 1)]),
        ],
    }
}

/// Bad spans are refused one by one and counted in partialSuccess with the reasons, over
/// HTTP (protobuf and JSON) and gRPC; the good ones are stored.
#[tokio::test]
async fn bad_spans_are_refused_in_partial_success() {
    let c = otlp_config(&shared_redis_url(), "otlp-partial");
    let at = start(&c).await;

    let check = |rejected: i64, message: &str| {
        assert_eq!(rejected, 5, "{message}");
        for reason in [
            "1 spans ended before they started (first: span 0000000000000004 of trace ",
            "2 spans had a trace ID that is not 16 bytes or is all zeros",
            "1 spans had no resource attribute `service.name`",
            "1 spans were roots starting outside 2000..2100",
        ] {
            assert!(message.contains(reason), "{reason:?} in {message:?}");
        }
    };
    let r = post(
        at.http,
        "application/x-protobuf",
        mixed_request(0xa1).encode_to_vec(),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-protobuf");
    let answer = ExportTraceServiceResponse::decode(r.bytes().await.unwrap()).unwrap();
    let partial = answer.partial_success.unwrap();
    check(partial.rejected_spans, &partial.error_message);

    let json_body = serde_json::to_vec(&mixed_request(0xa2)).unwrap();
    let r = post(at.http, "application/json; charset=utf-8", json_body).await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    let rejected: i64 = answer["partialSuccess"]["rejectedSpans"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    check(
        rejected,
        answer["partialSuccess"]["errorMessage"].as_str().unwrap(),
    );

    let mut client = TraceServiceClient::connect(format!("http://{}", at.grpc))
        .await
        .unwrap();
    let answer = client
        .export(mixed_request(0xa3))
        .await
        .unwrap()
        .into_inner();
    let partial = answer.partial_success.unwrap();
    check(partial.rejected_spans, &partial.error_message);

    // Two good roots from each request.
    assert_eq!(pay(&at.ing).await, [7.0, 7.0, 7.0, 9.0, 9.0, 9.0]);
    assert_eq!(
        metric(
            &at.ing,
            "anomaly_otlp_spans_total{transport=\"grpc\",outcome=\"rejected\"}"
        ),
        5.0
    );
    assert_eq!(
        metric(
            &at.ing,
            "anomaly_otlp_requests_total{transport=\"http\",outcome=\"partial\"}"
        ),
        2.0
    );
}

/// While Redis is down OTLP answers 503 with Retry-After (HTTP) and UNAVAILABLE (gRPC) and
/// acknowledges nothing; once it is back, the exporters' retried batches are all stored, once.
#[tokio::test]
async fn redis_outage_is_503_and_unavailable_and_retries_lose_nothing() {
    let mut redis = RedisServer::start();
    let mut c = otlp_config(&redis.url(), "otlp-outage");
    c.common.redis.timeout = Duration::from_millis(500);
    let at = start(&c).await;
    let http = exporter(Client::HttpProtobuf, &at, "checkout", None);
    let grpc = exporter(Client::GrpcGzip, &at, "checkout", None);
    http.export(traces(0xd000, 1)).await.unwrap();

    redis.stop();
    let during_http = traces(0xd100, 3);
    let during_grpc = traces(0xd200, 3);
    assert!(http.export(during_http.clone()).await.is_err());
    assert!(grpc.export(during_grpc.clone()).await.is_err());
    let r = post(
        at.http,
        "application/x-protobuf",
        mixed_request(0xd3).encode_to_vec(),
    )
    .await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let status = tonic_types::pb::Status::decode(r.bytes().await.unwrap()).unwrap();
    assert_eq!(status.code, tonic::Code::Unavailable as i32);
    let mut client = TraceServiceClient::connect(format!("http://{}", at.grpc))
        .await
        .unwrap();
    let refused = client.export(mixed_request(0xd4)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable);

    redis.restart();
    // Retry as a Collector would, until acknowledged.
    for (exporter, batch) in [(&http, &during_http), (&grpc, &during_grpc)] {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while exporter.export(batch.clone()).await.is_err() {
            assert!(std::time::Instant::now() < deadline, "redis is back");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut got = pay(&at.ing).await;
    got.sort_by(f64::total_cmp);
    let mut expected: Vec<f64> = std::iter::once(0)
        .chain([0, 1, 2])
        .chain([0, 1, 2])
        .map(|i: u64| stored_ms(10_000_000 + i * 1_234_567))
        .collect();
    expected.sort_by(f64::total_cmp);
    assert_eq!(got, expected, "every root once");
}

/// Size limits hold before and after decompression (a gzip bomb stops at the limit), the span
/// limit holds, and other media types and encodings are 415.
#[tokio::test]
async fn limits_gzip_bombs_and_media_types() {
    use std::io::Write as _;
    let mut c = otlp_config(&shared_redis_url(), "otlp-limits");
    c.service.otlp.max_body_bytes = 64 * 1024;
    c.service.otlp.max_spans = 20;
    let at = start(&c).await;
    let client = reqwest::Client::new();
    let send = |content_type: &'static str, encoding: Option<&'static str>, body: Vec<u8>| {
        let mut request = client
            .post(format!("http://{}/v1/traces", at.http))
            .header("content-type", content_type)
            .body(body);
        if let Some(e) = encoding {
            request = request.header("content-encoding", e);
        }
        request.send()
    };
    let gzip = |bytes: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    };

    // A good gzip body is decoded.
    let good = mixed_request(0xe1).encode_to_vec();
    let r = send("application/x-protobuf", Some("gzip"), gzip(&good))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Over the limit as sent.
    let big = vec![b' '; 65 * 1024];
    let r = send("application/json", None, big).await.unwrap();
    assert_eq!(r.status(), 413);
    let status: Value = r.json().await.unwrap();
    assert_eq!(status["code"], tonic::Code::InvalidArgument as i32);
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("max_body_bytes"),
        "{status}"
    );
    // A gzip bomb: 100 MB of zeros in about 100 kB would decompress far past the limit.
    let bomb = gzip(&vec![0u8; 10 * 1024 * 1024]);
    assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
    let r = send("application/x-protobuf", Some("gzip"), bomb)
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let status = tonic_types::pb::Status::decode(r.bytes().await.unwrap()).unwrap();
    assert!(
        status.message.contains("decompressed body"),
        "{}",
        status.message
    );
    // More spans than max_spans.
    let many = ExportTraceServiceRequest {
        resource_spans: vec![resource_spans(
            Some("checkout"),
            (0..21)
                .map(|i| proto_span(&[0xe2; 16], i + 1, None, nanos(T0, 0), nanos(T0, 1)))
                .collect(),
        )],
    };
    let r = send("application/x-protobuf", None, many.encode_to_vec())
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let mut grpc = TraceServiceClient::connect(format!("http://{}", at.grpc))
        .await
        .unwrap();
    assert_eq!(
        grpc.export(many).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    // A gRPC message over the limit, plain and gzip-compressed.
    let huge = ExportTraceServiceRequest {
        resource_spans: vec![resource_spans(Some(&"s".repeat(70 * 1024)), Vec::new())],
    };
    let err = grpc.export(huge.clone()).await.unwrap_err();
    // Not OUT_OF_RANGE, which OTLP clients retry.
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("too large"), "{err:?}");
    let mut gz = TraceServiceClient::connect(format!("http://{}", at.grpc))
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let err = gz.export(huge).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    // Other media types and encodings; garbage.
    let r = send("text/plain", None, good.clone()).await.unwrap();
    assert_eq!(r.status(), 415);
    let r = send("application/x-protobuf", Some("br"), good.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = send("application/x-protobuf", None, b"\xff\xff\xff".to_vec())
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = send("application/x-protobuf", Some("gzip"), good)
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "not gzip");
    // Only the one good request stored anything.
    assert_eq!(pay(&at.ing).await, [7.0, 9.0]);
}

/// With tokens configured both transports want one; the SDK exporter sends it as a header or
/// as metadata.
#[tokio::test]
async fn auth_on_both_transports() {
    let mut c = otlp_config(&shared_redis_url(), "otlp-auth");
    c.service.auth.tokens = vec!["s3cret".to_owned().into()];
    let at = start(&c).await;
    for client in [Client::HttpProtobuf, Client::GrpcGzip] {
        assert!(
            exporter(client, &at, "checkout", None)
                .export(traces(0xf0, 1))
                .await
                .is_err()
        );
        assert!(
            exporter(client, &at, "checkout", Some("wrong"))
                .export(traces(0xf0, 1))
                .await
                .is_err()
        );
    }
    let r = post(at.http, "application/json", b"{}".to_vec()).await;
    assert_eq!(r.status(), 401);
    let mut grpc = TraceServiceClient::connect(format!("http://{}", at.grpc))
        .await
        .unwrap();
    let err = grpc
        .export(ExportTraceServiceRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert_eq!(pay(&at.ing).await, Vec::<f64>::new());

    exporter(Client::HttpProtobuf, &at, "checkout", Some("s3cret"))
        .export(traces(0xf1, 1))
        .await
        .unwrap();
    exporter(Client::GrpcGzip, &at, "checkout", Some("s3cret"))
        .export(traces(0xf2, 1))
        .await
        .unwrap();
    assert_eq!(pay(&at.ing).await, [10.0, 10.0]);
}

/// Past max_concurrency requests are shed before their bodies are read: 429 with Retry-After
/// over HTTP, RESOURCE_EXHAUSTED with RetryInfo over gRPC.
#[tokio::test]
async fn shedding_is_429_and_resource_exhausted_with_retry_info() {
    use tonic_types::StatusExt as _;
    let mut c = otlp_config(&shared_redis_url(), "otlp-shed");
    c.service.otlp.max_concurrency = 1;
    let at = start(&c).await;
    // One request holds the only permit while its body trickles in.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let stream = tokio_stream_from(rx);
    let held = tokio::spawn(
        reqwest::Client::new()
            .post(format!("http://{}/v1/traces", at.http))
            .header("content-type", "application/x-protobuf")
            .body(reqwest::Body::wrap_stream(stream))
            .send(),
    );
    tx.send(Ok(Vec::new())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let r = post(at.http, "application/x-protobuf", Vec::new()).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let mut grpc = TraceServiceClient::connect(format!("http://{}", at.grpc))
        .await
        .unwrap();
    let err = grpc
        .export(ExportTraceServiceRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        err.get_details_retry_info().and_then(|r| r.retry_delay),
        Some(Duration::from_secs(1))
    );

    drop(tx);
    assert_eq!(held.await.unwrap().unwrap().status(), 200);
    let r = post(at.http, "application/x-protobuf", Vec::new()).await;
    assert_eq!(r.status(), 200, "the permit is back");
}

/// A body stream from a channel (what `reqwest::Body::wrap_stream` takes).
fn tokio_stream_from(
    rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// `run_with` serves OTLP/gRPC beside the HTTP API, and stops both on shutdown.
#[tokio::test]
async fn the_service_serves_grpc_on_its_own_port() {
    let c = otlp_config(&shared_redis_url(), "otlp-service");
    let store = ingester(&c).store().clone();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = grpc.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(ingester::run_with(c, http, Some(grpc), async {
        let _ = stopped.await;
    }));
    let mut client = TraceServiceClient::connect(format!("http://{grpc_addr}"))
        .await
        .unwrap();
    let answer = client
        .export(mixed_request(0xc1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.partial_success.map(|p| p.rejected_spans), Some(5));
    let stored = crate::samples(&store).await;
    assert_eq!(
        stored.get("checkout|POST /pay|14|weekday"),
        Some(&vec![7.0, 9.0])
    );
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), service)
        .await
        .expect("stops")
        .unwrap()
        .unwrap();
    assert!(
        TraceServiceClient::connect(format!("http://{grpc_addr}"))
            .await
            .is_err()
    );
}
