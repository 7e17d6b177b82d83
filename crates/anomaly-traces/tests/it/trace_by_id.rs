//! Trace by ID against the fake Tempo: found in both versions and every encoding, not found,
//! refused, retried, timed out, oversized, and sent with the tenant and the proxy's credentials.

use std::path::PathBuf;
use std::time::Duration;

use anomaly_core::TraceId;
use anomaly_traces::tempo::{
    FetchedTrace, TempoAuth, TempoError, TempoHttp, TempoSection, TraceApi, TraceFetcher,
    parse_trace_response,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use serde_json::Value;
use tracegen::tempo::{Auth, FakeTempo, Fault, Mode, RunningTempo, Trace};

const MULTI: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const ZEROS: &str = "00000000000000000af7651916cd43dd";
const LATE_ROOT: &str = "9a3d1c7e5b2f48a6b0e4d2c8f1a7e3b5";

fn recorded(path: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/tempo")
        .join(path);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The OTLP the recorded Tempo `version` was given.
fn pushed_to(version: &str, name: &str) -> Vec<ResourceSpans> {
    anomaly_traces::otlp::decode_json(&recorded(&format!(
        "{version}/traces/pushed_{name}.otlp.json"
    )))
    .unwrap()
    .resource_spans
}

fn pushed(name: &str) -> Vec<ResourceSpans> {
    pushed_to("v3.0.3", name)
}

fn version(mode: Mode) -> &'static str {
    match mode {
        Mode::V2 => "v2.0.1",
        Mode::V3 => "v3.0.3",
    }
}

/// A fake Tempo holding what the recorded one of the same version was given (the root of the
/// late-root trace not yet).
async fn tempo(mode: Mode) -> RunningTempo {
    let tempo = FakeTempo::new();
    tempo.set_mode(mode);
    for name in ["multi", "single", "zeros", "lateroot_children"] {
        tempo.load_spans(pushed_to(version(mode), name));
    }
    tempo.spawn().await
}

fn settings(url: &str) -> TempoSection {
    TempoSection {
        url: url.to_owned(),
        retries: 2,
        backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(1),
        timeout: Duration::from_secs(5),
        ..TempoSection::default()
    }
}

fn fetcher(settings: &TempoSection) -> TraceFetcher {
    TraceFetcher::new(settings, "anomaly-traces-test").unwrap()
}

fn id(hex: &str) -> TraceId {
    TraceId::parse(hex).unwrap()
}

fn spans(resource_spans: &[ResourceSpans]) -> Vec<&Span> {
    resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .collect()
}

/// Spans compared whatever their order and their attributes' order (Tempo keeps neither).
fn sorted(resource_spans: &[ResourceSpans]) -> Vec<Span> {
    let mut out: Vec<Span> = spans(resource_spans)
        .into_iter()
        .map(|s| {
            let mut s = s.clone();
            s.attributes.sort_by(|a, b| a.key.cmp(&b.key));
            s.status.get_or_insert_default();
            s
        })
        .collect();
    out.sort_by(|a, b| a.span_id.cmp(&b.span_id));
    out
}

fn pushed_of(mode: Mode, trace: &str) -> Vec<Span> {
    let all: Vec<ResourceSpans> = ["multi", "single", "zeros", "lateroot_children"]
        .into_iter()
        .flat_map(|name| pushed_to(version(mode), name))
        .collect();
    sorted(&all)
        .into_iter()
        .filter(|s| TraceId::from_bytes(s.trace_id[..].try_into().unwrap()) == id(trace))
        .collect()
}

/// Asks `path` with `accept` through the shared plumbing, as a proxy or another client would.
async fn ask(
    tempo: &RunningTempo,
    api: TraceApi,
    trace: &str,
    accept: Option<&str>,
) -> Result<Option<FetchedTrace>, TempoError> {
    let http = TempoHttp::new(&settings(&tempo.url()), "test").unwrap();
    let mut request = http.get(&http.url(&api.path(&id(trace))));
    if let Some(accept) = accept {
        request = request.header("Accept", accept);
    }
    let response = http.send(request).await?;
    parse_trace_response(api, &response)
}

#[tokio::test]
async fn a_trace_is_found_in_both_versions_and_every_encoding() {
    for mode in [Mode::V2, Mode::V3] {
        let tempo = tempo(mode).await;
        let fetcher = fetcher(&settings(&tempo.url()));
        for trace in [MULTI, ZEROS] {
            let want = pushed_of(mode, trace);
            let got = fetcher.fetch(&id(trace)).await.unwrap().unwrap();
            assert_eq!(sorted(&got), want, "{mode:?} {trace}");
            for accept in [
                None,
                Some("application/json"),
                Some("application/protobuf"),
                Some("text/html"),
            ] {
                let got = ask(&tempo, TraceApi::V1, trace, accept)
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(
                    sorted(&got.resource_spans),
                    want,
                    "{mode:?} {trace} {accept:?}"
                );
            }
            if mode == Mode::V3 {
                for accept in [
                    None,
                    Some("application/protobuf"),
                    Some("application/json, application/protobuf;q=0.9"),
                    Some("application/vnd.grafana.llm"),
                ] {
                    let got = ask(&tempo, TraceApi::V2, trace, accept)
                        .await
                        .unwrap()
                        .unwrap();
                    assert_eq!(got.partial, None);
                    // The LLM shape keeps IDs, names, times and kinds, not every detail.
                    let names = |spans: &[Span]| {
                        spans
                            .iter()
                            .map(|s| {
                                (
                                    s.span_id.clone(),
                                    s.parent_span_id.clone(),
                                    s.name.clone(),
                                    s.kind,
                                    s.start_time_unix_nano,
                                    s.end_time_unix_nano,
                                )
                            })
                            .collect::<Vec<_>>()
                    };
                    let got = sorted(&got.resource_spans);
                    if accept == Some("application/vnd.grafana.llm") {
                        assert_eq!(names(&got), names(&want), "{trace}");
                    } else {
                        assert_eq!(got, want, "{trace} {accept:?}");
                    }
                }
            }
        }
        // The encodings each version chooses, by Accept, as recorded.
        let log = tempo.trace_requests();
        let answered = |accept: Option<&str>| {
            log.iter()
                .find(|r| r.path.starts_with("/api/traces/") && r.accept.as_deref() == accept)
                .and_then(|r| r.content_type.clone())
        };
        assert_eq!(
            answered(Some("application/protobuf")).as_deref(),
            Some("application/protobuf")
        );
        assert_eq!(
            answered(Some("text/html")).as_deref(),
            Some("application/json")
        );
        // reqwest's default Accept.
        assert_eq!(answered(Some("*/*")).as_deref(), Some("application/json"));
    }
}

/// A trace whose root has not arrived is answered with the children only; once the root is
/// loaded the same ID gives all of it.
#[tokio::test]
async fn a_partial_trace_then_its_root() {
    let tempo = tempo(Mode::V3).await;
    let fetcher = fetcher(&settings(&tempo.url()));
    let before = fetcher.fetch(&id(LATE_ROOT)).await.unwrap().unwrap();
    let before = spans(&before);
    assert_eq!(before.len(), 2);
    assert!(before.iter().all(|s| !s.parent_span_id.is_empty()));
    tempo.load_spans(pushed("lateroot_root"));
    let after = fetcher.fetch(&id(LATE_ROOT)).await.unwrap().unwrap();
    assert_eq!(spans(&after).len(), 3);
    assert_eq!(
        spans(&after)
            .iter()
            .filter(|s| s.parent_span_id.is_empty())
            .count(),
        1
    );
}

#[tokio::test]
async fn an_unknown_trace_is_not_found_in_both_versions() {
    let unknown = id("11111111111111111111111111111111");
    for mode in [Mode::V2, Mode::V3] {
        let tempo = tempo(mode).await;
        let fetcher = fetcher(&settings(&tempo.url()));
        assert_eq!(fetcher.fetch(&unknown).await.unwrap(), None, "{mode:?}");
        // Not found is an answer: asked once, never retried.
        assert_eq!(fetcher.requests(), 1);
        let log = tempo.trace_requests();
        assert_eq!(log[0].status, 404);
        match mode {
            Mode::V2 => assert_eq!(
                log[0].content_type.as_deref(),
                Some("text/plain; charset=utf-8")
            ),
            Mode::V3 => assert_eq!(log[0].content_type, None),
        }
        if mode == Mode::V3 {
            for accept in [None, Some("application/protobuf")] {
                let got = ask(&tempo, TraceApi::V2, unknown.as_str(), accept)
                    .await
                    .unwrap();
                assert_eq!(got, None, "{accept:?}");
            }
        } else {
            // v2.0.1 has no /api/v2: its router's 404 is an error, not a missing trace.
            let err = fetcher
                .fetch_from(TraceApi::V2, &unknown)
                .await
                .unwrap_err();
            assert!(
                matches!(&err, TempoError::Status { status: 404, body } if body == "404 page not found"),
                "{err}"
            );
        }
    }
}

/// A 4xx is refused at once; 5xx, throttling and garbage are retried with backoff up to
/// `retries`, then given up.
#[tokio::test]
async fn failures_are_retried_only_when_retrying_can_help() {
    let tempo = tempo(Mode::V3).await;
    let fetcher = fetcher(&settings(&tempo.url()));
    let multi = id(MULTI);

    tempo.fail_next_lookups(
        1,
        Fault::Status(
            400,
            "invalid start: strconv.ParseInt: parsing \"x\": invalid syntax".into(),
        ),
    );
    let err = fetcher.fetch(&multi).await.unwrap_err();
    assert!(
        matches!(&err, TempoError::Status { status: 400, body } if body.starts_with("invalid start")),
        "{err}"
    );
    assert_eq!(fetcher.requests(), 1);

    tempo.fail_next_lookups(2, Fault::unavailable());
    let found = fetcher.fetch(&multi).await.unwrap().unwrap();
    assert_eq!(spans(&found).len(), 7);
    assert_eq!(fetcher.requests(), 1 + 3);

    tempo.fail_next_lookups(1, Fault::Status(429, "slow down".into()));
    tempo.fail_next_lookups(1, Fault::Malformed);
    tempo.fail_next_lookups(1, Fault::Truncated);
    let err = fetcher.fetch(&multi).await.unwrap_err();
    assert!(matches!(err, TempoError::Malformed(_)), "{err}");
    assert_eq!(fetcher.requests(), 4 + 3, "retries: 2");

    tempo.fail_lookups_until_cleared(Fault::unavailable());
    let err = fetcher.fetch(&multi).await.unwrap_err();
    assert!(
        matches!(&err, TempoError::Status { status: 503, .. }),
        "{err}"
    );
    assert!(err.retryable());
    tempo.clear_faults();
    assert!(fetcher.fetch(&multi).await.unwrap().is_some());
    let statuses: Vec<u16> = tempo.trace_requests().iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [400, 503, 503, 200, 429, 200, 200, 503, 503, 503, 200]
    );
}

