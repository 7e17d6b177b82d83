//! Ingesting samples: dedup by trace, push, trim, mark dirty; atomically per trace.
//!
//! One Lua script handles a chunk of traces. For each trace it checks `seen:{traceID}`, then
//! (unless the key would exceed the cardinality cap) sets the marker with its TTL, pushes the
//! duration, trims the window, refreshes the window's expiry and adds the body to `dirtyKeys`
//! and `keyIndex`. Redis runs a script without interleaving, so two ingesters racing on the same
//! trace count it once. Chunks are sent concurrently on one multiplexed connection, which
//! pipelines them: a batch of 10,000 traces costs a handful of round trips.
//!
//! **Redis Cluster** cannot run that script: its keys live in many slots. There a batch takes
//! three steps ([`Store::ingest_sharded`]), and the per-trace atomicity that matters (marker,
//! push and version bump together) is kept, because the marker lives in the window's slot (see
//! `keys`):
//! 1. `admit.lua`, in the coordination slot: the cardinality caps, and each key into
//!    `keyIndex` (and its service's set, for spans), before any sample of it is stored;
//! 2. for traces, `SET seen:{traceID} B NX GET` in the trace's slot: a trace already marked
//!    with another key is a duplicate (dedup stays by trace ID, whatever the key); then
//!    `ingest_window.lua`, once per slot (in chunks, concurrently): dedup by the window's own
//!    marker, push, trim, `v`;
//! 3. `SADD dirtyKeys` of the keys that took a sample (or answered duplicate, so that a retry
//!    after a failed step 3 marks them again).
//!
//! A crash or a Redis failure between steps 2 and 3 leaves a stored sample whose key is not
//! dirty. That only delays its recompute: the key is already in `keyIndex` (step 1), its `v` is
//! ahead of the `cv` its baseline was computed from, and the recomputer's sweep of `keyIndex`
//! marks every such key dirty again ([`Store::repair_dirty`]). A failure between steps 1 and 2
//! leaves an indexed key without a window, which the prune sweep removes. Nothing accepted is
//! lost, and nothing is counted twice (the marker is set with the push).
//!
//! **Acknowledged writes** (`redis.min_replicas_ack: N`): the batch's writes go out on a
//! connection held for the batch, and `WAIT N timeout` follows them on it (in a cluster, in
//! the same pipeline as each step's writes, on its node: the admit script, each slot's window
//! script and the dirty marks; not the trace-ID claims); fewer than N acknowledgements
//! is [`StoreError::NotReplicated`], which the ingest answers 503. The samples are stored on the
//! primary either way, so a retry of that batch answers them as duplicates.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use anomaly_core::{BaselineKey, DurationMs, TraceId};
use deadpool_redis::redis::{self, Script, ScriptInvocation};

use futures::StreamExt;
use futures::stream::{FuturesOrdered, FuturesUnordered};

use crate::conn::slot_of;
use crate::{Conn, Hold, Store, StoreError};

/// Traces per script call: large enough to amortise the call, small enough that Redis is never
/// blocked for more than about a millisecond.
const CHUNK: usize = 256;
/// Script calls in flight per batch.
const IN_FLIGHT: usize = 8;

