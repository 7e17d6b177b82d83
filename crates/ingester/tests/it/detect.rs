//! Judge on ingest: every stored root is judged against its baseline as it stood before it,
//! through push, OTLP and the poller; exactly the anomalous traces reach the feed and the
//! counters, once; a failing judgment or feed write never costs a stored trace; the
//! contamination guard keeps anomalies out of their window.

use std::net::SocketAddr;
use std::time::Duration;

use anomaly_core::{Baseline, BaselineKey, DayType, TraceId};
use anomaly_store::{FeedFilter, Store};
use anomaly_testkit::shared_redis_url;
use serde_json::{Value, json};

use crate::{T0, at, config, id, ingester, nanos, poll_until_caught_up, poller, samples, serve};

/// `svc GET /e` at 14:00 on a weekday (T0's bucket): threshold max(150 * 2, 100 + 10 * 5) = 300.
fn key() -> BaselineKey {
    BaselineKey::new("svc", "GET /e", 14, DayType::Weekday).unwrap()
}

async fn seed(store: &Store) {
    let baseline = Baseline {
        p50: 100.0,
        p95: 150.0,
        mad: 5.0,
        sample_count: 1000,
        updated_at: 0,
    };
    store
        .write_baselines(&[(key(), baseline)], Duration::ZERO)
        .await
        .unwrap();
}

/// Trace `n`: 900 ms when `n` is a multiple of 3 (anomalous), else 100 ms.
fn ms(n: u64) -> u64 {
    if n.is_multiple_of(3) { 900 } else { 100 }
}

fn push_body(ns: impl Iterator<Item = u64>) -> Value {
    let traces: Vec<Value> = ns
        .map(|n| {
            json!({"traceID": id(n), "rootServiceName": "svc", "rootTraceName": "GET /e",
                   "startTimeUnixNano": nanos(T0 + n, 0).to_string(), "durationMs": ms(n)})
        })
        .collect();
    json!({ "traces": traces })
}

fn otlp_body(ns: impl Iterator<Item = u64>) -> Value {
    let spans: Vec<Value> = ns
        .map(|n| {
            json!({"traceId": id(n), "spanId": format!("{n:016x}"), "name": "GET /e", "kind": 2,
                   "startTimeUnixNano": nanos(T0 + n, 0).to_string(),
                   "endTimeUnixNano": nanos(T0 + n, ms(n)).to_string()})
        })
        .collect();
    json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
        "scopeSpans": [{"spans": spans}]}]})
}

async fn post(addr: SocketAddr, path: &str, body: &Value) -> Value {
    let r = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap_or(Value::Null)
}

/// The trace IDs in the feed, sorted.
async fn feed(store: &Store) -> Vec<String> {
    let page = store
        .anomalies_page(&FeedFilter::default(), 1000, None)
        .await
        .unwrap();
    let mut ids: Vec<String> = page
        .entries
        .iter()
        .map(|e| e.entry.trace_id.to_string())
        .collect();
    ids.sort();
    ids
}

/// The value of the series `series` (its name and labels as written), before any exemplar.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|rest| rest.split_whitespace().next())
        .map_or(0.0, |v| v.parse().unwrap())
}

fn raw(store: &Store, args: &[&str]) -> String {
    let _ = store;
    anomaly_testkit::command_at(&shared_redis_url(), args)
}

