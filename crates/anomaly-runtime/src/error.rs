//! The error contract of the HTTP APIs: every error code, each with its one HTTP status, and the
//! one body that carries it, `{"error": {"code": "SNAKE_CASE", "message": "..."}}`.
//!
//! A site that fails picks an [`ErrorCode`] and says what was wrong; the status follows from the
//! code (quickwit's `ServiceErrorCode` is the model), so the two cannot disagree and the
//! OpenAPI documents list every code the services answer. 4xx bodies say what was wrong; 5xx
//! bodies are opaque and the detail goes to the log.

use std::fmt;
use std::time::Duration;

use anomaly_core::{KeyError, NameField};
use anomaly_store::StoreError;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::telemetry::LogEvery;

/// A stable code saying what went wrong. Each service answers a subset; a code keeps its
/// meaning and its HTTP status wherever it appears. Per-item errors (a batch item, a trace of
/// an ingest) use the same codes inside a 200 answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The body is not JSON.
    MalformedJson,
    /// The body is JSON of the wrong shape.
    InvalidBody,
    /// The query string does not parse.
    InvalidQuery,
    /// A batch item or trace is not an object of the expected shape.
    InvalidItem,
    InvalidTraceId,
    InvalidService,
    InvalidEndpoint,
    InvalidStartTime,
    InvalidDuration,
    InvalidHour,
    InvalidDayType,
    /// A key that cannot be built from otherwise valid parts.
    InvalidKey,
    /// A listing's `cursor` is not one the listing returned.
    InvalidCursor,
    /// A trace whose root span has not arrived (ingest only, per trace).
    PartialTrace,
    /// A trace to analyse that cannot be (no spans, spans of several traces, bad span IDs).
    InvalidTrace,
    Unauthorized,
    /// No such route.
    NotFound,
    BaselineNotFound,
    /// Tempo does not know the trace.
    TraceNotFound,
    MethodNotAllowed,
    /// The body is larger than `limits.max_body_bytes`.
    PayloadTooLarge,
    /// More items than the service's `max_batch_items`.
    BatchTooLarge,
    /// A trace with more spans than `checker.analysis.max_spans`.
    TraceTooLarge,
    UnsupportedMediaType,
    /// Opaque: the detail is in the service's log.
    Internal,
    /// Tempo answered in a way retrying will not fix (it refused the request, or sent what is
    /// not a trace).
    TempoError,
    RedisUnavailable,
    /// Fewer replicas than `redis.min_replicas_ack` confirmed an ingest's writes in time: the
    /// primary has them, their survival of a failover is not known; retry the batch.
    NotReplicated,
    /// Tempo cannot be reached, timed out, is overloaded or is not configured.
    TempoUnavailable,
    /// More requests in flight than `limits.max_concurrency`.
    Overloaded,
    /// The request took longer than `limits.request_timeout`.
    Timeout,
}

