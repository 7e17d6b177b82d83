//! Trace analysis against a real Redis and tracegen's fake Tempo (trace by ID in the shapes of
//! Tempo v2.0.1 and v3.0.3): a hand-checked tree whose slow span three levels down is ranked
//! first, a normal trace, a partial trace, 404s, bad input and Tempo failing.

use std::time::Duration;

use anomaly_core::DayType;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use serde_json::{Value, json};
use tracegen::tempo::{FakeTempo, Fault, Mode};

use crate::{App, baseline, config, key, seed, start, store};

const TRACE: u128 = 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736;
const HOUR: u8 = 14;

/// One span of the test trace: (id, parent, service, name, kind, start ms, end ms).
type SpanRow = (u64, u64, &'static str, &'static str, i32, u64, u64);

/// The hand-checked tree (times in ms from the trace's start):
///
/// ```text
/// A checkout POST /pay      SERVER   [0, 1840]
/// ├ B checkout GET /cart    CLIENT   [10, 110]
/// ├ C checkout POST /charge CLIENT   [120, 1800]
/// │ └ D payments POST /charge SERVER [130, 1790]
/// │   ├ E payments SELECT orders CLIENT [140, 1540]   <- slow: 1400 ms, threshold 90
/// │   └ F payments UPDATE ledger CLIENT [1550, 1780]
/// └ G checkout render       INTERNAL [1800, 1830]
/// ```
const TREE: [SpanRow; 7] = [
    (0xa, 0, "checkout", "POST /pay", 2, 0, 1840),
    (0xb, 0xa, "checkout", "GET /cart", 3, 10, 110),
    (0xc, 0xa, "checkout", "POST /charge", 3, 120, 1800),
    (0xd, 0xc, "payments", "POST /charge", 2, 130, 1790),
    (0xe, 0xd, "payments", "SELECT orders", 3, 140, 1540),
    (0xf, 0xd, "payments", "UPDATE ledger", 3, 1550, 1780),
    (0x10, 0xa, "checkout", "render", 1, 1800, 1830),
];

fn t0() -> u64 {
    start(HOUR, DayType::Weekday).parse().unwrap()
}

fn resource_spans(rows: &[SpanRow], trace: u128) -> Vec<ResourceSpans> {
    let mut out: Vec<ResourceSpans> = Vec::new();
    for &(id, parent, service, name, kind, from, to) in rows {
        let span = Span {
            trace_id: trace.to_be_bytes().to_vec(),
            span_id: id.to_be_bytes().to_vec(),
            parent_span_id: if parent == 0 {
                Vec::new()
            } else {
                parent.to_be_bytes().to_vec()
            },
            name: name.to_owned(),
            kind,
            start_time_unix_nano: t0() + from * 1_000_000,
            end_time_unix_nano: t0() + to * 1_000_000,
            ..Span::default()
        };
        let resource = Resource {
            attributes: vec![KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(service.into())),
                }),
            }],
            ..Resource::default()
        };
        match out
            .iter_mut()
            .find(|r| r.resource.as_ref() == Some(&resource))
        {
            Some(r) => r.scope_spans[0].spans.push(span),
            None => out.push(ResourceSpans {
                resource: Some(resource),
                scope_spans: vec![ScopeSpans {
                    spans: vec![span],
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }),
        }
    }
    out
}

/// Baselines for every judged span of the tree: thresholds A 620, B/C/D 600, E 90, F 500.
async fn seed_baselines(config: &checker::Config) {
    let k = |service, name| key(service, name, HOUR, DayType::Weekday);
    seed(
        config,
        &[(
            k("checkout", "POST /pay"),
            baseline(120.0, 310.0, 18.0, 1000),
        )],
    )
    .await;
    store(config)
        .spans()
        .write_baselines(
            &[
                (
                    k("checkout", "GET /cart"),
                    baseline(100.0, 300.0, 10.0, 1000),
                ),
                (
                    k("checkout", "POST /charge"),
                    baseline(100.0, 300.0, 10.0, 1000),
                ),
                (
                    k("payments", "POST /charge"),
                    baseline(100.0, 300.0, 10.0, 1000),
                ),
                (
                    k("payments", "SELECT orders"),
                    baseline(20.0, 45.0, 2.0, 1000),
                ),
                (
                    k("payments", "UPDATE ledger"),
                    baseline(200.0, 250.0, 20.0, 1000),
                ),
            ],
            Duration::ZERO,
        )
        .await
        .unwrap();
}