static INGEST: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("ingest.lua")));
static WINDOW: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("ingest_window.lua")));
static ADMIT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("admit.lua")));

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
        if self.keys.is_cluster() {
            let samples = items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let body = item.key.encode();
                    Sample {
                        seen: self.keys.seen_in(&item.trace_id, &body),
                        trace_seen: Some(self.keys.seen(&item.trace_id)),
                        value: sample_value(item.duration, skip_window.get(i).copied()),
                        span: None,
                        service: None,
                        body,
                    }
                })
                .collect();
            let caps = Caps {
                keys: settings.max_keys,
                per_service: 0,
            };
            let keep = Keep {
                ttl_ms,
                window_size: settings.window_size,
                retention_ms,
            };
            return self.ingest_sharded("ingest", samples, keep, caps).await;
        }
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
        self.run_holding(op, self.ingest_hold(), async |conn| {
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
            if let Some((replicas, timeout)) = self.replicas_ack {
                // On the connection that wrote the batch, held for it: WAIT covers its writes.
                let acked: i64 = redis::cmd("WAIT")
                    .arg(replicas)
                    .arg(timeout.as_millis() as u64)
                    .query_async(conn)
                    .await?;
                self.check_acked(acked)?;
            }
            Ok((collected.total, collected.items))
        })
        .await
    }

    /// How an ingest holds its connection: for the whole batch when its writes must be
    /// acknowledged by replicas (`WAIT` blocks the connection it is sent on, and covers only
    /// that connection's writes), else shared.
    fn ingest_hold(&self) -> Hold {
        if self.replicas_ack.is_some() {
            Hold::Exclusive
        } else {
            Hold::Shared
        }
    }

    /// Whether `acked` replicas are enough for `redis.min_replicas_ack`.
    fn check_acked(&self, acked: i64) -> Result<(), StoreError> {
        match self.replicas_ack {
            Some((wanted, after)) if acked < i64::from(wanted) => Err(StoreError::NotReplicated {
                wanted,
                acked: acked.max(0) as u32,
                after,
            }),
            _ => Ok(()),
        }
    }

    /// Ingest on a Redis Cluster: the three steps of the module docs. `samples` are in the
    /// batch's order; the answer says what happened to each.
    pub(crate) async fn ingest_sharded(
        &self,
        op: &'static str,
        samples: Vec<Sample>,
        keep: Keep,
        caps: Caps,
    ) -> Result<(IngestOutcome, Vec<ItemOutcome>), StoreError> {
        // A trace already stored under another key is a duplicate, as it is in one script
        // elsewhere, and takes no part in the caps: who owns each trace so far (a GET of its own
        // marker, which holds the key it was stored under).
        let traces: Vec<usize> = (0..samples.len())
            .filter(|&i| samples[i].trace_seen.is_some())
            .collect();
        let mut owner_before: Vec<Option<String>> = vec![None; samples.len()];
        if !traces.is_empty() {
            let owners: Vec<Option<String>> = self
                .run("ingest_trace_owners", async |conn| {
                    let mut pipe = redis::pipe();
                    for &i in &traces {
                        pipe.cmd("GET").arg(samples[i].trace_seen.as_deref());
                    }
                    Ok(pipe.query_async(conn).await?)
                })
                .await?;
            for (&i, owner) in traces.iter().zip(owners) {
                owner_before[i] = owner;
            }
        }
        let mut elsewhere: Vec<bool> = samples
            .iter()
            .zip(&owner_before)
            .map(|(s, owner)| owner.as_ref().is_some_and(|b| *b != s.body))
            .collect();
        // Within the batch, a trace's first sample names its key: a later sample of it under
        // another key follows the first (a duplicate if the first is stored, refused with it if
        // the cap refuses the first), so that no key is admitted for a sample that cannot be
        // stored.
        let mut first: HashMap<&str, usize> = HashMap::new();
        let mut follows: Vec<Option<usize>> = vec![None; samples.len()];
        for (i, sample) in samples.iter().enumerate() {
            let Some(trace) = sample.trace_seen.as_deref() else {
                continue;
            };
            if elsewhere[i] {
                continue;
            }
            match first.get(trace) {
                None => {
                    first.insert(trace, i);
                }
                Some(&f) if samples[f].body != sample.body => follows[i] = Some(f),
                Some(_) => {}
            }
        }

        // Step 1: the caps and keyIndex, once per distinct key of the batch's other samples.
        let mut distinct: HashMap<&str, usize> = HashMap::new();
        let mut admit = ADMIT.prepare_invoke();
        admit
            .key(self.keys.key_index())
            .arg(caps.keys)
            .arg(caps.per_service);
        let mut service_sets: HashMap<&str, usize> = HashMap::new();
        for (i, sample) in samples.iter().enumerate() {
            if elsewhere[i] || follows[i].is_some() {
                continue;
            }
            if distinct.contains_key(sample.body.as_str()) {
                continue;
            }
            distinct.insert(&sample.body, distinct.len());
            let set = match &sample.service {
                Some(service) => {
                    let next = service_sets.len() + 2;
                    let n = *service_sets.entry(service).or_insert(next);
                    if n == next {
                        admit.key(self.keys.service_keys(service));
                    }
                    n
                }
                None => 0,
            };
            admit.arg(&sample.body).arg(set);
        }
        let admitted: String = if distinct.is_empty() {
            String::new()
        } else if self.replicas_ack.is_some() {
            // keyIndex too is what the sweeps find a key by: acknowledged like the samples.
            let mut pipe = redis::pipe();
            // In the same pipeline, so that the EVALSHA finds it (as in step 2).
            pipe.load_script(&ADMIT);
            pipe.invoke_script(&admit);
            let replies = self.one_slot_acked("ingest_admit", pipe).await?;
            let reply = replies.get(1).unwrap_or(&redis::Value::Nil);
            redis::from_redis_value_ref(reply)
                .map_err(|e| StoreError::bad_data("admit.lua", e.to_string()))?
        } else {
            self.run("ingest_admit", async |conn| {
                Ok(admit.invoke_async(conn).await?)
            })
            .await?
        };
        let admitted = admitted.as_bytes();
        let is_admitted = |sample: &Sample| {
            distinct
                .get(sample.body.as_str())
                .is_some_and(|&d| admitted.get(d) == Some(&b'y'))
        };

        // Whether each sample passed the caps: its key was admitted, and a sample that follows
        // its trace's first one is refused with it.
        let mut passed: Vec<bool> = samples.iter().map(is_admitted).collect();
        for i in 0..samples.len() {
            if let Some(f) = follows[i] {
                // A duplicate of its first sample when that one goes in (the claims below will
                // confirm it), else refused with it.
                elsewhere[i] = passed[f];
                passed[i] = passed[f];
            }
        }

        // A sample refused by a cap is a duplicate if it was stored before it (as in one script):
        // before the batch, or earlier in it.
        let refused: Vec<usize> = (0..samples.len())
            .filter(|&i| !elsewhere[i] && !passed[i])
            .collect();
        if !refused.is_empty() {
            let spans: Vec<usize> = refused
                .iter()
                .copied()
                .filter(|&i| samples[i].trace_seen.is_none())
                .collect();
            let mut seen: HashMap<usize, bool> = refused
                .iter()
                .map(|&i| (i, owner_before[i].is_some()))
                .collect();
            if !spans.is_empty() {
                let found: Vec<bool> = self
                    .run("ingest_refused_seen", async |conn| {
                        let mut pipe = redis::pipe();
                        for &i in &spans {
                            pipe.cmd("HEXISTS")
                                .arg(&samples[i].seen)
                                .arg(samples[i].span.as_deref().unwrap_or(""));
                        }
                        Ok(pipe.query_async(conn).await?)
                    })
                    .await?;
                seen.extend(spans.iter().copied().zip(found));
            }
            // What the admitted samples before each would have marked: a trace's own marker, or
            // a span's (marker, span ID).
            let mut marked: std::collections::HashSet<(&str, &str)> = Default::default();
            for (i, sample) in samples.iter().enumerate() {
                let mark = match &sample.trace_seen {
                    Some(trace) => (trace.as_str(), ""),
                    None => (sample.seen.as_str(), sample.span.as_deref().unwrap_or("")),
                };
                if passed[i] && !elsewhere[i] {
                    marked.insert(mark);
                } else if let Some(&before) = seen.get(&i) {
                    elsewhere[i] = before || marked.contains(&mark);
                }
            }
        }

        // Traces: the trace's own marker, in its own slot, names the key the trace belongs to
        // (`SET NX GET`): a trace already stored under another key is a duplicate, as it is in
        // one script elsewhere. The same key goes on to the window's own marker, which is what
        // makes a retry (or a crash after this step) count the trace once.
        let claims: Vec<(usize, &str)> = samples
            .iter()
            .enumerate()
            .filter(|&(i, _)| passed[i] && !elsewhere[i])
            .filter_map(|(i, s)| s.trace_seen.as_deref().map(|key| (i, key)))
            .collect();
        if !claims.is_empty() {
            let owners: Vec<Option<String>> = self
                .run_holding("ingest_claim_traces", self.ingest_hold(), async |conn| {
                    let mut pipe = redis::pipe();
                    for &(i, key) in &claims {
                        pipe.cmd("SET")
                            .arg(key)
                            .arg(&samples[i].body)
                            .arg("NX")
                            .arg("GET")
                            .arg("PX")
                            .arg(keep.ttl_ms);
                    }
                    Ok(pipe.query_async(conn).await?)
                })
                .await?;
            for (&(i, _), owner) in claims.iter().zip(owners) {
                elsewhere[i] = owner.is_some_and(|b| b != samples[i].body);
            }
        }

        // Step 2: the samples of each slot, in chunks.
        let mut by_slot: HashMap<u16, Vec<usize>> = HashMap::new();
        for (i, sample) in samples.iter().enumerate() {
            if passed[i] && !elsewhere[i] {
                by_slot
                    .entry(slot_of(self.keys.dur(&sample.body).as_bytes()))
                    .or_default()
                    .push(i);
            }
        }
        let kind = if samples.iter().any(|s| s.span.is_some()) {
            "s"
        } else {
            "r"
        };
        let mut calls = Vec::new();
        for positions in by_slot.into_values() {
            for chunk in positions.chunks(CHUNK) {
                let mut inv = WINDOW.prepare_invoke();
                inv.arg(keep.ttl_ms)
                    .arg(keep.window_size)
                    .arg(keep.retention_ms)
                    .arg(kind);
                for &i in chunk {
                    let sample = &samples[i];
                    inv.key(&sample.seen)
                        .key(self.keys.dur(&sample.body))
                        .key(self.keys.base(&sample.body))
                        .arg(&sample.value)
                        .arg(sample.span.as_deref().unwrap_or(""));
                }
                let mut pipe = redis::pipe();
                // In the same pipeline, so that the EVALSHA finds it; the pipeline goes to the
                // node of the script's slot, WAIT included.
                pipe.load_script(&WINDOW);
                pipe.invoke_script(&inv);
                if let Some((replicas, timeout)) = self.replicas_ack {
                    pipe.cmd("WAIT")
                        .arg(replicas)
                        .arg(timeout.as_millis() as u64);
                }
                calls.push((chunk.to_vec(), pipe));
            }
        }
        let mut outcomes: Vec<ItemOutcome> = elsewhere
            .iter()
            .map(|&e| {
                if e {
                    ItemOutcome::Duplicate
                } else {
                    ItemOutcome::OverCardinality
                }
            })
            .collect();
        let mut total = IngestOutcome {
            over_cardinality: (0..samples.len())
                .filter(|&i| !elsewhere[i] && !passed[i])
                .count() as u64,
            duplicates: elsewhere.iter().filter(|&&e| e).count() as u64,
            ..IngestOutcome::default()
        };
        let replies = self
            .run_holding(op, self.ingest_hold(), async |conn| {
                let mut pending = FuturesUnordered::new();
                let mut replies = Vec::with_capacity(calls.len());
                for (positions, pipe) in calls {
                    if pending.len() >= IN_FLIGHT
                        && let Some(reply) = pending.next().await
                    {
                        replies.push(reply?);
                    }
                    let mut conn: Conn = conn.clone();
                    pending.push(async move {
                        let values = conn.query_one_node(&pipe).await?;
                        Ok::<_, StoreError>((positions, values))
                    });
                }
                while let Some(reply) = pending.next().await {
                    replies.push(reply?);
                }
                Ok(replies)
            })
            .await?;
        for (positions, values) in replies {
            let parse_failed =
                |e: redis::ParsingError| StoreError::bad_data("ingest_window.lua", e.to_string());
            let reply: Reply = values
                .get(1)
                .map(redis::from_redis_value_ref)
                .transpose()
                .map_err(parse_failed)?
                .unwrap_or_default();
            if let Some(acked) = values.get(2) {
                self.check_acked(redis::from_redis_value_ref(acked).map_err(parse_failed)?)?;
            }
            total.accepted += reply.0;
            total.duplicates += reply.1;
            for (&i, code) in positions.iter().zip(reply.3.bytes()) {
                outcomes[i] = ItemOutcome::from_code(code);
            }
        }

        // Step 3: the keys that took a sample (or answered duplicate) are dirty.
        let mut dirty: Vec<&str> = (0..samples.len())
            .filter(|&i| {
                samples[i].value != SKIP_WINDOW
                    && passed[i]
                    && !elsewhere[i]
                    && matches!(outcomes[i], ItemOutcome::Accepted | ItemOutcome::Duplicate)
            })
            .map(|i| samples[i].body.as_str())
            .collect();
        dirty.sort_unstable();
        dirty.dedup();
        if !dirty.is_empty() && self.replicas_ack.is_some() {
            // A dirty mark lost in a failover would leave its key's baseline behind until the
            // key's next sample: acknowledged like the samples.
            let mut pipe = redis::pipe();
            pipe.cmd("SADD").arg(self.keys.dirty()).arg(&dirty);
            self.one_slot_acked("ingest_mark_dirty", pipe).await?;
        } else if !dirty.is_empty() {
            let key = self.keys.dirty();
            self.run("ingest_mark_dirty", async |conn| {
                let _: i64 = redis::cmd("SADD")
                    .arg(&key)
                    .arg(&dirty)
                    .query_async(conn)
                    .await?;
                Ok(())
            })
            .await?;
        }
        Ok((total, outcomes))
    }
}

