//! Names at `max_name_bytes` and one byte over it, pushed and polled: at the limit they are
//! stored, over it they are refused with the code the checker gives the same name
//! (INVALID_SERVICE, INVALID_ENDPOINT), and the rest of the batch or window is stored.

use std::collections::BTreeSet;
use std::time::Duration;

use anomaly_core::{BaselineKey, DayType, NameRules};
use anomaly_testkit::shared_redis_url;
use ingester::{Ingester, PollOutcome, WindowReport};
use serde_json::{Value, json};
use tracegen::tempo::{FakeTempo, Trace};

use crate::logs::Logs;
use crate::{T0, at, config, id, ingester, nanos, poller, samples, serve};

const LIMIT: usize = NameRules::DEFAULT_MAX_BYTES;

/// A name of exactly `LIMIT` bytes in 128 characters: the limit counts bytes.
fn at_limit() -> String {
    let name = "é".repeat(LIMIT / 2);
    assert_eq!((name.len(), name.chars().count()), (LIMIT, LIMIT / 2));
    name
}

/// `LIMIT` bytes of `|`, which the key body escapes to three times that.
fn separators_at_limit() -> String {
    "|".repeat(LIMIT)
}

fn one_over() -> String {
    format!("{}x", at_limit())
}

/// Body of the key (14:00 on a weekday, as at T0) that `service` and `endpoint` are stored
/// under.
fn body(service: &str, endpoint: &str) -> String {
    BaselineKey::new(service, endpoint, 14, DayType::Weekday)
        .unwrap()
        .encode()
}

/// The bodies of every stored window.
async fn stored(ing: &Ingester) -> BTreeSet<String> {
    samples(ing.store()).await.into_keys().collect()
}

fn metric(ing: &Ingester, source: &str, outcome: &str) -> u64 {
    let prefix =
        format!("anomaly_ingest_traces_total{{source=\"{source}\",outcome=\"{outcome}\"}} ");
    ing.metrics()
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.parse().unwrap())
}

fn pushed(n: u64, service: &str, endpoint: &str) -> Value {
    json!({"traceID": id(n), "rootServiceName": service, "rootTraceName": endpoint,
           "startTimeUnixNano": nanos(T0, n).to_string(), "durationMs": n})
}

#[tokio::test]
async fn pushed_names_at_the_limit_are_stored_and_one_byte_over_refused() {
    let ing = ingester(&config(&shared_redis_url(), "names-push", ""));
    let (addr, _server) = serve(&ing).await;
    let traces = json!([
        pushed(1, &at_limit(), "GET /a"),
        pushed(2, &one_over(), "GET /a"),
        pushed(3, "svc", &one_over()),
        pushed(4, "svc", &separators_at_limit()),
        pushed(5, &one_over(), &one_over()),
    ]);
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/v1/traces/ingest"))
        .json(&json!({ "traces": traces }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["accepted"], 2, "{report}");
    assert_eq!(report["rejected"], 3, "{report}");
    let errors: Vec<(u64, &str)> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["index"].as_u64().unwrap(), e["code"].as_str().unwrap()))
        .collect();
    // The service is judged first, as the checker judges it.
    assert_eq!(
        errors,
        [
            (1, "INVALID_SERVICE"),
            (2, "INVALID_ENDPOINT"),
            (4, "INVALID_SERVICE")
        ]
    );
    assert_eq!(
        report["errors"][1]["message"],
        format!(
            "endpoint name is {} bytes long, more than the limit of {LIMIT} bytes \
             (max_name_bytes)",
            LIMIT + 1
        )
    );
    assert_eq!(
        stored(&ing).await,
        BTreeSet::from([
            body(&at_limit(), "GET /a"),
            body("svc", &separators_at_limit())
        ])
    );
    assert_eq!(metric(&ing, "push", "accepted"), 2);
    assert_eq!(metric(&ing, "push", "rejected"), 3);
}

#[tokio::test]
async fn a_configured_limit_holds_at_ingest() {
    let mut c = config(&shared_redis_url(), "names-configured", "");
    c.common.names = NameRules::new(16).unwrap();
    let ing = ingester(&c);
    let (addr, _server) = serve(&ing).await;
    let traces = json!([
        pushed(1, &"s".repeat(16), "GET /a"),
        pushed(2, &"s".repeat(17), "GET /a"),
    ]);
    let report: Value = reqwest::Client::new()
        .post(format!("http://{addr}/v1/traces/ingest"))
        .json(&json!({ "traces": traces }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (&report["accepted"], &report["rejected"]),
        (&json!(1), &json!(1))
    );
    assert_eq!(report["errors"][0]["code"], "INVALID_SERVICE");
    assert!(
        report["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("limit of 16 bytes"),
        "{report}"
    );
    let stored_body = BaselineKey::with_rules(
        "s".repeat(16),
        "GET /a",
        14,
        DayType::Weekday,
        c.common.names,
    )
    .unwrap()
    .encode();
    assert_eq!(stored(&ing).await, BTreeSet::from([stored_body]));
}

fn window(outcome: PollOutcome) -> WindowReport {
    match outcome {
        PollOutcome::Polled { window, .. } => window,
        other => panic!("expected a polled window, got {other:?}"),
    }
}

/// Polling finds traces with names at the limit and `over`, one a byte over it: the two at the
/// limit are stored, `over` is counted as rejected and logged with `code`, and not remembered,
/// so the next, overlapping window refuses it again.
async fn poll_refuses(test: &str, over: Trace, code: &str) {
    let (logs, _guard) = Logs::capture();
    let tempo = FakeTempo::start().await;
    tempo.set_now(at(T0 + 600));
    let ing = ingester(&config(&shared_redis_url(), test, &tempo.url()));
    let p = poller(&ing);
    tempo.upsert_all([
        Trace::new(id(1), at_limit(), "GET /a", nanos(T0 + 500, 1), 10),
        Trace::new(id(2), "svc", separators_at_limit(), nanos(T0 + 500, 2), 20),
        over,
    ]);
    let want = BTreeSet::from([
        body(&at_limit(), "GET /a"),
        body("svc", &separators_at_limit()),
    ]);

    let w = window(p.poll_once(tempo.now()).await.unwrap());
    assert_eq!((w.traces.accepted, w.traces.rejected), (2, 1), "{w:?}");
    assert_eq!(metric(&ing, "poll", "accepted"), 2);
    assert_eq!(metric(&ing, "poll", "rejected"), 1);
    assert_eq!(stored(&ing).await, want);
    let refused = logs.lines("tempo returned traces that cannot become samples");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].contains(code), "{refused:?}");
    assert!(refused[0].contains("(max_name_bytes)"), "{refused:?}");

    tempo.advance(Duration::from_secs(15));
    let w = window(p.poll_once(tempo.now()).await.unwrap());
    let t = &w.traces;
    assert_eq!((t.accepted, t.duplicates, t.rejected), (0, 2, 1), "{w:?}");
    assert_eq!(metric(&ing, "poll", "rejected"), 2);
    assert_eq!(stored(&ing).await, want);
}

#[tokio::test]
async fn a_polled_service_one_byte_over_the_limit_is_refused() {
    let over = Trace::new(id(3), one_over(), "GET /a", nanos(T0 + 500, 3), 30);
    poll_refuses("names-poll-service", over, "INVALID_SERVICE").await;
}

#[tokio::test]
async fn a_polled_endpoint_one_byte_over_the_limit_is_refused() {
    let over = Trace::new(id(3), "svc", one_over(), nanos(T0 + 500, 3), 30);
    poll_refuses("names-poll-endpoint", over, "INVALID_ENDPOINT").await;
}
