//! Trace IDs, normalised so that one trace is one sample whichever way it arrived.
//!
//! Tempo strips leading zeros from trace IDs (`0af7...` comes back as `af7...`), and clients
//! may send upper-case hex. The normal form is 32 lower-case hex digits, left-padded with zeros.

use std::fmt;

/// Why a trace ID was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceIdError {
    #[error("traceID must not be empty")]
    Empty,
    #[error("traceID has {0} hex digits, more than 32")]
    TooLong(usize),
    #[error("traceID must be hexadecimal")]
    NotHex,
}

/// A normalised 128-bit trace ID: 32 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId([u8; 32]);

impl TraceId {
    /// Parses 1 to 32 hex digits in either case and normalises them.
    pub fn parse(s: &str) -> Result<Self, TraceIdError> {
        if s.is_empty() {
            return Err(TraceIdError::Empty);
        }
        if s.len() > 32 {
            return Err(TraceIdError::TooLong(s.len()));
        }
        if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TraceIdError::NotHex);
        }
        let mut out = [b'0'; 32];
        for (dst, src) in out[32 - s.len()..].iter_mut().zip(s.bytes()) {
            *dst = src.to_ascii_lowercase();
        }
        Ok(TraceId(out))
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises() {
        let cases = [
            (
                "af7651916cd43dd8448eb211c80319c",
                "0af7651916cd43dd8448eb211c80319c",
            ),
            (
                "0AF7651916CD43DD8448EB211C80319C",
                "0af7651916cd43dd8448eb211c80319c",
            ),
            ("1", "00000000000000000000000000000001"),
            (
                "4bf92f3577b34da6a3ce929d0e0e4736",
                "4bf92f3577b34da6a3ce929d0e0e4736",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(TraceId::parse(input).unwrap().as_str(), want);
        }
    }

    #[test]
    fn rejects() {
        assert_eq!(TraceId::parse(""), Err(TraceIdError::Empty));
        assert_eq!(
            TraceId::parse(&"a".repeat(33)),
            Err(TraceIdError::TooLong(33))
        );
        for bad in ["xyz", "12 34", "0x12", "-1", "ab\n", "é"] {
            assert_eq!(TraceId::parse(bad), Err(TraceIdError::NotHex), "{bad:?}");
        }
    }
}
