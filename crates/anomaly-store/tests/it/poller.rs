//! Poller state: the lease is exclusive and only its owner renews or releases it; the cursor
//! moves forward only, and only for the lease holder; backfill progress round-trips.

use std::time::Duration;

use anomaly_store::poller::{BackfillProgress, CursorAdvance};

use crate::store;

#[tokio::test]
async fn poller_lease_is_exclusive_and_owned() {
    let store = store("lease");
    let ttl = Duration::from_secs(30);
    assert!(store.acquire_lease("a", ttl).await.unwrap());
    assert!(
        !store.acquire_lease("b", ttl).await.unwrap(),
        "b must not take a's lease"
    );
    // Acquiring again as the holder renews.
    assert!(store.acquire_lease("a", ttl).await.unwrap());
    assert!(store.renew_lease("a", ttl).await.unwrap());
    assert!(!store.renew_lease("b", ttl).await.unwrap());
    assert!(
        !store.release_lease("b").await.unwrap(),
        "b must not release a's lease"
    );
    assert_eq!(store.lease_holder().await.unwrap().as_deref(), Some("a"));
    assert!(store.release_lease("a").await.unwrap());
    assert_eq!(store.lease_holder().await.unwrap(), None);
    assert!(store.acquire_lease("b", ttl).await.unwrap());
}

#[tokio::test]
async fn poller_lease_expires_and_the_old_owner_cannot_renew() {
    let store = store("lease-expiry");
    assert!(
        store
            .acquire_lease("a", Duration::from_millis(50))
            .await
            .unwrap()
    );
    let taken = anomaly_testkit::eventually(Duration::from_secs(5), || async {
        store
            .acquire_lease("b", Duration::from_secs(30))
            .await
            .unwrap()
    })
    .await;
    assert!(taken, "b takes the lease once a's expired");
    assert!(
        !store
            .renew_lease("a", Duration::from_secs(30))
            .await
            .unwrap()
    );
    assert!(!store.release_lease("a").await.unwrap());
    assert_eq!(store.lease_holder().await.unwrap().as_deref(), Some("b"));
}

#[tokio::test]
async fn poller_cursor_moves_forward_only_for_the_holder() {
    let store = store("cursor");
    assert_eq!(store.poll_cursor().await.unwrap(), None);
    assert_eq!(
        store.advance_poll_cursor("a", 100).await.unwrap(),
        CursorAdvance::NotLeader,
        "nobody holds the lease"
    );
    assert!(
        store
            .acquire_lease("a", Duration::from_secs(30))
            .await
            .unwrap()
    );
    assert_eq!(
        store.advance_poll_cursor("a", 100).await.unwrap(),
        CursorAdvance::At(100)
    );
    assert_eq!(
        store.advance_poll_cursor("a", 90).await.unwrap(),
        CursorAdvance::At(100)
    );
    assert_eq!(
        store.advance_poll_cursor("b", 200).await.unwrap(),
        CursorAdvance::NotLeader
    );
    assert_eq!(
        store.advance_poll_cursor("a", 160).await.unwrap(),
        CursorAdvance::At(160)
    );
    assert_eq!(store.poll_cursor().await.unwrap(), Some(160));
}

#[tokio::test]
async fn poller_backfill_progress_round_trips() {
    let store = store("backfill");
    assert_eq!(store.backfill_progress("job").await.unwrap(), None);
    store.start_backfill("job", 1000, 5000).await.unwrap();
    store.record_backfill("job", 3000).await.unwrap();
    let p = store.backfill_progress("job").await.unwrap().unwrap();
    assert_eq!(
        p,
        BackfillProgress {
            from: 1000,
            to: 5000,
            done: 3000
        }
    );
    assert!(!p.finished());
    store.record_backfill("job", 5000).await.unwrap();
    assert!(
        store
            .backfill_progress("job")
            .await
            .unwrap()
            .unwrap()
            .finished()
    );
    assert_eq!(store.backfill_progress("other").await.unwrap(), None);
}
