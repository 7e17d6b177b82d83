//! Fallback levels against numpy: for thin buckets, each level's statistics and quantiles are
//! those of the union of the windows it covers (`testdata/fallback/levels.json`, written by
//! `gen_levels.py`), and they are refreshed at most once per `fallback_refresh`.

use std::time::Duration;

use anomaly_core::{BaselineKey, Baselines, DayType, DurationMs, Fallback, TraceId};
use anomaly_store::IngestItem;
use anomaly_testkit::shared_redis_url;
use serde_json::Value;

use crate::{config, recomputer, settings};

fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/fallback/levels.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn day(v: &Value) -> DayType {
    v.as_str().unwrap().parse().unwrap()
}

fn key(hour: u64, day_type: DayType) -> BaselineKey {
    BaselineKey::new("shop", "GET /levels", hour as u8, day_type).unwrap()
}

fn close(got: f64, want: f64, tol: f64) -> bool {
    (got - want).abs() <= tol * want.abs().max(1.0)
}

/// Compares a stored level with numpy's statistics of the union.
fn check(level: Option<&Fallback>, want: &Value, what: &str) {
    if want.is_null() {
        assert!(level.is_none(), "{what}: no samples, no level");
        return;
    }
    let level = level.unwrap_or_else(|| panic!("{what}: missing"));
    let b = &level.summary.baseline;
    assert_eq!(
        b.sample_count,
        want["sampleCount"].as_u64().unwrap(),
        "{what}"
    );
    for (got, field) in [(b.p50, "p50"), (b.p95, "p95"), (b.mad, "mad")] {
        let w = want[field].as_f64().unwrap();
        assert!(close(got, w, 1e-12), "{what} {field}: {got} vs numpy {w}");
    }
    let q = level.summary.quantiles.as_ref().expect("quantiles");
    for (got, w) in q.values().iter().zip(want["quantiles"].as_array().unwrap()) {
        // Stored to the microsecond.
        let w = w.as_f64().unwrap();
        assert!(
            (got - w).abs() <= 0.000_5 + 1e-9,
            "{what} quantile: {got} vs numpy {w}"
        );
    }
}

async fn seed(r: &recomputer::Recomputer, c: &recomputer::Config, data: &Value, first_trace: u128) {
    let mut items = Vec::new();
    let mut trace = first_trace;
    for w in data["windows"].as_array().unwrap() {
        let k = key(w["hour"].as_u64().unwrap(), day(&w["dayType"]));
        for s in w["samples"].as_array().unwrap() {
            items.push(IngestItem {
                start_ms: 0,
                trace_id: TraceId::parse(&format!("{trace:x}")).unwrap(),
                key: k.clone(),
                duration: DurationMs::new(s.as_f64().unwrap()).unwrap(),
            });
            trace += 1;
        }
    }
    r.store().ingest(&items, &settings(c)).await.unwrap();
}

async fn stored(r: &recomputer::Recomputer, k: &BaselineKey) -> Baselines {
    r.store()
        .stored_baselines(std::slice::from_ref(k))
        .await
        .unwrap()
        .pop()
        .flatten()
        .unwrap_or_default()
}

#[tokio::test]
async fn thin_buckets_get_the_levels_of_the_union_of_their_windows() {
    let data = vectors();
    let c = config(&shared_redis_url(), "levels-numpy");
    assert_eq!(
        u64::from(c.common.stats.nearby_hours),
        data["nearbyHours"].as_u64().unwrap()
    );
    let r = recomputer(&c, "w");
    seed(&r, &c, &data, 1).await;
    let outcome = r.drain_once().await.unwrap();
    assert_eq!(outcome.fallback.endpoints, 1, "{outcome:?}");

    for case in data["expected"].as_array().unwrap() {
        let (hour, d) = (case["hour"].as_u64().unwrap(), day(&case["dayType"]));
        let what = format!("{d} {hour}:00");
        let got = stored(&r, &key(hour, d)).await;
        let exact = case["exactCount"].as_u64().unwrap();
        assert_eq!(
            got.exact.as_ref().map_or(0, |s| s.baseline.sample_count),
            exact,
            "{what}"
        );
        check(
            got.fallback[0].as_ref(),
            &case["nearby"],
            &format!("{what} nearby"),
        );
        check(
            got.fallback[1].as_ref(),
            &case["dayTypeLevel"],
            &format!("{what} dayType"),
        );
        check(
            got.fallback[2].as_ref(),
            &case["all"],
            &format!("{what} all"),
        );
        if let Some(nearby) = &got.fallback[0] {
            let hours: Vec<u64> = nearby.hours().into_iter().map(u64::from).collect();
            let want: Vec<u64> = case["nearbyHours"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h.as_u64().unwrap())
                .collect();
            assert_eq!(hours, want, "{what}");
        }
    }
    // A bucket with enough samples of its own gets no nearby level (it is never consulted).
    let busy = stored(&r, &key(9, DayType::Weekday)).await;
    assert_eq!(busy.exact.as_ref().unwrap().baseline.sample_count, 400);
    assert!(busy.fallback[0].is_none());
}

