//! Trace by ID: `GET /api/traces/{id}` (every version) and `GET /api/v2/traces/{id}` (v3),
//! in every shape Tempo v2.0.1 and v3.0.3 answer (see `testdata/tempo/README.md`, "Trace by ID").
//!
//! - The fetcher asks `/api/traces/{32 hex digits}` with `Accept: application/protobuf`: a
//!   `tempopb.Trace`, whose field 1 (repeated OTLP `ResourceSpans`) is the wire layout of OTLP
//!   `TracesData`. Only v3 refuses a trace over its `max_bytes_per_trace` there (422); the
//!   fetcher then asks `/api/v2/traces/{id}`, which answers with the part Tempo kept, marked
//!   `PARTIAL`.
//! - Any answer is read by its `Content-Type`, with guards for a label that does not match the
//!   body (a proxy or another version): protobuf, Tempo's JSON (`batches` or v3's
//!   `{"trace":{"resourceSpans":…}}`, base64 IDs, old `instrumentationLibrarySpans`), and v3's
//!   simplified `application/vnd.grafana.llm+json` (hex IDs, flat attributes).
//! - Not found: v2.0.1's 404 `trace not found`, v3's 404 with an empty body, and v3 `/api/v2`'s
//!   200 with an empty `trace`; a 200 without spans is treated the same. Any other 404 (the
//!   router's `404 page not found`: a wrong URL) is an error.
//! - 4xx are not retried; 5xx, 429, timeouts and connection errors are, with backoff.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anomaly_core::TraceId;
use base64::Engine as _;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, TracesData};
use prost::Message as _;
use reqwest::header::ACCEPT;
use serde_json::{Map, Value, json};

use super::{TempoError, TempoHttp, TempoResponse, TempoSection};

/// Which trace-by-ID endpoint answered; their bodies differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceApi {
    /// `/api/traces/{id}`: `tempopb.Trace` / `{"batches":[…]}`.
    V1,
    /// `/api/v2/traces/{id}` (v3 only): `TraceByIDResponse` /
    /// `{"trace":{"resourceSpans":[…]},"metrics":{…}}`.
    V2,
}

impl TraceApi {
    /// The request path for `id` (32 lower-case hex digits).
    pub fn path(self, id: &TraceId) -> String {
        match self {
            TraceApi::V1 => format!("/api/traces/{id}"),
            TraceApi::V2 => format!("/api/v2/traces/{id}"),
        }
    }
}

/// A trace Tempo found.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchedTrace {
    /// Its spans, grouped by resource as Tempo keeps them (at least one span).
    pub resource_spans: Vec<ResourceSpans>,
    /// Tempo's message when it returned only part of the trace (over `max_bytes_per_trace`).
    /// A trace whose root has not arrived is not marked: its root is simply missing.
    pub partial: Option<String>,
}

impl FetchedTrace {
    pub fn span_count(&self) -> usize {
        span_count(&self.resource_spans)
    }
}

/// Called after every request with its outcome label (`200`, `404`, `timeout`, …, as
/// [`TempoError::metric_label`]) and how long it took.
pub type Observer = Arc<dyn Fn(&str, Duration) + Send + Sync>;

/// Fetches traces by ID from one Tempo; cheap to clone (clones share the request count).
#[derive(Clone)]
pub struct TraceFetcher {
    http: TempoHttp,
    requests: Arc<AtomicU64>,
    observer: Option<Observer>,
}

impl fmt::Debug for TraceFetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceFetcher")
            .field("http", &self.http)
            .field("requests", &self.requests)
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

impl TraceFetcher {
    /// A fetcher for `settings.url` (tenant, auth, timeout, retries and body cap as configured).
    pub fn new(settings: &TempoSection, user_agent: &str) -> Result<Self, reqwest::Error> {
        Ok(Self::from_http(TempoHttp::new(settings, user_agent)?))
    }

    /// A fetcher sharing an existing client.
    pub fn from_http(http: TempoHttp) -> Self {
        TraceFetcher {
            http,
            requests: Arc::new(AtomicU64::new(0)),
            observer: None,
        }
    }

