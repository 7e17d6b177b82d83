//! Ingest: dedup, windows, trimming, the dirty set and the cardinality cap.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use anomaly_store::{IngestOutcome, IngestSettings};
use proptest::collection::vec;
use proptest::prelude::*;

use crate::{item, key, raw, settings, store, store_at, trace};

#[tokio::test]
async fn pushes_newest_first_and_marks_dirty() {
    let store = store("push");
    let k = key("svc", 1);
    let out = store
        .ingest(
            &[item(1, &k, 10.5), item(2, &k, 20.25), item(3, &k, 0.001)],
            &settings(),
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        IngestOutcome {
            accepted: 3,
            duplicates: 0,
            over_cardinality: 0
        }
    );
    // Read back exactly as written (to the microsecond), newest first.
    assert_eq!(
        store.read_window(&k).await.unwrap(),
        vec![0.001, 20.25, 10.5]
    );
    assert_eq!(store.dirty_len().await.unwrap(), 1);
    let batch = store.pop_dirty(10).await.unwrap();
    assert_eq!(batch.keys, vec![k]);
    assert_eq!(store.dirty_len().await.unwrap(), 0);
}

#[tokio::test]
async fn trims_at_window_size() {
    let store = store("trim");
    let k = key("svc", 2);
    let s = IngestSettings {
        window_size: 50,
        ..settings()
    };
    let items: Vec<_> = (0..120u32)
        .map(|i| item(u128::from(i) + 1, &k, f64::from(i)))
        .collect();
    store.ingest(&items, &s).await.unwrap();
    let window = store.read_window(&k).await.unwrap();
    assert_eq!(window.len(), 50);
    assert_eq!(window[0], 119.0);
    assert_eq!(window[49], 70.0);
}

#[tokio::test]
async fn dedups_with_ttl() {
    let url = anomaly_testkit::shared_redis_url();
    let store = store_at(url.clone(), "dedup");
    let k = key("svc", 3);
    let s = IngestSettings {
        dedup_ttl: Duration::from_secs(3600),
        ..settings()
    };
    let first = store
        .ingest(&[item(7, &k, 1.0), item(7, &k, 2.0)], &s)
        .await
        .unwrap();
    assert_eq!((first.accepted, first.duplicates), (1, 1));
    // The same trace written with leading zeros or upper case is the same trace.
    let again = anomaly_store::IngestItem {
        start_ms: 0,
        trace_id: anomaly_core::TraceId::parse("00000000000000000000000000000007").unwrap(),
        ..item(0, &k, 3.0)
    };
    assert_eq!(store.ingest(&[again], &s).await.unwrap().duplicates, 1);
    assert_eq!(store.read_window(&k).await.unwrap(), vec![1.0]);
    let ttl: i64 = raw(&url, &["PTTL", &store.keys().seen(&trace(7))])
        .parse()
        .unwrap();
    assert!(
        (3_500_000..=3_600_000).contains(&ttl),
        "seen marker TTL {ttl} ms"
    );
    // The window and its baseline hash (which holds the version) expire together.
    for (what, name) in [
        ("window", store.keys().dur(&k.encode())),
        ("baseline hash", store.keys().base(&k.encode())),
    ] {
        let ttl: i64 = raw(&url, &["PTTL", &name]).parse().unwrap();
        assert!(
            ttl > 29 * 86_400_000,
            "{what} expiry is refreshed on write: {ttl} ms"
        );
    }
}

#[tokio::test]
async fn concurrent_duplicates_count_once() {
    let store = Arc::new(store("race"));
    let k = key("svc", 4);
    // Two connections ingest the same 500 traces at the same time, many rounds.
    let items: Vec<_> = (1..=500u128).map(|i| item(i, &k, i as f64)).collect();
    let (a, b) = {
        let (s1, s2) = (store.clone(), store.clone());
        let (i1, i2) = (items.clone(), items.clone());
        tokio::join!(
            tokio::spawn(async move { s1.ingest(&i1, &settings()).await.unwrap() }),
            tokio::spawn(async move { s2.ingest(&i2, &settings()).await.unwrap() })
        )
    };
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.accepted + b.accepted, 500, "{a:?} {b:?}");
    assert_eq!(a.duplicates + b.duplicates, 500, "{a:?} {b:?}");
    assert_eq!(store.read_window(&k).await.unwrap().len(), 500);
}