#[tokio::test]
async fn levels_refresh_at_most_once_per_period_and_catch_up_later() {
    let mut c = config(&shared_redis_url(), "levels-refresh");
    c.service.fallback_refresh = Duration::from_millis(1500);
    let r = recomputer(&c, "w");
    let thin = key(5, DayType::Weekday);
    let ingest = |first: u128, n: u128, ms: f64| {
        let items: Vec<IngestItem> = (first..first + n)
            .map(|t| IngestItem {
                start_ms: 0,
                trace_id: TraceId::parse(&format!("{t:x}")).unwrap(),
                key: thin.clone(),
                duration: DurationMs::new(ms).unwrap(),
            })
            .collect();
        let (store, settings) = (r.store().clone(), settings(&c));
        async move { store.ingest(&items, &settings).await.unwrap() }
    };
    let all_count = |b: &Baselines| {
        b.fallback[2]
            .as_ref()
            .map(|f| f.summary.baseline.sample_count)
    };
    ingest(1, 10, 5.0).await;
    assert_eq!(r.drain_once().await.unwrap().fallback.endpoints, 1);
    assert_eq!(all_count(&stored(&r, &thin).await), Some(10));

    // Within the period: the levels wait, and the endpoint is put back for later.
    ingest(100, 5, 7.0).await;
    let outcome = r.drain_once().await.unwrap();
    assert_eq!(
        (outcome.fallback.endpoints, outcome.fallback.deferred),
        (0, 1)
    );
    assert_eq!(all_count(&stored(&r, &thin).await), Some(10));
    assert_eq!(
        r.store().fallback_backlog().await.unwrap(),
        1,
        "deferred, not lost"
    );
    assert_eq!(
        r.store().dirty_len().await.unwrap(),
        0,
        "the dirty set is for baselines"
    );

    // After it, with no new sample, the next drain brings them up to date.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(r.drain_once().await.unwrap().fallback.endpoints, 1);
    assert_eq!(all_count(&stored(&r, &thin).await), Some(15));
    assert_eq!(r.store().fallback_backlog().await.unwrap(), 0);
}

#[tokio::test]
async fn an_empty_chain_computes_no_levels() {
    let mut c = config(&shared_redis_url(), "levels-off");
    c.common.stats.fallback = Vec::new();
    let r = recomputer(&c, "w");
    seed(&r, &c, &vectors(), 1).await;
    let outcome = r.drain_once().await.unwrap();
    assert_eq!(outcome.fallback, recomputer::FallbackOutcome::default());
    let got = stored(&r, &key(12, DayType::Weekday)).await;
    assert_eq!(got.exact.unwrap().baseline.sample_count, 12);
    assert_eq!(got.fallback, [None, None, None]);
}

/// An override whose patterns match no stored key is reported (and logged) at start-up.
#[tokio::test]
async fn overrides_that_match_nothing_are_reported() {
    let c = config(&shared_redis_url(), "levels-overrides");
    let r = recomputer(&c, "w");
    seed(&r, &c, &vectors(), 1).await;
    let entry = |service: &str, endpoint: Option<&str>| anomaly_core::Override {
        service: Some(service.to_owned()),
        endpoint: endpoint.map(str::to_owned),
        factor: Some(3.0),
        ..anomaly_core::Override::default()
    };
    let list = anomaly_core::Overrides::new(
        &[
            entry("sh*", Some("GET /lev*")),
            entry("shop", Some("POST /*")),
            entry("checkout", None),
        ],
        1000,
    )
    .unwrap();
    let unmatched = recomputer::report_unmatched(r.store(), &list)
        .await
        .unwrap();
    assert_eq!(unmatched, [1, 2]);
}
