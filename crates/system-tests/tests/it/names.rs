//! `max_name_bytes` is one rule for the three services. A name at the limit, pushed or polled
//! from Tempo, gets a baseline that the checker judges against; a name one byte over it is
//! refused at ingest and at check with the same code, and nothing of it reaches Redis. The
//! services run on one Redis with one configuration each, as deployed from one file.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use anomaly_core::NameRules;
use anomaly_store::Store;
use tracegen::tempo::{FakeTempo, Trace};

use crate::{T0_NANOS, checker_config, ingester_config, query_escape, recomputer_config};

const T0: u64 = T0_NANOS / 1_000_000_000;

/// `limit` (even) bytes of a two-byte character: the limit counts bytes, not characters.
fn at_limit(c: char, limit: usize) -> String {
    let name = c.to_string().repeat(limit / 2);
    assert_eq!(name.len(), limit);
    name
}

fn over_limit(c: char, limit: usize) -> String {
    format!("{}x", at_limit(c, limit))
}

async fn call(router: &Router, request: Request<Body>) -> (u16, Value) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn post(path: &str, body: &Value) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// What the checker answers for `service` and `endpoint` at T0 (14:00 on a weekday): the
/// check's status and code (or error code), and the baseline lookup's status and code.
async fn checked(checker: &Router, service: &str, endpoint: &str) -> (Value, Value) {
    let (status, check) = call(
        checker,
        post(
            "/v1/anomaly/check",
            &json!({"rootServiceName": service, "rootTraceName": endpoint,
                    "startTimeUnixNano": T0_NANOS.to_string(), "durationMs": 10}),
        ),
    )
    .await;
    let query = format!(
        "/v1/baseline?service={}&endpoint={}&hour=14&dayType=weekday",
        query_escape(service),
        query_escape(endpoint)
    );
    let (lookup_status, lookup) =
        call(checker, Request::get(query).body(Body::empty()).unwrap()).await;
    (
        json!({"status": status, "verdict": check["status"], "samples": check["baseline"]["sampleCount"],
               "code": check["error"]["code"]}),
        json!({"status": lookup_status, "samples": lookup["baseline"]["sampleCount"],
               "code": lookup["error"]["code"]}),
    )
}

#[tokio::test]
async fn names_at_the_default_limit_are_checkable_and_over_it_refused_everywhere_alike() {
    one_rule_everywhere(None).await;
}

#[tokio::test]
async fn names_at_a_configured_limit_are_checkable_and_over_it_refused_everywhere_alike() {
    one_rule_everywhere(Some(NameRules::new(64).unwrap())).await;
}

