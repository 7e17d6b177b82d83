//! The running service: probes, metrics, the schedule and graceful hand-back.

use std::time::Duration;

use anomaly_testkit::{eventually, shared_redis_url};

use crate::{config, key, recomputer, seed};

#[tokio::test]
async fn runs_drains_and_reports() {
    let url = shared_redis_url();
    let mut config = config(&url, "service");
    config.service.interval = Duration::from_millis(100);
    let observer = recomputer(&config, "observer");
    let keys: Vec<_> = (0..30).map(key).collect();
    seed(observer.store(), &config, &keys, 5, |_, j| f64::from(j)).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(recomputer::run(config, listener, async {
        let _ = stop_rx.await;
    }));

    let store = observer.store().clone();
    assert!(
        eventually(Duration::from_secs(10), || {
            let (store, keys) = (store.clone(), keys.clone());
            async move {
                store
                    .baselines(&keys)
                    .await
                    .unwrap()
                    .iter()
                    .all(Option::is_some)
            }
        })
        .await,
        "the schedule drains without being called"
    );
    let client = reqwest::Client::new();
    let ready = client
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "anomaly_dirty_backlog",
        "anomaly_recompute_keys_total 30",
        "anomaly_recompute_batch_duration_seconds",
        "anomaly_recompute_errors_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), service)
        .await
        .expect("stops on shutdown")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn release_hands_claimed_keys_back() {
    let config = config(&shared_redis_url(), "release");
    let r = recomputer(&config, "leaving");
    let keys: Vec<_> = (0..10).map(key).collect();
    seed(r.store(), &config, &keys, 2, |_, j| f64::from(j)).await;
    let claimed = r
        .store()
        .claim_dirty("leaving", 4, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(claimed.keys.len(), 4);
    assert_eq!(r.store().dirty_len().await.unwrap(), 6);
    assert_eq!(r.release().await.unwrap(), 4);
    assert_eq!(r.store().dirty_len().await.unwrap(), 10);
}

#[tokio::test]
async fn survives_a_redis_outage() {
    let mut server = anomaly_testkit::RedisServer::start();
    let mut config = config(&server.url(), "outage");
    config.service.interval = Duration::from_millis(100);
    config.common.redis.timeout = Duration::from_millis(500);
    let observer = recomputer(&config, "observer");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(recomputer::run(config.clone(), listener, async {
        let _ = stop_rx.await;
    }));
    let client = reqwest::Client::new();
    let readyz = |client: reqwest::Client| async move {
        client
            .get(format!("http://{addr}/readyz"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    assert!(
        eventually(Duration::from_secs(5), || readyz(client.clone())
            .then_some_200())
        .await
    );
    server.stop();
    assert!(
        eventually(Duration::from_secs(10), || async {
            readyz(client.clone()).await == 503
        })
        .await
    );
    server.restart();
    assert!(
        eventually(Duration::from_secs(10), || readyz(client.clone())
            .then_some_200())
        .await
    );
    // And it drains again without a restart.
    let keys: Vec<_> = (0..5).map(key).collect();
    seed(observer.store(), &config, &keys, 3, |_, j| f64::from(j)).await;
    let store = observer.store().clone();
    assert!(
        eventually(Duration::from_secs(10), || {
            let (store, keys) = (store.clone(), keys.clone());
            async move {
                store
                    .baselines(&keys)
                    .await
                    .map(|b| b.iter().all(Option::is_some))
                    .unwrap_or(false)
            }
        })
        .await
    );
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), service)
        .await
        .expect("stops")
        .unwrap()
        .unwrap();
}

trait Then200 {
    fn then_some_200(self) -> impl std::future::Future<Output = bool>;
}

impl<F: std::future::Future<Output = u16>> Then200 for F {
    async fn then_some_200(self) -> bool {
        self.await == 200
    }
}
