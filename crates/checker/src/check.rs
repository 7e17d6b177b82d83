//! `POST /v1/anomaly/check` and `POST /v1/anomaly/check/batch`: validate, bucket, look the
//! baseline up (cache, then one round trip for all misses), judge and explain.
//!
//! Fields arrive as raw JSON values and are validated one by one, so every mistake gets its own
//! code and message instead of a generic deserialisation error; a bad batch item is answered in
//! its slot and does not spoil the others.

use std::collections::HashMap;

use anomaly_core::rule::Bound;
use anomaly_core::{
    Baseline, BaselineKey, Baselines, Bucket, DayType, DurationMs, KeyError, Level, NameField,
    NameRules, ReasonContext, Status, TraceId, UnixNanos, Verdict, round3,
};
use anomaly_runtime::cache::Stored;
use anomaly_runtime::error::{ApiError, ErrorBody, ErrorCode};
use anomaly_runtime::http::ApiJson;
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::state::{AppState, InputLimits, Now};

/// A check: which request, when, and how long it took.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CheckRequest {
    /// The service, as in Tempo's `rootServiceName`: 1 to `max_name_bytes` (default 256) bytes
    /// of UTF-8, the limit the ingester applies too; longer is INVALID_SERVICE.
    #[schema(value_type = String, example = "checkout")]
    root_service_name: Option<Value>,
    /// The endpoint, as in Tempo's `rootTraceName`: 1 to `max_name_bytes` (default 256) bytes
    /// of UTF-8, the limit the ingester applies too; longer is INVALID_ENDPOINT.
    #[schema(value_type = String, example = "POST /pay")]
    root_trace_name: Option<Value>,
    /// When the request started: nanoseconds since the Unix epoch, as a decimal string or an
    /// integer, from 2000 to 2100 and at most `checker.max_future_skew` ahead of the clock.
    #[schema(value_type = String, example = "1764050000000000000")]
    start_time_unix_nano: Option<Value>,
    /// How long it took, in milliseconds: a number (or a decimal string) from 0 to 86400000.
    #[schema(value_type = f64, example = 1840.0)]
    duration_ms: Option<Value>,
    /// Optional: the request's trace ID (1 to 32 hex digits; INVALID_TRACE_ID otherwise). The
    /// answer then carries it, and `traceUrl` when `links.trace_url` is set.
    #[serde(rename = "traceID")]
    #[schema(value_type = Option<String>, example = "4bf92f3577b34da6a3ce929d0e0e4736")]
    trace_id: Option<Value>,
}

/// A span check: one span of a trace, judged against its span baseline (kept from the spans
/// the ingester receives, named by the `spans:` rules).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SpanCheckRequest {
    /// The span's service (its resource's `service.name`): 1 to `max_name_bytes` bytes of
    /// UTF-8; INVALID_SERVICE otherwise.
    #[schema(value_type = String, example = "orders-db")]
    service_name: Option<Value>,
    /// The span's name as sent (e.g. `GET /users/123`); it is renamed by the same `spans:`
    /// rules as at ingest (`http.route`, `normalize`), and the answer's `span.name` says what
    /// it became. INVALID_ENDPOINT when empty or, renamed, longer than `max_name_bytes`.
    #[schema(value_type = String, example = "SELECT orders")]
    span_name: Option<Value>,
    /// The span's `http.route` attribute, if it has one (with `spans.use_http_route` the span
    /// is named `METHOD route`).
    #[schema(value_type = Option<String>, example = "/users/:id")]
    http_route: Option<Value>,
    /// The span's `http.request.method` (or `http.method`) attribute, if it has one.
    #[schema(value_type = Option<String>, example = "GET")]
    http_method: Option<Value>,
    /// When the span started: as `startTimeUnixNano` of a check.
    #[schema(value_type = String, example = "1764050000000000000")]
    start_time_unix_nano: Option<Value>,
    /// How long the span took, in milliseconds: as `durationMs` of a check.
    #[schema(value_type = f64, example = 1400.0)]
    duration_ms: Option<Value>,
    /// Optional: the span's trace ID, as `traceID` of a check.
    #[serde(rename = "traceID")]
    #[schema(value_type = Option<String>, example = "4bf92f3577b34da6a3ce929d0e0e4736")]
    trace_id: Option<Value>,
}

