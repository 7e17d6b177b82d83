//! A thin bucket, end to end: traces pushed to the ingester, levels computed by the
//! recomputer, the checker judging against the nearby hours and saying so.

use std::time::Duration;

use anomaly_testkit::{eventually, shared_redis_url, unique_prefix};
use chrono::TimeZone as _;
use serde_json::{Value, json};

use crate::Stack;

/// 14:30 on Wednesday 2025-11-26 in Taipei, plus `hours` and `i` milliseconds.
fn at(hour: u32, i: u64) -> String {
    let t = chrono_tz::Asia::Taipei
        .with_ymd_and_hms(2025, 11, 26, hour, 30, 0)
        .unwrap()
        .timestamp_nanos_opt()
        .unwrap() as u64;
    (t + i * 1_000_000).to_string()
}

#[tokio::test]
async fn a_thin_bucket_is_judged_against_its_nearby_hours() {
    let stack = Stack::start(&shared_redis_url(), &unique_prefix("fallback")).await;
    let client = reqwest::Client::new();
    // 12 samples at 14:00, 200 at each of 12:00, 13:00 and 15:00, all 100-119 ms.
    let mut traces = Vec::new();
    let mut n = 0u64;
    for (hour, count) in [(14, 12), (12, 200), (13, 200), (15, 200)] {
        for i in 0..count {
            n += 1;
            traces.push(
                json!({"traceID": format!("{n:x}"), "rootServiceName": "shop",
                "rootTraceName": "GET /thin", "startTimeUnixNano": at(hour, i),
                "durationMs": 100 + (i % 20)}),
            );
        }
    }
    let r: Value = client
        .post(stack.ingester.url("/v1/traces/ingest"))
        .json(&json!({"traces": traces}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["accepted"], 612, "{r}");

    let check = json!({"rootServiceName": "shop", "rootTraceName": "GET /thin",
        "startTimeUnixNano": at(14, 999), "durationMs": 400});
    let url = stack.checker.url("/v1/anomaly/check");
    let ask = |body: Value| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let r = client.post(url).json(&body).send().await.unwrap();
            r.json::<Value>().await.unwrap()
        }
    };
    let judged = eventually(Duration::from_secs(20), || {
        let answer = ask(check.clone());
        async move { answer.await["baselineSource"] == "nearby" }
    })
    .await;
    let answer = ask(check.clone()).await;
    assert!(
        judged,
        "the checker falls back to the nearby hours: {answer}"
    );
    assert_eq!(answer["status"], "ANOMALY");
    assert_eq!(answer["bucketSampleCount"], 12);
    assert_eq!(
        answer["coverage"],
        json!({"hours": [12, 13, 14, 15, 16], "dayTypes": ["weekday"], "sampleCount": 612,
               "description": "weekdays 12:00-17:00 Asia/Taipei"})
    );
    assert_eq!(answer["baseline"]["sampleCount"], 612);
    assert_eq!(answer["rank"], 1.0);
    let reason = answer["reason"].as_str().unwrap();
    assert!(
        reason.contains(
            ", judged against shop GET /thin on weekdays 12:00-17:00 Asia/Taipei (nearby baseline \
             of 612 samples updated "
        ) && reason.contains("; the 14:00 bucket has 12 samples); slower than 100% of the 612 requests in that baseline"),
        "{reason}"
    );
    // A normal duration sits inside the distribution: its rank says where.
    let mid = json!({"rootServiceName": "shop", "rootTraceName": "GET /thin",
        "startTimeUnixNano": at(14, 998), "durationMs": 109.5});
    let r = ask(mid).await;
    assert_eq!(r["status"], "NORMAL", "{r}");
    let rank = r["rank"].as_f64().unwrap();
    assert!((0.4..=0.6).contains(&rank), "{r}");
    stack.stop().await;
}
