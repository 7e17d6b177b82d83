//! Windows, the dirty set and baselines: what the recomputer reads and writes and the checker
//! reads. Operations on many keys are pipelined into one round trip.

use anomaly_core::{Baseline, BaselineKey};
use deadpool_redis::redis;

use crate::{Hold, SHARED_REPLY_VALUES, Store, StoreError};

/// Keys popped from `dirtyKeys`.
#[derive(Debug, Default)]
pub struct DirtyBatch {
    pub keys: Vec<BaselineKey>,
    /// Bodies that do not decode (written by something else); dropped, reported for logging.
    pub invalid: Vec<String>,
}

const FIELDS: [&str; 5] = ["p50", "p95", "mad", "sampleCount", "updatedAt"];

impl Store {
    /// Removes and returns up to `count` keys awaiting recompute (SPOP with count).
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
        let mut batch = DirtyBatch::default();
        for body in bodies {
            match BaselineKey::decode(&body) {
                Ok(key) => batch.keys.push(key),
                Err(_) => batch.invalid.push(body),
            }
        }
        Ok(batch)
    }

    /// Puts keys back into `dirtyKeys` (after a failed recompute, so none is forgotten).
    pub async fn mark_dirty(&self, keys: &[BaselineKey]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let dirty = self.keys.dirty();
        self.run("mark_dirty", async |conn| {
            let mut cmd = redis::cmd("SADD");
            cmd.arg(&dirty);
            for key in keys {
                cmd.arg(key.encode());
            }
            let _: i64 = cmd.query_async(conn).await?;
            Ok(())
        })
        .await
    }

    /// How many keys await recompute (SCARD).
    pub async fn dirty_len(&self) -> Result<u64, StoreError> {
        let dirty = self.keys.dirty();
        self.run("dirty_len", async |conn| {
            Ok(redis::cmd("SCARD").arg(&dirty).query_async(conn).await?)
        })
        .await
    }

    /// The window of one key, newest first, in milliseconds.
    pub async fn read_window(&self, key: &BaselineKey) -> Result<Vec<f64>, StoreError> {
        let mut windows = self.read_windows(std::slice::from_ref(key)).await?;
        Ok(windows.pop().unwrap_or_default())
    }

    /// The windows of many keys in one round trip, in the order of `keys`.
    pub async fn read_windows(&self, keys: &[BaselineKey]) -> Result<Vec<Vec<f64>>, StoreError> {
        let names: Vec<String> = keys.iter().map(|k| self.keys.window_key(k)).collect();
        let raw: Vec<Vec<i64>> = self
            .run_holding("read_windows", Hold::Exclusive, async |conn| {
                let mut pipe = redis::pipe();
                for name in &names {
                    pipe.cmd("LRANGE").arg(name).arg(0).arg(-1);
                }
                pipe.query_async(conn).await.map_err(|e| {
                    // A non-integer element makes the whole reply fail to convert.
                    if e.kind() == redis::ErrorKind::Parse
                        || e.kind() == redis::ErrorKind::UnexpectedReturnType
                    {
                        StoreError::bad_data("dur:*", e.to_string())
                    } else {
                        e.into()
                    }
                })
            })
            .await?;
        Ok(raw
            .into_iter()
            .map(|w| w.into_iter().map(|us| us as f64 / 1000.0).collect())
            .collect())
    }

    /// Writes baselines, refreshing their expiry (zero retention keeps them forever).
    pub async fn write_baselines(
        &self,
        items: &[(BaselineKey, Baseline)],
        retention: std::time::Duration,
    ) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        let retention_ms = retention.as_millis() as u64;
        self.run("write_baselines", async |conn| {
            let mut pipe = redis::pipe();
            for (key, b) in items {
                let name = self.keys.baseline_key(key);
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

    /// The baseline of one key, if any.
    pub async fn baseline(&self, key: &BaselineKey) -> Result<Option<Baseline>, StoreError> {
        let mut all = self.baselines(std::slice::from_ref(key)).await?;
        Ok(all.pop().flatten())
    }

    /// The baselines of many keys in one round trip, in the order of `keys`.
    pub async fn baselines(
        &self,
        keys: &[BaselineKey],
    ) -> Result<Vec<Option<Baseline>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<String> = keys.iter().map(|k| self.keys.baseline_key(k)).collect();
        // Five values a key: a large batch holds its connection (see [`Hold`]).
        let hold = if names.len() * FIELDS.len() > SHARED_REPLY_VALUES {
            Hold::Exclusive
        } else {
            Hold::Shared
        };
        let raw: Vec<Vec<Option<String>>> = self
            .run_holding("baselines", hold, async |conn| {
                let mut pipe = redis::pipe();
                for name in &names {
                    pipe.cmd("HMGET").arg(name).arg(&FIELDS[..]);
                }
                Ok(pipe.query_async(conn).await?)
            })
            .await?;
        names
            .iter()
            .zip(raw)
            .map(|(name, fields)| parse_baseline(name, &fields))
            .collect()
    }
}

fn parse_baseline(name: &str, fields: &[Option<String>]) -> Result<Option<Baseline>, StoreError> {
    if fields.iter().all(Option::is_none) {
        return Ok(None);
    }
    let get = |i: usize| -> Result<&str, StoreError> {
        fields
            .get(i)
            .and_then(|f| f.as_deref())
            .ok_or_else(|| StoreError::bad_data(name, format!("field {} is missing", FIELDS[i])))
    };
    let float = |i: usize| -> Result<f64, StoreError> {
        get(i)?
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| {
                StoreError::bad_data(name, format!("field {} is not a number", FIELDS[i]))
            })
    };
    let int = |i: usize| -> Result<i64, StoreError> {
        get(i)?.parse::<i64>().map_err(|_| {
            StoreError::bad_data(name, format!("field {} is not an integer", FIELDS[i]))
        })
    };
    Ok(Some(Baseline {
        p50: float(0)?,
        p95: float(1)?,
        mad: float(2)?,
        sample_count: u64::try_from(int(3)?)
            .map_err(|_| StoreError::bad_data(name, "field sampleCount is negative"))?,
        updated_at: int(4)?,
    }))
}

impl Store {
    /// Replaces whole windows (samples newest first) and marks their keys dirty, as ingest
    /// would after that many traces. For benchmarks, demos and imports that need full windows
    /// without minting a trace ID per sample; live traffic goes through [`Store::ingest`].
    pub async fn replace_windows(
        &self,
        windows: &[(BaselineKey, Vec<anomaly_core::DurationMs>)],
        retention: std::time::Duration,
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
