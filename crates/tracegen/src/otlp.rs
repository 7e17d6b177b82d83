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
//!
//! With four spans or more, the handler's first step is an INTERNAL `{service}.load` span with
//! one CLIENT call inside it, three levels below the root: the span a trace analysis should name
//! when [`SlowSpans`] makes it slow (every Nth trace a sender sends, its root longer by as much).

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// Which traces get a slow span: every `every`-th trace (the `every`-th, `2 * every`-th, ...;
/// never when `every` is 0) has its deepest call ([`slow_span_index`]) longer by `extra_ms`, and
/// its ancestors, the root included, longer by as much; the spans after it start that much
/// later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowSpans {
    pub every: u64,
    pub extra_ms: u32,
}

impl SlowSpans {
    /// No slow spans.
    pub const NONE: SlowSpans = SlowSpans {
        every: 0,
        extra_ms: 0,
    };

    /// The extra milliseconds of trace number `n` (0-based) in a sender's stream.
    pub fn extra_ms(&self, n: u64) -> u32 {
        if self.every > 0 && (n + 1).is_multiple_of(self.every) {
            self.extra_ms
        } else {
            0
        }
    }
}

/// The index (in [`trace_spans`]' order) of the span [`SlowSpans`] slows down: the CLIENT call
/// three levels below the root when the trace has four spans or more, else its last span.
pub fn slow_span_index(spans_per_trace: usize) -> usize {
    spans_per_trace.clamp(1, 4) - 1
}

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
/// 90%; then the handler's steps one after another inside it: with four spans or more, first an
/// INTERNAL `{service}.load` span with one CLIENT call inside it (three levels down), then CLIENT
/// calls; with three spans, one CLIENT call. Every child lies within its parent's time.
pub fn trace_spans(trace: &GenTrace, spans_per_trace: usize) -> Vec<Span> {
    slow_trace_spans(trace, spans_per_trace, 0)
}

/// [`trace_spans`] with the span at [`slow_span_index`] longer by `extra_ms`: its ancestors (the
/// root included, so the trace lasts `duration_ms + extra_ms`) end that much later and the spans
/// after it start that much later.
pub fn slow_trace_spans(trace: &GenTrace, spans_per_trace: usize, extra_ms: u32) -> Vec<Span> {
    let mut spans = normal_spans(trace, spans_per_trace);
    let extra = u64::from(extra_ms) * 1_000_000;
    if extra > 0 {
        let slow = slow_span_index(spans.len());
        for (i, span) in spans.iter_mut().enumerate() {
            if i > slow {
                span.start_time_unix_nano += extra;
            }
            span.end_time_unix_nano += extra;
        }
    }
    spans
}

fn normal_spans(trace: &GenTrace, spans_per_trace: usize) -> Vec<Span> {
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
    let call = |index: usize, k: usize, parent: &[u8], from: u64, to: u64| {
        let op = &ops[k % ops.len()];
        let mut span = child(
            index,
            parent,
            op.name.to_owned(),
            SpanKind::Client,
            from,
            to,
        );
        span.attributes = vec![string_attribute(op.attribute.0, op.attribute.1)];
        span
    };
    // With two calls or more, the first slot holds the load step and its call; the rest one
    // call each.
    let slots = if calls >= 2 { calls - 1 } else { calls };
    let slot = (to - from) / slots.max(1) as u64;
    for s in 0..slots {
        let slot_start = from + s as u64 * slot;
        let (a, b) = (slot_start + slot / 10, slot_start + slot - slot / 10);
        if calls >= 2 && s == 0 {
            let load = child(
                2,
                &parent,
                format!("{}.load", trace.service),
                SpanKind::Internal,
                a,
                b,
            );
            let margin = (b - a) / 10;
            let inner = call(3, 1, &load.span_id, a + margin, b - margin);
            spans.push(load);
            spans.push(inner);
        } else if calls >= 2 {
            spans.push(call(s + 3, s + 1, &parent, a, b));
        } else {
            spans.push(call(2, 0, &parent, a, b));
        }
    }
    spans
}

