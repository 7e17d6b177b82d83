//! The Tempo poller, one step at a time (`poll_once` at the fake Tempo's clock): splitting,
//! partial traces, v3's hidden newest 30 s, the cursor across restarts and outages, faults.

use std::time::Duration;

use anomaly_testkit::shared_redis_url;
use ingester::tempo::TempoError;
use ingester::{PollError, PollOutcome};
use tracegen::tempo::{Auth, FakeTempo, Fault, Mode, RunningTempo, Trace};

use crate::logs::Logs;
use crate::{
    T0, accepted, all_durations, at, config, id, ingester, nanos, poll_until_caught_up, poller,
    serve, trace,
};

async fn tempo_at(now: u64) -> RunningTempo {
    let tempo = FakeTempo::start().await;
    tempo.set_now(at(now));
    tempo
}

fn window(outcome: &PollOutcome) -> &ingester::WindowReport {
    match outcome {
        PollOutcome::Polled { window, .. } => window,
        other => panic!("expected a polled window, got {other:?}"),
    }
}

#[tokio::test]
async fn truncated_windows_are_split_until_every_trace_is_found() {
    let tempo = tempo_at(T0 + 600).await;
    // v2.0.1 with several shards returns a few more than `limit`: still truncated.
    tempo.set_overshoot(3);
    let mut c = config(&shared_redis_url(), "split", &tempo.url());
    c.service.tempo.limit = 20;
    let ing = ingester(&c);
    let p = poller(&ing);
    // The first window is [H - 240, H] with H = now - 30: 100 traces (5x the limit) in it.
    tempo.upsert_all((0..100).map(|i| trace(i, T0 + 340 + 2 * i, 1 + i as u32)));

    let first = p.poll_once(tempo.now()).await.unwrap();
    let w = window(&first);
    assert_eq!((w.start, w.end), (T0 + 330, T0 + 570));
    assert!(w.splits >= 4, "{w:?}");
    assert_eq!(w.unsplittable, 0);
    assert_eq!(w.traces.accepted, 100, "{w:?}");
    let want: Vec<f64> = (1..=100).map(f64::from).collect();
    assert_eq!(
        all_durations(ing.store()).await,
        want,
        "each trace exactly once"
    );
    // Every response that was used (not split) held fewer than `limit` traces.
    let requests = tempo.requests();
    assert_eq!(requests.len() as u64, w.requests);
    assert_eq!(
        requests.iter().filter(|r| r.returned >= 20).count() as u64,
        w.splits
    );
    let metrics = ing.metrics().encode();
    assert!(
        metrics.contains(&format!("anomaly_tempo_window_splits_total {}", w.splits)),
        "{metrics}"
    );

    // The next window overlaps this one: the same traces again, all duplicates.
    tempo.advance(Duration::from_secs(15));
    let second = p.poll_once(tempo.now()).await.unwrap();
    assert_eq!(window(&second).traces.accepted, 0);
    assert!(window(&second).traces.duplicates > 0);
    assert_eq!(all_durations(ing.store()).await.len(), 100);
}

#[tokio::test]
async fn a_slice_that_cannot_be_split_is_counted() {
    let tempo = tempo_at(T0 + 600).await;
    let mut c = config(&shared_redis_url(), "unsplittable", &tempo.url());
    c.service.tempo.limit = 20;
    let ing = ingester(&c);
    // 30 traces inside one second: no one-second slice holds fewer than 20.
    tempo.upsert_all(
        (0..30).map(|i| Trace::new(id(i + 1), "svc", "GET /e", nanos(T0 + 500, 100 + i), 1)),
    );
    let outcome = poller(&ing).poll_once(tempo.now()).await.unwrap();
    let w = window(&outcome);
    assert_eq!(w.unsplittable, 1, "{w:?}");
    assert_eq!(w.traces.accepted, 20, "what Tempo returned is kept");
    assert!(
        ing.metrics()
            .encode()
            .contains("anomaly_tempo_windows_unsplittable_total 1")
    );
}