impl ErrorCode {
    /// The HTTP status of an answer with this code. Codes that today only appear per item
    /// (INVALID_TRACE_ID, PARTIAL_TRACE) have the status they would have as a whole answer.
    pub fn status(self) -> StatusCode {
        use ErrorCode::*;
        match self {
            MalformedJson | InvalidBody | InvalidQuery | InvalidItem | InvalidTraceId
            | InvalidService | InvalidEndpoint | InvalidStartTime | InvalidDuration
            | InvalidHour | InvalidDayType | InvalidKey | InvalidCursor | PartialTrace
            | InvalidTrace => StatusCode::BAD_REQUEST,
            Unauthorized => StatusCode::UNAUTHORIZED,
            NotFound | BaselineNotFound | TraceNotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            PayloadTooLarge | BatchTooLarge | TraceTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
            TempoError => StatusCode::BAD_GATEWAY,
            RedisUnavailable | NotReplicated | TempoUnavailable | Overloaded | Timeout => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The code as it appears on the wire (what serde writes, too).
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            MalformedJson => "MALFORMED_JSON",
            InvalidBody => "INVALID_BODY",
            InvalidQuery => "INVALID_QUERY",
            InvalidItem => "INVALID_ITEM",
            InvalidTraceId => "INVALID_TRACE_ID",
            InvalidService => "INVALID_SERVICE",
            InvalidEndpoint => "INVALID_ENDPOINT",
            InvalidStartTime => "INVALID_START_TIME",
            InvalidDuration => "INVALID_DURATION",
            InvalidHour => "INVALID_HOUR",
            InvalidDayType => "INVALID_DAY_TYPE",
            InvalidKey => "INVALID_KEY",
            InvalidCursor => "INVALID_CURSOR",
            PartialTrace => "PARTIAL_TRACE",
            InvalidTrace => "INVALID_TRACE",
            Unauthorized => "UNAUTHORIZED",
            NotFound => "NOT_FOUND",
            BaselineNotFound => "BASELINE_NOT_FOUND",
            TraceNotFound => "TRACE_NOT_FOUND",
            MethodNotAllowed => "METHOD_NOT_ALLOWED",
            PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            BatchTooLarge => "BATCH_TOO_LARGE",
            TraceTooLarge => "TRACE_TOO_LARGE",
            UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Internal => "INTERNAL",
            TempoError => "TEMPO_ERROR",
            RedisUnavailable => "REDIS_UNAVAILABLE",
            NotReplicated => "NOT_REPLICATED",
            TempoUnavailable => "TEMPO_UNAVAILABLE",
            Overloaded => "OVERLOADED",
            Timeout => "TIMEOUT",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused name is INVALID_SERVICE or INVALID_ENDPOINT wherever it is refused (push, poll,
/// check, baseline lookup).
impl From<NameField> for ErrorCode {
    fn from(field: NameField) -> Self {
        match field {
            NameField::Service => ErrorCode::InvalidService,
            NameField::Endpoint => ErrorCode::InvalidEndpoint,
        }
    }
}

/// The code of a refused key part. anomaly-core says which part was wrong; which code that is
/// on the wire is decided here, with the others.
impl From<&KeyError> for ErrorCode {
    fn from(e: &KeyError) -> Self {
        match e {
            KeyError::Missing { field, .. }
            | KeyError::NotString { field, .. }
            | KeyError::Empty { field }
            | KeyError::TooLong { field, .. } => (*field).into(),
            KeyError::Hour(_) => ErrorCode::InvalidHour,
            KeyError::DayType(_) => ErrorCode::InvalidDayType,
            KeyError::FieldCount(_) | KeyError::Escape { .. } | KeyError::NotCanonical { .. } => {
                ErrorCode::InvalidKey
            }
        }
    }
}

/// The body of every error answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// What was wrong, for people.
    #[schema(example = "durationMs must not be negative")]
    pub message: String,
}

/// An API error in the contract's shape; its status is its code's.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }

    /// 500 with an opaque body; `detail` is logged, never sent.
    pub fn internal(detail: &dyn fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(ErrorCode::Internal, "internal error; see the service logs")
    }

    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// The body, also for embedding per-item errors in batch answers.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message.clone(),
            },
        }
    }

    /// The answer with this error's status and headers and `body`, which is [`Self::body`]
    /// or a superset of it (`/readyz` adds its checks).
    pub(crate) fn respond(&self, body: impl Serialize) -> Response {
        let status = self.status();
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        // Every 503 is transient: overload, a timeout, Redis out of reach.
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(1u32));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<&ApiError> for ErrorBody {
    fn from(e: &ApiError) -> Self {
        e.body()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.respond(self.body())
    }
}

/// The "redis unavailable" warning: during an outage every request fails the same way, and one
/// line a second says it (the `anomaly_redis_errors_total` metric counts them all).
static UNAVAILABLE_WARNING: LogEvery = LogEvery::new(Duration::from_secs(1));

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if let StoreError::NotReplicated { .. } = e {
            if UNAVAILABLE_WARNING.ready() {
                tracing::warn!(error = %e, "ingest not acknowledged by enough replicas");
            }
            return ApiError::new(ErrorCode::NotReplicated, e.to_string());
        }
        if e.is_unavailable() {
            if UNAVAILABLE_WARNING.ready() {
                tracing::warn!(error = %e, "redis unavailable");
            }
            ApiError::new(
                ErrorCode::RedisUnavailable,
                "Redis cannot be reached; retry shortly",
            )
        } else {
            ApiError::internal(&e)
        }
    }
}

