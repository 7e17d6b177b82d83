//! The boundary of the rule, to the last bit: a duration equal to the threshold the checker
//! reported, sent back as the JSON number it was given, is NORMAL, and the next larger double
//! is an ANOMALY. This holds only if JSON numbers are parsed exactly (serde_json's
//! `float_roundtrip`): the default parser is one ulp off for some 17-digit numbers.

use std::sync::atomic::{AtomicU64, Ordering};

use anomaly_core::DayType;
use anomaly_testkit::shared_redis_url;
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::{App, baseline, config, key, seed, start};

/// The JSON text of `field` in a response, exactly as the checker wrote it.
fn raw_number<'a>(text: &'a str, field: &str) -> &'a str {
    let at = text
        .find(&format!("\"{field}\":"))
        .unwrap_or_else(|| panic!("no {field} in {text}"))
        + field.len()
        + 3;
    let rest = &text[at..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
        .unwrap_or(rest.len());
    &rest[..end]
}

/// A check request whose `durationMs` is the JSON number `duration` verbatim.
fn request(service: &str, endpoint: &str, duration: &str) -> Value {
    let text = format!(
        r#"{{"rootServiceName": {}, "rootTraceName": {}, "startTimeUnixNano": {}, "durationMs": {duration}}}"#,
        json!(service),
        json!(endpoint),
        json!(start(14, DayType::Weekday)),
    );
    serde_json::from_str(&text).expect("a valid request")
}

/// The case from issue 12: p95 189.96914999999998 gives 379.93829999999997, which the default
/// parser read as the next double up and judged an anomaly by 5.7e-14. Thresholds are now
/// judged and reported at microsecond precision (issue 14): 379.938.
#[tokio::test]
async fn a_duration_equal_to_the_threshold_is_normal() {
    let c = config(&shared_redis_url(), "threshold-bit");
    let k = key("checkout", "POST /api/checkout", 14, DayType::Weekday);
    seed(
        &c,
        &[(k, baseline(100.0, 189.969_149_999_999_98, 1.0, 1000))],
    )
    .await;
    let app = App::new(&c);
    let r = app
        .check(&request("checkout", "POST /api/checkout", "379.938"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(raw_number(&r.text, "threshold"), "379.938");
    assert_eq!(r.body["status"], "NORMAL", "{}", r.text);
    assert_eq!(r.body["excessMs"], 0.0, "{}", r.text);
}

/// Full-precision doubles across the magnitudes latencies take, up to `max` ms; thresholds stay
/// under the checker's 24-hour cap on a duration.
fn positive(max: f64) -> impl Strategy<Value = f64> {
    prop_oneof![0.0..1.0f64, 1.0..1000.0f64, 1000.0..max]
}

#[test]
fn the_reported_threshold_sent_back_is_normal_and_the_next_double_an_anomaly() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let c = config(&shared_redis_url(), "threshold-prop");
    let app = runtime.block_on(async { App::new(&c) });
    let case = AtomicU64::new(0);
    let cfg = ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(cfg, |(p50 in positive(1.0e7), spread in positive(1.0e7), mad in positive(1.0e6))| {
        let endpoint = format!("GET /case/{}", case.fetch_add(1, Ordering::Relaxed));
        let k = key("svc", &endpoint, 14, DayType::Weekday);
        let (status, threshold, at, above) = runtime.block_on(async {
            seed(&c, &[(k, baseline(p50, p50 + spread, mad, 1000))]).await;
            let first = app.check(&request("svc", &endpoint, "0")).await;
            assert_eq!(first.status, 200, "{}", first.text);
            let threshold = raw_number(&first.text, "threshold").to_owned();
            let at = app.check(&request("svc", &endpoint, &threshold)).await;
            let t: f64 = threshold.parse().unwrap();
            let next = f64::from_bits(t.to_bits() + 1);
            let above = app.check(&request("svc", &endpoint, &next.to_string())).await;
            (first.body["status"].clone(), threshold, at, above)
        });
        prop_assert_eq!(status, "NORMAL");
        prop_assert_eq!(&at.body["status"], "NORMAL", "{} sent back: {}", threshold, at.text);
        prop_assert_eq!(raw_number(&at.text, "threshold"), threshold.as_str());
        prop_assert_eq!(&above.body["status"], "ANOMALY", "one ulp above {}: {}", threshold, above.text);
    });
}