#[tokio::test]
async fn a_partial_trace_is_ingested_once_its_root_arrives() {
    let tempo = tempo_at(T0 + 600).await;
    let ing = ingester(&config(&shared_redis_url(), "partial", &tempo.url()));
    let p = poller(&ing);
    tempo.upsert(Trace::partial(id(0xc1), nanos(T0 + 500, 0), 40));

    let first = p.poll_once(tempo.now()).await.unwrap();
    assert_eq!(window(&first).traces.partial, 1);
    assert_eq!(window(&first).traces.accepted, 0);
    assert!(all_durations(ing.store()).await.is_empty());

    // The root arrives: same ID, the real names, an earlier start, a longer duration.
    tempo.upsert(Trace::new(
        id(0xc1),
        "svc",
        "GET /root",
        nanos(T0 + 499, 0),
        900,
    ));
    tempo.advance(Duration::from_secs(15));
    let second = p.poll_once(tempo.now()).await.unwrap();
    assert_eq!(window(&second).traces.accepted, 1);
    tempo.advance(Duration::from_secs(15));
    let third = p.poll_once(tempo.now()).await.unwrap();
    assert_eq!(window(&third).traces.accepted, 0);
    assert_eq!(window(&third).traces.duplicates, 1);
    assert_eq!(all_durations(ing.store()).await, vec![900.0]);
}

/// Ten minutes of traffic against a Tempo v3, some traces reaching Tempo 100 s after they
/// ended: every trace is ingested exactly once, and no window or cursor ever reaches into the
/// newest 30 s that v3 hides.
#[tokio::test]
async fn v3_freshness_cut_loses_nothing() {
    let tempo = tempo_at(T0).await;
    tempo.set_mode(Mode::V3);
    let ing = ingester(&config(&shared_redis_url(), "v3", &tempo.url()));
    let p = poller(&ing);
    // Trace i starts at T0 + i, lasts 200 ms + i ms; every 7th reaches Tempo 100 s late.
    let arrival = |i: u64| T0 + i + 1 + if i.is_multiple_of(7) { 100 } else { 0 };
    let total = 600u64;
    let mut arrived = 0;
    let mut polled = 0;
    let mut now = T0;
    while now <= T0 + total + 300 {
        tempo.set_now(at(now));
        tempo.upsert_all(
            (0..total)
                .filter(|&i| arrival(i) <= now && arrival(i) > now.saturating_sub(15))
                .map(|i| trace(i, T0 + i, 200 + i as u32)),
        );
        arrived = (0..total).filter(|&i| arrival(i) <= now).count();
        for outcome in poll_until_caught_up(&p, &tempo).await {
            if let PollOutcome::Polled { window, cursor, .. } = &outcome {
                assert!(window.end <= now - 30, "{window:?} at {now}");
                assert!(*cursor <= now - 30);
                polled += window.traces.accepted;
            }
        }
        now += 15;
    }
    assert_eq!(arrived as u64, total);
    assert_eq!(polled, total);
    let want: Vec<f64> = (0..total).map(|i| (200 + i) as f64).collect();
    assert_eq!(all_durations(ing.store()).await, want);
    for r in tempo.requests() {
        assert_eq!(r.status, 200);
    }
}

#[tokio::test]
async fn the_cursor_resumes_after_a_restart() {
    let tempo = tempo_at(T0 + 600).await;
    let c = config(&shared_redis_url(), "restart", &tempo.url());
    let first = ingester(&c);
    let a = poller(&first);
    tempo.upsert_all((0..10).map(|i| trace(i, T0 + 400 + i, 10)));
    a.poll_once(tempo.now()).await.unwrap();
    tempo.advance(Duration::from_secs(15));
    a.poll_once(tempo.now()).await.unwrap();
    let cursor = first.store().poll_cursor().await.unwrap().unwrap();
    assert_eq!(cursor, T0 + 615 - 30);
    assert!(a.release().await.unwrap());
    drop(first);

    // Ten minutes down; traffic goes on (one trace every 5 s).
    tempo.upsert_all((10..130).map(|i| trace(i, T0 + 600 + (i - 10) * 4, 20)));
    tempo.advance(Duration::from_secs(600));
    tempo.clear_requests();
    let second = ingester(&c);
    let b = poller(&second);
    assert_ne!(a.owner(), b.owner());
    let outcomes = poll_until_caught_up(&b, &tempo).await;
    let windows: Vec<_> = outcomes.iter().map(window).collect();
    assert_eq!(
        windows[0].start,
        cursor - 120,
        "resumes one lookback behind the cursor"
    );
    assert!(
        windows.len() >= 5,
        "catch-up in lookback steps: {windows:?}"
    );
    for pair in windows.windows(2) {
        assert_eq!(pair[1].start, pair[0].end - 120, "{pair:?}");
        assert!(pair[1].end - pair[0].end <= 120);
    }
    assert_eq!(
        second.store().poll_cursor().await.unwrap(),
        Some(T0 + 1215 - 30)
    );
    assert_eq!(accepted(&outcomes), 120);
    assert_eq!(all_durations(second.store()).await.len(), 130);
}

