//! The OpenAPI 3 document of the check API, generated from the handlers and their types (so it
//! cannot drift from the code), served at `GET /openapi.json` and kept in the repository as
//! `openapi/checker.json` (a test fails when the two differ).

use anomaly_runtime::error::{ErrorBody, ErrorCode, ErrorDetail};
use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::baseline::{BaselineResponse, BucketRange, KeyBody};
use crate::check::{
    BaselineBody, BatchRequest, BatchResponse, BatchResult, BoundName, BucketBody, CheckRequest,
    CheckResponse, CheckStatus, DayTypeBody,
};

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
        crate::baseline::get_baseline
    ),
    components(schemas(
        CheckRequest,
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
        BucketRange
    )),
    modifiers(&BearerAuth),
    security((), ("bearer" = [])),
    tags(
        (name = "check", description = "Is this request's latency anomalous?"),
        (name = "baseline", description = "What is stored for a key"),
    )
)]
struct ApiDoc;

/// Declares the optional bearer authentication (`checker.auth`).
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
        }
    }
}

/// The checker's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    // The crate's version is a workspace placeholder; the API's version is the path's `v1`.
    doc.info.version = "1".to_owned();
    doc
}

/// The document as pretty JSON with a final newline, as kept in `openapi/checker.json`.
pub fn openapi_json() -> String {
    let mut text = openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

pub(crate) async fn serve() -> impl IntoResponse {
    // Generating takes microseconds and the route is rarely hit; no need to keep a copy.
    ([(header::CONTENT_TYPE, "application/json")], openapi_json())
}
