//! The ingest cost of judging on ingest (`ingester.detect.enabled`): push API ingest
//! (`POST /v1/traces/ingest`) through the release ingester with detection on, then off, then on
//! and off again, each run on a fresh Redis whose every key has a baseline, so that each judged
//! trace finds one (a cache miss reads it from Redis, then the detector's cache answers) and one
//! trace in a hundred is an anomaly written to the feed and the counters.
//!
//! The requests are built by this process (like the push run's wrk script builds them: batches
//! of distinct traces spread over the keys, 20-199 ms, trace IDs unique over the run), the same
//! generator for both settings, so the ratio of the two is the cost of detection. The runs
//! alternate, and each setting's figure is the mean of its runs, because this machine's speed
//! drifts over a minute.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anomaly_core::{Baseline, BaselineKey};
use anomaly_testkit::RedisServer;
use anyhow::{Context as _, ensure};

use crate::Row;
use crate::cpu::{self, Meter, Source, Usage};
use crate::http::{INGEST_CONNECTIONS, READY_WITHIN, Setup, bench_store, count_keys, start_nanos};
use crate::service::Service;

/// Every this-many-th trace lasts 900 ms against a 400 ms threshold: an anomaly.
const ANOMALY_EVERY: u64 = 100;

/// The lowest acceptable ratio of traces/s with detection on to off (issue 17).
const MIN_RATIO: f64 = 0.85;

/// The seeded baseline of every key: threshold max(200 * 2, 100 + 3 * 5) = 400 ms.
fn seeded_baseline() -> Baseline {
    Baseline {
        p50: 100.0,
        p95: 200.0,
        mad: 5.0,
        sample_count: 1000,
        updated_at: chrono::Utc::now().timestamp_millis(),
    }
}

/// `service`, `endpoint` and start of each key, JSON-escaped, ready to paste into a trace.
fn key_fields(keys: &[BaselineKey]) -> Vec<String> {
    keys.iter()
        .map(|k| {
            format!(
                "\"rootServiceName\":{},\"rootTraceName\":{},\"startTimeUnixNano\":\"{}\"",
                serde_json::Value::from(k.service()),
                serde_json::Value::from(k.endpoint()),
                start_nanos(k.hour(), k.day_type())
            )
        })
        .collect()
}

/// The body of request `n`: `batch` traces with IDs unique to `n`, each for the key
/// `(seq * 7919) % keys` as the wrk script picks them, every [`ANOMALY_EVERY`]-th one slow.
fn body(fields: &[String], batch: u32, n: u64) -> String {
    let mut out = String::with_capacity(batch as usize * 160 + 16);
    out.push_str("{\"traces\":[");
    for j in 0..u64::from(batch) {
        let seq = n * u64::from(batch) + j;
        if j > 0 {
            out.push(',');
        }
        let duration = if seq.is_multiple_of(ANOMALY_EVERY) {
            900
        } else {
            20 + seq % 180
        };
        let key = &fields[(seq as usize).wrapping_mul(7919) % fields.len()];
        let _ = write!(
            out,
            "{{\"traceID\":\"6465{seq:028x}\",{key},\"durationMs\":{duration}}}"
        );
    }
    out.push_str("]}");
    out
}

/// What one run measured.
struct Run {
    traces_per_sec: f64,
    p99_ms: f64,
    cpu: Usage,
    /// `anomaly_judged_total` and `anomaly_detected_total` summed over their labels.
    judged: f64,
    detected: f64,
}

/// The sum of every sample of `metric` (a counter's `_total`) in Prometheus text.
fn metric_sum(text: &str, metric: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with(['{', ' ']))
        .filter_map(|l| {
            // An OpenMetrics exemplar follows the value after ` # `.
            let sample = l.split(" # ").next()?;
            sample.rsplit(' ').next()?.parse::<f64>().ok()
        })
        .sum()
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    body: String,
    traces: u32,
) -> anyhow::Result<()> {
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await?;
    let status = response.status();
    let answer: serde_json::Value = response.json().await?;
    ensure!(
        status.is_success() && answer["accepted"].as_u64() == Some(u64::from(traces)),
        "{url} did not accept all {traces} traces: {status} {answer}"
    );
    Ok(())
}