#[tokio::test]
async fn a_gap_beyond_max_catchup_is_skipped_and_counted() {
    let tempo = tempo_at(T0 + 600).await;
    let mut c = config(&shared_redis_url(), "catchup", &tempo.url());
    c.service.tempo.max_catchup = Duration::from_secs(300);
    let ing = ingester(&c);
    let p = poller(&ing);
    p.poll_once(tempo.now()).await.unwrap();
    tempo.advance(Duration::from_secs(3600));
    let horizon = T0 + 600 + 3600 - 30;
    let outcomes = poll_until_caught_up(&p, &tempo).await;
    assert_eq!(window(&outcomes[0]).start, horizon - 300 - 120);
    let skipped = horizon - 300 - (T0 + 570);
    assert!(
        ing.metrics()
            .encode()
            .contains(&format!("anomaly_poller_gap_seconds_total {skipped}"))
    );
}

/// Five minutes of 503s: every poll fails, the cursor stays put, the lag grows; after recovery
/// the poller catches up and nothing from the outage is missing.
#[tokio::test]
async fn a_tempo_outage_leaves_no_gap() {
    let tempo = tempo_at(T0 + 600).await;
    let ing = ingester(&config(&shared_redis_url(), "outage", &tempo.url()));
    let p = poller(&ing);
    let (addr, server) = serve(&ing).await;
    let readyz = async || -> serde_json::Value {
        let r = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
        assert_eq!(r.status(), 200, "tempo is informational on /readyz");
        r.json().await.unwrap()
    };

    // One trace every 5 s from T0 on.
    let mut n = 0;
    let mut add_until = |tempo: &RunningTempo, until: u64| {
        while T0 + n * 5 < until {
            tempo.upsert(trace(n, T0 + n * 5, 30));
            n += 1;
        }
    };
    add_until(&tempo, T0 + 600);
    p.poll_once(tempo.now()).await.unwrap();
    let cursor = ing.store().poll_cursor().await.unwrap();
    assert_eq!(readyz().await["checks"]["tempo"], "ok");

    tempo.fail_until_cleared(Fault::unavailable());
    tempo.clear_requests();
    for _ in 0..20 {
        tempo.advance(Duration::from_secs(15));
        add_until(&tempo, tempo_secs(&tempo));
        let err = p.poll_once(tempo.now()).await.unwrap_err();
        assert!(
            matches!(
                err,
                PollError::Tempo(TempoError::Status { status: 503, .. })
            ),
            "{err}"
        );
        assert_eq!(
            ing.store().poll_cursor().await.unwrap(),
            cursor,
            "cursor held"
        );
    }
    // Each poll tried once and retried twice, all 503.
    let requests = tempo.requests();
    assert_eq!(requests.len(), 20 * 3);
    assert!(requests.iter().all(|r| r.status == 503));
    let lag = T0 + 900 - cursor.unwrap();
    let metrics = ing.metrics().encode();
    assert!(
        metrics.contains(&format!("anomaly_poller_cursor_lag_seconds {lag}")),
        "{metrics}"
    );
    assert!(metrics.contains("anomaly_tempo_requests_total{status=\"503\"} 60"));
    let tempo_check = readyz().await["checks"]["tempo"].clone();
    assert!(
        tempo_check.as_str().unwrap().contains("503"),
        "{tempo_check}"
    );

    tempo.clear_faults();
    let outcomes = poll_until_caught_up(&p, &tempo).await;
    assert!(outcomes.len() > 1, "catch-up steps");
    assert_eq!(readyz().await["checks"]["tempo"], "ok");
    // Every trace from the first window's start (T0 + 330) to the horizon is stored, once.
    let horizon = T0 + 900 - 30;
    let visible = (0..n)
        .filter(|i| (T0 + 330..horizon).contains(&(T0 + i * 5)))
        .count();
    assert_eq!(all_durations(ing.store()).await.len(), visible);
    assert_eq!(
        ing.store().poll_cursor().await.unwrap(),
        Some(horizon),
        "caught up"
    );
    server.abort();
}

