//! Recompute bookkeeping: claiming dirty keys so a crash loses none, versioned window reads,
//! and baseline writes that never let an older window overwrite a newer one.
//!
//! **Claims.** SPOP removes a key from `dirtyKeys` before it is recomputed, so a recomputer that
//! dies in between would leave that baseline stale until another sample happened to arrive.
//! Instead, [`Store::claim_dirty`] moves the popped bodies into the worker's own in-flight set
//! `recomputer:inflight:<worker>` and refreshes its heartbeat `recomputer:alive:<worker>` (a
//! key with a TTL), atomically. [`Store::commit_baselines`] removes a body from the in-flight set
//! when its baseline is written. [`Store::recover_orphans`], which every recomputer runs before
//! each drain, hands the in-flight bodies of any worker whose heartbeat expired back to
//! `dirtyKeys`. A killed recomputer's keys are therefore recomputed at most one claim TTL plus one
//! drain interval later. Workers are listed in `recomputer:workers`.
//!
//! **Versions.** The ingest script increments field `v` of `base:{B}` whenever it pushes to the
//! window. A recompute reads `v` first, then the window; the baseline is written only if `v` is
//! still the same. If it changed, a newer sample arrived after the read, and that sample's ingest
//! put the key back into `dirtyKeys`, so the newer window will be computed. Two recomputers
//! racing on one key therefore always end with the newest window's baseline.

use std::sync::LazyLock;
use std::time::Duration;

use anomaly_core::{Baseline, BaselineKey, DayType, Fallback, Level, Quantiles};
use deadpool_redis::redis::{self, Script};

use crate::{DirtyBatch, Hold, Store, StoreError};

/// Most samples [`Store::read_windows_versioned`] asks Redis for in one round trip: 32 full
/// windows of the default size.
pub const SAMPLES_PER_ROUND_TRIP: u32 = 32_768;

/// Windows of `window_size` samples read per round trip: as many as fit in
/// [`SAMPLES_PER_ROUND_TRIP`], and at least one.
fn keys_per_round_trip(window_size: u32) -> usize {
    (SAMPLES_PER_ROUND_TRIP / window_size.max(1)).max(1) as usize
}

static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: dirtyKeys, inflight, alive, workers. ARGV: count, heartbeat ttl ms, worker id.
redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
redis.call('SADD', KEYS[4], ARGV[3])
local popped = redis.call('SPOP', KEYS[1], ARGV[1])
for i = 1, #popped, 1000 do
  redis.call('SADD', KEYS[2], unpack(popped, i, math.min(i + 999, #popped)))
end
return popped
",
    )
});

static HAND_BACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: alive, inflight, dirtyKeys, workers. ARGV: worker id, force (1 = even if alive).
if ARGV[2] ~= '1' and redis.call('EXISTS', KEYS[1]) == 1 then
  return -1
end
local n = redis.call('SCARD', KEYS[2])
if n > 0 then
  redis.call('SUNIONSTORE', KEYS[3], KEYS[3], KEYS[2])
end
redis.call('DEL', KEYS[2], KEYS[1])
redis.call('SREM', KEYS[4], ARGV[1])
return n
",
    )
});

static COMMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS[1] inflight (or, with ARGV[2] = '0', any key of the batch's slot: the caller releases
-- the keys itself); KEYS[1+i] base:{B_i}.
-- ARGV[1] retention ms, ARGV[2] '1' to release each key from KEYS[1]; per key i, 8 values from
--   ARGV[3+8(i-1)]: body, version read ('' = none), p50, p95, mad, sampleCount ('0' = empty
--   window), updatedAt, q (the quantiles).
-- A baseline written keeps the version it was computed from as `cv`, so that a sweep can tell
-- a window whose samples were never recomputed (`v` ahead of `cv`).
local retention = tonumber(ARGV[1])
local release = ARGV[2] == '1'
local written, stale, cleared = 0, 0, 0
for i = 1, #KEYS - 1 do
  local base = KEYS[1 + i]
  local a = 3 + 8 * (i - 1)
  local current = redis.call('HGET', base, 'v')
  if not current then current = '' end
  if current ~= ARGV[a + 1] then
    stale = stale + 1
  elseif ARGV[a + 5] == '0' then
    redis.call('HDEL', base, 'p50', 'p95', 'mad', 'sampleCount', 'updatedAt', 'q')
    if current ~= '' then
      redis.call('HSET', base, 'cv', current)
    end
    cleared = cleared + 1
  else
    redis.call('HSET', base, 'p50', ARGV[a + 2], 'p95', ARGV[a + 3], 'mad', ARGV[a + 4],
      'sampleCount', ARGV[a + 5], 'updatedAt', ARGV[a + 6], 'q', ARGV[a + 7], 'cv', current)
    if retention > 0 then
      redis.call('PEXPIRE', base, retention)
    end
    written = written + 1
  end
  if release then
    redis.call('SREM', KEYS[1], ARGV[a])
  end
