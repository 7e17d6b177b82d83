//! Faults under load, each on a deployment of the test's own: a cluster primary killed, a
//! sentinel primary killed, and slots resharded while batches are ingested and baselines read.
//!
//! Every trace's duration is its own number in milliseconds, so a window read back says exactly
//! which traces it holds: nothing acknowledged may be missing, and nothing may be there twice.
//! The load retries a failed batch until it is acknowledged, as the ingester's clients do, so
//! every batch it started ends acknowledged.
//!
//! The deployments' own methods block (they poll with thread sleeps); the tests run on a
//! multi-threaded runtime, whose `block_on` thread is not one of its workers, so the load keeps
//! running on the workers while the test body waits for a failover.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anomaly_core::BaselineKey;
use anomaly_store::{
    ClusterConfig, IngestItem, IngestSettings, RedisConfig, RedisMode, SentinelConfig, Store,
};
use anomaly_testkit::{RedisCluster, RedisSentinels, poll, unique_prefix};
use tokio::task::JoinHandle;

use crate::{item, key, settings};

/// Traces per key in each batch.
const PER_KEY: usize = 3;
/// Pause between batches.
const PACE: Duration = Duration::from_millis(5);
/// Pause before a failed batch is sent again.
const RETRY_AFTER: Duration = Duration::from_millis(50);
/// A batch not acknowledged this long after its first attempt fails the test.
const BATCH_DEADLINE: Duration = Duration::from_secs(30);
/// `redis.timeout` of every store here.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Windows far larger than any test fills, so that none is trimmed and a window's length is
/// the number of traces it took.
fn fault_settings() -> IngestSettings {
    IngestSettings {
        window_size: 100_000,
        ..settings()
    }
}

/// Trace `n`, taking `n` ms: stored as whole microseconds, it reads back exactly.
fn numbered(n: u64, key: &BaselineKey) -> IngestItem {
    item(u128::from(n), key, n as f64)
}

fn cluster_store(cluster: &RedisCluster, test: &str, min_replicas_ack: u32) -> Store {
    Store::connect(&RedisConfig {
        mode: RedisMode::Cluster,
        cluster: ClusterConfig {
            urls: cluster.seed_urls(),
        },
        key_prefix: unique_prefix(test),
        timeout: TIMEOUT,
        min_replicas_ack,
        min_replicas_ack_timeout: Duration::from_secs(1),
        ..RedisConfig::default()
    })
    .expect("cluster store")
}

/// An acknowledged batch: when its successful attempt started and ended, and its traces.
struct Acked {
    started: Instant,
    at: Instant,
    items: Vec<IngestItem>,
}

/// A failed operation: it failed at `ended`, and may have met the fault at any time since
/// `started`.
#[derive(Debug)]
struct Failure {
    op: &'static str,
    started: Instant,
    ended: Instant,
    error: String,
}

/// What the load saw.
#[derive(Default)]
struct Log {
    acked: Vec<Acked>,
    /// Every read (`baselines` or `ping`): when it started, and whether it succeeded.
    reads: Vec<(Instant, bool)>,
    /// Failed attempts, ingests and reads, in the order they failed.
    failures: Vec<Failure>,
}

impl Log {
    /// The acknowledged trace numbers of each key.
    fn acked_by_key(&self, filter: impl Fn(&Acked) -> bool) -> HashMap<BaselineKey, Vec<u64>> {
        let mut by_key: HashMap<BaselineKey, Vec<u64>> = HashMap::new();
        for batch in self.acked.iter().filter(|b| filter(b)) {
            for item in &batch.items {
                by_key
                    .entry(item.key.clone())
                    .or_default()
                    .push(item.duration.get() as u64);
            }
        }
        by_key
    }