/// One run: a fresh Redis with every key's baseline, the release ingester with detection on or
/// off, `connections` loops of requests for the load's duration; then proves every
/// acknowledged trace is stored, and judged exactly when detection is on.
async fn run_once(setup: &Setup, keys: &[BaselineKey], detect: bool) -> anyhow::Result<Run> {
    let server = RedisServer::start_ephemeral();
    let store = bench_store(&server)?;
    let baseline = seeded_baseline();
    for chunk in keys.chunks(1000) {
        let items: Vec<_> = chunk.iter().map(|k| (k.clone(), baseline)).collect();
        store
            .write_baselines(&items, Duration::from_secs(86_400))
            .await?;
    }
    let work = crate::http::tempdir()?;
    let env = vec![
        ("ANOMALY_REDIS__URL", server.url()),
        ("ANOMALY_REDIS__KEY_PREFIX", "bench:".to_owned()),
        ("ANOMALY_INGESTER__OTLP__GRPC_LISTEN", String::new()),
        ("ANOMALY_INGESTER__DETECT__ENABLED", detect.to_string()),
    ];
    let log = work.join(format!("ingester-detect-{detect}.log"));
    let ingester =
        Service::start("ingester", &setup.bin_dir, &env, log, "warn", READY_WITHIN).await?;
    let url = format!("{}/v1/traces/ingest", ingester.base);
    let connections = setup.load.connections.min(INGEST_CONNECTIONS);
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(connections as usize)
        .build()?;
    let fields = Arc::new(key_fields(keys));
    let batch = setup.ingest_batch.max(1);
    // One request by hand (request 0), so a misconfigured run fails before it measures.
    post(&client, &url, body(&fields, batch, 0), batch)
        .await
        .context("the first ingest request")?;

    eprintln!(
        "push ingest, detection {}, {connections} connections",
        if detect { "on" } else { "off" }
    );
    let counter = Arc::new(AtomicU64::new(1));
    let meter = Meter::start(vec![
        ("ingester", Source::Process(ingester.pid())),
        (
            "redis-server",
            Source::Process(cpu::redis_pid(server.addr())?),
        ),
        ("load generator", Source::This),
    ])?;
    let deadline = Instant::now() + setup.load.duration;
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (client, url, fields, counter) = (
                client.clone(),
                url.clone(),
                Arc::clone(&fields),
                Arc::clone(&counter),
            );
            tokio::spawn(async move {
                let mut in_window = 0u64;
                let mut sent = 0u64;
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let body = body(&fields, batch, n);
                    let started = Instant::now();
                    post(&client, &url, body, batch).await?;
                    let done = Instant::now();
                    sent += 1;
                    if done <= deadline {
                        in_window += 1;
                        latencies.push(done - started);
                    }
                }
                anyhow::Ok((in_window, sent, latencies))
            })
        })
        .collect();
    let mut in_window = 0u64;
    let mut requests = 1u64;
    let mut latencies = Vec::new();
    for task in tasks {
        let (w, s, l) = task.await??;
        in_window += w;
        requests += s;
        latencies.extend(l);
    }
    let cpu = meter.stop()?;
    let metrics = client
        .get(format!("{}/metrics", ingester.base))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    drop(ingester);

    let traces = requests * u64::from(batch);
    let seen = count_keys(&server, &store.keys().seen_pattern())?;
    ensure!(
        seen == traces,
        "{traces} traces were acknowledged but {seen} are in Redis"
    );
    let judged = metric_sum(&metrics, "anomaly_judged_total");
    let detected = metric_sum(&metrics, "anomaly_detected_total");
    if detect {
        ensure!(
            judged == traces as f64,
            "detection is on but {judged} of {traces} traces were judged"
        );
        let expected = traces.div_ceil(ANOMALY_EVERY) as f64;
        ensure!(
            (detected - expected).abs() <= 1.0,
            "{detected} anomalies detected, expected {expected} (one trace in {ANOMALY_EVERY})"
        );
    } else {
        ensure!(
            judged == 0.0 && detected == 0.0,
            "detection is off but {judged} traces were judged"
        );
    }
    latencies.sort();
    let p99_ms = latencies
        .get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1)))
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    Ok(Run {
        traces_per_sec: (in_window * u64::from(batch)) as f64 / setup.load.duration.as_secs_f64(),
        p99_ms,
        cpu,
        judged,
        detected,
    })
}

/// Push ingest with detection on and off, alternating, `rounds` times each; the rows of the
/// figures table.
pub(crate) async fn run(setup: &Setup, rounds: u32) -> anyhow::Result<Vec<Row>> {
    let keys: Vec<BaselineKey> = (0..setup.keys).map(crate::key).collect();
    let mut on = Vec::new();
    let mut off = Vec::new();
    for _ in 0..rounds.max(1) {
        on.push(run_once(setup, &keys, true).await?);
        off.push(run_once(setup, &keys, false).await?);
    }
    Ok(rows(setup, &on, &off))
}

