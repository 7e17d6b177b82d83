//! Trace analysis: which span made this trace slow.
//!
//! `GET /v1/traces/{traceID}/analysis` fetches the trace from Tempo's trace-by-ID API (with the
//! ingester's Tempo settings, `ingester.tempo.*`); `POST /v1/traces/analysis` takes an OTLP/JSON
//! trace in the body instead. Either way every span is judged against its own baseline, O(1)
//! each from the baseline cache: a root against its root baseline, another span of a kind in
//! `spans.kinds` against its span baseline, under the name the `spans:` rules give it (as at
//! ingest). Then anomaly-core's [`Structure`] gives each span's self time and the critical
//! path, and the culprits: spans both anomalous and on the critical path, ranked by the excess
//! they contribute.
//!
//! The answer's tree is a flat list in depth-first order, each span with its depth and parent:
//! a nested document would be as deep as the trace, and a hostile 100 000-span chain would then
//! exhaust the stack of whoever reads it.

use std::collections::HashMap;

use anomaly_core::analysis::{Judged, SpanInput, Structure};
use anomaly_core::{BaselineKey, DurationMs, SpanKind, TraceId, round3};
use anomaly_runtime::error::{ApiError, ErrorBody, ErrorCode};
use anomaly_traces::otlp::string_attribute;
use anomaly_traces::tempo::{TempoError, TraceFetcher};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use serde::Serialize;
use utoipa::ToSchema;

use anomaly_runtime::cache::Stored;

use crate::check::{CheckResponse, SpanBody, ValidCheck, explain};
use crate::state::{AppState, Now};

/// What the analysis needs besides the baselines: Tempo, and the span-count limit.
#[derive(Debug, Clone)]
pub(crate) struct Analyzer {
    /// `None` when `ingester.tempo.url` is empty: only `POST /v1/traces/analysis` works.
    pub(crate) tempo: Option<TraceFetcher>,
    /// `checker.analysis.max_spans`.
    pub(crate) max_spans: usize,
}

/// The analysis of one trace.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AnalysisResponse {
    #[schema(example = "4bf92f3577b34da6a3ce929d0e0e4736")]
    trace_id: String,
    /// The explanation in one sentence: the root's verdict and the top culprit's share of the
    /// excess.
    #[schema(
        example = "POST /pay took 1840 ms (threshold 620 ms); 1310 ms of the excess is in db SELECT orders (1400 ms, threshold 90 ms, on the critical path)"
    )]
    summary: String,
    /// The main root's verdict (the longest span without a parent; null when the trace has
    /// none, i.e. its root is missing).
    #[schema(required = true)]
    root: Option<Box<CheckResponse>>,
    /// The main root's duration, ms.
    duration_ms: f64,
    /// Spans analysed.
    span_count: usize,
    /// Whether spans are missing: a parent that is not in the trace, or Tempo said it returned
    /// only part of the trace.
    partial: bool,
    /// The parents referenced but absent, each with the spans that reference them.
    missing_parents: Vec<MissingBody>,
    /// Tempo's own note when it returned only part of the trace (over its
    /// `max_bytes_per_trace`); null otherwise.
    #[schema(required = true)]
    tempo_partial: Option<String>,
    /// Spans that are anomalous and on the critical path, the largest contribution first.
    culprits: Vec<CulpritBody>,
    /// The main root's critical path in time order: who the trace was waiting on, when.
    critical_path: Vec<SegmentBody>,
    /// Every span, depth first (the tree, flattened: `depth` and `parentSpanId` give its
    /// shape).
    spans: Vec<SpanNode>,
    /// Spans left out: duplicates of a span ID, spans without a valid span ID, and spans of
    /// another trace (from Tempo).
    dropped_spans: u64,
}

/// A parent span that the trace does not contain.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MissingBody {
    parent_span_id: String,
    /// The spans whose parent it is.
    span_ids: Vec<String>,
}

/// A span behind the trace's slowness.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CulpritBody {
    span_id: String,
    service: String,
    name: String,
    duration_ms: f64,
    threshold_ms: f64,
    /// What it contributes to the excess: `min(duration - threshold, criticalPathMs)`.
    excess_ms: f64,
    /// Its own time on the critical path, ms.
    critical_path_ms: f64,
    /// Its verdict's sentence.
    reason: String,
}

/// A stretch of the critical path.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SegmentBody {
    span_id: String,
    service: String,
    name: String,
    /// From the start of the trace, ms.
    start_offset_ms: f64,
    duration_ms: f64,
}

