//! One active poller: replicas elect one through the Redis lease; when it stops another takes
//! over at once, and when it dies another takes over within two lease periods.

use std::time::{Duration, Instant};

use anomaly_runtime::lifecycle::CancellationToken;
use anomaly_testkit::{eventually, shared_redis_url};
use tracegen::tempo::FakeTempo;

use crate::{config, ingester, poller};

fn pollers_seen(tempo: &FakeTempo, owners: &[&str]) -> Vec<usize> {
    let requests = tempo.requests();
    owners
        .iter()
        .map(|o| {
            requests
                .iter()
                .filter(|r| r.user_agent.as_deref().is_some_and(|ua| ua.contains(o)))
                .count()
        })
        .collect()
}

#[tokio::test]
async fn exactly_one_replica_polls_and_another_takes_over() {
    let tempo = FakeTempo::start().await;
    let mut c = config(&shared_redis_url(), "lease", &tempo.url());
    c.service.tempo.lease_ttl = Duration::from_secs(1);
    c.service.tempo.poll_interval = Duration::from_millis(100);
    let (a, b) = (ingester(&c), ingester(&c));
    let (pa, pb) = (poller(&a), poller(&b));
    let (owner_a, owner_b) = (pa.owner().to_owned(), pb.owner().to_owned());
    let store = a.store().clone();

    let stop_a = CancellationToken::new();
    let task_a = tokio::spawn(pa.run(stop_a.clone()));
    let holder_is = |owner: String| {
        let store = store.clone();
        move || {
            let (store, owner) = (store.clone(), owner.clone());
            async move { store.lease_holder().await.unwrap().as_deref() == Some(&owner) }
        }
    };
    assert!(eventually(Duration::from_secs(5), holder_is(owner_a.clone())).await);
    let task_b = tokio::spawn(pb.run(CancellationToken::new()));

    // Longer than a lease period: b has tried to take the lease several times.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let [polls_a, polls_b] = pollers_seen(&tempo, &[&owner_a, &owner_b])[..] else {
        unreachable!()
    };
    // Polls run every 100 ms; a search goes out whenever a new second became visible.
    assert!(polls_a >= 1, "a polls: {polls_a}");
    assert_eq!(polls_b, 0, "b stands by");
    assert!(a.metrics().encode().contains("anomaly_poller_lease_held 1"));
    assert!(b.metrics().encode().contains("anomaly_poller_lease_held 0"));

    // A graceful stop releases the lease; b takes over at its next attempt.
    stop_a.cancel();
    tokio::time::timeout(Duration::from_secs(5), task_a)
        .await
        .unwrap()
        .unwrap();
    let stopped_at = Instant::now();
    assert!(eventually(Duration::from_secs(2), holder_is(owner_b.clone())).await);
    assert!(stopped_at.elapsed() < Duration::from_secs(1));
    tempo.clear_requests();
    assert!(
        eventually(Duration::from_secs(2), || async {
            pollers_seen(&tempo, &[&owner_b])[0] >= 1
        })
        .await
    );
    assert_eq!(pollers_seen(&tempo, &[&owner_a])[0], 0);

    // A crash releases nothing: a third replica takes over within two lease periods.
    task_b.abort();
    let _ = task_b.await;
    let crashed_at = Instant::now();
    let c3 = ingester(&c);
    let p3 = poller(&c3);
    let owner_c = p3.owner().to_owned();
    let _task_c = tokio::spawn(p3.run(CancellationToken::new()));
    assert!(eventually(Duration::from_secs(3), holder_is(owner_c.clone())).await);
    let took = crashed_at.elapsed();
    assert!(took < Duration::from_secs(2), "takeover took {took:?}");
    tempo.clear_requests();
    assert!(
        eventually(Duration::from_secs(2), || async {
            pollers_seen(&tempo, &[&owner_c])[0] >= 1
        })
        .await
    );
    assert_eq!(
        pollers_seen(&tempo, &[&owner_b])[0],
        0,
        "the dead replica is gone"
    );
}

/// The whole service: `run` serves the API and probes, polls Tempo under the lease, and on
/// shutdown stops and releases the lease.
#[tokio::test]
async fn the_service_polls_and_releases_its_lease_on_shutdown() {
    let tempo = FakeTempo::start().await;
    let mut c = config(&shared_redis_url(), "service", &tempo.url());
    c.service.tempo.poll_interval = Duration::from_millis(100);
    let store = ingester(&c).store().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(ingester::run(c, listener, async {
        let _ = stopped.await;
    }));
    assert!(
        eventually(Duration::from_secs(5), || async {
            tempo.requests().len() >= 2 && store.poll_cursor().await.unwrap().is_some()
        })
        .await,
        "the service polls on its own"
    );
    assert!(store.lease_holder().await.unwrap().is_some());
    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready: serde_json::Value = reqwest::get(format!("http://{addr}/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["redis"], "ok");
    assert_eq!(ready["checks"]["tempo"], "ok");

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), service)
        .await
        .expect("stops on shutdown")
        .unwrap()
        .unwrap();
    assert_eq!(store.lease_holder().await.unwrap(), None, "lease released");
}