#[tokio::test]
async fn ingests_ten_thousand_traces_in_one_call() {
    let store = store("bulk");
    let keys: Vec<_> = (0..100u8)
        .map(|i| key(&format!("svc-{i}"), i % 24))
        .collect();
    let items: Vec<_> = (0..10_000u128)
        .map(|i| item(i + 1, &keys[(i % 100) as usize], (i % 997) as f64 + 0.5))
        .collect();
    let out = store.ingest(&items, &settings()).await.unwrap();
    assert_eq!(out.accepted, 10_000);
    assert_eq!(store.dirty_len().await.unwrap(), 100);
    let windows = store.read_windows(&keys).await.unwrap();
    assert!(windows.iter().all(|w| w.len() == 100));
    // A second delivery of the same batch stores nothing.
    let again = store.ingest(&items, &settings()).await.unwrap();
    assert_eq!((again.accepted, again.duplicates), (0, 10_000));
}

#[tokio::test]
async fn cardinality_cap_refuses_new_keys_only() {
    let store = store("cap");
    let s = IngestSettings {
        max_keys: 2,
        ..settings()
    };
    let (a, b, c) = (key("a", 1), key("b", 1), key("c", 1));
    let out = store
        .ingest(
            &[
                item(1, &a, 1.0),
                item(2, &b, 1.0),
                item(3, &c, 1.0),
                item(4, &a, 2.0),
            ],
            &s,
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        IngestOutcome {
            accepted: 3,
            duplicates: 0,
            over_cardinality: 1
        }
    );
    assert!(store.read_window(&c).await.unwrap().is_empty());
    // The refused trace was not marked seen: it is accepted once the cap allows it.
    let out = store
        .ingest(&[item(3, &c, 1.0)], &IngestSettings { max_keys: 3, ..s })
        .await
        .unwrap();
    assert_eq!(out.accepted, 1);
}

#[tokio::test]
async fn names_full_of_separators_stay_in_their_own_key() {
    let store = store("names");
    let tricky = [
        anomaly_core::BaselineKey::new("a|b", "c", 1, anomaly_core::DayType::Weekday).unwrap(),
        anomaly_core::BaselineKey::new("a", "b|c", 1, anomaly_core::DayType::Weekday).unwrap(),
        anomaly_core::BaselineKey::new("{a}", "%7C\n", 1, anomaly_core::DayType::Weekday).unwrap(),
        anomaly_core::BaselineKey::new(
            "日本",
            "🎉 x".repeat(42),
            1,
            anomaly_core::DayType::Weekday,
        )
        .unwrap(),
    ];
    let items: Vec<_> = tricky
        .iter()
        .enumerate()
        .map(|(i, k)| item(i as u128 + 1, k, i as f64))
        .collect();
    store.ingest(&items, &settings()).await.unwrap();
    for (i, k) in tricky.iter().enumerate() {
        assert_eq!(store.read_window(k).await.unwrap(), vec![i as f64], "{k:?}");
    }
    let mut popped = store.pop_dirty(100).await.unwrap().keys;
    popped.sort();
    let mut want = tricky.to_vec();
    want.sort();
    assert_eq!(popped, want);
}

/// What the ingest script must do, written plainly: a trace seen before is a duplicate; else a
/// trace of a key not yet indexed is refused while the index holds `cap` keys; else it is pushed
/// to its window (newest first, trimmed), and its key is indexed and marked dirty.
#[derive(Debug, Default)]
struct Model {
    seen: HashSet<u128>,
    indexed: HashSet<usize>,
    windows: HashMap<usize, VecDeque<f64>>,
    writes: HashMap<usize, u64>,
}