#[tokio::test]
async fn exactly_the_anomalous_traces_of_every_path_reach_the_feed_and_the_counters() {
    let tempo = tracegen::tempo::FakeTempo::start().await;
    tempo.set_now(at(T0 + 600));
    let c = config(&shared_redis_url(), "detect-paths", &tempo.url());
    let ing = ingester(&c);
    seed(ing.store()).await;
    let (addr, _task) = serve(&ing).await;

    // Push 1..=10, OTLP 101..=110, poll 201..=210: every third anomalous, 10 in all.
    let pushed = push_body(1..=10);
    let r = post(addr, "/v1/traces/ingest", &pushed).await;
    assert_eq!(r["accepted"], 10);
    post(addr, "/v1/traces", &otlp_body(101..=110)).await;
    tempo.upsert_all((201..=210).map(|n| crate::trace(n, T0 + 400 + n - 200, ms(n) as u32)));
    poll_until_caught_up(&poller(&ing), &tempo).await;
    // Re-sent: duplicates, judged once.
    post(addr, "/v1/traces/ingest", &pushed).await;
    post(addr, "/v1/traces", &otlp_body(101..=110)).await;

    let mut want: Vec<String> = (1..=10)
        .chain(101..=110)
        .chain(201..=210)
        .filter(|n| ms(*n) == 900)
        .map(|n| TraceId::parse(&id(n)).unwrap().to_string())
        .collect();
    want.sort();
    assert_eq!(want.len(), 10);
    assert_eq!(feed(ing.store()).await, want);

    let text = ing.metrics().encode();
    assert_eq!(
        metric(
            &text,
            r#"anomaly_detected_total{service="svc",endpoint="GET /e"}"#
        ),
        10.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            r#"anomaly_judged_total{service="svc",status="ANOMALY"}"#
        ),
        10.0
    );
    assert_eq!(
        metric(
            &text,
            r#"anomaly_judged_total{service="svc",status="NORMAL"}"#
        ),
        20.0
    );
    // The exemplar names an anomalous trace.
    let exemplar = text
        .lines()
        .find(|l| l.starts_with(r#"anomaly_detected_total{service="svc",endpoint="GET /e"}"#))
        .unwrap();
    assert!(
        want.iter()
            .any(|t| exemplar.contains(&format!("trace_id=\"{t}\""))),
        "{exemplar}"
    );
    // Every trace was stored once, anomalies included.
    assert_eq!(samples(ing.store()).await[&key().encode()].len(), 30);
}

#[tokio::test]
async fn a_failing_judgment_or_feed_costs_no_trace() {
    let c = config(&shared_redis_url(), "detect-failures", "");
    let ing = ingester(&c);
    seed(ing.store()).await;
    let (addr, _task) = serve(&ing).await;
    let keys = ing.store().keys().clone();

    // The feed cannot be written (its key holds a string).
    raw(ing.store(), &["SET", &keys.anomalies(), "not a stream"]);
    let r = post(addr, "/v1/traces/ingest", &push_body([3, 4].into_iter())).await;
    assert_eq!(r["accepted"], 2, "{r}");
    let text = ing.metrics().encode();
    assert_eq!(
        metric(&text, r#"anomaly_detect_failures_total{stage="feed"}"#),
        1.0,
        "{text}"
    );
    // Judged all the same.
    assert_eq!(
        metric(
            &text,
            r#"anomaly_judged_total{service="svc",status="ANOMALY"}"#
        ),
        1.0
    );
    // Both traces stored once, the anomalous one included.
    assert_eq!(
        samples(ing.store()).await[&key().encode()],
        vec![100.0, 900.0]
    );
    raw(ing.store(), &["DEL", &keys.anomalies()]);

    // The baselines cannot be read (the fallback levels' key holds a string): stored unjudged.
    let other = BaselineKey::new("svc2", "GET /x", 14, DayType::Weekday).unwrap();
    raw(
        ing.store(),
        &["SET", &keys.fallback(&other.endpoint_body()), "x"],
    );
    let body = json!({"traces": [{"traceID": id(77), "rootServiceName": "svc2",
        "rootTraceName": "GET /x", "startTimeUnixNano": nanos(T0 + 1, 0).to_string(),
        "durationMs": 5000}]});
    let r = post(addr, "/v1/traces/ingest", &body).await;
    assert_eq!(r["accepted"], 1, "{r}");
    let text = ing.metrics().encode();
    assert_eq!(
        metric(&text, r#"anomaly_detect_failures_total{stage="judge"}"#),
        1.0,
        "{text}"
    );
    assert_eq!(samples(ing.store()).await[&other.encode()], vec![5000.0]);
    assert!(feed(ing.store()).await.is_empty());
}

#[tokio::test]
async fn the_contamination_guard_keeps_anomalies_out_of_their_window() {
    let mut c = config(&shared_redis_url(), "detect-guard", "");
    c.common.stats.exclude_anomalies = true;
    let ing = ingester(&c);
    seed(ing.store()).await;
    let (addr, _task) = serve(&ing).await;
    let r = post(addr, "/v1/traces/ingest", &push_body(1..=6)).await;
    assert_eq!(r["accepted"], 6);
    // 3 and 6 were anomalous: in the feed, not in the window.
    assert_eq!(feed(ing.store()).await.len(), 2);
    assert_eq!(samples(ing.store()).await[&key().encode()], vec![100.0; 4]);
    // And marked seen: a re-send is a duplicate.
    let r = post(addr, "/v1/traces/ingest", &push_body([3].into_iter())).await;
    assert_eq!(r["duplicates"], 1);

    // Off (the default): anomalies enter their window like any sample.
    let c = config(&shared_redis_url(), "detect-guard-off", "");
    let ing = ingester(&c);
    seed(ing.store()).await;
    let (addr, _task) = serve(&ing).await;
    post(addr, "/v1/traces/ingest", &push_body(1..=6)).await;
    assert_eq!(samples(ing.store()).await[&key().encode()].len(), 6);
}
