//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export` on
//! `ingester.otlp.grpc_listen`, gzip accepted (the Collector's `otlp` exporter compresses by
//! default). Status codes are the OTLP specification's: UNAUTHENTICATED, INVALID_ARGUMENT (not
//! retried), RESOURCE_EXHAUSTED with RetryInfo while shedding and UNAVAILABLE while Redis is
//! down (both retried). A message over `max_body_bytes` is refused by tonic's decoder before
//! it is decoded: as sent, with INVALID_ARGUMENT (tonic says OUT_OF_RANGE, which the OTLP
//! specification makes retryable: the same request would be sent again and again), and once
//! decompressed with RESOURCE_EXHAUSTED without RetryInfo (not retried).
//!
//! Authentication and shedding run as middleware, before the message is read, so a shed
//! request costs no decoding.

use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic_types::{ErrorDetails, StatusExt as _};

use super::{ExportError, RETRY_AFTER_SECS, Receiver};
use crate::metrics::Transport;

/// The gRPC service, authenticated and shed by [`admit`] around it.
#[derive(Debug, Clone)]
struct Service(Receiver);

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0
            .export(Transport::Grpc, request.get_ref())
            .await
            .map(tonic::Response::new)
            .map_err(|e| status(&e))
    }
}

/// The OTLP/gRPC router, to be served with HTTP/2 on its own listener.
pub fn router(receiver: Receiver) -> Router {
    let limit = receiver.limits().max_body_bytes;
    let service = TraceServiceServer::new(Service(receiver.clone()))
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limit);
    tonic::service::Routes::new(service)
        .prepare()
        .into_axum_router()
        .layer(axum::middleware::from_fn_with_state(receiver, admit))
}

/// Authenticates and takes a concurrency permit, held until the answer is written.
async fn admit(State(receiver): State<Receiver>, request: Request, next: Next) -> Response {
    let authorization = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .map(axum::http::HeaderValue::as_bytes);
    match receiver.admit(authorization) {
        Ok(_permit) => {
            let mut response = next.run(request).await;
            // tonic answers a message over the size limit at once, with the status in the
            // headers (a trailers-only answer): make it the code a client does not retry.
            let status = response.headers().get("grpc-status");
            if status.is_some_and(|s| s.as_bytes() == b"11") {
                let code = (tonic::Code::InvalidArgument as i32).to_string();
                if let Ok(value) = axum::http::HeaderValue::from_str(&code) {
                    response.headers_mut().insert("grpc-status", value);
                }
            }
            response
        }
        Err(e) => {
            receiver.refused(Transport::Grpc, &e);
            status(&e).into_http::<axum::body::Body>().into_response()
        }
    }
}

/// The status for a refused export.
fn status(error: &ExportError) -> tonic::Status {
    let message = error.to_string();
    match error {
        ExportError::Invalid(_) | ExportError::TooLarge(_) | ExportError::Unsupported(_) => {
            tonic::Status::invalid_argument(message)
        }
        ExportError::Unauthenticated(_) => tonic::Status::unauthenticated(message),
        ExportError::Overloaded => tonic::Status::with_error_details(
            tonic::Code::ResourceExhausted,
            message,
            ErrorDetails::with_retry_info(Some(Duration::from_secs(RETRY_AFTER_SECS))),
        ),
        ExportError::Unavailable(_) => tonic::Status::with_error_details(
            tonic::Code::Unavailable,
            message,
            ErrorDetails::with_retry_info(Some(Duration::from_secs(RETRY_AFTER_SECS))),
        ),
    }
}
