//! Why a request to Tempo failed, and whether asking again can help.

use std::time::Duration;

/// Why a request to Tempo failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TempoError {
    /// Any status but the request's success answer, with the start of Tempo's plain-text body.
    #[error("tempo answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("tempo did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach tempo: {0}")]
    Connect(String),
    /// A success whose body cannot be read as the answer asked for (or was cut off).
    #[error("tempo sent a body that is not the expected response: {0}")]
    Malformed(String),
    #[error("tempo's response is larger than tempo.max_response_bytes ({0} bytes)")]
    TooLarge(usize),
}

impl TempoError {
    /// Whether the same request may succeed later: server errors, throttling, timeouts,
    /// connection failures and cut-off bodies. A 4xx (bad query, bad range, bad trace ID, no org
    /// id, auth, a trace over Tempo's size limit) will fail again, and so will a 5xx whose body
    /// is one of Tempo's request-validation messages (Tempo v2.0.1 answers some bad requests
    /// with 500).
    pub fn retryable(&self) -> bool {
        match self {
            TempoError::Status { status, body } => {
                (*status >= 500 || *status == 429) && !is_request_error(body)
            }
            TempoError::Timeout(_) | TempoError::Connect(_) | TempoError::Malformed(_) => true,
            TempoError::TooLarge(_) => false,
        }
    }

    /// A short label for metrics: the status code, or `timeout`, `connect`, `malformed`,
    /// `too_large`.
    pub fn metric_label(&self) -> String {
        match self {
            TempoError::Status { status, .. } => status.to_string(),
            TempoError::Timeout(_) => "timeout".into(),
            TempoError::Connect(_) => "connect".into(),
            TempoError::Malformed(_) => "malformed".into(),
            TempoError::TooLarge(_) => "too_large".into(),
        }
    }
}

/// Whether a plain-text error body is one of Tempo's messages about the request itself.
pub fn is_request_error(body: &str) -> bool {
    const PREFIXES: [&str; 9] = [
        "invalid ",
        "http parameter ",
        "range specified by start and end exceeds",
        "limit ",
        "spans per span set exceeds",
        "no org id",
        "trace IDs can",
        "trace exceeds max size",
        "trace not found",
    ];
    PREFIXES.iter().any(|p| body.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_failures_are_retried() {
        let status = |s, body: &str| TempoError::Status {
            status: s,
            body: body.to_owned(),
        };
        for (e, want) in [
            (status(400, ""), false),
            (status(401, ""), false),
            (status(404, ""), false),
            (
                status(422, "trace exceeds max size (max bytes: 1500)"),
                false,
            ),
            (status(429, ""), true),
            (status(500, ""), true),
            (status(503, ""), true),
            (status(500, "invalid TraceQL query: parse error"), false),
            (
                status(
                    500,
                    "trace IDs can only contain hex characters: invalid character 'n' at position 1",
                ),
                false,
            ),
            (TempoError::Timeout(Duration::from_secs(1)), true),
            (TempoError::Connect("refused".into()), true),
            (TempoError::Malformed("eof".into()), true),
            (TempoError::TooLarge(1), false),
        ] {
            assert_eq!(e.retryable(), want, "{e}");
        }
    }
}