struct Setup {
    app: App,
    tempo: tracegen::tempo::RunningTempo,
}

async fn setup(test: &str, mode: Mode) -> Setup {
    let tempo = FakeTempo::new().spawn().await;
    tempo.tempo.set_mode(mode);
    let mut c = config(&anomaly_testkit::shared_redis_url(), test);
    c.service.tempo.url = tempo.url();
    c.service.tempo.timeout = Duration::from_millis(500);
    c.service.tempo.retries = 1;
    c.service.tempo.backoff = Duration::from_millis(10);
    c.service.analysis.max_spans = 100;
    seed_baselines(&c).await;
    Setup {
        app: App::new(&c),
        tempo,
    }
}

fn path(trace: u128) -> String {
    format!("/v1/traces/{trace:x}/analysis")
}

fn span(answer: &Value, id: u64) -> &Value {
    let id = format!("{id:016x}");
    answer["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["spanId"] == id)
        .unwrap_or_else(|| panic!("span {id} in {answer}"))
}

#[tokio::test]
async fn the_slow_span_three_levels_down_is_the_first_culprit() {
    for mode in [Mode::V2, Mode::V3] {
        let s = setup("analysis-tree", mode).await;
        s.tempo.tempo.load_spans(resource_spans(&TREE, TRACE));
        let r = s.app.get(&path(TRACE)).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let a = &r.body;
        assert_eq!(a["traceId"], format!("{TRACE:032x}"));
        assert_eq!(a["spanCount"], 7);
        assert_eq!(a["durationMs"], 1840.0);
        assert_eq!(a["partial"], false);
        assert_eq!(a["root"]["status"], "ANOMALY");
        assert_eq!(a["root"]["threshold"], 620.0);

        // Self times and critical-path times, by hand (see TREE).
        let expected = [
            (0xa, 0, 30.0, 30.0, "ANOMALY"),
            (0xb, 1, 100.0, 100.0, "NORMAL"),
            (0xc, 1, 20.0, 20.0, "ANOMALY"),
            (0xd, 2, 30.0, 30.0, "ANOMALY"),
            (0xe, 3, 1400.0, 1400.0, "ANOMALY"),
            (0xf, 3, 230.0, 230.0, "NORMAL"),
            (0x10, 1, 30.0, 30.0, ""),
        ];
        for (id, depth, self_ms, critical_ms, status) in expected {
            let node = span(a, id);
            assert_eq!(node["depth"], depth, "{node}");
            assert_eq!(node["selfTimeMs"], self_ms, "{node}");
            assert_eq!(node["criticalPathMs"], critical_ms, "{node}");
            if status.is_empty() {
                assert!(node["verdict"].is_null());
                assert!(
                    node["notJudged"].as_str().unwrap().contains("internal"),
                    "{node}"
                );
            } else {
                assert_eq!(node["verdict"]["status"], status, "{node}");
            }
        }
        // Depth first: A, B, C, D, E, F, G.
        let order: Vec<&str> = a["spans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["spanId"].as_str().unwrap())
            .collect();
        let ids = [0xa, 0xb, 0xc, 0xd, 0xe, 0xf, 0x10].map(|i: u64| format!("{i:016x}"));
        assert_eq!(order, ids.iter().map(String::as_str).collect::<Vec<_>>());
        // The critical path, in time order.
        let path: Vec<(String, f64, f64)> = a["criticalPath"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap().to_owned(),
                    s["startOffsetMs"].as_f64().unwrap(),
                    s["durationMs"].as_f64().unwrap(),
                )
            })
            .collect();
        let want = [
            ("POST /pay", 0.0, 10.0),
            ("GET /cart", 10.0, 100.0),
            ("POST /pay", 110.0, 10.0),
            ("POST /charge", 120.0, 10.0),
            ("POST /charge", 130.0, 10.0),
            ("SELECT orders", 140.0, 1400.0),
            ("POST /charge", 1540.0, 10.0),
            ("UPDATE ledger", 1550.0, 230.0),
            ("POST /charge", 1780.0, 10.0),
            ("POST /charge", 1790.0, 10.0),
            ("render", 1800.0, 30.0),
            ("POST /pay", 1830.0, 10.0),
        ];
        assert_eq!(
            path,
            want.map(|(n, s, d)| (n.to_owned(), s, d)).to_vec(),
            "{}",
            a["criticalPath"]
        );
        // Culprits: E first with 1310 ms of excess; its ancestors only for their own
        // critical time (ties deeper first).
        let culprits: Vec<(String, f64)> = a["culprits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["spanId"].as_str().unwrap().to_owned(),
                    c["excessMs"].as_f64().unwrap(),
                )
            })
            .collect();
        let want = [(0xe, 1310.0), (0xd, 30.0), (0xa, 30.0), (0xc, 20.0)]
            .map(|(id, excess): (u64, f64)| (format!("{id:016x}"), excess));
        assert_eq!(culprits, want.to_vec());
        let first = &a["culprits"][0];
        assert_eq!(first["service"], "payments");
        assert_eq!(first["thresholdMs"], 90.0);
        assert!(
            first["reason"]
                .as_str()
                .unwrap()
                .contains("span payments SELECT orders")
        );
        let summary = a["summary"].as_str().unwrap();
        assert!(
            summary.starts_with("POST /pay took 1840 ms (threshold 620 ms)")
                && summary.contains("payments SELECT orders"),
            "{summary}"
        );

        // The same trace in the body: the same analysis.
        let body = json!({"resourceSpans": resource_spans(&TREE, TRACE)});
        let posted = s.app.post("/v1/traces/analysis", &otlp_json(body)).await;
        assert_eq!(posted.status, 200, "{}", posted.text);
        assert_eq!(posted.body["culprits"], a["culprits"]);
        assert_eq!(posted.body["summary"], a["summary"]);
    }
}

