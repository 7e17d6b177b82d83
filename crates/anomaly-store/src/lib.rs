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
//! - `keyEndpoints`: ZSET (all scores 0) of every `service|endpoint` with windows, encoded as in
//!   bodies, for the paged key listing (see `listing`).
//! - `span:...`: span baselines ([`Store::spans`]) keep all of the above behind `span:`, keyed
//!   by (service, span name, hour, dayType); there `seen:{traceID}` is a HASH of span IDs, and
//!   `serviceKeys:{service}` (SET of bodies) bounds the keys of each service (see `spans`).
//! - `anomalies`: STREAM of the samples judged anomalous on ingest, bounded by length and age
//!   (see `feed`); one feed for roots and spans, never behind `span:`.
//!
//! Every key is spelled in `keys`. The public operations keep the invariants (claims, versions;
//! see `recompute`); the `testing` feature adds side doors for tests and tools (see `testing`).

mod config;
mod conn;
mod error;
mod feed;
mod ingest;
mod listing;
mod spans;
// Public only with `testing`: without it, `Keys` and its names are the crate's own.
#[cfg_attr(not(feature = "testing"), allow(unreachable_pub))]
mod keys;
#[cfg(feature = "testing")]
mod testing;
mod windows;

pub mod poller;
pub mod recompute;

pub use recompute::{CommitOutcome, FallbackLevels, Recomputed, VersionedWindow, fallback_field};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use deadpool_redis::redis::cluster::{ClusterClient, ClusterClientBuilder};
use deadpool_redis::redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use deadpool_redis::redis::{self, IntoConnectionInfo, RedisError};
use deadpool_redis::{Manager, Runtime};
use secrecy::ExposeSecret;

pub(crate) use conn::Conn;

pub use config::{ClusterConfig, RedisConfig, RedisMode, SentinelConfig};
pub use error::StoreError;
pub use feed::{
    FEED_SCAN_MAX, FeedCursor, FeedEntry, FeedFilter, FeedItem, FeedPage, FeedSettings, SampleKind,
};
pub use ingest::{IngestItem, IngestOutcome, IngestSettings, ItemOutcome};
#[cfg(feature = "testing")]
pub use keys::Keys;
pub use listing::{
    EndpointCursor, EndpointFilter, EndpointSamples, HOURS, InvalidCursor, Page, PruneStep,
    ServiceCursor,
};
pub use spans::{SpanItem, SpanSettings};
pub use windows::DirtyBatch;

/// A connection taken from the pool is checked with a PING only if it has not been used for
/// this long: deadpool-redis pings on every checkout, which doubled the round trips of every
/// operation. A connection on which an operation failed or timed out is never handed out again.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

/// Replies of more values than this are read on a connection held for the whole operation
/// ([`Hold::Exclusive`]); smaller ones share a connection with other operations.
///
/// redis-rs parses all replies of one connection in that connection's task, so a long reply (a
/// window of 1000 samples is 1000 values) would hold back every short reply queued behind it on
/// a shared connection, and parsing several long replies at once needs several connections.
pub(crate) const SHARED_REPLY_VALUES: usize = 1024;

/// How an operation uses its pooled connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hold {
    /// The connection goes back to the pool as soon as the operation has a handle on it, so
    /// concurrent operations share connections and redis-rs pipelines their commands: under
    /// load, one write and one read carry many of them, where a connection per operation costs
    /// a write and a read each (and `redis.pool_size` would cap the operations in flight).
    /// Multiplexed connections allow this because no operation here relies on per-connection
    /// state (no WATCH, SELECT after connect, or blocking command).
    Shared,
    /// The connection stays out of the pool until the operation ends: for replies of more than
    /// [`SHARED_REPLY_VALUES`] values.
    Exclusive,
}

/// A pooled connection, and whether an operation on it failed in a way that may have broken it.
#[derive(Debug)]
struct Pooled {
    conn: Conn,
    /// Set when an operation failed with a connection error or timed out; the pool then drops
    /// the connection at its next checkout instead of handing it out.
    broken: Arc<AtomicBool>,
}

/// Makes connections in the configured mode (see `conn`).
enum Connector {
    Standalone(Manager),
    /// Asks the sentinels for the primary on every connection (behind a lock: redis-rs's
    /// sentinel client remembers the last primary it found).
    Sentinel {
        client: tokio::sync::Mutex<SentinelClient>,
        config: redis::AsyncConnectionConfig,
    },
    /// The client, and the slot map its connections split pipelines by (see `conn`).
    Cluster(ClusterClient, Arc<conn::SlotMap>),
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Connector::Standalone(_) => "Connector::Standalone",
            Connector::Sentinel { .. } => "Connector::Sentinel",
            Connector::Cluster(..) => "Connector::Cluster",
        })
    }
}

