//! Baselines round-trip; many are read in one round trip; the dirty set drains.

use anomaly_core::Baseline;
use std::time::Duration;

use crate::{key, raw, store, store_at};

#[tokio::test]
async fn baselines_round_trip() {
    let store = store("base");
    let (a, b, missing) = (key("a", 1), key("b", 2), key("c", 3));
    let ba = Baseline {
        p50: 120.0,
        p95: 310.5,
        mad: 18.25,
        sample_count: 1000,
        updated_at: 1_764_050_000_123,
    };
    let bb = Baseline {
        p50: 0.1 + 0.2,
        p95: 1e-3,
        mad: 1.0,
        sample_count: 50,
        updated_at: 1,
    };
    store
        .write_baselines(&[(a.clone(), ba), (b.clone(), bb)], Duration::from_secs(60))
        .await
        .unwrap();
    let got = store
        .baselines(&[a.clone(), missing.clone(), b.clone()])
        .await
        .unwrap();
    assert_eq!(got, vec![Some(ba), None, Some(bb)]);
    assert_eq!(store.baseline(&missing).await.unwrap(), None);
}

#[tokio::test]
async fn many_baselines_in_one_round_trip() {
    let url = anomaly_testkit::shared_redis_url();
    let store = store_at(url.clone(), "many");
    let keys: Vec<_> = (0..500u32)
        .map(|i| key(&format!("s{i}"), (i % 24) as u8))
        .collect();
    let items: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            (
                k.clone(),
                Baseline {
                    p50: i as f64,
                    p95: 2.0 * i as f64,
                    mad: 1.0,
                    sample_count: 60,
                    updated_at: 5,
                },
            )
        })
        .collect();
    store.write_baselines(&items, Duration::ZERO).await.unwrap();
    let before = hmget_calls(&url);
    let got = store.baselines(&keys).await.unwrap();
    // Two HMGETs a key (the baseline, the endpoint's fallback levels), one pipeline.
    assert_eq!(hmget_calls(&url) - before, 1000);
    for (i, b) in got.iter().enumerate() {
        assert_eq!(b.unwrap().p50, i as f64);
    }
}

/// HMGETs served so far: by the server, or by every primary of the shared cluster.
fn hmget_calls(url: &str) -> u64 {
    let calls = |info: String| {
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_hmget:calls="))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse::<u64>().unwrap())
    };
    if anomaly_testkit::test_redis_mode() == anomaly_store::RedisMode::Cluster {
        let cluster = anomaly_testkit::shared_cluster();
        return cluster
            .primaries()
            .into_iter()
            .map(|port| calls(cluster.command(port, &["INFO", "commandstats"])))
            .sum();
    }
    calls(raw(url, &["INFO", "commandstats"]))
}

#[tokio::test]
async fn dirty_set_drains_in_batches_and_refills() {
    let store = store("drain");
    let keys: Vec<_> = (0..25u8)
        .map(|i| key("svc", i % 24))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    store.mark_dirty(&keys).await.unwrap();
    assert_eq!(store.dirty_len().await.unwrap(), 24);
    let mut seen = Vec::new();
    loop {
        let batch = store.pop_dirty(10).await.unwrap();
        if batch.keys.is_empty() {
            break;
        }
        assert!(batch.keys.len() <= 10);
        seen.extend(batch.keys);
    }
    seen.sort();
    assert_eq!(seen, keys);
}

#[tokio::test]
async fn corrupt_data_is_reported_not_swallowed() {
    let url = anomaly_testkit::shared_redis_url();
    let store = store_at(url.clone(), "corrupt");
    let k = key("svc", 9);
    raw(
        &url,
        &["HSET", &store.keys().base(&k.encode()), "p50", "abc"],
    );
    let err = store.baseline(&k).await.unwrap_err();
    assert!(
        matches!(err, anomaly_store::StoreError::BadData { .. }),
        "{err}"
    );
    assert!(!err.is_unavailable());
    raw(
        &url,
        &["LPUSH", &store.keys().dur(&k.encode()), "not-a-number"],
    );
    let err = store.read_window(&k).await.unwrap_err();
    assert!(!err.is_unavailable(), "{err}");
    // Bodies that do not decode are dropped from the dirty set and reported.
    raw(&url, &["SADD", &store.keys().dirty(), "not|a|key"]);
    let batch = store.pop_dirty(10).await.unwrap();
    assert_eq!(batch.invalid, vec!["not|a|key".to_owned()]);
}

#[tokio::test]
async fn replaced_windows_read_back_and_are_dirty() {
    let store = store("replace");
    let k = key("svc", 5);
    let samples: Vec<_> = [3.5, 2.0, 1.25]
        .iter()
        .map(|&ms| anomaly_core::DurationMs::new(ms).unwrap())
        .collect();
    store
        .replace_windows(&[(k.clone(), samples)], Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(store.read_window(&k).await.unwrap(), vec![3.5, 2.0, 1.25]);
    assert_eq!(store.pop_dirty(10).await.unwrap().keys, vec![k]);
}

#[tokio::test]
async fn versioned_reads_match_plain_reads_and_cap_the_window() {
    let url = anomaly_testkit::shared_redis_url();
    let store = store_at(url.clone(), "versioned_flush");
    let (k, empty) = (key("svc", 6), key("svc", 7));
    let samples: Vec<_> = [3.5, 0.001, 86_400_000.0, 12.25]
        .iter()
        .map(|&ms| anomaly_core::DurationMs::new(ms).unwrap())
        .collect();
    store
        .replace_windows(&[(k.clone(), samples)], Duration::ZERO)
        .await
        .unwrap();
    let read = store
        .read_windows_versioned(&[k.clone(), empty], 1000)
        .await
        .unwrap();
    assert_eq!(read[0].samples, vec![3.5, 0.001, 86_400_000.0, 12.25]);
    assert_eq!(read[0].samples, store.read_window(&k).await.unwrap());
    assert!(read[1].samples.is_empty());
    assert_eq!(read[1].version, None);
    // The window is capped at the size asked for, newest first.
    let two = store.read_windows_versioned(&[k], 2).await.unwrap();
    assert_eq!(two[0].samples, vec![3.5, 0.001]);
}

#[tokio::test]
async fn versioned_reads_keep_key_order_across_round_trips() {
    let url = anomaly_testkit::shared_redis_url();
    let store = store_at(url, "versioned_chunks");
    // 70 keys: 3 round trips at the default window size (32 + 32 + 6), 70 at the largest.
    let keys: Vec<_> = (0..70u8).map(|i| key(&format!("svc{i}"), i % 24)).collect();
    let windows: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let samples = (0..=i % 5)
                .map(|j| anomaly_core::DurationMs::new(i as f64 * 10.0 + j as f64).unwrap())
                .collect();
            (k.clone(), samples)
        })
        .collect();
    store
        .replace_windows(&windows, Duration::ZERO)
        .await
        .unwrap();
    for window_size in [1000, anomaly_store::recompute::SAMPLES_PER_ROUND_TRIP] {
        let read = store
            .read_windows_versioned(&keys, window_size)
            .await
            .unwrap();
        assert_eq!(read.len(), keys.len(), "window_size {window_size}");
        for (i, (got, (_, want))) in read.iter().zip(&windows).enumerate() {
            let want: Vec<f64> = want.iter().map(|d| d.get()).collect();
            assert_eq!(got.samples, want, "key {i}, window_size {window_size}");
        }
    }
    assert!(
        store
            .read_windows_versioned(&[], 1000)
            .await
            .unwrap()
            .is_empty()
    );
}
