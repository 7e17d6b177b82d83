//! Tempo's result cap (`query_frontend.search.max_result_limit`) below `tempo.limit`, enforced
//! both ways Tempo does: silently lowered (v2.0 to v2.5) and refused with a 400 (v2.6+). With
//! ten times more traces in a window than the cap, the poller and the backfill store every
//! trace exactly once, a cap that appears mid-run loses nothing, and the cap is logged once
//! at WARN and exported.

use std::time::Duration;

use anomaly_testkit::shared_redis_url;
use ingester::{BackfillArgs, PollOutcome};
use tracegen::tempo::{FakeTempo, LimitCap, RunningTempo};

use crate::logs::Logs;
use crate::{T0, all_durations, at, config, ingester, poller, trace};

const CAP: u64 = 20;

fn behaviours() -> [(LimitCap, &'static str); 2] {
    [
        (LimitCap::Clamp(CAP), "clamped"),
        (LimitCap::Reject(CAP), "rejected"),
    ]
}

/// A fake Tempo at `now` (unix seconds) enforcing `cap`.
async fn capped(now: u64, cap: LimitCap) -> RunningTempo {
    let tempo = FakeTempo::start().await;
    tempo.set_now(at(now));
    tempo.set_max_limit(Some(cap));
    tempo
}

fn durations(n: u64) -> Vec<f64> {
    (1..=n).map(|d| d as f64).collect()
}

fn metric(ing: &ingester::Ingester, line: &str) -> bool {
    ing.metrics().encode().lines().any(|l| l == line)
}

/// The cap is in force and was announced once; a silent one also had the slices it may have
/// cut searched again.
fn learned_once(ing: &ingester::Ingester, logs: &Logs, cap: LimitCap) {
    assert!(metric(ing, &format!("anomaly_tempo_search_limit {CAP}")));
    assert_eq!(cap_warnings(logs).len(), 1, "{cap:?}");
    if let LimitCap::Clamp(_) = cap {
        assert!(
            !logs
                .lines("searching again the slices tempo may have cut")
                .is_empty()
        );
    }
}

/// The WARN lines announcing the cap.
fn cap_warnings(logs: &Logs) -> Vec<String> {
    logs.lines(&format!("tempo returns at most {CAP} traces per search"))
}

#[tokio::test]
async fn the_poller_stores_every_trace_behind_a_cap() {
    for (cap, source) in behaviours() {
        let (logs, _guard) = Logs::capture();
        let tempo = capped(T0 + 600, cap).await;
        let c = config(&shared_redis_url(), "cap-poll", &tempo.url());
        assert_eq!(c.service.tempo.limit, 500);
        let ing = ingester(&c);
        let p = poller(&ing);
        // The first window is [T0 + 330, T0 + 570]: 200 traces in it, ten times the cap.
        tempo.upsert_all((0..200).map(|i| trace(i, T0 + 340 + i, 1 + i as u32)));

        let outcome = p.poll_once(tempo.now()).await.unwrap();
        let PollOutcome::Polled { window, .. } = &outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(window.traces.accepted, 200, "{cap:?}: {window:?}");
        assert_eq!(
            all_durations(ing.store()).await,
            durations(200),
            "{cap:?}: each trace exactly once"
        );
        assert!(
            metric(&ing, &format!("anomaly_tempo_search_limit {CAP}")),
            "{cap:?}: {}",
            ing.metrics().encode()
        );
        let requests = tempo.requests();
        match cap {
            LimitCap::Reject(_) => {
                // One refusal, read at once; every other search asked for the cap.
                assert_eq!(requests[0].status, 400);
                assert_eq!(requests[0].param("limit"), Some("500"));
                assert!(
                    requests[1..]
                        .iter()
                        .all(|r| r.status == 200 && r.param("limit") == Some("20"))
                );
                assert_eq!(window.cap_checks, 0, "{window:?}");
            }
            LimitCap::Clamp(_) => {
                // Tempo said nothing: a check proved the cut.
                assert!(requests.iter().all(|r| r.status == 200));
                assert!(window.clamped >= 1, "{window:?}");
                assert!(metric(
                    &ing,
                    &format!(
                        "anomaly_tempo_cap_checks_total{{result=\"clamped\"}} {}",
                        window.clamped
                    )
                ));
            }
        }
        // The next window overlaps: nothing new, and the cap is not announced again.
        tempo.advance(Duration::from_secs(15));
        let again = p.poll_once(tempo.now()).await.unwrap();
        let PollOutcome::Polled { window, .. } = &again else {
            panic!("{again:?}")
        };
        assert_eq!(window.traces.accepted, 0);
        assert_eq!(all_durations(ing.store()).await.len(), 200);

        let warnings = cap_warnings(&logs);
        assert_eq!(warnings.len(), 1, "{cap:?}: once: {warnings:#?}");
        assert!(warnings[0].contains("WARN"), "{}", warnings[0]);
        assert!(
            warnings[0].contains(&format!("source=\"{source}\""))
                || warnings[0].contains(&format!("source={source}")),
            "{}",
            warnings[0]
        );
        assert!(warnings[0].contains("limit=500"), "{}", warnings[0]);
    }
}

#[tokio::test]
async fn the_backfill_stores_every_trace_behind_a_cap() {
    for (cap, _) in behaviours() {
        let (logs, _guard) = Logs::capture();
        let tempo = capped(T0 + 3600, cap).await;
        let mut c = config(&shared_redis_url(), "cap-backfill", &tempo.url());
        c.service.tempo.retries = 0;
        let ing = ingester(&c);
        let from = T0 - 3 * 3600;
        // One trace every 12 s: 300 per one-hour step, fifteen times the cap.
        let total = 3 * 300;
        tempo.upsert_all((0..total).map(|i| trace(i, from + 1 + i * 12, 1 + i as u32)));
        let args = BackfillArgs {
            from,
            to: T0,
            window: Duration::from_secs(3600),
            job: "cap".into(),
            restart: false,
            progress: false,
        };
        let report = ing.backfill(&args, tempo.now()).await.unwrap();
        assert_eq!(report.traces.accepted, total, "{cap:?}: {report:?}");
        assert_eq!(
            all_durations(ing.store()).await,
            durations(total),
            "{cap:?}: each trace exactly once"
        );
        assert_eq!(report.unsplittable, 0);
        learned_once(&ing, &logs, cap);
    }
}

/// One trace a second from `T0`, added as the fake clock moves, polled every 15 s.
async fn steady(tempo: &RunningTempo, p: &ingester::Poller, added: &mut u64, polls: usize) {
    for _ in 0..polls {
        tempo.advance(Duration::from_secs(15));
        let now = tempo
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        while T0 + *added < now {
            let i = *added;
            tempo.upsert(trace(i, T0 + i, 1 + i as u32));
            *added += 1;
        }
        p.poll_once(tempo.now()).await.unwrap();
    }
}

/// Steady traffic through a Tempo whose cap is `tempo.limit` (500), then, after a restart with
/// a new configuration, 20 (30 traces in each window): every trace is stored exactly once.
#[tokio::test]
async fn a_cap_that_appears_mid_run_loses_nothing() {
    for (cap, _) in behaviours() {
        let (logs, _guard) = Logs::capture();
        let before = match cap {
            LimitCap::Clamp(_) => LimitCap::Clamp(500),
            LimitCap::Reject(_) => LimitCap::Reject(500),
        };
        let tempo = capped(T0, before).await;
        let mut c = config(&shared_redis_url(), "cap-mid-run", &tempo.url());
        // Windows overlap by 15 s only, so what a cut answer missed is not simply found again
        // by the next windows: only searching the cut slices again finds it.
        c.service.tempo.lookback = Duration::from_secs(15);
        let ing = ingester(&c);
        let p = poller(&ing);
        let mut added = 0;
        steady(&tempo, &p, &mut added, 20).await;
        assert!(
            cap_warnings(&logs).is_empty(),
            "no cap below tempo.limit yet"
        );
        assert!(metric(&ing, "anomaly_tempo_search_limit 500"));
        tempo.set_max_limit(Some(cap));
        steady(&tempo, &p, &mut added, 30).await;
        // Traffic stops; the poller reaches past the last trace.
        tempo.advance(Duration::from_secs(300));
        crate::poll_until_caught_up(&p, &tempo).await;
        assert!(added > 700, "{added}");
        assert_eq!(
            all_durations(ing.store()).await,
            durations(added),
            "{cap:?}: each trace exactly once"
        );
        learned_once(&ing, &logs, cap);
    }
}

/// Tempo v2.0.1 returns a few more than the (clamped) limit when several shards answer at
/// once: a cut answer then holds 23 traces for a cap of 20. The limit settles at a size the
/// answers really reach, and every trace of a busy window is still stored exactly once.
#[tokio::test]
async fn a_silent_cap_with_shard_overshoot_loses_nothing() {
    let tempo = capped(T0 + 600, LimitCap::Clamp(CAP)).await;
    tempo.set_overshoot(3);
    let ing = ingester(&config(&shared_redis_url(), "cap-overshoot", &tempo.url()));
    let p = poller(&ing);
    tempo.upsert_all((0..200).map(|i| trace(i, T0 + 340 + i, 1 + i as u32)));

    let outcome = p.poll_once(tempo.now()).await.unwrap();
    let PollOutcome::Polled { window, .. } = &outcome else {
        panic!("{outcome:?}")
    };
    assert!(window.clamped >= 1, "{window:?}");
    assert_eq!(
        all_durations(ing.store()).await,
        durations(200),
        "each trace exactly once: {window:?}"
    );
    let limit = ing
        .metrics()
        .encode()
        .lines()
        .find_map(|l| {
            l.strip_prefix("anomaly_tempo_search_limit ")?
                .parse::<u64>()
                .ok()
        })
        .unwrap();
    assert!((CAP..=CAP + 3).contains(&limit), "{limit}");
}

/// Where the query-frontend serves `/status/config`, the cap is read from it before the first
/// search: no answer needs checking, nothing is refused, and every trace is stored once.
#[tokio::test]
async fn a_cap_in_tempos_status_config_is_used_from_the_start() {
    for (cap, _) in behaviours() {
        let (logs, _guard) = Logs::capture();
        let tempo = capped(T0 + 600, cap).await;
        tempo.set_status_config(true);
        let ing = ingester(&config(&shared_redis_url(), "cap-config", &tempo.url()));
        let p = poller(&ing);
        tempo.upsert_all((0..200).map(|i| trace(i, T0 + 340 + i, 1 + i as u32)));

        let outcome = p.poll_once(tempo.now()).await.unwrap();
        let PollOutcome::Polled { window, .. } = &outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(window.cap_checks, 0, "{cap:?}: {window:?}");
        let requests = tempo.requests();
        assert!(
            requests
                .iter()
                .all(|r| r.status == 200 && r.param("limit") == Some("20")),
            "{cap:?}: every search asked for the cap"
        );
        assert_eq!(all_durations(ing.store()).await, durations(200), "{cap:?}");
        assert!(metric(&ing, &format!("anomaly_tempo_search_limit {CAP}")));
        let warnings = cap_warnings(&logs);
        assert_eq!(warnings.len(), 1, "{warnings:#?}");
        assert!(warnings[0].contains("config"), "{}", warnings[0]);
    }
}
