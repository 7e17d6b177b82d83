//! Fallback levels: for the thin buckets of an endpoint (fewer samples than the rule needs),
//! the statistics and quantiles of the union of the windows of wider levels, written into the
//! endpoint's `fb:` hash, which a check reads in the same round trip as the exact baseline.
//!
//! - `nearby`: the same day type within `stats.nearby_hours` hours either side;
//! - `dayType`: every hour of the same day type;
//! - `all`: every hour of both day types.
//!
//! They are real percentiles and MAD of the samples of the union (never averages of
//! percentiles). Computing them reads all 48 windows of the endpoint, so it is done at most
//! once per `recomputer.fallback_refresh` per endpoint (a lease in Redis, shared by all
//! recomputers). An endpoint whose levels are not due yet waits in `fbPending` until its
//! period is over, and every drain refreshes the endpoints that are due there: the samples
//! that arrived meanwhile reach its levels even if no other sample ever comes, and the dirty
//! set keeps meaning "baselines to recompute".

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anomaly_core::{
    Baseline, BaselineKey, DayType, Fallback, FallbackStep, Level, Overrides, StatsConfig,
    StatsScratch, Summary,
};
use anomaly_store::{FallbackLevels, Store, StoreError, fallback_field};

/// What one pass over a batch's endpoints did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FallbackOutcome {
    /// Endpoints whose levels were computed.
    pub endpoints: u64,
    /// Thin buckets of those endpoints (each with its `nearby` level, when it has samples).
    pub buckets: u64,
    /// Endpoints not due yet (left in `fbPending` for when they are).
    pub deferred: u64,
}

impl std::ops::AddAssign for FallbackOutcome {
    fn add_assign(&mut self, o: FallbackOutcome) {
        self.endpoints += o.endpoints;
        self.buckets += o.buckets;
        self.deferred += o.deferred;
    }
}

/// Computes and writes fallback levels.
#[derive(Debug, Clone)]
pub(crate) struct Levels {
    pub store: Store,
    pub stats: StatsConfig,
    pub overrides: Overrides,
    pub refresh: Duration,
    pub retention: Duration,
    pub worker: String,
    /// Compute every endpoint's levels, due or not (`recomputer rebuild`).
    pub force: bool,
}

const DAY_TYPES: [DayType; 2] = [DayType::Weekday, DayType::Weekend];

impl Levels {
    fn wants(&self, level: Level) -> bool {
        self.stats
            .fallback
            .iter()
            .any(|s: &FallbackStep| s.level == level)
    }

    /// Refreshes the levels of the endpoints of `keys` that are due, and adds one key of each
    /// endpoint not due yet to `deferred`, for the caller to put in `fbPending` once its drain
    /// is over.
    pub(crate) async fn refresh(
        &self,
        keys: &[BaselineKey],
        scratch: &mut StatsScratch,
        deferred: &mut Vec<BaselineKey>,
    ) -> Result<FallbackOutcome, StoreError> {
        let mut outcome = FallbackOutcome::default();
        if self.stats.fallback.is_empty() {
            return Ok(outcome);
        }
        let mut seen = HashSet::new();
        let endpoints: Vec<BaselineKey> = keys
            .iter()
            .filter(|k| seen.insert(k.endpoint_body()))
            .cloned()
            .collect();
        let leases = self
            .store
            .take_fallback_leases(&endpoints, &self.worker, self.refresh, self.force)
            .await?;
        let (won, lost): (Vec<_>, Vec<_>) =
            endpoints.into_iter().zip(leases).partition(|(_, l)| *l);
        for (key, _) in lost {
            deferred.push(key);
            outcome.deferred += 1;
        }
        let won: Vec<BaselineKey> = won.into_iter().map(|(k, _)| k).collect();
        // Every bucket of every endpoint, but only the windows with samples are read.
        let all_keys: Vec<BaselineKey> = won
            .iter()
            .flat_map(|key| {
                DAY_TYPES
                    .iter()
                    .flat_map(move |&d| (0..24).map(move |h| key.at(h, d)))
            })
            .collect();
        let mut lengths = self.store.window_lengths(&all_keys).await?;
        // An endpoint without a thin bucket needs no level (every check of it is judged on its
        // own bucket): its windows are not read, and its levels are cleared.
        // The samples a bucket of each endpoint needs; `None` when none is thin.
        let mut needed = Vec::with_capacity(won.len());
        for (key, lens) in won.iter().zip(lengths.chunks_mut(48)) {
            let over = self.overrides.find(key.service(), key.endpoint());
            let min = u64::from(self.stats.rule(over.map(|a| a.over)).min_samples);
            let thin = lens.iter().any(|&n| n < min);
            if !thin {
                lens.fill(0);
            }
            needed.push(thin.then_some(min));
        }
        let present: Vec<BaselineKey> = all_keys
            .iter()
            .zip(&lengths)
            .filter(|(_, n)| **n > 0)
            .map(|(k, _)| k.clone())
            .collect();
        let mut read = self
            .store
            .read_windows_versioned(&present, self.stats.window_size)
            .await?
            .into_iter();
        let windows: Vec<Vec<f64>> = lengths
            .iter()
            .map(|&n| {
                if n > 0 {
                    read.next().map(|w| w.samples).unwrap_or_default()
                } else {
                    Vec::new()
                }
            })
            .collect();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut items = Vec::with_capacity(won.len());
        for ((key, needed), endpoint) in won.iter().zip(needed).zip(windows.chunks(48)) {
            let (item, thin) = if let Some(min) = needed {
                self.compute(key, endpoint, min, now_ms, scratch)
            } else {
                let item = FallbackLevels {
                    key: key.clone(),
                    levels: Vec::new(),
                };
                (item, 0)
            };
            outcome.buckets += thin;
            outcome.endpoints += 1;
            items.push(item);
        }
        self.store
            .write_fallbacks(&items, now_ms, self.retention)
            .await?;
        // Whatever waited for these endpoints is now in their levels.
        self.store.fallbacks_done(&won).await?;
        Ok(outcome)
    }

