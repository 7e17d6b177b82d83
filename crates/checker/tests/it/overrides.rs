//! Per-service and per-endpoint overrides (globs, first match wins), the absolute floor and
//! the answer's new fields, against baselines in a real Redis.

use anomaly_core::{DayType, Override};
use anomaly_testkit::shared_redis_url;
use serde_json::json;

use crate::{App, baseline, body, config, key, seed};

fn entry(service: Option<&str>, endpoint: Option<&str>) -> Override {
    Override {
        service: service.map(str::to_owned),
        endpoint: endpoint.map(str::to_owned),
        ..Override::default()
    }
}

#[tokio::test]
async fn the_first_matching_override_tunes_the_rule_and_is_named() {
    let mut c = config(&shared_redis_url(), "overrides");
    c.common.overrides = vec![
        Override {
            factor: Some(3.0),
            min_threshold_ms: Some(50.0),
            ..entry(Some("checkout"), Some("POST /pay*"))
        },
        Override {
            k: Some(0.0),
            min_samples: Some(10),
            ..entry(Some("check*"), None)
        },
    ];
    c.common.stats.min_threshold_ms = 1.0;
    let pay = key("checkout", "POST /pay/v2", 14, DayType::Weekday);
    let cart = key("checkout", "GET /cart", 14, DayType::Weekday);
    let other = key("search", "GET /q", 14, DayType::Weekday);
    seed(
        &c,
        &[
            (pay.clone(), baseline(2.0, 3.0, 0.1, 1000)),
            (cart.clone(), baseline(100.0, 150.0, 50.0, 12)),
            (other.clone(), baseline(2.0, 3.0, 0.1, 1000)),
        ],
    )
    .await;
    let app = App::new(&c);

    // The first entry: factor 3 (3 x 3 = 9), and its floor of 50 ms above both bounds.
    let r = app.check(&body(&pay, 49.0)).await;
    assert_eq!(r.body["status"], "NORMAL", "{}", r.text);
    assert_eq!(r.body["threshold"], 50.0);
    assert_eq!(r.body["bound"], "min_threshold_ms");
    assert_eq!(r.body["p95Bound"], 9.0);
    assert_eq!(
        r.body["override"],
        json!({"index": 0, "service": "checkout", "endpoint": "POST /pay*"})
    );
    assert_eq!(
        (r.body["factor"].clone(), r.body["minThresholdMs"].clone()),
        (json!(3.0), json!(50.0))
    );
    let reason = r.body["reason"].as_str().unwrap();
    assert!(
        reason.ends_with(
            "; tuned by overrides[0] (service checkout, endpoint POST /pay*): factor 3.0, k 10, \
             min_samples 50, min_threshold_ms 50"
        ),
        "{reason}"
    );
    assert_eq!(
        app.check(&body(&pay, 50.001)).await.body["status"],
        "ANOMALY"
    );

    // The second entry matches GET /cart: 12 samples are enough under its min_samples 10.
    let r = app.check(&body(&cart, 301.0)).await;
    assert_eq!(r.body["status"], "ANOMALY", "{}", r.text);
    assert_eq!(r.body["override"]["index"], 1);
    assert_eq!(r.body["minSamples"], 10);
    assert_eq!(r.body["threshold"], 300.0, "k 0: the p95 bound alone");

    // No entry: the global settings, and the global floor of 1 ms.
    let r = app.check(&body(&other, 9.5)).await;
    assert_eq!(r.body["override"], json!(null));
    assert_eq!(r.body["threshold"], 12.0);
    assert_eq!(r.body["baselineSource"], "exact");
    assert_eq!(r.body["bucketSampleCount"], 1000);
    assert_eq!(
        r.body["coverage"],
        json!({"hours": [14], "dayTypes": ["weekday"], "sampleCount": 1000,
               "description": "weekdays 14:00-15:00 Asia/Taipei"})
    );
    // Seeded without quantiles (as baselines written before them): no rank.
    assert_eq!(r.body["rank"], json!(null));
}

/// Every millisecond figure is rounded to 3 decimals, in JSON and in the sentence.
#[tokio::test]
async fn figures_have_at_most_three_decimals() {
    let c = config(&shared_redis_url(), "rounding");
    let k = key("svc", "GET /r", 14, DayType::Weekday);
    seed(
        &c,
        &[(
            k.clone(),
            baseline(120.123_456_7, 150.699_999_999_999_9, 18.000_000_1, 1000),
        )],
    )
    .await;
    let app = App::new(&c);
    let r = app.check(&body(&k, 450.123_456_789)).await;
    for field in [
        "threshold",
        "p95Bound",
        "madBound",
        "excessMs",
        "durationMs",
    ] {
        let x = r.body[field].as_f64().unwrap();
        assert_eq!((x * 1000.0).round() / 1000.0, x, "{field}: {x}");
    }
    for field in ["p50", "p95", "mad"] {
        let x = r.body["baseline"][field].as_f64().unwrap();
        assert_eq!((x * 1000.0).round() / 1000.0, x, "baseline.{field}: {x}");
    }
    assert_eq!(r.body["baseline"]["p95"], 150.7);
    assert_eq!(r.body["threshold"], 301.4);
    assert!(
        r.body["reason"].as_str().unwrap().contains("p95 150.7 ms"),
        "{}",
        r.text
    );
}
