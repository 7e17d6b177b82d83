//! Ingesting samples: dedup by trace, push, trim, mark dirty; atomically per trace.
//!
//! One Lua script handles a chunk of traces. For each trace it checks `seen:{traceID}`, then
//! (unless the key would exceed the cardinality cap) sets the marker with its TTL, pushes the
//! duration, trims the window, refreshes the window's expiry and adds the body to `dirtyKeys`
//! and `keyIndex`. Redis runs a script without interleaving, so two ingesters racing on the same
//! trace count it once. Chunks are sent concurrently on one multiplexed connection, which
//! pipelines them: a batch of 10,000 traces costs a handful of round trips.

use std::sync::LazyLock;
use std::time::Duration;

use anomaly_core::{BaselineKey, DurationMs, TraceId};
use deadpool_redis::redis::{Script, ScriptInvocation};

use futures::StreamExt;
use futures::stream::FuturesOrdered;

use crate::{Store, StoreError};

/// Traces per script call: large enough to amortise the call, small enough that Redis is never
/// blocked for more than about a millisecond.
const CHUNK: usize = 256;
/// Script calls in flight per batch.
const IN_FLIGHT: usize = 8;

static INGEST: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("ingest.lua")));

/// One sample to store.
#[derive(Debug, Clone)]
pub struct IngestItem {
    pub trace_id: TraceId,
    pub key: BaselineKey,
    pub duration: DurationMs,
    /// When the trace started (unix ms): not stored in the window; the anomaly feed records
    /// it.
    pub start_ms: i64,
}

/// How windows are kept.
#[derive(Debug, Clone, Copy)]
pub struct IngestSettings {
    pub window_size: u32,
    pub dedup_ttl: Duration,
    /// Windows untouched this long expire; zero keeps them forever.
    pub retention: Duration,
    /// At most this many distinct keys; zero means no cap.
    pub max_keys: u64,
}

/// What a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    pub accepted: u64,
    pub duplicates: u64,
    /// Traces for new keys refused by the cardinality cap.
    pub over_cardinality: u64,
}

impl std::ops::AddAssign for IngestOutcome {
    fn add_assign(&mut self, rhs: Self) {
        self.accepted += rhs.accepted;
        self.duplicates += rhs.duplicates;
        self.over_cardinality += rhs.over_cardinality;
    }
}

/// What happened to one item of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemOutcome {
    Accepted,
    Duplicate,
    /// Refused by the cardinality cap (a new key over it).
    OverCardinality,
}

impl ItemOutcome {
    /// The scripts' one-character code (`a`, `d`, `o`).
    pub(crate) fn from_code(code: u8) -> ItemOutcome {
        match code {
            b'a' => ItemOutcome::Accepted,
            b'd' => ItemOutcome::Duplicate,
            _ => ItemOutcome::OverCardinality,
        }
    }
}

/// The duration argument of a trace that is marked seen but kept out of its window.
pub(crate) const SKIP_WINDOW: &str = "-";

/// One ingest script's reply: accepted, duplicates, over the cap, and a character per item.
pub(crate) type Reply = (u64, u64, u64, String);

/// The replies of a batch's script calls, in order.
pub(crate) struct Collected {
    pub(crate) total: IngestOutcome,
    pub(crate) items: Vec<ItemOutcome>,
}

impl Collected {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Collected {
            total: IngestOutcome::default(),
            items: Vec::with_capacity(n),
        }
    }

    pub(crate) fn add(&mut self, (accepted, duplicates, over_cardinality, codes): Reply) {
        self.total += IngestOutcome {
            accepted,
            duplicates,
            over_cardinality,
        };
        self.items.extend(codes.bytes().map(ItemOutcome::from_code));
    }
}

/// Whole microseconds: what a window stores (see the crate docs for why).
pub(crate) fn to_micros(d: DurationMs) -> i64 {
    (d.get() * 1000.0).round() as i64
}

impl Store {
    /// Stores a batch. Either every trace of the batch was handled (accepted, duplicate or over
    /// the cap) or an error is returned; a retry after an error is safe because handled traces
    /// then count as duplicates.
    pub async fn ingest(
        &self,
        items: &[IngestItem],
        settings: &IngestSettings,
    ) -> Result<IngestOutcome, StoreError> {
        Ok(self.ingest_detailed(items, settings, &[]).await?.0)
    }

    /// [`Store::ingest`], saying what happened to each trace, in order. A trace whose
    /// `skip_window` entry is true is deduplicated and accepted like any other but not added to
    /// its window (`stats.exclude_anomalies`: judged anomalous on ingest); a shorter
    /// `skip_window` skips none of the rest.
    pub async fn ingest_detailed(
        &self,
        items: &[IngestItem],
        settings: &IngestSettings,
        skip_window: &[bool],
    ) -> Result<(IngestOutcome, Vec<ItemOutcome>), StoreError> {
        if items.is_empty() {
            return Ok((IngestOutcome::default(), Vec::new()));
        }
        let ttl_ms = settings.dedup_ttl.as_millis().max(1) as u64;
        let retention_ms = settings.retention.as_millis() as u64;
        let dirty = self.keys.dirty();
        let index = self.keys.key_index();
        // Invocations are built before any await, so the future owns them (and stays Send).
        let invocations: Vec<_> = items
            .chunks(CHUNK)
            .enumerate()
            .map(|(c, chunk)| {
                let mut inv = INGEST.prepare_invoke();
                inv.key(&dirty).key(&index);
                inv.arg(ttl_ms)
                    .arg(settings.window_size)
                    .arg(retention_ms)
                    .arg(settings.max_keys);
                for (i, item) in chunk.iter().enumerate() {
                    let body = item.key.encode();
                    inv.key(self.keys.seen(&item.trace_id))
                        .key(self.keys.dur(&body))
                        .key(self.keys.base(&body));
                    if skip_window.get(c * CHUNK + i).copied().unwrap_or(false) {
                        inv.arg(SKIP_WINDOW);
                    } else {
                        inv.arg(to_micros(item.duration));
                    }
                    inv.arg(body);
                }
                inv
            })
            .collect();
        self.run_ingest_scripts("ingest", invocations, items.len())
            .await
    }

    /// Runs a batch's ingest script calls, [`IN_FLIGHT`] at a time on one multiplexed
    /// connection (so they are pipelined), and sums their replies in order.
    pub(crate) async fn run_ingest_scripts(
        &self,
        op: &'static str,
        invocations: Vec<ScriptInvocation<'static>>,
        items: usize,
    ) -> Result<(IngestOutcome, Vec<ItemOutcome>), StoreError> {
        self.run(op, async |conn| {
            // A plain loop rather than iterator adapters: closures over the invocations make
            // the future's lifetimes too specific to be spawned.
            let mut pending = FuturesOrdered::new();
            let mut collected = Collected::with_capacity(items);
            for inv in invocations {
                if pending.len() >= IN_FLIGHT
                    && let Some(reply) = pending.next().await
                {
                    collected.add(reply?);
                }
                let mut conn = conn.clone();
                pending.push_back(async move {
                    let reply: Reply = inv.invoke_async(&mut conn).await?;
                    Ok::<_, StoreError>(reply)
                });
            }
            while let Some(reply) = pending.next().await {
                collected.add(reply?);
            }
            Ok((collected.total, collected.items))
        })
        .await
    }
}