/// Up to `checker.max_batch_items` checks; an item with a `spanName` is a span check.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct BatchRequest {
    #[schema(value_type = Vec<BatchItem>)]
    items: Option<Vec<Value>>,
}

/// A batch item: a check, or a span check (an object with `spanName`).
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // Only the OpenAPI schema: items are read as raw JSON (see `check_batch`).
#[serde(untagged)] // As on the wire: a plain object, told apart by `spanName`.
pub(crate) enum BatchItem {
    Check(CheckRequest),
    Span(SpanCheckRequest),
}

/// The span a span check judged.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SpanBody {
    #[schema(example = "orders-db")]
    service: String,
    /// The name its baseline is kept under, after the `spans:` rules.
    #[schema(example = "GET /users/{id}")]
    name: String,
    /// The name as sent, when the rules changed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "GET /users/123")]
    sent_name: Option<String>,
}

/// The verdict for one check, with the numbers it was decided on.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CheckResponse {
    /// Whether `durationMs` exceeds `threshold`; false when not judged.
    is_anomaly: bool,
    status: CheckStatus,
    bucket: BucketBody,
    /// The baseline the check was judged against; null when none exists for the key.
    #[schema(required = true)]
    baseline: Option<BaselineBody>,
    /// `max(p95 * factor, p50 + k * max(mad, mad_epsilon_ms))`; null for INSUFFICIENT_DATA.
    #[schema(required = true)]
    threshold: Option<f64>,
    /// A sentence with the numbers: which bound applied and by how much it was exceeded.
    #[schema(
        example = "1840 ms exceeds the threshold 620 ms by 1220 ms (p95 310 ms x factor 2.0; the MAD bound p50 120 ms + 10 x MAD 18 ms = 300 ms is lower) for checkout POST /pay on weekdays 14:00-15:00 Asia/Taipei, baseline of 1000 samples updated 12 s ago"
    )]
    reason: String,
    /// The checked duration, as validated.
    duration_ms: f64,
    /// Which bound set the threshold; null for INSUFFICIENT_DATA.
    #[schema(required = true)]
    bound: Option<BoundName>,
    /// `p95 * factor`; null for INSUFFICIENT_DATA.
    #[schema(required = true)]
    p95_bound: Option<f64>,
    /// `p50 + k * max(mad, mad_epsilon_ms)`; null for INSUFFICIENT_DATA.
    #[schema(required = true)]
    mad_bound: Option<f64>,
    /// `durationMs - threshold`: positive for an anomaly; null for INSUFFICIENT_DATA.
    #[schema(required = true)]
    excess_ms: Option<f64>,
    /// Samples the exact bucket needs before it is judged (`stats.min_samples`, or the
    /// override's).
    min_samples: u64,
    /// Which baseline was judged against: the exact bucket, or the fallback level used
    /// because the bucket had fewer than `minSamples` (`stats.fallback`); null when not judged.
    #[schema(required = true)]
    baseline_source: Option<SourceName>,
    /// What the baseline judged against covers; null when not judged.
    #[schema(required = true)]
    coverage: Option<CoverageBody>,
    /// Samples in the exact bucket (0 when it has none).
    bucket_sample_count: u64,
    /// Where `durationMs` falls among the samples of the baseline judged against, from 0 to 1
    /// (0.996: slower than 99.6% of them), read from its stored quantiles; null when not
    /// judged or when the baseline predates quantiles.
    #[schema(required = true, example = 0.996)]
    rank: Option<f64>,
    /// The rule's parameters as applied (after any override).
    factor: f64,
    k: f64,
    /// The absolute floor: nothing at or below it is an anomaly (`stats.min_threshold_ms`, or
    /// the override's).
    min_threshold_ms: f64,
    /// The entry of `overrides` that applied to this key; null when none did.
    #[schema(required = true)]
    r#override: Option<OverrideBody>,
    /// For a span check, the span judged; absent from root checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    span: Option<SpanBody>,
    /// The trace ID the check was sent with, normalised (32 lower-case hex digits); absent
    /// when none was sent.
    #[serde(rename = "traceID", skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
    /// A link to the trace (`links.trace_url` with the trace ID), when a trace ID was sent and
    /// the template is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_url: Option<String>,
    #[serde(skip)]
    verdict_status: Status,
}

