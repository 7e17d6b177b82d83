//! `anomaly-bench soak`: a bounded run at a steady load through all three release binaries.
//!
//! It starts a `redis-server` and the `checker`, `ingester` and `recomputer` binaries (beside
//! this one), then for `--minutes` pushes batches of new traces and checks durations at fixed
//! rates from an in-process load generator (paced requests, not wrk: every interval is
//! sampled on its own). Every `--sample-seconds` it records the requests, errors, p50 and p99
//! of each kind and the resident memory of each service. It asserts no errors, a bounded p99,
//! and resident memory growth under 10% between the end of the warm-up and the end of the run,
//! and that the recomputer kept up (baselines served, dirty backlog drained). Windows are
//! seeded full first, so the run is a steady state from the start.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anomaly_core::{BaselineKey, DurationMs};
use anomaly_store::{RedisConfig, Store};
use anomaly_testkit::{RedisServer, raw_command};
use serde_json::{Value, json};

use crate::service::Service;
use crate::{Row, key};

/// How long a started service may take to answer `/readyz`.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// What the soak runs.
#[derive(Debug, Clone)]
pub(crate) struct Soak {
    pub(crate) bin_dir: PathBuf,
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
    pub(crate) sample_every: Duration,
    /// Distinct keys the traffic spreads over.
    pub(crate) keys: u32,
    /// Checks per second (single checks).
    pub(crate) checks_per_sec: u32,
    /// Ingest requests per second, each of `ingest_batch` new traces.
    pub(crate) ingests_per_sec: u32,
    pub(crate) ingest_batch: u32,
    /// Highest acceptable p99 of a check and of an ingest request, over every sample.
    pub(crate) max_check_p99: Duration,
    pub(crate) max_ingest_p99: Duration,
}

/// Latencies (ms) and errors of one kind of request since the last sample.
#[derive(Debug, Default)]
struct Recorder {
    latencies: Mutex<Vec<f64>>,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Recorder {
    fn ok(&self, started: Instant) {
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        self.latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(ms);
    }

    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(what);
    }

    /// (requests, errors, p50, p99) since the last call.
    fn take(&self) -> (usize, u64, f64, f64) {
        let mut l = std::mem::take(&mut *self.latencies.lock().unwrap_or_else(|e| e.into_inner()));
        let errors = self.errors.swap(0, Ordering::Relaxed);
        l.sort_by(f64::total_cmp);
        let q = |p: f64| {
            if l.is_empty() {
                0.0
            } else {
                l[((l.len() - 1) as f64 * p).round() as usize]
            }
        };
        (l.len() + errors as usize, errors, q(0.50), q(0.99))
    }
}

/// One sample of the run.
#[derive(Debug, Clone)]
struct Sample {
    at: Duration,
    checks: usize,
    check_errors: u64,
    check_p50: f64,
    check_p99: f64,
    ingests: usize,
    ingest_errors: u64,
    ingest_p99: f64,
    /// checker, ingester, recomputer.
    rss: [u64; 3],
    redis_memory: u64,
    backlog: u64,
}

fn nanos_ago(seconds: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (now.as_nanos() - u128::from(seconds) * 1_000_000_000).to_string()
}

