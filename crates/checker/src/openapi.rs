//! The OpenAPI 3 document of the check API, generated from the handlers and their types (so it
//! cannot drift from the code), served at `GET /openapi.json` and kept in the repository as
//! `openapi/checker.json` (a test fails when the two differ).

use anomaly_runtime::error::{ErrorBody, ErrorCode, ErrorDetail};
use anomaly_runtime::openapi::BearerAuth;
use utoipa::OpenApi;

use crate::baseline::{BaselineResponse, BucketRange, KeyBody};
use crate::check::{
    BaselineBody, BatchItem, BatchRequest, BatchResponse, BatchResult, BoundName, BucketBody,
    CheckRequest, CheckResponse, CheckStatus, DayTypeBody, SpanBody, SpanCheckRequest,
};
use crate::keys::{BucketCounts, EndpointBody, KeysResponse, ServicesResponse};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "latency-anomaly checker",
        description = "Judges request latencies against precomputed, time-aware baselines and \
                       explains each verdict. Errors are {\"error\": {\"code\", \"message\"}}.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        crate::check::check,
        crate::check::check_batch,
        crate::check::check_span,
        crate::analysis::analyse_by_id,
        crate::analysis::analyse_body,
        crate::anomalies::list_anomalies,
        crate::baseline::get_baseline,
        crate::keys::list_keys,
        crate::keys::list_services
    ),
    components(schemas(
        CheckRequest,
        SpanCheckRequest,
        SpanBody,
        crate::analysis::AnalysisResponse,
        crate::analysis::MissingBody,
        crate::analysis::CulpritBody,
        crate::analysis::SegmentBody,
        crate::analysis::SpanNode,
        BatchItem,
        BatchRequest,
        CheckResponse,
        CheckStatus,
        BoundName,
        BucketBody,
        DayTypeBody,
        BaselineBody,
        BatchResponse,
        BatchResult,
        ErrorBody,
        ErrorDetail,
        ErrorCode,
        BaselineResponse,
        KeyBody,
        BucketRange,
        KeysResponse,
        EndpointBody,
        BucketCounts,
        ServicesResponse
    )),
    modifiers(&BearerAuth),
    security((), ("bearer" = [])),
    tags(
        (name = "check", description = "Is this request's latency anomalous?"),
        (name = "analysis", description = "Which span made this trace slow?"),
        (name = "anomalies", description = "What was found anomalous on ingest, newest first"),
        (name = "baseline", description = "What is stored for a key"),
        (name = "keys", description = "Which services and endpoints have samples, and how many"),
    )
)]
struct ApiDoc;

/// The checker's OpenAPI document as pretty JSON, as kept in `openapi/checker.json`.
pub fn openapi_json() -> String {
    anomaly_runtime::openapi::openapi_json(ApiDoc::openapi())
}
