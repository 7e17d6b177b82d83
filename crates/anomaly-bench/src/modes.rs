//! What a Redis Cluster costs against a standalone Redis (issue 18): the same store operations,
//! with the same parameters, against a standalone `redis-server` and a three-primary cluster
//! started in this process, alternating, so the noise of this machine shows between rounds.
//!
//! Four figures per mode: ingest throughput (`Store::ingest`), the store side of a recompute
//! drain (claim, versioned read, summarize, commit), single-key baseline lookups against a
//! `PING` through the same store, and Redis `used_memory` per full key.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anomaly_core::{BaselineKey, DurationMs, StatsConfig, StatsScratch, TraceId};
use anomaly_store::{ClusterConfig, IngestItem, IngestSettings, RedisConfig, RedisMode, Store};
use anomaly_testkit::{RedisCluster, RedisServer};

use crate::key;
use crate::recompute::window;

/// What one run measures.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Modes {
    /// Keys the ingest spreads over, and full keys seeded for recompute, lookups and memory.
    pub(crate) keys: u32,
    /// Samples in each seeded window (and the ingest's window size).
    pub(crate) samples: u32,
    /// Length of each timed load (ingest, lookups, pings).
    pub(crate) seconds: u64,
    /// Rounds of standalone-then-cluster.
    pub(crate) rounds: u32,
}

/// Traces in each ingest batch.
const INGEST_BATCH: usize = 500;
/// Ingest batches in flight.
const INGEST_TASKS: usize = 8;
/// Keys claimed per recompute batch (the recomputer's default `batch_size`).
const CLAIM_BATCH: usize = 500;
/// Recompute batches in flight (the recomputer's default `concurrency`).
const DRAIN_LANES: usize = 4;
/// Concurrent single-key lookups (and pings).
const LOOKUP_TASKS: usize = 64;
/// The recomputer's worker name in the drain.
const WORKER: &str = "bench-modes";

/// A Redis this bench owns, either kind.
enum Target {
    Standalone(RedisServer),
    Cluster(RedisCluster),
}

impl Target {
    fn mode(&self) -> RedisMode {
        match self {
            Target::Standalone(_) => RedisMode::Standalone,
            Target::Cluster(_) => RedisMode::Cluster,
        }
    }

    fn config(&self) -> RedisConfig {
        let mut config = RedisConfig {
            mode: self.mode(),
            key_prefix: "modes:".into(),
            // Generous: the point is throughput under load, not a timeout on a busy machine.
            timeout: Duration::from_secs(30),
            ..RedisConfig::default()
        };
        match self {
            Target::Standalone(server) => config.url = server.url(),
            Target::Cluster(cluster) => {
                config.cluster = ClusterConfig {
                    urls: cluster.seed_urls(),
                }
            }
        }
        config
    }

    /// `used_memory` of the server, or summed over the cluster's primaries (replicas hold
    /// copies and are left out, as a standalone server has none here).
    fn used_memory(&self) -> anyhow::Result<u64> {
        let infos = match self {
            Target::Standalone(server) => vec![server.command(&["INFO", "memory"])],
            Target::Cluster(cluster) => cluster
                .primaries()
                .into_iter()
                .map(|p| cluster.command(p, &["INFO", "memory"]))
                .collect(),
        };
        infos.iter().map(|info| used_memory(info)).sum()
    }

    /// Empties every primary (replicas follow), so each phase starts from the same state.
    fn flush(&self) {
        match self {
            Target::Standalone(server) => {
                server.command(&["FLUSHALL", "SYNC"]);
            }
            Target::Cluster(cluster) => {
                for p in cluster.primaries() {
                    cluster.command(p, &["FLUSHALL", "SYNC"]);
                }
            }
        }
    }
}

fn used_memory(info: &str) -> anyhow::Result<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .ok_or_else(|| anyhow::anyhow!("INFO memory has no used_memory: {info:.200}"))?
        .trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("used_memory: {e}"))
}

/// One mode's figures in one round.
#[derive(Debug, Clone, Copy)]
struct Figures {
    ingest_roots_per_s: f64,
    drain_keys_per_s: f64,
    lookups_per_s: f64,
    pings_per_s: f64,
    window_bytes_per_key: f64,
    full_bytes_per_key: f64,
}

