//! The recomputer: turns sample windows into baselines.
//!
//! Every `interval` it drains `dirtyKeys` in SPOP batches of `batch_size` until the set is empty
//! or `time_budget` is spent, with `concurrency` batches in flight: claim a batch, read the
//! windows (one pipelined round trip), compute p50/p95/MAD with anomaly-core, and commit the
//! baselines (one script call). [`Recomputer::drain_once`] is that one step; [`run`] only
//! schedules it, serves the probes and stops on shutdown. Any number of replicas may run: SPOP
//! hands each key to one of them, claims make a crash lose nothing, and versioned commits make
//! a race end with the newest window (see `anomaly_store::recompute`).

pub mod cli;
mod fallback;
mod metrics;

use std::future::Future;
use std::net::SocketAddr;
use std::ops::AddAssign;
use std::time::{Duration, Instant};

use anomaly_core::{Baseline, ConfigError, StatsConfig, StatsScratch};
use anomaly_runtime::config::{CommonConfig, Loaded, ServiceSection};
use anomaly_runtime::http::{self, HttpLimits};
use anomaly_runtime::lifecycle::{self, CancellationToken};
use anomaly_runtime::metrics::MetricsBuilder;
use anomaly_store::{CommitOutcome, Recomputed, Store, StoreError};
use serde::Deserialize;
use tokio::net::TcpListener;

pub use fallback::{FallbackOutcome, report_unmatched};
pub use metrics::RecomputeMetrics;

/// The `recomputer:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Section {
    pub listen: SocketAddr,
    pub limits: HttpLimits,
    /// How often the dirty set is drained.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// SPOP count per batch.
    pub batch_size: usize,
    /// A drain stops claiming new batches after this long (the next one starts at once).
    #[serde(with = "humantime_serde")]
    pub time_budget: Duration,
    /// Batches in flight at once per process.
    pub concurrency: usize,
    /// A recomputer silent this long is presumed dead and its claimed keys are handed back.
    #[serde(with = "humantime_serde")]
    pub claim_ttl: Duration,
    /// How often `keyIndex` is swept of keys whose window expired, and `keyEndpoints` of
    /// endpoints none of whose windows exists.
    #[serde(with = "humantime_serde")]
    pub prune_interval: Duration,
    /// At most how often an endpoint's fallback levels (`stats.fallback`) are recomputed; each
    /// time reads all 48 of its windows.
    #[serde(with = "humantime_serde")]
    pub fallback_refresh: Duration,
}

impl Default for Section {
    fn default() -> Self {
        Section {
            listen: SocketAddr::from(([0, 0, 0, 0], 8082)),
            limits: HttpLimits::default(),
            interval: Duration::from_secs(30),
            batch_size: 500,
            time_budget: Duration::from_secs(25),
            concurrency: 4,
            claim_ttl: Duration::from_secs(60),
            prune_interval: Duration::from_secs(3600),
            fallback_refresh: Duration::from_secs(300),
        }
    }
}

impl ServiceSection for Section {
    const NAME: &'static str = "recomputer";

    fn validate(&self, _common: &CommonConfig) -> Result<(), ConfigError> {
        self.limits.validate(Self::NAME)?;
        if self.interval.is_zero() {
            return Err(ConfigError::new(
                "recomputer.interval",
                "must be more than 0",
            ));
        }
        if !(1..=10_000).contains(&self.batch_size) {
            return Err(ConfigError::new(
                "recomputer.batch_size",
                "must be from 1 to 10000",
            ));
        }
        if !(1..=64).contains(&self.concurrency) {
            return Err(ConfigError::new(
                "recomputer.concurrency",
                "must be from 1 to 64",
            ));
        }
        if self.claim_ttl < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "recomputer.claim_ttl",
                "must be at least 1s",
            ));
        }
        if self.time_budget.is_zero() {
            return Err(ConfigError::new(
                "recomputer.time_budget",
                "must be more than 0",
            ));
        }
        if self.fallback_refresh < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "recomputer.fallback_refresh",
                "must be at least 1s",
            ));
        }
        Ok(())
    }
}

