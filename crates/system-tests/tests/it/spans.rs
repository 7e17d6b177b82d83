//! Span baselines end to end: OTLP traces posted to the ingester, span windows recomputed,
//! span checks answered with numpy's numbers (testdata/stats), names normalised the same way at
//! ingest and at check, roots and spans of the same names kept apart.

use std::time::Duration;

use anomaly_testkit::{eventually, shared_redis_url, unique_prefix};
use chrono::TimeZone as _;
use serde_json::{Value, json};

use crate::Stack;

/// 14:30 on Wednesday 2025-11-26 in Taipei, plus `ms` milliseconds, in nanoseconds.
fn at(ms: u64) -> u64 {
    let t = chrono_tz::Asia::Taipei
        .with_ymd_and_hms(2025, 11, 26, 14, 30, 0)
        .unwrap()
        .timestamp_nanos_opt()
        .unwrap() as u64;
    t + ms * 1_000_000
}

/// A numpy case of testdata/stats.
fn case(name: &str) -> (Vec<f64>, [f64; 3]) {
    let cases: Vec<Value> =
        serde_json::from_str(include_str!("../../../../testdata/stats/vectors.json")).unwrap();
    let c = cases.iter().find(|c| c["name"] == name).expect(name);
    let samples = c["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let num = |k: &str| c[k].as_f64().unwrap();
    (samples, [num("p50"), num("p95"), num("mad")])
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn span(
    trace: u64,
    id: u64,
    parent: Option<u64>,
    name: &str,
    kind: u8,
    (start, ms): (u64, f64),
    attributes: Value,
) -> Value {
    let mut span = json!({
        "traceId": format!("{trace:032x}"),
        "spanId": format!("{id:016x}"),
        "name": name,
        "kind": kind,
        "startTimeUnixNano": start.to_string(),
        "endTimeUnixNano": (start + (ms * 1e6).round() as u64).to_string(),
        "attributes": attributes,
    });
    if let Some(p) = parent {
        span["parentSpanId"] = json!(format!("{p:016x}"));
    }
    span
}

fn resource(service: &str, spans: Vec<Value>) -> Value {
    json!({
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"spans": spans}],
    })
}

/// Trace `t`: a `shop` root `GET /items` of 2 s, whose CLIENT child `GET /items` (the same
/// names as the root) lasts `a` ms, an INTERNAL child that no baseline keeps, and a `db`
/// SERVER span `SELECT orders` of `b` ms; and a `shop` SERVER span named by its `http.route`.
fn trace(t: u64, a: f64, b: Option<f64>) -> Vec<Value> {
    let start = at(t);
    let root = t * 16;
    let shop = vec![
        span(t, root, None, "GET /items", 2, (start, 2000.0), json!([])),
        span(
            t,
            root + 1,
            Some(root),
            "GET /items",
            3,
            (start + 1000, a),
            json!([]),
        ),
        span(
            t,
            root + 2,
            Some(root),
            "render",
            1,
            (start + 1000, 1.0),
            json!([]),
        ),
        span(
            t,
            root + 3,
            Some(root),
            &format!("GET /users/{t}"),
            2,
            (start + 1000, 3.0),
            json!([{"key": "http.route", "value": {"stringValue": "/users/:id"}},
                   {"key": "http.request.method", "value": {"stringValue": "GET"}}]),
        ),
    ];
    let mut db = Vec::new();
    if let Some(b) = b {
        db.push(span(
            t,
            root + 4,
            Some(root + 1),
            "SELECT orders",
            2,
            (start + 2000, b),
            json!([]),
        ));
    }
    vec![resource("shop", shop), resource("db", db)]
}

