//! The Redis layer. This is the only crate that builds key strings or talks to Redis; services
//! call typed operations and never see a key.
//!
//! Layout (every key behind `redis.key_prefix`; `B` is [`anomaly_core::BaselineKey::encode`]):
//! - `dur:{B}`: LIST of durations, newest first, trimmed to the window size. Values are whole
//!   microseconds, which Redis keeps as listpack integers (5 bytes a sample below 8.4 s) instead
//!   of strings.
//! - `base:{B}`: HASH `p50 p95 mad sampleCount updatedAt`, decimal numbers.
//! - `dirtyKeys`: SET of bodies awaiting recompute.
//! - `seen:{traceID}`: dedup marker with a TTL.
//! - `keyIndex`: SET of every body with a window, for the cardinality cap and rebuilds.

mod error;
mod ingest;
mod keys;
mod windows;

pub mod poller;
pub mod recompute;

pub use recompute::{CommitOutcome, Recomputed, VersionedWindow};

use std::time::Duration;

use anomaly_core::RedisConfig;
use deadpool::managed::{self, Metrics, Object, RecycleResult};
use deadpool_redis::redis::aio::MultiplexedConnection;
use deadpool_redis::redis::{self, IntoConnectionInfo, RedisError};
use deadpool_redis::{Manager, Runtime};
use secrecy::ExposeSecret;

pub use error::StoreError;
pub use ingest::{IngestItem, IngestOutcome, IngestSettings};
pub use keys::Keys;
pub use windows::DirtyBatch;

/// A connection taken from the pool is checked with a PING only if it has not been used for
/// this long: deadpool-redis pings on every checkout, which doubled the round trips of every
/// operation. A connection that fails with a connection error is dropped instead of returned.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

/// deadpool-redis's manager with [`IDLE_BEFORE_PING`].
#[derive(Debug)]
struct PingIdle(Manager);

impl managed::Manager for PingIdle {
    type Type = MultiplexedConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<MultiplexedConnection, RedisError> {
        self.0.create().await
    }

    async fn recycle(
        &self,
        conn: &mut MultiplexedConnection,
        metrics: &Metrics,
    ) -> RecycleResult<RedisError> {
        if metrics.last_used() < IDLE_BEFORE_PING {
            return Ok(());
        }
        self.0.recycle(conn, metrics).await
    }
}

type Pool = managed::Pool<PingIdle>;

/// A handle on the shared Redis state; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    keys: Keys,
    timeout: Duration,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("keys", &self.keys)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Applies `redis.tls_*` files to a `rediss://` connection; without them, TLS trusts the system's
/// roots (which honour `SSL_CERT_FILE`).
fn with_tls_files(
    info: redis::ConnectionInfo,
    config: &RedisConfig,
) -> Result<redis::ConnectionInfo, StoreError> {
    if config.tls_ca_file.is_none() && config.tls_cert_file.is_none() {
        return Ok(info);
    }
    let read = |key: &str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| StoreError::Config(format!("redis.{key}: {}: {e}", path.display())))
    };
    let root_cert = match &config.tls_ca_file {
        Some(path) => Some(read("tls_ca_file", path)?),
        None => None,
    };
    let client_tls = match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read("tls_cert_file", cert)?,
            client_key: read("tls_key_file", key)?,
        }),
        _ => None,
    };
    let client = redis::Client::build_with_tls(
        info,
        redis::TlsCertificates {
            client_tls,
            root_cert,
        },
    )
    .map_err(|e| StoreError::Config(format!("redis TLS: {e}")))?;
    Ok(client.get_connection_info().clone())
}

impl Store {
    /// Builds the connection pool. No connection is made until the first operation, so a
    /// service starts (and reports not-ready) while Redis is down.
    pub fn connect(config: &RedisConfig) -> Result<Store, StoreError> {
        let mut info = config
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| StoreError::Config(format!("redis.url: {e}")))?;
        let mut settings = info.redis_settings().clone();
        if let Some(user) = &config.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &config.password {
            settings = settings.set_password(password.expose_secret());
        }
        // Pipelines are written in pieces: without TCP_NODELAY the tail of one waits for an ACK.
        info = info
            .set_redis_settings(settings)
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let info = with_tls_files(info, config)?;
        // redis-rs applies a 500 ms response timeout of its own unless told otherwise, which
        // would fail large pipelined reads long before `redis.timeout`; one bound governs all.
        let connection = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout));
        let manager = Manager::new_with_config(info, connection)
            .map_err(|e| StoreError::Config(format!("redis.url: {e}")))?;
        let manager = PingIdle(manager);
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .wait_timeout(Some(config.timeout))
            .create_timeout(Some(config.timeout))
            .recycle_timeout(Some(config.timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Config(format!("redis pool: {e}")))?;
        Ok(Store {
            pool,
            keys: Keys::new(&config.key_prefix),
            timeout: config.timeout,
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// PING: whether Redis answers right now.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run("ping", async |conn| {
            let _: String = redis::cmd("PING").query_async(conn).await?;
            Ok(())
        })
        .await
    }

    /// Runs one operation on a pooled connection, bounded by the configured timeout, with every
    /// failure classified. All Redis access goes through here.
    pub(crate) async fn run<T, F>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&mut MultiplexedConnection) -> Result<T, StoreError>,
    {
        let work = async {
            let mut conn = self.pool.get().await.map_err(StoreError::from_pool)?;
            let result = f(&mut conn).await;
            if result.as_ref().is_err_and(StoreError::is_unavailable) {
                // Possibly broken: never hand it out again unchecked.
                drop(Object::take(conn));
            }
            result
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => {
                result.inspect_err(|e| tracing::debug!(op, error = %e, "redis operation failed"))
            }
            Err(_) => Err(StoreError::Unavailable(format!(
                "{op} timed out after {:?}",
                self.timeout
            ))),
        }
    }
}