/// The pool's manager: connections in the configured mode, pinged only after
/// [`IDLE_BEFORE_PING`], and broken ones dropped.
#[derive(Debug)]
struct PingIdle(Connector);

impl managed::Manager for PingIdle {
    type Type = Pooled;
    type Error = RedisError;

    async fn create(&self) -> Result<Pooled, RedisError> {
        let conn = match &self.0 {
            Connector::Standalone(manager) => Conn::Single(manager.create().await?),
            Connector::Sentinel { client, config } => Conn::Single(
                client
                    .lock()
                    .await
                    .get_async_connection_with_config(config)
                    .await?,
            ),
            Connector::Cluster(client, map) => {
                Conn::Cluster(client.get_async_connection().await?, Arc::clone(map))
            }
        };
        Ok(Pooled {
            conn,
            broken: Arc::default(),
        })
    }

    async fn recycle(&self, pooled: &mut Pooled, metrics: &Metrics) -> RecycleResult<RedisError> {
        if pooled.broken.load(Ordering::Relaxed) {
            return Err(RecycleError::message("an operation on it failed"));
        }
        if metrics.last_used() < IDLE_BEFORE_PING {
            return Ok(());
        }
        let _: String = redis::cmd("PING").query_async(&mut pooled.conn).await?;
        Ok(())
    }
}

type Pool = managed::Pool<PingIdle>;

/// A handle on the shared Redis state; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    keys: keys::Keys,
    timeout: Duration,
    mode: RedisMode,
    /// `redis.min_replicas_ack` and its timeout: ingest writes wait for these replicas.
    replicas_ack: Option<(u32, Duration)>,
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