#[tokio::test]
async fn a_slow_tempo_times_out_after_each_retry() {
    let tempo = tempo(Mode::V2).await;
    tempo.set_lookup_delay(Duration::from_millis(400));
    let mut settings = settings(&tempo.url());
    settings.timeout = Duration::from_millis(100);
    settings.retries = 1;
    let fetcher = fetcher(&settings);
    let started = std::time::Instant::now();
    let err = fetcher.fetch(&id(MULTI)).await.unwrap_err();
    assert!(
        matches!(err, TempoError::Timeout(t) if t == Duration::from_millis(100)),
        "{err}"
    );
    assert_eq!(fetcher.requests(), 2);
    assert!(
        started.elapsed() < Duration::from_millis(390),
        "{:?}",
        started.elapsed()
    );
}

/// The tenant and a proxy's credentials go with every request; without them the fake refuses
/// (401, not retried) as Tempo and a proxy would.
#[tokio::test]
async fn the_tenant_and_credentials_are_sent() {
    let tempo = tempo(Mode::V3).await;
    tempo.set_tenant(Some("team-a"));
    let cases = [
        (
            Auth::Bearer("s3cret".into()),
            TempoAuth {
                token: Some("s3cret".to_owned().into()),
                ..TempoAuth::default()
            },
            "Bearer s3cret",
        ),
        (
            Auth::Basic {
                username: "grafana".into(),
                password: "pw".into(),
            },
            TempoAuth {
                username: Some("grafana".into()),
                password: Some("pw".to_owned().into()),
                ..TempoAuth::default()
            },
            "Basic Z3JhZmFuYTpwdw==",
        ),
    ];
    for (auth, configured, header) in cases {
        tempo.set_auth(auth);
        tempo.clear_requests();
        let mut settings = settings(&tempo.url());
        settings.auth = configured.clone();
        let err = fetcher(&settings).fetch(&id(MULTI)).await.unwrap_err();
        assert!(
            matches!(&err, TempoError::Status { status: 401, body } if body == "no org id"),
            "{err}"
        );
        settings.org_id = "team-a".into();
        let found = fetcher(&settings).fetch(&id(MULTI)).await.unwrap();
        assert_eq!(spans(&found.unwrap()).len(), 7);
        let log = tempo.trace_requests();
        assert_eq!(log.len(), 2, "a 401 is not retried");
        let last = log.last().unwrap();
        assert_eq!(last.org_id.as_deref(), Some("team-a"));
        assert_eq!(last.authorization.as_deref(), Some(header));
        assert_eq!(last.user_agent.as_deref(), Some("anomaly-traces-test"));
        assert_eq!(last.accept.as_deref(), Some("application/protobuf"));
        settings.auth = TempoAuth::default();
        let err = fetcher(&settings).fetch(&id(MULTI)).await.unwrap_err();
        assert!(
            matches!(&err, TempoError::Status { status: 401, .. }),
            "{err}"
        );
        // Another tenant does not see the trace.
        settings.auth = configured;
        settings.org_id = "team-b".into();
        assert_eq!(fetcher(&settings).fetch(&id(MULTI)).await.unwrap(), None);
    }
}

