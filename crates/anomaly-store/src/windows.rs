//! The dirty set and baselines as the services use them: the recomputer puts keys back and
//! counts them, the checker reads baselines. Operations on many keys are pipelined into one round
//! trip. Windows are read and baselines written only through `recompute`, which keeps claims
//! and versions; plain reads and writes are the `testing` feature's (see `testing`).

use anomaly_core::{Baseline, BaselineKey, Baselines, Fallback, Level, Quantiles, Summary};
use deadpool_redis::redis;

use crate::{Hold, SHARED_REPLY_VALUES, Store, StoreError};

/// Keys popped from `dirtyKeys`.
#[derive(Debug, Default)]
pub struct DirtyBatch {
    pub keys: Vec<BaselineKey>,
    /// Bodies that do not decode (written by something else); dropped, reported for logging.
    pub invalid: Vec<String>,
}

impl DirtyBatch {
    /// Sorts popped bodies into keys and the bodies that do not decode.
    pub(crate) fn decode(bodies: Vec<String>) -> DirtyBatch {
        let mut batch = DirtyBatch::default();
        for body in bodies {
            match BaselineKey::decode(&body) {
                Ok(key) => batch.keys.push(key),
                Err(_) => batch.invalid.push(body),
            }
        }
        batch
    }
}

/// The fields of `base:{B}` a check reads: the exact baseline and its quantiles (`q`). The
/// fallback levels come from the endpoint's `fb:` hash in the same pipeline.
const FIELDS: [&str; 6] = ["p50", "p95", "mad", "sampleCount", "updatedAt", "q"];

impl Store {
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

    /// The exact baseline of one key, if any.
    pub async fn baseline(&self, key: &BaselineKey) -> Result<Option<Baseline>, StoreError> {
        let mut all = self.baselines(std::slice::from_ref(key)).await?;
        Ok(all.pop().flatten())
    }

    /// The exact baselines of many keys in one round trip, in the order of `keys`.
    pub async fn baselines(
        &self,
        keys: &[BaselineKey],
    ) -> Result<Vec<Option<Baseline>>, StoreError> {
        Ok(self
            .stored_baselines(keys)
            .await?
            .into_iter()
            .map(|b| b.and_then(|b| b.exact).map(|s| s.baseline))
            .collect())
    }

    /// Everything a check needs for many keys (the exact baseline with its quantiles, and the
    /// fallback levels of a thin bucket) in one round trip, in the order of `keys`; `None` for
    /// a key with nothing stored.
    pub async fn stored_baselines(
        &self,
        keys: &[BaselineKey],
    ) -> Result<Vec<Option<Baselines>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<(String, String, [String; 3])> = keys
            .iter()
            .map(|k| {
                let fields = Level::FALLBACKS
                    .map(|level| crate::fallback_field(level, k.day_type(), k.hour()));
                (
                    self.keys.base(&k.encode()),
                    self.keys.fallback(&k.endpoint_body()),
                    fields,
                )
            })
            .collect();
        // Nine values a key: a large batch holds its connection (see [`Hold`]).
        let hold = if names.len() * (FIELDS.len() + 3) > SHARED_REPLY_VALUES {
            Hold::Exclusive
        } else {
            Hold::Shared
        };
        let raw: Vec<Vec<Option<String>>> = self
            .run_holding("baselines", hold, async |conn| {
                let mut pipe = redis::pipe();
                for (base, fallback, fields) in &names {
                    pipe.cmd("HMGET").arg(base).arg(&FIELDS[..]);
                    pipe.cmd("HMGET").arg(fallback).arg(&fields[..]);
                }
                Ok(pipe.query_async(conn).await?)
            })
            .await?;
        names
            .iter()
            .zip(raw.chunks(2))
            .map(|((base, fallback, _), pair)| parse_baseline(base, fallback, &pair[0], &pair[1]))
            .collect()
    }
}

fn parse_baseline(
    name: &str,
    fallback_name: &str,
    fields: &[Option<String>],
    levels: &[Option<String>],
) -> Result<Option<Baselines>, StoreError> {
    if fields.iter().chain(levels).all(Option::is_none) {
        return Ok(None);
    }
    let mut fallback = [None, None, None];
    for (slot, text) in fallback.iter_mut().zip(levels) {
        if let Some(t) = text {
            *slot = Some(Fallback::decode(t).ok_or_else(|| {
                StoreError::bad_data(fallback_name, "a field is not a fallback level")
            })?);
        }
    }
    let exact = if fields[..5].iter().all(Option::is_none) {
        None
    } else {
        Some(Summary {
            baseline: parse_exact(name, fields)?,
            // Absent in baselines written before quantiles were kept: no rank until the next
            // recompute.
            quantiles: fields
                .get(5)
                .and_then(|f| f.as_deref())
                .and_then(Quantiles::decode),
        })
    };
    Ok(Some(Baselines { exact, fallback }))
}

fn parse_exact(name: &str, fields: &[Option<String>]) -> Result<Baseline, StoreError> {
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
    Ok(Baseline {
        p50: float(0)?,
        p95: float(1)?,
        mad: float(2)?,
        sample_count: u64::try_from(int(3)?)
            .map_err(|_| StoreError::bad_data(name, "field sampleCount is negative"))?,
        updated_at: int(4)?,
    })
}
