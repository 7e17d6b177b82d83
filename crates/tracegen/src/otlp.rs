//! Generated traffic as OTLP: each trace a root SERVER span with child spans nested inside it,
//! grouped by service into `ExportTraceServiceRequest`s, sent over OTLP/HTTP (protobuf) or
//! OTLP/gRPC.
//!
//! The root span carries what the ingester turns into a sample: resource `service.name` = the
//! generated service, span name = the endpoint, and `end - start` = the generated duration
//! exactly. The children are a plausible shape for the product's span-level work (a handler
//! span, then the database, cache and downstream calls of that service), not a model of latency.
//! Every root is sent, so late and lost roots ([`Root`](crate::traffic::Root)) are a Tempo
//! listing matter only.

use std::collections::HashMap;
use std::io::Write as _;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;

use crate::traffic::GenTrace;

/// Spans per trace when not told otherwise: the root and nine children.
pub const DEFAULT_SPANS_PER_TRACE: usize = 10;

/// One child operation of a service: the span name and the attribute saying what it calls.
struct Op {
    name: &'static str,
    attribute: (&'static str, &'static str),
}

const fn sql(name: &'static str) -> Op {
    Op {
        name,
        attribute: ("db.system.name", "postgresql"),
    }
}

const fn redis(name: &'static str) -> Op {
    Op {
        name,
        attribute: ("db.system.name", "redis"),
    }
}

const fn http(name: &'static str, method: &'static str) -> Op {
    Op {
        name,
        attribute: ("http.request.method", method),
    }
}

/// The calls a service makes while serving a request, cycled through when a trace has more
/// children than the list.
fn operations(service: &str) -> &'static [Op] {
    const CHECKOUT: &[Op] = &[
        redis("redis GET"),
        sql("SELECT carts"),
        http("GET inventory", "GET"),
        http("POST payments", "POST"),
        sql("INSERT orders"),
    ];
    const SEARCH: &[Op] = &[
        redis("redis GET"),
        http("GET search-index", "GET"),
        sql("SELECT products"),
    ];
    const CATALOG: &[Op] = &[
        redis("redis GET"),
        sql("SELECT products"),
        http("GET inventory", "GET"),
    ];
    const PAYMENTS: &[Op] = &[
        sql("SELECT accounts"),
        http("POST card-gateway", "POST"),
        sql("INSERT payments"),
    ];
    const INVENTORY: &[Op] = &[redis("redis GET"), sql("SELECT stock")];
    const ADMIN: &[Op] = &[
        sql("SELECT orders"),
        sql("SELECT payments"),
        http("PUT reports-bucket", "PUT"),
    ];
    const OTHER: &[Op] = &[
        sql("SELECT orders"),
        http("GET inventory", "GET"),
        redis("redis GET"),
    ];
    match service {
        "checkout" => CHECKOUT,
        "search" => SEARCH,
        "catalog" => CATALOG,
        "payments" => PAYMENTS,
        "inventory" => INVENTORY,
        "admin" => ADMIN,
        _ => OTHER,
    }
}

fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
    }
}

/// The 16 bytes of a generated trace ID (32 hex digits). The generator only makes valid ones;
/// anything else becomes zeros, which a receiver rightly rejects.
pub fn trace_id_bytes(hex: &str) -> [u8; 16] {
    u128::from_str_radix(hex, 16).map_or([0; 16], u128::to_be_bytes)
}

/// Span `index` of a trace: a non-zero 8-byte ID derived from the trace ID, so the same trace
/// always gets the same spans.
fn span_id(trace_id: &[u8; 16], index: usize) -> Vec<u8> {
    let mut h =
        u128::from_be_bytes(*trace_id) as u64 ^ (u128::from_be_bytes(*trace_id) >> 64) as u64;
    h = h
        .wrapping_add(index as u64 + 1)
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    h.max(1).to_be_bytes().to_vec()
}

