//! `startTimeUnixNano`: an instant given as a decimal string or a JSON integer.
//!
//! Tempo sends 64-bit numbers as strings (protobuf JSON); people and scripts send integers.
//! Either way the value must be a whole, non-negative number of nanoseconds inside
//! [`UnixNanos::MIN`, `UnixNanos::MAX`): an instant outside that range is a unit mistake
//! (seconds or milliseconds sent as nanoseconds), not a real trace.

use chrono::{DateTime, Utc};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Why a timestamp was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error("startTimeUnixNano is missing or empty")]
    Empty,
    #[error("startTimeUnixNano must not be negative")]
    Negative,
    #[error("startTimeUnixNano must be a decimal integer of nanoseconds")]
    NotANumber,
    #[error("startTimeUnixNano must be a whole number of nanoseconds")]
    Fractional,
    #[error("startTimeUnixNano is outside 2000-01-01..2100-01-01 (is it in nanoseconds?)")]
    OutOfRange,
}

/// A validated instant in nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct UnixNanos(u64);

impl UnixNanos {
    /// 2000-01-01T00:00:00Z.
    pub const MIN: u64 = 946_684_800_000_000_000;
    /// 2100-01-01T00:00:00Z (exclusive).
    pub const MAX: u64 = 4_102_444_800_000_000_000;

    pub fn new(nanos: u64) -> Result<Self, TimestampError> {
        if (Self::MIN..Self::MAX).contains(&nanos) {
            Ok(UnixNanos(nanos))
        } else {
            Err(TimestampError::OutOfRange)
        }
    }

    /// Parses a decimal string of digits only (no sign, no point, no exponent, no spaces).
    pub fn parse(s: &str) -> Result<Self, TimestampError> {
        if s.is_empty() {
            return Err(TimestampError::Empty);
        }
        if let Some(rest) = s.strip_prefix('-') {
            return if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                Err(TimestampError::Negative)
            } else {
                Err(TimestampError::NotANumber)
            };
        }
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            let (int, frac) = s.split_once('.').unwrap_or((s, ""));
            let decimal = !int.is_empty()
                && int.bytes().all(|b| b.is_ascii_digit())
                && frac.bytes().all(|b| b.is_ascii_digit());
            return if decimal && s.contains('.') {
                Err(TimestampError::Fractional)
            } else {
                Err(TimestampError::NotANumber)
            };
        }
        // All digits: the only way to fail now is overflow.
        s.parse::<u64>()
            .map_err(|_| TimestampError::OutOfRange)
            .and_then(Self::new)
    }

    /// Validates a JSON value: a string as in [`UnixNanos::parse`] or an integer.
    pub fn from_json(value: &Value) -> Result<Self, TimestampError> {
        match value {
            Value::Null => Err(TimestampError::Empty),
            Value::String(s) => Self::parse(s),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    Self::new(u)
                } else if n.as_i64().is_some() {
                    Err(TimestampError::Negative)
                } else {
                    match n.as_f64() {
                        Some(f) if f < 0.0 => Err(TimestampError::Negative),
                        Some(f) if f.fract() != 0.0 => Err(TimestampError::Fractional),
                        // A float without a fraction is either beyond u64 or written with an
                        // exponent; neither is a plain nanosecond count.
                        Some(f) if f >= u64::MAX as f64 => Err(TimestampError::OutOfRange),
                        _ => Err(TimestampError::Fractional),
                    }
                }
            }
            _ => Err(TimestampError::NotANumber),
        }
    }

    pub fn as_nanos(self) -> u64 {
        self.0
    }

    pub fn to_datetime(self) -> DateTime<Utc> {
        // MAX is far below i64::MAX nanoseconds, so the conversion is exact.
        DateTime::from_timestamp_nanos(self.0 as i64)
    }

    /// Milliseconds since the epoch, rounded down.
    pub fn as_millis(self) -> i64 {
        (self.0 / 1_000_000) as i64
    }
}

impl<'de> Deserialize<'de> for UnixNanos {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NanosVisitor;