/// A baseline level.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub(crate) enum SourceName {
    #[serde(rename = "exact")]
    Exact,
    #[serde(rename = "nearby")]
    Nearby,
    #[serde(rename = "dayType")]
    DayType,
    #[serde(rename = "all")]
    All,
}

impl From<Level> for SourceName {
    fn from(l: Level) -> Self {
        match l {
            Level::Exact => SourceName::Exact,
            Level::Nearby => SourceName::Nearby,
            Level::DayType => SourceName::DayType,
            Level::All => SourceName::All,
        }
    }
}

/// The hours and day types a baseline covers, and its samples.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CoverageBody {
    /// Local hours, in order (wrapping past midnight).
    #[schema(example = json!([12, 13, 14, 15, 16]))]
    hours: Vec<u8>,
    day_types: Vec<DayTypeBody>,
    sample_count: u64,
    /// The coverage in words.
    #[schema(example = "weekdays 12:00-17:00 Asia/Taipei")]
    description: String,
}

/// The override that applied.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct OverrideBody {
    /// Its position in `overrides`.
    index: usize,
    /// Its service pattern; null matches every service.
    #[schema(required = true)]
    service: Option<String>,
    /// Its endpoint pattern; null matches every endpoint.
    #[schema(required = true)]
    endpoint: Option<String>,
}

/// The verdict.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum CheckStatus {
    Normal,
    Anomaly,
    InsufficientData,
}

impl From<Status> for CheckStatus {
    fn from(s: Status) -> Self {
        match s {
            Status::Normal => CheckStatus::Normal,
            Status::Anomaly => CheckStatus::Anomaly,
            Status::InsufficientData => CheckStatus::InsufficientData,
        }
    }
}

/// Which bound set the threshold.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub(crate) enum BoundName {
    #[serde(rename = "p95 * factor")]
    P95Factor,
    #[serde(rename = "p50 + k * MAD")]
    P50KMad,
    /// The absolute floor (`min_threshold_ms`) was above both.
    #[serde(rename = "min_threshold_ms")]
    Floor,
}

/// Whether a local date counts as a weekday or a weekend (holidays count as weekend).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum DayTypeBody {
    Weekday,
    Weekend,
}

impl From<anomaly_core::DayType> for DayTypeBody {
    fn from(d: anomaly_core::DayType) -> Self {
        match d {
            anomaly_core::DayType::Weekday => DayTypeBody::Weekday,
            anomaly_core::DayType::Weekend => DayTypeBody::Weekend,
        }
    }
}

/// Where the request's start falls in the configured time zone.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BucketBody {
    /// Local hour, 0 to 23.
    #[schema(example = 14)]
    hour: u8,
    day_type: DayTypeBody,
    /// The bucket in words.
    #[schema(example = "weekdays 14:00-15:00 Asia/Taipei")]
    description: String,
}

/// A precomputed baseline.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BaselineBody {
    /// Median duration of the window, ms.
    #[schema(example = 120.0)]
    p50: f64,
    /// 95th percentile, ms.
    #[schema(example = 310.0)]
    p95: f64,
    /// Median absolute deviation from p50, ms (floored at `stats.mad_epsilon_ms`).
    #[schema(example = 18.0)]
    mad: f64,
    /// Samples in the window.
    #[schema(example = 1000)]
    sample_count: u64,
    /// When the recomputer wrote it, Unix milliseconds.
    #[schema(example = 1_764_050_000_000_i64)]
    updated_at: i64,
}

impl From<Baseline> for BaselineBody {
    fn from(b: Baseline) -> Self {
        BaselineBody {
            p50: round3(b.p50),
            p95: round3(b.p95),
            mad: round3(b.mad),
            sample_count: b.sample_count,
            updated_at: b.updated_at,
        }
    }
}

/// The answers of a batch, in the order of its items.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BatchResponse {
    results: Vec<BatchResult>,
}

/// One batch answer: a check response, or the error that item had.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum BatchResult {
    Checked(Box<CheckResponse>),
    Failed(ErrorBody),
}

/// A check whose fields all passed validation.
#[derive(Debug)]
pub(crate) struct ValidCheck {
    key: BaselineKey,
    duration: DurationMs,
    bucket: Bucket,
    /// Set for a span check: its key is in the span key space.
    span: Option<SpanBody>,
    trace_id: Option<TraceId>,
}