/// v3 refuses a trace over `max_bytes_per_trace` on `/api/traces` (422) and returns what it
/// kept on `/api/v2/traces`, marked partial; v2.0.1 has no `/api/v2`, so the refusal stands. A
/// body over `max_response_bytes` is refused without retrying.
#[tokio::test]
async fn oversized_traces() {
    let tempo = tempo(Mode::V3).await;
    tempo.set_max_bytes_per_trace(Some(1500));
    let fetcher = fetcher(&settings(&tempo.url()));
    let trace = fetcher.fetch_trace(&id(MULTI)).await.unwrap().unwrap();
    assert_eq!(trace.span_count(), 7);
    assert_eq!(
        trace.partial.as_deref(),
        Some("Trace exceeds maximum size of 1500 bytes, a partial trace is returned")
    );
    let paths: Vec<String> = tempo
        .trace_requests()
        .into_iter()
        .map(|r| format!("{} {}", r.status, r.path))
        .collect();
    assert_eq!(
        paths,
        [
            format!("422 /api/traces/{MULTI}"),
            format!("200 /api/v2/traces/{MULTI}")
        ]
    );
    // Under the limit: no detour.
    assert_eq!(
        fetcher
            .fetch_trace(&id(ZEROS))
            .await
            .unwrap()
            .unwrap()
            .partial,
        None
    );

    tempo.set_max_bytes_per_trace(None);
    let mut settings = settings(&tempo.url());
    settings.max_response_bytes = 1024;
    let small = self::fetcher(&settings);
    let err = small.fetch(&id(MULTI)).await.unwrap_err();
    assert!(matches!(err, TempoError::TooLarge(1024)), "{err}");
    tempo.fail_next_lookups(1, Fault::Huge(4096));
    let err = small.fetch(&id(ZEROS)).await.unwrap_err();
    assert!(matches!(err, TempoError::TooLarge(1024)), "{err}");
    assert_eq!(small.requests(), 2, "too large is not retried");
}

