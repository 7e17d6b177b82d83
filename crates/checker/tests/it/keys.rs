//! `GET /v1/keys` and `GET /v1/services`: every endpoint exactly once across pages, the right
//! counts, filters, a bounded number of Redis commands and round trips per page however many
//! keys exist, and a 400 for every bad parameter.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use anomaly_core::{BaselineKey, DayType, DurationMs};
use anomaly_store::Store;
use anomaly_testkit::{RedisServer, shared_redis_url};
use axum::body::Body;
use axum::http::{Request, header};
use serde_json::{Value, json};

use crate::{App, Reply, config, delaying_proxy, store};

const DAY_TYPES: [DayType; 2] = [DayType::Weekday, DayType::Weekend];

/// Writes a window of `count(endpoint index, hour, day type)` samples (none when 0) for each
/// of the 48 buckets of every endpoint, and indexes the endpoints as the recomputer does.
async fn fill(
    store: &Store,
    endpoints: &[(String, String)],
    count: impl Fn(usize, u8, DayType) -> usize,
) {
    let mut windows = Vec::new();
    for (i, (service, endpoint)) in endpoints.iter().enumerate() {
        for day_type in DAY_TYPES {
            for hour in 0..24 {
                let key = BaselineKey::new(service, endpoint, hour, day_type).unwrap();
                let n = count(i, hour, day_type);
                let samples = (0..n).map(|s| DurationMs::new(s as f64).unwrap()).collect();
                windows.push((key, samples));
            }
        }
    }
    for chunk in windows.chunks(4800) {
        store.replace_windows(chunk, Duration::ZERO).await.unwrap();
        let keys: Vec<_> = chunk.iter().map(|(k, _)| k.clone()).collect();
        store.index_endpoints(&keys).await.unwrap();
    }
}

/// The counts `fill` wrote for endpoint `i`, as the API answers them.
fn buckets(i: usize, count: &impl Fn(usize, u8, DayType) -> usize) -> Value {
    let day = |d| (0..24).map(|h| count(i, h, d)).collect::<Vec<_>>();
    json!({"weekday": day(DayType::Weekday), "weekend": day(DayType::Weekend)})
}

/// Percent-encodes a query parameter value.
fn q(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every page of `path` (a query string without `cursor`), following `nextCursor`; the items
/// of each page are the array `field`.
async fn pages(app: &App, path: &str, field: &str) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}&cursor={}", q(c)),
            None => path.to_owned(),
        };
        let r = app.get(&url).await;
        assert_eq!(r.status, 200, "{url}: {}", r.text);
        pages.push(r.body[field].as_array().unwrap().clone());
        match r.body["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => {
                assert_eq!(r.body["nextCursor"], Value::Null, "{}", r.text);
                return pages;
            }
        }
    }
}

fn pair(e: &Value) -> (String, String) {
    (
        e["service"].as_str().unwrap().to_owned(),
        e["endpoint"].as_str().unwrap().to_owned(),
    )
}

/// Calls of every command the server has run, by name.
fn command_calls(server: &RedisServer) -> BTreeMap<String, u64> {
    server
        .command(&["INFO", "commandstats"])
        .lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter_map(|l| {
            let (name, rest) = l.split_once(":calls=")?;
            Some((name.to_owned(), rest.split(',').next()?.parse().ok()?))
        })
        .collect()
}

/// The commands run between two [`command_calls`], without the INFO that measured them.
fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(name, n)| (name.clone(), n - before.get(name).copied().unwrap_or(0)))
        .filter(|(name, n)| *n > 0 && name != "info")
        .collect()
}