impl SpanBody {
    /// The span `service` `name`, named `sent` before the `spans:` rules renamed it.
    pub(crate) fn new(service: &str, name: &str, sent: &str) -> Self {
        SpanBody {
            service: service.to_owned(),
            name: name.to_owned(),
            sent_name: (name != sent).then(|| sent.to_owned()),
        }
    }
}

impl CheckResponse {
    pub(crate) fn is_anomaly(&self) -> bool {
        self.is_anomaly
    }

    pub(crate) fn threshold(&self) -> Option<f64> {
        self.threshold
    }

    pub(crate) fn reason(&self) -> &str {
        &self.reason
    }
}

impl ValidCheck {
    /// A span (`span` set) or root check of `key`, bucketed as `bucket`.
    pub(crate) fn new(
        key: BaselineKey,
        duration: DurationMs,
        bucket: Bucket,
        span: Option<SpanBody>,
    ) -> Self {
        ValidCheck {
            key,
            duration,
            bucket,
            span,
            trace_id: None,
        }
    }

    pub(crate) fn key(&self) -> &BaselineKey {
        &self.key
    }

    /// Whether this is a span check (its key is in the span key space).
    pub(crate) fn is_span(&self) -> bool {
        self.span.is_some()
    }

    /// The cache of the check's key space.
    fn cache<'s>(&self, state: &'s AppState) -> &'s anomaly_runtime::cache::BaselineCache {
        if self.span.is_some() {
            &state.span_cache
        } else {
            &state.cache
        }
    }
}

#[utoipa::path(
    post,
    path = "/v1/anomaly/check",
    tag = "check",
    request_body = CheckRequest,
    responses(
        (status = 200, description = "The verdict", body = CheckResponse),
        (status = 400, description = "A field is missing or invalid (INVALID_SERVICE, INVALID_ENDPOINT, INVALID_START_TIME, INVALID_DURATION, INVALID_BODY, MALFORMED_JSON)", body = ErrorBody),
        (status = 401, description = "Authentication is on and the bearer token is missing or wrong", body = ErrorBody),
        (status = 413, description = "The body is larger than checker.limits.max_body_bytes", body = ErrorBody),
        (status = 415, description = "The body is not sent as application/json", body = ErrorBody),
        (status = 503, description = "Redis cannot be reached (REDIS_UNAVAILABLE) or the service is overloaded (OVERLOADED, TIMEOUT); retry after Retry-After seconds", body = ErrorBody),
    )
)]
pub(crate) async fn check(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<CheckRequest>,
) -> Result<Json<CheckResponse>, ApiError> {
    let now = Now::read();
    let valid = validate(request, &state, now)?;
    let baseline = valid.cache(&state).get(&valid.key).await?;
    Ok(Json(judge(&state, &valid, baseline, now)))
}

#[utoipa::path(
    post,
    path = "/v1/anomaly/check/span",
    tag = "check",
    request_body = SpanCheckRequest,
    responses(
        (status = 200, description = "The verdict on the span, against its span baseline; `span` names it", body = CheckResponse),
        (status = 400, description = "A field is missing or invalid (INVALID_SERVICE, INVALID_ENDPOINT for spanName, INVALID_START_TIME, INVALID_DURATION, INVALID_BODY, MALFORMED_JSON)", body = ErrorBody),
        (status = 401, description = "Authentication is on and the bearer token is missing or wrong", body = ErrorBody),
        (status = 413, description = "The body is larger than checker.limits.max_body_bytes", body = ErrorBody),
        (status = 415, description = "The body is not sent as application/json", body = ErrorBody),
        (status = 503, description = "Redis cannot be reached (REDIS_UNAVAILABLE) or the service is overloaded (OVERLOADED, TIMEOUT); retry after Retry-After seconds", body = ErrorBody),
    )
)]
pub(crate) async fn check_span(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<SpanCheckRequest>,
) -> Result<Json<CheckResponse>, ApiError> {
    let now = Now::read();
    let valid = validate_span(request, &state, now)?;
    let baseline = valid.cache(&state).get(&valid.key).await?;
    Ok(Json(judge(&state, &valid, baseline, now)))
}

