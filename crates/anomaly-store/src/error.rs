//! Store errors, classified so callers can tell "Redis unreachable" (retry, report not-ready,
//! answer 503) from a command that Redis refused or data that does not parse.

use deadpool_redis::PoolError;
use deadpool_redis::redis::{ErrorKind, RedisError, ServerErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis cannot be reached or did not answer in time: transient, worth retrying.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// Redis answered with an error (wrong type, script error, out of memory...).
    #[error("redis command failed: {0}")]
    Command(#[source] RedisError),
    /// A stored value does not parse: someone else wrote that key.
    #[error("bad data in {key}: {detail}")]
    BadData { key: String, detail: String },
    /// The Redis settings are unusable (bad URL).
    #[error("{0}")]
    Config(String),
}

impl StoreError {
    /// Whether the error means Redis is (for now) out of reach.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    pub(crate) fn bad_data(key: &str, detail: impl Into<String>) -> Self {
        StoreError::BadData {
            key: key.to_owned(),
            detail: detail.into(),
        }
    }

    pub(crate) fn from_pool(e: PoolError) -> Self {
        match e {
            PoolError::Backend(e) => e.into(),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

impl From<RedisError> for StoreError {
    fn from(e: RedisError) -> Self {
        let transient = e.is_io_error()
            || e.is_connection_refusal()
            || e.is_timeout()
            || e.is_connection_dropped()
            || matches!(
                e.kind(),
                ErrorKind::AuthenticationFailed
                    | ErrorKind::Server(
                        ServerErrorKind::BusyLoading
                            | ServerErrorKind::TryAgain
                            | ServerErrorKind::MasterDown
                            | ServerErrorKind::ClusterDown
                    )
            );
        if transient {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Command(e)
        }
    }
}
