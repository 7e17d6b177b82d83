//! Side doors for tests, benchmarks and demos: behind the `testing` feature, which test crates
//! enable in `[dev-dependencies]` only, so no deployed binary has them.
//!
//! They bypass what the services' operations keep: `pop_dirty` takes keys without claiming them
//! (a crash would lose them), `write_baselines` writes without the version check (a baseline
//! could go back in time), `replace_windows` rewrites windows without a trace. `keys` gives the
//! layout's key names to tests that look at Redis directly.

use std::time::Duration;

use anomaly_core::{Baseline, BaselineKey, DurationMs};
use deadpool_redis::redis;

use crate::{DirtyBatch, Keys, Store, StoreError};

impl Store {
    /// The key names of this store's prefix, for tests and tools that inspect Redis.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Removes and returns up to `count` keys awaiting recompute (SPOP with count), unclaimed.
    pub async fn pop_dirty(&self, count: usize) -> Result<DirtyBatch, StoreError> {
        let dirty = self.keys.dirty();
        let bodies: Vec<String> = self
            .run("pop_dirty", async |conn| {
                Ok(redis::cmd("SPOP")
                    .arg(&dirty)
                    .arg(count)
                    .query_async(conn)
                    .await?)
            })
            .await?;
        Ok(DirtyBatch::decode(bodies))
    }

    /// The whole window of one key, newest first, in milliseconds.
    pub async fn read_window(&self, key: &BaselineKey) -> Result<Vec<f64>, StoreError> {
        let mut windows = self.read_windows(std::slice::from_ref(key)).await?;
        Ok(windows.pop().unwrap_or_default())
    }

    /// The whole windows of many keys, in the order of `keys`: the versioned read with no cap
    /// on the window, versions dropped.
    pub async fn read_windows(&self, keys: &[BaselineKey]) -> Result<Vec<Vec<f64>>, StoreError> {
        Ok(self
            .read_windows_versioned(keys, u32::MAX)
            .await?
            .into_iter()
            .map(|w| w.samples)
            .collect())
    }

    /// Writes baselines unconditionally, refreshing their expiry (zero retention keeps them
    /// forever).
    pub async fn write_baselines(
        &self,
        items: &[(BaselineKey, Baseline)],
        retention: Duration,
    ) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        let retention_ms = retention.as_millis() as u64;
        self.run("write_baselines", async |conn| {
            let mut pipe = redis::pipe();
            for (key, b) in items {
                let name = self.keys.base(&key.encode());
                pipe.cmd("HSET")
                    .arg(&name)
                    .arg("p50")
                    .arg(b.p50.to_string())
                    .arg("p95")
                    .arg(b.p95.to_string())
                    .arg("mad")
                    .arg(b.mad.to_string())
                    .arg("sampleCount")
                    .arg(b.sample_count)
                    .arg("updatedAt")
                    .arg(b.updated_at)
                    .ignore();
                if retention_ms > 0 {
                    pipe.cmd("PEXPIRE").arg(&name).arg(retention_ms).ignore();
                }
            }
            let () = pipe.query_async(conn).await?;
            Ok(())
        })
        .await
    }

    /// Replaces whole windows (samples newest first) and marks their keys dirty, as ingest
    /// would after that many traces: for benchmarks and demos that need full windows without
    /// minting a trace ID per sample. Live traffic goes through [`Store::ingest`].
    pub async fn replace_windows(
        &self,
        windows: &[(BaselineKey, Vec<DurationMs>)],
        retention: Duration,
    ) -> Result<(), StoreError> {
        if windows.is_empty() {
            return Ok(());
        }
        let retention_ms = retention.as_millis() as u64;
        let dirty = self.keys.dirty();
        let index = self.keys.key_index();
        self.run("replace_windows", async |conn| {
            let mut pipe = redis::pipe();
            for (key, samples) in windows {
                let body = key.encode();
                let (dur, base) = (self.keys.dur(&body), self.keys.base(&body));
                pipe.cmd("DEL").arg(&dur).ignore();
                if !samples.is_empty() {
                    let micros: Vec<i64> = samples
                        .iter()
                        .map(|d| crate::ingest::to_micros(*d))
                        .collect();
                    pipe.cmd("RPUSH").arg(&dur).arg(micros).ignore();
                }
                pipe.cmd("HINCRBY").arg(&base).arg("v").arg(1).ignore();
                if retention_ms > 0 {
                    pipe.cmd("PEXPIRE").arg(&dur).arg(retention_ms).ignore();
                    pipe.cmd("PEXPIRE").arg(&base).arg(retention_ms).ignore();
                }
                pipe.cmd("SADD").arg(&index).arg(&body).ignore();
                pipe.cmd("SADD").arg(&dirty).arg(&body).ignore();
            }
            let () = pipe.query_async(conn).await?;
            Ok(())
        })
        .await
    }
}