    /// Reports every request to `observer` (for metrics).
    pub fn with_observer(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    pub fn http(&self) -> &TempoHttp {
        &self.http
    }

    /// HTTP requests sent so far, retries included.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The spans of trace `id` grouped by resource, or `None` when Tempo does not know it.
    pub async fn fetch(&self, id: &TraceId) -> Result<Option<Vec<ResourceSpans>>, TempoError> {
        Ok(self.fetch_trace(id).await?.map(|t| t.resource_spans))
    }

    /// Trace `id`, saying whether Tempo returned only part of it; `None` when not found.
    pub async fn fetch_trace(&self, id: &TraceId) -> Result<Option<FetchedTrace>, TempoError> {
        match self.fetch_from(TraceApi::V1, id).await {
            Err(TempoError::Status { status: 422, body })
                if body.starts_with("trace exceeds max size") =>
            {
                // v3 refuses an oversized trace here but returns what it kept on /api/v2; v2.0.1
                // has no /api/v2 (its router answers 404), so the refusal stands.
                let refusal = TempoError::Status { status: 422, body };
                match self.fetch_from(TraceApi::V2, id).await {
                    Ok(Some(mut trace)) => {
                        trace.partial.get_or_insert_with(|| refusal.to_string());
                        Ok(Some(trace))
                    }
                    Ok(None) | Err(_) => Err(refusal),
                }
            }
            other => other,
        }
    }

    /// Trace `id` from one endpoint, with retries.
    pub async fn fetch_from(
        &self,
        api: TraceApi,
        id: &TraceId,
    ) -> Result<Option<FetchedTrace>, TempoError> {
        let url = self.http.url(&api.path(id));
        self.http
            .retry("trace by id", |_| self.fetch_once(api, &url, id))
            .await
    }

    #[tracing::instrument(name = "tempo trace by id", level = "debug", skip_all, fields(trace_id = %id))]
    async fn fetch_once(
        &self,
        api: TraceApi,
        url: &str,
        id: &TraceId,
    ) -> Result<Option<FetchedTrace>, TempoError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let request = self.http.get(url).header(ACCEPT, "application/protobuf");
        let result = match self.http.send(request).await {
            Ok(response) => parse_trace_response(api, &response)
                .and_then(|trace| trace.map(|t| only_trace(t, id)).transpose()),
            Err(e) => Err(e),
        };
        if let Some(observe) = &self.observer {
            let label = match &result {
                Ok(Some(_)) => "200".to_owned(),
                Ok(None) => "404".to_owned(),
                Err(e) => e.metric_label(),
            };
            observe(&label, started.elapsed());
        }
        result
    }
}

/// Keeps the spans of trace `id`: Tempo sends no others, so any are a proxy's or cache's mix-up
/// and are dropped (with a warning); a trace left without spans is refused.
fn only_trace(mut trace: FetchedTrace, id: &TraceId) -> Result<FetchedTrace, TempoError> {
    let before = trace.span_count();
    let mine = |span_id: &[u8]| {
        <&[u8; 16]>::try_from(span_id).is_ok_and(|b| TraceId::from_bytes(b) == *id)
    };
    for resource in &mut trace.resource_spans {
        for scope in &mut resource.scope_spans {
            scope.spans.retain(|s| mine(&s.trace_id));
        }
        resource.scope_spans.retain(|s| !s.spans.is_empty());
    }
    trace.resource_spans.retain(|r| !r.scope_spans.is_empty());
    let after = trace.span_count();
    if after == 0 {
        return Err(TempoError::Malformed(format!(
            "asked for trace {id}, got {before} spans of other traces"
        )));
    }
    if after < before {
        tracing::warn!(trace_id = %id, dropped = before - after, "tempo's answer held spans of other traces");
    }
    Ok(trace)
}

fn span_count(resource_spans: &[ResourceSpans]) -> usize {
    resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

/// How a body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    Protobuf,
    /// Tempo's protobuf-JSON (base64 IDs), or the LLM shape (hex IDs), told apart by content.
    Json,
}

/// The encoding a `Content-Type` names, if it names one.
fn labelled(content_type: Option<&str>) -> Option<Body> {
    let media = content_type?.split(';').next()?.trim().to_ascii_lowercase();
    if media.contains("protobuf") {
        Some(Body::Protobuf)
    } else if media.contains("json") || media.starts_with("application/vnd.grafana.llm") {
        Some(Body::Json)
    } else {
        None
    }
}

