//! Span samples: their own key space, per-span dedup and the per-service cap.

use std::time::Duration;

use anomaly_core::{BaselineKey, DayType, DurationMs};
use anomaly_store::{IngestOutcome, ItemOutcome, SpanItem, SpanSettings};

use crate::{item, raw, settings, store_at, trace};

fn span_settings(cap: u64) -> SpanSettings {
    SpanSettings {
        window_size: 1000,
        dedup_ttl: Duration::from_secs(3600),
        retention: Duration::from_secs(86_400),
        max_keys_per_service: cap,
    }
}

fn span_key(service: &str, name: &str) -> BaselineKey {
    BaselineKey::new(service, name, 9, DayType::Weekday).unwrap()
}

fn span(trace: u128, span: u64, key: &BaselineKey, ms: f64) -> SpanItem {
    SpanItem {
        start_ms: 0,
        trace_id: crate::trace(trace),
        span_id: span,
        key: key.clone(),
        duration: DurationMs::new(ms).unwrap(),
    }
}

#[tokio::test]
async fn spans_keep_windows_apart_from_roots_and_count_once_per_span() {
    let url = anomaly_testkit::shared_redis_url();
    let store = store_at(url.clone(), "spans-apart");
    let k = span_key("checkout", "GET /items");
    // A root with the very same names.
    store
        .ingest(&[item(1, &k, 500.0)], &settings())
        .await
        .unwrap();

    let batch = [
        span(1, 0xa, &k, 10.0),
        span(1, 0xb, &k, 20.0),
        // The same span again in the batch, and a span of another trace with the same span ID.
        span(1, 0xa, &k, 10.0),
        span(2, 0xa, &k, 30.0),
    ];
    let (out, items) = store
        .ingest_spans(&batch, &span_settings(0), &[])
        .await
        .unwrap();
    assert_eq!(
        out,
        IngestOutcome {
            accepted: 3,
            duplicates: 1,
            over_cardinality: 0
        }
    );
    use ItemOutcome::{Accepted as A, Duplicate as D};
    assert_eq!(items, vec![A, A, D, A]);
    // A re-sent batch counts once, whatever store handle sends it.
    let (again, items) = store
        .spans()
        .ingest_spans(&batch, &span_settings(0), &[])
        .await
        .unwrap();
    assert_eq!(again.duplicates, 4);
    assert_eq!(items, vec![D; 4]);

    assert_eq!(store.read_window(&k).await.unwrap(), vec![500.0]);
    assert_eq!(
        store.spans().read_window(&k).await.unwrap(),
        vec![30.0, 20.0, 10.0]
    );
    assert_eq!(store.dirty_len().await.unwrap(), 1);
    assert_eq!(store.spans().dirty_len().await.unwrap(), 1);

    // One dedup key per trace (per window slot in a cluster), a hash of span IDs, with the
    // dedup TTL.
    let seen = store.spans().keys().seen_in(&trace(1), &k.encode());
    assert!(seen.contains("span:seen:{"), "{seen}");
    assert_eq!(raw(&url, &["HLEN", &seen]), "2");
    let ttl: u64 = raw(&url, &["PTTL", &seen]).parse().unwrap();
    assert!(ttl > 3_500_000 && ttl <= 3_600_000, "{ttl}");
}

