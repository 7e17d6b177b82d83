//! `keyEndpoints`: indexing, paged listing of endpoints and services, and the prune sweep.

use std::time::Duration;

use anomaly_core::{BaselineKey, DayType, DurationMs};
use anomaly_store::{EndpointCursor, EndpointFilter, EndpointSamples, ServiceCursor, Store};

use crate::{key, raw, store_at};

fn samples(n: usize) -> Vec<DurationMs> {
    (0..n).map(|i| DurationMs::new(i as f64).unwrap()).collect()
}

fn bucket(service: &str, endpoint: &str, hour: u8, day_type: DayType) -> BaselineKey {
    BaselineKey::new(service, endpoint, hour, day_type).unwrap()
}

/// Writes windows of `n` samples for the given buckets and indexes their endpoints.
async fn fill(store: &Store, buckets: &[(BaselineKey, usize)]) {
    let windows: Vec<_> = buckets
        .iter()
        .map(|(k, n)| (k.clone(), samples(*n)))
        .collect();
    store
        .replace_windows(&windows, Duration::ZERO)
        .await
        .unwrap();
    let keys: Vec<_> = buckets.iter().map(|(k, _)| k.clone()).collect();
    store.index_endpoints(&keys).await.unwrap();
}

/// Every page of the listing with `filter`, `limit` at a time.
async fn all_pages(
    store: &Store,
    filter: &EndpointFilter<'_>,
    limit: usize,
) -> Vec<Vec<EndpointSamples>> {
    let mut pages = Vec::new();
    let mut after: Option<EndpointCursor> = None;
    loop {
        let page = store
            .list_endpoints(filter, after.as_ref(), limit)
            .await
            .unwrap();
        pages.push(page.items);
        match page.next {
            // The cursor goes through its token, as a client would send it back.
            Some(next) => after = Some(EndpointCursor::parse(&next.to_string()).unwrap()),
            None => return pages,
        }
    }
}

fn names(pages: &[Vec<EndpointSamples>]) -> Vec<(String, String)> {
    pages
        .iter()
        .flatten()
        .map(|e| (e.service.clone(), e.endpoint.clone()))
        .collect()
}

fn pair(service: &str, endpoint: &str) -> (String, String) {
    (service.to_owned(), endpoint.to_owned())
}

#[tokio::test]
async fn lists_endpoints_with_their_bucket_counts_and_filters() {
    let url = anomaly_testkit::shared_redis_url();
    let store = store_at(url, "listing-filters");
    // Services whose encoded names prefix one another ("a", "a|b" = "a%7Cb", "ab"), names that
    // need escaping, and unicode.
    let names_in = [
        ("a", "GET /x"),
        ("a", "GET /y"),
        ("a|b", "GET /x"),
        ("ab", "GET /x"),
        ("{x}", "%\n"),
        ("日本", "GET /x"),
    ];
    let mut buckets = Vec::new();
    for (i, (service, endpoint)) in names_in.iter().enumerate() {
        buckets.push((bucket(service, endpoint, 3, DayType::Weekday), 2 + i));
        buckets.push((bucket(service, endpoint, 23, DayType::Weekend), 10 + i));
    }
    fill(&store, &buckets).await;
    // Indexing again changes nothing.
    fill(&store, &buckets).await;

    let everything = all_pages(&store, &EndpointFilter::default(), 100).await;
    assert_eq!(everything.len(), 1);
    // In byte order of the members: "%7Bx%7D|%25%0A" < "a%7Cb|GET /x" < "ab|GET /x" <
    // "a|GET /x" (a service sorts as if followed by its `|`).
    let want = [
        pair("{x}", "%\n"),
        pair("a|b", "GET /x"),
        pair("ab", "GET /x"),
        pair("a", "GET /x"),
        pair("a", "GET /y"),
        pair("日本", "GET /x"),
    ];
    assert_eq!(names(&everything), want);
    let first = everything[0]
        .iter()
        .find(|e| e.service == "{x}")
        .expect("listed");
    let mut weekday = [0; 24];
    weekday[3] = 6;
    let mut weekend = [0; 24];
    weekend[23] = 14;
    assert_eq!(first.weekday, Some(weekday));
    assert_eq!(first.weekend, Some(weekend));
    assert_eq!((first.total(), first.busiest()), (20, 14));

    // One page at a time gives the same, each exactly once.
    assert_eq!(
        names(&all_pages(&store, &EndpointFilter::default(), 1).await),
        want
    );

    let service_a = EndpointFilter {
        service: Some("a"),
        ..EndpointFilter::default()
    };
    assert_eq!(
        names(&all_pages(&store, &service_a, 1).await),
        [pair("a", "GET /x"), pair("a", "GET /y")],
        "not a|b, not ab"
    );
    let escaped = EndpointFilter {
        service: Some("a|b"),
        day_type: Some(DayType::Weekend),
        ..EndpointFilter::default()
    };
    let page = all_pages(&store, &escaped, 10).await.concat();
    assert_eq!(page.len(), 1);
    assert_eq!((page[0].weekday, page[0].weekend.unwrap()[23]), (None, 12));

    let one = EndpointFilter {
        service: Some("a"),
        endpoint: Some("GET /y"),
        day_type: Some(DayType::Weekday),
    };
    let page = store.list_endpoints(&one, None, 10).await.unwrap();
    assert_eq!(page.next, None);
    assert_eq!(page.items.len(), 1);
    assert_eq!((page.items[0].total(), page.items[0].weekend), (3, None));

    // An endpoint in every service: pages hold the matches among what they read.
    let endpoint_x = EndpointFilter {
        endpoint: Some("GET /x"),
        ..EndpointFilter::default()
    };
    let pages = all_pages(&store, &endpoint_x, 2).await;
    assert_eq!(pages.len(), 3);
    assert_eq!(
        names(&pages),
        [
            pair("a|b", "GET /x"),
            pair("ab", "GET /x"),
            pair("a", "GET /x"),
            pair("日本", "GET /x")
        ]
    );

    let nobody = EndpointFilter {
        service: Some("nobody"),
        ..EndpointFilter::default()
    };
    assert_eq!(all_pages(&store, &nobody, 10).await, [Vec::new()]);
}

