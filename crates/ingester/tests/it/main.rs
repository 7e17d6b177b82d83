//! Integration tests of the ingester against a real redis-server and a fake Tempo
//! (`tracegen::tempo::FakeTempo`) whose clock the tests drive.

mod backfill;
mod config;
mod detect;
mod kill;
mod lease;
mod logs;
mod names;
mod otlp;
mod poller;
mod push;
mod spans;
mod tempo_cap;
mod tempo_client;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anomaly_store::Store;
use ingester::{Config, Ingester, PollOutcome, Poller, Section};
use tracegen::tempo::{RunningTempo, Trace};

/// 2026-11-25T06:00:00Z, a Wednesday: 14:00 in Asia/Taipei.
pub(crate) const T0: u64 = 1_795_586_400;

pub(crate) fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// A config for tests: defaults, the given Redis, a unique key prefix, Tempo at `tempo` (empty
/// for none), retries that do not make tests wait.
pub(crate) fn config(redis_url: &str, test: &str, tempo: &str) -> Config {
    let mut c: Config = anomaly_runtime::load::<Section>(None).expect("defaults load");
    c.common.redis = anomaly_testkit::redis_config(redis_url, test);
    c.common.stats.window_size = 100_000;
    let t = &mut c.service.tempo;
    t.url = tempo.to_owned();
    t.retries = 2;
    t.backoff = Duration::from_millis(5);
    t.max_backoff = Duration::from_millis(20);
    t.timeout = Duration::from_secs(5);
    // Tests run side by side: OTLP/gRPC's default port would be taken by the first.
    c.service.otlp.grpc_listen = None;
    c
}

pub(crate) fn ingester(config: &Config) -> Ingester {
    Ingester::new(config.clone()).expect("ingester builds")
}

/// The ingester's router on a real loopback socket, until the task is dropped or aborted.
pub(crate) async fn serve(ing: &Ingester) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = ing.router();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (addr, task)
}

pub(crate) fn poller(ingester: &Ingester) -> Poller {
    ingester.poller().expect("tempo is configured")
}

/// A 32-digit trace ID with leading zeros (Tempo serves it without them).
pub(crate) fn id(n: u64) -> String {
    format!("{n:032x}")
}

pub(crate) fn nanos(secs: u64, millis: u64) -> u64 {
    secs * 1_000_000_000 + millis * 1_000_000
}

/// A complete trace of service `svc`, endpoint `GET /e`, starting at `start_s` (+ `n % 1000` ms
/// so traces differ), lasting `duration_ms`.
pub(crate) fn trace(n: u64, start_s: u64, duration_ms: u32) -> Trace {
    Trace::new(
        id(n),
        "svc",
        "GET /e",
        nanos(start_s, n % 1000),
        duration_ms,
    )
}

/// Every stored sample, by key body, sorted (durations in ms).
pub(crate) async fn samples(store: &Store) -> BTreeMap<String, Vec<f64>> {
    let mut keys = Vec::new();
    let mut cursor = 0;
    loop {
        let (next, step) = store.scan_keys(cursor, 1000).await.expect("scan keys");
        keys.extend(step);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    if keys.is_empty() {
        return BTreeMap::new();
    }
    let windows = store.read_windows(&keys).await.expect("read windows");
    keys.into_iter()
        .zip(windows)
        .map(|(k, mut w)| {
            w.sort_by(f64::total_cmp);
            (k.encode(), w)
        })
        .collect()
}

/// Every stored duration, sorted.
pub(crate) async fn all_durations(store: &Store) -> Vec<f64> {
    let mut all: Vec<f64> = samples(store).await.into_values().flatten().collect();
    all.sort_by(f64::total_cmp);
    all
}

/// Polls (at the fake Tempo's clock) until caught up; returns the outcomes.
pub(crate) async fn poll_until_caught_up(
    poller: &Poller,
    tempo: &RunningTempo,
) -> Vec<PollOutcome> {
    let mut outcomes = Vec::new();
    for _ in 0..1000 {
        let outcome = poller.poll_once(tempo.now()).await.expect("poll succeeds");
        let done = !matches!(
            outcome,
            PollOutcome::Polled {
                caught_up: false,
                ..
            }
        );
        outcomes.push(outcome);
        if done {
            return outcomes;
        }
    }
    panic!("the poller did not catch up in 1000 steps");
}

/// Traces accepted over a run of outcomes.
pub(crate) fn accepted(outcomes: &[PollOutcome]) -> u64 {
    outcomes
        .iter()
        .map(|o| match o {
            PollOutcome::Polled { window, .. } => window.traces.accepted,
            _ => 0,
        })
        .sum()
}
