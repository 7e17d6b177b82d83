//! One trace as Tempo's search reports it (and as the push API takes it), validated into a
//! sample, or classified as partial or ignored, or refused with a code.
//!
//! Items stay `serde_json::Value` until here so that one bad item (a number where a string
//! belongs) is reported by index instead of failing the whole batch or poll.

use anomaly_core::{BaselineKey, Bucketer, DurationMs, TraceId, UnixNanos};
use anomaly_store::IngestItem;
use regex::Regex;
use serde_json::Value;

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

/// Why an item was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemError {
    pub code: &'static str,
    pub message: String,
}

impl ItemError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        ItemError {
            code,
            message: message.into(),
        }
    }
}

/// Compiled `ingester.ignore` rules.
#[derive(Debug, Clone, Default)]
pub struct IgnoreRules(Vec<(Option<Regex>, Option<Regex>)>);

impl IgnoreRules {
    /// Compiles the rules; the configuration was validated, so they compile.
    pub fn new(rules: &[IgnoreRule]) -> Result<Self, regex::Error> {
        let anchored = |p: &Option<String>| {
            p.as_ref()
                .map(|p| Regex::new(&format!("^(?:{p})$")))
                .transpose()
        };
        rules
            .iter()
            .map(|r| Ok((anchored(&r.service)?, anchored(&r.endpoint)?)))
            .collect::<Result<_, _>>()
            .map(IgnoreRules)
    }

    pub fn matches(&self, service: &str, endpoint: &str) -> bool {
        self.0.iter().any(|(s, e)| {
            s.as_ref().is_none_or(|s| s.is_match(service))
                && e.as_ref().is_none_or(|e| e.is_match(endpoint))
        })
    }
}

fn string_field<'a>(
    obj: &'a serde_json::Map<String, Value>,
    name: &str,
    code: &'static str,
) -> Result<&'a str, ItemError> {
    match obj.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            Err(ItemError::new(code, format!("{name} is missing or empty")))
        }
        Some(_) => Err(ItemError::new(code, format!("{name} must be a string"))),
    }
}

/// Validates one trace and turns it into a sample keyed by its local hour and day type.
pub fn parse(
    value: &Value,
    bucketer: &Bucketer,
    ignore: &IgnoreRules,
) -> Result<Parsed, ItemError> {
    let Value::Object(obj) = value else {
        return Err(ItemError::new(
            "INVALID_ITEM",
            "a trace must be a JSON object",
        ));
    };
    let raw_id = string_field(obj, "traceID", "INVALID_TRACE_ID")?;
    let trace_id =
        TraceId::parse(raw_id).map_err(|e| ItemError::new("INVALID_TRACE_ID", e.to_string()))?;
    let service = string_field(obj, "rootServiceName", "INVALID_SERVICE")?;
    if service == PARTIAL_ROOT {
        return Ok(Parsed::Partial);
    }
    let endpoint = string_field(obj, "rootTraceName", "INVALID_ENDPOINT")?;
    if ignore.matches(service, endpoint) {
        return Ok(Parsed::Ignored);
    }
    let start = obj
        .get("startTimeUnixNano")
        .map_or(
            Err(anomaly_core::TimestampError::Empty),
            UnixNanos::from_json,
        )
        .map_err(|e| ItemError::new("INVALID_START_TIME", e.to_string()))?;
    let duration = DurationMs::from_json(obj.get("durationMs"))
        .map_err(|e| ItemError::new("INVALID_DURATION", e.to_string()))?;
    let bucket = bucketer.bucket(start.to_datetime());
    let key = BaselineKey::new(service, endpoint, bucket.hour, bucket.day_type)
        .map_err(|e| ItemError::new("INVALID_KEY", e.to_string()))?;
    Ok(Parsed::Sample(IngestItem {
        trace_id,
        key,
        duration,
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
        let ignore = IgnoreRules::new(&[IgnoreRule {
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
                Err(e) => Err(e.code),
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
}