/// A trace only listed for search gets tracegen's 10-span shape (children only while its root
/// is missing), so the poller and the analysis have spans to fetch.
#[tokio::test]
async fn listed_traces_have_generated_spans() {
    let tempo = FakeTempo::start().await;
    let start = 1_796_205_668_000_000_000;
    tempo.upsert(Trace::new(
        "af7651916cd43dd8448eb211c80319c",
        "checkout",
        "POST /pay",
        start,
        840,
    ));
    tempo.upsert(Trace::partial("abc", start, 100));
    let fetcher = fetcher(&settings(&tempo.url()));
    let full = fetcher
        .fetch(&id("0af7651916cd43dd8448eb211c80319c"))
        .await
        .unwrap()
        .unwrap();
    let all = spans(&full);
    assert_eq!(all.len(), 10);
    let root = all.iter().find(|s| s.parent_span_id.is_empty()).unwrap();
    assert_eq!(root.name, "POST /pay");
    assert_eq!(
        root.end_time_unix_nano - root.start_time_unix_nano,
        840_000_000
    );
    let partial = fetcher.fetch(&id("abc")).await.unwrap().unwrap();
    assert_eq!(spans(&partial).len(), 9);
    assert!(spans(&partial).iter().all(|s| !s.parent_span_id.is_empty()));
    tempo.set_spans_per_trace(3);
    assert_eq!(
        spans(&fetcher.fetch(&id("abc")).await.unwrap().unwrap()).len(),
        2
    );
}