/// The scenario with `max_name_bytes` left at its default (`None`) or set, in every service's
/// configuration, to the given value.
async fn one_rule_everywhere(configured: Option<NameRules>) {
    let url = anomaly_testkit::shared_redis_url();
    let prefix = anomaly_testkit::unique_prefix("names");
    let tempo = FakeTempo::start().await;
    tempo.set_now(std::time::UNIX_EPOCH + Duration::from_secs(T0 + 600));
    let names = configured.unwrap_or_default();
    let limit = names.max_bytes();

    let mut ingester_cfg = ingester_config(&url, &prefix);
    ingester_cfg.common.names = names;
    ingester_cfg.service.tempo.url = tempo.url();
    let ingester = ingester::Ingester::new(ingester_cfg).unwrap();
    let mut checker_cfg = checker_config(&url, &prefix);
    checker_cfg.common.names = names;
    checker_cfg.service.cache.ttl = Duration::ZERO;
    // One sample is a baseline to judge against, so "checkable" means a verdict.
    checker_cfg.common.stats.min_samples = 1;
    let checker = checker::app(&checker_cfg).unwrap();

    // (service, endpoint, how it arrives, the code when refused)
    let push = |s: &str, e: &str, code: Option<&str>| {
        (s.to_owned(), e.to_owned(), "push", code.map(str::to_owned))
    };
    let poll = |s: &str, e: &str, code: Option<&str>| {
        (s.to_owned(), e.to_owned(), "poll", code.map(str::to_owned))
    };
    let cases = [
        push(&at_limit('é', limit), "GET /push", None),
        push("push", &at_limit('é', limit), None),
        push(
            &over_limit('é', limit),
            "GET /push",
            Some("INVALID_SERVICE"),
        ),
        push("push", &over_limit('é', limit), Some("INVALID_ENDPOINT")),
        poll(&at_limit('ü', limit), "GET /poll", None),
        poll("poll", &at_limit('ü', limit), None),
        poll(
            &over_limit('ü', limit),
            "GET /poll",
            Some("INVALID_SERVICE"),
        ),
        poll("poll", &over_limit('ü', limit), Some("INVALID_ENDPOINT")),
    ];

    let mut pushed = Vec::new();
    for (i, (service, endpoint, source, _)) in cases.iter().enumerate() {
        let n = i as u64 + 1;
        if *source == "push" {
            pushed.push(
                json!({"traceID": format!("{n:x}"), "rootServiceName": service,
                "rootTraceName": endpoint, "startTimeUnixNano": (T0_NANOS + n).to_string(),
                "durationMs": 10}),
            );
        } else {
            let start = (T0 + 500) * 1_000_000_000 + n;
            tempo.upsert(Trace::new(format!("{n:x}"), service, endpoint, start, 10));
        }
    }
    let (status, report) = call(
        &ingester.router(),
        post("/v1/traces/ingest", &json!({ "traces": pushed })),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (&report["accepted"], &report["rejected"]),
        (&json!(2), &json!(2))
    );
    let push_codes: Vec<&str> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_str().unwrap())
        .collect();
    assert_eq!(push_codes, ["INVALID_SERVICE", "INVALID_ENDPOINT"]);

    let poller = ingester.poller().expect("tempo is configured");
    let outcome = poller.poll_once(tempo.now()).await.unwrap();
    let ingester::PollOutcome::Polled { window, .. } = outcome else {
        panic!("expected a polled window, got {outcome:?}")
    };
    assert_eq!((window.traces.accepted, window.traces.rejected), (2, 2));
    let metrics = ingester.metrics().encode();
    for line in [
        "anomaly_ingest_traces_total{source=\"push\",outcome=\"rejected\"} 2",
        "anomaly_ingest_traces_total{source=\"poll\",outcome=\"rejected\"} 2",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }

    let mut rc = recomputer_config(&url, &prefix);
    rc.common.names = names;
    let recomputer = recomputer::Recomputer::new(
        &rc,
        Store::connect(&rc.common.redis).unwrap(),
        recomputer::RecomputeMetrics::unregistered(),
        "names-test".to_owned(),
    );
    let drained = recomputer.drain_once().await.unwrap();
    assert_eq!(drained.recomputed, 4, "{drained:?}");
    assert_eq!(
        ingester.store().key_count().await.unwrap(),
        4,
        "only the names at the limit"
    );

    for (service, endpoint, source, refused) in &cases {
        let (check, lookup) = checked(&checker, service, endpoint).await;
        let what = format!("{source} {} + {} bytes", service.len(), endpoint.len());
        match refused {
            None => {
                let want = json!({"status": 200, "verdict": "NORMAL", "samples": 1, "code": null});
                assert_eq!(check, want, "{what}");
                assert_eq!(
                    lookup,
                    json!({"status": 200, "samples": 1, "code": null}),
                    "{what}"
                );
            }
            // The code the ingester gave the name is the code the checker gives it.
            Some(code) => {
                let want = json!({"status": 400, "verdict": null, "samples": null, "code": code});
                assert_eq!(check, want, "{what}");
                assert_eq!(
                    lookup,
                    json!({"status": 400, "samples": null, "code": code}),
                    "{what}"
                );
            }
        }
    }
}
