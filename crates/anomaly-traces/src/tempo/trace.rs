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

/// Whether a body starts like JSON: `{` after JSON blanks. Only a hint: a protobuf body starts
/// with field 1 (`0x0a`, a JSON blank) and its length may well be 123 (`{`).
fn looks_like_json(body: &[u8]) -> bool {
    body.iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        == Some(&b'{')
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
    // The label decides what is tried first; a body it does not fit (a JSON body labelled
    // protobuf by a proxy, say) is tried as the other encoding before it is refused.
    let first = match labelled(response.content_type.as_deref()) {
        Some(label) => label,
        None if looks_like_json(body) => Body::Json,
        None => Body::Protobuf,
    };
    let decode = |encoding| match encoding {
        Body::Protobuf => decode_tempo_protobuf(api, body),
        Body::Json => decode_tempo_json(body),
    };
    let trace = match decode(first) {
        Ok(trace) => trace,
        Err(e) => {
            let other = match first {
                Body::Protobuf => Body::Json,
                Body::Json => Body::Protobuf,
            };
            decode(other).map_err(|_| TempoError::Malformed(e))?
        }
    };
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};

    use opentelemetry_proto::tonic::trace::v1::Span;

    use super::*;

    fn traces_dir(version: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/tempo")
            .join(version)
            .join("traces")
    }

    /// One recording: its URL, status, `Content-Type` and body.
    fn recording(dir: &Path, stem: &str) -> (String, TempoResponse) {
        let url = std::fs::read_to_string(dir.join(format!("{stem}.url"))).unwrap();
        let headers = std::fs::read_to_string(dir.join(format!("{stem}.headers"))).unwrap();
        let status = headers.split_whitespace().nth(1).unwrap().parse().unwrap();
        let content_type = headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        });
        let body = std::fs::read(dir.join(format!("{stem}.pb")))
            .or_else(|_| std::fs::read(dir.join(format!("{stem}.json"))))
            .unwrap();
        (
            url.trim().to_owned(),
            TempoResponse {
                status,
                content_type,
                body,
            },
        )
    }

    /// The spans pushed to Tempo (OTLP/JSON, hex IDs), by (trace ID, span ID).
    fn pushed(dir: &Path) -> HashMap<(Vec<u8>, Vec<u8>), (String, Span)> {
        let mut out = HashMap::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if !path.to_string_lossy().ends_with(".otlp.json") {
                continue;
            }
            let request = crate::otlp::decode_json(&std::fs::read(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for resource in request.resource_spans {
                let service = service_name(&resource);
                for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                    out.insert(
                        (span.trace_id.clone(), span.span_id.clone()),
                        (service.clone(), span),
                    );
                }
            }
        }
        out
    }

    fn service_name(resource: &ResourceSpans) -> String {
        resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .map(|v| format!("{v:?}"))
            .unwrap_or_default()
    }

    /// The parts of a span Tempo must give back as pushed; attributes sorted, since Tempo does
    /// not keep their order.
    fn essence(span: &Span) -> String {
        let mut attributes: Vec<String> = span
            .attributes
            .iter()
            .map(|kv| format!("{}={:?}", kv.key, kv.value))
            .collect();
        attributes.sort();
        let links: Vec<_> = span
            .links
            .iter()
            .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
            .collect();
        format!(
            "{} {} parent={} {:?} kind={} {}..{} {attributes:?} events={} links={links:?} status={:?}",
            hex(&span.trace_id),
            hex(&span.span_id),
            hex(&span.parent_span_id),
            span.name,
            span.kind,
            span.start_time_unix_nano,
            span.end_time_unix_nano,
            span.events.len(),
            span.status.as_ref().map(|s| s.code).unwrap_or_default(),
        )
    }

    /// Every recorded trace-by-ID answer of both versions: each 200 with spans gives back
    /// exactly the spans pushed (IDs, parents, times, attributes, links, status), whatever its
    /// encoding (protobuf, Tempo's base64 JSON, v3's `/api/v2` wrapper and LLM shape); each
    /// not-found answer (v2 `trace not found`, v3's empty 404, v3 `/api/v2`'s empty trace) is
    /// `None`; each error is a status that is not retried.
    #[test]
    fn every_recorded_trace_by_id_answer_is_handled() {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for version in ["v2.0.1", "v3.0.3"] {
            let dir = traces_dir(version);
            let pushed = pushed(&dir);
            let mut stems: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .filter_map(|e| {
                    let name = e.unwrap().file_name().into_string().unwrap();
                    name.strip_suffix(".url").map(str::to_owned)
                })
                .collect();
            stems.sort();
            assert!(stems.len() >= 49, "{version}: {} recordings", stems.len());
            for stem in stems {
                let (url, response) = recording(&dir, &stem);
                let name = format!("{version}/{stem} ({url})");
                let api = if url.starts_with("/api/v2/") {
                    TraceApi::V2
                } else {
                    TraceApi::V1
                };
                let result = parse_trace_response(api, &response);
                match (response.status, result) {
                    (200, Ok(Some(trace))) => {
                        let id = url
                            .split('/')
                            .next_back()
                            .unwrap()
                            .split('?')
                            .next()
                            .unwrap();
                        let id = TraceId::parse(id).unwrap();
                        let mut count = 0;
                        for resource in &trace.resource_spans {
                            let service = service_name(resource);
                            for span in resource.scope_spans.iter().flat_map(|s| &s.spans) {
                                assert_eq!(
                                    TraceId::from_bytes(span.trace_id[..].try_into().unwrap()),
                                    id,
                                    "{name}"
                                );
                                let (want_service, want) = pushed
                                    .get(&(span.trace_id.clone(), span.span_id.clone()))
                                    .unwrap_or_else(|| panic!("{name}: a span never pushed"));
                                assert_eq!(&service, want_service, "{name}");
                                assert_eq!(essence(span), essence(want), "{name}");
                                count += 1;
                            }
                        }
                        let pushed_count = pushed
                            .keys()
                            .filter(|(t, _)| TraceId::from_bytes(t[..].try_into().unwrap()) == id)
                            .count();
                        if stem.contains("before_root") {
                            assert_eq!(count, pushed_count - 1, "{name}: all but the root");
                        } else {
                            assert_eq!(count, pushed_count, "{name}");
                        }
                        assert_eq!(
                            trace.partial.is_some(),
                            stem.contains("partial"),
                            "{name}: {:?}",
                            trace.partial
                        );
                        *seen.entry("found").or_default() += 1;
                        if response.content_type.as_deref() == Some("application/protobuf") {
                            *seen.entry("protobuf").or_default() += 1;
                        }
                        if stem.contains("llm") {
                            *seen.entry("llm").or_default() += 1;
                        }
                    }
                    (200 | 404, Ok(None)) => {
                        assert!(
                            stem.contains("unknown_id")
                                || stem.contains("past_window_flushed")
                                || stem.contains("millis_flushed"),
                            "{name}: not found"
                        );
                        *seen.entry("not found").or_default() += 1;
                    }
                    (status, Err(TempoError::Status { status: s, body })) => {
                        assert_eq!(status, s, "{name}");
                        assert!((400..500).contains(&status), "{name}: {status} {body}");
                        let e = TempoError::Status { status, body };
                        assert!(!e.retryable(), "{name}: {e}");
                        *seen.entry("error").or_default() += 1;
                    }
                    (status, other) => panic!("{name}: {status} gave {other:?}"),
                }
            }
        }
        // Both versions' shapes were all met: found (protobuf, JSON, LLM), not found, errors.
        assert!(seen["found"] >= 80, "{seen:?}");
        assert!(seen["protobuf"] >= 20, "{seen:?}");
        assert_eq!(seen["llm"], 2, "{seen:?}");
        assert!(seen["not found"] >= 10, "{seen:?}");
        assert!(seen["error"] >= 15, "{seen:?}");
    }

    /// The router's 404 (a wrong URL or v2.0.1 asked for `/api/v2`) is an error, not "not
    /// found".
    #[test]
    fn a_router_404_is_not_a_missing_trace() {
        let (_, response) = recording(&traces_dir("v2.0.1"), "21_v2_path_json");
        let err = parse_trace_response(TraceApi::V2, &response).unwrap_err();
        assert!(
            matches!(&err, TempoError::Status { status: 404, body } if body == "404 page not found"),
            "{err}"
        );
    }

    /// A body whose label does not match is read for what it is; a body that is neither is
    /// refused as malformed (which is retried: it may be cut off).
    #[test]
    fn content_type_is_checked_against_the_body() {
        let dir = traces_dir("v3.0.3");
        let (_, json) = recording(&dir, "01_trace_multi_json_recent");
        let (_, pb) = recording(&dir, "03_trace_multi_pb_recent");
        let want = parse_trace_response(TraceApi::V1, &pb).unwrap().unwrap();
        assert_eq!(want.span_count(), 7);
        for (content_type, body) in [
            (Some("application/protobuf"), &json.body),
            (Some("application/json; charset=utf-8"), &pb.body),
            (None, &json.body),
            (None, &pb.body),
            (Some("text/html"), &pb.body),
        ] {
            let response = TempoResponse {
                status: 200,
                content_type: content_type.map(str::to_owned),
                body: body.clone(),
            };
            let got = parse_trace_response(TraceApi::V1, &response)
                .unwrap()
                .unwrap();
            let essences = |t: &FetchedTrace| {
                let mut e: Vec<String> = t
                    .resource_spans
                    .iter()
                    .flat_map(|r| &r.scope_spans)
                    .flat_map(|s| &s.spans)
                    .map(essence)
                    .collect();
                e.sort();
                e
            };
            assert_eq!(essences(&got), essences(&want), "{content_type:?}");
        }
        for (content_type, body) in [
            ("application/json", &b"<html>502 Bad Gateway</html>"[..]),
            (
                "application/json",
                b"{\"batches\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":\"!!\"}]}]}]}",
            ),
            ("application/json", b"{\"something\":1}"),
            ("application/protobuf", b"\x0a\xff\xff"),
        ] {
            let response = TempoResponse {
                status: 200,
                content_type: Some(content_type.to_owned()),
                body: body.to_vec(),
            };
            let err = parse_trace_response(TraceApi::V1, &response).unwrap_err();
            assert!(matches!(err, TempoError::Malformed(_)), "{err}");
            assert!(err.retryable());
        }
    }

    /// Tempo 1.x named scopes `instrumentationLibrary`; the answer reads the same.
    #[test]
    fn old_instrumentation_library_names_are_read() {
        let body = br#"{"batches":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"shop"}}]},
            "instrumentationLibrarySpans":[{"instrumentationLibrary":{"name":"lib","version":"1"},
            "spans":[{"traceId":"AAAAAAAAAAAK92UZFs1D3Q==","spanId":"AAAAAAAAAAE=","name":"GET /","kind":"SPAN_KIND_SERVER",
            "startTimeUnixNano":"1000","endTimeUnixNano":"2000","links":[{"traceId":"S/kvNXezTaajzpKdDg5HNg","spanId":"APBnqgupArc="}]}]}]}]}"#;
        let trace = decode_tempo_json(body).unwrap();
        let scope = &trace.resource_spans[0].scope_spans[0];
        assert_eq!(scope.scope.as_ref().unwrap().name, "lib");
        let span = &scope.spans[0];
        assert_eq!(hex(&span.trace_id), "00000000000000000af7651916cd43dd");
        assert_eq!(hex(&span.span_id), "0000000000000001");
        assert_eq!(span.kind, 2);
        // Unpadded base64 is read too, as jsonpb reads it.
        assert_eq!(
            hex(&span.links[0].trace_id),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(hex(&span.links[0].span_id), "00f067aa0ba902b7");
    }
}
