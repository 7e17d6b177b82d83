//! `POST /v1/traces/ingest` and its OpenAPI description (served at `GET /openapi.json`, kept
//! in `openapi/ingester.json`).
//!
//! Per-item validation: valid traces are stored even when others in the batch are not, and
//! refused ones are reported by index with a code. Ignored traces (matching `ingester.ignore`)
//! are counted, not refused: a client should not have to know the server's filters. Partial
//! traces are refused (`PARTIAL_TRACE`) and not marked seen, so the complete trace can be sent
//! later. A 200 means every stored trace is in Redis; when Redis cannot be reached the answer
//! is 503 and the batch may be retried whole (stored traces then count as duplicates).

use anomaly_runtime::error::{ApiError, ErrorBody, ErrorCode, ErrorDetail};
use anomaly_runtime::http::ApiJson;
use anomaly_runtime::openapi::BearerAuth;
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{OpenApi, ToSchema};

use crate::ingest::Ingest;
use crate::metrics::Source;
use crate::trace::TraceItem;

/// The push API's state.
#[derive(Debug, Clone)]
pub(crate) struct ApiState {
    pub ingest: Ingest,
    pub max_batch_items: usize,
}

/// A batch of traces.
#[derive(Debug, Deserialize, ToSchema)]
pub struct IngestRequest {
    /// Traces in the shape of Tempo's search results.
    #[schema(value_type = Vec<TraceItem>)]
    pub traces: Vec<Value>,
}

/// What happened to a batch.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestResponse {
    /// Traces stored as new samples.
    pub accepted: u64,
    /// Traces already seen within `dedup_ttl` (by normalised trace ID).
    pub duplicates: u64,
    /// Traces refused; see `errors`.
    pub rejected: u64,
    /// Traces matching `ingester.ignore` (not stored, not errors).
    pub ignored: u64,
    /// Valid traces for new keys not stored because the key cap (`ingester.max_keys`) is reached.
    pub over_cardinality: u64,
    pub errors: Vec<ItemErrorBody>,
}

/// A refused trace.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemErrorBody {
    /// Its position in `traces`.
    pub index: usize,
    /// One of INVALID_ITEM, INVALID_TRACE_ID, INVALID_SERVICE, INVALID_ENDPOINT,
    /// INVALID_START_TIME, INVALID_DURATION, INVALID_KEY, PARTIAL_TRACE.
    pub code: ErrorCode,
    pub message: String,
}

/// Stores a batch of traces as latency samples.
#[utoipa::path(
    post,
    path = "/v1/traces/ingest",
    request_body = IngestRequest,
    responses(
        (status = 200, description = "Valid traces stored; refused ones listed by index", body = IngestResponse),
        (status = 400, description = "MALFORMED_JSON or INVALID_BODY", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED: a bearer token is configured and missing or wrong", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE (body over limits.max_body_bytes) or BATCH_TOO_LARGE (more than max_batch_items traces)", body = ErrorBody),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE: send Content-Type: application/json", body = ErrorBody),
        (status = 503, description = "REDIS_UNAVAILABLE (nothing was acknowledged; retry the batch), NOT_REPLICATED (stored on the primary, not confirmed by `redis.min_replicas_ack` replicas in time; retry the batch), OVERLOADED or TIMEOUT", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
    tag = "ingest"
)]
pub(crate) async fn ingest_traces(
    State(state): State<ApiState>,
    ApiJson(request): ApiJson<IngestRequest>,
) -> Result<Json<IngestResponse>, ApiError> {
    if request.traces.len() > state.max_batch_items {
        return Err(ApiError::new(
            ErrorCode::BatchTooLarge,
            format!(
                "{} traces in one request; at most {} are accepted, split the batch",
                request.traces.len(),
                state.max_batch_items
            ),
        ));
    }
    let report = state.ingest.ingest(Source::Push, &request.traces).await?;
    Ok(Json(IngestResponse {
        accepted: report.accepted,
        duplicates: report.duplicates,
        rejected: report.rejected,
        ignored: report.ignored,
        over_cardinality: report.over_cardinality,
        errors: report
            .errors
            .into_iter()
            .map(|(index, e)| ItemErrorBody {
                index,
                code: e.code,
                message: e.message,
            })
            .collect(),
    }))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "latency-anomaly ingester",
        description = "Push API of the ingester: traces in Tempo's search shape become latency samples. OTLP/HTTP trace export (POST /v1/traces) on the same port; OTLP/gRPC TraceService/Export on ingester.otlp.grpc_listen. Probes: GET /healthz, GET /readyz, GET /metrics."
    ),
    paths(ingest_traces, crate::otlp::http::export),
    components(schemas(IngestRequest, TraceItem, IngestResponse, ItemErrorBody, ErrorBody, ErrorDetail, ErrorCode)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

/// The OpenAPI document, pretty-printed (what `openapi/ingester.json` holds).
pub fn openapi_json() -> String {
    anomaly_runtime::openapi::openapi_json(ApiDoc::openapi())
}
