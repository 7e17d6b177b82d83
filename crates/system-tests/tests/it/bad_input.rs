//! Arbitrary input through the real routers (tower's `oneshot`, Redis up): arbitrary bytes,
//! arbitrary JSON, and well-shaped bodies whose fields are arbitrary JSON or hostile strings.
//! Whatever comes in, the answer is never a 5xx, never a panic, always JSON, and every error
//! has the contract's shape. cargo-fuzz needs a nightly toolchain; proptest runs on stable in
//! every `just test`.

use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use tower::ServiceExt;

use crate::{T0_NANOS, count_panics, panics, query_escape};

/// Field names the services look for, so arbitrary objects often hit the real parsing paths.
const FIELDS: [&str; 9] = [
    "rootServiceName",
    "rootTraceName",
    "startTimeUnixNano",
    "durationMs",
    "traceID",
    "traces",
    "items",
    "error",
    "",
];

/// Strings built to break things: key-layout characters, control bytes, unicode, long runs.
pub(crate) fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[|{}%\\n\\r\\t\\x00\\x1f\\x7f a-zA-Z0-9/]{0,24}",
        2 => any::<String>().prop_map(|s| s.chars().take(64).collect()),
        1 => "[|{}%\u{e9}\u{4e2d}\u{1f600}\u{202e}\u{feff}]{1,12}",
        1 => ("[|{}%a\\n]{1,4}", 2_000usize..10_241).prop_map(|(s, n)| s.repeat(n / s.len().max(1) + 1)),
        1 => Just(String::new()),
        1 => Just("<root span not yet received>".to_owned()),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        (-1e3f64..1e9).prop_map(Value::from),
        Just(json!(1e308)),
        Just(json!(-0.0)),
        Just(json!(18446744073709551615u64)),
    ]
}

/// Any JSON value, biased towards the shapes and names the APIs expect.
pub(crate) fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        hostile_string().prop_map(Value::String),
        "[0-9]{1,25}".prop_map(Value::String),
        "[0-9a-fA-F]{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        3 => prop::sample::select(FIELDS.to_vec()).prop_map(str::to_owned),
                        1 => hostile_string()
                    ],
                    inner
                ),
                0..8
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A field value: mostly plausible, often hostile.
fn field(plausible: Value) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        3 => Just(Some(plausible)),
        2 => hostile_string().prop_map(|s| Some(Value::String(s))),
        2 => json_value().prop_map(Some),
        1 => Just(None),
    ]
}

/// A check request or a pushed trace whose fields are each plausible, hostile or absent.
pub(crate) fn item() -> impl Strategy<Value = Value> {
    (
        field(json!("checkout")),
        field(json!("POST /pay")),
        field(json!(T0_NANOS.to_string())),
        field(json!(120.5)),
        field(json!("0af7651916cd43dd8448eb211c80319c")),
    )
        .prop_map(|(service, endpoint, start, duration, id)| {
            let mut o = Map::new();
            for (k, v) in [
                ("rootServiceName", service),
                ("rootTraceName", endpoint),
                ("startTimeUnixNano", start),
                ("durationMs", duration),
                ("traceID", id),
            ] {
                if let Some(v) = v {
                    o.insert(k.to_owned(), v);
                }
            }
            Value::Object(o)
        })
}

/// A request body as bytes: raw bytes, arbitrary JSON, or a well-shaped body with hostile
/// items, for `route` (`check`, `batch` or `ingest`).
fn body(route: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let items = prop::collection::vec(item(), 0..12);
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..2048),
        2 => json_value().prop_map(|v| v.to_string().into_bytes()),
        4 => items.prop_map(move |items| {
            match route {
                "check" => items.into_iter().next().unwrap_or(Value::Null),
                "batch" => json!({"items": items}),
                _ => json!({"traces": items}),
            }
            .to_string()
            .into_bytes()
        }),
    ]
}

struct Apps {
    runtime: tokio::runtime::Runtime,
    checker: Router,
    ingester: Router,
}

fn apps() -> &'static Apps {
    static APPS: OnceLock<Apps> = OnceLock::new();
    APPS.get_or_init(|| {
        count_panics();
        let url = anomaly_testkit::shared_redis_url();
        let prefix = anomaly_testkit::unique_prefix("bad-input");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let checker = checker::app(&crate::checker_config(&url, &prefix)).expect("checker app");
        let ingester = ingester::Ingester::new(crate::ingester_config(&url, &prefix))
            .expect("ingester")
            .router();
        Apps {
            runtime,
            checker,
            ingester,
        }
    })
}

/// Sends a request and checks the answer is a non-5xx JSON document in the contract's shape.
fn send(router: &Router, request: Request<Body>) -> Result<(u16, Value), TestCaseError> {
    let panics_before = panics();
    let response = apps()
        .runtime
        .block_on(router.clone().oneshot(request))
        .expect("routers are infallible");
    let status = response.status().as_u16();
    let bytes = apps()
        .runtime
        .block_on(response.into_body().collect())
        .expect("body")
        .to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    prop_assert_eq!(panics(), panics_before, "a panic while serving");
    prop_assert!(status < 500, "{} {}", status, text);
    let body: Value = serde_json::from_slice(&bytes)
        .map_err(|_| TestCaseError::fail(format!("not JSON: {status} {text}")))?;
    if status >= 400 {
        let error = &body["error"];
        prop_assert!(
            error["code"].as_str().is_some_and(|c| !c.is_empty()),
            "{}",
            text
        );
        prop_assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            text
        );
    }
    Ok((status, body))
}

