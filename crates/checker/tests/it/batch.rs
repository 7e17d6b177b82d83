//! `POST /v1/anomaly/check/batch`: order, per-item errors, size limit, one Redis round trip.

use std::time::{Duration, Instant};

use anomaly_core::DayType;
use anomaly_testkit::{RedisServer, shared_redis_url};
use serde_json::{Value, json};

use crate::{App, baseline, body, calls, config, delaying_proxy, key, seed};

#[tokio::test]
async fn answers_in_order_with_per_item_errors() {
    let config = config(&shared_redis_url(), "batch-order");
    let a = key("svc", "GET /a", 10, DayType::Weekday);
    let b = key("svc", "GET /b", 10, DayType::Weekday);
    seed(
        &config,
        &[
            (a.clone(), baseline(100.0, 200.0, 10.0, 1000)),
            (b.clone(), baseline(100.0, 200.0, 10.0, 10)),
        ],
    )
    .await;
    let app = App::new(&config);
    let items = json!([
        body(&a, 500.0),
        body(&a, 300.0),
        {"rootServiceName": "svc", "rootTraceName": "GET /a",
         "startTimeUnixNano": crate::start(10, DayType::Weekday), "durationMs": -1},
        body(&b, 500.0),
        "not an object",
        {"rootServiceName": "", "rootTraceName": "GET /a",
         "startTimeUnixNano": crate::start(10, DayType::Weekday), "durationMs": 1},
        body(&key("svc", "GET /none", 10, DayType::Weekday), 1.0),
        body(&a, 400.0),
    ]);
    let r = app
        .post("/v1/anomaly/check/batch", &json!({"items": items}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let results = r.body["results"].as_array().unwrap();
    let summary: Vec<String> = results
        .iter()
        .map(|r| match r["error"]["code"].as_str() {
            Some(code) => code.to_owned(),
            None => r["status"].as_str().unwrap().to_owned(),
        })
        .collect();
    assert_eq!(
        summary,
        [
            "ANOMALY",
            "NORMAL",
            "INVALID_DURATION",
            "INSUFFICIENT_DATA",
            "INVALID_ITEM",
            "INVALID_SERVICE",
            "INSUFFICIENT_DATA",
            "NORMAL",
        ]
    );
    // Each answer is the single check's answer, durations in order.
    let durations: Vec<Value> = results.iter().map(|r| r["durationMs"].clone()).collect();
    assert_eq!(durations[0], 500.0);
    assert_eq!(durations[1], 300.0);
    assert_eq!(durations[7], 400.0);
    assert_eq!(results[0]["threshold"], 400.0);
    assert!(
        results[2]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("negative")
    );
    let single = app.check(&body(&a, 500.0)).await;
    assert_eq!(single.body["reason"], results[0]["reason"]);
    // An empty batch is a valid, empty answer.
    let r = app
        .post("/v1/anomaly/check/batch", &json!({"items": []}))
        .await;
    assert_eq!((r.status.as_u16(), &r.body), (200, &json!({"results": []})));
}

#[tokio::test]
async fn a_thousand_items_cost_two_hmgets_per_distinct_key() {
    let server = RedisServer::start_ephemeral();
    let config = config(&server.url(), "batch-thousand");
    let keys: Vec<_> = (0..50)
        .map(|i| {
            key(
                "svc",
                &format!("GET /r/{i}"),
                (i % 24) as u8,
                DayType::Weekday,
            )
        })
        .collect();
    // Half the keys have a baseline; the rest are absent.
    let seeded: Vec<_> = keys
        .iter()
        .step_by(2)
        .map(|k| (k.clone(), baseline(100.0, 200.0, 10.0, 1000)))
        .collect();
    seed(&config, &seeded).await;
    let app = App::new(&config);
    let items: Vec<Value> = (0..1000)
        .map(|i| {
            body(
                &keys[i % keys.len()],
                if i % 3 == 0 { 1000.0 } else { 10.0 },
            )
        })
        .collect();
    let before = calls(&server, "hmget");
    let r = app
        .post("/v1/anomaly/check/batch", &json!({"items": items}))
        .await;
    assert_eq!(r.status, 200);
    let results = r.body["results"].as_array().unwrap();
    assert_eq!(results.len(), 1000);
    for (i, result) in results.iter().enumerate() {
        let want = match (i % keys.len() % 2, i % 3) {
            (1, _) => "INSUFFICIENT_DATA",
            (_, 0) => "ANOMALY",
            _ => "NORMAL",
        };
        assert_eq!(result["status"], want, "item {i}");
    }
    // Per distinct key, the bucket's baseline and the endpoint's fallback levels: two HMGETs,
    // all in one pipeline.
    assert_eq!(
        calls(&server, "hmget") - before,
        100,
        "two HMGETs per distinct key"
    );
    // The second time every key, present or absent, comes from the cache.
    let r = app
        .post("/v1/anomaly/check/batch", &json!({"items": items}))
        .await;
    assert_eq!(r.body["results"].as_array().unwrap().len(), 1000);
    assert_eq!(calls(&server, "hmget") - before, 100, "all cached");
}

#[tokio::test]
async fn fetches_all_distinct_baselines_in_one_round_trip() {
    // Every burst to Redis is held for 500 ms: a round trip costs at least that, so 40
    // sequential reads would take 20 s, and one pipelined read as long as a single key's.
    let server = RedisServer::start_ephemeral();
    let delay = Duration::from_millis(500);
    let proxy = delaying_proxy(server.addr(), delay).await;
    let mut config = config(&format!("redis://{proxy}"), "batch-round-trip");
    config.common.redis.timeout = Duration::from_secs(10);
    config.service.cache.ttl = Duration::ZERO;
    let keys: Vec<_> = (0..40)
        .map(|i| key("svc", &format!("GET /r/{i}"), 12, DayType::Weekday))
        .collect();
    seed(
        &config,
        &keys
            .iter()
            .map(|k| (k.clone(), baseline(100.0, 200.0, 10.0, 1000)))
            .collect::<Vec<_>>(),
    )
    .await;
    let app = App::new(&config);
    // Warm the connection pool, so connecting is not measured.
    assert_eq!(app.get("/readyz").await.status, 200);

    let started = Instant::now();
    let r = app.check(&body(&keys[0], 1.0)).await;
    let single = started.elapsed();
    assert_eq!(r.body["status"], "NORMAL", "{}", r.text);

    let items: Vec<Value> = keys.iter().map(|k| body(k, 1.0)).collect();
    let started = Instant::now();
    let r = app
        .post("/v1/anomaly/check/batch", &json!({"items": items}))
        .await;
    let batch = started.elapsed();
    assert!(
        r.body["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "NORMAL"),
        "{}",
        r.text
    );
    assert!(
        batch < single + delay,
        "40 distinct keys took {batch:?}, one key {single:?}: more than one round trip"
    );
}

#[tokio::test]
async fn refuses_batches_over_the_limit_and_bodies_without_items() {
    let mut config = config(&shared_redis_url(), "batch-limit");
    config.service.max_batch_items = 3;
    let app = App::new(&config);
    let k = key("svc", "GET /a", 1, DayType::Weekday);
    let r = app
        .post(
            "/v1/anomaly/check/batch",
            &json!({"items": vec![body(&k, 1.0); 4]}),
        )
        .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.error_code(), "BATCH_TOO_LARGE");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("4 items")
    );
    let r = app
        .post(
            "/v1/anomaly/check/batch",
            &json!({"items": vec![body(&k, 1.0); 3]}),
        )
        .await;
    assert_eq!(r.status, 200);
    for bad in [
        json!({}),
        json!({"items": null}),
        json!({"items": {}}),
        json!([]),
    ] {
        let r = app.post("/v1/anomaly/check/batch", &bad).await;
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.error_code(), "INVALID_BODY", "{bad}");
    }
}