impl Store {
    /// Sends `pipe`, whose keyed commands are all of one slot, to that slot's node, with `WAIT`
    /// for `redis.min_replicas_ack` replicas after it on the same connection when that is set,
    /// and checks the count. Returns every reply of `pipe`'s own commands, ignored or not.
    async fn one_slot_acked(
        &self,
        op: &'static str,
        mut pipe: redis::Pipeline,
    ) -> Result<Vec<redis::Value>, StoreError> {
        if let Some((replicas, timeout)) = self.replicas_ack {
            pipe.cmd("WAIT")
                .arg(replicas)
                .arg(timeout.as_millis() as u64);
        }
        let mut values = self
            .run_holding(op, self.ingest_hold(), async |conn| {
                let mut conn: Conn = conn.clone();
                Ok(conn.query_one_node(&pipe).await?)
            })
            .await?;
        if self.replicas_ack.is_some() {
            let acked = values
                .pop()
                .ok_or_else(|| StoreError::bad_data(op, "no reply to WAIT".to_owned()))?;
            let acked: i64 = redis::from_redis_value_ref(&acked)
                .map_err(|e| StoreError::bad_data(op, e.to_string()))?;
            self.check_acked(acked)?;
        }
        Ok(values)
    }
}

/// A sample on its way through [`Store::ingest_sharded`].
pub(crate) struct Sample {
    pub(crate) body: String,
    /// Its dedup marker, in the window's slot.
    pub(crate) seen: String,
    /// A trace's own marker (`seen:{traceID}`, in the trace's slot), which names the key the
    /// trace was stored under; `None` for spans, whose key follows from the span itself.
    pub(crate) trace_seen: Option<String>,
    /// Whole microseconds, or [`SKIP_WINDOW`].
    pub(crate) value: String,
    /// The span ID (hex), for spans.
    pub(crate) span: Option<String>,
    /// The service's part of the body, for the per-service cap of spans.
    pub(crate) service: Option<String>,
}

/// The caps of [`Store::ingest_sharded`]: on all keys, and on each service's (0 = none).
pub(crate) struct Caps {
    pub(crate) keys: u64,
    pub(crate) per_service: u64,
}

/// How windows are kept, as the scripts take it.
#[derive(Clone, Copy)]
pub(crate) struct Keep {
    pub(crate) ttl_ms: u64,
    pub(crate) window_size: u32,
    pub(crate) retention_ms: u64,
}

/// The duration argument of a sample: whole microseconds, or [`SKIP_WINDOW`].
pub(crate) fn sample_value(duration: DurationMs, skip: Option<bool>) -> String {
    if skip.unwrap_or(false) {
        SKIP_WINDOW.to_owned()
    } else {
        to_micros(duration).to_string()
    }
}