end
return {written, stale, cleared}
",
    )
});

static FALLBACKS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS[1] fb:{service|endpoint}. ARGV[1] computed-at ms (orders writes), ARGV[2] retention ms,
-- then field/value pairs: the endpoint's levels, replacing all it had. Levels computed later
-- are kept, so a slow recomputer never writes older levels over newer ones.
local at, retention = tonumber(ARGV[1]), tonumber(ARGV[2])
local prev = tonumber(redis.call('HGET', KEYS[1], 'at') or '0')
if at < prev then
  return 0
end
redis.call('DEL', KEYS[1])
if #ARGV > 2 then
  redis.call('HSET', KEYS[1], 'at', ARGV[1], unpack(ARGV, 3))
  if retention > 0 then
    redis.call('PEXPIRE', KEYS[1], retention)
  end
end
return 1
",
    )
});

/// The member of `fbPending` that stands for `key`'s endpoint.
fn pending_member(key: &BaselineKey) -> String {
    key.at(0, DayType::Weekday).encode()
}

/// The field of an endpoint's `fb:` hash that holds `level` for the bucket (`hour`,
/// `day_type`): `nearby:<dayType>:<hour>`, `dayType:<dayType>` or `all`.
pub fn fallback_field(level: Level, day_type: DayType, hour: u8) -> String {
    match level {
        Level::Nearby => format!("nearby:{}:{hour}", day_type.as_str()),
        Level::DayType => format!("dayType:{}", day_type.as_str()),
        Level::All | Level::Exact => "all".to_owned(),
    }
}

/// A window as read for recompute, with the version it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionedWindow {
    /// Newest first, in milliseconds.
    pub samples: Vec<f64>,
    /// Field `v` of `base:{B}` read before the window; `None` when absent.
    pub version: Option<String>,
}

/// A baseline to commit, or `None` to clear it (the window is gone).
#[derive(Debug, Clone)]
pub struct Recomputed {
    pub key: BaselineKey,
    pub version: Option<String>,
    pub baseline: Option<Baseline>,
    /// The window's quantiles, kept beside the baseline for ranks.
    pub quantiles: Option<Quantiles>,
}

/// An endpoint's fallback levels: `dayType` per day type, `all`, and `nearby` for each thin
/// bucket, as (field, level) with [`fallback_field`]'s names.
#[derive(Debug, Clone)]
pub struct FallbackLevels {
    /// Any key of the endpoint.
    pub key: BaselineKey,
    pub levels: Vec<(String, Fallback)>,
}

/// What a commit did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitOutcome {
    pub written: u64,
    /// Skipped because the window changed after it was read (the key is dirty again).
    pub stale: u64,
    /// Baselines removed because their window is empty (expired).
    pub cleared: u64,
}

