//! The baseline cache: baselines, and the absence of one (negative caching), kept in memory for
//! a TTL (`checker.cache.ttl`, `ingester.detect.cache.ttl`) and bounded to a number of keys, so
//! a hot key costs no Redis round trip. Misses of a whole batch are fetched together in one
//! pipelined round trip. The checker answers checks from it and the ingester judges samples on
//! ingest from it: one cache, one staleness bound.
//!
//! **Refresh ahead.** An entry looked up in the last quarter of its TTL is served as it is and
//! queued for a background refresh, which reads the queued keys from Redis in batches and
//! replaces their entries (with a new TTL). A key checked at least once in that last quarter
//! is therefore never missing from the cache: checks of hot keys do not wait for Redis when
//! their entries would have expired, and the pod does not re-read all its hot keys in one
//! burst every TTL. Keys nobody asks for expire as before. A failed refresh leaves the entry to
//! expire on time, so during a Redis outage answers stop at the TTL as without refreshes.
//!
//! The pod stays stateless: the cache is only ever filled from Redis, so losing it loses
//! nothing. Staleness is bounded by the TTL (see the crate docs for the end-to-end bound).
//! Concurrent misses of the same key may each go to Redis; the concurrency limit bounds that.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anomaly_core::{BaselineKey, Baselines};
use anomaly_store::{Store, StoreError};
use moka::sync::Cache;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::mpsc;

use crate::metrics::{CommonMetrics, MetricsBuilder};

/// Keys queued for a refresh at most; beyond it lookups do not queue more (their entries then
/// expire and are read on the request path, as without refreshes).
const REFRESH_QUEUE: usize = 4096;
/// Keys read from Redis per refresh round trip at most.
const REFRESH_BATCH: usize = 256;

/// What is stored for a key (shared: a hit copies a pointer), `None` when nothing is.
pub type Stored = Option<Arc<Baselines>>;

/// How long entries live and how many are kept (`ingester.detect.cache`; the checker's
/// `checker.cache` has the same two keys).
#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// 0 turns the cache off: every lookup goes to Redis.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    pub max_entries: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            ttl: Duration::from_secs(5),
            max_entries: 100_000,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    result: &'static str,
}

/// `anomaly_baseline_cache_requests_total{result}`: `hit` (a baseline served from memory),
/// `negative` (a remembered absence served from memory) or `miss` (looked up in Redis). Every
/// series exists from the start, so ratios are defined before the first miss. Caches of one
/// process (the checker's root and span caches) count into the same series.
#[derive(Debug, Clone)]
pub struct CacheMetrics {
    hits: Counter,
    negative_hits: Counter,
    misses: Counter,
}

impl CacheMetrics {
    pub fn register(builder: &mut MetricsBuilder) -> CacheMetrics {
        let cache = Family::<CacheLabels, Counter>::default();
        builder.registry().register(
            "baseline_cache_requests",
            "Baseline lookups by result: hit (baseline in memory), negative (known absence in \
             memory), miss (read from Redis)",
            cache.clone(),
        );
        let result = |result| cache.get_or_create(&CacheLabels { result }).clone();
        CacheMetrics {
            hits: result("hit"),
            negative_hits: result("negative"),
            misses: result("miss"),
        }
    }

    /// Counts cache lookups: baselines and absences served from memory, and keys read from
    /// Redis.
    pub fn lookups(&self, hits: u64, negative_hits: u64, misses: u64) {
        self.hits.inc_by(hits);
        self.negative_hits.inc_by(negative_hits);
        self.misses.inc_by(misses);
    }
}

/// A cached answer and when it was read from Redis.
#[derive(Debug, Clone)]
struct Entry {
    baseline: Stored,
    read_at: Instant,
}

#[derive(Debug)]
pub struct BaselineCache {
    store: Store,
    /// `None` when `checker.cache.ttl` is 0: every lookup goes to Redis.
    cache: Option<Cache<BaselineKey, Entry>>,
    /// Entries read longer ago than this are refreshed in the background when looked up.
    refresh_after: Duration,
    /// The refresher's queue; the refresher starts with the first refresh, so building the
    /// cache needs no runtime.
    refresher: OnceLock<mpsc::Sender<BaselineKey>>,
    metrics: CacheMetrics,
    common: CommonMetrics,
}

