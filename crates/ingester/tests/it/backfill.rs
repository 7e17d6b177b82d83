//! `ingester backfill`: three days of history in steps, with splitting and dedup, resumable
//! after an interruption.

use std::time::Duration;

use anomaly_testkit::shared_redis_url;
use ingester::{BackfillArgs, BackfillError};
use tracegen::tempo::{FakeTempo, Fault};

use crate::{T0, all_durations, at, config, ingester, trace};

#[tokio::test]
async fn three_days_resume_after_an_interruption() {
    let tempo = FakeTempo::start().await;
    tempo.set_now(at(T0 + 3600));
    let mut c = config(&shared_redis_url(), "backfill", &tempo.url());
    c.service.tempo.limit = 20;
    c.service.tempo.retries = 0;
    let ing = ingester(&c);
    let from = T0 - 3 * 86_400;
    // One trace every 10 minutes: 36 per 6-hour step, more than the limit, so steps split.
    let total = 3 * 144;
    tempo.upsert_all((0..total).map(|i| trace(i, from + 60 + i * 600, 1 + i as u32)));
    let args = BackfillArgs {
        from,
        to: T0,
        window: Duration::from_secs(6 * 3600),
        job: "first-deploy".into(),
        restart: false,
        progress: false,
    };

    // Tempo goes down part-way through.
    tempo.fail_after(15, Fault::unavailable());
    let err = ing.backfill(&args, tempo.now()).await.unwrap_err();
    let BackfillError::Stopped {
        done, remaining, ..
    } = err
    else {
        panic!("{err}")
    };
    assert!(done > from && done < T0, "stopped part-way: {done}");
    assert_eq!(done + remaining, T0);
    let recorded = ing
        .store()
        .backfill_progress("first-deploy")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (recorded.from, recorded.to, recorded.done),
        (from, T0, done)
    );
    let before = all_durations(ing.store()).await.len();
    assert!(before > 0 && (before as u64) < total);

    // Run again: it resumes where it stopped, not from the start.
    tempo.clear_faults();
    tempo.clear_requests();
    let report = ing.backfill(&args, tempo.now()).await.unwrap();
    assert_eq!(report.resumed_at, done);
    assert_eq!(tempo.requests()[0].start, Some(done));
    assert!(tempo.requests().iter().all(|r| r.start.unwrap() >= done));
    assert!(report.splits > 0, "{report:?}");
    assert_eq!(report.unsplittable, 0);
    let want: Vec<f64> = (1..=total).map(|d| d as f64).collect();
    assert_eq!(
        all_durations(ing.store()).await,
        want,
        "every trace exactly once"
    );
    assert!(
        ing.store()
            .backfill_progress("first-deploy")
            .await
            .unwrap()
            .unwrap()
            .finished()
    );

    // History is stored, not judged: no verdict is counted.
    let text = ing.metrics().encode();
    let judged: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("anomaly_judged_total{"))
        .collect();
    assert!(!judged.is_empty(), "{text}");
    assert!(judged.iter().all(|l| l.ends_with(" 0")), "{judged:?}");

    // A finished job starts afresh; everything is a duplicate now.
    let again = ing.backfill(&args, tempo.now()).await.unwrap();
    assert_eq!(again.resumed_at, from);
    assert_eq!(again.traces.accepted, 0);
    assert!(again.traces.duplicates >= total);
}

#[tokio::test]
async fn bad_ranges_are_refused() {
    let tempo = FakeTempo::start().await;
    tempo.set_now(at(T0));
    let ing = ingester(&config(&shared_redis_url(), "backfill-bad", &tempo.url()));
    let mut args = BackfillArgs {
        from: T0 - 3600,
        to: T0 - 7200,
        window: Duration::from_secs(3600),
        job: "bad".into(),
        restart: false,
        progress: false,
    };
    assert!(matches!(
        ing.backfill(&args, tempo.now()).await,
        Err(BackfillError::EmptyRange)
    ));
    args.to = T0;
    args.window = Duration::from_secs(169 * 3600);
    assert!(matches!(
        ing.backfill(&args, tempo.now()).await,
        Err(BackfillError::Window)
    ));
    let off = ingester(&config(&shared_redis_url(), "backfill-off", ""));
    args.window = Duration::from_secs(3600);
    assert!(matches!(
        off.backfill(&args, tempo.now()).await,
        Err(BackfillError::NoTempo)
    ));
    assert!(tempo.requests().is_empty());
}