/// OTLP/JSON of generated types: hex IDs, as the specification says.
fn otlp_json(value: Value) -> Value {
    serde_json::to_value(
        opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
            resource_spans: serde_json::from_value(value["resourceSpans"].clone()).unwrap(),
        },
    )
    .unwrap()
}

#[tokio::test]
async fn a_normal_trace_has_no_culprit() {
    let s = setup("analysis-normal", Mode::V2).await;
    let normal: Vec<SpanRow> = TREE
        .iter()
        .map(|&(id, parent, service, name, kind, from, to)| {
            // Every span a tenth as long, at its start, and the query at its usual 20 ms.
            let ms = if id == 0xe { 20 } else { (to - from) / 10 };
            (id, parent, service, name, kind, from / 10, from / 10 + ms)
        })
        .collect();
    s.tempo.tempo.load_spans(resource_spans(&normal, TRACE));
    let r = s.app.get(&path(TRACE)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["root"]["status"], "NORMAL");
    assert_eq!(r.body["culprits"], json!([]));
    assert!(
        r.body["summary"]
            .as_str()
            .unwrap()
            .contains("within its threshold"),
        "{}",
        r.body["summary"]
    );
}

#[tokio::test]
async fn a_partial_trace_says_which_spans_are_missing() {
    let s = setup("analysis-partial", Mode::V3).await;
    // C is missing: D's parent is not in the trace.
    let partial: Vec<SpanRow> = TREE.iter().copied().filter(|r| r.0 != 0xc).collect();
    s.tempo.tempo.load_spans(resource_spans(&partial, TRACE));
    let r = s.app.get(&path(TRACE)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["partial"], true);
    assert_eq!(
        r.body["missingParents"],
        json!([{"parentSpanId": format!("{:016x}", 0xc), "spanIds": [format!("{:016x}", 0xd)]}])
    );
    // The orphaned subtree is still analysed: its slow span is still a culprit.
    assert_eq!(r.body["culprits"][0]["spanId"], format!("{:016x}", 0xe));
    assert!(span(&r.body, 0xd)["parentSpanId"].is_null());
}