pub(crate) async fn run(m: &Modes) -> anyhow::Result<String> {
    anyhow::ensure!(m.keys > 0 && m.samples > 0, "keys and samples must be > 0");
    eprintln!("starting a standalone redis-server and a 3-primary cluster");
    let standalone = Target::Standalone(RedisServer::start_ephemeral());
    let cluster = Target::Cluster(tokio::task::spawn_blocking(RedisCluster::start).await?);
    let keys: Arc<Vec<BaselineKey>> = Arc::new((0..m.keys).map(key).collect());
    let mut rounds = Vec::new();
    for round in 1..=m.rounds {
        let mut pair = Vec::new();
        for target in [&standalone, &cluster] {
            eprintln!("round {round}: {}", target.mode().as_str());
            pair.push(measure(target, m, &keys).await?);
        }
        rounds.push((pair[0], pair[1]));
    }
    Ok(table(m, &rounds))
}

async fn measure(
    target: &Target,
    m: &Modes,
    keys: &Arc<Vec<BaselineKey>>,
) -> anyhow::Result<Figures> {
    let store = Store::connect(&target.config())?;
    store.ping().await?;

    target.flush();
    let ingest_roots_per_s = ingest(&store, m, keys).await?;

    // Memory is measured from an empty Redis: the ingest's dedup markers would count otherwise.
    target.flush();
    let before = target.used_memory()?;
    for (c, chunk) in keys.chunks(200).enumerate() {
        let windows: Vec<_> = chunk
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), window((c * 200 + i) as u32, m.samples)))
            .collect();
        // `replace_windows` marks every key dirty, which is what the drain claims.
        store.replace_windows(&windows, Duration::ZERO).await?;
    }
    let seeded = target.used_memory()?;

    let drain_keys_per_s = drain(&store, m).await?;
    let full = target.used_memory()?;

    let lookups_per_s = lookups(&store, m, keys, true).await?;
    let pings_per_s = lookups(&store, m, keys, false).await?;
    let n = f64::from(m.keys);
    Ok(Figures {
        ingest_roots_per_s,
        drain_keys_per_s,
        lookups_per_s,
        pings_per_s,
        window_bytes_per_key: seeded.saturating_sub(before) as f64 / n,
        full_bytes_per_key: full.saturating_sub(before) as f64 / n,
    })
}

