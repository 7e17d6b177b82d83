//! Store errors, classified so callers can tell "Redis unreachable" (retry, report not-ready,
//! answer 503) from a command that Redis refused or data that does not parse. The Redis or pool
//! error behind a failure is kept as its `source`, not flattened into a string.

use std::time::Duration;

use deadpool_redis::PoolError;
use deadpool_redis::redis::{ErrorKind, RedisError, ServerErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis cannot be reached or cannot serve for now (refused, dropped, loading, failing
    /// over): transient, worth retrying.
    #[error("redis unavailable: {0}")]
    Unavailable(#[source] RedisError),
    /// The pool had no connection to give (closed, or its own wait timed out): transient.
    #[error("redis unavailable: {0}")]
    NoConnection(#[source] PoolError),
    /// Redis did not answer `op` within `redis.timeout` (waiting for the pool included).
    #[error("redis unavailable: {op} timed out after {after:?}")]
    Timeout { op: &'static str, after: Duration },
    /// Redis answered with an error (wrong type, script error, out of memory...).
    #[error("redis command failed: {0}")]
    Command(#[source] RedisError),
    /// A stored value does not parse: someone else wrote that key.
    #[error("bad data in {key}: {detail}")]
    BadData { key: String, detail: String },
    /// Fewer replicas than `redis.min_replicas_ack` confirmed an ingest's writes within its
    /// timeout. The writes are on the primary; whether they survive a failover is not known.
    #[error(
        "{acked} of the {wanted} replicas required (redis.min_replicas_ack) acknowledged the writes within {after:?}"
    )]
    NotReplicated {
        wanted: u32,
        acked: u32,
        after: Duration,
    },
    /// The Redis settings are unusable (bad URL).
    #[error("{0}")]
    Config(String),
}

impl StoreError {
    /// Whether the error means Redis is (for now) out of reach.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_) | StoreError::NoConnection(_) | StoreError::Timeout { .. }
        )
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
            other => StoreError::NoConnection(other),
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
                    // Sentinel mid-failover: no primary named yet.
                    | ErrorKind::MasterNameNotFoundBySentinel
                    | ErrorKind::NoValidReplicasFoundBySentinel
                    // A cluster node gone: redis-rs gave up reconnecting or following a slot
                    // whose owner died, until the slot map catches up.
                    | ErrorKind::ClusterConnectionNotFound
                    | ErrorKind::Server(
                        ServerErrorKind::BusyLoading
                            | ServerErrorKind::TryAgain
                            | ServerErrorKind::MasterDown
                            | ServerErrorKind::ClusterDown
                            // A primary demoted by a failover, still reached on an old
                            // connection: unavailable for writes until one to the new primary.
                            | ServerErrorKind::ReadOnly
                            // Redirections left over after redis-rs ran out of retries while a
                            // primary failed over: the slot has no reachable owner yet.
                            | ServerErrorKind::Moved
                            | ServerErrorKind::Ask
                    )
            );
        if transient {
            StoreError::Unavailable(e)
        } else {
            StoreError::Command(e)
        }
    }
}
