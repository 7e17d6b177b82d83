//! `POST /v1/traces/ingest`: per-item validation, request errors in the contract's shape,
//! limits, bearer authentication, 503 while Redis is down, dedup shared with the poller, the
//! OpenAPI document and the metrics dashboards rely on.

use std::net::SocketAddr;
use std::time::Duration;

use anomaly_testkit::{RedisServer, shared_redis_url};
use serde_json::{Value, json};
use tracegen::tempo::{FakeTempo, Trace};

use crate::{T0, all_durations, at, config, ingester, nanos, poller, serve};

async fn post(addr: SocketAddr, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/v1/traces/ingest"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

fn item(id: &str, duration: Value) -> Value {
    json!({"traceID": id, "rootServiceName": "checkout", "rootTraceName": "POST /pay",
           "startTimeUnixNano": nanos(T0, 0).to_string(), "durationMs": duration})
}

#[tokio::test]
async fn valid_items_are_stored_and_invalid_ones_reported_by_index() {
    let ing = ingester(&config(&shared_redis_url(), "push-items", ""));
    let (addr, _server) = serve(&ing).await;
    let traces = json!([
        item("a1", json!(120)),
        item("xyz", json!(5)),
        item("A2", json!("12.5")),
        {"traceID": "a3", "rootServiceName": "checkout", "startTimeUnixNano": "1795586400000000000"},
        {"traceID": "a4", "rootServiceName": "<root span not yet received>",
         "startTimeUnixNano": "1795586400000000000", "durationMs": 3},
        {"traceID": "a5", "rootServiceName": "checkout", "rootTraceName": "POST /pay",
         "startTimeUnixNano": 1_795_586_400_000_000_000u64},
        item("a6", json!(-1)),
        {"traceID": "a7", "rootServiceName": "checkout", "rootTraceName": "POST /pay",
         "startTimeUnixNano": "1795586400", "durationMs": 1},
        42,
        item(&"f".repeat(33), json!(1)),
        item("a8", json!("NaN")),
        {"traceID": "a9", "rootServiceName": "checkout", "rootTraceName": "POST /pay",
         "startTimeUnixNano": "1795586400000000000", "durationMs": 7, "somethingNew": {"x": 1}},
    ]);
    let (status, body) = post(addr, &json!({"traces": traces})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 4, "{body}");
    assert_eq!(body["duplicates"], 0);
    assert_eq!(body["rejected"], 8);
    let errors: Vec<(u64, &str)> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert!(!e["message"].as_str().unwrap().is_empty());
            (e["index"].as_u64().unwrap(), e["code"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        errors,
        [
            (1, "INVALID_TRACE_ID"),
            (3, "INVALID_ENDPOINT"),
            (4, "PARTIAL_TRACE"),
            (6, "INVALID_DURATION"),
            (7, "INVALID_START_TIME"),
            (8, "INVALID_ITEM"),
            (9, "INVALID_TRACE_ID"),
            (10, "INVALID_DURATION"),
        ]
    );
    // durationMs absent is 0 ms; a string is a number.
    assert_eq!(all_durations(ing.store()).await, [0.0, 7.0, 12.5, 120.0]);

    // The same batch again: the valid ones are duplicates now.
    let (_, again) = post(addr, &json!({"traces": traces})).await;
    assert_eq!(
        (again["accepted"].clone(), again["duplicates"].clone()),
        (json!(0), json!(4))
    );
}

/// One trace is one sample whichever way it came and however its ID was spelt: upper case,
/// without leading zeros (as Tempo serves it), or padded.
#[tokio::test]
async fn push_and_poll_share_dedup_across_id_spellings() {
    let tempo = FakeTempo::start().await;
    tempo.set_now(at(T0 + 600));
    let c = config(&shared_redis_url(), "push-poll", &tempo.url());
    let ing = ingester(&c);
    let (addr, _server) = serve(&ing).await;
    let long = "0af7651916cd43dd8448eb211c80319c";
    tempo.upsert(Trace::new(
        long,
        "checkout",
        "POST /pay",
        nanos(T0 + 500, 0),
        120,
    ));
    tempo.upsert(Trace::new(
        "00000000000000000000000000000e1",
        "checkout",
        "POST /pay",
        nanos(T0 + 501, 0),
        80,
    ));

    let pushed = json!({"traces": [
        {"traceID": long.to_uppercase(), "rootServiceName": "checkout", "rootTraceName": "POST /pay",
         "startTimeUnixNano": nanos(T0 + 500, 0).to_string(), "durationMs": 120},
        {"traceID": "E1", "rootServiceName": "checkout", "rootTraceName": "POST /pay",
         "startTimeUnixNano": nanos(T0 + 501, 0).to_string(), "durationMs": 80},
    ]});
    let (status, body) = post(addr, &pushed).await;
    assert_eq!(
        (status, body["accepted"].clone()),
        (200, json!(2)),
        "{body}"
    );

    let outcome = poller(&ing).poll_once(tempo.now()).await.unwrap();
    let ingester::PollOutcome::Polled { window, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(tempo.requests()[0].returned, 2);
    assert_eq!((window.traces.accepted, window.traces.duplicates), (0, 2));

    let spelt_again = json!({"traces": [
        {"traceID": &long[1..], "rootServiceName": "checkout", "rootTraceName": "POST /pay",
         "startTimeUnixNano": nanos(T0 + 500, 0).to_string(), "durationMs": 120},
        {"traceID": "000000e1", "rootServiceName": "checkout", "rootTraceName": "POST /pay",
         "startTimeUnixNano": nanos(T0 + 501, 0).to_string(), "durationMs": 80},
    ]});
    let (_, body) = post(addr, &spelt_again).await;
    assert_eq!(
        (body["accepted"].clone(), body["duplicates"].clone()),
        (json!(0), json!(2))
    );
    assert_eq!(all_durations(ing.store()).await, [80.0, 120.0]);
}

#[tokio::test]
async fn bad_requests_get_the_contract_error_shape() {
    let mut c = config(&shared_redis_url(), "push-errors", "");
    c.service.limits.max_body_bytes = 4096;
    c.service.max_batch_items = 3;
    let ing = ingester(&c);
    let (addr, _server) = serve(&ing).await;
    let url = format!("http://{addr}/v1/traces/ingest");
    let client = reqwest::Client::new();
    let json_ct = "application/json";
    let four = json!({"traces": [item("1", json!(1)), item("2", json!(1)), item("3", json!(1)), item("4", json!(1))]}).to_string();
    let huge = json!({"traces": [{"traceID": "a", "pad": "x".repeat(5000)}]}).to_string();
    let cases: Vec<(&str, Option<&str>, String, u16, &str)> = vec![
        (
            "POST",
            Some(json_ct),
            "{\"traces\": [".into(),
            400,
            "MALFORMED_JSON",
        ),
        (
            "POST",
            Some(json_ct),
            "not json".into(),
            400,
            "MALFORMED_JSON",
        ),
        ("POST", Some(json_ct), "{}".into(), 400, "INVALID_BODY"),
        (
            "POST",
            Some(json_ct),
            "{\"traces\": 5}".into(),
            400,
            "INVALID_BODY",
        ),
        ("POST", Some(json_ct), "[]".into(), 400, "INVALID_BODY"),
        (
            "POST",
            None,
            "{\"traces\": []}".into(),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            "POST",
            Some("text/plain"),
            "{\"traces\": []}".into(),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        ("POST", Some(json_ct), huge, 413, "PAYLOAD_TOO_LARGE"),
        ("POST", Some(json_ct), four, 413, "BATCH_TOO_LARGE"),
        ("GET", None, String::new(), 405, "METHOD_NOT_ALLOWED"),
    ];
    for (method, content_type, body, want_status, want_code) in cases {
        let mut request = client
            .request(method.parse().unwrap(), &url)
            .body(body.clone());
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let r = request.send().await.unwrap();
        let status = r.status().as_u16();
        let json: Value = r.json().await.unwrap();
        let short: String = body.chars().take(40).collect();
        assert_eq!(status, want_status, "{method} {short}: {json}");
        assert_eq!(json["error"]["code"], want_code, "{short}: {json}");
        assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let (status, body) = post(addr, &json!({"traces": []})).await;
    assert_eq!((status, body["accepted"].clone()), (200, json!(0)));
    let r = client
        .get(format!("http://{addr}/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(all_durations(ing.store()).await.is_empty());
}

#[tokio::test]
async fn bearer_tokens_guard_the_push_api_but_not_the_probes() {
    let mut c = config(&shared_redis_url(), "push-auth", "");
    c.service.auth.tokens = vec!["s3cret".to_owned().into()];
    let ing = ingester(&c);
    let (addr, _server) = serve(&ing).await;
    let client = reqwest::Client::new();
    let body = json!({"traces": [item("b1", json!(5))]});
    for (token, want) in [(None, 401), (Some("wrong"), 401), (Some("s3cret"), 200)] {
        let mut r = client
            .post(format!("http://{addr}/v1/traces/ingest"))
            .json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status().as_u16(), want, "{token:?}");
        if want == 401 {
            let json: Value = r.json().await.unwrap();
            assert_eq!(json["error"]["code"], "UNAUTHORIZED");
        }
    }
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let r = client
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    assert_eq!(all_durations(ing.store()).await, [5.0]);
}

/// While Redis is down a push is answered 503 and nothing is acknowledged; after Redis comes
/// back the retried batch is stored (and what was stored before the outage stays deduplicated).
#[tokio::test]
async fn redis_down_is_503_and_never_a_false_200() {
    let mut redis = RedisServer::start();
    let mut c = config(&redis.url(), "push-redis-down", "");
    c.common.redis.timeout = Duration::from_millis(500);
    let ing = ingester(&c);
    let (addr, _server) = serve(&ing).await;
    let before = json!({"traces": [item("d1", json!(10))]});
    let during = json!({"traces": [item("d2", json!(20))]});
    assert_eq!(post(addr, &before).await.1["accepted"], 1);

    redis.stop();
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/v1/traces/ingest"))
        .json(&during)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let json: Value = r.json().await.unwrap();
    assert_eq!(json["error"]["code"], "REDIS_UNAVAILABLE");
    let ready = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);

    redis.restart();
    // The pool reconnects on its own; retry the batch as a client would.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let retried = loop {
        let (status, body) = post(addr, &during).await;
        if status == 200 {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "redis did not come back: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        retried["accepted"], 1,
        "{retried}: not stored during the outage"
    );
    assert_eq!(post(addr, &before).await.1["duplicates"], 1);
    assert_eq!(all_durations(ing.store()).await, [10.0, 20.0]);
}

#[tokio::test]
async fn openapi_document_is_committed_and_current() {
    let generated = ingester::api::openapi_json();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi/ingester.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/ingester.json is stale; regenerate it with \
         UPDATE_OPENAPI=1 cargo nextest run -p ingester openapi"
    );
    let doc: Value = serde_json::from_str(&generated).unwrap();
    assert!(doc["paths"]["/v1/traces/ingest"]["post"].is_object());
    let otlp = &doc["paths"]["/v1/traces"]["post"];
    assert!(
        otlp["requestBody"]["content"]["application/x-protobuf"].is_object(),
        "{otlp}"
    );
    assert!(otlp["responses"]["429"].is_object(), "{otlp}");
    assert!(doc["components"]["schemas"]["TempoTrace"]["properties"]["traceID"].is_object());
    // The name fields state the limit the checker applies too: the shared key and its default.
    let limit = format!(
        "`{}` (default {})",
        anomaly_core::NameRules::CONFIG_KEY,
        anomaly_core::NameRules::DEFAULT_MAX_BYTES
    );
    for field in ["rootServiceName", "rootTraceName"] {
        let d = &doc["components"]["schemas"]["TempoTrace"]["properties"][field]["description"];
        assert!(d.as_str().unwrap().contains(&limit), "{field}: {d}");
    }

    let ing = ingester(&config(&shared_redis_url(), "openapi", ""));
    let (addr, _server) = serve(&ing).await;
    let served = reqwest::get(format!("http://{addr}/openapi.json"))
        .await
        .unwrap();
    assert_eq!(served.headers()["content-type"], "application/json");
    assert_eq!(served.text().await.unwrap(), generated);
}

/// The metric names dashboards and alerts are built on.
#[tokio::test]
async fn promised_metrics_are_exposed() {
    let tempo = FakeTempo::start().await;
    tempo.set_now(at(T0 + 600));
    tempo.upsert(Trace::new("c0ffee", "svc", "GET /m", nanos(T0 + 500, 0), 3));
    let ing = ingester(&config(&shared_redis_url(), "metrics", &tempo.url()));
    let (addr, _server) = serve(&ing).await;
    post(
        addr,
        &json!({"traces": [item("a1", json!(1)), item("zz", json!(1))]}),
    )
    .await;
    poller(&ing).poll_once(tempo.now()).await.unwrap();
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "anomaly_ingest_traces_total{source=\"push\",outcome=\"accepted\"} 1",
        "anomaly_ingest_traces_total{source=\"push\",outcome=\"rejected\"} 1",
        "anomaly_ingest_traces_total{source=\"poll\",outcome=\"accepted\"} 1",
        "anomaly_tempo_requests_total{status=\"200\"} 1",
        "anomaly_tempo_request_duration_seconds_count 1",
        "anomaly_tempo_traces_fetched_total 1",
        "anomaly_tempo_window_splits_total 0",
        "anomaly_tempo_windows_unsplittable_total 0",
        "anomaly_poller_cursor_lag_seconds 30",
        "anomaly_poller_lease_held 1",
        "anomaly_poller_gap_seconds_total 0",
        "anomaly_http_requests_total{route=\"/v1/traces/ingest\",status=\"200\"} 1",
        "anomaly_redis_up",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
}

/// A pushed partial trace is refused and not remembered, so the complete trace is accepted
/// when it is sent later.
#[tokio::test]
async fn a_partial_push_does_not_block_the_complete_trace() {
    let ing = ingester(&config(&shared_redis_url(), "push-partial", ""));
    let (addr, _server) = serve(&ing).await;
    let partial = json!({"traces": [{"traceID": "c1", "rootServiceName": "<root span not yet received>",
        "startTimeUnixNano": nanos(T0, 0).to_string(), "durationMs": 40}]});
    let (status, body) = post(addr, &partial).await;
    assert_eq!(status, 200);
    assert_eq!(body["errors"][0]["code"], "PARTIAL_TRACE", "{body}");
    let (_, body) = post(addr, &json!({"traces": [item("C1", json!(900))]})).await;
    assert_eq!(body["accepted"], 1, "{body}");
    assert_eq!(all_durations(ing.store()).await, [900.0]);
}

/// Beyond `max_keys` distinct keys, traces for new keys are counted and not stored; existing
/// keys keep working.
#[tokio::test]
async fn the_cardinality_cap_refuses_new_keys_only() {
    let mut c = config(&shared_redis_url(), "push-cap", "");
    c.service.max_keys = 2;
    let ing = ingester(&c);
    let (addr, _server) = serve(&ing).await;
    let on = |id: &str, endpoint: &str| {
        json!({"traceID": id, "rootServiceName": "svc", "rootTraceName": endpoint,
               "startTimeUnixNano": nanos(T0, 0).to_string(), "durationMs": 5})
    };
    let (_, body) = post(
        addr,
        &json!({"traces": [on("1", "GET /a"), on("2", "GET /b"), on("3", "GET /c")]}),
    )
    .await;
    assert_eq!(
        (body["accepted"].clone(), body["overCardinality"].clone()),
        (json!(2), json!(1)),
        "{body}"
    );
    assert_eq!(body["rejected"], 0, "over the cap is not a client error");
    let (_, body) = post(
        addr,
        &json!({"traces": [on("4", "GET /a"), on("5", "GET /d")]}),
    )
    .await;
    assert_eq!(
        (body["accepted"].clone(), body["overCardinality"].clone()),
        (json!(1), json!(1)),
        "{body}"
    );
    // Only the first two keys have windows.
    assert_eq!(samples_keys(&ing).await, 2);
    let text = ing.metrics().encode();
    assert!(
        text.contains(
            "anomaly_ingest_traces_total{source=\"push\",outcome=\"over_cardinality\"} 2"
        ),
        "{text}"
    );
}

async fn samples_keys(ing: &ingester::Ingester) -> usize {
    crate::samples(ing.store()).await.len()
}
