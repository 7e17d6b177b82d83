//! One trace as Tempo's search reports it (and as the push API takes it), validated into a
//! sample, or classified as partial or ignored, or refused with a code.
//!
//! Items stay `serde_json::Value` until here so that one bad item (a number where a string
//! belongs) is reported by index instead of failing the whole batch or poll. [`TraceItem`] is
//! the item's shape, read without copying and documented in the OpenAPI document from the
//! same type; each field is then validated on its own, with its own code.

use anomaly_core::{BaselineKey, Bucketer, DurationMs, NameField, NameRules, TraceId, UnixNanos};
use anomaly_runtime::error::ErrorCode;
use anomaly_store::IngestItem;
use serde_json::Value;
use utoipa::ToSchema;

use crate::config::IgnoreRule;

/// What Tempo reports as the service while a trace's root span has not arrived.
pub const PARTIAL_ROOT: &str = "<root span not yet received>";

/// What one trace turned into.
#[derive(Debug, Clone)]
pub enum Parsed {
    Sample(IngestItem),
    /// The root span has not arrived; its names and duration are not the trace's yet.
    Partial,
    /// Matched an ignore rule.
    Ignored,
}

/// Why an item was refused: the API's error codes, reported per item in a 200 answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemError {
    pub code: ErrorCode,
    pub message: String,
}

impl ItemError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ItemError {
            code,
            message: message.into(),
        }
    }
}

pub use anomaly_core::IgnoreRules;

/// Compiles `ingester.ignore` (validated at load, so this only fails on a config never
/// validated).
pub fn ignore_rules(rules: &[IgnoreRule]) -> Result<IgnoreRules, anomaly_core::ConfigError> {
    IgnoreRules::new(
        rules
            .iter()
            .map(|r| (r.service.as_deref(), r.endpoint.as_deref())),
        |i, side| match side {
            0 => format!("ingester.ignore[{i}].service"),
            1 => format!("ingester.ignore[{i}].endpoint"),
            _ => format!("ingester.ignore[{i}]"),
        },
    )
}

/// A name through the rule the checker applies, refused with the same code and message.
fn name<'a>(
    value: Option<&'a Value>,
    wire: &'static str,
    field: NameField,
    names: NameRules,
) -> Result<&'a str, ItemError> {
    names
        .parse_json(field, wire, value)
        .map_err(|e| ItemError::new((&e).into(), e.to_string()))
}

// One trace of a push batch or of a Tempo search answer: the fields the ingester reads,
// borrowed from the item as sent, each validated on its own in `parse_with`. The doc comment
// below is the OpenAPI description.
/// A trace as Tempo's `/api/search` reports it. Unknown fields are ignored.
#[derive(Debug, Clone, Copy, ToSchema)]
#[schema(as = TempoTrace, rename_all = "camelCase")]
pub struct TraceItem<'a> {
    /// Hex, 1-32 digits; normalised (lowercase, left-padded to 32) before dedup.
    #[schema(rename = "traceID", value_type = String, example = "af7651916cd43dd8448eb211c80319c")]
    pub trace_id: Option<&'a Value>,
    /// The service: 1 to `max_name_bytes` (default 256) bytes of UTF-8, the limit the checker
    /// applies too; longer is INVALID_SERVICE. `<root span not yet received>` (a partial trace)
    /// is refused as PARTIAL_TRACE.
    #[schema(value_type = String, example = "checkout")]
    pub root_service_name: Option<&'a Value>,
    /// The endpoint (root span name): 1 to `max_name_bytes` (default 256) bytes of UTF-8, the
    /// limit the checker applies too; longer is INVALID_ENDPOINT.
    #[schema(value_type = String, example = "GET /cart")]
    pub root_trace_name: Option<&'a Value>,
    /// Nanoseconds since the epoch, as a decimal string or an integer.
    #[schema(value_type = String, example = "1795587411787997767")]
    pub start_time_unix_nano: Option<&'a Value>,
    /// Milliseconds; absent means 0 (Tempo omits zero values).
    #[schema(value_type = Option<f64>, example = 120)]
    pub duration_ms: Option<&'a Value>,
}

impl<'a> TraceItem<'a> {
    /// The item's fields, or INVALID_ITEM when it is not a JSON object.
    pub fn from_json(value: &'a Value) -> Result<Self, ItemError> {
        let Value::Object(obj) = value else {
            return Err(ItemError::new(
                ErrorCode::InvalidItem,
                "a trace must be a JSON object",
            ));
        };
        Ok(TraceItem {
            trace_id: obj.get("traceID"),
            root_service_name: obj.get("rootServiceName"),
            root_trace_name: obj.get("rootTraceName"),
            start_time_unix_nano: obj.get("startTimeUnixNano"),
            duration_ms: obj.get("durationMs"),
        })
    }