/// One OTLP export of `traces`, `spans_per_trace` spans each (at least the root): one
/// `ResourceSpans` per service, in the order the services first appear, each with one scope.
pub fn export_request(traces: &[GenTrace], spans_per_trace: usize) -> ExportTraceServiceRequest {
    export_request_slow(traces, spans_per_trace, SlowSpans::NONE, 0)
}

/// [`export_request`] where `traces[i]` is trace number `first + i` of a stream that `slow`
/// picks slow traces from.
pub fn export_request_slow(
    traces: &[GenTrace],
    spans_per_trace: usize,
    slow: SlowSpans,
    first: u64,
) -> ExportTraceServiceRequest {
    let mut by_service: Vec<ResourceSpans> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (n, trace) in traces.iter().enumerate() {
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
        by_service[i].scope_spans[0].spans.extend(slow_trace_spans(
            trace,
            spans_per_trace,
            slow.extra_ms(first + n as u64),
        ));
    }
    ExportTraceServiceRequest {
        resource_spans: by_service,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn json_attributes(attributes: &[KeyValue]) -> Vec<serde_json::Value> {
    attributes
        .iter()
        .filter_map(|a| match a.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(v) => {
                Some(serde_json::json!({"key": a.key, "value": {"stringValue": v}}))
            }
            _ => None,
        })
        .collect()
}

/// `request` as OTLP/JSON (`{"resourceSpans": [...]}`), as OTLP/HTTP JSON exporters write it:
/// hex trace and span IDs, times as decimal strings, kinds as numbers. Only string attributes,
/// the only kind this module makes.
pub fn to_json(request: &ExportTraceServiceRequest) -> serde_json::Value {
    let resource_spans: Vec<serde_json::Value> = request
        .resource_spans
        .iter()
        .map(|r| {
            let resource = r.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
            let scope_spans: Vec<serde_json::Value> = r
                .scope_spans
                .iter()
                .map(|s| {
                    let spans: Vec<serde_json::Value> = s
                        .spans
                        .iter()
                        .map(|span| {
                            serde_json::json!({
                                "traceId": hex(&span.trace_id),
                                "spanId": hex(&span.span_id),
                                "parentSpanId": hex(&span.parent_span_id),
                                "name": span.name,
                                "kind": span.kind,
                                "startTimeUnixNano": span.start_time_unix_nano.to_string(),
                                "endTimeUnixNano": span.end_time_unix_nano.to_string(),
                                "attributes": json_attributes(&span.attributes),
                            })
                        })
                        .collect();
                    let scope = s
                        .scope
                        .as_ref()
                        .map(|sc| serde_json::json!({"name": sc.name, "version": sc.version}));
                    serde_json::json!({"scope": scope, "spans": spans})
                })
                .collect();
            serde_json::json!({
                "resource": {"attributes": json_attributes(resource)},
                "scopeSpans": scope_spans,
            })
        })
        .collect();
    serde_json::json!({ "resourceSpans": resource_spans })
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
    slow: SlowSpans,
    /// Traces sent so far (by this sender and its clones), numbering the stream for `slow`.
    sent: Arc<AtomicU64>,
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
            slow: SlowSpans::NONE,
            sent: Arc::default(),
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
            slow: SlowSpans::NONE,
            sent: Arc::default(),
        })
    }

    /// Makes every `slow.every`-th trace this sender sends slow ([`SlowSpans`]), counting from
    /// the next one.
    pub fn with_slow_spans(mut self, slow: SlowSpans) -> Self {
        self.slow = slow;
        self
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
            let first = self.sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            let request =
                export_request_slow(chunk, self.options.spans_per_trace, self.slow, first);
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
                "checkout.load",
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
        // SERVER root, INTERNAL handler and load, CLIENT calls: the load's call three levels
        // down.
        let kinds: Vec<i32> = spans.iter().map(|s| s.kind).collect();
        let (server, internal, client) = (
            SpanKind::Server as i32,
            SpanKind::Internal as i32,
            SpanKind::Client as i32,
        );
        assert_eq!(
            kinds,
            [
                server, internal, internal, client, client, client, client, client, client, client
            ]
        );
        assert_eq!(spans[3].parent_span_id, spans[2].span_id);
        assert_eq!(spans[2].parent_span_id, spans[1].span_id);
        assert_eq!(spans[1].parent_span_id, spans[0].span_id);
    }

    /// Start and end of each span, in ms from the trace's start.
    fn times(spans: &[Span]) -> Vec<(f64, f64)> {
        let t0 = spans[0].start_time_unix_nano;
        spans
            .iter()
            .map(|s| {
                (
                    (s.start_time_unix_nano - t0) as f64 / 1e6,
                    (s.end_time_unix_nano - t0) as f64 / 1e6,
                )
            })
            .collect()
    }

    #[test]
    fn a_slow_trace_has_its_deep_call_and_its_ancestors_longer_and_the_rest_later() {
        let t = trace(
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "checkout",
            "POST /api/checkout",
            160,
        );
        let normal = trace_spans(&t, 10);
        let slow = slow_trace_spans(&t, 10, 1000);
        assert_eq!(slow_span_index(10), 3);
        // The handler covers 8..152 ms, 7 slots of 20.57 ms; the load span is slot 0's middle
        // 80%, its call the load's middle 80%.
        let (n, s) = (times(&normal), times(&slow));
        assert_eq!(n[0], (0.0, 160.0));
        assert_eq!(n[1], (8.0, 152.0));
        assert_eq!(s[0], (0.0, 1160.0), "the root is longer by the extra");
        assert_eq!(s[1], (8.0, 1152.0));
        assert_eq!(s[2], (n[2].0, n[2].1 + 1000.0));
        assert_eq!(s[3], (n[3].0, n[3].1 + 1000.0));
        assert!(n[3].1 - n[3].0 < 20.0, "{:?}", n[3]);
        for i in 4..10 {
            assert_eq!(
                s[i],
                (n[i].0 + 1000.0, n[i].1 + 1000.0),
                "span {i} moves later"
            );
        }
        for (a, b) in normal.iter().zip(&slow) {
            assert_eq!(
                (&a.name, &a.span_id, &a.parent_span_id),
                (&b.name, &b.span_id, &b.parent_span_id)
            );
        }
        // Short traces slow their deepest span.
        assert_eq!(slow_span_index(3), 2);
        assert_eq!(slow_span_index(1), 0);
        let one = slow_trace_spans(&t, 1, 5);
        assert_eq!(times(&one), [(0.0, 165.0)]);
    }

    #[test]
    fn every_nth_trace_of_a_stream_is_slow() {
        let slow = SlowSpans {
            every: 3,
            extra_ms: 700,
        };
        let extras: Vec<u32> = (0..7).map(|n| slow.extra_ms(n)).collect();
        assert_eq!(extras, [0, 0, 700, 0, 0, 700, 0]);
        assert_eq!(SlowSpans::NONE.extra_ms(0), 0);
        // In a request, trace i is number first + i.
        let traces = traces();
        let request = export_request_slow(&traces[..2], 10, slow, 1);
        let roots: Vec<u64> = request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans[0].spans)
            .filter(|s| s.parent_span_id.is_empty())
            .map(|s| (s.end_time_unix_nano - s.start_time_unix_nano) / NANOS_PER_MS)
            .collect();
        assert_eq!(roots, [183, 91 + 700]);
    }

    #[test]
    fn json_has_hex_ids_and_string_times() {
        let request = export_request_slow(
            &traces()[..1],
            4,
            SlowSpans {
                every: 1,
                extra_ms: 10,
            },
            0,
        );
        let json = to_json(&request);
        let spans = json["resourceSpans"][0]["scopeSpans"][0]["spans"]
            .as_array()
            .unwrap();
        assert_eq!(spans.len(), 4);
        assert_eq!(spans[0]["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(spans[0]["parentSpanId"], "");
        assert_eq!(spans[3]["parentSpanId"], spans[2]["spanId"]);
        assert_eq!(spans[0]["kind"], SpanKind::Server as i32);
        assert_eq!(spans[0]["startTimeUnixNano"], "1795363200123456789");
        assert_eq!(spans[0]["endTimeUnixNano"], "1795363200316456789");
        assert_eq!(
            json["resourceSpans"][0]["resource"]["attributes"][0],
            serde_json::json!({"key": "service.name", "value": {"stringValue": "checkout"}})
        );
        assert_eq!(
            spans[0]["attributes"][1]["value"]["stringValue"],
            "/api/checkout"
        );
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
