//! OTLP/HTTP: `POST /v1/traces` with a protobuf or JSON `ExportTraceServiceRequest`, plain,
//! gzip or deflate, answered in the request's encoding as the OTLP specification says: 200
//! with `ExportTraceServiceResponse` (and `partialSuccess` when spans were refused), else a
//! `google.rpc.Status` body with 400, 401, 413, 415, 429 or 503 (the last two with
//! `Retry-After`, so that Collectors retry them and nothing else).

use std::io::Read as _;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;

use super::{ExportError, RETRY_AFTER_SECS, Receiver};
use crate::metrics::Transport;

/// The path the OTLP specification gives for traces.
pub const PATH: &str = "/v1/traces";

/// A request body's encoding, which is also the answer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    /// From `Content-Type` (parameters such as `charset` ignored).
    pub fn of(headers: &HeaderMap) -> Option<Encoding> {
        let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let media = value.split(';').next()?.trim();
        if media.eq_ignore_ascii_case("application/x-protobuf")
            || media.eq_ignore_ascii_case("application/protobuf")
        {
            Some(Encoding::Protobuf)
        } else if media.eq_ignore_ascii_case("application/json") {
            Some(Encoding::Json)
        } else {
            None
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// `Content-Encoding` of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Deflate,
}

fn compression(headers: &HeaderMap) -> Result<Compression, ExportError> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(Compression::None);
    };
    let value = value.to_str().unwrap_or("").trim();
    if value.is_empty() || value.eq_ignore_ascii_case("identity") {
        Ok(Compression::None)
    } else if value.eq_ignore_ascii_case("gzip") || value.eq_ignore_ascii_case("x-gzip") {
        Ok(Compression::Gzip)
    } else if value.eq_ignore_ascii_case("deflate") {
        Ok(Compression::Deflate)
    } else {
        Err(ExportError::Unsupported(format!(
            "Content-Encoding {value:?} is not supported; send gzip, deflate or none"
        )))
    }
}

/// OTLP/HTTP trace export, as the OpenTelemetry specification defines it.
///
/// The body is an OTLP `ExportTraceServiceRequest`: protobuf (`application/x-protobuf`) or
/// OTLP/JSON (`application/json`), plain or `Content-Encoding: gzip` / `deflate`, at most
/// `ingester.otlp.max_body_bytes` as sent and decompressed and `ingester.otlp.max_spans` spans.
/// Root spans (no parent) become samples: service = the resource's `service.name`, endpoint =
/// the span name, duration = end - start. Answers are in the request's encoding; errors are a
/// `google.rpc.Status` (`{"code": 3, "message": "..."}` in JSON).
#[utoipa::path(
    post,
    path = "/v1/traces",
    request_body(
        content(
            (Vec<u8> = "application/x-protobuf"),
            (Object = "application/json"),
        ),
        description = "ExportTraceServiceRequest (opentelemetry/proto/collector/trace/v1)"
    ),
    responses(
        (status = 200, description = "Stored: ExportTraceServiceResponse; `partialSuccess` (`rejectedSpans`, `errorMessage`) counts and explains refused spans"),
        (status = 400, description = "The body cannot be decoded (google.rpc.Status, INVALID_ARGUMENT; do not retry)"),
        (status = 401, description = "A bearer token is configured and missing or wrong"),
        (status = 413, description = "Over ingester.otlp.max_body_bytes (as sent or decompressed) or ingester.otlp.max_spans"),
        (status = 415, description = "Content-Type other than application/x-protobuf or application/json, or a Content-Encoding other than gzip, deflate or none"),
        (status = 429, description = "Shed: over ingester.otlp.max_concurrency; retry after Retry-After"),
        (status = 503, description = "Redis cannot be reached; nothing was acknowledged, retry after Retry-After"),
    ),
    security((), ("bearer" = [])),
    tag = "otlp"
)]
pub async fn export(State(receiver): State<Receiver>, headers: HeaderMap, body: Body) -> Response {
    // An unknown media type is answered in JSON: the client will at least be able to read it.
    let Some(encoding) = Encoding::of(&headers) else {
        let error = ExportError::Unsupported(
            "Content-Type must be application/x-protobuf or application/json".to_owned(),
        );
        receiver.refused(Transport::Http, &error);
        return failure(Encoding::Json, &error);
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    let admitted = async {
        let permit = receiver.admit(authorization)?;
        Ok((permit, read(&receiver, &headers, body, encoding).await?))
    };
    let result = match admitted.await {
        // The permit is held until the answer is ready.
        Ok((_permit, request)) => receiver.export(Transport::Http, &request).await,
        Err(e) => {
            receiver.refused(Transport::Http, &e);
            Err(e)
        }
    };
    match result {
        Ok(response) => {
            let body = match encoding {
                Encoding::Protobuf => response.encode_to_vec(),
                // `{}` when complete: an absent partialSuccess, not `null`.
                Encoding::Json => serde_json::to_vec(&response.partial_success.map_or_else(
                    || serde_json::json!({}),
                    |p| {
                        serde_json::json!({"partialSuccess": {
                            "rejectedSpans": p.rejected_spans.to_string(),
                            "errorMessage": p.error_message,
                        }})
                    },
                ))
                .unwrap_or_default(),
            };
            ([(header::CONTENT_TYPE, encoding.content_type())], body).into_response()
        }
        Err(e) => failure(encoding, &e),
    }
}

/// Reads, decompresses and decodes the body, holding it to `max_body_bytes` before and after
/// decompression.
async fn read(
    receiver: &Receiver,
    headers: &HeaderMap,
    body: Body,
    encoding: Encoding,
) -> Result<ExportTraceServiceRequest, ExportError> {
    let limit = receiver.limits().max_body_bytes;
    let compression = compression(headers)?;
    let too_large = |what: &str| {
        ExportError::TooLarge(format!(
            "the {what} is over {limit} bytes (ingester.otlp.max_body_bytes); send smaller batches"
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large("body"));
    }
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large("body")),
        Err(e) => return Err(ExportError::Invalid(format!("cannot read the body: {e}"))),
    };
    let bytes = match compression {
        Compression::None => bytes,
        Compression::Gzip => inflate(flate2::read::MultiGzDecoder::new(&bytes[..]), limit, "gzip")
            .map_err(|e| e.unwrap_or_else(|| too_large("decompressed body")))?,
        Compression::Deflate => {
            inflate(flate2::read::ZlibDecoder::new(&bytes[..]), limit, "deflate")
                .map_err(|e| e.unwrap_or_else(|| too_large("decompressed body")))?
        }
    };
    match encoding {
        Encoding::Protobuf => ExportTraceServiceRequest::decode(bytes).map_err(|e| {
            ExportError::Invalid(format!(
                "the body is not an OTLP ExportTraceServiceRequest: {e}"
            ))
        }),
        Encoding::Json => decode_json(&bytes),
    }
}