/// Whether a body can only be JSON: its first non-blank byte is `{`. A protobuf `Trace` starts
/// with field 1 (`0x0a`, a blank in JSON, hence "non-blank"), and `{` (0x7b) would be field 15
/// as a group start, which no trace message has.
fn looks_like_json(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// One trace-by-ID answer read: `Ok(None)` for Tempo's "not found" answers, an error for any
/// other failure status or a body that is neither encoding.
pub fn parse_trace_response(
    api: TraceApi,
    response: &TempoResponse,
) -> Result<Option<FetchedTrace>, TempoError> {
    match response.status {
        200 => {}
        404 => {
            let text = response.text();
            return if text.is_empty() || text == "trace not found" {
                Ok(None)
            } else {
                Err(response.clone().into_error())
            };
        }
        _ => return Err(response.clone().into_error()),
    }
    let body = &response.body[..];
    let encoding = match labelled(response.content_type.as_deref()) {
        // A JSON body labelled protobuf (or the reverse) is read for what it is.
        Some(Body::Protobuf) if looks_like_json(body) => Body::Json,
        Some(Body::Json) if !body.is_empty() && !looks_like_json(body) => Body::Protobuf,
        Some(label) => label,
        None if looks_like_json(body) => Body::Json,
        None => Body::Protobuf,
    };
    let trace = match encoding {
        Body::Protobuf => decode_tempo_protobuf(api, body),
        Body::Json => decode_tempo_json(body),
    }
    .map_err(TempoError::Malformed)?;
    Ok((trace.span_count() > 0).then_some(trace))
}

/// `TraceByIDResponse` of v3's `/api/v2/traces` (`tempopb`): the trace, then metrics (skipped),
/// whether it is partial, and why.
#[derive(Clone, PartialEq, prost::Message)]
struct TraceByIdResponse {
    #[prost(message, optional, tag = "1")]
    trace: Option<TracesData>,
    #[prost(int32, tag = "3")]
    status: i32,
    #[prost(string, tag = "4")]
    message: String,
}

/// `TraceByIDResponse.status`: `COMPLETE = 0`, `PARTIAL = 1`.
const PARTIAL: i32 = 1;

/// A protobuf answer of `api`. An empty body is an empty trace.
pub fn decode_tempo_protobuf(api: TraceApi, body: &[u8]) -> Result<FetchedTrace, String> {
    match api {
        TraceApi::V1 => TracesData::decode(body)
            .map(|t| FetchedTrace {
                resource_spans: t.resource_spans,
                partial: None,
            })
            .map_err(|e| format!("not a tempopb.Trace: {e}")),
        TraceApi::V2 => TraceByIdResponse::decode(body)
            .map(|r| FetchedTrace {
                resource_spans: r.trace.unwrap_or_default().resource_spans,
                partial: (r.status == PARTIAL).then(|| partial_message(r.message)),
            })
            .map_err(|e| format!("not a tempopb.TraceByIDResponse: {e}")),
    }
}

fn partial_message(message: String) -> String {
    if message.is_empty() {
        "tempo returned a partial trace".to_owned()
    } else {
        message
    }
}

/// Tempo's JSON answer to trace by ID, either endpoint, into OTLP types:
/// - `{"batches":[ResourceSpans…]}` (`/api/traces`), also under `trace`;
/// - `{"trace":{"resourceSpans":[…]},"metrics":{…},"status":"PARTIAL","message":…}`
///   (`/api/v2/traces`; `{"trace":{}}` is an empty trace);
/// - `ResourceSpans` with `scopeSpans`, or Tempo 1.x's `instrumentationLibrarySpans` /
///   `instrumentationLibrary`;
/// - IDs (`traceId`, `spanId`, `parentSpanId`, `links[]`) as base64 of their bytes, which is
///   how protobuf-JSON writes bytes (OTLP/JSON writes hex: that dialect is
///   [`crate::otlp::decode_json`]);
/// - v3's LLM shape (`application/vnd.grafana.llm+json`: `{"trace":{"traceId":hex,
///   "services":[…]}}`, flat attributes), told apart by its `services` key.
pub fn decode_tempo_json(body: &[u8]) -> Result<FetchedTrace, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(mut top) = value else {
        return Err("not a JSON object".to_owned());
    };
    let mut partial = None;
    if top.get("status").and_then(Value::as_str) == Some("PARTIAL") {
        let message = top
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        partial = Some(partial_message(message));
    }
    let holder = match top.remove("trace") {
        Some(Value::Object(trace)) => trace,
        Some(Value::Null) | None => top,
        Some(other) => return Err(format!("`trace` is not an object: {other}")),
    };
    let resource_spans = if holder.contains_key("services") {
        llm_to_otlp(&holder)?
    } else {
        let batches = match (holder.get("batches"), holder.get("resourceSpans")) {
            (Some(b), _) | (None, Some(b)) => b.clone(),
            (None, None) if holder.is_empty() => Value::Array(Vec::new()),
            (None, None) => {
                let keys: Vec<&String> = holder.keys().collect();
                return Err(format!(
                    "no `batches`, `trace` or `resourceSpans` (keys: {keys:?})"
                ));
            }
        };
        let Value::Array(mut batches) = batches else {
            return Err("`batches` is not an array".to_owned());
        };
        for batch in &mut batches {
            tempo_batch_to_otlp(batch)?;
        }
        Value::Array(batches)
    };
    let request = crate::otlp::decode_value(json!({ "resourceSpans": resource_spans }))?;
    Ok(FetchedTrace {
        resource_spans: request.resource_spans,
        partial,
    })
}