    /// The failures by operation and kind (their text up to the first digit, which is where
    /// addresses, slots and durations start), for the report.
    fn summary(&self) -> String {
        let mut kinds: BTreeMap<(&str, String), usize> = BTreeMap::new();
        for f in &self.failures {
            let kind: String = f
                .error
                .chars()
                .take_while(|c| !c.is_ascii_digit())
                .collect();
            *kinds.entry((f.op, kind.trim().to_owned())).or_default() += 1;
        }
        let count = |op| self.failures.iter().filter(|f| f.op == op).count();
        format!(
            "{} batches acknowledged, {} failed ingest attempts, {} reads, {} failed; {kinds:?}",
            self.acked.len(),
            count("ingest"),
            self.reads.len(),
            count("read")
        )
    }

    /// When the failures began and ended, relative to `fault`.
    fn failure_span(&self, fault: Instant) -> Option<(Duration, Duration)> {
        let first = self.failures.iter().map(|f| f.ended).min()?;
        let last = self.failures.iter().map(|f| f.ended).max()?;
        Some((
            first.saturating_duration_since(fault),
            last.saturating_duration_since(fault),
        ))
    }

    /// Asserts that every failure overlapped the fault: none failed before `fault` began, and
    /// none started after `healed`.
    fn assert_failures_within(&self, fault: Instant, healed: Instant) {
        let outside: Vec<&Failure> = self
            .failures
            .iter()
            .filter(|f| f.ended < fault || f.started > healed)
            .collect();
        assert!(
            outside.is_empty(),
            "failures outside the fault ({:?} long): {outside:#?}",
            healed - fault
        );
    }
}

/// A writer that ingests batches of new traces over `keys` until stopped, sending each again
/// until it is acknowledged, and a reader that alternates `baselines` and `ping`.
struct Load {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Log>>,
    writer: JoinHandle<()>,
    reader: JoinHandle<()>,
}