#[tokio::test]
async fn pages_through_20000_keys_listing_each_endpoint_once_at_a_bounded_cost() {
    // A server of its own: its command counts are this test's alone.
    let server = RedisServer::start_ephemeral();
    let config = config(&server.url(), "keys-20k");
    let store = store(&config);
    // 21 services of 20 endpoints, 48 buckets each: 20,160 keys. Some buckets have no window.
    let endpoints: Vec<(String, String)> = (0..420)
        .map(|i| (format!("svc-{:02}", i % 21), format!("GET /items/{i}")))
        .collect();
    let count = |i: usize, hour: u8, d: DayType| (i + 3 * usize::from(hour) + 5 * d as usize) % 4;
    fill(&store, &endpoints, count).await;
    assert_eq!(store.key_count().await.unwrap(), 20_160);
    let app = App::new(&config);
    // Warm the connection pool, so that connecting is not counted.
    assert_eq!(app.get("/readyz").await.status, 200);

    let limit = 64;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut page_sizes = Vec::new();
    loop {
        let url = match &cursor {
            Some(c) => format!("/v1/keys?limit={limit}&cursor={c}"),
            None => format!("/v1/keys?limit={limit}"),
        };
        let before = command_calls(&server);
        let r = app.get(&url).await;
        let commands = delta(&before, &command_calls(&server));
        assert_eq!(r.status, 200, "{}", r.text);
        let items = r.body["endpoints"].as_array().unwrap();
        page_sizes.push(items.len());
        // One ZRANGEBYLEX and one LLEN per bucket of the page's endpoints, in one pipeline
        // (round trips are counted below): nothing grows with the 20,160 keys in Redis.
        let llen = 48 * items.len() as u64;
        let mut want = BTreeMap::from([("zrangebylex".to_owned(), 1), ("llen".to_owned(), llen)]);
        if commands.contains_key("ping") {
            // The pool pings a connection idle for a second before reusing it.
            want.insert("ping".to_owned(), 1);
        }
        assert_eq!(commands, want, "page {}", page_sizes.len());
        for e in items {
            let i = endpoints.iter().position(|p| *p == pair(e)).expect("known");
            assert_eq!(e["buckets"], buckets(i, &count), "{e}");
            let total: usize = (0..24)
                .flat_map(|h| DAY_TYPES.map(|d| count(i, h, d)))
                .sum();
            assert_eq!(e["sampleCount"], total, "{e}");
            seen.push(pair(e));
        }
        match r.body["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(page_sizes, [64, 64, 64, 64, 64, 64, 36]);
    let distinct: HashSet<_> = seen.iter().collect();
    assert_eq!(seen.len(), 420, "every endpoint is listed once");
    assert_eq!(distinct.len(), 420);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "in order (these names need no escaping)");

    // Services: one script call a page, one ZRANGEBYLEX per service in it.
    let mut services = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("/v1/services?limit=5&cursor={c}"),
            None => "/v1/services?limit=5".to_owned(),
        };
        let before = command_calls(&server);
        let r = app.get(&url).await;
        let commands = delta(&before, &command_calls(&server));
        assert_eq!(r.status, 200, "{}", r.text);
        let page = r.body["services"].as_array().unwrap();
        assert!(
            commands.get("zrangebylex").copied().unwrap_or(0) <= 6,
            "{commands:?}"
        );
        assert_eq!(commands.get("llen"), None);
        let calls: u64 = commands
            .iter()
            .filter(|(name, _)| *name != "zrangebylex")
            .map(|(_, n)| n)
            .sum();
        // EVALSHA; on the first page also the script's load after NOSCRIPT; maybe a PING.
        assert!(calls <= 4, "{commands:?}");
        services.extend(page.iter().map(|s| s.as_str().unwrap().to_owned()));
        match r.body["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let want: Vec<String> = (0..21).map(|s| format!("svc-{s:02}")).collect();
    assert_eq!(services, want);
}

#[tokio::test]
async fn a_page_is_two_round_trips_whatever_its_size() {
    // Every burst to Redis is held for 200 ms: a round trip costs at least that, so a page read
    // with a round trip per endpoint (or per bucket) would take seconds (or minutes).
    let server = RedisServer::start_ephemeral();
    let delay = Duration::from_millis(200);
    let proxy = delaying_proxy(server.addr(), delay).await;
    let mut config = config(&format!("redis://{proxy}"), "keys-round-trips");
    config.common.redis.timeout = Duration::from_secs(20);
    let endpoints: Vec<(String, String)> = (0..40)
        .map(|i| ("svc".to_owned(), format!("GET /{i}")))
        .collect();
    // Filled around the proxy, with the same prefix.
    let mut direct = config.common.redis.clone();
    direct.url = server.url();
    let direct = Store::connect(&direct).expect("store");
    fill(&direct, &endpoints, |_, h, _| usize::from(h % 3)).await;
    let app = App::new(&config);
    assert_eq!(app.get("/readyz").await.status, 200);

    let started = Instant::now();
    let r = app.get("/v1/keys?limit=20").await;
    let elapsed = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["endpoints"].as_array().unwrap().len(), 20);
    assert!(
        elapsed < 6 * delay,
        "a page of 20 endpoints (960 buckets) took {elapsed:?}: more than a few round trips"
    );
}

