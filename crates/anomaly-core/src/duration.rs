//! `durationMs`: a validated, finite, non-negative duration in milliseconds.
//!
//! Non-finite and negative durations never enter a window: this type is the only way in.
//! An absent value means 0 ms, because Tempo omits zero values from protobuf JSON.

use serde_json::Value;

/// Why a duration was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DurationError {
    #[error("durationMs must be a number")]
    NotANumber,
    #[error("durationMs must be finite")]
    NotFinite,
    #[error("durationMs must not be negative")]
    Negative,
    #[error("durationMs {0} is more than 24 hours")]
    TooLarge(f64),
}

/// A duration in milliseconds, finite and within `0..=MAX`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct DurationMs(f64);

impl DurationMs {
    /// The longest duration a window accepts: 24 hours. Anything longer is a unit mistake or a
    /// job, not a request latency.
    pub const MAX: f64 = 86_400_000.0;

    pub fn new(ms: f64) -> Result<Self, DurationError> {
        if !ms.is_finite() {
            Err(DurationError::NotFinite)
        } else if ms < 0.0 {
            Err(DurationError::Negative)
        } else if ms > Self::MAX {
            Err(DurationError::TooLarge(ms))
        } else {
            // Normalise -0.0 so that it prints and compares as 0.
            Ok(DurationMs(ms + 0.0))
        }
    }

    /// Validates a JSON value: a number, a decimal string (protobuf JSON may quote numbers),
    /// or absent/null for 0.
    pub fn from_json(value: Option<&Value>) -> Result<Self, DurationError> {
        match value {
            None | Some(Value::Null) => Ok(DurationMs(0.0)),
            Some(Value::Number(n)) => n
                .as_f64()
                .ok_or(DurationError::NotANumber)
                .and_then(Self::new),
            Some(Value::String(s)) => {
                let trimmed = s.trim();
                // Rust's float parser accepts "inf" and "NaN"; JSON numbers never contain
                // letters other than an exponent.
                if trimmed.is_empty()
                    || !trimmed
                        .bytes()
                        .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
                {
                    return Err(DurationError::NotANumber);
                }
                trimmed
                    .parse::<f64>()
                    .map_err(|_| DurationError::NotANumber)
                    .and_then(Self::new)
            }
            Some(_) => Err(DurationError::NotANumber),
        }
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn validates() {
        let cases: Vec<(Option<Value>, Result<f64, DurationError>)> = vec![
            (None, Ok(0.0)),
            (Some(json!(null)), Ok(0.0)),
            (Some(json!(12.5)), Ok(12.5)),
            (Some(json!(0)), Ok(0.0)),
            (Some(json!(-0.0)), Ok(0.0)),
            (Some(json!("840")), Ok(840.0)),
            (Some(json!("1e3")), Ok(1000.0)),
            (Some(json!(-1)), Err(DurationError::Negative)),
            (Some(json!("-1")), Err(DurationError::Negative)),
            (Some(json!("NaN")), Err(DurationError::NotANumber)),
            (Some(json!("inf")), Err(DurationError::NotANumber)),
            (Some(json!("1e400")), Err(DurationError::NotFinite)),
            (Some(json!("")), Err(DurationError::NotANumber)),
            (Some(json!("12ms")), Err(DurationError::NotANumber)),
            (Some(json!(true)), Err(DurationError::NotANumber)),
            (Some(json!([1])), Err(DurationError::NotANumber)),
            (Some(json!(1e12)), Err(DurationError::TooLarge(1e12))),
            (Some(json!(86_400_000.0)), Ok(86_400_000.0)),
        ];
        for (input, want) in cases {
            assert_eq!(
                DurationMs::from_json(input.as_ref()).map(DurationMs::get),
                want,
                "{input:?}"
            );
        }
        assert_eq!(DurationMs::new(f64::NAN), Err(DurationError::NotFinite));
        assert_eq!(
            DurationMs::new(f64::INFINITY),
            Err(DurationError::NotFinite)
        );
        assert_eq!(
            DurationMs::new(-0.0).unwrap().get().to_bits(),
            0.0f64.to_bits()
        );
    }
}