impl Load {
    fn start(store: &Store, keys: &[BaselineKey]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Log::default()));
        let writer = {
            let (store, keys, stop, log) =
                (store.clone(), keys.to_vec(), stop.clone(), log.clone());
            tokio::spawn(async move {
                let settings = fault_settings();
                let mut next = 1u64;
                // Checked between batches only: a batch once started is sent until acknowledged.
                while !stop.load(Ordering::Relaxed) {
                    let mut items = Vec::with_capacity(keys.len() * PER_KEY);
                    for key in &keys {
                        for _ in 0..PER_KEY {
                            items.push(numbered(next, key));
                            next += 1;
                        }
                    }
                    let first = Instant::now();
                    loop {
                        let started = Instant::now();
                        match store.ingest(&items, &settings).await {
                            Ok(out) => {
                                assert_eq!(
                                    out.accepted + out.duplicates,
                                    items.len() as u64,
                                    "every trace of a batch is handled: {out:?}"
                                );
                                let at = Instant::now();
                                log.lock().unwrap().acked.push(Acked { started, at, items });
                                break;
                            }
                            Err(e) => {
                                log.lock().unwrap().failures.push(Failure {
                                    op: "ingest",
                                    started,
                                    ended: Instant::now(),
                                    error: e.to_string(),
                                });
                                assert!(
                                    first.elapsed() < BATCH_DEADLINE,
                                    "a batch was not acknowledged within {BATCH_DEADLINE:?}; last error: {e}"
                                );
                                tokio::time::sleep(RETRY_AFTER).await;
                            }
                        }
                    }
                    // A steady load rather than a flood: the machine is shared.
                    tokio::time::sleep(PACE).await;
                }
            })
        };
        let reader = {
            let (store, keys, stop, log) =
                (store.clone(), keys.to_vec(), stop.clone(), log.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let result = if n.is_multiple_of(2) {
                        store.baselines(&keys).await.map(drop)
                    } else {
                        store.ping().await
                    };
                    n += 1;
                    {
                        let mut log = log.lock().unwrap();
                        log.reads.push((started, result.is_ok()));
                        if let Err(e) = result {
                            log.failures.push(Failure {
                                op: "read",
                                started,
                                ended: Instant::now(),
                                error: e.to_string(),
                            });
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        Load {
            stop,
            log,
            writer,
            reader,
        }
    }

    fn acked(&self) -> usize {
        self.log.lock().unwrap().acked.len()
    }

    /// Waits until `n` batches are acknowledged and `n` reads that started after `since`
    /// succeeded; false after `timeout`.
    async fn wait_progress(&self, n: usize, since: Instant, timeout: Duration) -> bool {
        anomaly_testkit::eventually(timeout, || async {
            let log = self.log.lock().unwrap();
            let acked = log.acked.iter().filter(|b| b.started >= since).count();
            let reads = log
                .reads
                .iter()
                .filter(|&&(at, ok)| at >= since && ok)
                .count();
            acked >= n && reads >= n
        })
        .await
    }

    /// The first batch acknowledged whose successful attempt started at or after `since`.
    fn first_acked_since(&self, since: Instant) -> Option<Instant> {
        let log = self.log.lock().unwrap();
        log.acked.iter().find(|b| b.started >= since).map(|b| b.at)
    }

    /// Stops both tasks (the writer after its batch in flight is acknowledged) and returns
    /// what they saw; a task's panic fails the test here.
    async fn finish(self) -> Log {
        self.stop.store(true, Ordering::Relaxed);
        self.writer.await.expect("the writer");
        self.reader.await.expect("the reader");
        Arc::try_unwrap(self.log)
            .ok()
            .expect("both tasks are done")
            .into_inner()
            .unwrap()
    }
}

/// The trace numbers in each key's window, sorted.
async fn windows(store: &Store, keys: &[BaselineKey]) -> HashMap<BaselineKey, Vec<u64>> {
    let mut out = HashMap::new();
    for key in keys {
        let mut window: Vec<u64> = store
            .read_window(key)
            .await
            .expect("read a window")
            .iter()
            .map(|&ms| ms.round() as u64)
            .collect();
        window.sort_unstable();
        out.insert(key.clone(), window);
    }
    out
}

/// Asserts that each key's window holds exactly the traces acknowledged for it, each once.
fn assert_exactly_acked(
    windows: &HashMap<BaselineKey, Vec<u64>>,
    acked: &HashMap<BaselineKey, Vec<u64>>,
) {
    for (key, window) in windows {
        let mut want = acked.get(key).cloned().unwrap_or_default();
        want.sort_unstable();
        assert!(!want.is_empty(), "no trace of {key:?} was acknowledged");
        let missing: Vec<u64> = want
            .iter()
            .filter(|n| window.binary_search(n).is_err())
            .copied()
            .collect();
        let mut twice = window.clone();
        twice.dedup();
        let doubled = window.len() - twice.len();
        assert!(
            missing.is_empty() && doubled == 0 && window.len() == want.len(),
            "{key:?}: {} acknowledged, window of {}; lost {missing:?}, {doubled} counted twice",
            want.len(),
            window.len()
        );
    }
}

/// Sends every acknowledged batch again: each trace must count as a duplicate.
async fn assert_resend_is_all_duplicates(store: &Store, log: &Log) {
    let items: Vec<IngestItem> = log
        .acked
        .iter()
        .flat_map(|b| b.items.iter().cloned())
        .collect();
    let out = store
        .ingest(&items, &fault_settings())
        .await
        .expect("re-send every acknowledged batch");
    assert_eq!(
        (out.accepted, out.duplicates),
        (0, items.len() as u64),
        "a re-send of {} acknowledged traces",
        items.len()
    );
}

/// Keys of one service over several hours: their windows spread over the slots.
fn spread_keys(service: &str) -> Vec<BaselineKey> {
    (0..6).map(|hour| key(service, hour)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_primary_killed_under_load_loses_no_acknowledged_trace() {
    let began = Instant::now();
    let mut cluster = RedisCluster::start();
    let started = began.elapsed();
    let store = cluster_store(&cluster, "failover-kill", 1);
    let keys = spread_keys("kill");
    let slot = cluster.slot_of(&store.keys().dur(&keys[0].encode()));
    let victim = cluster.primary_of_slot(slot);
    let heir = cluster.replicas_of(victim)[0];

    let load = Load::start(&store, &keys);
    assert!(
        load.wait_progress(5, began, Duration::from_secs(15)).await,
        "no load before the kill: {}",
        load.log.lock().unwrap().summary()
    );
    let before_kill = load.acked();
    let kill_sent = Instant::now();
    cluster.kill(victim);
    let killed = Instant::now();
    // With one replica per primary, `WAIT 1` names the one node that can be promoted: every
    // acknowledged write is on it.
    let promoted = poll(Duration::from_secs(20), || {
        cluster.primaries().contains(&heir)
    });
    assert!(promoted, "{heir} was not promoted: {:?}", cluster.health());
    let promoted_at = Instant::now();
    // The heir has no replica until the old primary rejoins as one: until then `WAIT 1` on it
    // fails and the batches touching its slots are refused (NotReplicated), as they must be.
    cluster.restart(victim);
    assert!(
        cluster.wait_ok(Duration::from_secs(20)),
        "{:?}",
        cluster.health()
    );
    let healed = Instant::now();
    assert_eq!(cluster.replicas_of(heir), vec![victim]);
    assert!(
        load.wait_progress(10, healed, Duration::from_secs(15))
            .await,
        "the store did not answer again after the cluster healed: {}",
        load.log.lock().unwrap().summary()
    );
    let first_after_kill = load.first_acked_since(killed).expect("acknowledged after");
    let log = load.finish().await;

    eprintln!(
        "cluster kill: start {started:?}; failover (kill to promotion) {:?}; rejoin {:?}; \
         ingest unavailable (kill to first acknowledged batch) {:?}; {before_kill} batches \
         before the kill; {}",
        promoted_at - killed,
        healed - promoted_at,
        first_after_kill - killed,
        log.summary()
    );
    assert!(
        log.failures.iter().any(|f| f.op == "ingest"),
        "killing the primary of slot {slot} failed no ingest: the fault was not felt"
    );
    // Every failure is "unavailable" (a 503 to callers, the connection replaced) or "not
    // replicated" (a 503 NOT_REPLICATED, while the heir has no replica), never a command error
    // (a 500).
    let hard: Vec<&Failure> = log
        .failures
        .iter()
        .filter(|f| {
            !f.error.starts_with("redis unavailable")
                && !f
                    .error
                    .contains("replicas required (redis.min_replicas_ack)")
        })
        .collect();
    assert!(
        hard.is_empty(),
        "failures not classed as unavailable: {hard:?}"
    );
    if let Some((first, last)) = log.failure_span(kill_sent) {
        eprintln!("cluster kill: failures from {first:?} to {last:?} after the kill");
    }
    // An operation in flight at the kill may fail; none that ended before it, and none that
    // started once the cluster was whole again.
    log.assert_failures_within(kill_sent, healed);

    assert_exactly_acked(&windows(&store, &keys).await, &log.acked_by_key(|_| true));
    assert_resend_is_all_duplicates(&store, &log).await;
    let total = began.elapsed();
    eprintln!("cluster kill: whole test {total:?}");
    assert!(total < Duration::from_secs(60), "took {total:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_master_killed_under_load_is_followed_without_restart() {
    let began = Instant::now();
    let mut sentinels = RedisSentinels::start();
    let started = began.elapsed();
    let store = Store::connect(&RedisConfig {
        mode: RedisMode::Sentinel,
        sentinel: SentinelConfig {
            master_name: sentinels.master_name().to_owned(),
            urls: sentinels.sentinel_urls(),
            ..SentinelConfig::default()
        },
        key_prefix: unique_prefix("failover-sentinel"),
        timeout: TIMEOUT,
        ..RedisConfig::default()
    })
    .expect("sentinel store");
    let keys = spread_keys("sentinel");

    let load = Load::start(&store, &keys);
    assert!(
        load.wait_progress(5, began, Duration::from_secs(15)).await,
        "no load before the kill: {}",
        load.log.lock().unwrap().summary()
    );
    let kill_sent = Instant::now();
    let old = sentinels.kill_master();
    // Once the old primary is dead, an attempt that starts can only reach the new one.
    let killed = Instant::now();
    let new = sentinels
        .wait_failover(old, Duration::from_secs(20))
        .expect("the sentinels promoted the replica");
    let promoted_at = Instant::now();
    // Down-after, the election and the promotion, plus a retry of the store's.
    let bound = Duration::from_secs(15);
    let followed = anomaly_testkit::eventually(bound.saturating_sub(killed.elapsed()), || async {
        load.first_acked_since(killed).is_some()
    })
    .await;
    let first_after_kill = load.first_acked_since(killed);
    assert!(
        followed,
        "no batch was acknowledged within {bound:?} of the kill: {}",
        load.log.lock().unwrap().summary()
    );
    assert!(
        load.wait_progress(10, promoted_at, Duration::from_secs(15))
            .await,
        "the store did not keep answering after the failover: {}",
        load.log.lock().unwrap().summary()
    );
    let log = load.finish().await;
    let first_after_kill = first_after_kill.expect("checked above");

    assert_ne!(new, old);
    assert_eq!(sentinels.master_port(), new);
    eprintln!(
        "sentinel kill: start {started:?}; failover (kill to promotion) {:?}; ingest \
         unavailable (kill to first acknowledged batch) {:?}; {}",
        promoted_at - killed,
        first_after_kill - killed,
        log.summary()
    );
    if let Some((first, last)) = log.failure_span(kill_sent) {
        eprintln!("sentinel kill: failures from {first:?} to {last:?} after the kill");
    }
    log.assert_failures_within(kill_sent, promoted_at.max(first_after_kill));
    let hard: Vec<&Failure> = log
        .failures
        .iter()
        .filter(|f| !f.error.starts_with("redis unavailable"))
        .collect();
    assert!(
        hard.is_empty(),
        "failures not classed as unavailable: {hard:?}"
    );

    let windows = windows(&store, &keys).await;
    // Acknowledged by the new primary: every one of them is there, once.
    let after = log.acked_by_key(|b| b.started >= killed);
    for (key, window) in &windows {
        let mut twice = window.clone();
        twice.dedup();
        assert_eq!(twice.len(), window.len(), "{key:?}: a trace counted twice");
        let want = &after[key];
        let missing: Vec<&u64> = want
            .iter()
            .filter(|n| window.binary_search(n).is_err())
            .collect();
        assert!(
            missing.is_empty(),
            "{key:?}: acknowledged by the new primary and lost: {missing:?}"
        );
    }
    // Acknowledged by the old primary, asynchronously replicated: some may be lost.
    let before = log.acked_by_key(|b| b.started < killed);
    let (mut kept, mut lost) = (0, 0);
    for (key, traces) in &before {
        for n in traces {
            if windows[key].binary_search(n).is_ok() {
                kept += 1;
            } else {
                lost += 1;
            }
        }
    }
    eprintln!(
        "sentinel kill: of {} traces acknowledged before the kill, {kept} survived and {lost} \
         were lost (min_replicas_ack 0)",
        kept + lost
    );
    // Nothing unacknowledged got in: every trace in a window was acknowledged.
    let all = log.acked_by_key(|_| true);
    for (key, window) in &windows {
        let acked = &all[key];
        assert!(
            window.iter().all(|n| acked.contains(n)),
            "{key:?} holds a trace never acknowledged"
        );
    }
    // The windows the store reads are the new primary's.
    for key in &keys {
        let name = store.keys().dur(&key.encode());
        let on_new: usize = sentinels
            .command(new, &["LLEN", &name])
            .parse()
            .expect("LLEN");
        assert_eq!(
            on_new,
            windows[key].len(),
            "{key:?} on the new primary {new}"
        );
    }
    let total = began.elapsed();
    eprintln!("sentinel kill: whole test {total:?}");
    assert!(total < Duration::from_secs(60), "took {total:?}");
}

/// The lowest slot each primary owns, from `CLUSTER NODES`: `redis-cli --cluster reshard` with
/// one source moves that source's lowest slots first.
fn lowest_slots(cluster: &RedisCluster) -> HashMap<u16, u16> {
    let port = cluster.primaries()[0];
    let nodes = cluster.command(port, &["CLUSTER", "NODES"]);
    let mut lowest = HashMap::new();
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 9 || !fields[2].contains("master") {
            continue;
        }
        let Some(port) = fields[1]
            .split(['@', ','])
            .next()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse::<u16>().ok())
        else {
            continue;
        };
        let low = fields[8..]
            .iter()
            .filter_map(|r| r.split('-').next()?.parse::<u16>().ok())
            .min();
        if let Some(low) = low {
            lowest.insert(port, low);
        }
    }
    lowest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_reshard_under_load_loses_and_double_counts_nothing() {
    const MOVED: u32 = 1000;
    let began = Instant::now();
    let cluster = RedisCluster::start();
    let started = began.elapsed();
    let store = cluster_store(&cluster, "failover-reshard", 0);

    // A key among the slots the reshard moves: within the first MOVED slots of its owner.
    let lowest = lowest_slots(&cluster);
    let (moving, slot, from) = (0..200)
        .map(|i| key(&format!("moving-{i}"), 7))
        .find_map(|k| {
            let slot = cluster.slot_of(&store.keys().dur(&k.encode()));
            let (&owner, _) = lowest
                .iter()
                .find(|&(_, &low)| slot >= low && u32::from(slot - low) < MOVED)?;
            (cluster.primary_of_slot(slot) == owner).then_some((k, slot, owner))
        })
        .expect("a key among the slots to move");
    let to = *cluster
        .primaries()
        .iter()
        .find(|&&p| p != from)
        .expect("another primary");
    let mut keys = spread_keys("reshard");
    keys.push(moving);

    let load = Load::start(&store, &keys);
    assert!(
        load.wait_progress(5, began, Duration::from_secs(15)).await,
        "no load before the reshard: {}",
        load.log.lock().unwrap().summary()
    );
    let acked_before = load.acked();
    let reshard_started = Instant::now();
    cluster.start_reshard(from, to, MOVED).wait();
    assert!(
        cluster.wait_ok(Duration::from_secs(30)),
        "{:?}",
        cluster.health()
    );
    let resharded = Instant::now();
    let acked_during = load.acked() - acked_before;
    assert_eq!(
        cluster.primary_of_slot(slot),
        to,
        "slot {slot} of the moving key did not move"
    );
    assert!(
        load.wait_progress(10, resharded, Duration::from_secs(15))
            .await,
        "the store did not answer after the reshard: {}",
        load.log.lock().unwrap().summary()
    );
    let log = load.finish().await;
    eprintln!(
        "cluster reshard: start {started:?}; {MOVED} slots moved in {:?} with {acked_during} \
         batches acknowledged meanwhile; {}",
        resharded - reshard_started,
        log.summary()
    );
    assert!(
        acked_during > 0,
        "no batch was acknowledged while the slots moved: the reshard ran without load"
    );

    assert_exactly_acked(&windows(&store, &keys).await, &log.acked_by_key(|_| true));
    assert_resend_is_all_duplicates(&store, &log).await;
    // A slot in migration may refuse a script whose keys are split between the nodes
    // (TRYAGAIN); once the slots have moved, nothing may fail.
    log.assert_failures_within(reshard_started, resharded);
    let total = began.elapsed();
    eprintln!("cluster reshard: whole test {total:?}");
    assert!(total < Duration::from_secs(60), "took {total:?}");
}