#[tokio::test]
async fn lists_distinct_services_a_page_at_a_time() {
    let url = anomaly_testkit::shared_redis_url();
    let store = store_at(url, "listing-services");
    let mut buckets = Vec::new();
    for service in ["a", "a|b", "ab", "b", "日本"] {
        for e in 0..30 {
            buckets.push((
                bucket(service, &format!("GET /{e}"), 1, DayType::Weekday),
                1,
            ));
        }
    }
    fill(&store, &buckets).await;
    for limit in [1, 2, 5, 100] {
        let mut listed = Vec::new();
        let mut after: Option<ServiceCursor> = None;
        let mut pages = 0;
        loop {
            let page = store.list_services(after.as_ref(), limit).await.unwrap();
            pages += 1;
            assert!(page.items.len() <= limit);
            listed.extend(page.items);
            match page.next {
                Some(next) => after = Some(ServiceCursor::parse(&next.to_string()).unwrap()),
                None => break,
            }
        }
        // In the order of their members ("a%7Cb|" < "ab|" < "a|").
        assert_eq!(listed, ["a|b", "ab", "a", "b", "日本"], "limit {limit}");
        assert_eq!(pages, 5usize.div_ceil(limit), "no empty last page");
    }
}

#[tokio::test]
async fn the_sweep_removes_endpoints_without_windows_only() {
    let url = anomaly_testkit::shared_redis_url();
    let store = store_at(url.clone(), "listing-prune");
    let kept = bucket("svc", "GET /kept", 0, DayType::Weekend);
    let gone = [
        bucket("svc", "GET /gone", 5, DayType::Weekday),
        bucket("svc", "GET /gone", 6, DayType::Weekend),
    ];
    let mut buckets: Vec<_> = gone.iter().map(|k| (k.clone(), 3)).collect();
    buckets.push((kept.clone(), 1));
    // Many endpoints whose last window (hour 23, weekend) still exists.
    for e in 0..250 {
        buckets.push((
            bucket("many", &format!("GET /{e}"), 23, DayType::Weekend),
            1,
        ));
    }
    fill(&store, &buckets).await;
    // The windows of one endpoint expire (an empty window is no window).
    let empty: Vec<_> = gone.iter().map(|k| (k.clone(), Vec::new())).collect();
    store.replace_windows(&empty, Duration::ZERO).await.unwrap();
    // A member that is not an encoded endpoint (written by hand).
    let index = store.keys().key_endpoints();
    raw(&url, &["ZADD", &index, "0", "no-bar"]);

    let mut removed = 0;
    let mut after = None;
    let mut steps = 0;
    loop {
        let step = store.prune_endpoints(after.as_ref(), 100).await.unwrap();
        removed += step.removed;
        steps += 1;
        match step.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(
        removed, 2,
        "the endpoint without windows and the stray member"
    );
    assert_eq!(steps, 3, "253 members, 100 a step");
    let left = names(&all_pages(&store, &EndpointFilter::default(), 1000).await);
    assert_eq!(left.len(), 251);
    assert!(left.contains(&pair("svc", "GET /kept")));
    assert!(!left.contains(&pair("svc", "GET /gone")));
    assert_eq!(raw(&url, &["ZSCORE", &index, "no-bar"]), "", "nil");
}

/// `index_windows` finds windows the index lost (or never had: data imported from another
/// Redis), on every primary of a cluster, and only this key space's.
#[tokio::test]
async fn windows_missing_from_the_index_are_found_by_scanning() {
    let url = anomaly_testkit::shared_redis_url();
    let store = store_at(url.clone(), "index-windows");
    let keys: Vec<_> = (0..40u8)
        .map(|i| key(&format!("scan{i}"), i % 24))
        .collect();
    let windows: Vec<_> = keys
        .iter()
        .map(|k| (k.clone(), vec![DurationMs::new(5.0).unwrap()]))
        .collect();
    store
        .replace_windows(&windows, Duration::ZERO)
        .await
        .unwrap();
    // A span window of the same names is not a root window.
    store
        .spans()
        .replace_windows(&windows[..1], Duration::ZERO)
        .await
        .unwrap();
    anomaly_testkit::command_at(&url, &["DEL", &store.keys().key_index()]);
    assert_eq!(store.key_count().await.unwrap(), 0);
    assert_eq!(store.index_windows().await.unwrap(), 40);
    assert_eq!(store.key_count().await.unwrap(), 40);
    let mut found = Vec::new();
    let mut cursor = 0;
    loop {
        let (next, step) = store.scan_keys(cursor, 1000).await.unwrap();
        found.extend(step);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    let mut want = keys.clone();
    found.sort();
    want.sort();
    assert_eq!(found, want);
}
