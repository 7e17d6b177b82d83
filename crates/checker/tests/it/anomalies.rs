//! `GET /v1/anomalies`: the feed newest first across pages, each entry explained in the very
//! words the check API gives the same verdict, filters by name and time, trace links, a 400 for
//! every bad parameter and a 503 while Redis is down.

use std::collections::HashSet;
use std::time::Duration;

use anomaly_core::{BaselineKey, Baselines, DayType, DurationMs, TraceId, Verdict};
use anomaly_store::{FeedEntry, FeedSettings, SampleKind};
use anomaly_testkit::{RedisServer, shared_redis_url};
use checker::Config;
use serde_json::Value;

use crate::{App, baseline, body, config, key, seed, store};

const TEMPLATE: &str =
    r#"https://grafana.example/explore?left={"queries":[{"query":"{traceID}"}]}"#;

fn settings() -> FeedSettings {
    FeedSettings {
        max_len: 100_000,
        retention: Duration::from_secs(7 * 86_400),
    }
}

/// A feed entry for trace `n`, judged as the ingester does: the configured rule against the
/// bucket's baseline, at `at_ms`.
fn judged(
    config: &Config,
    n: u128,
    key: &BaselineKey,
    b: anomaly_core::Baseline,
    duration: f64,
    at_ms: i64,
) -> FeedEntry {
    let stats = &config.common.stats;
    FeedEntry {
        trace_id: TraceId::parse(&format!("{n:x}")).unwrap(),
        key: key.clone(),
        kind: SampleKind::Root,
        start_ms: at_ms - 2_000,
        at_ms,
        verdict: Verdict::judge(
            DurationMs::new(duration).unwrap(),
            &Baselines::exact(Some(b)),
            &stats.rule(None),
            &stats.fallback,
        ),
        override_index: None,
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Every page of `query` (without `cursor`), `limit` at a time.
async fn pages(app: &App, query: &str) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("/v1/anomalies?{query}&cursor={c}"),
            None => format!("/v1/anomalies?{query}"),
        };
        let r = app.get(&url).await;
        assert_eq!(r.status, 200, "{url}: {}", r.text);
        out.push(r.body["anomalies"].as_array().unwrap().clone());
        match r.body["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return out,
        }
    }
}

