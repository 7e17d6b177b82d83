//! OTLP spans, validated: root spans become samples on the path push and poll take, other
//! valid spans are kept for the span hook, and refused spans are counted by reason for the
//! answer's `partialSuccess`.

use std::fmt::Write as _;

use anomaly_core::{
    BaselineKey, Bucketer, DurationMs, KeyError, NameField, NameRules, TraceId, UnixNanos,
};
use anomaly_store::IngestItem;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::trace::IgnoreRules;

/// The resource attribute that names the service.
pub const SERVICE_NAME: &str = "service.name";

/// A valid non-root span, as the span hook receives it (borrowed from the request).
#[derive(Debug, Clone, Copy)]
pub struct ChildSpan<'a> {
    pub trace_id: TraceId,
    /// The resource's `service.name`.
    pub service: &'a str,
    /// The span itself: name, kind, attributes (`http.route`), IDs and times.
    pub span: &'a Span,
    /// `end - start`.
    pub duration: DurationMs,
}

/// Why a span was refused; each reason is counted and described once in `partialSuccess`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NoServiceName,
    TraceId,
    SpanId,
    EndBeforeStart,
    StartTime,
    Duration,
    ServiceName,
    SpanName,
}

impl Refusal {
    const ALL: [Refusal; 8] = [
        Refusal::NoServiceName,
        Refusal::TraceId,
        Refusal::SpanId,
        Refusal::EndBeforeStart,
        Refusal::StartTime,
        Refusal::Duration,
        Refusal::ServiceName,
        Refusal::SpanName,
    ];

    /// What the refused spans did, after "N spans".
    fn describe(self) -> &'static str {
        match self {
            Refusal::NoServiceName => "had no resource attribute `service.name` (a string)",
            Refusal::TraceId => "had a trace ID that is not 16 bytes or is all zeros",
            Refusal::SpanId => "had a span ID that is not 8 bytes or is all zeros",
            Refusal::EndBeforeStart => "ended before they started",
            Refusal::StartTime => {
                "were roots starting outside 2000..2100 (is startTimeUnixNano in nanoseconds?)"
            }
            Refusal::Duration => "were roots longer than 24 hours",
            Refusal::ServiceName => "had a `service.name` longer than max_name_bytes",
            Refusal::SpanName => "were roots with an empty name or one longer than max_name_bytes",
        }
    }
}

/// What one export request turned into.
#[derive(Debug, Default)]
pub struct Converted<'a> {
    /// Valid root spans, one sample each.
    pub roots: Vec<IngestItem>,
    /// Valid non-root spans.
    pub children: Vec<ChildSpan<'a>>,
    /// Valid root spans that matched `ingester.ignore`.
    pub ignored: u64,
    /// Refused spans that were roots (also in the reasons' counts).
    pub rejected_roots: u64,
    /// Refused spans by reason (indexed as [`Refusal::ALL`]), with the first one's IDs.
    refused: [(u64, Option<String>); 8],
}

impl Converted<'_> {
    /// Spans refused.
    pub fn rejected(&self) -> u64 {
        self.refused.iter().map(|(n, _)| n).sum()
    }

    /// How many spans were refused for `reason`.
    pub fn refused(&self, reason: Refusal) -> u64 {
        self.refused[reason as usize].0
    }

    fn refuse(&mut self, reason: Refusal, span: &Span) {
        let (count, first) = &mut self.refused[reason as usize];
        *count += 1;
        if first.is_none() {
            *first = Some(format!(
                "span {} of trace {}",
                hex(&span.span_id),
                hex(&span.trace_id)
            ));
        }
    }

    /// The `partialSuccess.errorMessage`: every reason with its count and first example.
    pub fn message(&self) -> String {
        let mut out = String::new();
        for reason in Refusal::ALL {
            let (count, first) = &self.refused[reason as usize];
            if *count == 0 {
                continue;
            }
            if !out.is_empty() {
                out.push_str("; ");
            }
            let _ = write!(out, "{count} spans {}", reason.describe());
            if let Some(first) = first {
                let _ = write!(out, " (first: {first})");
            }
        }
        out
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    if out.is_empty() {
        out.push_str("(empty)");
    }
    out
}