/// One `batches` entry in Tempo's dialect made OTLP/JSON: old names renamed, IDs in hex.
fn tempo_batch_to_otlp(batch: &mut Value) -> Result<(), String> {
    let Value::Object(batch) = batch else {
        return Err("a batch is not an object".to_owned());
    };
    if !batch.contains_key("scopeSpans")
        && let Some(old) = batch.remove("instrumentationLibrarySpans")
    {
        batch.insert("scopeSpans".to_owned(), old);
    }
    let Some(Value::Array(scopes)) = batch.get_mut("scopeSpans") else {
        return Ok(());
    };
    for scope in scopes.iter_mut().filter_map(Value::as_object_mut) {
        if !scope.contains_key("scope")
            && let Some(old) = scope.remove("instrumentationLibrary")
        {
            scope.insert("scope".to_owned(), old);
        }
        let Some(Value::Array(spans)) = scope.get_mut("spans") else {
            continue;
        };
        for span in spans.iter_mut().filter_map(Value::as_object_mut) {
            ids_to_hex(span)?;
            if let Some(Value::Array(links)) = span.get_mut("links") {
                for link in links.iter_mut().filter_map(Value::as_object_mut) {
                    ids_to_hex(link)?;
                }
            }
        }
    }
    Ok(())
}

/// Rewrites the base64 ID fields of a span or link as hex.
fn ids_to_hex(object: &mut Map<String, Value>) -> Result<(), String> {
    for key in ["traceId", "spanId", "parentSpanId"] {
        if let Some(Value::String(s)) = object.get_mut(key) {
            let bytes = base64_bytes(s).ok_or_else(|| format!("`{key}` {s:?} is not base64"))?;
            *s = hex(&bytes);
        }
    }
    Ok(())
}

/// Protobuf-JSON bytes: standard or URL-safe base64, padded or not (as jsonpb reads them).
fn base64_bytes(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(s).ok())
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0x0f)] as char);
    }
    out
}

/// v3's LLM shape (`trace.services[].scopes[].spans[]`, hex IDs, attributes as flat JSON
/// objects) as OTLP/JSON `resourceSpans`. Attribute types come back from JSON: whole numbers
/// become `intValue`, others `doubleValue`.
fn llm_to_otlp(trace: &Map<String, Value>) -> Result<Value, String> {
    let trace_id = trace
        .get("traceId")
        .and_then(Value::as_str)
        .ok_or("the LLM shape has no `traceId`")?;
    let services = trace
        .get("services")
        .and_then(Value::as_array)
        .ok_or("`services` is not an array")?;
    let mut out = Vec::with_capacity(services.len());
    for service in services {
        let mut attributes = vec![json!({
            "key": "service.name",
            "value": {"stringValue": service.get("serviceName").and_then(Value::as_str).unwrap_or_default()},
        })];
        attributes.extend(flat_attributes(service.get("resource")));
        let mut scopes = Vec::new();
        for scope in service
            .get("scopes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let mut spans = Vec::new();
            for span in scope
                .get("spans")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let mut s = Map::new();
                s.insert("traceId".into(), json!(trace_id));
                for key in [
                    "spanId",
                    "parentSpanId",
                    "name",
                    "kind",
                    "startTimeUnixNano",
                    "endTimeUnixNano",
                ] {
                    if let Some(v) = span.get(key) {
                        s.insert(key.into(), v.clone());
                    }
                }
                s.insert(
                    "attributes".into(),
                    Value::Array(flat_attributes(span.get("attributes"))),
                );
                let events: Vec<Value> = span
                    .get("events")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        json!({
                            "name": e.get("name").cloned().unwrap_or(Value::Null),
                            "timeUnixNano": e.get("timeUnixNano").cloned().unwrap_or(Value::Null),
                            "attributes": flat_attributes(e.get("attributes")),
                        })
                    })
                    .collect();
                s.insert("events".into(), Value::Array(events));
                if let Some(status) = span.get("status") {
                    s.insert("status".into(), status.clone());
                }
                spans.push(Value::Object(s));
            }
            scopes.push(json!({
                "scope": {"name": scope.get("name"), "version": scope.get("version")},
                "spans": spans,
            }));
        }
        out.push(json!({"resource": {"attributes": attributes}, "scopeSpans": scopes}));
    }
    Ok(Value::Array(out))
}

fn flat_attributes(map: Option<&Value>) -> Vec<Value> {
    map.and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some(json!({"key": k, "value": any_value(v)?})))
        .collect()
}

fn any_value(v: &Value) -> Option<Value> {
    Some(match v {
        Value::String(s) => json!({"stringValue": s}),
        Value::Bool(b) => json!({"boolValue": b}),
        Value::Number(n) => match n.as_i64() {
            Some(i) => json!({"intValue": i.to_string()}),
            None => json!({"doubleValue": n.as_f64()?}),
        },
        Value::Array(items) => {
            json!({"arrayValue": {"values": items.iter().filter_map(any_value).collect::<Vec<_>>()}})
        }
        Value::Object(_) => json!({"kvlistValue": {"values": flat_attributes(Some(v))}}),
        Value::Null => return None,
    })
}