/// The spans of one trace, root first: the root SERVER span over exactly the generated
/// duration; then (with two or more spans) an INTERNAL handler span under it covering its middle
/// 90%; then CLIENT calls one after another inside the handler (or inside the root when there is
/// room for only one child). Every child lies within its parent's time.
pub fn trace_spans(trace: &GenTrace, spans_per_trace: usize) -> Vec<Span> {
    let trace_id = trace_id_bytes(&trace.trace_id);
    let start = trace.start_unix_nano;
    let end = trace.end_unix_nano();
    let mut root = Span {
        trace_id: trace_id.to_vec(),
        span_id: span_id(&trace_id, 0),
        name: trace.endpoint.clone(),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        ..Span::default()
    };
    if let Some((method, route)) = trace.endpoint.split_once(' ') {
        root.attributes = vec![
            string_attribute("http.request.method", method),
            string_attribute("http.route", route),
        ];
    }
    let child = |index: usize, parent: &[u8], name: String, kind: SpanKind, from, to| Span {
        trace_id: trace_id.to_vec(),
        span_id: span_id(&trace_id, index),
        parent_span_id: parent.to_vec(),
        name,
        kind: kind as i32,
        start_time_unix_nano: from,
        end_time_unix_nano: to,
        ..Span::default()
    };
    let mut spans = Vec::with_capacity(spans_per_trace.max(1));
    let calls = spans_per_trace.saturating_sub(2);
    let (parent, from, to) = if spans_per_trace >= 2 {
        let margin = (end - start) / 20;
        let handler = child(
            1,
            &root.span_id,
            format!("{}.handle", trace.service),
            SpanKind::Internal,
            start + margin,
            end - margin,
        );
        let range = (
            handler.span_id.clone(),
            handler.start_time_unix_nano,
            handler.end_time_unix_nano,
        );
        spans.push(root);
        spans.push(handler);
        range
    } else {
        spans.push(root);
        return spans;
    };
    let ops = operations(&trace.service);
    let slot = (to - from) / calls.max(1) as u64;
    for k in 0..calls {
        let slot_start = from + k as u64 * slot;
        let op = &ops[k % ops.len()];
        let mut span = child(
            k + 2,
            &parent,
            op.name.to_owned(),
            SpanKind::Client,
            slot_start + slot / 10,
            slot_start + slot - slot / 10,
        );
        span.attributes = vec![string_attribute(op.attribute.0, op.attribute.1)];
        spans.push(span);
    }
    spans
}

/// One OTLP export of `traces`, `spans_per_trace` spans each (at least the root): one
/// `ResourceSpans` per service, in the order the services first appear, each with one scope.
pub fn export_request(traces: &[GenTrace], spans_per_trace: usize) -> ExportTraceServiceRequest {
    let mut by_service: Vec<ResourceSpans> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for trace in traces {
        let i = *index.entry(trace.service.as_str()).or_insert_with(|| {
            by_service.push(ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![string_attribute("service.name", &trace.service)],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "tracegen".to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        ..InstrumentationScope::default()
                    }),
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            });
            by_service.len() - 1
        });
        by_service[i].scope_spans[0]
            .spans
            .extend(trace_spans(trace, spans_per_trace));
    }
    ExportTraceServiceRequest {
        resource_spans: by_service,
    }
}

/// What the receiver answered, summed over requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OtlpSummary {
    pub requests: u64,
    pub traces: u64,
    pub spans: u64,
    /// `partialSuccess.rejectedSpans`.
    pub rejected_spans: u64,
    /// The first non-empty `partialSuccess.errorMessage`.
    pub first_error: Option<String>,
}