/// Roots a second through `Store::ingest`: batches of unique traces spread over the keys,
/// [`INGEST_TASKS`] batches in flight.
async fn ingest(store: &Store, m: &Modes, keys: &Arc<Vec<BaselineKey>>) -> anyhow::Result<f64> {
    let settings = IngestSettings {
        window_size: m.samples,
        dedup_ttl: Duration::from_secs(6 * 3600),
        retention: Duration::ZERO,
        max_keys: 0,
    };
    let next_trace = Arc::new(AtomicU64::new(1));
    let deadline = Instant::now() + Duration::from_secs(m.seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..INGEST_TASKS)
        .map(|_| {
            let (store, keys, next_trace) = (store.clone(), keys.clone(), next_trace.clone());
            tokio::spawn(async move {
                let mut accepted = 0u64;
                let start_ms = chrono::Utc::now().timestamp_millis();
                while Instant::now() < deadline {
                    let first = next_trace.fetch_add(INGEST_BATCH as u64, Ordering::Relaxed);
                    let items: Vec<IngestItem> = (first..first + INGEST_BATCH as u64)
                        .map(|t| {
                            // A multiplicative hash spreads consecutive traces over the keys.
                            let k = (t.wrapping_mul(0x9E37_79B9) % keys.len() as u64) as usize;
                            IngestItem {
                                trace_id: TraceId::parse(&format!("{t:032x}")).expect("hex"),
                                key: keys[k].clone(),
                                duration: DurationMs::new(20.0 + (t % 800) as f64 / 10.0)
                                    .expect("finite"),
                                start_ms,
                            }
                        })
                        .collect();
                    let outcome = store.ingest(&items, &settings).await?;
                    anyhow::ensure!(
                        outcome.accepted == INGEST_BATCH as u64,
                        "a batch of unique traces accepted only {} of {INGEST_BATCH}: {outcome:?}",
                        outcome.accepted
                    );
                    accepted += outcome.accepted;
                }
                anyhow::Ok(accepted)
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// Keys a second through the store side of a recompute drain, [`DRAIN_LANES`] lanes of
/// claim, versioned read, summarize (the recomputer's `StatsScratch::summarize`) and commit.
async fn drain(store: &Store, m: &Modes) -> anyhow::Result<f64> {
    let eps = StatsConfig::default().mad_epsilon_ms;
    let window_size = m.samples;
    let started = Instant::now();
    let lanes: Vec<_> = (0..DRAIN_LANES)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut scratch = StatsScratch::default();
                let mut written = 0u64;
                loop {
                    let batch = store
                        .claim_dirty(WORKER, CLAIM_BATCH, Duration::from_secs(60))
                        .await?;
                    if batch.keys.is_empty() {
                        return anyhow::Ok(written);
                    }
                    let windows = store
                        .read_windows_versioned(&batch.keys, window_size)
                        .await?;
                    let items = recomputer::recompute_windows(
                        &mut scratch,
                        &batch.keys,
                        windows,
                        eps,
                        chrono::Utc::now().timestamp_millis(),
                    );
                    written += store
                        .commit_baselines(WORKER, &items, Duration::ZERO)
                        .await?
                        .written;
                }
            })
        })
        .collect();
    let mut written = 0;
    for lane in lanes {
        written += lane.await??;
    }
    let elapsed = started.elapsed();
    anyhow::ensure!(
        written == u64::from(m.keys),
        "the drain wrote {written} baselines for {} keys",
        m.keys
    );
    Ok(written as f64 / elapsed.as_secs_f64())
}

/// Single-key `Store::baselines` lookups a second (or `Store::ping`s when `lookup` is false),
/// [`LOOKUP_TASKS`] at a time.
async fn lookups(
    store: &Store,
    m: &Modes,
    keys: &Arc<Vec<BaselineKey>>,
    lookup: bool,
) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(m.seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..LOOKUP_TASKS)
        .map(|t| {
            let (store, keys) = (store.clone(), keys.clone());
            tokio::spawn(async move {
                let mut done = 0u64;
                let mut i = t * 7919;
                while Instant::now() < deadline {
                    if lookup {
                        let key = &keys[i % keys.len()];
                        let found = store.baselines(std::slice::from_ref(key)).await?;
                        anyhow::ensure!(
                            matches!(found.as_slice(), [Some(_)]),
                            "no baseline for {key:?} after the drain"
                        );
                    } else {
                        store.ping().await?;
                    }
                    done += 1;
                    i += 1;
                }
                anyhow::Ok(done)
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

fn table(m: &Modes, rounds: &[(Figures, Figures)]) -> String {
    type Metric = (&'static str, fn(&Figures) -> f64, &'static str);
    let metrics: [Metric; 7] = [
        (
            "ingest (8 x 500-trace batches in flight)",
            |f| f.ingest_roots_per_s,
            "roots/s",
        ),
        (
            "recompute drain: claim, read, summarize, commit (4 lanes x 500)",
            |f| f.drain_keys_per_s,
            "keys/s",
        ),
        (
            "single-key baselines() lookups (64 tasks, no cache)",
            |f| f.lookups_per_s,
            "/s",
        ),
        ("ping() (64 tasks), reference", |f| f.pings_per_s, "/s"),
        ("lookups / pings", |f| f.lookups_per_s / f.pings_per_s, ""),
        (
            "used_memory per key, windows only",
            |f| f.window_bytes_per_key,
            "bytes",
        ),
        (
            "used_memory per key, windows + baselines",
            |f| f.full_bytes_per_key,
            "bytes",
        ),
    ];
    let mut out = format!(
        "{} keys x {} samples, {} s loads; cluster = 3 primaries + 3 replicas (memory summed over \
         primaries), standalone = 1 server without replica\n\n\
         | metric | round | standalone | cluster | cluster/standalone |\n|---|---|---|---|---|\n",
        m.keys, m.samples, m.seconds
    );
    for (name, get, unit) in metrics {
        for (r, (s, c)) in rounds.iter().enumerate() {
            let (s, c) = (get(s), get(c));
            let fmt = |v: f64| {
                if unit.is_empty() {
                    format!("{v:.2}")
                } else {
                    format!("{v:.0} {unit}")
                }
            };
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {:.2} |",
                r + 1,
                fmt(s),
                fmt(c),
                c / s
            );
        }
    }
    out
}