/// Sends `body()` to `url` `per_sec` times a second (spread over `lanes` paced loops) until
/// `stop`, recording latency or the error of each.
fn paced(
    url: String,
    per_sec: u32,
    lanes: u32,
    stop: Arc<AtomicBool>,
    recorder: Arc<Recorder>,
    body: Arc<dyn Fn(u64) -> Value + Send + Sync>,
    check_answer: fn(&Value) -> bool,
) -> Vec<tokio::task::JoinHandle<()>> {
    let lanes = lanes.clamp(1, per_sec.max(1));
    let period = Duration::from_secs_f64(f64::from(lanes) / f64::from(per_sec.max(1)));
    (0..lanes)
        .map(|lane| {
            let (url, stop, recorder, body) =
                (url.clone(), stop.clone(), recorder.clone(), body.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut tick = tokio::time::interval(period);
                // A slow answer must not be followed by a burst: the load stays steady.
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut n = u64::from(lane);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    n += u64::from(lanes);
                    let started = Instant::now();
                    let reply = client
                        .post(&url)
                        .json(&body(n))
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await;
                    match reply {
                        Ok(r) if r.status().is_success() => match r.json::<Value>().await {
                            Ok(v) if check_answer(&v) => recorder.ok(started),
                            Ok(v) => recorder.error(format!("unexpected answer {v}")),
                            Err(e) => recorder.error(format!("unreadable answer: {e}")),
                        },
                        Ok(r) => {
                            let status = r.status();
                            let text = r.text().await.unwrap_or_default();
                            recorder.error(format!("{status}: {text}"));
                        }
                        Err(e) => recorder.error(format!("no answer: {e}")),
                    }
                }
            })
        })
        .collect()
}

/// Fills the window of every key the traffic will hit to `window_size`, in every hour bucket
/// the run reaches (traffic starts a minute in the past; a run across the hour moves to the next
/// bucket's keys), so the soak measures a steady state: with half-empty windows the
/// recomputer's working set would grow all run long with the windows, which is not a leak.
async fn seed_full_windows(store: &Store, keys: u32, duration: Duration) -> anyhow::Result<()> {
    let time = anomaly_core::TimeConfig::default();
    let bucketer = anomaly_core::Bucketer::new(&time);
    let now = chrono::Utc::now();
    let first = now - chrono::Duration::seconds(60);
    // Warm-up and the final checks take a few minutes beyond the run itself.
    let last = now + chrono::Duration::from_std(duration)? + chrono::Duration::minutes(5);
    // Every 10 minutes from `first`, and `last` itself: no hour is skipped.
    let steps = (last - first).num_minutes() / 10;
    let mut buckets = Vec::new();
    for at in (0..=steps)
        .map(|n| first + chrono::Duration::minutes(10 * n))
        .chain([last])
    {
        let b = bucketer.bucket(at);
        if !buckets.contains(&(b.hour, b.day_type)) {
            buckets.push((b.hour, b.day_type));
        }
    }
    let window = anomaly_core::StatsConfig::default().window_size;
    eprintln!(
        "seeding {keys} windows of {window} samples in {} hour bucket(s)",
        buckets.len()
    );
    let all: Vec<(u32, u8, anomaly_core::DayType)> = buckets
        .iter()
        .flat_map(|&(hour, day)| (0..keys).map(move |i| (i, hour, day)))
        .collect();
    for chunk in all.chunks(50) {
        let mut windows = Vec::with_capacity(chunk.len());
        for &(i, hour, day_type) in chunk {
            let k = key(i);
            let k = BaselineKey::new(k.service(), k.endpoint(), hour, day_type)?;
            let samples = (0..window as u64)
                .map(|j| DurationMs::new((40 + (j * 7919 + u64::from(i)) % 160) as f64))
                .collect::<Result<Vec<_>, _>>()?;
            windows.push((k, samples));
        }
        store
            .replace_windows(&windows, Duration::from_secs(86_400))
            .await?;
    }
    Ok(())
}

fn info_field(server: &RedisServer, section: &str, field: &str) -> u64 {
    raw_command(server.addr(), &["INFO", section])
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix(&format!("{field}:")))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

