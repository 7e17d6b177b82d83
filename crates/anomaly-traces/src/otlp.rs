//! OTLP/JSON (`ExportTraceServiceRequest` / `TracesData` with **hex** trace and span IDs), decoded
//! leniently into the generated OTLP types.
//!
//! The generated serde decoder is strict where the OTLP/JSON specification is lenient: 64-bit
//! integers may be JSON numbers, enums may be names, absent fields may be `null`. A body the
//! strict decoder refuses is read again with those forms made canonical, and only then refused
//! with the strict decoder's first error. Tempo's own JSON (base64 IDs, `batches`) is another
//! dialect: see [`crate::tempo::decode_tempo_json`], which shares [`canonical`]'s rewriting.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde_json::Value;

/// Why an OTLP/JSON body was refused: the strict decoder's first error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the body is not OTLP/JSON: {0}")]
pub struct OtlpJsonError(pub String);

/// OTLP/JSON into the generated types (see the module docs for the lenient forms taken).
pub fn decode_json(bytes: &[u8]) -> Result<ExportTraceServiceRequest, OtlpJsonError> {
    let strict = match serde_json::from_slice::<ExportTraceServiceRequest>(bytes) {
        Ok(request) => return Ok(request),
        Err(e) => e,
    };
    let invalid = || OtlpJsonError(strict.to_string());
    let value: Value = serde_json::from_slice(bytes).map_err(|_| invalid())?;
    decode_value(value).map_err(|_| invalid())
}

/// An OTLP/JSON object (`{"resourceSpans": [...]}`, hex IDs) already parsed: made canonical,
/// then decoded. Anything but an object is refused.
pub(crate) fn decode_value(mut value: Value) -> Result<ExportTraceServiceRequest, String> {
    let Value::Object(top) = &mut value else {
        return Err("expected a JSON object".to_owned());
    };
    top.entry("resourceSpans")
        .or_insert_with(|| Value::Array(Vec::new()));
    canonical(&mut value, None);
    serde_json::from_value(value).map_err(|e| e.to_string())
}

/// Rewrites the lenient forms of OTLP/JSON into those the generated decoder takes: `null`s
/// dropped, attributes without a value dropped, `*UnixNano` numbers as strings, span kinds and
/// status codes from their names.
pub(crate) fn canonical(value: &mut Value, key: Option<&str>) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            if let Some(Value::Array(attributes)) = map.get_mut("attributes") {
                attributes.retain(|kv| {
                    kv.get("value")
                        .and_then(Value::as_object)
                        .is_some_and(|v| v.values().any(|v| !v.is_null()))
                });
            }
            for (k, v) in map.iter_mut() {
                canonical(v, Some(k));
            }
        }
        Value::Array(items) => {
            for item in items {
                canonical(item, None);
            }
        }
        Value::Number(n) if key.is_some_and(|k| k.ends_with("UnixNano")) => {
            *value = Value::String(n.to_string());
        }
        Value::String(s) if key == Some("kind") => {
            if let Some(n) = enum_number(s, "SPAN_KIND_", &SPAN_KINDS) {
                *value = Value::from(n);
            }
        }
        Value::String(s) if key == Some("code") => {
            if let Some(n) = enum_number(s, "STATUS_CODE_", &STATUS_CODES) {
                *value = Value::from(n);
            }
        }
        _ => {}
    }
}

const SPAN_KINDS: [&str; 6] = [
    "UNSPECIFIED",
    "INTERNAL",
    "SERVER",
    "CLIENT",
    "PRODUCER",
    "CONSUMER",
];
const STATUS_CODES: [&str; 3] = ["UNSET", "OK", "ERROR"];

fn enum_number(name: &str, prefix: &str, names: &[&str]) -> Option<i32> {
    let name = name.strip_prefix(prefix)?;
    names
        .iter()
        .position(|n| *n == name)
        .and_then(|i| i32::try_from(i).ok())
}

/// A string attribute of a span or resource, when present and a non-empty string (the
/// resource's `service.name`, a span's `http.route`).
pub fn string_attribute<'a>(
    attributes: &'a [opentelemetry_proto::tonic::common::v1::KeyValue],
    key: &str,
) -> Option<&'a str> {
    use opentelemetry_proto::tonic::common::v1::any_value;
    match attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?
    {
        any_value::Value::StringValue(s) if !s.is_empty() => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's lenient forms decode to what the canonical form decodes to.
    #[test]
    fn lenient_json_is_made_canonical() {
        let canonical_body = br#"{"resourceSpans":[{"resource":{"attributes":[
            {"key":"service.name","value":{"stringValue":"checkout"}}]},
            "scopeSpans":[{"spans":[{"traceId":"0af7651916cd43dd8448eb211c80319c",
            "spanId":"b7ad6b7169203331","name":"POST /pay","kind":2,
            "startTimeUnixNano":"1796205126546724564","endTimeUnixNano":"1796205126576724564",
            "status":{"code":2}}]}]}]}"#;
        let lenient_body = br#"{"resourceSpans":[{"resource":{"attributes":[
            {"key":"service.name","value":{"stringValue":"checkout"}},{"key":"empty","value":{}}]},
            "schemaUrl":null,
            "scopeSpans":[{"spans":[{"traceId":"0af7651916cd43dd8448eb211c80319c",
            "spanId":"b7ad6b7169203331","name":"POST /pay","kind":"SPAN_KIND_SERVER",
            "startTimeUnixNano":1796205126546724564,"endTimeUnixNano":1796205126576724564,
            "status":{"code":"STATUS_CODE_ERROR"}}]}]}]}"#;
        let want = decode_json(canonical_body).unwrap();
        assert_eq!(decode_json(lenient_body).unwrap(), want);
        let span = &want.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.kind, 2);
        assert_eq!(span.trace_id[0], 0x0a);
        assert_eq!(
            span.end_time_unix_nano - span.start_time_unix_nano,
            30_000_000
        );
        // An empty object is a request with no spans.
        assert!(decode_json(b"{}").unwrap().resource_spans.is_empty());
        // Not JSON, or not OTLP: refused with the strict decoder's words. Tempo's base64 IDs
        // are not OTLP/JSON.
        for bad in [
            &b"{"[..],
            b"[]",
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"xyz"}]}]}]}"#,
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"S/kvNXezTaajzpKdDg5HNg=="}]}]}]}"#,
        ] {
            let err = decode_json(bad).unwrap_err();
            assert!(
                err.to_string().starts_with("the body is not OTLP/JSON: "),
                "{err}"
            );
        }
    }
}
