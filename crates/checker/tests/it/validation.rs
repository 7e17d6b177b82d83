//! Bad input: every mistake gets a 4xx in the contract's error shape, never a 500.

use anomaly_core::DayType;
use anomaly_testkit::shared_redis_url;
use axum::body::Body;
use axum::http::{Request, header};
use serde_json::{Value, json};

use crate::{App, config, start};

const CHECK: &str = "/v1/anomaly/check";

/// A valid check body with `field` replaced by `value` (or removed when `value` is None).
fn with(field: &str, value: Option<Value>) -> String {
    let mut body = json!({
        "rootServiceName": "checkout",
        "rootTraceName": "POST /pay",
        "startTimeUnixNano": start(14, DayType::Weekday),
        "durationMs": 100.0,
    });
    match value {
        Some(v) => body[field] = v,
        None => {
            body.as_object_mut().unwrap().remove(field);
        }
    }
    body.to_string()
}

fn post(path: &str, content_type: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut request = Request::post(path);
    if let Some(ct) = content_type {
        request = request.header(header::CONTENT_TYPE, ct);
    }
    request.body(body.into()).unwrap()
}

fn json_post(path: &str, body: impl Into<Body>) -> Request<Body> {
    post(path, Some("application/json"), body)
}

#[tokio::test]
async fn every_bad_request_is_a_4xx_in_the_error_shape() {
    let mut config = config(&shared_redis_url(), "validation");
    config.service.limits.max_body_bytes = 64 * 1024;
    let app = App::new(&config);
    let long = "x".repeat(257);
    let far_future = (u128::from(anomaly_core::UnixNanos::MAX) - 1).to_string();
    let in_two_hours = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        + 7_200_000_000_000)
        .to_string();
    // (what, request, status, code)
    let cases: Vec<(&str, Request<Body>, u16, &str)> = vec![
        (
            "malformed json",
            json_post(CHECK, "{\"rootServiceName\":"),
            400,
            "MALFORMED_JSON",
        ),
        (
            "not json at all",
            json_post(CHECK, "hello"),
            400,
            "MALFORMED_JSON",
        ),
        ("empty body", json_post(CHECK, ""), 400, "MALFORMED_JSON"),
        ("array body", json_post(CHECK, "[]"), 400, "INVALID_BODY"),
        (
            "no content type",
            post(CHECK, None, with("x", None)),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            "text/plain",
            post(CHECK, Some("text/plain"), with("x", None)),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            "oversized body",
            json_post(CHECK, format!("{{\"pad\": \"{}\"}}", "x".repeat(70_000))),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        (
            "missing service",
            json_post(CHECK, with("rootServiceName", None)),
            400,
            "INVALID_SERVICE",
        ),
        (
            "null service",
            json_post(CHECK, with("rootServiceName", Some(Value::Null))),
            400,
            "INVALID_SERVICE",
        ),
        (
            "numeric service",
            json_post(CHECK, with("rootServiceName", Some(json!(42)))),
            400,
            "INVALID_SERVICE",
        ),
        (
            "empty service",
            json_post(CHECK, with("rootServiceName", Some(json!("")))),
            400,
            "INVALID_SERVICE",
        ),
        (
            "257-byte service",
            json_post(CHECK, with("rootServiceName", Some(json!(long)))),
            400,
            "INVALID_SERVICE",
        ),
        (
            "missing endpoint",
            json_post(CHECK, with("rootTraceName", None)),
            400,
            "INVALID_ENDPOINT",
        ),
        (
            "object endpoint",
            json_post(CHECK, with("rootTraceName", Some(json!({"a": 1})))),
            400,
            "INVALID_ENDPOINT",
        ),
        (
            "257-byte endpoint",
            json_post(CHECK, with("rootTraceName", Some(json!(long)))),
            400,
            "INVALID_ENDPOINT",
        ),
        (
            "missing start",
            json_post(CHECK, with("startTimeUnixNano", None)),
            400,
            "INVALID_START_TIME",
        ),
        (
            "garbage start",
            json_post(CHECK, with("startTimeUnixNano", Some(json!("yesterday")))),
            400,
            "INVALID_START_TIME",
        ),
        (
            "negative start",
            json_post(CHECK, with("startTimeUnixNano", Some(json!(-5)))),
            400,
            "INVALID_START_TIME",
        ),
        (
            "fractional start",
            json_post(
                CHECK,
                with("startTimeUnixNano", Some(json!("1764050000000000000.5"))),
            ),
            400,
            "INVALID_START_TIME",
        ),
        (
            "start in seconds",
            json_post(CHECK, with("startTimeUnixNano", Some(json!(1_764_050_000)))),
            400,
            "INVALID_START_TIME",
        ),
        (
            "start after 2100",
            json_post(
                CHECK,
                with("startTimeUnixNano", Some(json!("99999999999999999999"))),
            ),
            400,
            "INVALID_START_TIME",
        ),
        (
            "start far in the future",
            json_post(CHECK, with("startTimeUnixNano", Some(json!(far_future)))),
            400,
            "INVALID_START_TIME",
        ),
        (
            "start two hours ahead",
            json_post(CHECK, with("startTimeUnixNano", Some(json!(in_two_hours)))),
            400,
            "INVALID_START_TIME",
        ),
        (
            "boolean start",
            json_post(CHECK, with("startTimeUnixNano", Some(json!(true)))),
            400,
            "INVALID_START_TIME",
        ),
        (
            "missing duration",
            json_post(CHECK, with("durationMs", None)),
            400,
            "INVALID_DURATION",
        ),
        (
            "negative duration",
            json_post(CHECK, with("durationMs", Some(json!(-0.5)))),
            400,
            "INVALID_DURATION",
        ),
        (
            "NaN duration",
            json_post(CHECK, with("durationMs", Some(json!("NaN")))),
            400,
            "INVALID_DURATION",
        ),
        (
            "infinite duration",
            json_post(CHECK, with("durationMs", Some(json!("inf")))),
            400,
            "INVALID_DURATION",
        ),
        (
            "absurd duration",
            json_post(CHECK, with("durationMs", Some(json!(1e12)))),
            400,
            "INVALID_DURATION",
        ),
        (
            "overflowing duration",
            json_post(CHECK, with("durationMs", Some(json!("1e400")))),
            400,
            "INVALID_DURATION",
        ),
        (
            "text duration",
            json_post(CHECK, with("durationMs", Some(json!("slow")))),
            400,
            "INVALID_DURATION",
        ),
        (
            "array duration",
            json_post(CHECK, with("durationMs", Some(json!([1])))),
            400,
            "INVALID_DURATION",
        ),
        (
            "duplicate field",
            json_post(CHECK, r#"{"durationMs": 1, "durationMs": 2}"#),
            400,
            "INVALID_BODY",
        ),
        (
            "batch: malformed",
            json_post("/v1/anomaly/check/batch", "{\"items\": [}"),
            400,
            "MALFORMED_JSON",
        ),
        (
            "batch: wrong type",
            post(
                "/v1/anomaly/check/batch",
                Some("application/xml"),
                "<items/>",
            ),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            "batch: items not a list",
            json_post("/v1/anomaly/check/batch", r#"{"items": "all"}"#),
            400,
            "INVALID_BODY",
        ),
        (
            "baseline: no parameters",
            Request::get("/v1/baseline").body(Body::empty()).unwrap(),
            400,
            "INVALID_SERVICE",
        ),
        (
            "baseline: hour 24",
            Request::get("/v1/baseline?service=a&endpoint=b&hour=24&dayType=weekday")
                .body(Body::empty())
                .unwrap(),
            400,
            "INVALID_HOUR",
        ),
        (
            "baseline: hour 07",
            Request::get("/v1/baseline?service=a&endpoint=b&hour=07&dayType=weekday")
                .body(Body::empty())
                .unwrap(),
            400,
            "INVALID_HOUR",
        ),
        (
            "baseline: hour -1",
            Request::get("/v1/baseline?service=a&endpoint=b&hour=-1&dayType=weekday")
                .body(Body::empty())
                .unwrap(),
            400,
            "INVALID_HOUR",
        ),
        (
            "baseline: dayType",
            Request::get("/v1/baseline?service=a&endpoint=b&hour=1&dayType=holiday")
                .body(Body::empty())
                .unwrap(),
            400,
            "INVALID_DAY_TYPE",
        ),
        (
            "baseline: empty service",
            Request::get("/v1/baseline?service=&endpoint=b&hour=1&dayType=weekday")
                .body(Body::empty())
                .unwrap(),
            400,
            "INVALID_SERVICE",
        ),
        (
            "baseline: missing endpoint",
            Request::get("/v1/baseline?service=a&hour=1&dayType=weekday")
                .body(Body::empty())
                .unwrap(),
            400,
            "INVALID_ENDPOINT",
        ),
        (
            "baseline: repeated hour",
            Request::get("/v1/baseline?service=a&endpoint=b&hour=1&hour=2&dayType=weekday")
                .body(Body::empty())
                .unwrap(),
            400,
            "INVALID_QUERY",
        ),
        (
            "unknown route",
            Request::get("/v1/nothing").body(Body::empty()).unwrap(),
            404,
            "NOT_FOUND",
        ),
        (
            "wrong method",
            Request::get(CHECK).body(Body::empty()).unwrap(),
            405,
            "METHOD_NOT_ALLOWED",
        ),
    ];
    assert!(cases.len() >= 20);
    for (what, request, status, code) in cases {
        let r = app.send(request).await;
        assert_eq!(r.status.as_u16(), status, "{what}: {}", r.text);
        assert_eq!(r.error_code(), code, "{what}");
    }
}

#[tokio::test]
async fn a_zero_future_skew_accepts_any_instant_before_2100() {
    let mut config = config(&shared_redis_url(), "validation-skew");
    config.service.max_future_skew = std::time::Duration::ZERO;
    let app = App::new(&config);
    let far_future = (anomaly_core::UnixNanos::MAX - 1).to_string();
    let r = app
        .send(json_post(
            CHECK,
            with("startTimeUnixNano", Some(json!(far_future))),
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "INSUFFICIENT_DATA");
}

#[tokio::test]
async fn names_up_to_the_limit_are_accepted() {
    let mut config = config(&shared_redis_url(), "validation-names");
    config.common.names = anomaly_core::NameRules::new(9).unwrap();
    let app = App::new(&config);
    // Nine bytes, five characters: the limit is in bytes ("POST /pay" is nine too).
    let r = app
        .send(json_post(
            CHECK,
            with("rootServiceName", Some(json!("abc日本"))),
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = app
        .send(json_post(
            CHECK,
            with("rootServiceName", Some(json!("abcd日本"))),
        ))
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("10 bytes")
    );
}
