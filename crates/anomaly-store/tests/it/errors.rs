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