pub(crate) async fn run(soak: &Soak) -> anyhow::Result<Vec<Row>> {
    let server = RedisServer::start_ephemeral();
    let work = std::env::temp_dir().join(format!("anomaly-soak-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let env = vec![
        ("ANOMALY_REDIS__URL", server.url()),
        ("ANOMALY_REDIS__KEY_PREFIX", "soak:".to_owned()),
        // Dedup markers would otherwise pile up for 6 h and grow Redis, not the services.
        ("ANOMALY_DEDUP_TTL", "2m".to_owned()),
        ("ANOMALY_RECOMPUTER__INTERVAL", "5s".to_owned()),
        // The load is the push API; OTLP/gRPC's fixed default port could clash with a
        // Collector or another run on this machine.
        ("ANOMALY_INGESTER__OTLP__GRPC_LISTEN", String::new()),
    ];
    // The services' store, for seeding and for watching the dirty backlog.
    let store = Store::connect(&RedisConfig {
        url: server.url(),
        key_prefix: "soak:".into(),
        ..RedisConfig::default()
    })?;
    seed_full_windows(&store, soak.keys, soak.duration).await?;
    let checker = Service::start(
        "checker",
        &soak.bin_dir,
        &env,
        work.join("checker.log"),
        "info",
        READY_WITHIN,
    )
    .await?;
    let ingester = Service::start(
        "ingester",
        &soak.bin_dir,
        &env,
        work.join("ingester.log"),
        "info",
        READY_WITHIN,
    )
    .await?;
    let recomputer = Service::start(
        "recomputer",
        &soak.bin_dir,
        &env,
        work.join("recomputer.log"),
        "info",
        READY_WITHIN,
    )
    .await?;
    let services = [&checker, &ingester, &recomputer];

    let keys: Arc<Vec<(String, String)>> = Arc::new(
        (0..soak.keys)
            .map(key)
            .map(|k| (k.service().to_owned(), k.endpoint().to_owned()))
            .collect(),
    );
    let run_id: u32 = std::process::id();
    let stop = Arc::new(AtomicBool::new(false));
    let checks = Arc::new(Recorder::default());
    let ingests = Arc::new(Recorder::default());
    let batch = soak.ingest_batch;
    let mut tasks = Vec::new();
    {
        let keys = keys.clone();
        tasks.extend(paced(
            format!("{}/v1/traces/ingest", ingester.base),
            soak.ingests_per_sec,
            4,
            stop.clone(),
            ingests.clone(),
            Arc::new(move |n| {
                let traces: Vec<Value> = (0..u64::from(batch))
                    .map(|j| {
                        let seq = n * u64::from(batch) + j;
                        let (s, e) = &keys[(seq % keys.len() as u64) as usize];
                        json!({"traceID": format!("{run_id:08x}{seq:024x}"),
                               "rootServiceName": s, "rootTraceName": e,
                               "startTimeUnixNano": nanos_ago(60),
                               "durationMs": 40 + (seq * 7919) % 160})
                    })
                    .collect();
                json!({ "traces": traces })
            }),
            |v| v["rejected"] == 0 && v["overCardinality"] == 0,
        ));
    }
    {
        let keys = keys.clone();
        tasks.extend(paced(
            format!("{}/v1/anomaly/check", checker.base),
            soak.checks_per_sec,
            16,
            stop.clone(),
            checks.clone(),
            Arc::new(move |n| {
                let (s, e) = &keys[((n * 7919) % keys.len() as u64) as usize];
                json!({"rootServiceName": s, "rootTraceName": e,
                       "startTimeUnixNano": nanos_ago(60), "durationMs": 20 + n % 400})
            }),
            |v| v["status"].is_string(),
        ));
    }

    let started = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    eprintln!(
        "soak: {} s at {} checks/s and {} traces/s over {} keys; a sample every {} s",
        soak.duration.as_secs(),
        soak.checks_per_sec,
        soak.ingests_per_sec * soak.ingest_batch,
        soak.keys,
        soak.sample_every.as_secs()
    );
    eprintln!(
        "   t  checks err  p50 ms  p99 ms | ingests err  p99 ms | RSS checker ingester recomputer | redis  backlog"
    );
    while started.elapsed() < soak.duration {
        tokio::time::sleep(soak.sample_every).await;
        let (c, ce, c50, c99) = checks.take();
        let (i, ie, _, i99) = ingests.take();
        let mut rss = [0; 3];
        for (slot, s) in rss.iter_mut().zip(services) {
            *slot = s.rss()?;
        }
        let sample = Sample {
            at: started.elapsed(),
            checks: c,
            check_errors: ce,
            check_p50: c50,
            check_p99: c99,
            ingests: i,
            ingest_errors: ie,
            ingest_p99: i99,
            rss,
            redis_memory: info_field(&server, "memory", "used_memory"),
            backlog: store.dirty_len().await.unwrap_or(0),
        };
        eprintln!(
            "{:4} {:7} {:3} {:7.2} {:7.2} | {:7} {:3} {:7.1} | {:>11} {:>8} {:>10} | {:>6} {:7}",
            sample.at.as_secs(),
            sample.checks,
            sample.check_errors,
            sample.check_p50,
            sample.check_p99,
            sample.ingests,
            sample.ingest_errors,
            sample.ingest_p99,
            mib(sample.rss[0]),
            mib(sample.rss[1]),
            mib(sample.rss[2]),
            mib(sample.redis_memory),
            sample.backlog,
        );
        samples.push(sample);
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }

    // The recomputer kept up: the backlog drains and checks are served from real baselines.
    let client = reqwest::Client::new();
    let drained = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = store.dirty_len().await?;
            if left == 0 {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let (s, e) = &keys[0];
    let verdict: Value = client
        .post(format!("{}/v1/anomaly/check", checker.base))
        .json(&json!({"rootServiceName": s, "rootTraceName": e,
                      "startTimeUnixNano": nanos_ago(60), "durationMs": 100}))
        .send()
        .await?
        .json()
        .await?;
    let sample_count = verdict["baseline"]["sampleCount"].as_u64().unwrap_or(0);
    let mut all_ready = true;
    for s in services {
        let ok = client
            .get(format!("{}/readyz", s.base))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        all_ready &= ok;
    }
    let warnings: Vec<(&str, usize)> = services
        .iter()
        .map(|s| (s.name, s.warnings().len()))
        .collect();
    let last_errors: Vec<String> = [("check", &checks), ("ingest", &ingests)]
        .iter()
        .filter_map(|(n, r)| {
            r.last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .map(|e| format!("{n}: {e}"))
        })
        .collect();
    if !last_errors.is_empty() {
        eprintln!("last errors: {}", last_errors.join("; "));
    }
    Ok(rows(
        soak,
        &samples,
        drained,
        sample_count,
        all_ready,
        &warnings,
    ))
}

fn rows(
    soak: &Soak,
    samples: &[Sample],
    drained: bool,
    sample_count: u64,
    all_ready: bool,
    warnings: &[(&str, usize)],
) -> Vec<Row> {
    let minutes = soak.duration.as_secs_f64() / 60.0;
    let checks: usize = samples.iter().map(|s| s.checks).sum();
    let ingests: usize = samples.iter().map(|s| s.ingests).sum();
    let errors: u64 = samples
        .iter()
        .map(|s| s.check_errors + s.ingest_errors)
        .sum();
    let worst = |f: fn(&Sample) -> f64| samples.iter().map(f).fold(0.0, f64::max);
    let median = |f: fn(&Sample) -> f64| {
        let mut v: Vec<f64> = samples.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let check_p99 = worst(|s| s.check_p99);
    let ingest_p99 = worst(|s| s.ingest_p99);
    // Memory: the highest resident size in the minute after the warm-up against the highest in
    // the last minute. Peaks, because a single sample lands anywhere in the recomputer's drain
    // cycle (its working set is a batch of windows while it drains, nearly nothing between).
    let per_minute = (60 / soak.sample_every.as_secs().max(1)).max(1) as usize;
    let start = samples
        .iter()
        .position(|s| s.at >= soak.warmup)
        .unwrap_or(0);
    let first_minute = &samples[start..(start + per_minute).min(samples.len())];
    let last_minute = &samples[samples.len().saturating_sub(per_minute)..];
    let peak = |window: &[Sample], i: usize| window.iter().map(|s| s.rss[i]).max().unwrap_or(0);
    let after_warmup = samples.get(start);
    let last = samples.last();
    let mut rows = vec![
        Row::new(
            format!("soak: requests over {minutes:.0} min (steady load)"),
            format!(
                "{checks} checks ({:.0}/s), {ingests} ingest requests ({:.0} traces/s)",
                checks as f64 / soak.duration.as_secs_f64(),
                ingests as f64 * f64::from(soak.ingest_batch) / soak.duration.as_secs_f64()
            ),
            format!(
                "{} checks/s, {} traces/s",
                soak.checks_per_sec,
                soak.ingests_per_sec * soak.ingest_batch
            ),
            None,
        ),
        Row::new(
            "soak: errors (non-2xx, no answer, or a rejected trace)",
            errors.to_string(),
            "0",
            Some(errors == 0 && checks > 0 && ingests > 0),
        ),
        Row::new(
            format!(
                "soak: check latency (median of {} s samples; worst sample)",
                soak.sample_every.as_secs()
            ),
            format!(
                "p50 {:.2} ms, p99 {:.2} ms; worst p99 {check_p99:.2} ms",
                median(|s| s.check_p50),
                median(|s| s.check_p99)
            ),
            format!("every p99 <= {} ms", soak.max_check_p99.as_millis()),
            Some(check_p99 <= soak.max_check_p99.as_secs_f64() * 1000.0),
        ),
        Row::new(
            format!(
                "soak: ingest request latency ({} traces a request)",
                soak.ingest_batch
            ),
            format!(
                "median p99 {:.1} ms; worst p99 {ingest_p99:.1} ms",
                median(|s| s.ingest_p99)
            ),
            format!("every p99 <= {} ms", soak.max_ingest_p99.as_millis()),
            Some(ingest_p99 <= soak.max_ingest_p99.as_secs_f64() * 1000.0),
        ),
    ];
    for (i, name) in ["checker", "ingester", "recomputer"].iter().enumerate() {
        if samples.is_empty() {
            continue;
        }
        let (a, b) = (peak(first_minute, i), peak(last_minute, i));
        let growth = b as f64 / a.max(1) as f64 - 1.0;
        let lowest = samples[start..].iter().map(|s| s.rss[i]).min().unwrap_or(0);
        rows.push(Row::new(
            format!(
                "soak: {name} resident memory (peak in the minute after the {} s warm-up; peak in the last minute; lowest sample after warm-up)",
                soak.warmup.as_secs()
            ),
            format!(
                "{}; {} ({:+.1}%); {}",
                mib(a),
                mib(b),
                growth * 100.0,
                mib(lowest)
            ),
            "< 10% growth after warm-up",
            Some(growth < 0.10),
        ));
    }
    if let (Some(a), Some(b)) = (after_warmup, last) {
        rows.push(Row::new(
            "soak: Redis used_memory (after warm-up; end)",
            format!("{}; {}", mib(a.redis_memory), mib(b.redis_memory)),
            "",
            None,
        ));
    }
    let max_backlog = samples.iter().map(|s| s.backlog).max().unwrap_or(0);
    rows.push(Row::new(
        "soak: recomputer kept up (largest dirty backlog; drained at the end; the baseline of a check at the end)",
        format!(
            "{max_backlog} keys; {}; sampleCount {sample_count}",
            if drained { "drained" } else { "NOT drained" }
        ),
        "drained, a full window's baseline",
        Some(drained && sample_count == u64::from(anomaly_core::StatsConfig::default().window_size)),
    ));
    let warned: usize = warnings.iter().map(|(_, n)| n).sum();
    rows.push(Row::new(
        "soak: all three ready at the end; WARN/ERROR log lines",
        format!(
            "{}; {}",
            if all_ready { "ready" } else { "NOT ready" },
            warnings
                .iter()
                .map(|(n, c)| format!("{n} {c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        "ready, 0 warnings",
        Some(all_ready && warned == 0),
    ));
    rows
}
