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

#[tokio::test]
async fn an_anomalous_span_is_judged_on_ingest_and_reaches_the_feed_once() {
    use std::time::Duration;

    use anomaly_core::{Baseline, BaselineKey, DayType};
    use anomaly_store::{FeedFilter, SampleKind};

    let c = config(&shared_redis_url(), "span-detect", "");
    let ing = ingester(&c);
    // q1 (11 ms in `request`): threshold max(0.5 * 2, 0.5 + 10 * 1) = 10.5 ms, so anomalous;
    // q2 (12 ms): max(5 * 2, 5 + 10 * 1) = 15 ms, normal. The root has no baseline.
    let baseline = |p: f64| Baseline {
        p50: p,
        p95: p,
        mad: 0.0,
        sample_count: 1000,
        updated_at: 0,
    };
    let q = |name: &str| BaselineKey::new("db", name, 14, DayType::Weekday).unwrap();
    ing.store()
        .spans()
        .write_baselines(
            &[(q("q1"), baseline(0.5)), (q("q2"), baseline(5.0))],
            Duration::ZERO,
        )
        .await
        .unwrap();
    let (addr, _task) = serve(&ing).await;
    let body = request(7, &[("db", "q1", 3), ("db", "q2", 3)]);
    post(addr, &body).await;
    // Re-sent: duplicates, not judged again.
    post(addr, &body).await;

    let page = ing
        .store()
        .anomalies_page(&FeedFilter::default(), 100, None)
        .await
        .unwrap();
    let entries: Vec<_> = page.entries.iter().map(|e| &e.entry).collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let e = entries[0];
    assert_eq!(e.kind, SampleKind::Span);
    assert_eq!(e.key, q("q1"));
    assert_eq!(e.trace_id.to_string(), format!("{:032x}", 7));
    assert_eq!(e.threshold_ms(), Some(10.5));
    // Both spans were stored once, the anomalous one included.
    let spans = samples(&ing.store().spans()).await;
    assert_eq!(spans["db|q1|14|weekday"], vec![11.0]);
    assert_eq!(spans["db|q2|14|weekday"], vec![12.0]);
}