        impl Visitor<'_> for NanosVisitor {
            type Value = UnixNanos;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("nanoseconds since the epoch as a decimal string or an integer")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<UnixNanos, E> {
                UnixNanos::new(v).map_err(E::custom)
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<UnixNanos, E> {
                match u64::try_from(v) {
                    Ok(u) => self.visit_u64(u),
                    Err(_) => Err(E::custom(TimestampError::Negative)),
                }
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<UnixNanos, E> {
                UnixNanos::from_json(&Value::from(v)).map_err(E::custom)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<UnixNanos, E> {
                UnixNanos::parse(v).map_err(E::custom)
            }
        }

        deserializer.deserialize_any(NanosVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::any;
    use serde_json::json;

    const NOW: u64 = 1_764_050_000_000_000_000;

    #[test]
    fn parses_strings() {
        let cases: [(&str, Result<u64, TimestampError>); 14] = [
            ("1764050000000000000", Ok(NOW)),
            ("", Err(TimestampError::Empty)),
            ("-1764050000000000000", Err(TimestampError::Negative)),
            ("-1.5", Err(TimestampError::Negative)),
            ("-", Err(TimestampError::NotANumber)),
            ("abc", Err(TimestampError::NotANumber)),
            ("1e18", Err(TimestampError::NotANumber)),
            (" 1764050000000000000", Err(TimestampError::NotANumber)),
            ("+1764050000000000000", Err(TimestampError::NotANumber)),
            ("1764050000000000000.5", Err(TimestampError::Fractional)),
            ("1764050000", Err(TimestampError::OutOfRange)),
            ("99999999999999999999999", Err(TimestampError::OutOfRange)),
            ("4102444800000000000", Err(TimestampError::OutOfRange)),
            ("946684800000000000", Ok(UnixNanos::MIN)),
        ];
        for (input, want) in cases {
            assert_eq!(
                UnixNanos::parse(input).map(UnixNanos::as_nanos),
                want,
                "{input:?}"
            );
        }
    }

    #[test]
    fn parses_json() {
        let cases = [
            (json!("1764050000000000000"), Ok(NOW)),
            (json!(1_764_050_000_000_000_000u64), Ok(NOW)),
            (json!(-5), Err(TimestampError::Negative)),
            (json!(-5.5), Err(TimestampError::Negative)),
            (json!(1.5), Err(TimestampError::Fractional)),
            (json!(1.764e18), Err(TimestampError::Fractional)),
            (json!(1e30), Err(TimestampError::OutOfRange)),
            (json!(0), Err(TimestampError::OutOfRange)),
            (json!(null), Err(TimestampError::Empty)),
            (json!(true), Err(TimestampError::NotANumber)),
            (json!([1]), Err(TimestampError::NotANumber)),
            (json!({}), Err(TimestampError::NotANumber)),
        ];
        for (input, want) in cases {
            assert_eq!(
                UnixNanos::from_json(&input).map(UnixNanos::as_nanos),
                want,
                "{input}"
            );
            let via_serde: Result<UnixNanos, _> = serde_json::from_value(input.clone());
            assert_eq!(via_serde.is_ok(), want.is_ok(), "serde agrees on {input}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parsing_is_total_and_round_trips(s in "\\PC{0,30}|[0-9]{1,25}", n in any::<u64>()) {
            // Never panics on any text; accepts exactly the in-range digit strings.
            let parsed = UnixNanos::parse(&s);
            let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            let in_range = digits && s.parse::<u64>().is_ok_and(|v| (UnixNanos::MIN..UnixNanos::MAX).contains(&v));
            proptest::prop_assert_eq!(parsed.is_ok(), in_range);
            if let Ok(t) = UnixNanos::parse(&n.to_string()) {
                proptest::prop_assert_eq!(t.as_nanos(), n);
            }
        }
    }

    #[test]
    fn converts() {
        let t = UnixNanos::new(NOW + 123_456_789).unwrap();
        assert_eq!(t.to_datetime().timestamp(), 1_764_050_000);
        assert_eq!(t.to_datetime().timestamp_subsec_nanos(), 123_456_789);
        assert_eq!(t.as_millis(), 1_764_050_000_123);
    }
}