impl Model {
    /// `cluster`: on a Redis Cluster, a later sample of a trace under another key than the
    /// trace's first sample in the same batch follows the first (see anomaly-store's `ingest`):
    /// a duplicate if the first was stored, else refused with it.
    fn ingest(
        &mut self,
        batch: &[(u128, usize, f64)],
        cap: u64,
        window: usize,
        cluster: bool,
    ) -> IngestOutcome {
        let mut out = IngestOutcome::default();
        let mut first: HashMap<u128, (usize, bool)> = HashMap::new();
        for &(trace, k, ms) in batch {
            let before = self.seen.contains(&trace);
            let follows = first
                .get(&trace)
                .copied()
                .filter(|&(fk, _)| cluster && fk != k && !before);
            if let Some((_, stored)) = follows {
                if stored {
                    out.duplicates += 1;
                } else {
                    out.over_cardinality += 1;
                }
                continue;
            }
            if self.seen.contains(&trace) {
                out.duplicates += 1;
                first.entry(trace).or_insert((k, true));
            } else if cap > 0 && !self.indexed.contains(&k) && self.indexed.len() as u64 >= cap {
                out.over_cardinality += 1;
                first.entry(trace).or_insert((k, false));
            } else {
                first.entry(trace).or_insert((k, true));
                self.seen.insert(trace);
                self.indexed.insert(k);
                let w = self.windows.entry(k).or_default();
                w.push_front(ms);
                w.truncate(window);
                *self.writes.entry(k).or_default() += 1;
                out.accepted += 1;
            }
        }
        out
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The script against the model over random batches: few traces and keys, so duplicates,
    /// repeated keys within a chunk and the cap (0 = none) all come up, and windows of one to
    /// four samples, so trimming does.
    #[test]
    fn ingest_matches_a_plain_model(
        cap in 0u64..5,
        window in 1u32..5,
        batches in vec(vec((0u128..16, 0usize..7, 1u32..100), 0..24), 1..5),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let store = store("model");
            let keys: Vec<_> = (0..7).map(|i| key(&format!("s{i}"), 1)).collect();
            let s = IngestSettings { max_keys: cap, window_size: window, ..settings() };
            let mut model = Model::default();
            for batch in &batches {
                let batch: Vec<_> = batch.iter().map(|&(t, k, ms)| (t + 1, k, f64::from(ms))).collect();
                let items: Vec<_> = batch.iter().map(|&(t, k, ms)| item(t, &keys[k], ms)).collect();
                let got = store.ingest(&items, &s).await.unwrap();
                let cluster = anomaly_testkit::test_redis_mode() == anomaly_store::RedisMode::Cluster;
                prop_assert_eq!(got, model.ingest(&batch, cap, window as usize, cluster));
            }
            prop_assert_eq!(store.key_count().await.unwrap(), model.indexed.len() as u64);
            prop_assert_eq!(store.dirty_len().await.unwrap(), model.indexed.len() as u64);
            let versioned = store.read_windows_versioned(&keys, window).await.unwrap();
            for (k, got) in versioned.iter().enumerate() {
                let want: Vec<f64> = model.windows.get(&k).map(|w| w.iter().copied().collect()).unwrap_or_default();
                // All of the list, not only the `window` newest samples a recompute reads.
                prop_assert_eq!(store.read_window(&keys[k]).await.unwrap(), want, "window of key {}", k);
                let writes = model.writes.get(&k).map(u64::to_string);
                prop_assert_eq!(&got.version, &writes, "version of key {}", k);
            }
            Ok(())
        })?;
    }
}