fn trace_ids(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e["traceId"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_feed_pages_newest_first_with_the_check_apis_explanation_and_links() {
    let mut config = config(&shared_redis_url(), "anomalies_feed");
    config.common.links.trace_url = TEMPLATE.to_owned();
    let app = App::new(&config);
    let empty = app.get("/v1/anomalies").await;
    assert_eq!(empty.status, 200, "{}", empty.text);
    assert_eq!(
        empty.body,
        serde_json::json!({"anomalies": [], "nextCursor": null})
    );

    let pay = key("checkout", "POST /pay", 14, DayType::Weekday);
    let b = baseline(120.0, 310.0, 18.0, 1000);
    seed(&config, &[(pay.clone(), b)]).await;
    let entries: Vec<FeedEntry> = (1..=7)
        .map(|n| judged(&config, n, &pay, b, 1000.0 + 100.0 * n as f64, now_ms()))
        .collect();
    let store = store(&config);
    store
        .append_anomalies(&entries[..4], &settings())
        .await
        .unwrap();
    store
        .append_anomalies(&entries[4..], &settings())
        .await
        .unwrap();

    let got = pages(&app, "limit=3").await;
    assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), vec![3, 3, 1]);
    let all = got.concat();
    let want: Vec<String> = (1..=7u128).rev().map(|n| format!("{n:032x}")).collect();
    assert_eq!(trace_ids(&all), want);

    // The newest: 1700 ms, explained exactly as the check API explains the same request.
    let newest = &all[0];
    let check = app.check(&body(&pay, 1700.0)).await;
    assert_eq!(check.status, 200, "{}", check.text);
    assert_eq!(check.body["status"], "ANOMALY");
    for field in [
        "reason",
        "threshold",
        "bound",
        "excessMs",
        "baselineSource",
        "baseline",
        "durationMs",
    ] {
        assert_eq!(newest[field], check.body[field], "{field}");
    }
    assert_eq!(newest["bucket"], check.body["bucket"]);
    assert_eq!(newest["service"], "checkout");
    assert_eq!(newest["endpoint"], "POST /pay");
    assert_eq!(newest["kind"], "root");
    assert_eq!(newest["rank"], Value::Null, "the baseline has no quantiles");
    let hex = newest["traceId"].as_str().unwrap();
    assert_eq!(
        newest["traceUrl"],
        format!(
            "https://grafana.example/explore?left=%7B%22queries%22:[%7B%22query%22:%22{hex}%22%7D]%7D"
        )
    );
    let time = newest["time"].as_str().unwrap();
    let parsed = chrono::DateTime::parse_from_rfc3339(time).unwrap();
    assert_eq!(parsed.timestamp_millis(), newest["timeUnixMs"]);
    assert!((newest["timeUnixMs"].as_i64().unwrap() - now_ms()).abs() < 60_000);
    assert!(newest["traceStart"].as_str().unwrap().ends_with('Z'));

    // Without a template, no link.
    let mut plain = config.clone();
    plain.common.links.trace_url = String::new();
    let r = App::new(&plain).get("/v1/anomalies?limit=1").await;
    assert!(
        r.body["anomalies"][0].get("traceUrl").is_none(),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn filters_by_name_and_by_time() {
    let config = config(&shared_redis_url(), "anomalies_filters");
    let app = App::new(&config);
    let b = baseline(120.0, 310.0, 18.0, 1000);
    let keys = [
        key("checkout", "POST /pay", 14, DayType::Weekday),
        key("checkout", "GET /cart", 14, DayType::Weekday),
        key("search", "POST /pay", 3, DayType::Weekend),
    ];
    let store = store(&config);
    // Twelve appends in turn over the three keys, so that they span some milliseconds.
    for n in 0..12u128 {
        let k = &keys[(n % 3) as usize];
        let e = judged(&config, n + 1, k, b, 5000.0, now_ms());
        store.append_anomalies(&[e], &settings()).await.unwrap();
    }
    let all = pages(&app, "limit=1000").await.concat();
    assert_eq!(all.len(), 12);

    let names = |entries: &[Value]| -> HashSet<(String, String)> {
        entries
            .iter()
            .map(|e| {
                (
                    e["service"].as_str().unwrap().to_owned(),
                    e["endpoint"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let checkout = pages(&app, "service=checkout&limit=2").await.concat();
    assert_eq!(checkout.len(), 8);
    assert!(names(&checkout).iter().all(|(s, _)| s == "checkout"));
    let pay = pages(&app, "endpoint=POST%20%2Fpay&limit=100")
        .await
        .concat();
    assert_eq!(pay.len(), 8);
    let one = pages(&app, "service=search&endpoint=POST%20%2Fpay")
        .await
        .concat();
    assert_eq!(
        trace_ids(&one),
        trace_ids(&all)
            .into_iter()
            .filter(|t| t.ends_with(['3', '6', '9', 'c']))
            .collect::<Vec<_>>()
    );
    assert_eq!(one[0]["bucket"]["dayType"], "weekend");
    let none = pages(&app, "service=nobody&since=").await.concat();
    assert!(none.is_empty());

    // since/until select by the recorded time, both ends inclusive, as ms or RFC 3339.
    let times: Vec<i64> = all
        .iter()
        .map(|e| e["timeUnixMs"].as_i64().unwrap())
        .collect();
    let (oldest, newest) = (times[times.len() - 1], times[0]);
    let middle = times[times.len() / 2];
    let rfc = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let cases = [
        (Some(middle), None),
        (None, Some(middle)),
        (Some(middle), Some(middle)),
        (Some(oldest), Some(newest)),
        (Some(newest + 1), None),
    ];
    for (since, until) in cases {
        let want: Vec<String> = all
            .iter()
            .zip(&times)
            .filter(|(_, t)| since.is_none_or(|s| **t >= s) && until.is_none_or(|u| **t <= u))
            .map(|(e, _)| e["traceId"].as_str().unwrap().to_owned())
            .collect();
        let as_ms = format!(
            "since={}&until={}&limit=5",
            since.map(|s| s.to_string()).unwrap_or_default(),
            until.map(|u| u.to_string()).unwrap_or_default()
        );
        assert_eq!(
            trace_ids(&pages(&app, &as_ms).await.concat()),
            want,
            "{as_ms}"
        );
        let as_rfc = format!(
            "since={}&until={}",
            since.map(rfc).unwrap_or_default(),
            until.map(rfc).unwrap_or_default()
        );
        assert_eq!(
            trace_ids(&pages(&app, &as_rfc).await.concat()),
            want,
            "{as_rfc}"
        );
    }
}

#[tokio::test]
async fn bad_parameters_are_400s_with_the_contracts_body() {
    let config = config(&shared_redis_url(), "anomalies_bad");
    let app = App::new(&config);
    let long = "x".repeat(300);
    let cases = [
        ("cursor=!!".to_owned(), "INVALID_CURSOR"),
        // A cursor of the key listing is not one of the feed's.
        ("cursor=Y2hlY2tvdXR8R0VUIC94".to_owned(), "INVALID_CURSOR"),
        (
            "since=2026-12-02T18:00:00Z&until=2026-12-02T17:00:00Z".to_owned(),
            "INVALID_QUERY",
        ),
        (
            "since=1764694800001&until=1764694800000".to_owned(),
            "INVALID_QUERY",
        ),
        ("limit=1001".to_owned(), "INVALID_QUERY"),
        ("limit=0".to_owned(), "INVALID_QUERY"),
        ("since=yesterday".to_owned(), "INVALID_QUERY"),
        ("until=1764694800".to_owned(), "INVALID_QUERY"),
        (format!("service={long}"), "INVALID_SERVICE"),
        (format!("endpoint={long}"), "INVALID_ENDPOINT"),
    ];
    for (query, code) in cases {
        let r = app.get(&format!("/v1/anomalies?{query}")).await;
        assert_eq!(r.status, 400, "{query}: {}", r.text);
        assert_eq!(r.error_code(), code, "{query}");
    }
}

#[tokio::test]
async fn redis_down_is_a_503() {
    let mut redis = RedisServer::start();
    let mut config = config(&redis.url(), "anomalies_down");
    config.common.redis.timeout = Duration::from_millis(500);
    let app = App::new(&config);
    assert_eq!(app.get("/v1/anomalies").await.status, 200);
    redis.stop();
    let r = app.get("/v1/anomalies?service=checkout").await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.error_code(), "REDIS_UNAVAILABLE");
    assert_eq!(r.headers["retry-after"], "1");
}