#[tokio::test]
async fn filters_by_service_endpoint_day_type_and_min_samples() {
    let config = config(&shared_redis_url(), "keys-filters");
    let store = store(&config);
    let endpoints: Vec<(String, String)> = [
        ("a", "GET /x"),
        ("a", "POST /y"),
        ("a|b", "GET /x"),
        ("ab", "GET /x"),
        ("日本", "GET /x"),
        ("quiet", "GET /x"),
    ]
    .iter()
    .map(|(s, e)| (s.to_string(), e.to_string()))
    .collect();
    // Endpoint i has i + 1 samples in weekday hour 9 and i + 2 in weekend hour 20; "quiet" has
    // one sample at weekday hour 0 only.
    let count = |i: usize, h: u8, d: DayType| match (i, h, d) {
        (5, 0, DayType::Weekday) => 1,
        (5, _, _) => 0,
        (_, 9, DayType::Weekday) => i + 1,
        (_, 20, DayType::Weekend) => i + 2,
        _ => 0,
    };
    fill(&store, &endpoints, count).await;
    let app = App::new(&config);
    let pairs = |pages: Vec<Vec<Value>>| pages.concat().iter().map(pair).collect::<Vec<_>>();
    let p = |s: &str, e: &str| (s.to_owned(), e.to_owned());

    // A service: its endpoints only, not those of "a|b" or "ab".
    assert_eq!(
        pairs(pages(&app, "/v1/keys?service=a&limit=1", "endpoints").await),
        [p("a", "GET /x"), p("a", "POST /y")]
    );
    assert_eq!(
        pairs(pages(&app, &format!("/v1/keys?service={}", q("a|b")), "endpoints").await),
        [p("a|b", "GET /x")]
    );
    assert_eq!(
        pairs(
            pages(
                &app,
                &format!("/v1/keys?service={}", q("日本")),
                "endpoints"
            )
            .await
        ),
        [p("日本", "GET /x")]
    );
    // An endpoint of a service, with one day type's buckets.
    let r = app
        .get("/v1/keys?service=a&endpoint=POST+%2Fy&dayType=weekend")
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut weekend = vec![0; 24];
    weekend[20] = 3;
    assert_eq!(
        r.body,
        json!({"endpoints": [{"service": "a", "endpoint": "POST /y", "sampleCount": 3,
                              "buckets": {"weekend": weekend}}],
               "nextCursor": null})
    );
    // An endpoint name in every service; pages hold the matches among what they read.
    let found = pages(&app, "/v1/keys?endpoint=GET+%2Fx&limit=2", "endpoints").await;
    assert_eq!(found.len(), 3);
    assert_eq!(
        pairs(found),
        [
            p("a|b", "GET /x"),
            p("ab", "GET /x"),
            p("a", "GET /x"),
            p("quiet", "GET /x"),
            p("日本", "GET /x")
        ]
    );
    // Unknown names list nothing.
    for path in [
        "/v1/keys?service=nobody",
        "/v1/keys?service=a&endpoint=GET+%2Fz",
    ] {
        let r = app.get(path).await;
        assert_eq!(
            r.body,
            json!({"endpoints": [], "nextCursor": null}),
            "{path}"
        );
    }
    // Empty parameters mean "not given".
    let all = pairs(
        pages(
            &app,
            "/v1/keys?service=&endpoint=&dayType=&minSamples=&limit=",
            "endpoints",
        )
        .await,
    );
    assert_eq!(all.len(), 6);

    // minSamples: the busiest counted bucket decides. Endpoint i's busiest is i + 2 (weekend)
    // over both day types, i + 1 over weekdays only.
    let at_least = async |query: &str| {
        pairs(pages(&app, &format!("/v1/keys?{query}"), "endpoints").await)
            .into_iter()
            .map(|(s, e)| {
                endpoints
                    .iter()
                    .position(|x| *x == (s.clone(), e.clone()))
                    .unwrap()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(at_least("minSamples=0").await.len(), 6);
    let mut want = vec![2, 3, 0, 1, 4];
    assert_eq!(at_least("minSamples=2").await, want, "quiet's busiest is 1");
    want.retain(|&i| i + 2 >= 5);
    assert_eq!(at_least("minSamples=5&limit=1").await, want);
    assert_eq!(at_least("minSamples=5&dayType=weekday").await, [4]);
    // Short pages still carry the cursor to the rest.
    let short = pages(&app, "/v1/keys?minSamples=6&limit=2", "endpoints").await;
    assert_eq!(
        short.iter().map(Vec::len).collect::<Vec<_>>(),
        [0, 0, 1],
        "{short:?}"
    );
}

#[tokio::test]
async fn every_bad_parameter_is_a_400_with_the_error_body() {
    let config = config(&shared_redis_url(), "keys-bad");
    let store = store(&config);
    let endpoints = [("svc".to_owned(), "GET /a".to_owned())];
    fill(&store, &endpoints, |_, _, _| 1).await;
    let app = App::new(&config);
    let long = "x".repeat(257);
    // Good cursors, each given to the other listing too: base64url of "svc|GET /a" and "svc".
    let keys_cursor = "c3ZjfEdFVCAvYQ";
    let service_cursor = "c3Zj";
    let cases = [
        ("/v1/keys?cursor=!!!".to_owned(), "INVALID_CURSOR"),
        ("/v1/keys?cursor=YQ%3D%3D".to_owned(), "INVALID_CURSOR"),
        ("/v1/keys?cursor=_w".to_owned(), "INVALID_CURSOR"),
        (
            format!("/v1/keys?cursor={service_cursor}"),
            "INVALID_CURSOR",
        ),
        (
            format!("/v1/services?cursor={keys_cursor}"),
            "INVALID_CURSOR",
        ),
        ("/v1/services?cursor=%25".to_owned(), "INVALID_CURSOR"),
        ("/v1/keys?limit=1001".to_owned(), "INVALID_QUERY"),
        ("/v1/keys?limit=0".to_owned(), "INVALID_QUERY"),
        ("/v1/keys?limit=-1".to_owned(), "INVALID_QUERY"),
        ("/v1/keys?limit=ten".to_owned(), "INVALID_QUERY"),
        ("/v1/services?limit=1001".to_owned(), "INVALID_QUERY"),
        ("/v1/services?limit=2.5".to_owned(), "INVALID_QUERY"),
        ("/v1/keys?dayType=holiday".to_owned(), "INVALID_DAY_TYPE"),
        ("/v1/keys?dayType=Weekday".to_owned(), "INVALID_DAY_TYPE"),
        ("/v1/keys?minSamples=-1".to_owned(), "INVALID_QUERY"),
        ("/v1/keys?minSamples=1.5".to_owned(), "INVALID_QUERY"),
        ("/v1/keys?minSamples=many".to_owned(), "INVALID_QUERY"),
        (format!("/v1/keys?service={long}"), "INVALID_SERVICE"),
        (format!("/v1/keys?endpoint={long}"), "INVALID_ENDPOINT"),
        ("/v1/keys?limit=%FF".to_owned(), "INVALID_QUERY"),
    ];
    for (path, code) in cases {
        let r: Reply = app.get(&path).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text);
        assert_eq!(r.error_code(), code, "{path}");
    }
    // The good cursors of those cases are good where they belong.
    let r = app.get(&format!("/v1/keys?cursor={keys_cursor}")).await;
    assert_eq!(r.body, json!({"endpoints": [], "nextCursor": null}));
    let r = app
        .get(&format!("/v1/services?cursor={service_cursor}"))
        .await;
    assert_eq!(r.body, json!({"services": [], "nextCursor": null}));
}

#[tokio::test]
async fn the_listing_needs_the_token_when_auth_is_on() {
    let mut config = config(&shared_redis_url(), "keys-auth");
    config.service.auth.tokens = vec!["s3cret".to_owned().into()];
    let app = App::new(&config);
    for path in ["/v1/keys", "/v1/services"] {
        let r = app.get(path).await;
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.error_code(), "UNAUTHORIZED");
        let request = Request::get(path)
            .header(header::AUTHORIZATION, "Bearer s3cret")
            .body(Body::empty())
            .unwrap();
        let r = app.send(request).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
    }
}