impl Store {
    /// Pops up to `count` dirty keys into `worker`'s in-flight set and refreshes its heartbeat.
    pub async fn claim_dirty(
        &self,
        worker: &str,
        count: usize,
        heartbeat: Duration,
    ) -> Result<DirtyBatch, StoreError> {
        let mut inv = CLAIM.prepare_invoke();
        inv.key(self.keys.dirty())
            .key(self.keys.inflight(worker))
            .key(self.keys.alive(worker))
            .key(self.keys.workers())
            .arg(count)
            .arg(heartbeat.as_millis().max(1) as u64)
            .arg(worker);
        let bodies: Vec<String> = self
            .run("claim_dirty", async |conn| {
                Ok(inv.invoke_async(conn).await?)
            })
            .await?;
        let batch = DirtyBatch::decode(bodies);
        if !batch.invalid.is_empty() {
            // Undecodable bodies are dropped from the in-flight set too, or they would be handed
            // back forever.
            let inflight = self.keys.inflight(worker);
            self.run("drop_invalid", async |conn| {
                let _: i64 = redis::cmd("SREM")
                    .arg(&inflight)
                    .arg(&batch.invalid)
                    .query_async(conn)
                    .await?;
                Ok(())
            })
            .await?;
        }
        Ok(batch)
    }

    /// Reads windows (at most `window_size` newest samples) with their versions, pipelined in
    /// round trips of at most [`SAMPLES_PER_ROUND_TRIP`] samples.
    ///
    /// Redis runs a client's pipeline without serving anyone else in between, and answering an
    /// `LRANGE` of 1000 samples takes it tens of microseconds: one pipeline for a whole 500-key
    /// batch would hold every checker's `HMGET` back for tens of milliseconds (and hold the
    /// batch's reply, about 500,000 values, in the recomputer's memory at once). Round trips of
    /// 32 full windows keep both small for one extra round trip per 32 keys.
    pub async fn read_windows_versioned(
        &self,
        keys: &[BaselineKey],
        window_size: u32,
    ) -> Result<Vec<VersionedWindow>, StoreError> {
        let mut windows = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(keys_per_round_trip(window_size)) {
            windows.extend(self.read_windows_round_trip(chunk, window_size).await?);
        }
        Ok(windows)
    }

    async fn read_windows_round_trip(
        &self,
        keys: &[BaselineKey],
        window_size: u32,
    ) -> Result<Vec<VersionedWindow>, StoreError> {
        let names: Vec<(String, String)> = keys
            .iter()
            .map(|k| {
                let body = k.encode();
                (self.keys.base(&body), self.keys.dur(&body))
            })
            .collect();
        let last = i64::from(window_size) - 1;
        // Up to 32,768 values: parsed on a connection of its own (see [`Hold`]).
        self.run_holding("read_windows_versioned", Hold::Exclusive, async |conn| {
            let mut pipe = redis::pipe();
            for (base, dur) in &names {
                // The version is read before the window: see the module docs.
                pipe.cmd("HGET").arg(base).arg("v");
                pipe.cmd("LRANGE").arg(dur).arg(0).arg(last);
            }
            let flat: Vec<redis::Value> = pipe.query_async(conn).await?;
            flat.chunks(2)
                .zip(&names)
                .map(|(pair, (base, dur))| {
                    let version: Option<String> = redis::from_redis_value_ref(&pair[0])
                        .map_err(|e| StoreError::bad_data(base, e.to_string()))?;
                    let window: Vec<i64> = redis::from_redis_value_ref(&pair[1])
                        .map_err(|e| StoreError::bad_data(dur, e.to_string()))?;
                    Ok(VersionedWindow {
                        samples: window.into_iter().map(|us| us as f64 / 1000.0).collect(),
                        version,
                    })
                })
                .collect()
        })
        .await
    }

