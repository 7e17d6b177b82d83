//! Redis killed (SIGKILL) and restarted while the three services run under continuous ingest
//! and check load: nothing exits or panics, the probes say what is happening, no push is
//! acknowledged that Redis did not store, and baselines catch up without a restart.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anomaly_core::{BaselineKey, DayType, TraceId};
use anomaly_store::Store;
use anomaly_testkit::{RedisServer, eventually, raw_command, unique_prefix};
use serde_json::{Value, json};

use crate::{Stack, T0_NANOS, count_panics, panics, status};

/// The endpoints the load spreads over; all in the 14:00 weekday bucket.
const ENDPOINTS: [(&str, &str); 4] = [
    ("checkout", "POST /pay"),
    ("checkout", "GET /cart"),
    ("search", "GET /q"),
    ("search", "GET /suggest"),
];
const BATCH: u64 = 10;

fn key(i: usize) -> BaselineKey {
    let (service, endpoint) = ENDPOINTS[i];
    BaselineKey::new(service, endpoint, 14, DayType::Weekday).expect("valid key")
}

/// A trace the load sent: its ID, its key and its (unique) duration in ms.
#[derive(Debug, Clone)]
struct Sent {
    id: String,
    key: usize,
    duration_ms: u64,
}

/// One push attempt.
#[derive(Debug)]
struct Attempt {
    started: Instant,
    ended: Instant,
    /// 0 when no answer came.
    status: u16,
    body: Value,
    traces: Vec<Sent>,
}

/// Pushes batches of new traces until `stop`; a batch that is not acknowledged is retried,
/// as a client should, until it is.
async fn ingest_load(
    url: String,
    first: u64,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Attempt>>>,
) {
    let client = reqwest::Client::new();
    let mut seq = first;
    let mut pending: Option<Vec<Sent>> = None;
    while !stop.load(Ordering::SeqCst) {
        let traces = pending.take().unwrap_or_else(|| {
            (0..BATCH)
                .map(|_| {
                    seq += 1;
                    Sent {
                        id: format!("{seq:x}"),
                        key: (seq % ENDPOINTS.len() as u64) as usize,
                        duration_ms: seq,
                    }
                })
                .collect()
        });
        let body = json!({"traces": traces.iter().map(|t| {
            let (service, endpoint) = ENDPOINTS[t.key];
            json!({"traceID": t.id, "rootServiceName": service, "rootTraceName": endpoint,
                   "startTimeUnixNano": (T0_NANOS + t.duration_ms).to_string(),
                   "durationMs": t.duration_ms})
        }).collect::<Vec<_>>()});
        let started = Instant::now();
        let reply = client
            .post(&url)
            .json(&body)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        let (status, body) = match reply {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        };
        if status != 200 {
            pending = Some(traces.clone());
        }
        log.lock().unwrap().push(Attempt {
            started,
            ended: Instant::now(),
            status,
            body,
            traces,
        });
        tokio::time::sleep(Duration::from_millis(if status == 200 { 5 } else { 50 })).await;
    }
}

/// Checks anomalous durations until `stop`, logging when each was sent and its status.
async fn check_load(url: String, stop: Arc<AtomicBool>, log: Arc<Mutex<Vec<(Instant, u16)>>>) {
    let client = reqwest::Client::new();
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        let (service, endpoint) = ENDPOINTS[i % ENDPOINTS.len()];
        i += 1;
        let body = json!({"rootServiceName": service, "rootTraceName": endpoint,
                          "startTimeUnixNano": T0_NANOS.to_string(), "durationMs": 5e7});
        let started = Instant::now();
        let status = client
            .post(&url)
            .json(&body)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_or(0, |r| r.status().as_u16());
        log.lock().unwrap().push((started, status));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn acknowledged(log: &Mutex<Vec<Attempt>>, since: Option<Instant>) -> Vec<Sent> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|a| a.status == 200 && since.is_none_or(|s| a.started >= s))
        .flat_map(|a| a.traces.clone())
        .collect()
}

async fn probes(client: &reqwest::Client, stack: &Stack) -> Vec<u16> {
    let mut out = Vec::new();
    for s in stack.services() {
        out.push(status(client, &s.url("/readyz")).await);
    }
    out
}