pub type Config = Loaded<Section>;

/// What one drain did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainOutcome {
    /// Baselines written.
    pub recomputed: u64,
    /// Keys whose window changed while they were computed (dirty again; recomputed later).
    pub stale: u64,
    /// Baselines removed because their window expired.
    pub cleared: u64,
    /// Dirty entries that were not valid key bodies (dropped).
    pub invalid: u64,
    /// Keys handed back from recomputers that died mid-batch.
    pub recovered: u64,
    pub batches: u64,
    /// The time budget ran out before the dirty set was empty.
    pub budget_exhausted: bool,
    /// Fallback levels: endpoints computed, thin buckets written, endpoints deferred.
    pub fallback: FallbackOutcome,
}

/// Counts one more batch's commit.
impl AddAssign<CommitOutcome> for DrainOutcome {
    fn add_assign(&mut self, c: CommitOutcome) {
        self.recomputed += c.written;
        self.stale += c.stale;
        self.cleared += c.cleared;
    }
}

/// Adds another drain's (or lane's) counts; whether the budget ran out is the caller's to
/// combine.
impl AddAssign<&DrainOutcome> for DrainOutcome {
    fn add_assign(&mut self, o: &DrainOutcome) {
        self.recomputed += o.recomputed;
        self.stale += o.stale;
        self.cleared += o.cleared;
        self.invalid += o.invalid;
        self.recovered += o.recovered;
        self.batches += o.batches;
        self.fallback += o.fallback;
    }
}

/// What one prune sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Keys whose window expired, from `keyIndex`.
    pub keys: u64,
    /// Endpoints none of whose 48 windows exists, from `keyEndpoints` (the key listing).
    pub endpoints: u64,
    /// Keys marked dirty again because samples were stored without it (Redis Cluster only).
    pub repaired: u64,
}

/// Recomputes baselines; cheap to clone.
#[derive(Debug, Clone)]
pub struct Recomputer {
    store: Store,
    stats: StatsConfig,
    retention: Duration,
    section: Section,
    worker: String,
    metrics: RecomputeMetrics,
    levels: fallback::Levels,
}

impl Recomputer {
    /// `worker` names this process in Redis; it must be unique among live recomputers
    /// ([`lifecycle::instance_id`] makes one).
    pub fn new(config: &Config, store: Store, metrics: RecomputeMetrics, worker: String) -> Self {
        let levels = fallback::Levels {
            store: store.clone(),
            stats: config.common.stats.clone(),
            // Validated when the configuration was loaded.
            overrides: config.common.compiled_overrides().unwrap_or_default(),
            refresh: config.service.fallback_refresh,
            retention: config.common.retention,
            worker: worker.clone(),
            force: false,
        };
        Recomputer {
            store,
            stats: config.common.stats.clone(),
            retention: config.common.retention,
            section: config.service.clone(),
            worker,
            metrics,
            levels,
        }
    }