    /// Writes recomputed baselines whose window is unchanged since it was read, and releases
    /// every key from `worker`'s in-flight set.
    pub async fn commit_baselines(
        &self,
        worker: &str,
        items: &[Recomputed],
        retention: Duration,
    ) -> Result<CommitOutcome, StoreError> {
        if items.is_empty() {
            return Ok(CommitOutcome::default());
        }
        let retention_ms = retention.as_millis() as u64;
        let prepare = |first_key: String, release: bool, items: &[&Recomputed]| {
            let mut inv = COMMIT.prepare_invoke();
            inv.key(first_key)
                .arg(retention_ms)
                .arg(if release { "1" } else { "0" });
            for item in items {
                let body = item.key.encode();
                inv.key(self.keys.base(&body));
                inv.arg(body).arg(item.version.as_deref().unwrap_or(""));
                match &item.baseline {
                    Some(b) => {
                        inv.arg(b.p50.to_string())
                            .arg(b.p95.to_string())
                            .arg(b.mad.to_string())
                            .arg(b.sample_count)
                            .arg(b.updated_at)
                            .arg(
                                item.quantiles
                                    .as_ref()
                                    .map_or_else(String::new, Quantiles::encode),
                            );
                    }
                    None => {
                        inv.arg("0").arg("0").arg("0").arg(0).arg(0).arg("");
                    }
                }
            }
            inv
        };
        if !self.keys.is_cluster() {
            // One script: the writes and the release from the in-flight set together.
            let all: Vec<&Recomputed> = items.iter().collect();
            let inv = prepare(self.keys.inflight(worker), true, &all);
            let (written, stale, cleared): (u64, u64, u64) = self
                .run("commit_baselines", async |conn| {
                    Ok(inv.invoke_async(conn).await?)
                })
                .await?;
            return Ok(CommitOutcome {
                written,
                stale,
                cleared,
            });
        }
        // A cluster: one script per slot, then the release in the coordination slot. A crash in
        // between leaves keys in flight, which are handed back and recomputed again: work
        // repeated, nothing lost, and no baseline older than the one written.
        let mut by_slot: std::collections::HashMap<u16, Vec<&Recomputed>> = Default::default();
        for item in items {
            let base = self.keys.base(&item.key.encode());
            by_slot
                .entry(crate::conn::slot_of(base.as_bytes()))
                .or_default()
                .push(item);
        }
        let invocations: Vec<_> = by_slot
            .values()
            .map(|group| prepare(self.keys.base(&group[0].key.encode()), false, group))
            .collect();
        let outcomes: Vec<(u64, u64, u64)> = self
            .run("commit_baselines", async |conn| {
                let calls = invocations.iter().map(|inv| {
                    let mut conn = conn.clone();
                    async move { inv.invoke_async::<(u64, u64, u64)>(&mut conn).await }
                });
                Ok(futures::future::try_join_all(calls).await?)
            })
            .await?;
        let bodies: Vec<String> = items.iter().map(|i| i.key.encode()).collect();
        let inflight = self.keys.inflight(worker);
        self.run("commit_release", async |conn| {
            let _: i64 = redis::cmd("SREM")
                .arg(&inflight)
                .arg(&bodies)
                .query_async(conn)
                .await?;
            Ok(())
        })
        .await?;
        Ok(outcomes
            .into_iter()
            .fold(CommitOutcome::default(), |sum, (w, s, c)| CommitOutcome {
                written: sum.written + w,
                stale: sum.stale + s,
                cleared: sum.cleared + c,
            }))
    }