/// One span of the tree.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SpanNode {
    span_id: String,
    /// Null for a root (true or orphan).
    #[schema(required = true)]
    parent_span_id: Option<String>,
    /// 0 for a root.
    depth: usize,
    service: String,
    /// The span's name as sent.
    name: String,
    /// `server`, `client`, `internal`, `producer`, `consumer` or `unspecified`.
    #[schema(value_type = String, example = "client")]
    kind: SpanKind,
    /// From the start of the trace, ms.
    start_offset_ms: f64,
    duration_ms: f64,
    /// Its duration minus the time its children ran inside it.
    self_time_ms: f64,
    /// Its own time on the critical path (0 when off it).
    critical_path_ms: f64,
    on_critical_path: bool,
    /// The span's verdict against its baseline (a root's against its root baseline); null when
    /// not judged, with `notJudged` saying why.
    #[schema(required = true)]
    verdict: Option<Box<CheckResponse>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    not_judged: Option<String>,
}

/// One span as read from the trace.
struct Row<'a> {
    span_id: u64,
    parent: Option<u64>,
    start_ns: u64,
    end_ns: u64,
    service: &'a str,
    name: &'a str,
    kind: SpanKind,
    route: Option<&'a str>,
    method: Option<&'a str>,
}

#[utoipa::path(
    get,
    path = "/v1/traces/{traceID}/analysis",
    tag = "analysis",
    params(("traceID" = String, Path, description = "The trace ID: 1 to 32 hex digits")),
    responses(
        (status = 200, description = "The analysis", body = AnalysisResponse),
        (status = 400, description = "The trace ID is not hex (INVALID_TRACE_ID)", body = ErrorBody),
        (status = 401, description = "Authentication is on and the bearer token is missing or wrong", body = ErrorBody),
        (status = 404, description = "Tempo does not know the trace (TRACE_NOT_FOUND)", body = ErrorBody),
        (status = 413, description = "The trace has more spans than checker.analysis.max_spans, or Tempo's answer was larger than ingester.tempo.max_response_bytes (TRACE_TOO_LARGE)", body = ErrorBody),
        (status = 502, description = "Tempo refused the request or answered with what is not a trace (TEMPO_ERROR)", body = ErrorBody),
        (status = 503, description = "Tempo is not configured, cannot be reached or timed out (TEMPO_UNAVAILABLE), or Redis cannot be reached (REDIS_UNAVAILABLE); retry after Retry-After seconds", body = ErrorBody),
    )
)]
pub(crate) async fn analyse_by_id(
    State(state): State<AppState>,
    Path(trace_id): Path<String>,
) -> Result<Json<AnalysisResponse>, ApiError> {
    let id = TraceId::parse(&trace_id)
        .map_err(|e| ApiError::new(ErrorCode::InvalidTraceId, e.to_string()))?;
    let Some(tempo) = &state.analyzer.tempo else {
        return Err(ApiError::new(
            ErrorCode::TempoUnavailable,
            "no Tempo is configured (ingester.tempo.url); POST the trace as OTLP/JSON to \
             /v1/traces/analysis instead",
        ));
    };
    let fetched = tempo
        .fetch_trace(&id)
        .await
        .map_err(tempo_error)?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::TraceNotFound,
                format!("tempo does not know trace {id}"),
            )
        })?;
    let answer = analyse(&state, id, &fetched.resource_spans, fetched.partial).await?;
    Ok(Json(answer))
}

