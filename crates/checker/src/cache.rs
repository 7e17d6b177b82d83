//! The baseline cache: baselines, and the absence of one (negative caching), kept in memory for
//! `checker.cache.ttl` and bounded to `checker.cache.max_entries` keys, so a hot key costs no
//! Redis round trip. Misses of a whole batch are fetched together in one pipelined round trip.
//!
//! The pod stays stateless: the cache is only ever filled from Redis, so losing it loses
//! nothing. Staleness is bounded by the TTL (see the crate docs for the end-to-end bound).
//! Concurrent misses of the same key may each go to Redis; the concurrency limit bounds that.

use std::time::Duration;

use anomaly_core::{Baseline, BaselineKey};
use anomaly_runtime::metrics::CommonMetrics;
use anomaly_store::{Store, StoreError};
use moka::sync::Cache;

use crate::CacheSection;
use crate::metrics::CheckerMetrics;

#[derive(Debug)]
pub(crate) struct BaselineCache {
    store: Store,
    /// `None` when `checker.cache.ttl` is 0: every lookup goes to Redis.
    cache: Option<Cache<BaselineKey, Option<Baseline>>>,
    metrics: CheckerMetrics,
    common: CommonMetrics,
}

impl BaselineCache {
    pub(crate) fn new(
        store: Store,
        config: &CacheSection,
        metrics: CheckerMetrics,
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
            metrics,
            common,
        }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The baselines of `keys` (which must be distinct), in their order: from memory where
    /// cached, the rest in one Redis round trip.
    pub(crate) async fn get_many(
        &self,
        keys: &[BaselineKey],
    ) -> Result<Vec<Option<Baseline>>, StoreError> {
        let mut found: Vec<Option<Option<Baseline>>> = match &self.cache {
            Some(cache) => keys.iter().map(|k| cache.get(k)).collect(),
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
            .cache_lookups(keys.len() as u64 - misses - negative, negative, misses);
        if missing.is_empty() {
            return Ok(found.into_iter().map(Option::flatten).collect());
        }
        let fetched = self.fetch(&missing).await?;
        let mut fetched = missing.into_iter().zip(fetched);
        for slot in found.iter_mut().filter(|f| f.is_none()) {
            if let Some((key, baseline)) = fetched.next() {
                if let Some(cache) = &self.cache {
                    cache.insert(key, baseline);
                }
                *slot = Some(baseline);
            }
        }
        Ok(found.into_iter().map(Option::flatten).collect())
    }

    /// One key's baseline, through the cache. A hit allocates nothing.
    pub(crate) async fn get(&self, key: &BaselineKey) -> Result<Option<Baseline>, StoreError> {
        if let Some(cache) = &self.cache
            && let Some(cached) = cache.get(key)
        {
            let hit = u64::from(cached.is_some());
            self.metrics.cache_lookups(hit, 1 - hit, 0);
            return Ok(cached);
        }
        self.metrics.cache_lookups(0, 0, 1);
        let baseline = self.fetch(std::slice::from_ref(key)).await?.pop().flatten();
        if let Some(cache) = &self.cache {
            cache.insert(key.clone(), baseline);
        }
        Ok(baseline)
    }

    /// Reads `keys` from Redis in one round trip, counting failures.
    async fn fetch(&self, keys: &[BaselineKey]) -> Result<Vec<Option<Baseline>>, StoreError> {
        // The error itself is logged where it becomes the response (`ApiError::from`).
        self.store
            .baselines(keys)
            .await
            .inspect_err(|_| self.common.redis_error("baselines"))
    }
}
