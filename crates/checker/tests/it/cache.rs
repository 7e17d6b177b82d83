//! The baseline cache: hot keys cost no Redis command and are refreshed before they expire,
//! absences are remembered, and both expire after `checker.cache.ttl`.

use std::time::Duration;

use anomaly_core::DayType;
use anomaly_testkit::{RedisServer, eventually};

use crate::{App, baseline, body, calls, config, key, seed};

#[tokio::test]
async fn a_hot_key_is_served_without_redis_until_the_ttl() {
    let mut server = RedisServer::start_ephemeral();
    let mut config = config(&server.url(), "cache-hot");
    config.service.cache.ttl = Duration::from_secs(3);
    config.common.redis.timeout = Duration::from_millis(300);
    let k = key("checkout", "POST /pay", 14, DayType::Weekday);
    seed(&config, &[(k.clone(), baseline(120.0, 310.0, 18.0, 1000))]).await;
    let app = App::new(&config);

    let first = app.check(&body(&k, 1840.0)).await;
    assert_eq!(first.body["status"], "ANOMALY", "{}", first.text);
    let before = calls(&server, "hmget");
    for _ in 0..20 {
        let r = app.check(&body(&k, 1840.0)).await;
        assert_eq!(r.body["threshold"], 620.0);
    }
    assert_eq!(calls(&server, "hmget"), before, "hits send no command");
    let metrics = app.get("/metrics").await.text;
    for line in [
        r#"anomaly_baseline_cache_requests_total{result="hit"} 20"#,
        r#"anomaly_baseline_cache_requests_total{result="miss"} 1"#,
        r#"anomaly_checks_total{status="ANOMALY",service="checkout"} 21"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }

    // With Redis gone the cached answer still comes, until the entry expires.
    server.stop();
    let r = app.check(&body(&k, 1840.0)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["baseline"], first.body["baseline"]);
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.check(&body(&k, 1840.0)).await.status == 503
        })
        .await,
        "the entry expires and Redis is asked again"
    );
    let metrics = app.get("/metrics").await.text;
    assert!(metrics.contains(r#"anomaly_redis_errors_total{op="baselines"}"#));
}

#[tokio::test]
async fn a_hot_key_is_refreshed_before_it_expires_so_no_check_waits_for_redis() {
    let server = RedisServer::start_ephemeral();
    let mut config = config(&server.url(), "cache-refresh");
    config.service.cache.ttl = Duration::from_secs(4);
    let k = key("checkout", "POST /pay", 14, DayType::Weekday);
    seed(&config, &[(k.clone(), baseline(120.0, 310.0, 18.0, 1000))]).await;
    let app = App::new(&config);
    let threshold = async || {
        let r = app.check(&body(&k, 1840.0)).await;
        r.body["threshold"].as_f64().expect(&r.text)
    };
    assert_eq!(threshold().await, 620.0);
    // A new baseline (p95 500 ms: threshold 1000 ms) lands in Redis.
    seed(&config, &[(k.clone(), baseline(120.0, 500.0, 18.0, 1000))]).await;

    // Checks every 100 ms for two TTLs and more.
    let mut seen = Vec::new();
    for _ in 0..90 {
        seen.push(threshold().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen[0], 620.0, "the cached baseline is served at first");
    let switched = seen.iter().position(|&t| t == 1000.0).expect("refreshed");
    assert!(seen[switched..].iter().all(|&t| t == 1000.0), "{seen:?}");
    // The refresh is queued in the last quarter of the TTL (after 3 s), so the new baseline
    // shows before the entry would have expired (4 s, at least 40 checks in).
    assert!(switched < 40, "switched after {switched} checks: {seen:?}");
    let metrics = app.get("/metrics").await.text;
    assert!(
        metrics.contains(r#"anomaly_baseline_cache_requests_total{result="miss"} 1"#),
        "only the first check waited for Redis; entries never expired:\n{metrics}"
    );
    assert!(
        metrics.contains(r#"anomaly_baseline_cache_requests_total{result="hit"} 90"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_absent_baseline_is_remembered_for_the_ttl() {
    let server = RedisServer::start_ephemeral();
    let mut config = config(&server.url(), "cache-negative");
    config.service.cache.ttl = Duration::from_secs(2);
    let k = key("new", "GET /fresh", 8, DayType::Weekday);
    let app = App::new(&config);

    let r = app.check(&body(&k, 500.0)).await;
    assert_eq!(r.body["status"], "INSUFFICIENT_DATA");
    let before = calls(&server, "hmget");
    seed(&config, &[(k.clone(), baseline(10.0, 20.0, 1.0, 100))]).await;
    let r = app.check(&body(&k, 500.0)).await;
    assert_eq!(
        r.body["status"], "INSUFFICIENT_DATA",
        "absence still cached"
    );
    assert_eq!(calls(&server, "hmget"), before);
    let metrics = app.get("/metrics").await.text;
    assert!(metrics.contains(r#"anomaly_baseline_cache_requests_total{result="negative"} 1"#));
    assert!(metrics.contains(r#"anomaly_baseline_cache_requests_total{result="miss"} 1"#));
    // Within the staleness bound the new baseline is seen.
    assert!(
        eventually(Duration::from_secs(6), || async {
            app.check(&body(&k, 500.0)).await.body["status"] == "ANOMALY"
        })
        .await
    );
}

#[tokio::test]
async fn a_zero_ttl_turns_the_cache_off() {
    let server = RedisServer::start_ephemeral();
    let mut config = config(&server.url(), "cache-off");
    config.service.cache.ttl = Duration::ZERO;
    let k = key("svc", "GET /x", 8, DayType::Weekday);
    seed(&config, &[(k.clone(), baseline(10.0, 20.0, 1.0, 100))]).await;
    let app = App::new(&config);
    let before = calls(&server, "hmget");
    for _ in 0..5 {
        assert_eq!(app.check(&body(&k, 5.0)).await.body["status"], "NORMAL");
    }
    // Each check: one round trip, the baseline's and the endpoint's levels' HMGET.
    assert_eq!(calls(&server, "hmget") - before, 10);
}

#[tokio::test]
async fn the_cache_is_bounded_in_entries() {
    let server = RedisServer::start_ephemeral();
    let mut config = config(&server.url(), "cache-bounded");
    config.service.cache.max_entries = 10;
    let app = App::new(&config);
    let keys: Vec<_> = (0..200)
        .map(|i| key("svc", &format!("GET /{i}"), 8, DayType::Weekday))
        .collect();
    for k in &keys {
        app.check(&body(k, 5.0)).await;
    }
    // A second pass over 200 keys with room for 10 must go back to Redis for most of them.
    let before = calls(&server, "hmget");
    for k in &keys {
        app.check(&body(k, 5.0)).await;
    }
    let refetched = calls(&server, "hmget") - before;
    assert!(
        refetched >= 300,
        "only {refetched} of 200 keys were fetched again"
    );
}
