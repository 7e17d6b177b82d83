//! The ingester binary SIGKILLed while batches are in flight: every trace it acknowledged is in
//! Redis afterwards, and retrying the unanswered batches against a restarted ingester stores
//! each trace exactly once.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anomaly_core::{BaselineKey, DayType, TraceId};
use anomaly_testkit::{RedisServer, eventually, free_port, raw_command};
use serde_json::{Value, json};

use crate::{T0, nanos};

const ENDPOINTS: [&str; 4] = ["GET /a", "GET /b", "POST /c", "PUT /d"];
const BATCH: u64 = 400;

struct Binary {
    child: Child,
    base: String,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(redis: &str, prefix: &str) -> Binary {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_ingester"))
        .env("ANOMALY_REDIS__URL", redis)
        .env("ANOMALY_REDIS__KEY_PREFIX", prefix)
        .env("ANOMALY_INGESTER__LISTEN", format!("127.0.0.1:{port}"))
        .env("ANOMALY_INGESTER__OTLP__GRPC_LISTEN", "")
        .env("ANOMALY_STATS__WINDOW_SIZE", "100000")
        .env("ANOMALY_TELEMETRY__LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the ingester binary");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let ready = eventually(Duration::from_secs(30), || async {
        client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(ready, "the ingester binary did not become ready");
    Binary { child, base }
}

fn batch(first: u64) -> Vec<u64> {
    (first..first + BATCH).collect()
}

fn body(seqs: &[u64]) -> Value {
    json!({"traces": seqs.iter().map(|&n| json!({
        "traceID": format!("{n:x}"),
        "rootServiceName": "killed",
        "rootTraceName": ENDPOINTS[(n % 4) as usize],
        "startTimeUnixNano": nanos(T0, n % 1000).to_string(),
        "durationMs": n,
    })).collect::<Vec<_>>()})
}

/// Sends `seqs` once; `Some(report)` when the ingester answered 200.
async fn push(client: &reqwest::Client, base: &str, seqs: &[u64]) -> Option<Value> {
    let r = client
        .post(format!("{base}/v1/traces/ingest"))
        .json(&body(seqs))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    r.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_batch_loses_no_acknowledged_trace() {
    let redis = RedisServer::start_ephemeral();
    let config = crate::config(&redis.url(), "ingester-sigkill", "");
    let prefix = config.common.redis.key_prefix.clone();
    let first = start(&redis.url(), &prefix).await;
    let base = first.base.clone();

    // Four clients push distinct batches back to back until the kill.
    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    let unanswered = Arc::new(Mutex::new(Vec::<Vec<u64>>::new()));
    let killed = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4u64)
        .map(|c| {
            let (acked, unanswered, killed, base) = (
                acked.clone(),
                unanswered.clone(),
                killed.clone(),
                base.clone(),
            );
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut next = 1 + c * 10_000_000;
                while !killed.load(Ordering::SeqCst) {
                    let seqs = batch(next);
                    next += BATCH;
                    match push(&client, &base, &seqs).await {
                        Some(report) => {
                            assert_eq!(report["accepted"], BATCH, "{report}");
                            acked.lock().unwrap().extend(seqs);
                        }
                        None => {
                            unanswered.lock().unwrap().push(seqs);
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    let progressed = eventually(Duration::from_secs(30), || async {
        acked.lock().unwrap().len() >= 20 * BATCH as usize
    })
    .await;
    assert!(progressed, "the pushes did not get going");
    let mut first = first;
    first.child.kill().expect("SIGKILL the ingester");
    let _ = first.child.wait();
    killed.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    let acked_before: Vec<u64> = acked.lock().unwrap().clone();
    let unanswered: Vec<Vec<u64>> = unanswered.lock().unwrap().clone();
    assert!(
        !unanswered.is_empty(),
        "the kill must land while a batch is in flight for this test to mean anything"
    );

    // Every acknowledged trace is in Redis: its seen: marker and its sample.
    let store = anomaly_store::Store::connect(&config.common.redis).unwrap();
    let windows = || async {
        let mut all = Vec::new();
        for e in ENDPOINTS {
            let k = BaselineKey::new("killed", e, 14, DayType::Weekday).unwrap();
            all.extend(store.read_window(&k).await.unwrap());
        }
        all.iter().map(|d| d.round() as u64).collect::<Vec<u64>>()
    };
    let stored_after_kill: HashSet<u64> = windows().await.into_iter().collect();
    for n in &acked_before {
        assert!(
            stored_after_kill.contains(n),
            "acknowledged trace {n:x} is not in its window"
        );
    }
    let seen: Vec<String> = acked_before
        .iter()
        .map(|n| {
            store
                .keys()
                .seen(&TraceId::parse(&format!("{n:x}")).unwrap())
        })
        .collect();
    for chunk in seen.chunks(500) {
        let mut args = vec!["EXISTS"];
        args.extend(chunk.iter().map(String::as_str));
        let n: usize = raw_command(redis.addr(), &args).unwrap().parse().unwrap();
        assert_eq!(
            n,
            chunk.len(),
            "a seen: marker of an acknowledged trace is missing"
        );
    }

    // A restarted ingester takes the unanswered batches again: whatever part of them the
    // killed process stored counts as duplicates, the rest is accepted, nothing twice.
    let second = start(&redis.url(), &prefix).await;
    let client = reqwest::Client::new();
    let mut duplicates = 0;
    for seqs in &unanswered {
        let report = push(&client, &second.base, seqs)
            .await
            .expect("the retry is acknowledged");
        let (a, d) = (
            report["accepted"].as_u64().unwrap(),
            report["duplicates"].as_u64().unwrap(),
        );
        assert_eq!(a + d, BATCH, "{report}");
        duplicates += d;
    }
    let stored = windows().await;
    let distinct: HashSet<u64> = stored.iter().copied().collect();
    assert_eq!(stored.len(), distinct.len(), "a trace was stored twice");
    let sent = acked_before.len() + unanswered.len() * BATCH as usize;
    assert_eq!(stored.len(), sent, "every trace is stored exactly once");
    eprintln!(
        "{} traces acknowledged before the kill, {} batches unanswered, {duplicates} of their \
         traces had been stored before the kill",
        acked_before.len(),
        unanswered.len()
    );
}
