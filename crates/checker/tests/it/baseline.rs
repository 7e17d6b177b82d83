//! `GET /v1/baseline`: the stored baseline, its key and its bucket's local time range.

use anomaly_core::DayType;
use anomaly_testkit::shared_redis_url;
use serde_json::json;

use crate::{App, baseline, config, key, seed};

#[tokio::test]
async fn shows_the_stored_baseline_and_its_bucket() {
    let mut config = config(&shared_redis_url(), "baseline-get");
    config.common.holidays = vec!["2025-12-25".parse().unwrap()];
    let weekday = key("checkout", "POST /pay", 14, DayType::Weekday);
    let weekend = key("pay|ments", "GET /a b", 23, DayType::Weekend);
    let stored = baseline(120.0, 310.0, 18.0, 1000);
    seed(
        &config,
        &[
            (weekday.clone(), stored),
            (weekend.clone(), baseline(1.0, 2.0, 1.0, 10)),
        ],
    )
    .await;
    let app = App::new(&config);

    let r = app
        .get("/v1/baseline?service=checkout&endpoint=POST%20%2Fpay&hour=14&dayType=weekday")
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body,
        json!({
            "key": {"service": "checkout", "endpoint": "POST /pay", "hour": 14,
                    "dayType": "weekday"},
            "baseline": {"p50": 120.0, "p95": 310.0, "mad": 18.0, "sampleCount": 1000,
                         "updatedAt": stored.updated_at},
            "bucket": {"timezone": "Asia/Taipei", "days": ["Mon", "Tue", "Wed", "Thu", "Fri"],
                       "holidays": [], "from": "14:00", "to": "15:00",
                       "description": "weekdays 14:00-15:00 Asia/Taipei"},
            "threshold": 620.0,
            "minSamples": 50,
        })
    );

    let r = app
        .get("/v1/baseline?service=pay%7Cments&endpoint=GET+%2Fa+b&hour=23&dayType=weekend")
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["key"]["service"], "pay|ments");
    assert_eq!(r.body["bucket"]["days"], json!(["Sat", "Sun"]));
    assert_eq!(r.body["bucket"]["holidays"], json!(["2025-12-25"]));
    assert_eq!(r.body["bucket"]["to"], "24:00");
    assert_eq!(
        r.body["bucket"]["description"],
        "weekends and holidays 23:00-24:00 Asia/Taipei"
    );
    assert_eq!(r.body["threshold"], json!(null), "10 samples are too few");
}

#[tokio::test]
async fn an_absent_baseline_is_a_404_with_an_error_body() {
    let config = config(&shared_redis_url(), "baseline-absent");
    seed(
        &config,
        &[(
            key("checkout", "POST /pay", 14, DayType::Weekday),
            baseline(1.0, 2.0, 1.0, 100),
        )],
    )
    .await;
    let app = App::new(&config);
    // Same service and endpoint, another bucket.
    let r = app
        .get("/v1/baseline?service=checkout&endpoint=POST%20%2Fpay&hour=15&dayType=weekday")
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "BASELINE_NOT_FOUND");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("checkout POST /pay on weekdays 15:00-16:00 Asia/Taipei")
    );
}