#[utoipa::path(
    post,
    path = "/v1/traces/analysis",
    tag = "analysis",
    request_body(content = String, content_type = "application/json", description = "One trace as OTLP/JSON: an ExportTraceServiceRequest (`{\"resourceSpans\": [...]}`) whose spans all have one trace ID"),
    responses(
        (status = 200, description = "The analysis", body = AnalysisResponse),
        (status = 400, description = "The body is not OTLP/JSON (MALFORMED_JSON, INVALID_BODY), or not one trace (INVALID_TRACE: no spans, several trace IDs)", body = ErrorBody),
        (status = 401, description = "Authentication is on and the bearer token is missing or wrong", body = ErrorBody),
        (status = 413, description = "The body is larger than checker.limits.max_body_bytes (PAYLOAD_TOO_LARGE) or the trace has more spans than checker.analysis.max_spans (TRACE_TOO_LARGE)", body = ErrorBody),
        (status = 415, description = "The body is not sent as application/json", body = ErrorBody),
        (status = 503, description = "Redis cannot be reached (REDIS_UNAVAILABLE); retry after Retry-After seconds", body = ErrorBody),
    )
)]
pub(crate) async fn analyse_body(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<AnalysisResponse>, ApiError> {
    let json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send the trace as OTLP/JSON with Content-Type: application/json",
        ));
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
        return Err(ApiError::new(
            ErrorCode::MalformedJson,
            "the body is not JSON",
        ));
    }
    let request = anomaly_traces::otlp::decode_json(&body).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidBody,
            format!(
                "the body is not an OTLP/JSON ExportTraceServiceRequest: {}",
                e.0
            ),
        )
    })?;
    // The trace ID: the one every span has.
    let mut ids = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| s.trace_id.as_slice());
    let Some(first) = ids.next() else {
        return Err(ApiError::new(
            ErrorCode::InvalidTrace,
            "the body has no spans",
        ));
    };
    if let Some(other) = ids.find(|id| *id != first) {
        return Err(ApiError::new(
            ErrorCode::InvalidTrace,
            format!(
                "the spans belong to more than one trace ({} and {}); send one trace",
                hex(first),
                hex(other)
            ),
        ));
    }
    let id = <&[u8; 16]>::try_from(first)
        .ok()
        .filter(|b| b.iter().any(|&x| x != 0))
        .map(TraceId::from_bytes)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidTrace,
                format!(
                    "the trace ID {} is not 16 bytes, or is all zeros",
                    hex(first)
                ),
            )
        })?;
    let answer = analyse(&state, id, &request.resource_spans, None).await?;
    Ok(Json(answer))
}