impl std::ops::AddAssign for OtlpSummary {
    fn add_assign(&mut self, o: OtlpSummary) {
        self.requests += o.requests;
        self.traces += o.traces;
        self.spans += o.spans;
        self.rejected_spans += o.rejected_spans;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("cannot reach {url}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error("{url} answered 200 with a body that is not an ExportTraceServiceResponse")]
    Body {
        url: String,
        #[source]
        source: prost::DecodeError,
    },
    #[error("cannot connect to the OTLP/gRPC endpoint {url}")]
    Connect {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("{url} answered gRPC {code:?}: {message}", code = .status.code(), message = .status.message())]
    Grpc { url: String, status: tonic::Status },
    #[error("the token is not a valid header value")]
    Token,
}

/// `google.rpc.Status`, the body of OTLP/HTTP error answers; only what an error message needs.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// How requests are built, whatever the transport.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// Sent as `Authorization: Bearer ...` (gRPC: `authorization` metadata) when set.
    pub token: Option<String>,
    /// Traces per request.
    pub batch_size: usize,
    pub spans_per_trace: usize,
    /// Compress request bodies with gzip.
    pub gzip: bool,
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions {
            token: None,
            batch_size: 500,
            spans_per_trace: DEFAULT_SPANS_PER_TRACE,
            gzip: false,
        }
    }
}

#[derive(Debug, Clone)]
enum Transport {
    Http(reqwest::Client),
    Grpc(TraceServiceClient<tonic::transport::Channel>),
}

/// Sends generated traffic to an OTLP receiver.
#[derive(Debug, Clone)]
pub struct OtlpSender {
    transport: Transport,
    url: String,
    options: SendOptions,
}

impl OtlpSender {
    /// OTLP/HTTP protobuf. `url` is the receiver's base, e.g. `http://127.0.0.1:8081`, to which
    /// `/v1/traces` is appended as OTLP exporters do with `OTEL_EXPORTER_OTLP_ENDPOINT`; a URL
    /// that already ends in `/v1/traces` is used as it is.
    pub fn http(url: &str, options: SendOptions) -> Self {
        let url = url.trim_end_matches('/');
        let url = if url.ends_with("/v1/traces") {
            url.to_owned()
        } else {
            format!("{url}/v1/traces")
        };
        OtlpSender {
            transport: Transport::Http(reqwest::Client::new()),
            url,
            options: SendOptions {
                batch_size: options.batch_size.max(1),
                ..options
            },
        }
    }

    /// OTLP/gRPC `TraceService/Export` at `url`, e.g. `http://127.0.0.1:4317`.
    pub async fn grpc(url: &str, options: SendOptions) -> Result<Self, OtlpError> {
        let connect = |source| OtlpError::Connect {
            url: url.to_owned(),
            source,
        };
        let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
            .map_err(connect)?
            .connect()
            .await
            .map_err(connect)?;
        let mut client = TraceServiceClient::new(channel);
        if options.gzip {
            client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
        }
        Ok(OtlpSender {
            transport: Transport::Grpc(client),
            url: url.to_owned(),
            options: SendOptions {
                batch_size: options.batch_size.max(1),
                ..options
            },
        })
    }

