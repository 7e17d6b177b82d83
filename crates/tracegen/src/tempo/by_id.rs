//! Trace by ID on the fake Tempo: `GET /api/traces/{id}` (both modes) and `/api/v2/traces/{id}`
//! ([`Mode::V3`] only), in the shapes recorded in `testdata/tempo/v*/traces/` (see the README's
//! "Trace by ID").
//!
//! - IDs are parsed as Tempo does: hex in either case, left-padded; a non-hex character is 400
//!   `trace IDs can only contain hex characters: invalid character 'n' at position 1`, more than
//!   128 bits is 400 `trace IDs can't be larger than 128 bits`. `start`/`end` are checked as
//!   Tempo checks them, but every trace here is "recent", so they never hide one.
//! - The answer's encoding follows `Accept`: v2.0.1 gives protobuf for exactly
//!   `application/protobuf`; v3 for any value containing it, and knows
//!   `application/vnd.grafana.llm` (the same JSON under that type on `/api/traces`; the
//!   simplified shape with hex IDs on `/api/v2/traces`). Anything else is JSON.
//! - JSON is protobuf-JSON: IDs in base64, 64-bit numbers as strings, enum names, zero values
//!   omitted (`"status":{}` when unset), one `batches` entry per resource.
//! - Not found: v2.0.1 404 `trace not found`; v3 `/api/traces` 404 with an empty body and no
//!   `Content-Type`; v3 `/api/v2/traces` 200 with an empty trace (`0a 00 12 00` in protobuf).
//! - Over [`FakeTempo::set_max_bytes_per_trace`] (v3): `/api/traces` is 422 `trace exceeds max
//!   size (max bytes: N)`, `/api/v2/traces` 200 with the trace marked `PARTIAL`.
//!
//! A trace's spans are those loaded with [`FakeTempo::load_spans`]; a trace only listed for
//! search ([`FakeTempo::upsert`]) gets spans made by the span source
//! ([`FakeTempo::set_span_source`]), by default [`crate::otlp::export_request`]'s root and
//! children over the listed duration (children only, while the trace is partial).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, TracesData};
use prost::Message as _;
use serde_json::{Map, Value, json};

use super::{FakeTempo, Fault, Mode, Trace, base64, check_auth, text};
use crate::traffic::{GenTrace, Root};

/// What makes a listed trace's spans.
pub type SpanFn = dyn Fn(&Trace) -> Vec<ResourceSpans> + Send + Sync;

/// Makes the spans of a trace that was listed for search but never given spans.
#[derive(Clone)]
pub struct SpanSource(pub Arc<SpanFn>);

impl SpanSource {
    pub fn new(f: impl Fn(&Trace) -> Vec<ResourceSpans> + Send + Sync + 'static) -> Self {
        SpanSource(Arc::new(f))
    }
}

impl fmt::Debug for SpanSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SpanSource")
    }
}

/// One trace-by-ID request as the fake saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceRequest {
    pub path: String,
    pub accept: Option<String>,
    pub org_id: Option<String>,
    pub authorization: Option<String>,
    pub user_agent: Option<String>,
    pub status: u16,
    /// The answer's `Content-Type`, if any.
    pub content_type: Option<String>,
}

/// Which endpoint was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    V1,
    V2,
}

/// How the answer is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
    Llm,
}

