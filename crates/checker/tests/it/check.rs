//! `POST /v1/anomaly/check`: exact verdicts, thresholds and explanations from seeded baselines.

use anomaly_core::DayType;
use anomaly_testkit::shared_redis_url;
use serde_json::json;

use crate::{App, baseline, body, config, key, seed};

#[tokio::test]
async fn judges_against_the_p95_bound_with_exact_numbers() {
    let config = config(&shared_redis_url(), "check-p95");
    let pay = key("checkout", "POST /pay", 14, DayType::Weekday);
    let stored = baseline(120.0, 310.0, 18.0, 1000);
    seed(&config, &[(pay.clone(), stored)]).await;
    let app = App::new(&config);

    let r = app.check(&body(&pay, 1840.0)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["isAnomaly"], true);
    assert_eq!(r.body["status"], "ANOMALY");
    assert_eq!(r.body["bucket"]["hour"], 14);
    assert_eq!(r.body["bucket"]["dayType"], "weekday");
    assert_eq!(
        r.body["bucket"]["description"],
        "weekdays 14:00-15:00 Asia/Taipei"
    );
    assert_eq!(
        r.body["baseline"],
        json!({"p50": 120.0, "p95": 310.0, "mad": 18.0, "sampleCount": 1000,
               "updatedAt": stored.updated_at})
    );
    assert_eq!(r.body["threshold"], 620.0);
    assert_eq!(r.body["bound"], "p95 * factor");
    assert_eq!(r.body["p95Bound"], 620.0);
    assert_eq!(r.body["madBound"], 300.0);
    assert_eq!(r.body["excessMs"], 1220.0);
    assert_eq!(
        r.body["reason"],
        "1840 ms exceeds the threshold 620 ms by 1220 ms (p95 310 ms x factor 2.0; the MAD bound \
         p50 120 ms + 10 x MAD 18 ms = 300 ms is lower) for checkout POST /pay on weekdays \
         14:00-15:00 Asia/Taipei, baseline of 1000 samples updated 12 s ago"
    );

    // Equal to the threshold is normal; just above it is an anomaly.
    let r = app.check(&body(&pay, 620.0)).await;
    assert_eq!(
        (r.body["status"].as_str(), &r.body["isAnomaly"]),
        (Some("NORMAL"), &json!(false))
    );
    assert!(
        r.body["reason"]
            .as_str()
            .unwrap()
            .starts_with("620 ms equals the threshold 620 ms, which is not above it"),
        "{}",
        r.text
    );
    let r = app.check(&body(&pay, 620.001)).await;
    assert_eq!(r.body["status"], "ANOMALY");
    assert_eq!(r.body["isAnomaly"], true);
    let r = app.check(&body(&pay, 0.0)).await;
    assert_eq!(r.body["status"], "NORMAL");
    assert_eq!(r.body["excessMs"], -620.0);
}

#[tokio::test]
async fn judges_against_the_mad_bound_when_it_is_higher() {
    let config = config(&shared_redis_url(), "check-mad");
    // MAD bound 100 + 10 x 50 = 600 beats the p95 bound 2 x 150 = 300.
    let k = key("search", "GET /q", 3, DayType::Weekend);
    seed(&config, &[(k.clone(), baseline(100.0, 150.0, 50.0, 60))]).await;
    let app = App::new(&config);

    let r = app.check(&body(&k, 600.0)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "NORMAL");
    assert_eq!(r.body["threshold"], 600.0);
    assert_eq!(r.body["bound"], "p50 + k * MAD");
    assert_eq!(r.body["bucket"]["dayType"], "weekend");
    assert_eq!(r.body["bucket"]["hour"], 3);
    let r = app.check(&body(&k, 600.5)).await;
    assert_eq!(r.body["status"], "ANOMALY");
    assert_eq!(
        r.body["reason"],
        "600.5 ms exceeds the threshold 600 ms by 0.5 ms (p50 100 ms + 10 x MAD 50 ms; the p95 \
         bound p95 150 ms x factor 2.0 = 300 ms is lower) for search GET /q on weekends \
         03:00-04:00 Asia/Taipei, baseline of 60 samples updated 12 s ago"
    );
    // A MAD below stats.mad_epsilon_ms counts as 1 ms: 100 + 10 x 1 = 110 beats 2 x 50.
    let flat = key("search", "GET /flat", 3, DayType::Weekend);
    seed(&config, &[(flat.clone(), baseline(100.0, 50.0, 0.0, 500))]).await;
    let r = app.check(&body(&flat, 110.0)).await;
    assert_eq!(
        (r.body["status"].as_str(), r.body["threshold"].as_f64()),
        (Some("NORMAL"), Some(110.0))
    );
    let r = app.check(&body(&flat, 110.5)).await;
    assert_eq!(r.body["status"], "ANOMALY");
}