/// The fake answers in the recorded shapes: its JSON equals the recorded body for the same
/// pushed trace (attributes sorted: Tempo does not keep their order), and its protobuf decodes
/// to the same spans as the recorded protobuf.
#[tokio::test]
async fn the_fake_answers_as_recorded() {
    fn normalise(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("metrics");
                m.values_mut().for_each(normalise);
            }
            Value::Array(items) => {
                items.iter_mut().for_each(normalise);
                if items.iter().all(|i| i.get("key").is_some()) {
                    items.sort_by_key(|i| i["key"].to_string());
                }
            }
            _ => {}
        }
    }
    for (mode, version) in [(Mode::V2, "v2.0.1"), (Mode::V3, "v3.0.3")] {
        let tempo = tempo(mode).await;
        let http = reqwest::Client::new();
        let mut cases = vec![
            (
                "01_trace_multi_json_recent.json",
                format!("/api/traces/{MULTI}"),
            ),
            (
                "07_trace_zeros_json_recent.json",
                format!("/api/traces/{ZEROS}"),
            ),
        ];
        if mode == Mode::V3 {
            cases = vec![
                (
                    "01_trace_multi_json_recent.json",
                    format!("/api/traces/{MULTI}"),
                ),
                (
                    "11_trace_zeros_json_recent.json",
                    format!("/api/traces/{ZEROS}"),
                ),
                (
                    "04_v2_trace_multi_json_recent.json",
                    format!("/api/v2/traces/{MULTI}"),
                ),
                (
                    "30_v2_unknown_id_json.json",
                    "/api/v2/traces/11111111111111111111111111111111".to_owned(),
                ),
            ];
        }
        for (file, path) in cases {
            let mut want: Value =
                serde_json::from_slice(&recorded(&format!("{version}/traces/{file}"))).unwrap();
            let body = http
                .get(format!("{}{path}", tempo.url()))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            let mut got: Value = serde_json::from_slice(&body).unwrap();
            normalise(&mut want);
            normalise(&mut got);
            assert_eq!(got, want, "{version} {file}");
        }
        let pb = http
            .get(format!("{}/api/traces/{MULTI}", tempo.url()))
            .header("Accept", "application/protobuf")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let response = |body: Vec<u8>| anomaly_traces::tempo::TempoResponse {
            status: 200,
            content_type: Some("application/protobuf".into()),
            body,
        };
        let got = parse_trace_response(TraceApi::V1, &response(pb.to_vec()))
            .unwrap()
            .unwrap();
        let want = parse_trace_response(
            TraceApi::V1,
            &response(recorded(&format!(
                "{version}/traces/03_trace_multi_pb_recent.pb"
            ))),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            sorted(&got.resource_spans),
            sorted(&want.resource_spans),
            "{version}"
        );
    }
}