#[utoipa::path(
    post,
    path = "/v1/anomaly/check/batch",
    tag = "check",
    request_body = BatchRequest,
    responses(
        (status = 200, description = "One result per item, in order: a check response or an error", body = BatchResponse),
        (status = 400, description = "The body is not {\"items\": [...]} (INVALID_BODY, MALFORMED_JSON)", body = ErrorBody),
        (status = 401, description = "Authentication is on and the bearer token is missing or wrong", body = ErrorBody),
        (status = 413, description = "More than checker.max_batch_items items (BATCH_TOO_LARGE) or a body larger than checker.limits.max_body_bytes (PAYLOAD_TOO_LARGE)", body = ErrorBody),
        (status = 415, description = "The body is not sent as application/json", body = ErrorBody),
        (status = 503, description = "Redis cannot be reached (REDIS_UNAVAILABLE) or the service is overloaded (OVERLOADED, TIMEOUT); retry after Retry-After seconds", body = ErrorBody),
    )
)]
pub(crate) async fn check_batch(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<BatchRequest>,
) -> Result<Json<BatchResponse>, ApiError> {
    let Some(items) = request.items else {
        return Err(ApiError::new(
            ErrorCode::InvalidBody,
            "the body must be {\"items\": [CheckRequest...]}",
        ));
    };
    let max = state.limits.max_batch_items;
    if items.len() > max {
        return Err(ApiError::new(
            ErrorCode::BatchTooLarge,
            format!(
                "the batch has {} items, more than the limit of {max} (checker.max_batch_items); split it",
                items.len()
            ),
        ));
    }
    let now = Now::read();
    let checks: Vec<Result<ValidCheck, ApiError>> = items
        .into_iter()
        .map(|item| {
            if !item.is_object() {
                return Err(ApiError::new(
                    ErrorCode::InvalidItem,
                    "each item must be a JSON object",
                ));
            }
            let invalid =
                |e: serde_json::Error| ApiError::new(ErrorCode::InvalidItem, e.to_string());
            if item.get("spanName").is_some() {
                validate_span(
                    SpanCheckRequest::deserialize(item).map_err(invalid)?,
                    &state,
                    now,
                )
            } else {
                validate(
                    CheckRequest::deserialize(item).map_err(invalid)?,
                    &state,
                    now,
                )
            }
        })
        .collect();

    // Distinct keys of each key space in first-seen order, so each is looked up (and fetched)
    // once.
    let mut index: HashMap<(bool, &BaselineKey), usize> = HashMap::new();
    let mut keys: [Vec<BaselineKey>; 2] = Default::default();
    for check in checks.iter().flatten() {
        let space = check.span.is_some();
        index.entry((space, &check.key)).or_insert_with(|| {
            let keys = &mut keys[usize::from(space)];
            keys.push(check.key.clone());
            keys.len() - 1
        });
    }
    let (roots, spans) = tokio::try_join!(
        state.cache.get_many(&keys[0]),
        state.span_cache.get_many(&keys[1])
    )?;
    let baselines = [roots, spans];

    let results = checks
        .iter()
        .map(|check| match check {
            Ok(valid) => {
                let space = valid.span.is_some();
                let baseline = index
                    .get(&(space, &valid.key))
                    .and_then(|&i| baselines[usize::from(space)][i].clone());
                BatchResult::Checked(Box::new(judge(&state, valid, baseline, now)))
            }
            Err(e) => BatchResult::Failed(e.body()),
        })
        .collect();
    Ok(Json(BatchResponse { results }))
}

/// Validates the fields in the order of the contract; the first problem is the answer.
fn validate(request: CheckRequest, state: &AppState, now: Now) -> Result<ValidCheck, ApiError> {
    let limits = &state.limits;
    let service = name(
        request.root_service_name,
        "rootServiceName",
        NameField::Service,
        limits,
    )?;
    let endpoint = name(
        request.root_trace_name,
        "rootTraceName",
        NameField::Endpoint,
        limits,
    )?;
    let mut check = keyed(
        service,
        endpoint,
        request.start_time_unix_nano.as_ref(),
        request.duration_ms.as_ref(),
        None,
        state,
        now,
    )?;
    check.trace_id = trace_id(request.trace_id.as_ref())?;
    Ok(check)
}

/// The optional `traceID` of a check.
fn trace_id(value: Option<&Value>) -> Result<Option<TraceId>, ApiError> {
    let invalid = |m: String| ApiError::new(ErrorCode::InvalidTraceId, m);
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => TraceId::parse(s)
            .map(Some)
            .map_err(|e| invalid(e.to_string())),
        Some(_) => Err(invalid("traceID must be a string of hex digits".to_owned())),
    }
}

