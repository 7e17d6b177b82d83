//! The OTLP trace receiver: OTLP/HTTP `POST /v1/traces` ([`http`]) on the ingester's port and
//! OTLP/gRPC `TraceService/Export` ([`grpc`]) on its own, with one set of rules.
//!
//! - Admission: the push API's bearer tokens, then a concurrency budget shared by both
//!   transports (`ingester.otlp.max_concurrency`); beyond it requests are shed with 429 /
//!   RESOURCE_EXHAUSTED and a retry hint, before their bodies are read.
//! - Size: `max_body_bytes` as received and again after decompression (a gzip bomb stops at
//!   the limit), and `max_spans` per request.
//! - Spans ([`spans`]): root spans become samples on the path push and poll take (same
//!   dedup, ignore rules, key cap and name rule); valid non-root spans go to the span hook;
//!   invalid spans are counted in `partialSuccess` with the reasons.
//! - Acknowledgement: a success means every root span is in Redis. When Redis cannot be
//!   reached the answer is 503 / UNAVAILABLE and the client retries the whole request; roots
//!   already stored then count as duplicates, so nothing is counted twice.

pub mod grpc;
pub mod http;
pub mod spans;

use std::sync::Arc;

use anomaly_runtime::auth::Tokens;
use anomaly_store::StoreError;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::OtlpSection;
use crate::ingest::{BatchReport, Ingest};
use crate::metrics::{IngestMetrics, Source, Transport};

pub use spans::{ChildSpan, Refusal};

/// Why an export was refused as a whole; each transport maps it to its status.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The body cannot be decoded (HTTP 400, gRPC INVALID_ARGUMENT; not retried).
    #[error("{0}")]
    Invalid(String),
    /// Over `max_body_bytes` or `max_spans` (HTTP 413; gRPC INVALID_ARGUMENT).
    #[error("{0}")]
    TooLarge(String),
    /// Another media type or content encoding (HTTP 415).
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// Shed: over `max_concurrency` (HTTP 429, gRPC RESOURCE_EXHAUSTED with RetryInfo).
    #[error("too many OTLP requests in flight (ingester.otlp.max_concurrency); retry shortly")]
    Overloaded,
    /// Redis cannot be reached; nothing was acknowledged (HTTP 503, gRPC UNAVAILABLE).
    #[error("Redis cannot be reached; nothing was acknowledged, retry the request")]
    Unavailable(#[source] StoreError),
}

impl ExportError {
    /// The `outcome` label of `anomaly_otlp_requests_total`.
    fn outcome(&self) -> &'static str {
        match self {
            ExportError::Invalid(_) => "invalid",
            ExportError::TooLarge(_) => "too_large",
            ExportError::Unsupported(_) => "unsupported",
            ExportError::Unauthenticated(_) => "unauthenticated",
            ExportError::Overloaded => "overloaded",
            ExportError::Unavailable(_) => "unavailable",
        }
    }
}

/// The seconds a shed or Redis-less client is told to wait (`Retry-After`, RetryInfo).
pub const RETRY_AFTER_SECS: u64 = 1;

/// The receiver shared by both transports; cheap to clone.
#[derive(Debug, Clone)]
pub struct Receiver {
    ingest: Ingest,
    tokens: Tokens,
    limits: Arc<OtlpSection>,
    permits: Arc<Semaphore>,
    metrics: IngestMetrics,
}

impl Receiver {
    pub(crate) fn new(
        ingest: Ingest,
        tokens: Tokens,
        limits: OtlpSection,
        metrics: IngestMetrics,
    ) -> Self {
        Receiver {
            ingest,
            tokens,
            permits: Arc::new(Semaphore::new(limits.max_concurrency)),
            limits: Arc::new(limits),
            metrics,
        }
    }

    pub fn limits(&self) -> &OtlpSection {
        &self.limits
    }

    /// Authenticates a request (its `authorization` header or metadata) and takes one of the
    /// shared concurrency permits, held until the answer is ready.
    pub fn admit(&self, authorization: Option<&[u8]>) -> Result<OwnedSemaphorePermit, ExportError> {
        self.tokens
            .check_bearer(authorization)
            .map_err(ExportError::Unauthenticated)?;
        Arc::clone(&self.permits)
            .try_acquire_owned()
            .map_err(|_| ExportError::Overloaded)
    }

    /// Counts a request refused before [`Receiver::export`] ran.
    pub fn refused(&self, transport: Transport, error: &ExportError) {
        self.metrics.otlp_request(transport, error.outcome());
        if let ExportError::Unavailable(e) = error {
            tracing::warn!(transport = transport.as_str(), error = %e, "otlp export refused: redis unavailable");
        }
    }

    /// Stores a decoded request's root spans, hands its other valid spans to the span hook
    /// and answers with the spans refused.
    pub async fn export(
        &self,
        transport: Transport,
        request: &ExportTraceServiceRequest,
    ) -> Result<ExportTraceServiceResponse, ExportError> {
        let result = self.export_inner(transport, request).await;
        match &result {
            Ok(response) => {
                let partial = response.partial_success.is_some();
                self.metrics
                    .otlp_request(transport, if partial { "partial" } else { "ok" });
            }
            Err(e) => self.refused(transport, e),
        }
        result
    }

    async fn export_inner(
        &self,
        transport: Transport,
        request: &ExportTraceServiceRequest,
    ) -> Result<ExportTraceServiceResponse, ExportError> {
        let spans = spans::count(request);
        if spans > self.limits.max_spans {
            return Err(ExportError::TooLarge(format!(
                "{spans} spans in one request; at most {} are accepted (ingester.otlp.max_spans), send smaller batches",
                self.limits.max_spans
            )));
        }
        let (bucketer, ignore, names) = self.ingest.rules();
        let converted = spans::convert(
            request,
            spans::Rules {
                bucketer,
                ignore,
                names,
            },
        );
        let source = Source::Otlp(transport);
        let roots = converted.roots.len() as u64;
        let report = BatchReport {
            ignored: converted.ignored,
            rejected: converted.rejected_roots,
            ..BatchReport::default()
        };
        let stored = self
            .ingest
            .store(source, &converted.roots, report)
            .await
            .map_err(ExportError::Unavailable)?;
        self.ingest
            .child_spans(source, &converted.children)
            .await
            .map_err(ExportError::Unavailable)?;

        let m = &self.metrics;
        m.otlp_spans(transport, "root", roots + converted.ignored);
        m.otlp_spans(transport, "child", converted.children.len() as u64);
        m.otlp_spans(transport, "rejected", converted.rejected());

        let rejected = converted.rejected() + stored.over_cardinality;
        if rejected == 0 {
            return Ok(ExportTraceServiceResponse {
                partial_success: None,
            });
        }
        let mut message = converted.message();
        if stored.over_cardinality > 0 {
            if !message.is_empty() {
                message.push_str("; ");
            }
            message.push_str(&format!(
                "{} root spans for new keys not stored: the key cap (ingester.max_keys) is reached",
                stored.over_cardinality
            ));
        }
        Ok(ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: i64::try_from(rejected).unwrap_or(i64::MAX),
                error_message: message,
            }),
        })
    }
}