    /// The endpoint requests go to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends `traces` in requests of at most `batch_size` traces, in order; stops at the first
    /// failed request.
    pub async fn send(&self, traces: &[GenTrace]) -> Result<OtlpSummary, OtlpError> {
        let mut total = OtlpSummary::default();
        for chunk in traces.chunks(self.options.batch_size) {
            let request = export_request(chunk, self.options.spans_per_trace);
            let spans = request
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len() as u64)
                .sum();
            let response = match &self.transport {
                Transport::Http(client) => self.send_http(client, &request).await?,
                Transport::Grpc(client) => self.send_grpc(client.clone(), request).await?,
            };
            let partial = response.partial_success.unwrap_or_default();
            total += OtlpSummary {
                requests: 1,
                traces: chunk.len() as u64,
                spans,
                rejected_spans: u64::try_from(partial.rejected_spans).unwrap_or(0),
                first_error: Some(partial.error_message).filter(|m| !m.is_empty()),
            };
        }
        Ok(total)
    }

    async fn send_http(
        &self,
        client: &reqwest::Client,
        request: &ExportTraceServiceRequest,
    ) -> Result<ExportTraceServiceResponse, OtlpError> {
        let http = |source| OtlpError::Http {
            url: self.url.clone(),
            source,
        };
        let mut body = request.encode_to_vec();
        let mut builder = client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf");
        if self.options.gzip {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            // Writing to a Vec cannot fail.
            let _ = encoder.write_all(&body);
            body = encoder.finish().unwrap_or_default();
            builder = builder.header(reqwest::header::CONTENT_ENCODING, "gzip");
        }
        if let Some(token) = &self.options.token {
            builder = builder.bearer_auth(token);
        }
        let response = builder.body(body).send().await.map_err(http)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(http)?;
        if !status.is_success() {
            let message = RpcStatus::decode(bytes.as_ref())
                .ok()
                .filter(|s| !s.message.is_empty())
                .map_or_else(
                    || String::from_utf8_lossy(&bytes).into_owned(),
                    |s| s.message,
                );
            return Err(OtlpError::Status {
                url: self.url.clone(),
                status: status.as_u16(),
                message,
            });
        }
        ExportTraceServiceResponse::decode(bytes.as_ref()).map_err(|source| OtlpError::Body {
            url: self.url.clone(),
            source,
        })
    }

    async fn send_grpc(
        &self,
        mut client: TraceServiceClient<tonic::transport::Channel>,
        request: ExportTraceServiceRequest,
    ) -> Result<ExportTraceServiceResponse, OtlpError> {
        let mut request = tonic::Request::new(request);
        if let Some(token) = &self.options.token {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| OtlpError::Token)?;
            request.metadata_mut().insert("authorization", value);
        }
        client
            .export(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| OtlpError::Grpc {
                url: self.url.clone(),
                status,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::Root;

    const NANOS_PER_MS: u64 = 1_000_000;

    fn trace(id: &str, service: &str, endpoint: &str, duration_ms: u32) -> GenTrace {
        GenTrace {
            trace_id: id.to_owned(),
            service: service.to_owned(),
            endpoint: endpoint.to_owned(),
            start_unix_nano: 1_795_363_200_123_456_789,
            duration_ms,
            anomaly: false,
            root: Root::OnTime,
        }
    }

    fn traces() -> Vec<GenTrace> {
        vec![
            trace(
                "4bf92f3577b34da6a3ce929d0e0e4736",
                "checkout",
                "POST /api/checkout",
                183,
            ),
            // A 64-bit ID, with the leading zeros Tempo strips.
            trace(
                "00000000000000000e0e4736a3ce929d",
                "search",
                "GET /api/search",
                91,
            ),
            // Sub-millisecond: a zero-length root, and children of zero length inside it.
            trace(
                "0af7651916cd43dd8448eb211c80319c",
                "inventory",
                "GET /api/stock",
                0,
            ),
            trace(
                "b7ad6b7169203331b7ad6b7169203331",
                "checkout",
                "POST /api/checkout",
                1,
            ),
            trace(
                "00f067aa0ba902b7a3ce929d0e0e4736",
                "service-7",
                "GET /x",
                20_000,
            ),
        ]
    }

    fn service_name(r: &ResourceSpans) -> String {
        let attribute = r
            .resource
            .as_ref()
            .and_then(|res| res.attributes.iter().find(|a| a.key == "service.name"))
            .and_then(|a| a.value.as_ref()?.value.as_ref());
        match attribute {
            Some(any_value::Value::StringValue(s)) => s.clone(),
            other => panic!("no string service.name: {other:?}"),
        }
    }

    #[test]
    fn each_trace_is_one_root_over_its_duration_with_children_inside() {
        let traces = traces();
        for spans_per_trace in [1, 2, 3, 5, DEFAULT_SPANS_PER_TRACE, 17] {
            let request = export_request(&traces, spans_per_trace);
            // service -> spans, flattened, so each trace's spans can be found by ID.
            let mut spans: Vec<(String, &Span)> = Vec::new();
            for r in &request.resource_spans {
                assert_eq!(r.scope_spans.len(), 1);
                let service = service_name(r);
                spans.extend(r.scope_spans[0].spans.iter().map(|s| (service.clone(), s)));
            }
            assert_eq!(
                spans.len(),
                traces.len() * spans_per_trace,
                "{spans_per_trace}"
            );
            // One resource per service: checkout's two traces share one.
            assert_eq!(request.resource_spans.len(), 4);

            for t in &traces {
                let id = trace_id_bytes(&t.trace_id);
                let mine: Vec<&(String, &Span)> =
                    spans.iter().filter(|(_, s)| s.trace_id == id).collect();
                assert_eq!(mine.len(), spans_per_trace, "{}", t.trace_id);
                let roots: Vec<_> = mine
                    .iter()
                    .filter(|(_, s)| s.parent_span_id.is_empty())
                    .collect();
                assert_eq!(roots.len(), 1, "one root in {}", t.trace_id);
                let (service, root) = roots[0];
                assert_eq!(service, &t.service);
                assert_eq!(root.name, t.endpoint);
                assert_eq!(root.kind, SpanKind::Server as i32);
                assert_eq!(root.start_time_unix_nano, t.start_unix_nano);
                assert_eq!(
                    root.end_time_unix_nano - root.start_time_unix_nano,
                    u64::from(t.duration_ms) * NANOS_PER_MS,
                    "the root lasts the generated duration exactly"
                );
                let by_id: HashMap<&[u8], &Span> = mine
                    .iter()
                    .map(|(_, s)| (s.span_id.as_slice(), *s))
                    .collect();
                assert_eq!(by_id.len(), spans_per_trace, "span IDs are distinct");
                for (service, span) in &mine {
                    assert_eq!(service, &t.service, "every span under its service");
                    assert_eq!(span.span_id.len(), 8);
                    assert_ne!(span.span_id, [0; 8]);
                    assert!(span.start_time_unix_nano <= span.end_time_unix_nano);
                    assert!(
                        root.start_time_unix_nano <= span.start_time_unix_nano
                            && span.end_time_unix_nano <= root.end_time_unix_nano,
                        "{} inside the root of {}",
                        span.name,
                        t.trace_id
                    );
                    if span.parent_span_id.is_empty() {
                        continue;
                    }
                    let parent = by_id
                        .get(span.parent_span_id.as_slice())
                        .unwrap_or_else(|| panic!("{}'s parent is in the trace", span.name));
                    assert!(
                        parent.start_time_unix_nano <= span.start_time_unix_nano
                            && span.end_time_unix_nano <= parent.end_time_unix_nano,
                        "{} inside its parent {}",
                        span.name,
                        parent.name
                    );
                    assert_ne!(span.kind, SpanKind::Server as i32);
                }
            }
        }
    }

    #[test]
    fn children_are_named_after_the_service_calls() {
        let spans = trace_spans(&traces()[0], 10);
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "POST /api/checkout",
                "checkout.handle",
                "redis GET",
                "SELECT carts",
                "GET inventory",
                "POST payments",
                "INSERT orders",
                "redis GET",
                "SELECT carts",
                "GET inventory",
            ]
        );
        // The same trace always gives the same spans.
        assert_eq!(spans, trace_spans(&traces()[0], 10));
    }

    #[test]
    fn trace_ids_keep_their_leading_zeros() {
        for (hex, bytes) in [
            (
                "00000000000000000e0e4736a3ce929d",
                [
                    0, 0, 0, 0, 0, 0, 0, 0, 0x0e, 0x0e, 0x47, 0x36, 0xa3, 0xce, 0x92, 0x9d,
                ],
            ),
            ("00000000000000000000000000000001", {
                let mut b = [0; 16];
                b[15] = 1;
                b
            }),
            ("not hex", [0; 16]),
        ] {
            assert_eq!(trace_id_bytes(hex), bytes, "{hex}");
        }
    }
}