fn tempo_error(e: TempoError) -> ApiError {
    match e {
        TempoError::TooLarge(_) => ApiError::new(ErrorCode::TraceTooLarge, e.to_string()),
        // Retried like a transient failure by the client, but once its retries are spent an
        // answer that is not a trace is Tempo's (or a proxy's) fault: a bad gateway.
        TempoError::Malformed(_) => ApiError::new(ErrorCode::TempoError, e.to_string()),
        e if e.retryable() => ApiError::new(ErrorCode::TempoUnavailable, e.to_string()),
        e => ApiError::new(ErrorCode::TempoError, e.to_string()),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The spans of `id`, at most `max_spans`; spans without a valid span ID or of another trace
/// are dropped and counted.
fn rows<'a>(
    resource_spans: &'a [ResourceSpans],
    id: &TraceId,
    max_spans: usize,
) -> Result<(Vec<Row<'a>>, u64), ApiError> {
    let total: usize = resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    if total > max_spans {
        return Err(ApiError::new(
            ErrorCode::TraceTooLarge,
            format!(
                "the trace has {total} spans, more than the limit of {max_spans} \
                 (checker.analysis.max_spans)"
            ),
        ));
    }
    let mut rows = Vec::with_capacity(total);
    let mut dropped = 0;
    for resource in resource_spans {
        let attributes = resource
            .resource
            .as_ref()
            .map_or(&[][..], |r| &r.attributes[..]);
        let service = string_attribute(attributes, "service.name").unwrap_or("");
        for span in resource.scope_spans.iter().flat_map(|s| &s.spans) {
            let span_id = <[u8; 8]>::try_from(span.span_id.as_slice())
                .map(u64::from_be_bytes)
                .ok()
                .filter(|&id| id != 0);
            let same_trace = <&[u8; 16]>::try_from(span.trace_id.as_slice())
                .is_ok_and(|b| TraceId::from_bytes(b) == *id);
            let Some(span_id) = span_id.filter(|_| same_trace) else {
                dropped += 1;
                continue;
            };
            let parent = <[u8; 8]>::try_from(span.parent_span_id.as_slice())
                .map(u64::from_be_bytes)
                .ok()
                .filter(|&p| p != 0);
            rows.push(Row {
                span_id,
                parent,
                start_ns: span.start_time_unix_nano,
                end_ns: span.end_time_unix_nano,
                service,
                name: &span.name,
                kind: SpanKind::from_otlp(span.kind),
                route: string_attribute(&span.attributes, "http.route"),
                method: string_attribute(&span.attributes, "http.request.method")
                    .or_else(|| string_attribute(&span.attributes, "http.method")),
            });
        }
    }
    Ok((rows, dropped))
}

/// What a span is judged as, or why it is not.
enum Plan {
    Judge(ValidCheck),
    Skip(String),
}

/// How span `row` is judged: a true root against its root baseline, another span of a kept
/// kind against its span baseline under its `spans:` name.
fn plan(state: &AppState, row: &Row<'_>, true_root: bool) -> Plan {
    let start = match anomaly_core::UnixNanos::new(row.start_ns) {
        Ok(s) => s,
        Err(e) => return Plan::Skip(format!("its start time is invalid: {e}")),
    };
    #[allow(clippy::cast_precision_loss)]
    let duration = match DurationMs::new(row.end_ns.saturating_sub(row.start_ns) as f64 / 1e6) {
        Ok(d) => d,
        Err(e) => return Plan::Skip(format!("its duration is invalid: {e}")),
    };
    let bucket = state.bucketer.bucket(start.to_datetime());
    let names = state.limits.names;
    let key = |name: &str| {
        BaselineKey::with_rules(row.service, name, bucket.hour, bucket.day_type, names)
            .map_err(|e| format!("its name cannot be a key: {e}"))
    };
    if true_root {
        return match key(row.name) {
            Ok(k) => Plan::Judge(ValidCheck::new(k, duration, bucket, None)),
            Err(why) => Plan::Skip(why),
        };
    }
    if !state.spans.enabled() {
        return Plan::Skip("span baselines are off (spans.enabled)".to_owned());
    }
    if !state.spans.keeps(row.kind) {
        return Plan::Skip(format!(
            "spans of kind {} keep no baseline (spans.kinds)",
            serde_json::to_value(row.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        ));
    }
    let named = state.spans.name(row.name, row.route, row.method);
    if state.spans.ignored(row.service, &named.name) {
        return Plan::Skip("it matches spans.ignore".to_owned());
    }
    match key(&named.name) {
        Ok(k) => Plan::Judge(ValidCheck::new(
            k,
            duration,
            bucket,
            Some(SpanBody::new(row.service, &named.name, row.name)),
        )),
        Err(why) => Plan::Skip(why),
    }
}

/// Judges every span and builds the answer.
async fn analyse(
    state: &AppState,
    id: TraceId,
    resource_spans: &[ResourceSpans],
    tempo_partial: Option<String>,
) -> Result<AnalysisResponse, ApiError> {
    let (rows, mut dropped) = rows(resource_spans, &id, state.analyzer.max_spans)?;
    let inputs: Vec<SpanInput<'_>> = rows
        .iter()
        .map(|r| SpanInput {
            span_id: r.span_id,
            parent_id: r.parent,
            start_ns: r.start_ns,
            end_ns: r.end_ns,
            service: r.service,
            name: r.name,
        })
        .collect();
    let structure = Structure::build(&inputs);
    dropped += structure
        .duplicates()
        .iter()
        .map(|d| d.dropped.len() as u64)
        .sum::<u64>();

    // One lookup per distinct key of each key space, all from the cache or one round trip.
    let plans: Vec<Plan> = rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            if !structure.is_kept(i) {
                return Plan::Skip("a duplicate span ID".to_owned());
            }
            plan(state, row, row.parent.is_none())
        })
        .collect();
    let mut index: HashMap<(bool, &BaselineKey), usize> = HashMap::new();
    let mut keys: [Vec<BaselineKey>; 2] = Default::default();
    for p in &plans {
        if let Plan::Judge(check) = p {
            let space = check.is_span();
            index.entry((space, check.key())).or_insert_with(|| {
                let keys = &mut keys[usize::from(space)];
                keys.push(check.key().clone());
                keys.len() - 1
            });
        }
    }
    let (roots, spans) = tokio::try_join!(
        state.cache.get_many(&keys[0]),
        state.span_cache.get_many(&keys[1])
    )?;
    let stored = [roots, spans];
    let now = Now::read();
    let mut verdicts: Vec<Option<Box<CheckResponse>>> = Vec::with_capacity(rows.len());
    let mut judged = Vec::with_capacity(rows.len());
    for p in &plans {
        match p {
            Plan::Judge(check) => {
                let space = check.is_span();
                let baseline: Stored = index
                    .get(&(space, check.key()))
                    .and_then(|&i| stored[usize::from(space)][i].clone());
                let answer = explain(state, check, baseline, now);
                judged.push(Judged {
                    threshold_ms: answer.threshold(),
                    is_anomaly: answer.is_anomaly(),
                });
                verdicts.push(Some(Box::new(answer)));
            }
            Plan::Skip(_) => {
                judged.push(Judged {
                    threshold_ms: None,
                    is_anomaly: false,
                });
                verdicts.push(None);
            }
        }
    }

    let culprits = structure.culprits(&judged);
    let summary = structure.sentence(&inputs, &judged, &culprits);
    let origin = rows.iter().map(|r| r.start_ns).min().unwrap_or(0);
    let ms = |ns: u64| round3(ns as f64 / 1e6);
    let span_hex = |i: usize| format!("{:016x}", rows[i].span_id);
    let main = structure.main_root();
    let root = main
        .filter(|&r| rows[r].parent.is_none())
        .and_then(|r| verdicts[r].clone());

    // The tree, depth first: roots in order, children by start time.
    let mut order = Vec::with_capacity(rows.len());
    let mut stack: Vec<usize> = structure.roots().iter().rev().copied().collect();
    while let Some(i) = stack.pop() {
        order.push(i);
        stack.extend(structure.children(i).iter().rev().copied());
    }
    let not_judged: Vec<Option<String>> = plans
        .into_iter()
        .map(|p| match p {
            Plan::Skip(why) => Some(why),
            Plan::Judge(_) => None,
        })
        .collect();
    let culprit_bodies = culprits
        .iter()
        .map(|c| CulpritBody {
            span_id: span_hex(c.span),
            service: rows[c.span].service.to_owned(),
            name: rows[c.span].name.to_owned(),
            duration_ms: c.duration_ms,
            threshold_ms: c.threshold_ms,
            excess_ms: c.excess_ms,
            critical_path_ms: c.critical_ms,
            reason: verdicts[c.span]
                .as_ref()
                .map(|v| v.reason().to_owned())
                .unwrap_or_default(),
        })
        .collect();
    // Adjacent stretches of one span are one segment.
    let mut critical_path: Vec<SegmentBody> = Vec::new();
    // (span, start, end) of the segment being built.
    let mut last: Option<(usize, u64, u64)> = None;
    for seg in structure.critical_path() {
        if seg.end_ns == seg.start_ns {
            continue;
        }
        match (&mut last, critical_path.last_mut()) {
            (Some((span, start, end)), Some(body)) if *span == seg.span && *end == seg.start_ns => {
                *end = seg.end_ns;
                body.duration_ms = ms(seg.end_ns - *start);
                continue;
            }
            _ => critical_path.push(SegmentBody {
                span_id: span_hex(seg.span),
                service: rows[seg.span].service.to_owned(),
                name: rows[seg.span].name.to_owned(),
                start_offset_ms: ms(seg.start_ns.saturating_sub(origin)),
                duration_ms: ms(seg.end_ns - seg.start_ns),
            }),
        }
        last = Some((seg.span, seg.start_ns, seg.end_ns));
    }
    let missing_parents: Vec<MissingBody> = structure
        .missing_parents()
        .iter()
        .map(|m| MissingBody {
            parent_span_id: format!("{:016x}", m.parent_id),
            span_ids: m.spans.iter().map(|&i| span_hex(i)).collect(),
        })
        .collect();
    let mut not_judged = not_judged;
    let spans = order
        .into_iter()
        .map(|i| SpanNode {
            span_id: span_hex(i),
            parent_span_id: structure.parent(i).map(span_hex),
            depth: structure.depth(i),
            service: rows[i].service.to_owned(),
            name: rows[i].name.to_owned(),
            kind: rows[i].kind,
            start_offset_ms: ms(rows[i].start_ns.saturating_sub(origin)),
            duration_ms: ms(structure.duration_ns(i)),
            self_time_ms: ms(structure.self_time_ns(i)),
            critical_path_ms: ms(structure.critical_ns(i)),
            on_critical_path: structure.on_critical_path(i),
            verdict: verdicts[i].take(),
            not_judged: not_judged[i].take(),
        })
        .collect();
    Ok(AnalysisResponse {
        trace_id: id.to_string(),
        summary,
        root,
        duration_ms: main.map_or(0.0, |r| ms(structure.duration_ns(r))),
        span_count: structure.len(),
        partial: !missing_parents.is_empty() || tempo_partial.is_some(),
        missing_parents,
        tempo_partial,
        culprits: culprit_bodies,
        critical_path,
        spans,
        dropped_spans: dropped,
    })
}