/// Validates a span check as [`validate`] does a check; the span's name goes through the
/// `spans:` rules first, so it finds the key the ingester stored the span under.
fn validate_span(
    request: SpanCheckRequest,
    state: &AppState,
    now: Now,
) -> Result<ValidCheck, ApiError> {
    let limits = &state.limits;
    let service = name(
        request.service_name,
        "serviceName",
        NameField::Service,
        limits,
    )?;
    // The name as sent may be longer than the limit when a rule shortens it; the limit holds
    // for the name it becomes.
    let sent = NameRules::new(NameRules::MAX_BYTES_LIMIT)
        .unwrap_or(limits.names)
        .parse_json(NameField::Endpoint, "spanName", request.span_name.as_ref())
        .map_err(key_error)?;
    let route = optional_string(request.http_route.as_ref(), "httpRoute")?;
    let method = optional_string(request.http_method.as_ref(), "httpMethod")?;
    let named = state.spans.name(sent, route, method);
    let span = SpanBody::new(&service, &named.name, sent);
    let span_name = span.name.clone();
    let mut check = keyed(
        service,
        span_name,
        request.start_time_unix_nano.as_ref(),
        request.duration_ms.as_ref(),
        Some(span),
        state,
        now,
    )?;
    check.trace_id = trace_id(request.trace_id.as_ref())?;
    Ok(check)
}

/// An optional string field: absent or null is `None`; anything but a string is INVALID_BODY.
fn optional_string<'a>(value: Option<&'a Value>, wire: &str) -> Result<Option<&'a str>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(ApiError::new(
            ErrorCode::InvalidBody,
            format!("{wire} must be a string"),
        )),
    }
}

/// The rest of a check's validation, after the names: the start, the duration, the key.
fn keyed(
    service: String,
    endpoint: String,
    start: Option<&Value>,
    duration: Option<&Value>,
    span: Option<SpanBody>,
    state: &AppState,
    now: Now,
) -> Result<ValidCheck, ApiError> {
    let limits = &state.limits;
    let start = timestamp(start, limits, now)?;
    let duration = match duration {
        None => Err(ApiError::new(
            ErrorCode::InvalidDuration,
            "durationMs is missing",
        )),
        Some(v) => DurationMs::from_json(Some(v))
            .map_err(|e| ApiError::new(ErrorCode::InvalidDuration, e.to_string())),
    }?;
    let bucket = state.bucketer.bucket(start.to_datetime());
    // The names of a check passed the rule already (a span's name is checked here, after its
    // renaming), and the hour comes from a clock.
    let key = BaselineKey::with_rules(
        service,
        endpoint,
        bucket.hour,
        bucket.day_type,
        limits.names,
    )
    .map_err(key_error)?;
    Ok(ValidCheck {
        key,
        duration,
        bucket,
        span,
        trace_id: None,
    })
}

/// A service or endpoint name: a JSON string that passes the name rule (`max_name_bytes`).
fn name(
    value: Option<Value>,
    wire: &'static str,
    field: NameField,
    limits: &InputLimits,
) -> Result<String, ApiError> {
    limits
        .names
        .parse_json(field, wire, value.as_ref())
        .map(str::to_owned)
        .map_err(key_error)
}

/// A refused key part as a 400 with its code (INVALID_SERVICE, INVALID_ENDPOINT, ...), the
/// same code the ingester gives the same name.
pub(crate) fn key_error(e: KeyError) -> ApiError {
    ApiError::new((&e).into(), e.to_string())
}

fn timestamp(value: Option<&Value>, limits: &InputLimits, now: Now) -> Result<UnixNanos, ApiError> {
    let invalid = |m: String| ApiError::new(ErrorCode::InvalidStartTime, m);
    let value = value.ok_or_else(|| invalid("startTimeUnixNano is missing".to_owned()))?;
    let start = UnixNanos::from_json(value).map_err(|e| invalid(e.to_string()))?;
    let skew = limits.max_future_skew;
    if !skew.is_zero() && u128::from(start.as_nanos()) > now.unix_nanos + skew.as_nanos() {
        return Err(invalid(format!(
            "startTimeUnixNano is more than {} in the future (checker.max_future_skew); is the \
             clock or the unit right?",
            humantime_serde::re::humantime::format_duration(skew)
        )));
    }
    Ok(start)
}