/// The rules every sample is held to, as push and poll apply them.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'r> {
    pub bucketer: &'r Bucketer,
    pub ignore: &'r IgnoreRules,
    pub names: NameRules,
}

/// Spans in a request.
pub fn count(request: &ExportTraceServiceRequest) -> usize {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

/// Validates every span of `request`.
pub fn convert<'a>(request: &'a ExportTraceServiceRequest, rules: Rules<'_>) -> Converted<'a> {
    let mut out = Converted::default();
    for resource_spans in &request.resource_spans {
        let attributes = resource_spans
            .resource
            .as_ref()
            .map_or(&[][..], |r| &r.attributes[..]);
        let service = service_name(attributes);
        for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
            match one(span, service, rules) {
                Ok(Valid::Root(item)) => out.roots.push(item),
                Ok(Valid::Ignored) => out.ignored += 1,
                Ok(Valid::Child(child)) => out.children.push(child),
                Err(reason) => {
                    out.rejected_roots += u64::from(is_root(span));
                    out.refuse(reason, span);
                }
            }
        }
    }
    out
}

/// A root has no parent; some senders write eight zero bytes instead of none.
fn is_root(span: &Span) -> bool {
    span.parent_span_id.iter().all(|&b| b == 0)
}

enum Valid<'a> {
    Root(IngestItem),
    Ignored,
    Child(ChildSpan<'a>),
}

/// The resource's `service.name`, when it is a non-empty string.
fn service_name(attributes: &[KeyValue]) -> Option<&str> {
    anomaly_traces::otlp::string_attribute(attributes, SERVICE_NAME)
}

fn one<'a>(
    span: &'a Span,
    service: Option<&'a str>,
    rules: Rules<'_>,
) -> Result<Valid<'a>, Refusal> {
    let service = service.ok_or(Refusal::NoServiceName)?;
    let trace_id: &[u8; 16] = span
        .trace_id
        .as_slice()
        .try_into()
        .ok()
        .filter(|id: &&[u8; 16]| id.iter().any(|&b| b != 0))
        .ok_or(Refusal::TraceId)?;
    if span.span_id.len() != 8 || span.span_id.iter().all(|&b| b == 0) {
        return Err(Refusal::SpanId);
    }
    let nanos = span
        .end_time_unix_nano
        .checked_sub(span.start_time_unix_nano)
        .ok_or(Refusal::EndBeforeStart)?;
    // Nanoseconds to milliseconds; the window keeps whole microseconds.
    #[allow(clippy::cast_precision_loss)]
    let duration = DurationMs::new(nanos as f64 / 1e6);
    let trace_id = TraceId::from_bytes(trace_id);
    if !is_root(span) {
        let duration = duration.map_err(|_| Refusal::Duration)?;
        return Ok(Valid::Child(ChildSpan {
            trace_id,
            service,
            span,
            duration,
        }));
    }
    let start = UnixNanos::new(span.start_time_unix_nano).map_err(|_| Refusal::StartTime)?;
    let duration = duration.map_err(|_| Refusal::Duration)?;
    let bucket = rules.bucketer.bucket(start.to_datetime());
    let key = BaselineKey::with_rules(
        service,
        span.name.as_str(),
        bucket.hour,
        bucket.day_type,
        rules.names,
    )
    .map_err(|e| match e {
        KeyError::Empty {
            field: NameField::Service,
        }
        | KeyError::TooLong {
            field: NameField::Service,
            ..
        } => Refusal::ServiceName,
        _ => Refusal::SpanName,
    })?;
    if rules.ignore.matches(service, &span.name) {
        return Ok(Valid::Ignored);
    }
    Ok(Valid::Root(IngestItem {
        trace_id,
        key,
        duration,
        start_ms: start.as_millis(),
    }))
}