    pub fn worker(&self) -> &str {
        &self.worker
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The same recomputer on the span key space ([`Store::spans`]): span baselines are kept,
    /// recomputed, listed and pruned exactly as root ones.
    fn in_spans(&self) -> Recomputer {
        let mut spans = self.clone();
        spans.store = self.store.spans();
        spans.levels.store = spans.store.clone();
        spans
    }

    /// Both key spaces: roots, then spans.
    fn spaces(&self) -> [Recomputer; 2] {
        [self.clone(), self.in_spans()]
    }

    /// Drains the dirty sets once, of root and of span baselines side by side: until they are
    /// empty or the time budget is spent. A debug span, the parent of its batches' Redis
    /// operations.
    #[tracing::instrument(name = "drain", level = "debug", skip_all, fields(worker = %self.worker))]
    pub async fn drain_once(&self) -> Result<DrainOutcome, StoreError> {
        let started = Instant::now();
        let spans = self.in_spans();
        let (mut outcome, spans) =
            futures::try_join!(self.drain_space(started), spans.drain_space(started))?;
        outcome += &spans;
        outcome.budget_exhausted |= spans.budget_exhausted;
        Ok(outcome)
    }

    /// Drains this recomputer's key space.
    async fn drain_space(&self, started: Instant) -> Result<DrainOutcome, StoreError> {
        let mut outcome = DrainOutcome {
            // Keys this process claimed in a drain that failed, then those of dead recomputers.
            recovered: self.store.release_worker(&self.worker).await?
                + self.store.recover_orphans().await?,
            ..DrainOutcome::default()
        };
        let lanes = (0..self.section.concurrency).map(|_| self.lane(started));
        let mut deferred = Vec::new();
        for lane in futures::future::join_all(lanes).await {
            let (lane, later) = lane?;
            deferred.extend(later);
            outcome += &lane;
            outcome.budget_exhausted |= lane.budget_exhausted;
        }
        // Endpoints whose fallback levels were not due wait for their period to end; those
        // whose period has ended are refreshed now, new samples or not.
        self.levels.defer(&deferred).await?;
        outcome.fallback += self
            .levels
            .refresh_due(&mut StatsScratch::default())
            .await?;
        Ok(outcome)
    }

    /// One of `concurrency` loops that claim and process batches until none is left.
    async fn lane(
        &self,
        started: Instant,
    ) -> Result<(DrainOutcome, Vec<anomaly_core::BaselineKey>), StoreError> {
        let mut outcome = DrainOutcome::default();
        let mut scratch = StatsScratch::default();
        let mut deferred = Vec::new();
        loop {
            if started.elapsed() >= self.section.time_budget {
                outcome.budget_exhausted = true;
                return Ok((outcome, deferred));
            }
            let batch = self
                .store
                .claim_dirty(
                    &self.worker,
                    self.section.batch_size,
                    self.section.claim_ttl,
                )
                .await?;
            outcome.invalid += batch.invalid.len() as u64;
            for body in &batch.invalid {
                tracing::warn!(body, "dropped a dirty entry that is not a valid key");
            }
            if batch.keys.is_empty() {
                return Ok((outcome, deferred));
            }
            let (committed, levels) = self
                .process(batch.keys, &mut scratch, &mut deferred)
                .await?;
            outcome += committed;
            outcome.batches += 1;
            outcome.fallback += levels;
        }
    }

    async fn process(
        &self,
        keys: Vec<anomaly_core::BaselineKey>,
        scratch: &mut StatsScratch,
        deferred: &mut Vec<anomaly_core::BaselineKey>,
    ) -> Result<(CommitOutcome, FallbackOutcome), StoreError> {
        let batch_started = Instant::now();
        let windows = self
            .store
            .read_windows_versioned(&keys, self.stats.window_size)
            .await?;
        let items = recompute_windows(
            scratch,
            &keys,
            windows,
            self.stats.mad_epsilon_ms,
            chrono::Utc::now().timestamp_millis(),
        );
        // Listed before the commit: if this fails, the batch stays claimed and is retried, so
        // every endpoint with a baseline is in the key listing.
        let listed = items
            .iter()
            .filter(|i| i.baseline.is_some())
            .map(|i| &i.key);
        self.store.index_endpoints(listed).await?;
        let committed = self
            .store
            .commit_baselines(&self.worker, &items, self.retention)
            .await?;
        self.metrics.batch_done(batch_started.elapsed(), committed);
        let levels = self.levels.refresh(&keys, scratch, deferred).await?;
        Ok((committed, levels))
    }

    /// Indexes every window found in Redis, marks every key that has a window dirty and drains
    /// until the dirty set is empty,
    /// reporting `(done, total)` as it goes. Safe beside live recomputers: they simply share
    /// the work. Recomputing a key lists its endpoint (see `process`), so this also fills
    /// `keyEndpoints` with the endpoints of data written before the listing existed.
    pub async fn rebuild(
        &self,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<DrainOutcome, StoreError> {
        let mut total = 0u64;
        for space in self.spaces() {
            // Windows that Redis holds but the index does not (data copied in from another
            // Redis, e.g. a standalone one imported into a cluster) are indexed first.
            space.store.index_windows().await?;
            let mut cursor = 0;
            loop {
                let (next, keys) = space.store.scan_keys(cursor, 1000).await?;
                total += keys.len() as u64;
                space.store.mark_dirty(&keys).await?;
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        progress(0, total);
        // Every endpoint's fallback levels too, whether or not they are due.
        let mut forced = self.clone();
        forced.levels.force = true;
        let mut outcome = DrainOutcome::default();
        loop {
            let step = forced.drain_once().await?;
            outcome += &step;
            let left = self.dirty_len().await?;
            progress(total.saturating_sub(left), total);
            if left == 0 && !step.budget_exhausted {
                return Ok(outcome);
            }
            if step.batches == 0 {
                // Others hold the remaining keys; give them a moment.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    /// Sweeps `keyIndex` of keys whose window expired, then `keyEndpoints` of endpoints none
    /// of whose windows exists; in both key spaces.
    pub async fn prune_once(&self) -> Result<Pruned, StoreError> {
        let mut pruned = Pruned::default();
        for space in self.spaces() {
            let p = space.prune_space().await?;
            pruned.keys += p.keys;
            pruned.endpoints += p.endpoints;
            pruned.repaired += p.repaired;
        }
        Ok(pruned)
    }

    async fn prune_space(&self) -> Result<Pruned, StoreError> {
        let mut cursor = 0;
        let mut pruned = Pruned::default();
        loop {
            let (next, keys) = self.store.scan_keys(cursor, 1000).await?;
            // On a Redis Cluster, also the keys whose samples were stored but never marked
            // dirty (an ingest cut between its steps; see anomaly-store's `ingest`).
            pruned.repaired += self.store.repair_dirty(&keys).await?;
            pruned.keys += self.store.prune_index(&keys).await?;
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        // 100 endpoints (4800 windows) a step: each step's script holds Redis for about a
        // millisecond.
        let mut after = None;
        loop {
            let step = self.store.prune_endpoints(after.as_ref(), 100).await?;
            pruned.endpoints += step.removed;
            after = step.next;
            if after.is_none() {
                return Ok(pruned);
            }
        }
    }

    /// Hands this worker's claimed keys back (graceful stop), in both key spaces.
    pub async fn release(&self) -> Result<u64, StoreError> {
        let mut released = 0;
        for space in self.spaces() {
            released += space.store.release_worker(&self.worker).await?;
        }
        Ok(released)
    }

    /// Keys awaiting recompute, in both key spaces.
    pub async fn dirty_len(&self) -> Result<u64, StoreError> {
        let mut len = 0;
        for space in self.spaces() {
            len += space.store.dirty_len().await?;
        }
        Ok(len)
    }

    async fn refresh_backlog(&self) {
        match self.dirty_len().await {
            Ok(n) => {
                self.metrics.backlog.set(n as i64);
            }
            Err(e) => tracing::debug!(error = %e, "cannot read the dirty backlog"),
        }
    }
}

/// Runs the recomputer loop and its probes until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = Store::connect(&config.common.redis)?;
    let mut builder = MetricsBuilder::new();
    let recompute_metrics = RecomputeMetrics::register(&mut builder);
    let metrics = builder.freeze();
    let worker = lifecycle::instance_id(Section::NAME);
    let recomputer = Recomputer::new(&config, store.clone(), recompute_metrics, worker);
    let router = http::finish(
        http::probes(store, metrics.clone(), Vec::new()),
        metrics.clone(),
    );
    tracing::info!(addr = %listener.local_addr()?, worker = recomputer.worker(), "recomputer listening");
    let section = config.service;
    let grace = section.limits.shutdown_grace;
    let overrides = config.common.compiled_overrides()?;
    let checked = recomputer.store().clone();
    tokio::spawn(async move {
        if let Err(e) = fallback::report_unmatched(&checked, &overrides).await {
            tracing::warn!(error = %e, "could not check the overrides against the stored keys");
        }
    });
    lifecycle::run(listener, router, grace, shutdown, |stop| async move {
        schedule(&recomputer, &section, &stop, &metrics.common).await;
    })
    .await?;
    Ok(())
}

/// The loop: drain, wait, repeat; back off while Redis is down; hand back claims on shutdown.
async fn schedule(
    recomputer: &Recomputer,
    section: &Section,
    stop: &CancellationToken,
    common: &anomaly_runtime::metrics::CommonMetrics,
) {
    let mut backoff = Duration::from_millis(500);
    let mut last_prune = Instant::now();
    let mut delay = Duration::ZERO;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
        let drained = tokio::select! {
            () = stop.cancelled() => break,
            r = recomputer.drain_once() => r,
        };
        delay = match drained {
            Ok(outcome) => {
                backoff = Duration::from_millis(500);
                common.redis_up.set(1);
                if outcome.recomputed + outcome.recovered + outcome.invalid > 0 {
                    tracing::info!(
                        recomputed = outcome.recomputed,
                        stale = outcome.stale,
                        cleared = outcome.cleared,
                        recovered = outcome.recovered,
                        batches = outcome.batches,
                        "drained dirty keys"
                    );
                }
                if outcome.budget_exhausted {
                    Duration::ZERO
                } else {
                    section.interval
                }
            }
            Err(e) => {
                recomputer.metrics.errors.inc();
                common.redis_error("drain");
                if e.is_unavailable() {
                    common.redis_up.set(0);
                }
                tracing::warn!(error = %e, retry_in = ?backoff, "drain failed");
                let wait = backoff;
                backoff = (backoff * 2).min(section.interval);
                wait
            }
        };
        recomputer.refresh_backlog().await;
        if last_prune.elapsed() >= section.prune_interval {
            last_prune = Instant::now();
            match recomputer.prune_once().await {
                Ok(p) if p != Pruned::default() => tracing::info!(
                    keys = p.keys,
                    endpoints = p.endpoints,
                    repaired = p.repaired,
                    "pruned expired keys and endpoints from the key index and the listing, and \
                     marked dirty again keys whose samples were not"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "pruning the key index failed"),
            }
        }
    }
    match recomputer.release().await {
        Ok(n) => tracing::info!(handed_back = n, "recomputer stopped"),
        Err(e) => {
            tracing::warn!(error = %e, "could not hand back claimed keys; they return after claim_ttl")
        }
    }
}

/// The baselines of `keys` from their versioned `windows` (in the same order), stamped
/// `now_ms`: what a drain commits. A window too small to summarize gives no baseline.
pub fn recompute_windows(
    scratch: &mut StatsScratch,
    keys: &[anomaly_core::BaselineKey],
    windows: Vec<anomaly_store::VersionedWindow>,
    mad_epsilon_ms: f64,
    now_ms: i64,
) -> Vec<Recomputed> {
    keys.iter()
        .zip(windows)
        .map(|(key, window)| {
            let summary = scratch.summarize([&window.samples[..]], mad_epsilon_ms);
            Recomputed {
                key: key.clone(),
                baseline: summary
                    .as_ref()
                    .map(|(s, _)| Baseline::from_stats(*s, now_ms)),
                quantiles: summary.map(|(_, q)| q),
                version: window.version,
            }
        })
        .collect()
}