/// `redis.min_replicas_ack`: without a replica to confirm, an ingest is `NotReplicated` (the
/// services answer 503) while the primary keeps the trace, once; with one, it is acknowledged.
#[tokio::test]
async fn min_replicas_ack_waits_for_a_replica_and_says_when_none_confirms() {
    let primary = anomaly_testkit::RedisServer::start_ephemeral();
    let base = anomaly_testkit::redis_config(&primary.url(), "ack");
    let config = |wait: Duration| anomaly_store::RedisConfig {
        min_replicas_ack: 1,
        min_replicas_ack_timeout: wait,
        ..base.clone()
    };
    let store = anomaly_store::Store::connect(&config(Duration::from_millis(200))).unwrap();
    let k = key("acked", 3);
    let err = store
        .ingest(&[item(1, &k, 10.0)], &settings())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            anomaly_store::StoreError::NotReplicated {
                wanted: 1,
                acked: 0,
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.is_unavailable(), "not a broken connection: {err}");
    assert_eq!(store.read_window(&k).await.unwrap(), vec![10.0]);

    // A replica joins and syncs: the next batch is acknowledged, and the first one's retry is
    // a duplicate.
    let port = primary.port().to_string();
    let replica =
        anomaly_testkit::RedisServer::start_with_args(&["--replicaof", "127.0.0.1", &port]);
    let synced = anomaly_testkit::eventually(Duration::from_secs(20), || {
        let info = replica.command(&["INFO", "replication"]);
        async move { info.contains("master_link_status:up") }
    })
    .await;
    assert!(synced, "the replica never synced");
    // A generous wait: a loaded test machine is slow to answer the primary's GETACK.
    let store = anomaly_store::Store::connect(&config(Duration::from_secs(5))).unwrap();
    let out = store
        .ingest(&[item(2, &k, 20.0), item(1, &k, 10.0)], &settings())
        .await
        .unwrap();
    assert_eq!((out.accepted, out.duplicates), (1, 1));
    assert_eq!(store.read_window(&k).await.unwrap(), vec![20.0, 10.0]);
}

/// A cluster ingest stores a sample and marks its key dirty in two steps (see `ingest`): when
/// the second is lost (a crash, a failover of the coordination slot's primary), the sweep's
/// `repair_dirty` finds the key by its version (`v` ahead of the `cv` its baseline was computed
/// from) and marks it dirty again. Keys whose baseline is current are left alone. Elsewhere
/// ingest is one script and there is nothing to repair.
#[tokio::test]
async fn a_lost_dirty_mark_is_repaired_by_the_sweep() {
    let url = anomaly_testkit::shared_redis_url();
    let store = store_at(url.clone(), "repair-dirty");
    let (lost, current, fresh) = (key("lost", 1), key("current", 1), key("fresh", 1));
    store
        .ingest(
            &[item(1, &lost, 10.0), item(2, &current, 20.0)],
            &settings(),
        )
        .await
        .unwrap();
    let all = [lost.clone(), current.clone(), fresh.clone()];
    if !store.keys().is_cluster() {
        assert_eq!(store.repair_dirty(&all).await.unwrap(), 0);
        return;
    }
    // The dirty marks are lost; `current`'s baseline was computed from its window as it is.
    let dirty = store.keys().dirty();
    raw(&url, &["DEL", &dirty]);
    let base = store.keys().base(&current.encode());
    let v = raw(&url, &["HGET", &base, "v"]);
    assert!(!v.is_empty(), "ingest bumps the version");
    raw(&url, &["HSET", &base, "cv", &v]);
    assert_eq!(store.dirty_len().await.unwrap(), 0);

    // `fresh` never took a sample: nothing to repair there either.
    assert_eq!(store.repair_dirty(&all).await.unwrap(), 1);
    assert_eq!(store.pop_dirty(10).await.unwrap().keys, vec![lost.clone()]);

    // Once its baseline is committed from that version, it is not repaired again.
    let base = store.keys().base(&lost.encode());
    let v = raw(&url, &["HGET", &base, "v"]);
    raw(&url, &["HSET", &base, "cv", &v]);
    assert_eq!(store.repair_dirty(&all).await.unwrap(), 0);
    // A new sample puts it ahead again.
    store
        .ingest(&[item(3, &lost, 30.0)], &settings())
        .await
        .unwrap();
    raw(&url, &["DEL", &dirty]);
    assert_eq!(store.repair_dirty(&all).await.unwrap(), 1);
}