    /// Refreshes up to 100 deferred endpoints whose period is over; one another recomputer
    /// is refreshing right now stays pending for the next drain.
    pub(crate) async fn refresh_due(
        &self,
        scratch: &mut StatsScratch,
    ) -> Result<FallbackOutcome, StoreError> {
        let mut outcome = FallbackOutcome::default();
        if self.stats.fallback.is_empty() {
            return Ok(outcome);
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        let due = self.store.due_fallbacks(now_ms, 100).await?;
        let mut deferred = Vec::new();
        outcome += self.refresh(&due, scratch, &mut deferred).await?;
        Ok(outcome)
    }

    /// Puts `deferred` endpoints in `fbPending`, due when their period is over.
    pub(crate) async fn defer(&self, deferred: &[BaselineKey]) -> Result<(), StoreError> {
        let refresh = i64::try_from(self.refresh.as_millis()).unwrap_or(i64::MAX);
        let due = chrono::Utc::now()
            .timestamp_millis()
            .saturating_add(refresh);
        self.store.defer_fallbacks(deferred, due).await
    }

    /// The levels of one endpoint from its 48 windows (weekday hours 0-23, then weekend):
    /// `dayType` and `all` once, and `nearby` for each bucket with fewer than `min` samples;
    /// with how many such thin buckets it has.
    fn compute(
        &self,
        key: &BaselineKey,
        windows: &[Vec<f64>],
        min: u64,
        now_ms: i64,
        scratch: &mut StatsScratch,
    ) -> (FallbackLevels, u64) {
        let window = |d: usize, h: u8| &windows[d * 24 + usize::from(h % 24)][..];
        let eps = self.stats.mad_epsilon_ms;
        // A level's statistics depend only on which windows have samples: in a sparse endpoint
        // many thin buckets see the same ones (the nearby buckets of its only busy hour, or a
        // day type and `all` when the other day type is empty). Each distinct set (a bit per
        // window) is summarized once.
        let mut memo: HashMap<u64, Option<Summary>> = HashMap::new();
        let mut level = |indexes: &mut dyn Iterator<Item = usize>, first: u8, last: u8| {
            let mask = indexes
                .filter(|&i| !windows[i].is_empty())
                .fold(0u64, |m, i| m | (1 << i));
            let summary = memo.entry(mask).or_insert_with(|| {
                let parts = (0..48)
                    .filter(|i| mask & (1 << i) != 0)
                    .map(|i| windows[i].as_slice());
                scratch
                    .summarize(parts, eps)
                    .map(|(stats, quantiles)| Summary {
                        baseline: Baseline::from_stats(stats, now_ms),
                        quantiles: Some(quantiles),
                    })
            });
            summary.clone().map(|summary| Fallback {
                summary,
                first_hour: first,
                last_hour: last,
            })
        };
        let mut levels = Vec::new();
        let mut thin = 0;
        let n = usize::from(self.stats.nearby_hours);
        for (d, &day_type) in DAY_TYPES.iter().enumerate() {
            if self.wants(Level::DayType)
                && let Some(f) = level(&mut (d * 24..d * 24 + 24), 0, 23)
            {
                levels.push((fallback_field(Level::DayType, day_type, 0), f));
            }
            for h in 0..24u8 {
                if window(d, h).len() as u64 >= min {
                    continue;
                }
                thin += 1;
                if self.wants(Level::Nearby) {
                    let mut hours =
                        (0..=2 * n).map(|i| d * 24 + (usize::from(h) + 24 - n + i) % 24);
                    let (first, last) = ((usize::from(h) + 24 - n) % 24, (usize::from(h) + n) % 24);
                    if let Some(f) = level(&mut hours, first as u8, last as u8) {
                        levels.push((fallback_field(Level::Nearby, day_type, h), f));
                    }
                }
            }
        }
        if self.wants(Level::All)
            && let Some(f) = level(&mut (0..48), 0, 23)
        {
            levels.push((fallback_field(Level::All, DayType::Weekday, 0), f));
        }
        let item = FallbackLevels {
            key: key.clone(),
            levels,
        };
        (item, thin)
    }
}

/// Logs each entry of `overrides` that matches no stored key (a typo in a pattern, or a
/// service that has not sent traces yet): one pass over `keyIndex` at start-up. Returns the
/// indexes of the entries that matched nothing.
pub async fn report_unmatched(
    store: &Store,
    overrides: &Overrides,
) -> Result<Vec<usize>, StoreError> {
    if overrides.is_empty() {
        return Ok(Vec::new());
    }
    let mut matched = vec![false; overrides.len()];
    let mut cursor = 0;
    loop {
        let (next, keys) = store.scan_keys(cursor, 1000).await?;
        for key in &keys {
            for (i, hit) in matched.iter_mut().enumerate() {
                *hit = *hit || overrides.matches(i, key.service(), key.endpoint());
            }
        }
        cursor = next;
        if cursor == 0 || matched.iter().all(|&m| m) {
            break;
        }
    }
    let unmatched: Vec<usize> = (0..matched.len()).filter(|&i| !matched[i]).collect();
    for (i, over) in overrides.entries().enumerate() {
        if unmatched.contains(&i) {
            tracing::warn!(
                index = i,
                service = over.service.as_deref().unwrap_or("*"),
                endpoint = over.endpoint.as_deref().unwrap_or("*"),
                "overrides[{i}] matches no stored service and endpoint yet; check its patterns"
            );
        }
    }
    Ok(unmatched)
}