/// Decompresses at most `limit` bytes: `Err(None)` past it, `Err(Some(..))` for a bad stream.
fn inflate(
    decoder: impl std::io::Read,
    limit: usize,
    name: &str,
) -> Result<Bytes, Option<ExportError>> {
    let mut out = Vec::new();
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            Some(ExportError::Invalid(format!(
                "the body is not valid {name}: {e}"
            )))
        })?;
    if out.len() > limit {
        return Err(None);
    }
    Ok(Bytes::from(out))
}

/// OTLP/JSON into the generated types, leniently ([`anomaly_traces::otlp::decode_json`]).
pub fn decode_json(bytes: &[u8]) -> Result<ExportTraceServiceRequest, ExportError> {
    anomaly_traces::otlp::decode_json(bytes).map_err(|e| ExportError::Invalid(e.to_string()))
}

/// An error answer: `google.rpc.Status` in the request's encoding.
fn failure(encoding: Encoding, error: &ExportError) -> Response {
    let (status, code) = match error {
        ExportError::Invalid(_) => (StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument),
        ExportError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, tonic::Code::InvalidArgument),
        ExportError::Unsupported(_) => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            tonic::Code::InvalidArgument,
        ),
        ExportError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, tonic::Code::Unauthenticated),
        ExportError::Overloaded => (
            StatusCode::TOO_MANY_REQUESTS,
            tonic::Code::ResourceExhausted,
        ),
        ExportError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, tonic::Code::Unavailable),
    };
    let message = error.to_string();
    let body = match encoding {
        Encoding::Protobuf => tonic_types::pb::Status {
            code: code as i32,
            message,
            details: Vec::new(),
        }
        .encode_to_vec(),
        Encoding::Json => serde_json::to_vec(&serde_json::json!({
            "code": code as i32,
            "message": message,
        }))
        .unwrap_or_default(),
    };
    let mut response = (
        status,
        [(header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response();
    if matches!(error, ExportError::Overloaded | ExportError::Unavailable(_)) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// OTLP/JSON is anomaly-traces' decoder (tested there, lenient forms included); here its
    /// refusals become the receiver's 400s.
    #[test]
    fn undecodable_json_is_an_invalid_export() {
        // An empty object is a request with no spans.
        assert!(decode_json(b"{}").unwrap().resource_spans.is_empty());
        // Not JSON, or not OTLP: refused with the strict decoder's words.
        for bad in [
            &b"{"[..],
            b"[]",
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"xyz"}]}]}]}"#,
        ] {
            let err = decode_json(bad).unwrap_err();
            assert!(matches!(err, ExportError::Invalid(_)), "{err:?}");
            assert!(
                err.to_string().starts_with("the body is not OTLP/JSON: "),
                "{err}"
            );
        }
    }
}