fn tempo_secs(tempo: &RunningTempo) -> u64 {
    tempo
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Builds an ingester polling a fresh fake Tempo that holds 10 traces in the first window.
async fn faulty(
    test: &str,
    tune: impl FnOnce(&mut ingester::Config),
) -> (RunningTempo, ingester::Ingester) {
    let tempo = tempo_at(T0 + 600).await;
    let mut c = config(&shared_redis_url(), test, &tempo.url());
    tune(&mut c);
    tempo.upsert_all((0..10).map(|i| trace(i, T0 + 400 + i, 10)));
    (tempo, ingester(&c))
}

#[tokio::test]
async fn server_errors_and_bad_bodies_are_retried() {
    for fault in [
        Fault::Status(500, "internal error".into()),
        Fault::Status(502, "bad gateway".into()),
        Fault::Status(429, "too many requests".into()),
        Fault::Malformed,
        Fault::Truncated,
    ] {
        let (tempo, ing) = faulty("retry", |_| {}).await;
        tempo.fail_next(2, fault.clone());
        let outcome = poller(&ing).poll_once(tempo.now()).await.unwrap();
        assert_eq!(window(&outcome).traces.accepted, 10, "{fault:?}");
        // Two failures, the retry that succeeds, then the check of that first answer (its
        // halves), all answered.
        let statuses: Vec<u16> = tempo.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses.len(), 5, "{fault:?} {statuses:?}");
        assert!(statuses[2..].iter().all(|&s| s == 200), "{statuses:?}");
        assert_eq!(window(&outcome).cap_checks, 1);
    }
}

#[tokio::test]
async fn request_errors_are_not_retried() {
    for (status, body) in [
        (
            400,
            "invalid TraceQL query: parse error at line 1, col 2: unknown identifier: foo",
        ),
        (
            400,
            "range specified by start and end exceeds 168h0m0s. received start=1 end=2",
        ),
        (401, "no org id"),
        (
            500,
            "invalid TraceQL query: parse error at line 1, col 2: syntax error",
        ),
    ] {
        let (tempo, ing) = faulty("no-retry", |_| {}).await;
        tempo.fail_next(1, Fault::Status(status, body.into()));
        let err = poller(&ing).poll_once(tempo.now()).await.unwrap_err();
        let PollError::Tempo(TempoError::Status {
            status: got,
            body: text,
        }) = &err
        else {
            panic!("{err}");
        };
        assert_eq!(
            (*got, text.as_str()),
            (status, body),
            "the plain-text body is kept"
        );
        assert_eq!(tempo.requests().len(), 1, "{status} {body}: not retried");
        assert_eq!(ing.store().poll_cursor().await.unwrap(), None);
    }
}

#[tokio::test]
async fn timeouts_fail_the_poll_and_slow_answers_do_not() {
    let (tempo, ing) = faulty("timeout", |c| {
        c.service.tempo.timeout = Duration::from_millis(300);
        c.service.tempo.retries = 1;
    })
    .await;
    let p = poller(&ing);
    tempo.set_delay(Duration::from_millis(800));
    let err = p.poll_once(tempo.now()).await.unwrap_err();
    assert!(
        matches!(err, PollError::Tempo(TempoError::Timeout(_))),
        "{err}"
    );
    assert_eq!(ing.store().poll_cursor().await.unwrap(), None);
    assert!(
        ing.metrics()
            .encode()
            .contains("anomaly_tempo_requests_total{status=\"timeout\"} 2")
    );

    tempo.set_delay(Duration::from_millis(100));
    let outcome = p.poll_once(tempo.now()).await.unwrap();
    assert_eq!(window(&outcome).traces.accepted, 10);
    tempo.set_delay(Duration::ZERO);
}

#[tokio::test]
async fn an_enormous_body_is_refused_and_the_window_split() {
    let (tempo, ing) = faulty("huge", |c| c.service.tempo.max_response_bytes = 64 * 1024).await;
    tempo.fail_next(1, Fault::Huge(4 * 1024 * 1024));
    let outcome = poller(&ing).poll_once(tempo.now()).await.unwrap();
    let w = window(&outcome);
    assert_eq!((w.splits, w.traces.accepted), (1, 10), "{w:?}");
    assert!(
        ing.metrics()
            .encode()
            .contains("anomaly_tempo_requests_total{status=\"too_large\"} 1")
    );
}