    /// The trace ID, normalised (INVALID_TRACE_ID when it is missing, empty, not a string or
    /// not 1-32 hex digits).
    pub fn trace_id(&self) -> Result<TraceId, ItemError> {
        let invalid = |m: String| ItemError::new(ErrorCode::InvalidTraceId, m);
        match self.trace_id {
            Some(Value::String(s)) if !s.is_empty() => {
                TraceId::parse(s).map_err(|e| invalid(e.to_string()))
            }
            Some(Value::String(_) | Value::Null) | None => {
                Err(invalid("traceID is missing or empty".to_owned()))
            }
            Some(_) => Err(invalid("traceID must be a string".to_owned())),
        }
    }
}

/// [`parse_with`] under the default name rule (`max_name_bytes` 256).
pub fn parse(
    value: &Value,
    bucketer: &Bucketer,
    ignore: &IgnoreRules,
) -> Result<Parsed, ItemError> {
    parse_with(value, bucketer, ignore, NameRules::default())
}

/// Validates one trace and turns it into a sample keyed by its local hour and day type.
///
/// A name over `names` (`max_name_bytes`) is refused, INVALID_SERVICE or INVALID_ENDPOINT as
/// the checker would refuse it, even when an ignore rule matches: the rule says what a name may
/// be, the ignore list which valid traces to drop.
pub fn parse_with(
    value: &Value,
    bucketer: &Bucketer,
    ignore: &IgnoreRules,
    names: NameRules,
) -> Result<Parsed, ItemError> {
    let item = TraceItem::from_json(value)?;
    let trace_id = item.trace_id()?;
    // Partial before the name rule: the placeholder is Tempo's, not a name to be judged.
    if item.root_service_name.and_then(Value::as_str) == Some(PARTIAL_ROOT) {
        return Ok(Parsed::Partial);
    }
    let service = name(
        item.root_service_name,
        "rootServiceName",
        NameField::Service,
        names,
    )?;
    let endpoint = name(
        item.root_trace_name,
        "rootTraceName",
        NameField::Endpoint,
        names,
    )?;
    if ignore.matches(service, endpoint) {
        return Ok(Parsed::Ignored);
    }
    let start = item
        .start_time_unix_nano
        .map_or(
            Err(anomaly_core::TimestampError::Empty),
            UnixNanos::from_json,
        )
        .map_err(|e| ItemError::new(ErrorCode::InvalidStartTime, e.to_string()))?;
    let duration = DurationMs::from_json(item.duration_ms)
        .map_err(|e| ItemError::new(ErrorCode::InvalidDuration, e.to_string()))?;
    let bucket = bucketer.bucket(start.to_datetime());
    let key = BaselineKey::with_rules(service, endpoint, bucket.hour, bucket.day_type, names)
        .map_err(|e| ItemError::new((&e).into(), e.to_string()))?;
    Ok(Parsed::Sample(IngestItem {
        trace_id,
        key,
        duration,
        start_ms: start.as_millis(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use anomaly_core::TimeConfig;
    use serde_json::json;

    fn bucketer() -> Bucketer {
        Bucketer::new(&TimeConfig::default())
    }

    #[test]
    fn classifies() {
        let ignore = ignore_rules(&[IgnoreRule {
            service: None,
            endpoint: Some("GET /(healthz|ping)".into()),
        }])
        .unwrap();
        let ok = json!({"traceID": "af7651916cd43dd8448eb211c80319c", "rootServiceName": "checkout",
            "rootTraceName": "GET /cart", "startTimeUnixNano": "1795587411787997767", "durationMs": 120});
        let cases: Vec<(Value, Result<&str, &str>)> = vec![
            (ok.clone(), Ok("sample")),
            (
                json!({"traceID": "e1", "rootServiceName": "frontend", "rootTraceName": "GET /ping",
                "startTimeUnixNano": "1795587411191615271"}),
                Ok("ignored"),
            ),
            (
                json!({"traceID": "e1", "rootServiceName": "frontend", "rootTraceName": "GET /pingx",
                "startTimeUnixNano": "1795587411191615271"}),
                Ok("sample"),
            ),
            (
                json!({"traceID": "c1", "rootServiceName": PARTIAL_ROOT,
                "startTimeUnixNano": "1795587409691615271", "durationMs": 40}),
                Ok("partial"),
            ),
            (json!(42), Err("INVALID_ITEM")),
            (json!({"rootServiceName": "a"}), Err("INVALID_TRACE_ID")),
            (json!({"traceID": "xyz"}), Err("INVALID_TRACE_ID")),
            (json!({"traceID": 7}), Err("INVALID_TRACE_ID")),
            (
                json!({"traceID": "a1", "rootServiceName": ""}),
                Err("INVALID_SERVICE"),
            ),
            (
                json!({"traceID": "a1", "rootServiceName": "s"}),
                Err("INVALID_ENDPOINT"),
            ),
            (
                json!({"traceID": "a1", "rootServiceName": "s", "rootTraceName": "e"}),
                Err("INVALID_START_TIME"),
            ),
            (
                json!({"traceID": "a1", "rootServiceName": "s", "rootTraceName": "e",
                "startTimeUnixNano": "12"}),
                Err("INVALID_START_TIME"),
            ),
            (
                json!({"traceID": "a1", "rootServiceName": "s", "rootTraceName": "e",
                "startTimeUnixNano": 1795587409691615271u64, "durationMs": -1}),
                Err("INVALID_DURATION"),
            ),
        ];
        for (value, want) in cases {
            let got = match parse(&value, &bucketer(), &ignore) {
                Ok(Parsed::Sample(_)) => Ok("sample"),
                Ok(Parsed::Partial) => Ok("partial"),
                Ok(Parsed::Ignored) => Ok("ignored"),
                Err(e) => Err(e.code.as_str()),
            };
            assert_eq!(got, want, "{value}");
        }
        // Absent durationMs is 0 ms; the ID is normalised.
        let Ok(Parsed::Sample(item)) = parse(
            &json!({"traceID": "E1", "rootServiceName": "f", "rootTraceName": "GET /",
                "startTimeUnixNano": "1795587411191615271"}),
            &bucketer(),
            &IgnoreRules::default(),
        ) else {
            panic!("a sample")
        };
        assert_eq!(item.duration.get(), 0.0);
        assert_eq!(item.trace_id.as_str(), "000000000000000000000000000000e1");
    }

    #[test]
    fn names_are_held_to_max_name_bytes() {
        let nine = NameRules::new(9).unwrap();
        let ignore = ignore_rules(&[IgnoreRule {
            service: None,
            endpoint: Some("GET /.*".into()),
        }])
        .unwrap();
        let t = |service: &str, endpoint: &str| {
            json!({"traceID": "a1", "rootServiceName": service, "rootTraceName": endpoint,
                "startTimeUnixNano": "1795587411787997767", "durationMs": 5})
        };
        // (trace, outcome): the limit is in bytes ("abc日本" is nine).
        let cases = [
            (t("123456789", "POST /pay"), Ok("sample")),
            (t("abc日本", "abcd"), Ok("sample")),
            (t("1234567890", "POST /pay"), Err("INVALID_SERVICE")),
            (t("abcd日本", "POST /pay"), Err("INVALID_SERVICE")),
            (t("svc", "POST /pay1"), Err("INVALID_ENDPOINT")),
            // An ignore rule does not let an over-long name through, nor hide a valid one.
            (t("svc", "GET /ab"), Ok("ignored")),
            (t("svc", "GET /abcde"), Err("INVALID_ENDPOINT")),
            // Tempo's placeholder (28 bytes) is a partial trace, not a name over the limit.
            (t(PARTIAL_ROOT, "x"), Ok("partial")),
        ];
        for (value, want) in cases {
            let got = match parse_with(&value, &bucketer(), &ignore, nine) {
                Ok(Parsed::Sample(_)) => Ok("sample"),
                Ok(Parsed::Partial) => Ok("partial"),
                Ok(Parsed::Ignored) => Ok("ignored"),
                Err(e) => Err(e.code.as_str()),
            };
            assert_eq!(got, want, "{value}");
        }
        let err = parse_with(&t("svc", "POST /pay1"), &bucketer(), &ignore, nine).unwrap_err();
        assert_eq!(
            err.message,
            "endpoint name is 10 bytes long, more than the limit of 9 bytes (max_name_bytes)"
        );
        // `parse` holds names to the default, 256 bytes.
        let default = IgnoreRules::default();
        assert!(parse(&t(&"s".repeat(256), "e"), &bucketer(), &default).is_ok());
        let over = parse(&t(&"s".repeat(257), "e"), &bucketer(), &default).unwrap_err();
        assert_eq!(over.code, ErrorCode::InvalidService);
    }
}