/// The TLS files of `redis.tls_*`, for the sentinel and cluster clients.
fn tls_certificates(config: &RedisConfig) -> Result<Option<redis::TlsCertificates>, StoreError> {
    if config.tls_ca_file.is_none() && config.tls_cert_file.is_none() {
        return Ok(None);
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
    Ok(Some(redis::TlsCertificates {
        client_tls,
        root_cert,
    }))
}

/// Mode `sentinel`: a client that asks the sentinels of `redis.sentinel` for the primary.
fn sentinel_client(
    config: &RedisConfig,
    tcp: redis::io::tcp::TcpSettings,
) -> Result<SentinelClient, StoreError> {
    let s = &config.sentinel;
    let bad = |e: RedisError| StoreError::Config(format!("redis.sentinel: {e}"));
    let mut sentinels = Vec::with_capacity(s.urls.len());
    let mut sentinel_tls = false;
    for url in &s.urls {
        let info = url
            .as_str()
            .into_connection_info()
            .map_err(|e| StoreError::Config(format!("redis.sentinel.urls: {url}: {e}")))?;
        sentinel_tls |= matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
        sentinels.push(info.addr().clone());
    }
    let mut builder =
        SentinelClientBuilder::new(sentinels, &s.master_name, SentinelServerType::Master)
            .map_err(bad)?
            .set_client_to_redis_db(s.db)
            .set_client_to_redis_tcp_settings(tcp.clone())
            .set_client_to_sentinel_tcp_settings(tcp);
    if let Some(user) = &config.username {
        builder = builder.set_client_to_redis_username(user);
    }
    if let Some(password) = &config.password {
        builder = builder.set_client_to_redis_password(password.expose_secret());
    }
    if let Some(user) = &s.username {
        builder = builder.set_client_to_sentinel_username(user);
    }
    if let Some(password) = &s.password {
        builder = builder.set_client_to_sentinel_password(password.expose_secret());
    }
    let certificates = tls_certificates(config)?;
    if s.tls {
        builder = builder.set_client_to_redis_tls_mode(redis::TlsMode::Secure);
        if let Some(c) = &certificates {
            builder = builder.set_client_to_redis_certificates(c.clone());
        }
    }
    if sentinel_tls {
        builder = builder.set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
        if let Some(c) = certificates {
            builder = builder.set_client_to_sentinel_certificates(c);
        }
    }
    builder.build().map_err(bad)
}

/// Mode `cluster`: a client that discovers the slots from the seed nodes of `redis.cluster`.
fn cluster_client(
    config: &RedisConfig,
    tcp: redis::io::tcp::TcpSettings,
) -> Result<ClusterClient, StoreError> {
    let mut seeds = Vec::with_capacity(config.cluster.urls.len());
    for url in &config.cluster.urls {
        seeds.push(
            url.as_str()
                .into_connection_info()
                .map_err(|e| StoreError::Config(format!("redis.cluster.urls: {url}: {e}")))?,
        );
    }
    let tls = config
        .cluster
        .urls
        .iter()
        .any(|u| u.starts_with("rediss://"));
    let mut builder = ClusterClientBuilder::new(seeds)
        .connection_timeout(config.timeout)
        .response_timeout(config.timeout)
        .tcp_settings(tcp)
        // A slot without an owner (a failover in progress) is retried a few times with backoff
        // inside one operation; the operation's own bound (`redis.timeout`) still applies.
        .retries(3)
        .min_retry_wait(50)
        .max_retry_wait(500);
    if let Some(user) = &config.username {
        builder = builder.username(user);
    }
    if let Some(password) = &config.password {
        builder = builder.password(password.expose_secret());
    }
    if tls {
        builder = builder.tls(redis::TlsMode::Secure);
        if let Some(c) = tls_certificates(config)? {
            builder = builder.certs(c);
        }
    }
    builder
        .build()
        .map_err(|e| StoreError::Config(format!("redis.cluster: {e}")))
}

impl Store {
    /// Builds the connection pool. No connection is made until the first operation, so a
    /// service starts (and reports not-ready) while Redis is down.
    pub fn connect(config: &RedisConfig) -> Result<Store, StoreError> {
        // redis-rs applies a 500 ms response timeout of its own unless told otherwise, which
        // would fail large pipelined reads long before `redis.timeout`; one bound governs all.
        let connection = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout));
        // Pipelines are written in pieces: without TCP_NODELAY the tail of one waits for an ACK.
        let tcp = redis::io::tcp::TcpSettings::default().set_nodelay(true);
        let connector = match config.mode {
            RedisMode::Standalone => {
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
                info = info.set_redis_settings(settings).set_tcp_settings(tcp);
                let info = with_tls_files(info, config)?;
                Connector::Standalone(
                    Manager::new_with_config(info, connection)
                        .map_err(|e| StoreError::Config(format!("redis.url: {e}")))?,
                )
            }
            RedisMode::Sentinel => Connector::Sentinel {
                client: tokio::sync::Mutex::new(sentinel_client(config, tcp)?),
                config: connection,
            },
            RedisMode::Cluster => Connector::Cluster(cluster_client(config, tcp)?, Arc::default()),
        };
        let pool = Pool::builder(PingIdle(connector))
            .max_size(config.pool_size)
            .wait_timeout(Some(config.timeout))
            .create_timeout(Some(config.timeout))
            .recycle_timeout(Some(config.timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Config(format!("redis pool: {e}")))?;
        Ok(Store {
            pool,
            keys: keys::Keys::new(&config.key_prefix, config.mode == RedisMode::Cluster),
            timeout: config.timeout,
            mode: config.mode,
            replicas_ack: (config.min_replicas_ack > 0)
                .then_some((config.min_replicas_ack, config.min_replicas_ack_timeout)),
        })
    }

    /// How this store reaches Redis.
    pub fn mode(&self) -> RedisMode {
        self.mode
    }

    /// The span baselines' store: the same operations on the span key space (`span:` behind
    /// the prefix), sharing this store's connections. On a span store it is itself.
    pub fn spans(&self) -> Store {
        Store {
            keys: self.keys.spans(),
            ..self.clone()
        }
    }

    /// Whether this is the span key space's store.
    pub fn is_spans(&self) -> bool {
        self.keys.is_spans()
    }

    /// PING: whether Redis answers right now.
    ///
    /// In a cluster, one node picked at random answers (redis-rs would otherwise ask every
    /// primary): readiness then reflects whether the cluster can be reached, and a primary that
    /// fails over does not turn every replica of every service unready at once (which would
    /// take the keys of the other slots out of service too). A failing primary's slots answer
    /// 503 on their own until its replica takes over.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run("ping", async |conn| {
            conn.ping_any().await?;
            Ok(())
        })
        .await
    }

    /// Runs one operation on a shared pooled connection ([`Hold::Shared`]), bounded by the
    /// configured timeout, with every failure classified. All Redis access goes through here or
    /// [`Store::run_holding`].
    pub(crate) async fn run<T, F>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&mut Conn) -> Result<T, StoreError>,
    {
        self.run_holding(op, Hold::Shared, f).await
    }

    /// Runs one operation on a pooled connection held as `hold` says, bounded by the configured
    /// timeout (waiting for the pool included), with every failure classified.
    ///
    /// Each operation is a debug span named by `op` (never a key or a value), so an exported
    /// trace of a check or a drain shows its Redis time; at the default `info` level the span
    /// is disabled and costs the check path a level comparison.
    #[tracing::instrument(name = "redis", level = "debug", skip_all, fields(op = op))]
    pub(crate) async fn run_holding<T, F>(
        &self,
        op: &'static str,
        hold: Hold,
        f: F,
    ) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&mut Conn) -> Result<T, StoreError>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let timed_out = || StoreError::Timeout {
            op,
            after: self.timeout,
        };
        let result = match tokio::time::timeout_at(deadline, self.pool.get()).await {
            Err(_) => Err(timed_out()),
            Ok(Err(e)) => Err(StoreError::from_pool(e)),
            Ok(Ok(pooled)) => {
                let broken = Arc::clone(&pooled.broken);
                let mut conn = pooled.conn.clone();
                let held = match hold {
                    Hold::Shared => {
                        drop(pooled);
                        None
                    }
                    Hold::Exclusive => Some(pooled),
                };
                let result = match tokio::time::timeout_at(deadline, f(&mut conn)).await {
                    Ok(result) => result,
                    Err(_) => Err(timed_out()),
                };
                if result.as_ref().is_err_and(StoreError::is_unavailable) {
                    // Possibly broken (or stuck behind a partition): never hand it out again.
                    broken.store(true, Ordering::Relaxed);
                }
                drop(held);
                result
            }
        };
        result.inspect_err(|e| tracing::debug!(op, error = %e, "redis operation failed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anomaly_testkit::RedisServer;
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    fn store(server: &RedisServer, timeout: Duration) -> Store {
        Store::connect(&RedisConfig {
            url: server.url(),
            pool_size: 1,
            timeout,
            ..RedisConfig::default()
        })
        .unwrap()
    }

    /// The server's ID of the connection an operation gets.
    async fn client_id(store: &Store) -> i64 {
        store
            .run("client_id", async |conn| {
                Ok(redis::cmd("CLIENT").arg("ID").query_async(conn).await?)
            })
            .await
            .unwrap()
    }

    /// An operation that has pinged on its connection and then waits, until `release` is sent
    /// or dropped.
    struct Parked {
        release: oneshot::Sender<()>,
        task: JoinHandle<Result<(), StoreError>>,
    }

    async fn park(store: &Store, hold: Hold) -> Parked {
        let (release, wait) = oneshot::channel::<()>();
        let (started, running) = oneshot::channel::<()>();
        let store = store.clone();
        let task = tokio::spawn(async move {
            store
                .run_holding("parked", hold, async |conn| {
                    let _: String = redis::cmd("PING").query_async(conn).await?;
                    let _ = started.send(());
                    let _ = wait.await;
                    Ok(())
                })
                .await
        });
        running.await.expect("the parked operation pinged");
        Parked { release, task }
    }

    #[tokio::test]
    async fn shared_operations_share_a_connection_and_exclusive_ones_hold_it() {
        let server = RedisServer::start();
        // One connection in the pool, and a timeout far longer than the test needs, so that the
        // parked operations never time out however loaded the machine is.
        let store = store(&server, Duration::from_secs(10));

        let id = client_id(&store).await;
        let shared = park(&store, Hold::Shared).await;
        assert_eq!(
            client_id(&store).await,
            id,
            "shares the parked operation's connection"
        );
        shared.release.send(()).unwrap();
        shared.task.await.unwrap().unwrap();

        let exclusive = park(&store, Hold::Exclusive).await;
        // The only connection is held: a ping waits for it (and would until the store's timeout).
        let waiting = tokio::time::timeout(Duration::from_millis(300), store.ping()).await;
        assert!(waiting.is_err(), "the ping got a connection: {waiting:?}");
        exclusive.release.send(()).unwrap();
        exclusive.task.await.unwrap().unwrap();
        assert_eq!(
            client_id(&store).await,
            id,
            "the connection is back in the pool"
        );
    }

    #[tokio::test]
    async fn a_connection_whose_operation_timed_out_is_replaced() {
        let server = RedisServer::start();
        let store = store(&server, Duration::from_millis(300));
        let id = client_id(&store).await;

        // Never released: the operation times out, as it would behind a network partition.
        let parked = park(&store, Hold::Shared).await;
        let err = parked.task.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("timed out"), "{err}");
        drop(parked.release);

        let new_id = client_id(&store).await;
        assert_ne!(
            new_id, id,
            "the pool dropped the connection of the timed-out operation and made a new one"
        );
        assert_eq!(client_id(&store).await, new_id, "and keeps the new one");
    }
}