#[tokio::test]
async fn span_baselines_from_otlp_match_numpy_and_answer_span_checks() {
    let stack = Stack::start(&shared_redis_url(), &unique_prefix("spans")).await;
    let client = reqwest::Client::new();
    let (a, a_stats) = case("lognormal_m4_s0.5_n1000_seed1");
    let (b, b_stats) = case("uniform_0_500_n50_seed3");
    let post = |resource_spans: Vec<Value>| {
        let (client, url) = (client.clone(), stack.ingester.url("/v1/traces"));
        async move {
            let r = client
                .post(url)
                .json(&json!({"resourceSpans": resource_spans}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    // 1000 traces in batches of 100; the first 50 have a db span. Every batch is sent twice:
    // spans count once.
    for batch in 0..10u64 {
        let mut resource_spans = Vec::new();
        for t in batch * 100..(batch + 1) * 100 {
            let i = t as usize;
            resource_spans.extend(trace(t + 1, a[i], b.get(i).copied()));
        }
        post(resource_spans.clone()).await;
        post(resource_spans).await;
    }

    let check = |path: &'static str, body: Value| {
        let (client, url) = (client.clone(), stack.checker.url(path));
        async move {
            let r = client.post(url).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let select = json!({"serviceName": "db", "spanName": "SELECT orders",
        "startTimeUnixNano": at(999_999).to_string(), "durationMs": 5000});
    let ready = eventually(Duration::from_secs(30), || {
        let answer = check("/v1/anomaly/check/span", select.clone());
        async move { answer.await["baseline"]["sampleCount"] == 50 }
    })
    .await;
    let answer = check("/v1/anomaly/check/span", select.clone()).await;
    assert!(ready, "the span baseline was recomputed: {answer}");
    assert_eq!(answer["status"], "ANOMALY", "{answer}");
    assert_eq!(
        answer["span"],
        json!({"service": "db", "name": "SELECT orders"})
    );
    let numbers =
        |answer: &Value| ["p50", "p95", "mad"].map(|k| answer["baseline"][k].as_f64().unwrap());
    assert_eq!(numbers(&answer), b_stats.map(round3), "numpy's numbers");
    assert!(
        answer["reason"]
            .as_str()
            .unwrap()
            .contains("span db SELECT orders"),
        "{answer}"
    );

    // The CLIENT span named like the root has its own baseline: 1000 samples of `a`, where the
    // root's window holds 1000 samples of 2000 ms.
    let items = json!({"items": [
        {"serviceName": "shop", "spanName": "GET /items",
         "startTimeUnixNano": at(999_999).to_string(), "durationMs": 50},
        {"rootServiceName": "shop", "rootTraceName": "GET /items",
         "startTimeUnixNano": at(999_999).to_string(), "durationMs": 50},
        // Sent with its raw name: renamed by the same rules as at ingest.
        {"serviceName": "shop", "spanName": "GET /users/77",
         "startTimeUnixNano": at(999_999).to_string(), "durationMs": 3,
         "httpRoute": "/users/:id", "httpMethod": "GET"},
        {"serviceName": "shop", "spanName": "render",
         "startTimeUnixNano": at(999_999).to_string(), "durationMs": 1},
        {"serviceName": "shop", "spanName": ""},
    ]});
    let ready = eventually(Duration::from_secs(30), || {
        let answer = check("/v1/anomaly/check/batch", items.clone());
        async move { answer.await["results"][0]["baseline"]["sampleCount"] == 1000 }
    })
    .await;
    let results = check("/v1/anomaly/check/batch", items).await["results"].clone();
    assert!(ready, "{results}");
    assert_eq!(numbers(&results[0]), a_stats.map(round3), "{results}");
    assert_eq!(
        results[1]["baseline"]["p50"], 2000.0,
        "the root's own window"
    );
    assert!(results[1].get("span").is_none());
    assert_eq!(
        results[2]["span"],
        json!({"service": "shop", "name": "GET /users/:id", "sentName": "GET /users/77"})
    );
    assert_eq!(results[2]["baseline"]["sampleCount"], 1000, "{results}");
    // INTERNAL spans are not in `spans.kinds`: no baseline.
    assert_eq!(results[3]["status"], "INSUFFICIENT_DATA");
    assert_eq!(results[4]["error"]["code"], "INVALID_ENDPOINT", "{results}");

    // What each rule did is counted.
    let metrics = client
        .get(stack.ingester.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |line: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(line))
            .and_then(|l| l.rsplit(' ').next())
            .map_or(0.0, |v| v.parse().unwrap())
    };
    // Per trace: 3 spans kept (CLIENT, route SERVER, db SERVER for 50), 1 INTERNAL; twice.
    assert_eq!(
        count(r#"anomaly_span_samples_total{source="otlp_http",outcome="accepted"}"#),
        2050.0,
        "{metrics}"
    );
    assert_eq!(
        count(r#"anomaly_span_samples_total{source="otlp_http",outcome="duplicate"}"#),
        2050.0
    );
    assert_eq!(
        count(r#"anomaly_span_samples_total{source="otlp_http",outcome="kind"}"#),
        2000.0
    );
    assert_eq!(
        count(r#"anomaly_span_names_rewritten_total{rule="http_route"}"#),
        2000.0
    );
    stack.stop().await;
}
