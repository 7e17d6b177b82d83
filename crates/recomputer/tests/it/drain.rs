//! Draining: baselines equal anomaly-core's statistics, replicas share work exactly, races end
//! with the newest window, retention and rebuild.

use std::time::Duration;

use anomaly_core::{Baseline, Stats};
use anomaly_testkit::shared_redis_url;

use crate::{config, key, recomputer, seed};

#[tokio::test]
async fn baselines_equal_core_statistics() {
    let config = config(&shared_redis_url(), "equal");
    let r = recomputer(&config, "w1");
    let keys: Vec<_> = (0..20).map(key).collect();
    // Varied windows: key i gets 40 + 10 i samples of a skewed, unsorted pattern.
    let f = |i: usize, j: u32| {
        f64::from((j * 7919 + i as u32 * 31) % 500) * 0.25
            + if j.is_multiple_of(17) { 900.0 } else { 0.0 }
    };
    for (i, k) in keys.iter().enumerate() {
        seed(
            r.store(),
            &config,
            std::slice::from_ref(k),
            40 + 10 * i as u32,
            f,
        )
        .await;
    }
    let before = chrono::Utc::now().timestamp_millis();
    let outcome = r.drain_once().await.unwrap();
    assert_eq!(outcome.recomputed, 20);
    assert_eq!(r.store().dirty_len().await.unwrap(), 0);
    for k in &keys {
        let window = r.store().read_window(k).await.unwrap();
        let want = Stats::compute(&window, config.common.stats.mad_epsilon_ms).unwrap();
        let got: Baseline = r
            .store()
            .baseline(k)
            .await
            .unwrap()
            .expect("baseline written");
        assert_eq!(
            (got.p50, got.p95, got.mad, got.sample_count),
            (want.p50, want.p95, want.mad, want.sample_count),
            "{k}"
        );
        assert!(got.updated_at >= before);
    }
    // Nothing dirty: the next drain does nothing.
    assert_eq!(r.drain_once().await.unwrap().recomputed, 0);
}

#[tokio::test]
async fn two_recomputers_share_ten_thousand_keys_exactly() {
    let mut config = config(&shared_redis_url(), "replicas");
    config.service.batch_size = 200;
    let a = recomputer(&config, "a");
    let b = recomputer(&config, "b");
    let keys: Vec<_> = (0..10_000).map(key).collect();
    seed(a.store(), &config, &keys, 3, |i, j| {
        (i % 50) as f64 + f64::from(j)
    })
    .await;
    assert_eq!(a.store().dirty_len().await.unwrap(), 10_000);
    let (oa, ob) = tokio::join!(a.drain_once(), b.drain_once());
    let (oa, ob) = (oa.unwrap(), ob.unwrap());
    // Every key exactly once: the written counts add up to the number of keys, none is stale.
    assert_eq!(oa.recomputed + ob.recomputed, 10_000, "{oa:?} {ob:?}");
    assert_eq!(oa.stale + ob.stale, 0);
    assert!(
        oa.recomputed > 0 && ob.recomputed > 0,
        "both took part: {oa:?} {ob:?}"
    );
    let baselines = a.store().baselines(&keys).await.unwrap();
    for (i, b) in baselines.iter().enumerate() {
        let b = b.expect("every key has a baseline");
        assert_eq!((b.sample_count, b.p50), (3, (i % 50) as f64 + 1.0));
    }
}

