//! Service and endpoint names full of the key layout's own characters (`|`, `{`, `}`, `%`),
//! control characters, unicode and names as long as `max_name_bytes` allows (256 bytes of `|`
//! are 768 in the key): two different names always get two different windows and baselines,
//! and no name escapes its key (one hash tag, no raw control byte). Every service runs with its
//! default configuration: what the ingester stores, the checker accepts.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::{Value, json};
use tower::ServiceExt;

use anomaly_core::{BaselineKey, DayType, NameRules};
use anomaly_store::Store;

use crate::bad_input::hostile_string;
use crate::{T0_NANOS, checker_config, ingester_config, query_escape, recomputer_config};

type Name = (String, String);

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        // Small alphabets make near-collisions (`a|b` + `c` against `a` + `b|c`) likely.
        3 => "[|{}%a\\n]{1,5}",
        2 => hostile_string().prop_map(|s| up_to_limit(&s)),
    ]
    .prop_filter("a name", |s| {
        !s.is_empty() && s != "<root span not yet received>"
    })
}

/// The longest prefix of `s` that fits in `max_name_bytes` (default), cut at a character.
fn up_to_limit(s: &str) -> String {
    let mut end = s.len().min(NameRules::DEFAULT_MAX_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

async fn call(router: &Router, request: Request<Body>) -> (u16, Value) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Pushes one sample per name (name i lasting `10 * (i + 1)` ms), drains the recomputer, and
/// returns, per name, the baseline the checker shows for it.
async fn baselines_for(names: &[Name]) -> Vec<Value> {
    let url = anomaly_testkit::shared_redis_url();
    let prefix = anomaly_testkit::unique_prefix("keys");
    let mut checker_cfg = checker_config(&url, &prefix);
    checker_cfg.service.cache.ttl = std::time::Duration::ZERO;
    let checker = checker::app(&checker_cfg).unwrap();
    let ingester = ingester::Ingester::new(ingester_config(&url, &prefix)).unwrap();
    let store: Store = ingester.store().clone();
    let traces: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, (service, endpoint))| {
            json!({"traceID": format!("{:x}", i + 1), "rootServiceName": service,
                   "rootTraceName": endpoint, "startTimeUnixNano": T0_NANOS.to_string(),
                   "durationMs": 10 * (i + 1)})
        })
        .collect();
    let (status, report) = call(
        &ingester.router(),
        Request::post("/v1/traces/ingest")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(json!({"traces": traces}).to_string()))
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["accepted"], names.len(), "{report}");

    let rc = recomputer_config(&url, &prefix);
    let recomputer = recomputer::Recomputer::new(
        &rc,
        Store::connect(&rc.common.redis).unwrap(),
        recomputer::RecomputeMetrics::unregistered(),
        "keys-test".to_owned(),
    );
    let drained = recomputer.drain_once().await.unwrap();
    assert_eq!(drained.recomputed, names.len() as u64, "{drained:?}");
    assert_eq!(store.key_count().await.unwrap(), names.len() as u64);

    let mut out = Vec::new();
    for (service, endpoint) in names {
        let key =
            BaselineKey::new(service.clone(), endpoint.clone(), 14, DayType::Weekday).unwrap();
        for redis_key in [
            store.keys().dur(&key.encode()),
            store.keys().base(&key.encode()),
        ] {
            let tail = &redis_key[prefix.len()..];
            assert_eq!(tail.matches('{').count(), 1, "{tail:?}");
            assert_eq!(tail.matches('}').count(), 1, "{tail:?}");
            assert!(tail.ends_with('}'), "{tail:?}");
            assert!(!tail.bytes().any(|b| b < 0x20), "{tail:?}");
        }
        let query = format!(
            "/v1/baseline?service={}&endpoint={}&hour=14&dayType=weekday",
            query_escape(service),
            query_escape(endpoint)
        );
        let (status, body) = call(&checker, Request::get(query).body(Body::empty()).unwrap()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["key"]["service"], json!(service));
        assert_eq!(body["key"]["endpoint"], json!(endpoint));
        out.push(body["baseline"].clone());
    }
    out
}

fn check(names: &[Name]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let baselines = runtime.block_on(baselines_for(names));
    for (i, b) in baselines.iter().enumerate() {
        assert_eq!(
            b["p50"],
            json!(10.0 * (i + 1) as f64),
            "{:?}: {b}",
            names[i]
        );
        assert_eq!(b["sampleCount"], 1, "{:?}: {b}", names[i]);
    }
}

#[test]
fn near_collisions_stay_apart() {
    let n = |s: &str, e: &str| (s.to_owned(), e.to_owned());
    check(&[
        n("a|b", "c"),
        n("a", "b|c"),
        n("a%7Cb", "c"),
        n("a%b", "c"),
        n("a", "%7C"),
        n("a", "|"),
        n("{a}", "b"),
        n("a", "b}|{c"),
        n("a\n", "b"),
        n("a", "\nb"),
        n("a%0A", "b"),
        n("caf\u{e9}", "x"),
        n("cafe\u{301}", "x"),
        n(&"|".repeat(NameRules::DEFAULT_MAX_BYTES), "x"),
        n(&"|".repeat(NameRules::DEFAULT_MAX_BYTES - 1), "|x"),
    ]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn distinct_names_never_share_a_key(names in prop::collection::btree_set((name(), name()), 2..6)) {
        let names: Vec<Name> = names.into_iter().collect();
        check(&names);
    }
}