    /// Takes the right to compute the fallback levels of each key's endpoint for `period`
    /// (SET NX PX, one round trip): one recomputer per endpoint per period. `false` where
    /// another took it within the period. `force` takes them even so (`recomputer rebuild`).
    pub async fn take_fallback_leases(
        &self,
        keys: &[BaselineKey],
        worker: &str,
        period: Duration,
        force: bool,
    ) -> Result<Vec<bool>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let leases: Vec<String> = keys
            .iter()
            .map(|k| self.keys.fallback_lease(&k.endpoint_body()))
            .collect();
        let ms = period.as_millis().max(1) as u64;
        let taken: Vec<Option<String>> = self
            .run("take_fallback_leases", async |conn| {
                let mut pipe = redis::pipe();
                for lease in &leases {
                    let cmd = pipe.cmd("SET").arg(lease).arg(worker);
                    if !force {
                        cmd.arg("NX");
                    }
                    cmd.arg("PX").arg(ms);
                }
                Ok(pipe.query_async(conn).await?)
            })
            .await?;
        Ok(taken.into_iter().map(|t| t.is_some()).collect())
    }

    /// The number of samples in each key's window, pipelined (so that only windows with
    /// samples are read).
    pub async fn window_lengths(&self, keys: &[BaselineKey]) -> Result<Vec<u64>, StoreError> {
        let mut lengths = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(4096) {
            let names: Vec<String> = chunk.iter().map(|k| self.keys.dur(&k.encode())).collect();
            let step: Vec<u64> = self
                .run("window_lengths", async |conn| {
                    let mut pipe = redis::pipe();
                    for name in &names {
                        pipe.cmd("LLEN").arg(name);
                    }
                    Ok(pipe.query_async(conn).await?)
                })
                .await?;
            lengths.extend(step);
        }
        Ok(lengths)
    }

    /// Remembers the endpoints of `keys` whose levels were not due, to refresh them at `due_ms`
    /// (unix ms) even if no sample arrives meanwhile; an endpoint already waiting keeps its time.
    /// An endpoint is one member however many of its keys are given (its 00:00 weekday key).
    pub async fn defer_fallbacks(
        &self,
        keys: &[BaselineKey],
        due_ms: i64,
    ) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let pending = self.keys.fallback_pending();
        self.run("defer_fallbacks", async |conn| {
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(&pending).arg("NX");
            for key in keys {
                cmd.arg(due_ms).arg(pending_member(key));
            }
            let _: i64 = cmd.query_async(conn).await?;
            Ok(())
        })
        .await
    }

    /// Up to `limit` endpoints whose deferred levels are due at `now_ms` (one key of each).
    pub async fn due_fallbacks(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<BaselineKey>, StoreError> {
        let pending = self.keys.fallback_pending();
        let bodies: Vec<String> = self
            .run("due_fallbacks", async |conn| {
                Ok(redis::cmd("ZRANGE")
                    .arg(&pending)
                    .arg("-inf")
                    .arg(now_ms)
                    .arg("BYSCORE")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit)
                    .query_async(conn)
                    .await?)
            })
            .await?;
        Ok(DirtyBatch::decode(bodies).keys)
    }

    /// Forgets deferred endpoints whose levels were refreshed.
    pub async fn fallbacks_done(&self, keys: &[BaselineKey]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let pending = self.keys.fallback_pending();
        self.run("fallbacks_done", async |conn| {
            let mut cmd = redis::cmd("ZREM");
            cmd.arg(&pending);
            for key in keys {
                cmd.arg(pending_member(key));
            }
            let _: i64 = cmd.query_async(conn).await?;
            Ok(())
        })
        .await
    }

    /// Endpoints waiting for their deferred levels (ZCARD `fbPending`).
    pub async fn fallback_backlog(&self) -> Result<u64, StoreError> {
        let pending = self.keys.fallback_pending();
        self.run("fallback_backlog", async |conn| {
            Ok(redis::cmd("ZCARD").arg(&pending).query_async(conn).await?)
        })
        .await
    }

    /// Replaces endpoints' fallback levels, computed at `at_ms` from windows read before it, in
    /// one round trip; returns how many were written (levels computed later are kept).
    pub async fn write_fallbacks(
        &self,
        items: &[FallbackLevels],
        at_ms: i64,
        retention: Duration,
    ) -> Result<u64, StoreError> {
        if items.is_empty() {
            return Ok(0);
        }
        let invocations: Vec<_> = items
            .iter()
            .map(|item| {
                let mut inv = FALLBACKS.prepare_invoke();
                inv.key(self.keys.fallback(&item.key.endpoint_body()))
                    .arg(at_ms)
                    .arg(retention.as_millis() as u64);
                for (field, level) in &item.levels {
                    inv.arg(field).arg(level.encode());
                }
                inv
            })
            .collect();
        let written: Vec<i64> = self
            .run("write_fallbacks", async |conn| {
                // EVALSHA in a pipeline cannot fall back to EVAL: the script is loaded first,
                // in the same round trip.
                let mut pipe = redis::pipe();
                pipe.load_script(&FALLBACKS).ignore();
                for inv in &invocations {
                    pipe.invoke_script(inv);
                }
                Ok(pipe.query_async(conn).await?)
            })
            .await?;
        Ok(written.iter().filter(|&&w| w == 1).count() as u64)
    }

    /// Hands the in-flight keys of every worker whose heartbeat expired back to `dirtyKeys`;
    /// returns how many keys were handed back.
    pub async fn recover_orphans(&self) -> Result<u64, StoreError> {
        let workers_key = self.keys.workers();
        let workers: Vec<String> = self
            .run("list_workers", async |conn| {
                Ok(redis::cmd("SMEMBERS")
                    .arg(&workers_key)
                    .query_async(conn)
                    .await?)
            })
            .await?;
        let mut recovered = 0;
        for worker in workers {
            let n = self.hand_back(&worker, false).await?;
            if n > 0 {
                tracing::warn!(
                    worker,
                    keys = n,
                    "recovered keys of a recomputer that stopped mid-batch"
                );
                recovered += n as u64;
            }
        }
        Ok(recovered)
    }

    /// Returns `worker`'s in-flight keys to `dirtyKeys` and forgets the worker (graceful stop).
    pub async fn release_worker(&self, worker: &str) -> Result<u64, StoreError> {
        Ok(self.hand_back(worker, true).await?.max(0) as u64)
    }

    async fn hand_back(&self, worker: &str, force: bool) -> Result<i64, StoreError> {
        let mut inv = HAND_BACK.prepare_invoke();
        inv.key(self.keys.alive(worker))
            .key(self.keys.inflight(worker))
            .key(self.keys.dirty())
            .key(self.keys.workers())
            .arg(worker)
            .arg(if force { "1" } else { "0" });
        self.run("hand_back", async |conn| Ok(inv.invoke_async(conn).await?))
            .await
    }

    /// One step of a full scan of `keyIndex` (every key that has a window): returns the next
    /// cursor (0 when done) and the keys of this step.
    pub async fn scan_keys(
        &self,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<BaselineKey>), StoreError> {
        let index = self.keys.key_index();
        let (next, bodies): (u64, Vec<String>) = self
            .run("scan_keys", async |conn| {
                Ok(redis::cmd("SSCAN")
                    .arg(&index)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(count)
                    .query_async(conn)
                    .await?)
            })
            .await?;
        Ok((
            next,
            bodies
                .iter()
                .filter_map(|b| BaselineKey::decode(b).ok())
                .collect(),
        ))
    }

    /// Removes from `keyIndex` the keys whose window has expired (retention), so the cardinality
    /// cap counts live keys only; returns how many were removed.
    pub async fn prune_index(&self, keys: &[BaselineKey]) -> Result<u64, StoreError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let names: Vec<String> = keys.iter().map(|k| self.keys.dur(&k.encode())).collect();
        let exists: Vec<bool> = self
            .run("prune_index_check", async |conn| {
                let mut pipe = redis::pipe();
                for name in &names {
                    pipe.cmd("EXISTS").arg(name);
                }
                Ok(pipe.query_async(conn).await?)
            })
            .await?;
        let gone: Vec<String> = keys
            .iter()
            .zip(exists)
            .filter(|(_, e)| !e)
            .map(|(k, _)| k.encode())
            .collect();
        if gone.is_empty() {
            return Ok(0);
        }
        let index = self.keys.key_index();
        // The span key space also counts each service's keys for its cap.
        let mut by_service: std::collections::BTreeMap<String, Vec<&str>> = Default::default();
        if self.keys.is_spans() {
            for body in &gone {
                let service = body.split('|').next().unwrap_or_default();
                by_service
                    .entry(self.keys.service_keys(service))
                    .or_default()
                    .push(body);
            }
        }
        self.run("prune_index", async |conn| {
            let mut pipe = redis::pipe();
            pipe.cmd("SREM").arg(&index).arg(&gone);
            for (set, bodies) in &by_service {
                pipe.cmd("SREM").arg(set).arg(bodies).ignore();
            }
            let (removed,): (u64,) = pipe.query_async(conn).await?;
            Ok(removed)
        })
        .await
    }

    /// Marks dirty the keys whose window took samples that no baseline was computed from
    /// (field `v` of `base:{B}` ahead of `cv`), for the sweep of `keyIndex`; returns how many.
    ///
    /// On a Redis Cluster an ingest stores a sample and marks its key dirty in two steps (see
    /// `ingest`); a crash in between leaves such a key, and this repairs it. Elsewhere the two
    /// are one script and this does nothing.
    pub async fn repair_dirty(&self, keys: &[BaselineKey]) -> Result<u64, StoreError> {
        if keys.is_empty() || !self.keys.is_cluster() {
            return Ok(0);
        }
        let names: Vec<String> = keys.iter().map(|k| self.keys.base(&k.encode())).collect();
        let versions: Vec<(Option<String>, Option<String>)> = self
            .run_holding("repair_dirty_check", Hold::Exclusive, async |conn| {
                let mut pipe = redis::pipe();
                for name in &names {
                    pipe.cmd("HMGET").arg(name).arg("v").arg("cv");
                }
                Ok(pipe.query_async(conn).await?)
            })
            .await?;
        let behind: Vec<String> = keys
            .iter()
            .zip(versions)
            .filter(|(_, (v, cv))| v.is_some() && v != cv)
            .map(|(k, _)| k.encode())
            .collect();
        if behind.is_empty() {
            return Ok(0);
        }
        let dirty = self.keys.dirty();
        self.run("repair_dirty", async |conn| {
            let _: i64 = redis::cmd("SADD")
                .arg(&dirty)
                .arg(&behind)
                .query_async(conn)
                .await?;
            Ok(())
        })
        .await?;
        Ok(behind.len() as u64)
    }

    /// Adds every window of this key space found in Redis (`SCAN` of `dur:{*}`, on every
    /// primary of a cluster) to `keyIndex`; returns how many windows were found. For
    /// `recomputer rebuild`: windows copied in from elsewhere (a standalone Redis imported into
    /// a cluster with `redis-cli --cluster import`, whose `keyIndex` has another name there) are
    /// indexed, and so recomputed and listed. Windows that do not decode are left alone.
    pub async fn index_windows(&self) -> Result<u64, StoreError> {
        let pattern = self.keys.dur_pattern();
        let index = self.keys.key_index();
        let nodes = self
            .run("index_windows_nodes", async |conn| {
                Ok(conn.scan_targets().await)
            })
            .await?;
        let mut found = 0u64;
        for node in nodes {
            let mut cursor = 0u64;
            loop {
                let (next, names): (u64, Vec<String>) = self
                    .run("index_windows_scan", async |conn| {
                        let mut cmd = redis::cmd("SCAN");
                        cmd.arg(cursor)
                            .arg("MATCH")
                            .arg(&pattern)
                            .arg("COUNT")
                            .arg(1000);
                        redis::from_redis_value(conn.query_on(&node, cmd).await?)
                            .map_err(|e| StoreError::bad_data("SCAN", e.to_string()))
                    })
                    .await?;
                let bodies: Vec<&str> = names
                    .iter()
                    .filter_map(|n| self.keys.body_of_dur(n))
                    .filter(|b| BaselineKey::decode(b).is_ok())
                    .collect();
                if !bodies.is_empty() {
                    found += bodies.len() as u64;
                    self.run("index_windows", async |conn| {
                        let _: i64 = redis::cmd("SADD")
                            .arg(&index)
                            .arg(&bodies)
                            .query_async(conn)
                            .await?;
                        Ok(())
                    })
                    .await?;
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(found)
    }

    /// Number of keys with a window (SCARD `keyIndex`).
    pub async fn key_count(&self) -> Result<u64, StoreError> {
        let index = self.keys.key_index();
        self.run("key_count", async |conn| {
            Ok(redis::cmd("SCARD").arg(&index).query_async(conn).await?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_hold_at_most_the_sample_budget_and_at_least_one_window() {
        // (window_size, keys per round trip)
        let cases = [
            (1000, 32),
            (1, 32_768),
            (0, 32_768),
            (100, 327),
            (32_768, 1),
            (100_000, 1),
        ];
        for (window_size, keys) in cases {
            assert_eq!(
                keys_per_round_trip(window_size),
                keys,
                "window {window_size}"
            );
        }
    }
}