/// SIGKILLs the redis-server (a crash, not a shutdown) and waits until its port is closed.
fn crash(mut redis: RedisServer) -> RedisServer {
    let info = redis.command(&["INFO", "server"]);
    let pid = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .expect("INFO server has process_id")
        .trim()
        .to_owned();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .expect("run kill");
    assert!(killed.success(), "kill -KILL {pid}");
    // Reaps the wrapper and waits until nothing listens on the port.
    redis.stop();
    redis
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_crash_under_load_loses_no_acknowledged_trace() {
    count_panics();
    let redis = RedisServer::start();
    let url = redis.url();
    let prefix = unique_prefix("chaos");
    let stack = Stack::start(&url, &prefix).await;
    let store = Store::connect(&crate::checker_config(&url, &prefix).common.redis).unwrap();
    let keys: Vec<BaselineKey> = (0..ENDPOINTS.len()).map(key).collect();
    let client = reqwest::Client::new();

    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    // Two clients pushing at once; their trace IDs and durations never overlap.
    let ingest: Vec<_> = [0, 1_000_000]
        .map(|first| {
            tokio::spawn(ingest_load(
                stack.ingester.url("/v1/traces/ingest"),
                first,
                stop.clone(),
                log.clone(),
            ))
        })
        .into();
    let check_log = Arc::new(Mutex::new(Vec::new()));
    let checks = tokio::spawn(check_load(
        stack.checker.url("/v1/anomaly/check"),
        stop.clone(),
        check_log.clone(),
    ));

    // Warm-up: samples acknowledged and baselines written for every key.
    let warm = eventually(Duration::from_secs(30), || async {
        acknowledged(&log, None).len() >= 200
            && store
                .baselines(&keys)
                .await
                .is_ok_and(|b| b.iter().all(Option::is_some))
    })
    .await;
    assert!(warm, "no baselines before the outage");
    assert_eq!(probes(&client, &stack).await, [200, 200, 200]);

    // The crash.
    let redis = tokio::task::spawn_blocking(move || crash(redis))
        .await
        .unwrap();
    let outage_start = Instant::now();
    let noticed = eventually(Duration::from_secs(20), || async {
        probes(&client, &stack).await == [503, 503, 503]
    })
    .await;
    assert!(noticed, "readyz: {:?}", probes(&client, &stack).await);
    // The outage lasts until pushes and checks have both been refused a few times (checks
    // first drain the checker's 500 ms cache).
    let refused = eventually(Duration::from_secs(20), || async {
        let pushes = log
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.started >= outage_start && a.status == 503)
            .count();
        let checks = check_log
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, s)| *t >= outage_start && *s == 503)
            .count();
        pushes >= 20 && checks >= 5
    })
    .await;
    assert!(
        refused,
        "pushes or checks were not refused during the outage"
    );
    assert!(stack.exited().is_empty(), "exited: {:?}", stack.exited());
    let outage_end = Instant::now();
    let mut redis = redis;
    let redis = tokio::task::spawn_blocking(move || {
        redis.restart();
        redis
    })
    .await
    .unwrap();
    let restarted = Instant::now();

    // Recovery without a restart of any service.
    let ready = eventually(Duration::from_secs(30), || async {
        probes(&client, &stack).await == [200, 200, 200]
    })
    .await;
    assert!(
        ready,
        "readyz after restart: {:?}",
        probes(&client, &stack).await
    );
    let resumed = eventually(Duration::from_secs(30), || async {
        acknowledged(&log, Some(restarted)).len() >= 200
    })
    .await;
    assert!(
        resumed,
        "pushes did not succeed again after Redis came back"
    );
    stop.store(true, Ordering::SeqCst);
    for task in ingest {
        task.await.unwrap();
    }
    checks.await.unwrap();
    let check_statuses: Vec<u16> = check_log.lock().unwrap().iter().map(|(_, s)| *s).collect();
    assert!(stack.exited().is_empty(), "exited: {:?}", stack.exited());

    // Every push attempt got 200 or 503 (never a 500, never no answer), and none that ran
    // wholly inside the outage was acknowledged.
    let attempts = std::mem::take(&mut *log.lock().unwrap());
    for a in &attempts {
        assert!(
            a.status == 200 || a.status == 503,
            "push answered {}: {}",
            a.status,
            a.body
        );
        if a.status == 200 {
            let stored =
                a.body["accepted"].as_u64().unwrap() + a.body["duplicates"].as_u64().unwrap();
            assert_eq!(stored, BATCH, "{}", a.body);
        } else {
            assert_eq!(a.body["error"]["code"], "REDIS_UNAVAILABLE", "{}", a.body);
        }
        if a.started >= outage_start && a.ended <= outage_end {
            assert_eq!(a.status, 503, "a push during the outage was acknowledged");
        }
    }
    let during = attempts
        .iter()
        .filter(|a| a.started >= outage_start && a.ended <= outage_end)
        .count();
    assert!(during >= 20, "only {during} pushes fell inside the outage");
    assert!(
        check_statuses.iter().all(|s| *s == 200 || *s == 503),
        "check statuses: {:?}",
        check_statuses.iter().collect::<HashSet<_>>()
    );

    // Every acknowledged trace is in Redis: its dedup marker and its sample. (A fresh store:
    // the first command on a pooled connection that predates the crash fails once.)
    let store = Store::connect(&crate::checker_config(&url, &prefix).common.redis).unwrap();
    let acked: Vec<Sent> = attempts
        .iter()
        .filter(|a| a.status == 200)
        .flat_map(|a| a.traces.clone())
        .collect();
    let before = attempts
        .iter()
        .filter(|a| a.status == 200 && a.ended <= outage_start)
        .count();
    assert!(
        before > 0 && acked.len() > 400,
        "{} acknowledged",
        acked.len()
    );
    let seen_keys: Vec<String> = acked
        .iter()
        .map(|t| store.keys().seen(&TraceId::parse(&t.id).unwrap()))
        .collect();
    for chunk in seen_keys.chunks(500) {
        let mut args = vec!["EXISTS"];
        args.extend(chunk.iter().map(String::as_str));
        let n: usize = raw_command(redis.addr(), &args).unwrap().parse().unwrap();
        assert_eq!(
            n,
            chunk.len(),
            "a seen: marker of an acknowledged trace is missing"
        );
    }
    let mut windows = Vec::new();
    for k in &keys {
        let window = store.read_window(k).await.unwrap();
        let micros: HashSet<u64> = window.iter().map(|d| (d * 1000.0).round() as u64).collect();
        assert_eq!(
            micros.len(),
            window.len(),
            "a sample was stored twice in {k}"
        );
        windows.push((window.len(), micros));
    }
    for t in &acked {
        assert!(
            windows[t.key].1.contains(&(t.duration_ms * 1000)),
            "acknowledged trace {} ({} ms) is not in the window of {}",
            t.id,
            t.duration_ms,
            keys[t.key]
        );
    }

    // Baselines catch up: the recomputer drains everything the outage left dirty.
    let caught_up = eventually(Duration::from_secs(30), || async {
        let Ok(baselines) = store.baselines(&keys).await else {
            return false;
        };
        store.dirty_len().await.is_ok_and(|n| n == 0)
            && baselines
                .iter()
                .zip(&windows)
                .all(|(b, (len, _))| b.is_some_and(|b| b.sample_count == *len as u64))
    })
    .await;
    assert!(
        caught_up,
        "baselines {:?} vs windows {:?}",
        store.baselines(&keys).await,
        windows.iter().map(|w| w.0).collect::<Vec<_>>()
    );
    // And the checker serves them (its cache holds an entry for at most 500 ms).
    let served = eventually(Duration::from_secs(10), || async {
        let (service, endpoint) = ENDPOINTS[0];
        let r = client
            .post(stack.checker.url("/v1/anomaly/check"))
            .json(
                &json!({"rootServiceName": service, "rootTraceName": endpoint,
                          "startTimeUnixNano": T0_NANOS.to_string(), "durationMs": 5e7}),
            )
            .send()
            .await;
        let Ok(r) = r else { return false };
        let v: Value = r.json().await.unwrap_or(Value::Null);
        v["status"] == "ANOMALY" && v["baseline"]["sampleCount"] == windows[0].0 as u64
    })
    .await;
    assert!(served, "the checker does not serve the caught-up baseline");

    stack.stop().await;
    assert_eq!(panics(), 0, "something panicked");
    drop(redis);
}
