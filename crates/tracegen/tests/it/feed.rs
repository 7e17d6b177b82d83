//! The live feed lists every generated trace once, late root spans first as partial traces and
//! then complete, and the fake Tempo serves them in Tempo's shapes.

use std::time::{Duration, UNIX_EPOCH};

use anomaly_core::TimeConfig;
use serde_json::Value;
use tracegen::feed::LiveFeed;
use tracegen::tempo::{FakeTempo, PARTIAL_ROOT};
use tracegen::traffic::{Generator, Profile};

const SECOND: u64 = 1_000_000_000;
/// Monday 2026-11-23 10:00 in Asia/Taipei.
const T0: u64 = (1_795_363_200 + 10 * 3_600) * SECOND;

async fn search(url: &str, start: u64, end: u64) -> Vec<Value> {
    let body: Value = reqwest::get(format!(
        "{url}/api/search?start={}&end={}&limit=100000",
        start / SECOND,
        end / SECOND + 1
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    body.get("traces")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

#[test]
fn history_and_live_steps_list_every_trace_once() {
    let generator = Generator::new(Profile::demo(), 21, &TimeConfig::default());
    let tempo = FakeTempo::new();
    let mut feed = LiveFeed::new(generator.clone(), T0);
    let history = feed.step(&tempo, T0 + 6 * 3_600 * SECOND);
    assert!(history.traces() > 1_500, "{history:?}");
    let mut added = history.traces();
    for s in [1, 2, 30, 31, 600] {
        added += feed
            .step(&tempo, T0 + 6 * 3_600 * SECOND + s * SECOND)
            .traces();
    }
    // A step back in time adds nothing.
    added += feed.step(&tempo, T0).traces();
    let expected = generator.traces_between(T0, T0 + 6 * 3_600 * SECOND + 600 * SECOND);
    assert_eq!(added, expected.len());
    assert_eq!(tempo.len(), expected.len());
}

#[tokio::test]
async fn late_root_spans_are_listed_partial_then_complete() {
    let mut profile = Profile::demo();
    profile.late_root_rate = 1.0;
    profile.lost_root_rate = 0.0;
    profile.rate_scale = 5.0;
    let generator = Generator::new(profile, 22, &TimeConfig::default());
    let running = FakeTempo::new().spawn().await;
    let mut feed = LiveFeed::new(generator, T0);

    let t1 = T0 + 60 * SECOND;
    let first = feed.step(&running, t1);
    // Root spans due by t1 arrived within the step: those traces are listed complete at once.
    assert!(first.partial > 10 && first.complete > 0, "{first:?}");
    assert_eq!(feed.pending(), first.partial);
    running.set_now(UNIX_EPOCH + Duration::from_nanos(t1));
    let listed = search(&running.url(), T0, t1).await;
    let partial: Vec<&Value> = listed
        .iter()
        .filter(|t| t["rootServiceName"] == PARTIAL_ROOT)
        .collect();
    assert!(!partial.is_empty() && partial.len() <= first.partial);
    for t in partial {
        assert!(t.get("rootTraceName").is_none(), "{t}");
    }

    // Every root span is due within 45 s after its trace ends.
    let t2 = t1 + 120 * SECOND;
    let second = feed.step(&running, t2);
    assert_eq!(second.completed_late, first.partial, "{second:?}");
    assert_eq!(feed.pending(), second.partial);
    running.set_now(UNIX_EPOCH + Duration::from_nanos(t2));
    let listed = search(&running.url(), T0, t1).await;
    assert_eq!(
        listed.len(),
        first.traces(),
        "the same traces, now complete"
    );
    for t in &listed {
        assert_ne!(t["rootServiceName"], PARTIAL_ROOT, "{t}");
        assert!(
            t["rootTraceName"].as_str().unwrap().contains("/api/"),
            "{t}"
        );
    }
}