/// The verdict and its explanation; counts it by status and service.
fn judge(state: &AppState, check: &ValidCheck, stored: Stored, now: Now) -> CheckResponse {
    let answer = explain(state, check, stored, now);
    state.checks.check(
        check.key.service(),
        answer.verdict_status,
        answer.baseline.is_some(),
    );
    answer
}

/// The verdict and its explanation, uncounted (the trace analysis judges spans with it).
pub(crate) fn explain(
    state: &AppState,
    check: &ValidCheck,
    stored: Stored,
    now: Now,
) -> CheckResponse {
    let key = &check.key;
    let applied = state.overrides.find(key.service(), key.endpoint());
    let rule = state.stats.rule(applied.map(|a| a.over));
    let empty = Baselines::default();
    let stored_ref = stored.as_deref().unwrap_or(&empty);
    let verdict = Verdict::judge(check.duration, stored_ref, &rule, &state.stats.fallback);
    let description = state.describe(key.hour(), key.day_type());
    let coverage = verdict.source.map(|level| {
        let (first, last) = verdict.coverage.unwrap_or((key.hour(), key.hour()));
        let day_types = match level {
            Level::All => vec![DayType::Weekday, DayType::Weekend],
            _ => vec![key.day_type()],
        };
        CoverageBody {
            hours: anomaly_core::rule::hours_between(first, last),
            day_types: day_types.into_iter().map(DayTypeBody::from).collect(),
            sample_count: verdict.baseline.map_or(0, |b| b.sample_count),
            // The exact bucket's words are computed once, at start-up.
            description: match level {
                Level::Exact => description.to_owned(),
                _ => state
                    .bucketer
                    .describe_level(level, key.day_type(), first, last),
            },
        }
    });
    let override_text = applied.map(|a| {
        let mut text = format!("overrides[{}]", a.index);
        let parts: Vec<String> = [("service", &a.over.service), ("endpoint", &a.over.endpoint)]
            .into_iter()
            .filter_map(|(name, p)| p.as_ref().map(|p| format!("{name} {p}")))
            .collect();
        text.push_str(&format!(" ({})", parts.join(", ")));
        text
    });
    let subject = match &check.span {
        Some(_) => format!("span {} {}", key.service(), key.endpoint()),
        None => format!("{} {}", key.service(), key.endpoint()),
    };
    let reason = verdict.reason(&ReasonContext {
        subject,
        bucket: description.to_owned(),
        baseline_age_ms: verdict
            .baseline
            .map(|b| now.unix_millis().saturating_sub(b.updated_at)),
        scope: coverage.as_ref().map(|c| c.description.clone()),
        hour: format!("{:02}:00", key.hour()),
        override_text,
    });
    let j = verdict.judgement;
    CheckResponse {
        is_anomaly: verdict.is_anomaly(),
        status: verdict.status.into(),
        bucket: BucketBody {
            hour: check.bucket.hour,
            day_type: check.bucket.day_type.into(),
            description: description.to_owned(),
        },
        baseline: verdict.baseline.map(BaselineBody::from),
        // Judged at 3 decimals already (see anomaly_core::rule).
        threshold: verdict.threshold(),
        reason,
        duration_ms: round3(verdict.duration_ms),
        bound: j.map(|j| match j.bound {
            Bound::P95Factor => BoundName::P95Factor,
            Bound::P50KMad => BoundName::P50KMad,
            Bound::Floor => BoundName::Floor,
        }),
        p95_bound: j.map(|j| round3(j.p95_bound)),
        mad_bound: j.map(|j| round3(j.mad_bound)),
        excess_ms: j.map(|j| round3(j.excess_ms)),
        min_samples: verdict.min_samples,
        baseline_source: verdict.source.map(SourceName::from),
        coverage,
        bucket_sample_count: verdict.bucket_samples,
        rank: verdict.rank.map(round3),
        factor: verdict.factor,
        k: verdict.k,
        min_threshold_ms: verdict.min_threshold_ms,
        r#override: applied.map(|a| OverrideBody {
            index: a.index,
            service: a.over.service.clone(),
            endpoint: a.over.endpoint.clone(),
        }),
        span: check.span.clone(),
        trace_id: check.trace_id.map(|t| t.to_string()),
        trace_url: check.trace_id.and_then(|t| state.links.trace_url(&t)),
        verdict_status: verdict.status,
    }
}