impl BaselineCache {
    pub fn new(
        store: Store,
        config: &CacheSettings,
        metrics: CacheMetrics,
        common: CommonMetrics,
    ) -> BaselineCache {
        let cache = (config.ttl > Duration::ZERO).then(|| {
            Cache::builder()
                .max_capacity(config.max_entries)
                .time_to_live(config.ttl)
                .build()
        });
        BaselineCache {
            store,
            cache,
            refresh_after: config.ttl.mul_f64(0.75),
            refresher: OnceLock::new(),
            metrics,
            common,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The baselines of `keys` (which must be distinct), in their order: from memory where
    /// cached, the rest in one Redis round trip.
    pub async fn get_many(&self, keys: &[BaselineKey]) -> Result<Vec<Stored>, StoreError> {
        let mut found: Vec<Option<Stored>> = match &self.cache {
            Some(cache) => keys.iter().map(|k| self.lookup(cache, k)).collect(),
            None => vec![None; keys.len()],
        };
        let missing: Vec<BaselineKey> = keys
            .iter()
            .zip(&found)
            .filter(|(_, f)| f.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        let negative = found.iter().filter(|f| matches!(f, Some(None))).count() as u64;
        let misses = missing.len() as u64;
        self.metrics
            .lookups(keys.len() as u64 - misses - negative, negative, misses);
        if missing.is_empty() {
            return Ok(found.into_iter().map(Option::flatten).collect());
        }
        let read_at = Instant::now();
        let fetched = self.fetch(&missing).await?;
        let mut fetched = missing.into_iter().zip(fetched);
        for slot in found.iter_mut().filter(|f| f.is_none()) {
            if let Some((key, baseline)) = fetched.next() {
                if let Some(cache) = &self.cache {
                    cache.insert(
                        key,
                        Entry {
                            baseline: baseline.clone(),
                            read_at,
                        },
                    );
                }
                *slot = Some(baseline);
            }
        }
        Ok(found.into_iter().map(Option::flatten).collect())
    }

    /// One key's baseline, through the cache. A hit allocates nothing (unless it queues a
    /// refresh).
    pub async fn get(&self, key: &BaselineKey) -> Result<Stored, StoreError> {
        if let Some(cache) = &self.cache
            && let Some(cached) = self.lookup(cache, key)
        {
            let hit = u64::from(cached.is_some());
            self.metrics.lookups(hit, 1 - hit, 0);
            return Ok(cached);
        }
        self.metrics.lookups(0, 0, 1);
        let read_at = Instant::now();
        let baseline = self.fetch(std::slice::from_ref(key)).await?.pop().flatten();
        if let Some(cache) = &self.cache {
            cache.insert(
                key.clone(),
                Entry {
                    baseline: baseline.clone(),
                    read_at,
                },
            );
        }
        Ok(baseline)
    }

    /// The cached answer for `key`, queueing a refresh when the entry is in the last quarter of
    /// its TTL.
    fn lookup(&self, cache: &Cache<BaselineKey, Entry>, key: &BaselineKey) -> Option<Stored> {
        let entry = cache.get(key)?;
        if entry.read_at.elapsed() >= self.refresh_after {
            self.queue_refresh(cache, key);
        }
        Some(entry.baseline)
    }

    fn queue_refresh(&self, cache: &Cache<BaselineKey, Entry>, key: &BaselineKey) {
        let queue = self.refresher.get_or_init(|| {
            let (queue, keys) = mpsc::channel(REFRESH_QUEUE);
            tokio::spawn(refresh(
                keys,
                cache.clone(),
                self.store.clone(),
                self.common.clone(),
            ));
            queue
        });
        // Full: this lookup does not queue; the entry is refreshed by a later one or expires.
        let _ = queue.try_send(key.clone());
    }

    /// Reads `keys` from Redis in one round trip, counting failures.
    async fn fetch(&self, keys: &[BaselineKey]) -> Result<Vec<Stored>, StoreError> {
        // The error itself is logged where it becomes the response (`ApiError::from`).
        Ok(self
            .store
            .stored_baselines(keys)
            .await
            .inspect_err(|_| self.common.redis_error("baselines"))?
            .into_iter()
            .map(|b| b.map(Arc::new))
            .collect())
    }
}

/// The background refresher: reads queued keys from Redis, up to [`REFRESH_BATCH`] a round trip,
/// and replaces their entries. Ends when the cache is dropped.
async fn refresh(
    mut queue: mpsc::Receiver<BaselineKey>,
    cache: Cache<BaselineKey, Entry>,
    store: Store,
    common: CommonMetrics,
) {
    let mut batch = Vec::with_capacity(REFRESH_BATCH);
    while queue.recv_many(&mut batch, REFRESH_BATCH).await > 0 {
        // A key is queued by every lookup until its refresh lands; read it once.
        let mut seen = HashSet::with_capacity(batch.len());
        batch.retain(|key| seen.insert(key.clone()));
        let read_at = Instant::now();
        match store.stored_baselines(&batch).await {
            Ok(baselines) => {
                for (key, baseline) in batch.drain(..).zip(baselines) {
                    let baseline = baseline.map(Arc::new);
                    cache.insert(key, Entry { baseline, read_at });
                }
            }
            Err(e) => {
                // The entries expire on time and the request path reports the outage.
                common.redis_error("baselines");
                tracing::debug!(error = %e, keys = batch.len(), "baseline refresh failed");
                batch.clear();
            }
        }
    }
}
