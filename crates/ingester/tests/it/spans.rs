//! Span baselines at the ingester: kinds, renaming, ignore rules and the per-service cap, each
//! counted in `anomaly_span_samples_total`, and per-span dedup, through OTLP/HTTP.

use std::net::SocketAddr;

use anomaly_core::spans::{SpanIgnore, SpanKind};
use anomaly_testkit::shared_redis_url;
use serde_json::{Value, json};

use crate::{T0, config, id, ingester, nanos, samples, serve};

/// A root of trace `trace` and, under it, the given (service, name, kind) child spans.
fn request(trace: u64, children: &[(&str, &str, u8)]) -> Value {
    let span = |n: u64, parent: Option<u64>, name: &str, kind: u8| {
        let mut s = json!({"traceId": id(trace), "spanId": format!("{:016x}", trace * 100 + n),
            "name": name, "kind": kind,
            "startTimeUnixNano": nanos(T0 + trace, 0).to_string(),
            "endTimeUnixNano": nanos(T0 + trace, 10 + n).to_string()});
        if let Some(p) = parent {
            s["parentSpanId"] = json!(format!("{:016x}", trace * 100 + p));
        }
        s
    };
    let mut resources: Vec<Value> = vec![json!({
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "web"}}]},
        "scopeSpans": [{"spans": [span(0, None, "GET /", 2)]}]})];
    for (n, (service, name, kind)) in children.iter().enumerate() {
        resources.push(json!({
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
            "scopeSpans": [{"spans": [span(n as u64 + 1, Some(0), name, *kind)]}]}));
    }
    json!({ "resourceSpans": resources })
}

async fn post(addr: SocketAddr, body: &Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/v1/traces"))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|rest| rest.split_whitespace().next())
        .map_or(0.0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn every_rule_is_applied_and_counted_and_spans_count_once() {
    let mut c = config(&shared_redis_url(), "span-rules", "");
    c.common.spans.max_keys_per_service = 2;
    c.common.spans.ignore = vec![SpanIgnore {
        service: None,
        span: Some("GET /healthz".into()),
    }];
    assert_eq!(
        c.common.spans.kinds,
        vec![SpanKind::Server, SpanKind::Client]
    );
    let ing = ingester(&c);
    let (addr, _task) = serve(&ing).await;
    let children = [
        ("db", "q1", 3),
        ("db", "q2", 3),
        // A third key of `db`: over its cap of 2.
        ("db", "q3", 3),
        // Two IDs, one key.
        ("users", "GET /users/1", 2),
        ("users", "GET /users/2", 2),
        ("users", "GET /healthz", 2),
        // INTERNAL: no baseline.
        ("users", "render", 1),
    ];
    let body = request(1, &children);
    post(addr, &body).await;
    post(addr, &body).await;

    let text = ing.metrics().encode();
    let count = |outcome: &str| {
        metric(
            &text,
            &format!(r#"anomaly_span_samples_total{{source="otlp_http",outcome="{outcome}"}}"#),
        )
    };
    // Accepted once (q1, q2, the two users), then duplicates; q3 over the cap both times (it
    // was not marked seen).
    assert_eq!(count("accepted"), 4.0, "{text}");
    assert_eq!(count("duplicate"), 4.0);
    assert_eq!(count("over_cardinality"), 2.0);
    assert_eq!(count("ignored"), 2.0);
    assert_eq!(count("kind"), 2.0);
    assert_eq!(
        metric(
            &text,
            r#"anomaly_span_names_rewritten_total{rule="normalize[1]"}"#
        ),
        4.0
    );

    let spans = samples(&ing.store().spans()).await;
    let keys: Vec<&str> = spans.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "db|q1|14|weekday",
            "db|q2|14|weekday",
            "users|GET /users/%7Bid%7D|14|weekday"
        ]
    );
    assert_eq!(spans["users|GET /users/%7Bid%7D|14|weekday"].len(), 2);
    // The root is a root sample, not a span sample.
    assert_eq!(
        samples(ing.store()).await.keys().collect::<Vec<_>>(),
        ["web|GET /|14|weekday"]
    );
}

#[tokio::test]
async fn span_baselines_can_be_turned_off() {
    let mut c = config(&shared_redis_url(), "span-off", "");
    c.common.spans.enabled = false;
    let ing = ingester(&c);
    let (addr, _task) = serve(&ing).await;
    post(addr, &request(2, &[("db", "q1", 3)])).await;
    assert!(samples(&ing.store().spans()).await.is_empty());
    assert_eq!(samples(ing.store()).await.len(), 1);
}
