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

    /// The 16 bytes of an OTLP trace ID, in the same normal form.
    pub fn from_bytes(bytes: &[u8; 16]) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 32];
        for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
            pair[0] = HEX[usize::from(byte >> 4)];
            pair[1] = HEX[usize::from(byte & 0x0f)];
        }
        TraceId(out)
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

    /// Bytes and hex meet in one normal form, so OTLP and Tempo's search dedup against each
    /// other.
    #[test]
    fn bytes_match_their_hex() {
        let bytes = [
            0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21, 0x1c, 0x80,
            0x31, 0x9c,
        ];
        let id = TraceId::from_bytes(&bytes);
        assert_eq!(id.as_str(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(
            id,
            TraceId::parse("AF7651916CD43DD8448EB211C80319C").unwrap()
        );
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