fn post(router: &Router, path: &str, bytes: Vec<u8>) -> Result<(u16, Value), TestCaseError> {
    send(
        router,
        Request::post(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(bytes))
            .unwrap(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn check_never_fails_on_bad_input(bytes in body("check")) {
        let (status, v) = post(&apps().checker, "/v1/anomaly/check", bytes)?;
        if status == 200 {
            prop_assert!(["NORMAL", "ANOMALY", "INSUFFICIENT_DATA"].contains(&v["status"].as_str().unwrap_or("")), "{}", v);
        }
    }

    #[test]
    fn batch_check_never_fails_on_bad_input(bytes in body("batch")) {
        let (status, v) = post(&apps().checker, "/v1/anomaly/check/batch", bytes.clone())?;
        if status == 200 {
            let sent: Value = serde_json::from_slice(&bytes).unwrap();
            let results = v["results"].as_array().expect("results");
            let items = if sent.is_array() { &sent[0] } else { &sent["items"] };
            prop_assert_eq!(results.len(), items.as_array().map_or(0, Vec::len));
            for r in results {
                prop_assert!(r.get("status").is_some() || r["error"]["code"].is_string(), "{}", r);
            }
        }
    }

    #[test]
    fn ingest_never_fails_on_bad_input(bytes in body("ingest")) {
        let (status, v) = post(&apps().ingester, "/v1/traces/ingest", bytes.clone())?;
        if status == 200 {
            let sent: Value = serde_json::from_slice(&bytes).unwrap();
            // serde also reads a struct from an array of its fields: `[[trace, ...]]`.
            let traces = if sent.is_array() { &sent[0] } else { &sent["traces"] };
            let n = traces.as_array().map_or(0, Vec::len) as u64;
            let counted: u64 = ["accepted", "duplicates", "rejected", "ignored", "overCardinality"]
                .iter()
                .map(|k| v[*k].as_u64().unwrap_or(0))
                .sum();
            prop_assert_eq!(counted, n, "every trace is accounted for: {}", v);
            prop_assert_eq!(v["errors"].as_array().map_or(0, Vec::len) as u64, v["rejected"].as_u64().unwrap());
        }
    }

    #[test]
    fn baseline_lookup_never_fails_on_bad_query(
        service in hostile_string(),
        endpoint in hostile_string(),
        hour in prop_oneof![Just("14".to_owned()), hostile_string(), "-?[0-9]{1,22}"],
        day in prop_oneof![Just("weekday".to_owned()), Just("weekend".to_owned()), hostile_string()],
        raw in "[ -~]{0,64}",
    ) {
        let query = format!(
            "service={}&endpoint={}&hour={}&dayType={}",
            query_escape(&service), query_escape(&endpoint), query_escape(&hour), query_escape(&day)
        );
        // (URIs over 64 KB cannot be represented by the HTTP layer and are not sent.)
        if let Ok(request) = Request::get(format!("/v1/baseline?{query}")).body(Body::empty()) {
            let (status, _) = send(&apps().checker, request)?;
            prop_assert!(status == 200 || status == 400 || status == 404, "{}", status);
        }
        // A query string that is not even well-formed.
        // (Those the HTTP layer itself cannot represent are not sent.)
        if let Ok(request) = Request::get(format!("/v1/baseline?{raw}")).body(Body::empty()) {
            send(&apps().checker, request)?;
        }
    }
}

/// Bodies built to exhaust the server: nesting deep enough to overflow a recursive parser's
/// stack (which would abort the whole process, not just fail a request), a body over the size
/// cap, and a huge number of tiny items. Each is a 4xx in the error shape.
#[test]
fn hostile_bodies_are_refused_without_harm() {
    let deep = |open: &str, close: &str| {
        let n = 200_000;
        format!("{}{}", open.repeat(n), close.repeat(n)).into_bytes()
    };
    let nested_in = |prefix: &str, suffix: &str, inner: Vec<u8>| {
        let mut v = prefix.as_bytes().to_vec();
        v.extend(inner);
        v.extend(suffix.as_bytes());
        v
    };
    let over_cap = format!("{{\"traces\": [\"{}\"]}}", "x".repeat(5 * 1024 * 1024)).into_bytes();
    let many_items = format!("{{\"items\": [{}0]}}", "0,".repeat(500_000)).into_bytes();
    let many_traces = format!("{{\"traces\": [{}0]}}", "0,".repeat(500_000)).into_bytes();
    let cases: Vec<(&Router, &str, Vec<u8>, u16)> = vec![
        (&apps().checker, "/v1/anomaly/check", deep("[", "]"), 400),
        (
            &apps().checker,
            "/v1/anomaly/check",
            deep("{\"a\":", "}"),
            400,
        ),
        (
            &apps().checker,
            "/v1/anomaly/check/batch",
            nested_in("{\"items\":", "}", deep("[", "]")),
            400,
        ),
        (&apps().checker, "/v1/anomaly/check/batch", many_items, 413),
        (
            &apps().ingester,
            "/v1/traces/ingest",
            nested_in("{\"traces\":", "}", deep("[", "]")),
            400,
        ),
        (&apps().ingester, "/v1/traces/ingest", over_cap.clone(), 413),
        (&apps().checker, "/v1/anomaly/check", over_cap, 413),
        (&apps().ingester, "/v1/traces/ingest", many_traces, 413),
    ];
    for (router, path, bytes, want) in cases {
        let len = bytes.len();
        let (status, body) = post(router, path, bytes).expect("a well-formed refusal");
        assert_eq!(status, want, "{path} with a {len}-byte body: {body}");
    }
}
