//! The key listing's `keyEndpoints`: filled by recomputing, refilled by a rebuild, emptied of
//! endpoints without windows by the prune sweep.

use std::time::Duration;

use anomaly_core::{BaselineKey, DayType};
use anomaly_store::{EndpointFilter, Store};
use anomaly_testkit::shared_redis_url;
use recomputer::Pruned;

use crate::{config, recomputer, seed};

fn bucket(endpoint: &str, hour: u8) -> BaselineKey {
    BaselineKey::new("svc", endpoint, hour, DayType::Weekday).unwrap()
}

/// Every listed endpoint and its weekday samples by hour, in one page.
async fn listed(store: &Store) -> Vec<(String, [u64; 24])> {
    let page = store
        .list_endpoints(&EndpointFilter::default(), None, 1000)
        .await
        .unwrap();
    assert_eq!(page.next, None);
    page.items
        .into_iter()
        .map(|e| (e.endpoint, e.weekday.unwrap()))
        .collect()
}

fn hours(counts: &[(usize, u64)]) -> [u64; 24] {
    let mut h = [0; 24];
    for &(hour, n) in counts {
        h[hour] = n;
    }
    h
}

#[tokio::test]
async fn recomputing_lists_endpoints_and_the_sweep_unlists_those_without_windows() {
    let config = config(&shared_redis_url(), "listing");
    let r = recomputer(&config, "w");
    let (a1, a2, b) = (
        bucket("GET /a", 1),
        bucket("GET /a", 2),
        bucket("GET /b", 3),
    );
    let keys = [a1.clone(), a2, b.clone()];
    seed(r.store(), &config, &keys, 4, |_, j| f64::from(j)).await;
    assert_eq!(listed(r.store()).await, [], "listed once recomputed");

    r.drain_once().await.unwrap();
    assert_eq!(
        listed(r.store()).await,
        [
            ("GET /a".to_owned(), hours(&[(1, 4), (2, 4)])),
            ("GET /b".to_owned(), hours(&[(3, 4)]))
        ]
    );

    // GET /b's only window goes, and one of GET /a's (as retention would have them expire).
    r.store()
        .replace_windows(&[(b, Vec::new()), (a1, Vec::new())], Duration::ZERO)
        .await
        .unwrap();
    let pruned = r.prune_once().await.unwrap();
    assert_eq!((pruned.keys, pruned.endpoints), (2, 1));
    // Recomputing the keys whose windows are gone (they are dirty) does not list GET /b again.
    assert_eq!(r.drain_once().await.unwrap().cleared, 2);
    assert_eq!(
        listed(r.store()).await,
        [("GET /a".to_owned(), hours(&[(2, 4)]))],
        "GET /a still has a window"
    );
    assert_eq!(r.prune_once().await.unwrap(), Pruned::default());
}

#[tokio::test]
async fn a_rebuild_lists_the_endpoints_of_existing_data() {
    let config = config(&shared_redis_url(), "listing-rebuild");
    let r = recomputer(&config, "w");
    let keys: Vec<_> = (0..30)
        .map(|i| bucket(&format!("GET /{i:02}"), i % 24))
        .collect();
    seed(r.store(), &config, &keys, 3, |_, j| f64::from(j)).await;
    // Data written before the listing existed: windows and baselines, no keyEndpoints.
    r.drain_once().await.unwrap();
    let index = r.store().keys().key_endpoints();
    anomaly_testkit::command_at(&anomaly_testkit::shared_redis_url(), &["DEL", &index]);
    assert_eq!(listed(r.store()).await, []);

    r.rebuild(|_, _| {}).await.unwrap();
    let after = listed(r.store()).await;
    assert_eq!(after.len(), 30);
    for (i, (endpoint, counts)) in after.iter().enumerate() {
        assert_eq!(*endpoint, format!("GET /{i:02}"));
        assert_eq!(*counts, hours(&[(i % 24, 3)]));
    }
}
