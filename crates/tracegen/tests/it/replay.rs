//! Replays recorded Tempo requests (testdata/tempo) against the fake loaded with the same traces
//! and checks that the answers have the recorded shape: status, content type, which keys are
//! present or omitted, error texts.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;
use tracegen::tempo::{FakeTempo, LimitCap, Mode, Trace};

fn recording(version: &str, name: &str, ext: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/tempo")
        .join(version)
        .join(format!("{name}.{ext}"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The recorded traces of a full listing, as fake traces.
fn traces_of(body: &str) -> Vec<Trace> {
    let v: Value = serde_json::from_str(body).unwrap();
    v["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| Trace {
            trace_id: t["traceID"].as_str().unwrap().to_owned(),
            root_service: t["rootServiceName"].as_str().unwrap().to_owned(),
            root_name: t["rootTraceName"].as_str().map(str::to_owned),
            start_unix_nano: t["startTimeUnixNano"].as_str().unwrap().parse().unwrap(),
            duration_ms: t["durationMs"].as_u64().unwrap_or(0) as u32,
        })
        .collect()
}

/// The recorded `Date:` header as unix seconds (`Wed, 25 Nov 2026 06:17:03 GMT`).
fn recorded_now(headers: &str) -> u64 {
    let date = headers
        .lines()
        .find_map(|l| l.strip_prefix("Date: "))
        .expect("a Date header");
    let parts: Vec<&str> = date.split_whitespace().collect();
    assert_eq!(
        &parts[2..4],
        ["Nov", "2026"],
        "recordings are from November 2026"
    );
    let day: u64 = parts[1].parse().unwrap();
    let hms: Vec<u64> = parts[4].split(':').map(|x| x.parse().unwrap()).collect();
    // 2026-11-01T00:00:00Z.
    1_793_491_200 + (day - 1) * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2]
}

fn shape(v: &Value) -> (BTreeSet<String>, Vec<BTreeSet<String>>) {
    let top = v.as_object().unwrap().keys().cloned().collect();
    let mut traces: Vec<BTreeSet<String>> = v["traces"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| t.as_object().unwrap().keys().cloned().collect())
                .collect()
        })
        .unwrap_or_default();
    traces.sort();
    (top, traces)
}

struct Case {
    version: &'static str,
    name: &'static str,
    tenant: Option<&'static str>,
    org_id: Option<&'static str>,
    /// Whole-body comparison (not only the shape) for answers that do not depend on which
    /// traces a truncation kept.
    exact_traces: bool,
}

const fn case(version: &'static str, name: &'static str) -> Case {
    Case {
        version,
        name,
        tenant: None,
        org_id: None,
        exact_traces: false,
    }
}

#[tokio::test]
async fn recorded_requests_get_recorded_shapes() {
    let cases = [
        Case {
            exact_traces: true,
            ..case("v2.0.1", "07_search_start_end")
        },
        case("v2.0.1", "03_search_limit5"),
        case("v2.0.1", "08_search_start_end_limit5"),
        case("v2.0.1", "16_search_limit0"),
        case("v2.0.1", "17_search_badlimit"),
        case("v2.0.1", "18_search_end_before_start"),
        case("v2.0.1", "21_search_bad_traceql"),
        case("v2.0.1", "22_search_tags_and_q"),
        case("v2.0.1", "23_search_rfc3339_start"),
        case("v2.0.1", "24_search_huge_range"),
        case("v2.0.1", "31_ready"),
        case("v2.0.1", "32_echo"),
        Case {
            tenant: Some("team-a"),
            ..case("v2.0.1", "40_mt_search_no_orgid")
        },
        Case {
            tenant: Some("team-a"),
            org_id: Some("team-a|team-b"),
            ..case("v2.0.1", "43_mt_search_team_a_or_b")
        },
        Case {
            exact_traces: true,
            ..case("v3.0.3", "07_search_start_end")
        },
        case("v3.0.3", "03_search_limit5"),
        case("v3.0.3", "08_search_start_end_limit5"),
        case("v3.0.3", "16_search_limit0"),
        case("v3.0.3", "17_search_badlimit"),
        case("v3.0.3", "18_search_end_before_start"),
        case("v3.0.3", "23_search_rfc3339_start"),
        case("v3.0.3", "24_search_huge_range"),
        case("v3.0.3", "25_search_over_maxlimit"),
        case("v3.0.3", "30_only_start"),
        case("v3.0.3", "36_empty_result"),
    ];
    let client = reqwest::Client::new();
    for c in cases {
        let full = recording(c.version, "07_search_start_end", "json");
        let fake = FakeTempo::new();
        fake.upsert_all(traces_of(&full));
        fake.set_mode(if c.version == "v3.0.3" {
            Mode::V3
        } else {
            Mode::V2
        });
        fake.set_tenant(c.tenant);
        let headers = recording(c.version, c.name, "headers");
        fake.set_now(UNIX_EPOCH + Duration::from_secs(recorded_now(&headers)));
        let tempo = fake.spawn().await;

        let url = recording(c.version, c.name, "url");
        let mut request = client.get(format!("{}{}", tempo.url(), url.trim()));
        if let Some(org) = c.org_id {
            request = request.header("X-Scope-OrgID", org);
        }
        let response = request.send().await.unwrap();
        let what = format!("{} {}", c.version, c.name);
        let want_status: u16 = headers.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert_eq!(response.status().as_u16(), want_status, "{what}: status");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        let body = response.text().await.unwrap();
        let recorded = recording(c.version, c.name, "json");
        if want_status != 200 || !content_type.starts_with("application/json") {
            assert!(
                content_type.starts_with("text/plain"),
                "{what}: {content_type}"
            );
            // Tempo's texts name Go functions and echo the request; the fake says the same
            // thing up to the first detail.
            let head = |s: &str| s.split([':', '.']).next().unwrap().trim().to_owned();
            assert_eq!(
                head(&body),
                head(&recorded),
                "{what}: {body:?} vs {recorded:?}"
            );
            if c.name.contains("end_before_start") || c.name.contains("huge_range") {
                assert_eq!(body.trim(), recorded.trim(), "{what}");
            }
            continue;
        }
        let got: Value = serde_json::from_str(&body).unwrap();
        let want: Value = serde_json::from_str(&recorded).unwrap();
        assert_eq!(
            shape(&got),
            shape(&want),
            "{what}: keys\n got {got}\nwant {want}"
        );
        assert!(got["metrics"].is_object(), "{what}: metrics");
        if c.exact_traces {
            assert_eq!(got["traces"], want["traces"], "{what}");
        }
    }
}