fn mean(runs: &[Run]) -> f64 {
    runs.iter().map(|r| r.traces_per_sec).sum::<f64>() / runs.len().max(1) as f64
}

fn rows(setup: &Setup, on: &[Run], off: &[Run]) -> Vec<Row> {
    let figures = |runs: &[Run]| {
        let each: Vec<String> = runs
            .iter()
            .map(|r| format!("{:.0} (p99 {:.0} ms)", r.traces_per_sec, r.p99_ms))
            .collect();
        format!("{:.0} traces/s (runs: {})", mean(runs), each.join(", "))
    };
    let cpu = |runs: &[Run]| {
        runs.iter()
            .map(|r| r.cpu.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    };
    // Each round's on and off ran back to back: their ratio is the one the machine's drift
    // disturbs least.
    let ratios: Vec<f64> = on
        .iter()
        .zip(off)
        .map(|(a, b)| a.traces_per_sec / b.traces_per_sec)
        .collect();
    let ratio = ratios.iter().sum::<f64>() / ratios.len().max(1) as f64;
    let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}x")).collect();
    let judged: f64 = on.iter().map(|r| r.judged).sum();
    let detected: f64 = on.iter().map(|r| r.detected).sum();
    vec![
        Row::new(
            format!(
                "ingest with detection on (`ingester.detect.enabled`, the default), `POST /v1/traces/ingest` ({} traces a request, {} keys each with a baseline, 1 trace in {ANOMALY_EVERY} an anomaly; {} connections, fresh Redis each run; {judged:.0} traces judged, {detected:.0} anomalies fed)",
                setup.ingest_batch,
                setup.keys,
                setup.load.connections.min(INGEST_CONNECTIONS)
            ),
            figures(on),
            "",
            None,
        ),
        Row::new(
            "the same, detection off (`ANOMALY_INGESTER__DETECT__ENABLED=false`), runs alternating with the above",
            figures(off),
            "",
            None,
        ),
        Row::new(
            "push ingest traces/s with detection on : off, same run (the ingest cost of judging on ingest; mean of each round's ratio)",
            format!("{ratio:.2}x (rounds: {})", each.join(", ")),
            format!(">= {MIN_RATIO}x"),
            Some(ratio >= MIN_RATIO),
        ),
        Row::new(
            "CPU during push ingest, % of one core, detection on; off",
            format!("on: {}. off: {}", cpu(on), cpu(off)),
            "which process is the bottleneck",
            None,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_hold_distinct_traces_with_one_anomaly_in_a_hundred() {
        let keys: Vec<BaselineKey> = (0..30).map(crate::key).collect();
        let fields = key_fields(&keys);
        let a: serde_json::Value = serde_json::from_str(&body(&fields, 200, 3)).unwrap();
        let b: serde_json::Value = serde_json::from_str(&body(&fields, 200, 4)).unwrap();
        let traces = a["traces"].as_array().unwrap();
        assert_eq!(traces.len(), 200);
        let mut ids: Vec<&str> = traces
            .iter()
            .chain(b["traces"].as_array().unwrap())
            .map(|t| t["traceID"].as_str().unwrap())
            .collect();
        assert!(ids.iter().all(|id| id.len() == 32));
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 400, "trace IDs are unique across requests");
        let slow = traces
            .iter()
            .filter(|t| t["durationMs"].as_u64().unwrap() > 400)
            .count();
        assert_eq!(slow, 2);
        let first = &traces[0];
        let key = &keys[(600 * 7919) % keys.len()];
        assert_eq!(first["rootServiceName"], key.service());
        assert_eq!(first["rootTraceName"], key.endpoint());
    }

    #[test]
    fn metric_sums_add_every_labelled_sample() {
        let text = "# TYPE anomaly_detected counter\n\
            anomaly_detected_total{service=\"a\",endpoint=\"x\"} 3 # {trace_id=\"ab\"} 1.0\n\
            anomaly_detected_total{service=\"b\",endpoint=\"y\"} 4\n\
            anomaly_detected_totally 100\n\
            anomaly_judged_total{service=\"a\",status=\"normal\"} 10\n";
        assert_eq!(metric_sum(text, "anomaly_detected_total"), 7.0);
        assert_eq!(metric_sum(text, "anomaly_judged_total"), 10.0);
        assert_eq!(metric_sum(text, "anomaly_missing_total"), 0.0);
    }
}