#[tokio::test]
async fn unknown_traces_are_404_in_both_versions() {
    for mode in [Mode::V2, Mode::V3] {
        let s = setup("analysis-404", mode).await;
        let r = s.app.get(&path(0xdead)).await;
        assert_eq!(r.status, 404, "{mode:?}: {}", r.text);
        assert_eq!(r.error_code(), "TRACE_NOT_FOUND");
    }
}

#[tokio::test]
async fn bad_input_is_a_4xx_and_tempo_failing_a_503_or_502() {
    let s = setup("analysis-bad", Mode::V2).await;
    let r = s.app.get("/v1/traces/not-hex/analysis").await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (400, "INVALID_TRACE_ID")
    );
    let r = s
        .app
        .get(&format!("/v1/traces/{}/analysis", "f".repeat(33)))
        .await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (400, "INVALID_TRACE_ID")
    );

    for (body, code) in [
        (json!({"resourceSpans": "no"}), "INVALID_BODY"),
        (json!({"resourceSpans": []}), "INVALID_TRACE"),
    ] {
        let r = s.app.post("/v1/traces/analysis", &body).await;
        assert_eq!(
            (r.status.as_u16(), r.error_code()),
            (400, code),
            "{}",
            r.text
        );
    }
    // Spans of two traces.
    let mut two = resource_spans(&TREE[..2], TRACE);
    two.extend(resource_spans(&TREE[2..3], TRACE + 1));
    let r = s
        .app
        .post(
            "/v1/traces/analysis",
            &otlp_json(json!({"resourceSpans": two})),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (400, "INVALID_TRACE"),
        "{}",
        r.text
    );

    // Over checker.analysis.max_spans (100): refused before any work.
    let many: Vec<SpanRow> = (1..=101u64)
        .map(|i| (i, if i == 1 { 0 } else { 1 }, "svc", "op", 3, 0, 10))
        .collect();
    s.tempo.tempo.load_spans(resource_spans(&many, TRACE + 2));
    let r = s.app.get(&path(TRACE + 2)).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (413, "TRACE_TOO_LARGE"),
        "{}",
        r.text
    );
    let r = s
        .app
        .post(
            "/v1/traces/analysis",
            &otlp_json(json!({"resourceSpans": resource_spans(&many, TRACE + 2)})),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (413, "TRACE_TOO_LARGE")
    );

    // Tempo down, then slow: 503 saying so, never a 500.
    s.tempo.tempo.load_spans(resource_spans(&TREE, TRACE));
    s.tempo
        .tempo
        .fail_lookups_until_cleared(Fault::unavailable());
    let r = s.app.get(&path(TRACE)).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (503, "TEMPO_UNAVAILABLE"),
        "{}",
        r.text
    );
    assert!(r.headers.contains_key("retry-after"));
    s.tempo.tempo.clear_faults();
    s.tempo.tempo.set_lookup_delay(Duration::from_secs(2));
    let r = s.app.get(&path(TRACE)).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (503, "TEMPO_UNAVAILABLE"),
        "{}",
        r.text
    );
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tempo"),
        "{}",
        r.text
    );
    s.tempo.tempo.set_lookup_delay(Duration::ZERO);
    assert_eq!(s.app.get(&path(TRACE)).await.status, 200);

    // An answer that is not a trace (a proxy's HTML page), after the retries: a bad gateway.
    s.tempo.tempo.fail_lookups_until_cleared(Fault::Malformed);
    let r = s.app.get(&path(TRACE)).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (502, "TEMPO_ERROR"),
        "{}",
        r.text
    );
    s.tempo.tempo.clear_faults();
    assert_eq!(s.app.get(&path(TRACE)).await.status, 200);
}

#[tokio::test]
async fn without_tempo_the_get_says_to_post() {
    let c = config(&anomaly_testkit::shared_redis_url(), "analysis-no-tempo");
    let r = App::new(&c).get(&path(TRACE)).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (503, "TEMPO_UNAVAILABLE")
    );
    assert!(r.text.contains("/v1/traces/analysis"), "{}", r.text);
}
