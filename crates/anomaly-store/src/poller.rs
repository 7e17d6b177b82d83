//! Poller state in Redis: the ingester's cursor, its leader lease and backfill progress.
//!
//! - `poller:lease` (STRING, owner id, PX ttl): one replica polls Tempo. Taken with SET NX PX,
//!   renewed and released by compare-and-set scripts, so a replica whose lease expired (a long
//!   GC pause, a partition) can neither extend nor delete its successor's lease.
//! - `poller:cursor` (STRING, unix seconds): the end of the last window fully ingested. It only
//!   moves forward, and only while the caller holds the lease, so a deposed poller that finishes
//!   a window late cannot move it.
//! - `backfill:{job}` (HASH `from to done`, unix seconds): how far a backfill got, so an
//!   interrupted one resumes where it stopped.

use std::sync::LazyLock;
use std::time::Duration;

use deadpool_redis::redis::{self, Script};

use crate::{Store, StoreError};

/// Extends the lease only if `ARGV[1]` still owns it.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then
            redis.call('PEXPIRE', KEYS[1], ARGV[2])
            return 1
          end
          return 0",
    )
});

/// Deletes the lease only if `ARGV[1]` still owns it.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then
            return redis.call('DEL', KEYS[1])
          end
          return 0",
    )
});

/// Moves the cursor (KEYS[2]) forward to ARGV[2] if ARGV[1] holds the lease (KEYS[1]).
/// Returns the cursor afterwards, or -1 when the caller does not hold the lease.
static ADVANCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) ~= ARGV[1] then
            return -1
          end
          local to = tonumber(ARGV[2])
          local current = tonumber(redis.call('GET', KEYS[2]))
          if current == nil or to > current then
            redis.call('SET', KEYS[2], ARGV[2])
            return to
          end
          return current",
    )
});

/// What [`Store::advance_poll_cursor`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorAdvance {
    /// The cursor is now at this position (unix seconds); never behind where it was.
    At(u64),
    /// The caller does not hold the lease; nothing changed.
    NotLeader,
}

/// How far a backfill got (unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackfillProgress {
    pub from: u64,
    pub to: u64,
    /// Everything in `from..done` has been ingested.
    pub done: u64,
}

impl BackfillProgress {
    pub fn finished(&self) -> bool {
        self.done >= self.to
    }
}

impl Store {
    /// Takes the poller lease for `ttl` if it is free, or extends it if `owner` holds it.
    /// Returns whether `owner` holds it now.
    pub async fn acquire_lease(&self, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let key = self.keys.poller_lease();
        let ttl_ms = ttl.as_millis().max(1) as u64;
        self.run("acquire_lease", async |conn| {
            let set: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg(owner)
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms)
                .query_async(conn)
                .await?;
            if set.is_some() {
                return Ok(true);
            }
            let renewed: i64 = RENEW
                .key(&key)
                .arg(owner)
                .arg(ttl_ms)
                .invoke_async(conn)
                .await?;
            Ok(renewed == 1)
        })
        .await
    }

    /// Extends the lease if `owner` still holds it; returns whether it did.
    pub async fn renew_lease(&self, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let key = self.keys.poller_lease();
        let ttl_ms = ttl.as_millis().max(1) as u64;
        self.run("renew_lease", async |conn| {
            let renewed: i64 = RENEW
                .key(&key)
                .arg(owner)
                .arg(ttl_ms)
                .invoke_async(conn)
                .await?;
            Ok(renewed == 1)
        })
        .await
    }

    /// Gives the lease up if `owner` still holds it, so another replica can take over at once;
    /// returns whether it did.
    pub async fn release_lease(&self, owner: &str) -> Result<bool, StoreError> {
        let key = self.keys.poller_lease();
        self.run("release_lease", async |conn| {
            let deleted: i64 = RELEASE.key(&key).arg(owner).invoke_async(conn).await?;
            Ok(deleted == 1)
        })
        .await
    }

    /// Who holds the lease, if anyone.
    pub async fn lease_holder(&self) -> Result<Option<String>, StoreError> {
        let key = self.keys.poller_lease();
        self.run("lease_holder", async |conn| {
            Ok(redis::cmd("GET").arg(&key).query_async(conn).await?)
        })
        .await
    }

    /// The end (unix seconds) of the last window fully ingested, if any.
    pub async fn poll_cursor(&self) -> Result<Option<u64>, StoreError> {
        let key = self.keys.poller_cursor();
        self.run("poll_cursor", async |conn| {
            let raw: Option<String> = redis::cmd("GET").arg(&key).query_async(conn).await?;
            raw.map(|r| {
                r.parse::<u64>()
                    .map_err(|_| StoreError::bad_data(&key, format!("{r:?} is not unix seconds")))
            })
            .transpose()
        })
        .await
    }

    /// Moves the cursor forward to `to` (never back) if `owner` holds the lease.
    pub async fn advance_poll_cursor(
        &self,
        owner: &str,
        to: u64,
    ) -> Result<CursorAdvance, StoreError> {
        let (lease, cursor) = (self.keys.poller_lease(), self.keys.poller_cursor());
        self.run("advance_poll_cursor", async |conn| {
            let at: i64 = ADVANCE
                .key(&lease)
                .key(&cursor)
                .arg(owner)
                .arg(to)
                .invoke_async(conn)
                .await?;
            Ok(u64::try_from(at).map_or(CursorAdvance::NotLeader, CursorAdvance::At))
        })
        .await
    }

    /// The recorded progress of backfill `job`, if it ever started.
    pub async fn backfill_progress(
        &self,
        job: &str,
    ) -> Result<Option<BackfillProgress>, StoreError> {
        let key = self.keys.backfill(job);
        self.run("backfill_progress", async |conn| {
            let (from, to, done): (Option<String>, Option<String>, Option<String>) =
                redis::cmd("HMGET")
                    .arg(&key)
                    .arg("from")
                    .arg("to")
                    .arg("done")
                    .query_async(conn)
                    .await?;
            let (Some(from), Some(to), Some(done)) = (from, to, done) else {
                return Ok(None);
            };
            let num = |field: &str, v: &str| {
                v.parse::<u64>().map_err(|_| {
                    StoreError::bad_data(&key, format!("{field} {v:?} is not a number"))
                })
            };
            Ok(Some(BackfillProgress {
                from: num("from", &from)?,
                to: num("to", &to)?,
                done: num("done", &done)?,
            }))
        })
        .await
    }

    /// Starts (or restarts) backfill `job` over `from..to` with nothing done yet.
    pub async fn start_backfill(&self, job: &str, from: u64, to: u64) -> Result<(), StoreError> {
        let key = self.keys.backfill(job);
        self.run("start_backfill", async |conn| {
            let _: i64 = redis::cmd("HSET")
                .arg(&key)
                .arg("from")
                .arg(from)
                .arg("to")
                .arg(to)
                .arg("done")
                .arg(from)
                .query_async(conn)
                .await?;
            Ok(())
        })
        .await
    }

    /// Records that backfill `job` has ingested everything before `done`.
    pub async fn record_backfill(&self, job: &str, done: u64) -> Result<(), StoreError> {
        let key = self.keys.backfill(job);
        self.run("record_backfill", async |conn| {
            let _: i64 = redis::cmd("HSET")
                .arg(&key)
                .arg("done")
                .arg(done)
                .query_async(conn)
                .await?;
            Ok(())
        })
        .await
    }
}