/// `TraceByIDResponse` of Tempo v3 (`tempopb`): trace, metrics (always empty here), status,
/// message.
#[derive(Clone, PartialEq, prost::Message)]
struct TraceByIdResponse {
    #[prost(message, optional, tag = "1")]
    trace: Option<TracesData>,
    #[prost(message, optional, tag = "2")]
    metrics: Option<EmptyMetrics>,
    #[prost(int32, tag = "3")]
    status: i32,
    #[prost(string, tag = "4")]
    message: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EmptyMetrics {}

/// The 32 lower-case hex digits of a trace ID as Tempo parses one, or its 400 message.
pub(super) fn parse_trace_id(raw: &str) -> Result<String, String> {
    if let Some((pos, c)) = raw
        .chars()
        .enumerate()
        .find(|(_, c)| !c.is_ascii_hexdigit())
    {
        return Err(format!(
            "trace IDs can only contain hex characters: invalid character '{c}' at position {}",
            pos + 1
        ));
    }
    // Tempo pads an odd length, decodes, then counts bytes (leading zeros count too).
    if raw.len().div_ceil(2) > 16 {
        return Err("trace IDs can't be larger than 128 bits".to_owned());
    }
    Ok(format!("{:0>32}", raw.to_ascii_lowercase()))
}

/// The trace's spans grouped by resource and scope, one group per resource span.
pub(super) fn spans_by_trace(
    resource_spans: Vec<ResourceSpans>,
) -> HashMap<String, Vec<ResourceSpans>> {
    let mut out: HashMap<String, Vec<ResourceSpans>> = HashMap::new();
    for resource in resource_spans {
        let mut per_trace: HashMap<String, ResourceSpans> = HashMap::new();
        for scope in &resource.scope_spans {
            for span in &scope.spans {
                let id = hex(&span.trace_id);
                let entry = per_trace.entry(id).or_insert_with(|| ResourceSpans {
                    resource: resource.resource.clone(),
                    schema_url: resource.schema_url.clone(),
                    scope_spans: Vec::new(),
                });
                match entry
                    .scope_spans
                    .iter_mut()
                    .find(|s| s.scope == scope.scope && s.schema_url == scope.schema_url)
                {
                    Some(s) => s.spans.push(span.clone()),
                    None => {
                        let mut s = scope.clone();
                        s.spans = vec![span.clone()];
                        entry.scope_spans.push(s);
                    }
                }
            }
        }
        for (id, r) in per_trace {
            out.entry(id).or_default().push(r);
        }
    }
    out
}

/// How search lists a trace with these spans: its root's service, name, start and duration,
/// or a partial trace over the spans that arrived.
pub(super) fn listing(trace_id: &str, resource_spans: &[ResourceSpans]) -> Option<Trace> {
    let mut root = None;
    let (mut start, mut end) = (u64::MAX, 0u64);
    for resource in resource_spans {
        for span in resource.scope_spans.iter().flat_map(|s| &s.spans) {
            start = start.min(span.start_time_unix_nano);
            end = end.max(span.end_time_unix_nano);
            if span.parent_span_id.is_empty() {
                root = Some((service_name(resource), span));
            }
        }
    }
    if start == u64::MAX {
        return None;
    }
    Some(match root {
        Some((service, span)) => Trace::new(
            trace_id,
            service,
            span.name.clone(),
            span.start_time_unix_nano,
            millis(
                span.end_time_unix_nano
                    .saturating_sub(span.start_time_unix_nano),
            ),
        ),
        None => Trace::partial(trace_id, start, millis(end.saturating_sub(start))),
    })
}

fn millis(nanos: u64) -> u32 {
    u32::try_from(nanos / 1_000_000).unwrap_or(u32::MAX)
}

fn service_name(resource: &ResourceSpans) -> String {
    resource
        .resource
        .iter()
        .flat_map(|r| &r.attributes)
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The default span source: tracegen's OTLP shape for the listed trace, `spans_per_trace`
/// spans (the root dropped while the trace is partial, so its children point at a missing
/// parent, as Tempo answers then).
pub(super) fn generated_spans(trace: &Trace, spans_per_trace: usize) -> Vec<ResourceSpans> {
    let partial = trace.root_name.is_none();
    let generated = GenTrace {
        trace_id: format!("{:0>32}", trace.trace_id.to_ascii_lowercase()),
        service: trace.root_service.clone(),
        endpoint: trace.root_name.clone().unwrap_or_default(),
        start_unix_nano: trace.start_unix_nano,
        duration_ms: trace.duration_ms,
        anomaly: false,
        root: if partial { Root::Lost } else { Root::OnTime },
    };
    let mut resource_spans =
        crate::otlp::export_request(&[generated], spans_per_trace).resource_spans;
    if partial {
        for scope in resource_spans.iter_mut().flat_map(|r| &mut r.scope_spans) {
            scope.spans.retain(|s| !s.parent_span_id.is_empty());
        }
    }
    resource_spans
}

pub(super) async fn trace_v1(
    State(tempo): State<FakeTempo>,
    Path(id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    lookup(&tempo, Api::V1, &id, &query, &headers).await
}

pub(super) async fn trace_v2(
    State(tempo): State<FakeTempo>,
    Path(id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    if tempo.lock().mode == Mode::V2 {
        return page_not_found();
    }
    lookup(&tempo, Api::V2, &id, &query, &headers).await
}

/// The router's own 404, for paths Tempo does not serve.
pub(super) fn page_not_found() -> Response {
    text(StatusCode::NOT_FOUND, "404 page not found")
}

async fn lookup(
    tempo: &FakeTempo,
    api: Api,
    raw_id: &str,
    query: &[(String, String)],
    headers: &HeaderMap,
) -> Response {
    let delay = tempo.lock().trace_delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let header = |name| {
        headers
            .get(name)
            .and_then(|v: &header::HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut log = TraceRequest {
        path: match api {
            Api::V1 => format!("/api/traces/{raw_id}"),
            Api::V2 => format!("/api/v2/traces/{raw_id}"),
        },
        accept: header(header::ACCEPT),
        org_id: header(header::HeaderName::from_static("x-scope-orgid")),
        authorization: header(header::AUTHORIZATION),
        user_agent: header(header::USER_AGENT),
        status: 0,
        content_type: None,
    };
    let response = answer(tempo, api, raw_id, query, headers, log.org_id.as_deref());
    log.status = response.status().as_u16();
    log.content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    tempo.lock().trace_requests.push(log);
    response
}

fn answer(
    tempo: &FakeTempo,
    api: Api,
    raw_id: &str,
    query: &[(String, String)],
    headers: &HeaderMap,
    org_id: Option<&str>,
) -> Response {
    if let Some(denied) = check_auth(&tempo.lock().auth, headers) {
        return denied;
    }
    let tenant = tempo.lock().tenant.clone();
    if tenant.is_some() && org_id.is_none() {
        return text(StatusCode::UNAUTHORIZED, "no org id");
    }
    let id = match parse_trace_id(raw_id) {
        Ok(id) => id,
        Err(msg) => return text(StatusCode::BAD_REQUEST, msg),
    };
    if let Err(msg) = check_window(query) {
        return text(StatusCode::BAD_REQUEST, msg);
    }
    if let Some(fault) = tempo.take_trace_fault() {
        return match fault {
            Fault::Status(code, body) => text(
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                body,
            ),
            Fault::Malformed => typed("application/json", b"<html>502 Bad Gateway</html>".to_vec()),
            Fault::Truncated => typed(
                "application/json",
                br#"{"batches":[{"resource":{"attributes":[{"key":"service.na"#.to_vec(),
            ),
            Fault::Huge(bytes) => {
                let mut body = br#"{"batches":[],"padding":""#.to_vec();
                body.resize(bytes.saturating_sub(2), b'x');
                body.extend_from_slice(b"\"}");
                typed("application/json", body)
            }
        };
    }
    let (mode, max_bytes) = {
        let s = tempo.lock();
        (s.mode, s.max_bytes_per_trace)
    };
    let other_tenant = tenant.is_some() && tenant.as_deref() != org_id;
    let spans = if other_tenant {
        None
    } else {
        tempo.spans_of(&id)
    };
    let encoding = encoding(mode, headers);
    let Some(resource_spans) = spans else {
        return not_found(mode, api, encoding);
    };
    let data = TracesData { resource_spans };
    let size = data.encoded_len();
    let partial = match max_bytes {
        Some(max) if mode == Mode::V3 && size > max => match api {
            Api::V1 => {
                return text(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("trace exceeds max size (max bytes: {max})"),
                );
            }
            Api::V2 => Some(format!(
                "Trace exceeds maximum size of {max} bytes, a partial trace is returned"
            )),
        },
        _ => None,
    };
    match (api, encoding) {
        (Api::V1, Encoding::Protobuf) => typed("application/protobuf", data.encode_to_vec()),
        (Api::V2, Encoding::Protobuf) => typed(
            "application/protobuf",
            TraceByIdResponse {
                trace: Some(data),
                metrics: Some(EmptyMetrics {}),
                status: i32::from(partial.is_some()),
                message: partial.unwrap_or_default(),
            }
            .encode_to_vec(),
        ),
        (Api::V1, Encoding::Json | Encoding::Llm) => {
            let body = json!({ "batches": tempo_json(&data.resource_spans) });
            let content_type = if encoding == Encoding::Llm {
                "application/vnd.grafana.llm"
            } else {
                "application/json"
            };
            typed(content_type, body.to_string().into_bytes())
        }
        (Api::V2, Encoding::Json) => {
            let mut body = Map::new();
            body.insert(
                "trace".into(),
                json!({ "resourceSpans": tempo_json(&data.resource_spans) }),
            );
            body.insert("metrics".into(), json!({}));
            if let Some(message) = partial {
                body.insert("status".into(), json!("PARTIAL"));
                body.insert("message".into(), json!(message));
            }
            typed(
                "application/json",
                Value::Object(body).to_string().into_bytes(),
            )
        }
        (Api::V2, Encoding::Llm) => typed(
            "application/vnd.grafana.llm+json",
            json!({ "trace": llm_json(&id, &data.resource_spans) })
                .to_string()
                .into_bytes(),
        ),
    }
}

/// `start`/`end` as Tempo checks them on trace by ID (unix seconds; `end` after `start`).
fn check_window(query: &[(String, String)]) -> Result<(), String> {
    let get = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let parse = |name: &str| -> Result<Option<i64>, String> {
        get(name)
            .map(|raw| {
                raw.parse::<i64>().map_err(|_| {
                    format!("invalid {name}: strconv.ParseInt: parsing {raw:?}: invalid syntax")
                })
            })
            .transpose()
    };
    let (start, end) = (parse("start")?, parse("end")?);
    if let (Some(start), Some(end)) = (start, end)
        && end <= start
    {
        return Err(format!(
            "http parameter start must be before end. received start={start} end={end}"
        ));
    }
    Ok(())
}

fn encoding(mode: Mode, headers: &HeaderMap) -> Encoding {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match mode {
        Mode::V2 if accept == "application/protobuf" => Encoding::Protobuf,
        Mode::V2 => Encoding::Json,
        Mode::V3 if accept.contains("application/protobuf") => Encoding::Protobuf,
        Mode::V3 if accept.contains("application/vnd.grafana.llm") => Encoding::Llm,
        Mode::V3 => Encoding::Json,
    }
}

fn not_found(mode: Mode, api: Api, encoding: Encoding) -> Response {
    match (mode, api) {
        (Mode::V2, _) => text(StatusCode::NOT_FOUND, "trace not found"),
        (Mode::V3, Api::V1) => StatusCode::NOT_FOUND.into_response(),
        (Mode::V3, Api::V2) => match encoding {
            Encoding::Protobuf => typed(
                "application/protobuf",
                TraceByIdResponse {
                    trace: Some(TracesData::default()),
                    metrics: Some(EmptyMetrics {}),
                    status: 0,
                    message: String::new(),
                }
                .encode_to_vec(),
            ),
            _ => typed("application/json", br#"{"trace":{},"metrics":{}}"#.to_vec()),
        },
    }
}

fn typed(content_type: &'static str, body: Vec<u8>) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Resource spans in Tempo's protobuf-JSON: the generated serde form (hex IDs, numeric enums)
/// rewritten with base64 IDs, enum names and zero values omitted.
fn tempo_json(resource_spans: &[ResourceSpans]) -> Value {
    let mut value = serde_json::to_value(resource_spans).unwrap_or(Value::Array(Vec::new()));
    jsonpb(&mut value, None);
    value
}

fn jsonpb(value: &mut Value, key: Option<&str>) {
    const KINDS: [&str; 6] = [
        "SPAN_KIND_UNSPECIFIED",
        "SPAN_KIND_INTERNAL",
        "SPAN_KIND_SERVER",
        "SPAN_KIND_CLIENT",
        "SPAN_KIND_PRODUCER",
        "SPAN_KIND_CONSUMER",
    ];
    const CODES: [&str; 3] = ["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"];
    let name = |n: &serde_json::Number, names: &[&'static str]| {
        n.as_u64()
            .filter(|i| *i > 0)
            .and_then(|i| names.get(usize::try_from(i).ok()?).copied())
    };
    match value {
        Value::Object(map) => {
            // Zero values are omitted (an unset status stays as `{}`); attribute values are
            // kept whatever they hold.
            map.retain(|k, v| match v {
                Value::Null => false,
                _ if k.ends_with("Value") => true,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty() && s != "0",
                Value::Array(a) => !a.is_empty(),
                Value::Bool(b) => *b,
                Value::Object(_) => true,
            });
            for (k, v) in map.iter_mut() {
                match (k.as_str(), &mut *v) {
                    ("traceId" | "spanId" | "parentSpanId", Value::String(s)) => {
                        *s = base64(&unhex(s));
                    }
                    ("kind", Value::Number(n)) => {
                        if let Some(name) = name(n, &KINDS) {
                            *v = json!(name);
                        }
                    }
                    ("code", Value::Number(n)) if key == Some("status") => {
                        if let Some(name) = name(n, &CODES) {
                            *v = json!(name);
                        }
                    }
                    // 64-bit integers are strings in protobuf-JSON.
                    ("intValue", Value::Number(n)) => *v = json!(n.to_string()),
                    _ => jsonpb(v, Some(k)),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| jsonpb(i, key)),
        _ => {}
    }
}

/// v3's simplified LLM shape: hex IDs, services with flat resource attributes, spans with flat
/// attributes and `durationMs`.
fn llm_json(trace_id: &str, resource_spans: &[ResourceSpans]) -> Value {
    let services: Vec<Value> = resource_spans
        .iter()
        .map(|r| {
            let resource: Map<String, Value> = r
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .filter(|kv| kv.key != "service.name")
                .map(|kv| (kv.key.clone(), flat(kv.value.as_ref())))
                .collect();
            let scopes: Vec<Value> = r
                .scope_spans
                .iter()
                .map(|s| {
                    let spans: Vec<Value> = s
                        .spans
                        .iter()
                        .map(|span| {
                            let mut m = Map::new();
                            m.insert("spanId".into(), json!(hex(&span.span_id)));
                            m.insert("name".into(), json!(span.name));
                            if !span.parent_span_id.is_empty() {
                                m.insert("parentSpanId".into(), json!(hex(&span.parent_span_id)));
                            }
                            m.insert("kind".into(), json!(kind_name(span.kind)));
                            m.insert(
                                "startTimeUnixNano".into(),
                                json!(span.start_time_unix_nano.to_string()),
                            );
                            m.insert(
                                "endTimeUnixNano".into(),
                                json!(span.end_time_unix_nano.to_string()),
                            );
                            m.insert(
                                "durationMs".into(),
                                json!(millis(
                                    span.end_time_unix_nano
                                        .saturating_sub(span.start_time_unix_nano)
                                )),
                            );
                            let attributes: Map<String, Value> = span
                                .attributes
                                .iter()
                                .map(|kv| (kv.key.clone(), flat(kv.value.as_ref())))
                                .collect();
                            m.insert("attributes".into(), Value::Object(attributes));
                            let code = span.status.as_ref().map_or(0, |s| s.code);
                            let codes = ["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"];
                            m.insert(
                                "status".into(),
                                json!({
                                    "code": codes.get(code as usize).copied().unwrap_or("STATUS_CODE_UNSET"),
                                    "message": span.status.as_ref().map(|s| s.message.clone()).unwrap_or_default(),
                                }),
                            );
                            Value::Object(m)
                        })
                        .collect();
                    let scope = s.scope.clone().unwrap_or_default();
                    json!({"name": scope.name, "version": scope.version, "spans": spans})
                })
                .collect();
            let mut m = Map::new();
            m.insert("serviceName".into(), json!(service_name(r)));
            if !resource.is_empty() {
                m.insert("resource".into(), Value::Object(resource));
            }
            m.insert("scopes".into(), Value::Array(scopes));
            Value::Object(m)
        })
        .collect();
    json!({"traceId": trace_id, "services": services})
}

fn kind_name(kind: i32) -> &'static str {
    match kind {
        1 => "SPAN_KIND_INTERNAL",
        2 => "SPAN_KIND_SERVER",
        3 => "SPAN_KIND_CLIENT",
        4 => "SPAN_KIND_PRODUCER",
        5 => "SPAN_KIND_CONSUMER",
        _ => "SPAN_KIND_UNSPECIFIED",
    }
}

fn flat(value: Option<&AnyValue>) -> Value {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => json!(s),
        Some(any_value::Value::BoolValue(b)) => json!(b),
        Some(any_value::Value::IntValue(i)) => json!(i),
        Some(any_value::Value::DoubleValue(d)) => json!(d),
        Some(any_value::Value::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(|v| flat(Some(v))).collect())
        }
        Some(any_value::Value::KvlistValue(kv)) => Value::Object(
            kv.values
                .iter()
                .map(|kv| (kv.key.clone(), flat(kv.value.as_ref())))
                .collect(),
        ),
        Some(any_value::Value::BytesValue(b)) => json!(base64(b)),
        None => Value::Null,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}