/// Axum's own rejections (bad JSON, wrong content type, body too large) in the same shape.
impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                ErrorCode::PayloadTooLarge,
                "the request body is larger than this service accepts",
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "send the body as JSON with Content-Type: application/json",
            ),
            _ => match r {
                JsonRejection::JsonSyntaxError(e) => {
                    ApiError::new(ErrorCode::MalformedJson, e.body_text())
                }
                other => ApiError::new(ErrorCode::InvalidBody, other.body_text()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use utoipa::PartialSchema;

    use super::*;

    /// Every code, its wire string and its status: the contract (and the OpenAPI documents,
    /// the clients, the tests of every service) pin these.
    const CODES: [(ErrorCode, &str, u16); 31] = [
        (ErrorCode::MalformedJson, "MALFORMED_JSON", 400),
        (ErrorCode::InvalidBody, "INVALID_BODY", 400),
        (ErrorCode::InvalidQuery, "INVALID_QUERY", 400),
        (ErrorCode::InvalidItem, "INVALID_ITEM", 400),
        (ErrorCode::InvalidTraceId, "INVALID_TRACE_ID", 400),
        (ErrorCode::InvalidService, "INVALID_SERVICE", 400),
        (ErrorCode::InvalidEndpoint, "INVALID_ENDPOINT", 400),
        (ErrorCode::InvalidStartTime, "INVALID_START_TIME", 400),
        (ErrorCode::InvalidDuration, "INVALID_DURATION", 400),
        (ErrorCode::InvalidHour, "INVALID_HOUR", 400),
        (ErrorCode::InvalidDayType, "INVALID_DAY_TYPE", 400),
        (ErrorCode::InvalidKey, "INVALID_KEY", 400),
        (ErrorCode::InvalidCursor, "INVALID_CURSOR", 400),
        (ErrorCode::PartialTrace, "PARTIAL_TRACE", 400),
        (ErrorCode::InvalidTrace, "INVALID_TRACE", 400),
        (ErrorCode::Unauthorized, "UNAUTHORIZED", 401),
        (ErrorCode::NotFound, "NOT_FOUND", 404),
        (ErrorCode::BaselineNotFound, "BASELINE_NOT_FOUND", 404),
        (ErrorCode::TraceNotFound, "TRACE_NOT_FOUND", 404),
        (ErrorCode::MethodNotAllowed, "METHOD_NOT_ALLOWED", 405),
        (ErrorCode::PayloadTooLarge, "PAYLOAD_TOO_LARGE", 413),
        (ErrorCode::BatchTooLarge, "BATCH_TOO_LARGE", 413),
        (ErrorCode::TraceTooLarge, "TRACE_TOO_LARGE", 413),
        (
            ErrorCode::UnsupportedMediaType,
            "UNSUPPORTED_MEDIA_TYPE",
            415,
        ),
        (ErrorCode::Internal, "INTERNAL", 500),
        (ErrorCode::TempoError, "TEMPO_ERROR", 502),
        (ErrorCode::RedisUnavailable, "REDIS_UNAVAILABLE", 503),
        (ErrorCode::NotReplicated, "NOT_REPLICATED", 503),
        (ErrorCode::TempoUnavailable, "TEMPO_UNAVAILABLE", 503),
        (ErrorCode::Overloaded, "OVERLOADED", 503),
        (ErrorCode::Timeout, "TIMEOUT", 503),
    ];

    #[test]
    fn codes_keep_their_strings_and_statuses() {
        for (code, wire, status) in CODES {
            assert_eq!(code.as_str(), wire);
            assert_eq!(serde_json::to_value(code).unwrap(), wire, "serde of {wire}");
            assert_eq!(code.status().as_u16(), status, "{wire}");
        }
    }

    /// The schema lists exactly the codes above, so a new variant cannot miss the table.
    #[test]
    fn the_schema_lists_every_code() {
        let schema = serde_json::to_value(ErrorCode::schema()).unwrap();
        let listed: Vec<&str> = schema["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let table: Vec<&str> = CODES.iter().map(|(_, wire, _)| *wire).collect();
        assert_eq!(listed, table);
    }

    #[test]
    fn key_errors_have_the_api_codes() {
        let cases = [
            (
                KeyError::Empty {
                    field: NameField::Service,
                },
                "INVALID_SERVICE",
            ),
            (
                KeyError::TooLong {
                    field: NameField::Endpoint,
                    len: 10,
                    max: 9,
                },
                "INVALID_ENDPOINT",
            ),
            (KeyError::Hour("24".into()), "INVALID_HOUR"),
            (KeyError::DayType("x".into()), "INVALID_DAY_TYPE"),
            (KeyError::FieldCount(3), "INVALID_KEY"),
        ];
        for (err, code) in cases {
            assert_eq!(ErrorCode::from(&err).as_str(), code, "{err}");
        }
    }

    #[test]
    fn answers_carry_the_status_and_headers_of_their_code() {
        // (code, status, Retry-After, WWW-Authenticate)
        let cases = [
            (ErrorCode::InvalidDuration, 400, false, false),
            (ErrorCode::Unauthorized, 401, false, true),
            (ErrorCode::BatchTooLarge, 413, false, false),
            (ErrorCode::RedisUnavailable, 503, true, false),
            (ErrorCode::Timeout, 503, true, false),
        ];
        for (code, status, retry, challenge) in cases {
            let r = ApiError::new(code, "m").into_response();
            assert_eq!(r.status().as_u16(), status, "{code}");
            assert_eq!(
                r.headers().contains_key(header::RETRY_AFTER),
                retry,
                "{code}"
            );
            let www = r.headers().contains_key(header::WWW_AUTHENTICATE);
            assert_eq!(www, challenge, "{code}");
        }
    }
}