#[tokio::test]
async fn a_slow_recompute_never_overwrites_a_newer_window() {
    let config = config(&shared_redis_url(), "race");
    let r = recomputer(&config, "slow");
    let k = key(1);
    seed(r.store(), &config, std::slice::from_ref(&k), 10, |_, j| {
        f64::from(j)
    })
    .await;
    // The slow worker claims and reads the window...
    let batch = r
        .store()
        .claim_dirty("slow", 10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(batch.keys, vec![k.clone()]);
    let old = r
        .store()
        .read_windows_versioned(&batch.keys, 1000)
        .await
        .unwrap();
    // ...a new sample arrives and another recomputer handles it...
    let store = r.store().clone();
    store
        .ingest(
            &[anomaly_store::IngestItem {
                start_ms: 0,
                trace_id: anomaly_core::TraceId::parse("ffff").unwrap(),
                key: k.clone(),
                duration: anomaly_core::DurationMs::new(5000.0).unwrap(),
            }],
            &crate::settings(&config),
        )
        .await
        .unwrap();
    let fast = recomputer(&config, "fast");
    assert_eq!(fast.drain_once().await.unwrap().recomputed, 1);
    let newest = r.store().baseline(&k).await.unwrap().unwrap();
    assert_eq!(newest.sample_count, 11);
    // ...then the slow worker commits what it computed from the old window: refused.
    let stale = anomaly_store::Recomputed {
        quantiles: None,
        key: k.clone(),
        version: old[0].version.clone(),
        baseline: Stats::compute(&old[0].samples, 1.0).map(|s| Baseline::from_stats(s, 1)),
    };
    let outcome = r
        .store()
        .commit_baselines("slow", &[stale], Duration::ZERO)
        .await
        .unwrap();
    assert_eq!((outcome.written, outcome.stale), (0, 1));
    assert_eq!(r.store().baseline(&k).await.unwrap().unwrap(), newest);
}

#[tokio::test]
async fn retention_removes_idle_keys() {
    let mut config = config(&shared_redis_url(), "retention");
    config.common.retention = Duration::from_millis(800);
    let r = recomputer(&config, "w");
    let (idle, busy) = (key(1), key(2));
    seed(
        r.store(),
        &config,
        &[idle.clone(), busy.clone()],
        5,
        |_, j| f64::from(j),
    )
    .await;
    r.drain_once().await.unwrap();
    assert!(r.store().baseline(&idle).await.unwrap().is_some());
    // Keep `busy` alive with fresh samples while `idle` receives none.
    let store = r.store().clone();
    let gone = anomaly_testkit::eventually(Duration::from_secs(10), || {
        let (store, idle, config) = (store.clone(), idle.clone(), &config);
        let busy = busy.clone();
        async move {
            let n = rand_trace();
            store
                .ingest(
                    &[anomaly_store::IngestItem {
                        start_ms: 0,
                        trace_id: anomaly_core::TraceId::parse(&format!("{n:x}")).unwrap(),
                        key: busy,
                        duration: anomaly_core::DurationMs::new(1.0).unwrap(),
                    }],
                    &crate::settings(config),
                )
                .await
                .unwrap();
            store.read_window(&idle).await.unwrap().is_empty()
                && store.baseline(&idle).await.unwrap().is_none()
        }
    })
    .await;
    assert!(gone, "the idle key's window and baseline expire");
    r.drain_once().await.unwrap();
    assert!(
        r.store().baseline(&busy).await.unwrap().is_some(),
        "the busy key stays"
    );
    assert_eq!(r.store().key_count().await.unwrap(), 2);
    let pruned = r.prune_once().await.unwrap();
    assert_eq!(
        (pruned.keys, pruned.endpoints),
        (1, 1),
        "the idle key leaves the key index, and its endpoint (it had no other key) the listing"
    );
    assert_eq!(r.store().key_count().await.unwrap(), 1);
}

fn rand_trace() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1 << 40);
    u128::from(N.fetch_add(1, Ordering::Relaxed))
}

#[tokio::test]
async fn rebuild_recomputes_every_key_with_new_settings() {
    let config = config(&shared_redis_url(), "rebuild");
    let r = recomputer(&config, "w");
    let keys: Vec<_> = (0..300).map(key).collect();
    seed(r.store(), &config, &keys, 20, |_, j| f64::from(j)).await;
    r.drain_once().await.unwrap();
    assert_eq!(
        r.store()
            .baseline(&keys[0])
            .await
            .unwrap()
            .unwrap()
            .sample_count,
        20
    );
    // The window shrinks to the newest 10 samples (values 19..=10): every baseline must follow.
    let mut smaller = config.clone();
    smaller.common.stats.window_size = 10;
    smaller.common.stats.min_samples = 5;
    let rebuilt = recomputer(&smaller, "rebuild");
    let mut reports = Vec::new();
    let outcome = rebuilt
        .rebuild(|done, total| reports.push((done, total)))
        .await
        .unwrap();
    assert_eq!(outcome.recomputed, 300);
    assert_eq!(reports.first(), Some(&(0, 300)));
    assert_eq!(reports.last(), Some(&(300, 300)));
    for b in r.store().baselines(&keys).await.unwrap() {
        let b = b.unwrap();
        assert_eq!((b.sample_count, b.p50), (10, 14.5));
    }
}