#[tokio::test]
async fn needs_min_samples_before_judging() {
    let config = config(&shared_redis_url(), "check-min");
    let thin = key("cart", "GET /cart", 9, DayType::Weekday);
    let enough = key("cart", "GET /items", 9, DayType::Weekday);
    seed(
        &config,
        &[
            (thin.clone(), baseline(10.0, 20.0, 1.0, 49)),
            (enough.clone(), baseline(10.0, 20.0, 1.0, 50)),
        ],
    )
    .await;
    let app = App::new(&config);

    let r = app.check(&body(&thin, 5000.0)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "INSUFFICIENT_DATA");
    assert_eq!(r.body["isAnomaly"], false);
    assert_eq!(r.body["threshold"], json!(null));
    assert_eq!(r.body["baseline"]["sampleCount"], 49);
    assert_eq!(r.body["minSamples"], 50);
    assert_eq!(
        r.body["reason"],
        "not judged: 49 of the 50 samples needed for cart GET /cart on weekdays 09:00-10:00 \
         Asia/Taipei; 5000 ms was not compared"
    );
    assert_eq!(r.body["baselineSource"], json!(null));
    assert_eq!(r.body["bucketSampleCount"], 49);

    let r = app.check(&body(&enough, 5000.0)).await;
    assert_eq!(r.body["status"], "ANOMALY");
    assert_eq!(r.body["threshold"], 40.0);

    // No baseline at all: null, and the reason says so.
    let none = key("cart", "GET /nothing", 9, DayType::Weekday);
    let r = app.check(&body(&none, 5.0)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["status"], "INSUFFICIENT_DATA");
    assert_eq!(r.body["baseline"], json!(null));
    let reason = r.body["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("not judged: 0 of the 50 samples needed")
            && reason.ends_with("(no baseline yet)"),
        "{reason}"
    );
}

#[tokio::test]
async fn buckets_in_the_configured_zone_and_accepts_both_number_forms() {
    let mut config = config(&shared_redis_url(), "check-zone");
    config.common.timezone = chrono_tz::UTC;
    let app = App::new(&config);
    // 2025-11-25T14:30 Asia/Taipei is 06:30 UTC.
    let k = key("checkout", "POST /pay", 6, DayType::Weekday);
    seed(&config, &[(k.clone(), baseline(120.0, 310.0, 18.0, 1000))]).await;
    let start: u64 = crate::start(14, DayType::Weekday).parse().unwrap();
    for (start, duration) in [
        (json!(start), json!(1000)),
        (json!(start.to_string()), json!("1000.0")),
    ] {
        let r = app
            .check(
                &json!({"rootServiceName": "checkout", "rootTraceName": "POST /pay",
                            "startTimeUnixNano": start, "durationMs": duration,
                            "extra": "ignored extra field"}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["bucket"]["hour"], 6);
        assert_eq!(r.body["bucket"]["description"], "weekdays 06:00-07:00 UTC");
        assert_eq!(r.body["status"], "ANOMALY");
    }
}

#[tokio::test]
async fn names_with_separators_and_unicode_find_their_baseline() {
    let config = config(&shared_redis_url(), "check-names");
    let odd = key("pay|ments {eu}", "GET /a%20b|c", 0, DayType::Weekday);
    let unicode = key("結帳", "POST /付款", 23, DayType::Weekend);
    seed(
        &config,
        &[
            (odd.clone(), baseline(1.0, 2.0, 1.0, 100)),
            (unicode.clone(), baseline(1.0, 2.0, 1.0, 100)),
        ],
    )
    .await;
    let app = App::new(&config);
    for k in [&odd, &unicode] {
        let r = app.check(&body(k, 1.0)).await;
        assert_eq!(r.body["status"], "NORMAL", "{}", r.text);
        assert_eq!(r.body["baseline"]["sampleCount"], 100);
    }
    let r = app.check(&body(&unicode, 1.0)).await;
    assert_eq!(
        r.body["bucket"]["description"],
        "weekends 23:00-24:00 Asia/Taipei"
    );
}

#[tokio::test]
async fn a_trace_id_is_echoed_with_its_link_and_a_bad_one_refused() {
    let mut config = config(&shared_redis_url(), "check-trace-id");
    config.common.links.trace_url = "https://grafana.example/explore?trace={traceID}".to_owned();
    let app = App::new(&config);
    let k = key("checkout", "POST /pay", 14, DayType::Weekday);
    seed(&config, &[(k.clone(), baseline(120.0, 310.0, 18.0, 1000))]).await;
    let mut request = body(&k, 1840.0);
    request["traceID"] = json!("AF7651916cd43dd8448eb211c80319c");
    let r = app.check(&request).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["traceID"], "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(
        r.body["traceUrl"],
        "https://grafana.example/explore?trace=0af7651916cd43dd8448eb211c80319c"
    );
    // Without one, neither field.
    let r = app.check(&body(&k, 1840.0)).await;
    assert!(r.body.get("traceID").is_none() && r.body.get("traceUrl").is_none());
    for bad in [json!("xyz"), json!(12), json!("f".repeat(33))] {
        request["traceID"] = bad;
        let r = app.check(&request).await;
        assert_eq!(
            (r.status.as_u16(), r.error_code()),
            (400, "INVALID_TRACE_ID"),
            "{}",
            r.text
        );
    }
}