#[tokio::test]
async fn truncation_keeps_an_arbitrary_subset_sorted_newest_first() {
    let (tempo, base) = hundred_traces().await;
    let body: Value = reqwest::get(format!(
        "{}/api/search?start=1795586900&end=1795587200&limit=10",
        tempo.url()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let starts: Vec<u64> = body["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["startTimeUnixNano"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(starts.len(), 10);
    assert!(starts.windows(2).all(|w| w[0] > w[1]), "newest first");
    let newest: Vec<u64> = (90..100).rev().map(|i| base + i * 1_000_000_000).collect();
    assert_ne!(
        starts, newest,
        "the kept subset must not be simply the newest"
    );
}

/// `max_result_limit` as Tempo v2.0 to v2.5 apply it (a larger limit silently lowered) and as
/// v2.6+ do (400 with Tempo's exact message, the shape of `v3.0.3/25_search_over_maxlimit`);
/// a limit at or under the cap is answered as usual either way.
#[tokio::test]
async fn max_result_limit_is_clamped_or_refused() {
    let (tempo, _) = hundred_traces().await;
    let search = async |limit: u32| {
        let r = reqwest::get(format!(
            "{}/api/search?start=1795586900&end=1795587200&limit={limit}",
            tempo.url()
        ))
        .await
        .unwrap();
        let status = r.status().as_u16();
        let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
        (status, content_type, r.text().await.unwrap())
    };
    let count = |body: &str| -> usize {
        serde_json::from_str::<Value>(body).unwrap()["traces"]
            .as_array()
            .map_or(0, Vec::len)
    };

    tempo.set_max_limit(Some(LimitCap::Clamp(20)));
    let (status, _, body) = search(500).await;
    assert_eq!((status, count(&body)), (200, 20), "silently lowered");
    let (status, _, body) = search(7).await;
    assert_eq!((status, count(&body)), (200, 7));

    tempo.set_max_limit(Some(LimitCap::Reject(20)));
    let (status, content_type, body) = search(500).await;
    assert_eq!(status, 400);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert_eq!(body, "limit 500 exceeds max limit 20");
    let recorded = recording("v3.0.3", "25_search_over_maxlimit", "json");
    assert_eq!(
        recorded, "limit 300000 exceeds max limit 262144",
        "the same words"
    );
    let (status, _, body) = search(20).await;
    assert_eq!((status, count(&body)), (200, 20));

    tempo.set_max_limit(None);
    let (status, _, body) = search(500).await;
    assert_eq!((status, count(&body)), (200, 100));
}

/// A fake Tempo holding 100 traces, one a second from `base` (unix nanoseconds, returned).
async fn hundred_traces() -> (tracegen::tempo::RunningTempo, u64) {
    let fake = FakeTempo::new();
    let base = 1_795_587_000_000_000_000u64;
    for i in 0..100u64 {
        fake.upsert(Trace::new(
            format!("{i:x}"),
            "svc",
            "GET /",
            base + i * 1_000_000_000,
            5,
        ));
    }
    fake.set_now(UNIX_EPOCH + Duration::from_secs(1_795_587_500));
    (fake.spawn().await, base)
}
