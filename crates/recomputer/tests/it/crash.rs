//! A recomputer that dies mid-batch leaves no stale baseline once recovery has run.

use std::process::{Command, Stdio};
use std::time::Duration;

use anomaly_core::Stats;
use anomaly_testkit::{eventually, shared_redis_url};

use crate::{config, key, recomputer, seed};

#[tokio::test]
async fn claimed_keys_of_a_dead_worker_are_recovered() {
    let config = config(&shared_redis_url(), "dead");
    let live = recomputer(&config, "live");
    let keys: Vec<_> = (0..50).map(key).collect();
    seed(live.store(), &config, &keys, 4, |i, j| {
        (i + j as usize) as f64
    })
    .await;
    // A worker claims a batch and dies before committing: the keys left dirtyKeys with it.
    let claimed = live
        .store()
        .claim_dirty("dead", 30, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(claimed.keys.len(), 30);
    assert_eq!(live.store().dirty_len().await.unwrap(), 20);
    let first = live.drain_once().await.unwrap();
    assert_eq!(
        first.recomputed, 20,
        "the dead worker's heartbeat has not expired yet"
    );
    // Once its heartbeat expires, the next drain hands its keys back and recomputes them.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = live.drain_once().await.unwrap();
    assert_eq!((second.recovered, second.recomputed), (30, 30));
    for (k, b) in keys
        .iter()
        .zip(live.store().baselines(&keys).await.unwrap())
    {
        assert!(b.is_some(), "{k} has a baseline");
    }
}

#[tokio::test]
async fn sigkill_mid_drain_leaves_no_stale_baseline() {
    let url = shared_redis_url();
    let mut config = config(&url, "sigkill");
    config.service.batch_size = 50;
    config.service.concurrency = 1;
    config.service.claim_ttl = Duration::from_secs(1);
    let observer = recomputer(&config, "observer");
    let keys: Vec<_> = (0..20_000).map(key).collect();
    seed(observer.store(), &config, &keys, 3, |i, j| {
        (i % 1000) as f64 + f64::from(j)
    })
    .await;
    let total = keys.len() as u64;

    // The real binary, killed with SIGKILL once it has made progress but before it is done.
    let mut child = Command::new(env!("CARGO_BIN_EXE_recomputer"))
        .envs(anomaly_testkit::redis_env(&config.common.redis))
        .env("ANOMALY_RECOMPUTER__LISTEN", "127.0.0.1:0")
        .env("ANOMALY_RECOMPUTER__BATCH_SIZE", "50")
        .env("ANOMALY_RECOMPUTER__CONCURRENCY", "1")
        .env("ANOMALY_RECOMPUTER__CLAIM_TTL", "1s")
        .env("ANOMALY_TELEMETRY__LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the recomputer binary");
    let store = observer.store().clone();
    let started = eventually(Duration::from_secs(30), || {
        let store = store.clone();
        async move { store.dirty_len().await.unwrap() < total }
    })
    .await;
    child.kill().expect("SIGKILL the recomputer");
    let _ = child.wait();
    assert!(started, "the recomputer never started draining");
    let left = observer.store().dirty_len().await.unwrap();
    assert!(
        left > 0,
        "the kill must land mid-drain for this test to mean anything"
    );

    // Recovery: a surviving recomputer drains until every key has a fresh baseline.
    let done = eventually(Duration::from_secs(60), || {
        let (observer, keys) = (&observer, &keys);
        async move {
            observer.drain_once().await.unwrap();
            observer.store().dirty_len().await.unwrap() == 0 && {
                let b = observer.store().baselines(keys).await.unwrap();
                b.iter().all(Option::is_some)
            }
        }
    })
    .await;
    assert!(done, "every key got a baseline after the crash");
    for (k, b) in keys
        .iter()
        .zip(observer.store().baselines(&keys).await.unwrap())
        .step_by(997)
    {
        let window = observer.store().read_window(k).await.unwrap();
        let want = Stats::compute(&window, 1.0).unwrap();
        assert_eq!(b.unwrap().p50, want.p50, "{k}");
    }
}