#[tokio::test]
async fn tenant_auth_query_and_ignore_rules_are_applied() {
    let tempo = tempo_at(T0 + 600).await;
    tempo.set_tenant(Some("team-a"));
    tempo.set_auth(Auth::Basic {
        username: "poller".into(),
        password: "s3cret".into(),
    });
    tempo.upsert(trace(1, T0 + 500, 10));
    tempo.upsert(Trace::new(
        id(2),
        "svc",
        "GET /healthz",
        nanos(T0 + 501, 0),
        1,
    ));
    tempo.upsert(Trace::new(id(3), "probe", "GET /e", nanos(T0 + 502, 0), 1));
    let mut c = config(&shared_redis_url(), "tenant", &tempo.url());
    let t = &mut c.service.tempo;
    t.org_id = "team-a".into();
    t.auth.username = Some("poller".into());
    t.auth.password = Some("s3cret".to_owned().into());
    t.query = r#"{ resource.service.name != "loadgen" }"#.into();
    c.service.ignore = vec![
        ingester::IgnoreRule {
            service: None,
            endpoint: Some("GET /(healthz|readyz)".into()),
        },
        ingester::IgnoreRule {
            service: Some("probe".into()),
            endpoint: None,
        },
    ];
    let ing = ingester(&c);
    let outcome = poller(&ing).poll_once(tempo.now()).await.unwrap();
    let w = window(&outcome);
    assert_eq!((w.traces.accepted, w.traces.ignored), (1, 2), "{w:?}");
    let r = &tempo.requests()[0];
    assert_eq!(r.org_id.as_deref(), Some("team-a"));
    assert_eq!(
        r.param("q"),
        Some(r#"{ resource.service.name != "loadgen" }"#)
    );
    assert_eq!(r.param("limit"), Some("500"));
    assert!(r.user_agent.as_deref().unwrap().contains("ingester"));

    // Bearer authentication, and a wrong token: 401 is not retried.
    tempo.set_auth(Auth::Bearer("tok".into()));
    tempo.clear_requests();
    let mut bearer = c.clone();
    // A separate Redis namespace, so the first ingester's lease does not make it a standby.
    bearer.common.redis.key_prefix = anomaly_testkit::unique_prefix("bearer");
    bearer.service.tempo.auth = Default::default();
    bearer.service.tempo.auth.token = Some("tok".to_owned().into());
    let outcome = poller(&ingester(&bearer))
        .poll_once(tempo.now())
        .await
        .unwrap();
    assert_eq!(window(&outcome).traces.accepted, 1);
    bearer.common.redis.key_prefix = anomaly_testkit::unique_prefix("wrong-token");
    bearer.service.tempo.auth.token = Some("wrong".to_owned().into());
    tempo.clear_requests();
    let err = poller(&ingester(&bearer))
        .poll_once(tempo.now())
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        PollError::Tempo(TempoError::Status { status: 401, .. })
    ));
    assert_eq!(tempo.requests().len(), 1);
}

/// An exported trace of a poll shows where its time went: the Tempo request and every Redis
/// operation are debug spans inside the poll's, named by operation only.
#[tokio::test]
async fn a_poll_has_a_span_per_tempo_request_and_redis_operation() {
    let tempo = tempo_at(T0 + 600).await;
    let c = config(&shared_redis_url(), "spans", &tempo.url());
    let p = poller(&ingester(&c));
    tempo.upsert_all((0..3).map(|i| trace(i, T0 + 400 + i, 10)));

    let (logs, _guard) = Logs::capture_spans();
    p.poll_once(tempo.now()).await.unwrap();
    // The innermost span of each span closed inside the poll, e.g. `redis{op="ingest"}`.
    let closed: Vec<String> = logs
        .lines(": close ")
        .iter()
        .filter_map(|l| l.split(": ").next()?.split_once(" poll{"))
        .filter_map(|(_, inner)| Some(inner.rsplit("}:").next()?.to_owned()))
        .collect();
    let count = |prefix: &str| closed.iter().filter(|s| s.starts_with(prefix)).count();
    assert_eq!(
        count("tempo window{source=\"poll\" start="),
        1,
        "{closed:?}"
    );
    assert!(count("tempo search{start=") >= 1, "{closed:?}");
    for op in [
        "acquire_lease",
        "poll_cursor",
        "ingest",
        "advance_poll_cursor",
    ] {
        assert_eq!(
            count(&format!("redis{{op=\"{op}\"}}")),
            1,
            "{op}: {closed:?}"
        );
    }
}
