//! The running service on a real socket: probes, metrics, Redis outages, load shedding and
//! graceful shutdown.

use std::time::{Duration, Instant};

use anomaly_core::DayType;
use anomaly_testkit::{RedisServer, eventually, shared_redis_url};
use serde_json::Value;

use crate::{App, Server, baseline, body, config, delaying_proxy, key, seed};

async fn status(client: &reqwest::Client, url: &str) -> u16 {
    client
        .get(url)
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

#[tokio::test]
async fn a_redis_outage_is_a_503_and_recovers_without_a_restart() {
    let mut redis = RedisServer::start();
    let mut config = config(&redis.url(), "service-outage");
    config.service.cache.ttl = Duration::ZERO;
    config.common.redis.timeout = Duration::from_millis(500);
    let k = key("checkout", "POST /pay", 14, DayType::Weekday);
    seed(&config, &[(k.clone(), baseline(120.0, 310.0, 18.0, 1000))]).await;
    let server = Server::start(&config).await;
    let client = reqwest::Client::new();
    let check = || {
        client
            .post(server.url("/v1/anomaly/check"))
            .json(&body(&k, 1840.0))
            .send()
    };

    assert_eq!(status(&client, &server.url("/readyz")).await, 200);
    assert_eq!(check().await.unwrap().status(), 200);

    redis.stop();
    assert_eq!(status(&client, &server.url("/readyz")).await, 503);
    assert_eq!(
        status(&client, &server.url("/healthz")).await,
        200,
        "alive while Redis is down"
    );
    let r = check().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let error: Value = r.json().await.unwrap();
    assert_eq!(error["error"]["code"], "REDIS_UNAVAILABLE");
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("anomaly_redis_up 0"), "{metrics}");

    redis.restart();
    assert!(
        eventually(Duration::from_secs(10), || async {
            status(&client, &server.url("/readyz")).await == 200
        })
        .await,
        "ready again once Redis is back"
    );
    let r = check().await.unwrap();
    assert_eq!(r.status(), 200);
    let verdict: Value = r.json().await.unwrap();
    assert_eq!(
        verdict["status"], "ANOMALY",
        "the baseline survived the restart"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_carry_the_promised_names() {
    let config = config(&shared_redis_url(), "service-metrics");
    let k = key("checkout", "POST /pay", 14, DayType::Weekday);
    seed(&config, &[(k.clone(), baseline(120.0, 310.0, 18.0, 1000))]).await;
    let server = Server::start(&config).await;
    let client = reqwest::Client::new();
    for d in [1840.0, 10.0, 10.0] {
        let r = client
            .post(server.url("/v1/anomaly/check"))
            .json(&body(&k, d))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = client
        .post(server.url("/v1/anomaly/check"))
        .body("{")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(status(&client, &server.url("/readyz")).await, 200);
    let r = client
        .get(server.url("/metrics"))
        .header("accept", "application/openmetrics-text")
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("openmetrics")
    );
    let metrics = r.text().await.unwrap();
    for line in [
        r#"anomaly_checks_total{status="ANOMALY",service="checkout"} 1"#,
        r#"anomaly_checks_total{status="NORMAL",service="checkout"} 2"#,
        r#"anomaly_baseline_cache_requests_total{result="hit"} 2"#,
        r#"anomaly_baseline_cache_requests_total{result="miss"} 1"#,
        r#"anomaly_baseline_cache_requests_total{result="negative"} 0"#,
        r#"anomaly_http_requests_total{route="/v1/anomaly/check",status="200"} 3"#,
        r#"anomaly_http_requests_total{route="/v1/anomaly/check",status="400"} 1"#,
        r#"anomaly_http_request_duration_seconds_count{route="/v1/anomaly/check"} 4"#,
        "anomaly_redis_up 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn sheds_load_past_the_concurrency_limit() {
    let redis = RedisServer::start_ephemeral();
    let proxy = delaying_proxy(redis.addr(), Duration::from_millis(500)).await;
    let mut config = config(&format!("redis://{proxy}"), "service-shed");
    config.common.redis.timeout = Duration::from_secs(10);
    config.service.limits.max_concurrency = 1;
    let app = App::new(&config);
    let k = key("svc", "GET /slow", 1, DayType::Weekday);
    // Four requests at once on two routes: the first polled takes the only slot and waits on
    // the slow Redis; the others are shed at once, whatever their route, because the limit
    // is one budget for the whole API.
    let started = Instant::now();
    let baseline_url = "/v1/baseline?service=a&endpoint=b&hour=1&dayType=weekday";
    let check = body(&k, 1.0);
    let (first, second, third, fourth) = tokio::join!(
        app.check(&check),
        app.get(baseline_url),
        app.check(&check),
        app.get(baseline_url),
    );
    assert_eq!(first.status, 200, "{}", first.text);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "Redis was slow"
    );
    for shed in [second, third, fourth] {
        assert_eq!(shed.status, 503, "{}", shed.text);
        assert_eq!(shed.error_code(), "OVERLOADED");
        assert_eq!(shed.headers["retry-after"], "1");
    }
    // Probes are not limited, and the slot is free again.
    assert_eq!(app.get("/healthz").await.status, 200);
    assert_eq!(app.get(baseline_url).await.status, 404);
}

#[tokio::test]
async fn shutdown_finishes_requests_in_flight() {
    let redis = RedisServer::start_ephemeral();
    let proxy = delaying_proxy(redis.addr(), Duration::from_millis(400)).await;
    let mut config = config(&format!("redis://{proxy}"), "service-shutdown");
    config.common.redis.timeout = Duration::from_secs(10);
    let server = Server::start(&config).await;
    let addr = server.addr;
    let url = server.url("/v1/anomaly/check");
    let k = key("svc", "GET /slow", 1, DayType::Weekday);
    let in_flight = tokio::spawn(async move {
        let r = reqwest::Client::new()
            .post(url)
            .json(&body(&k, 1.0))
            .send()
            .await
            .unwrap();
        (Instant::now(), r.status().as_u16(), r.text().await.unwrap())
    });
    // Connecting to Redis through the proxy takes several delayed round trips, so the request
    // is still waiting when shutdown begins (asserted below, not assumed).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = Instant::now();
    server.stop().await.unwrap();
    let (answered, status, text) = in_flight.await.unwrap();
    assert!(
        answered > stopping,
        "the request was not in flight at shutdown"
    );
    assert_eq!(status, 200, "{text}");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn shutdown_gives_up_on_requests_after_the_grace_period() {
    let redis = RedisServer::start_ephemeral();
    let proxy = delaying_proxy(redis.addr(), Duration::from_secs(5)).await;
    let mut config = config(&format!("redis://{proxy}"), "service-grace");
    config.common.redis.timeout = Duration::from_secs(30);
    config.service.limits.request_timeout = Duration::from_secs(30);
    config.service.limits.shutdown_grace = Duration::from_millis(300);
    let server = Server::start(&config).await;
    let url = server.url("/v1/anomaly/check");
    let k = key("svc", "GET /stuck", 1, DayType::Weekday);
    tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .json(&body(&k, 1.0))
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = Instant::now();
    server.stop().await.unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "stopped after {:?}",
        stopping.elapsed()
    );
}
