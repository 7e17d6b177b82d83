//! Redis being down is reported as unavailable, and the store recovers when it is back.

use anomaly_testkit::RedisServer;

use crate::{item, key, settings, store_at};

#[tokio::test]
async fn outage_is_unavailable_and_recovers_without_reconnecting_by_hand() {
    let mut server = RedisServer::start();
    let store = store_at(server.url(), "outage");
    store.ping().await.unwrap();
    server.stop();
    let err = store.ping().await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    let err = store
        .ingest(&[item(1, &key("a", 1), 1.0)], &settings())
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    server.restart();
    assert!(
        anomaly_testkit::eventually(std::time::Duration::from_secs(10), || async {
            store.ping().await.is_ok()
        })
        .await
    );
    let out = store
        .ingest(&[item(1, &key("a", 1), 1.0)], &settings())
        .await
        .unwrap();
    assert_eq!(
        out.accepted, 1,
        "the script is reloaded after the restart emptied its cache"
    );
}

#[tokio::test]
async fn unreachable_redis_times_out_as_unavailable() {
    // Nothing listens on port 1.
    let store = store_at("redis://127.0.0.1:1".into(), "nothing");
    let err = store.baseline(&key("a", 1)).await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
}

#[tokio::test]
async fn busy_connections_are_not_pinged_and_broken_ones_are_replaced() {
    let mut server = RedisServer::start();
    let store = store_at(server.url(), "ping");
    let k = key("a", 2);
    store.dirty_len().await.unwrap();
    let pings = |server: &RedisServer| {
        server
            .command(&["INFO", "commandstats"])
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_ping:calls="))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse::<u64>().unwrap())
    };
    let before = pings(&server);
    for _ in 0..200 {
        store.mark_dirty(std::slice::from_ref(&k)).await.unwrap();
    }
    // deadpool-redis alone would have sent one PING per operation.
    assert!(
        pings(&server) - before < 5,
        "{} pings",
        pings(&server) - before
    );

    // Right after a restart the pooled connections are dead; an operation may fail once on
    // one, which is then dropped, and the next ones get fresh connections.
    server.restart();
    let mut failures = 0;
    for _ in 0..20 {
        if store.dirty_len().await.is_err() {
            failures += 1;
        }
    }
    assert!(failures <= 2, "{failures} failures after a restart");
    assert!(store.dirty_len().await.is_ok());
}