#[tokio::test]
async fn the_cap_is_per_service_and_refused_spans_are_not_marked_seen() {
    let url = anomaly_testkit::shared_redis_url();
    let store = store_at(url.clone(), "spans-cap");
    let names = ["a", "b", "c"];
    let keys: Vec<_> = names.iter().map(|n| span_key("db", n)).collect();
    let other = span_key("web", "a");
    let (out, items) = store
        .ingest_spans(
            &[
                span(1, 1, &keys[0], 1.0),
                span(1, 2, &keys[1], 1.0),
                span(1, 3, &keys[2], 1.0),
                span(1, 4, &keys[0], 2.0),
                // Another service has a budget of its own.
                span(1, 5, &other, 1.0),
            ],
            &span_settings(2),
            &[],
        )
        .await
        .unwrap();
    assert_eq!((out.accepted, out.over_cardinality), (4, 1));
    assert_eq!(items[2], ItemOutcome::OverCardinality);
    assert!(
        store
            .spans()
            .read_window(&keys[2])
            .await
            .unwrap()
            .is_empty()
    );
    // Across calls too: the service's set remembers its keys.
    let (out, _) = store
        .ingest_spans(
            &[span(2, 1, &keys[2], 1.0), span(2, 2, &keys[1], 1.0)],
            &span_settings(2),
            &[],
        )
        .await
        .unwrap();
    assert_eq!((out.accepted, out.over_cardinality), (1, 1));
    let services = store.spans().keys().service_keys("db");
    assert_eq!(raw(&url, &["SCARD", &services]), "2");
    // Refused spans were not marked seen: once the cap allows, they are stored.
    let (out, _) = store
        .ingest_spans(&[span(1, 3, &keys[2], 1.0)], &span_settings(3), &[])
        .await
        .unwrap();
    assert_eq!(out.accepted, 1);
    assert_eq!(raw(&url, &["SCARD", &services]), "3");
}

#[tokio::test]
async fn expired_span_keys_leave_their_service_budget() {
    let url = anomaly_testkit::shared_redis_url();
    let store = store_at(url.clone(), "spans-prune");
    let (a, b) = (span_key("db", "a"), span_key("db", "b"));
    store
        .ingest_spans(
            &[span(1, 1, &a, 1.0), span(1, 2, &b, 1.0)],
            &span_settings(2),
            &[],
        )
        .await
        .unwrap();
    // `a` expires (retention), as if untouched for long.
    raw(&url, &["DEL", &store.spans().keys().dur(&a.encode())]);
    let removed = store
        .spans()
        .prune_index(&[a.clone(), b.clone()])
        .await
        .unwrap();
    assert_eq!(removed, 1);
    let services = store.spans().keys().service_keys("db");
    assert_eq!(raw(&url, &["SCARD", &services]), "1");
    // So a new key of the service fits again.
    let c = span_key("db", "c");
    let (out, _) = store
        .ingest_spans(&[span(2, 1, &c, 1.0)], &span_settings(2), &[])
        .await
        .unwrap();
    assert_eq!(out.accepted, 1);
}

#[tokio::test]
async fn skipped_samples_are_marked_seen_but_stay_out_of_their_window() {
    let store = crate::store("skip-window");
    let k = span_key("db", "a");
    let (out, items) = store
        .ingest_spans(
            &[
                span(1, 1, &k, 10.0),
                span(1, 2, &k, 900.0),
                span(1, 3, &k, 11.0),
            ],
            &span_settings(0),
            &[false, true],
        )
        .await
        .unwrap();
    assert_eq!(out.accepted, 3);
    assert_eq!(items, vec![ItemOutcome::Accepted; 3]);
    assert_eq!(
        store.spans().read_window(&k).await.unwrap(),
        vec![11.0, 10.0]
    );
    let (again, _) = store
        .ingest_spans(&[span(1, 2, &k, 900.0)], &span_settings(0), &[])
        .await
        .unwrap();
    assert_eq!(again.duplicates, 1, "the skipped span was marked seen");

    // Roots alike.
    let r = crate::key("svc", 5);
    let (out, items) = store
        .ingest_detailed(
            &[item(10, &r, 5.0), item(11, &r, 500.0), item(10, &r, 5.0)],
            &settings(),
            &[false, true, false],
        )
        .await
        .unwrap();
    assert_eq!((out.accepted, out.duplicates), (2, 1));
    assert_eq!(
        items,
        vec![
            ItemOutcome::Accepted,
            ItemOutcome::Accepted,
            ItemOutcome::Duplicate
        ]
    );
    assert_eq!(store.read_window(&r).await.unwrap(), vec![5.0]);
}
