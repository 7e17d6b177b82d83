//! The HTTP hot paths, driven by `wrk` against the release `checker` and `ingester` binaries
//! (started as child processes beside this one, on a Redis this harness seeds):
//!
//! - check: `/healthz` of the same checker (the HTTP ceiling), then `POST /v1/anomaly/check`
//!   spread over every seeded key with the baseline cache on, then with it off (one Redis round
//!   trip per check), then `POST /v1/anomaly/check/batch`;
//! - ingest: `POST /v1/traces/ingest` with batches of distinct traces spread over the keys,
//!   then OTLP/HTTP `POST /v1/traces` with as many traces a request, each a root span and
//!   children, on a fresh Redis and ingester ([`crate::otlp`]); the CPU each process used in
//!   both runs; `redis-benchmark -P 16 -t lpush` on the push run's Redis;
//! - resident memory of both services before and after their load.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anomaly_core::{Baseline, BaselineKey, DayType};
use anomaly_store::{RedisConfig, Store};
use anomaly_testkit::{RedisServer, raw_command};
use anyhow::{Context as _, bail, ensure};
use chrono::{Datelike as _, Days, TimeZone as _, Weekday};

use crate::cpu::{self, Meter, Source};
use crate::service::Service;
use crate::{Row, key, otlp};

/// How long a started service may take to answer `/readyz`.
pub(crate) const READY_WITHIN: Duration = Duration::from_secs(20);

/// Connections of the ingest run (batches, not single requests).
pub(crate) const INGEST_CONNECTIONS: u32 = 8;

/// Load settings shared by every wrk run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    pub(crate) threads: u32,
    pub(crate) connections: u32,
    pub(crate) duration: Duration,
}

/// What one wrk run measured.
#[derive(Debug, Clone, Copy)]
struct WrkResult {
    requests_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// An instant in `hour` local time (Asia/Taipei, the default zone) on a recent weekday or
/// weekend day in the past, so every key of the seeded set is hit exactly.
pub(crate) fn start_nanos(hour: u8, day: DayType) -> i128 {
    let zone = chrono_tz::Asia::Taipei;
    let today = chrono::Utc::now().with_timezone(&zone).date_naive();
    // Look back at least a week, so no instant is in the future.
    let mut date = today - Days::new(7);
    let wanted = |d: chrono::NaiveDate| {
        let weekend = matches!(d.weekday(), Weekday::Sat | Weekday::Sun);
        weekend == (day == DayType::Weekend)
    };
    while !wanted(date) {
        date = date - Days::new(1);
    }
    let local = date
        .and_hms_opt(u32::from(hour), 30, 0)
        .expect("valid time");
    let instant = zone
        .from_local_datetime(&local)
        .single()
        .expect("Taipei has no DST");
    i128::from(instant.timestamp()) * 1_000_000_000
}

fn check_body(k: &BaselineKey, duration_ms: f64) -> String {
    serde_json::json!({
        "rootServiceName": k.service(),
        "rootTraceName": k.endpoint(),
        "startTimeUnixNano": start_nanos(k.hour(), k.day_type()).to_string(),
        "durationMs": duration_ms,
    })
    .to_string()
}

/// A wrk script that cycles through pre-formatted requests read from `requests_file` (one JSON
/// body per line), each thread from its own offset.
fn cycling_script(path: &str) -> String {
    format!(
        r#"
local bodies = {{}}
local requests = {{}}
local i = 0
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end
function init(args)
  for line in io.lines("{{bodies}}") do bodies[#bodies + 1] = line end
  local headers = {{ ["Content-Type"] = "application/json" }}
  for n, body in ipairs(bodies) do
    requests[n] = wrk.format("POST", "{path}", headers, body)
  end
  i = ((tid or 1) * 7919) % #requests
end
function request()
  i = i % #requests + 1
  return requests[i]
end
"#
    )
}

/// A wrk script that builds each ingest body from the keys file (`service\tendpoint\tnanos` per
/// line), with trace IDs unique over the whole run.
fn ingest_script(batch: u32) -> String {
    format!(
        r#"
local keys = {{}}
local n = 0
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end
function init(args)
  for line in io.lines("{{keys}}") do
    local s, e, t = line:match("([^\t]*)\t([^\t]*)\t([^\t]*)")
    keys[#keys + 1] = string.format('"rootServiceName":"%s","rootTraceName":"%s","startTimeUnixNano":"%s"', s, e, t)
  end
  wrk.method = "POST"
  wrk.path = "/v1/traces/ingest"
  wrk.headers["Content-Type"] = "application/json"
end
function request()
  n = n + 1
  local parts = {{}}
  for j = 1, {batch} do
    local seq = n * {batch} + j
    local k = keys[(seq * 7919 + tid) % #keys + 1]
    parts[j] = string.format('{{"traceID":"%08x%024x",%s,"durationMs":%d}}', tid, seq, k, 20 + seq % 180)
  end
  return wrk.format(nil, nil, nil, '{{"traces":[' .. table.concat(parts, ",") .. ']}}')
end
"#
    )
}

async fn wrk(
    load: Load,
    url: &str,
    script: Option<&Path>,
    timeout_label: &str,
) -> anyhow::Result<WrkResult> {
    let mut command = tokio::process::Command::new("wrk");
    command
        .arg(format!("-t{}", load.threads))
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{}s", load.duration.as_secs()))
        .arg("--latency")
        .arg("--timeout")
        .arg("5s");
    if let Some(script) = script {
        command.arg("-s").arg(script);
    }
    let output = command
        .arg(url)
        .output()
        .await
        .context("running wrk (install it: apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    ensure!(
        output.status.success(),
        "wrk failed for {timeout_label}: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse_wrk(&text).with_context(|| format!("{timeout_label}: {text}"))
}

fn parse_wrk(text: &str) -> anyhow::Result<WrkResult> {
    if let Some(line) = text
        .lines()
        .find(|l| l.contains("Non-2xx or 3xx responses"))
    {
        bail!("some requests failed: {}", line.trim());
    }
    if let Some(line) = text.lines().find(|l| l.contains("Socket errors")) {
        // Connect, read and write errors mean the run is not a clean measurement.
        let clean = line
            .split(',')
            .all(|part| part.split_whitespace().last() == Some("0"));
        ensure!(clean, "socket errors: {}", line.trim());
    }
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .context("no Requests/sec in wrk output")?;
    let percentile = |p: &str| -> anyhow::Result<f64> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(p))
            .with_context(|| format!("no {p} latency in wrk output"))?;
        parse_latency(line.split_whitespace().nth(1).unwrap_or(""))
    };
    Ok(WrkResult {
        requests_per_sec: rps,
        p50_ms: percentile("50%")?,
        p99_ms: percentile("99%")?,
    })
}

/// wrk prints latencies as `123.00us`, `1.23ms`, `1.02s` or `2.00m`.
fn parse_latency(value: &str) -> anyhow::Result<f64> {
    let (number, scale) = if let Some(v) = value.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = value.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = value.strip_suffix('s') {
        (v, 1000.0)
    } else if let Some(v) = value.strip_suffix('m') {
        (v, 60_000.0)
    } else {
        bail!("unknown latency {value:?}")
    };
    Ok(number.parse::<f64>()? * scale)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The release ingester on `server`'s Redis (keys under `bench:`), OTLP/gRPC off: it is not
/// measured, and its fixed default port could clash with another process. `spans` is
/// `spans.enabled`: whether OTLP child spans feed span baselines.
pub(crate) async fn start_ingester(
    setup: &Setup,
    server: &RedisServer,
    log: PathBuf,
    spans: bool,
) -> anyhow::Result<Service> {
    let env = vec![
        ("ANOMALY_REDIS__URL", server.url()),
        ("ANOMALY_REDIS__KEY_PREFIX", "bench:".to_owned()),
        ("ANOMALY_INGESTER__OTLP__GRPC_LISTEN", String::new()),
        ("ANOMALY_SPANS__ENABLED", spans.to_string()),
    ];
    Service::start("ingester", &setup.bin_dir, &env, log, "warn", READY_WITHIN).await
}

pub(crate) struct Setup {
    pub(crate) bin_dir: PathBuf,
    pub(crate) keys: u32,
    pub(crate) load: Load,
    pub(crate) batch_items: u32,
    /// Traces in each ingest request, push API and OTLP alike.
    pub(crate) ingest_batch: u32,
    /// Spans in each trace of the OTLP run (one root, the rest children).
    pub(crate) otlp_spans_per_trace: u32,
}

pub(crate) async fn run(setup: &Setup) -> anyhow::Result<Vec<Row>> {
    let mut rows = check(setup).await?;
    rows.extend(ingest(setup).await?);
    Ok(rows)
}

async fn check(setup: &Setup) -> anyhow::Result<Vec<Row>> {
    let server = RedisServer::start_ephemeral();
    let work = tempdir()?;
    let store = bench_store(&server)?;
    let all: Vec<BaselineKey> = (0..setup.keys).map(key).collect();
    eprintln!("seeding {} baselines", setup.keys);
    let now = chrono::Utc::now().timestamp_millis();
    let baseline = Baseline {
        p50: 100.0,
        p95: 200.0,
        mad: 5.0,
        sample_count: 1000,
        updated_at: now,
    };
    for chunk in all.chunks(1000) {
        let items: Vec<_> = chunk.iter().map(|k| (k.clone(), baseline)).collect();
        store
            .write_baselines(&items, Duration::from_secs(86_400))
            .await?;
    }

    // Half normal (120 ms), half anomalous (900 ms against a 400 ms threshold).
    let bodies: Vec<String> = all
        .iter()
        .enumerate()
        .map(|(i, k)| check_body(k, if i % 2 == 0 { 120.0 } else { 900.0 }))
        .collect();
    let bodies_file = work.join("check-bodies.txt");
    std::fs::write(&bodies_file, bodies.join("\n") + "\n")?;
    let batch_file = work.join("batch-bodies.txt");
    let batches: Vec<String> = bodies
        .chunks(setup.batch_items as usize)
        .map(|chunk| format!("{{\"items\":[{}]}}", chunk.join(",")))
        .collect();
    std::fs::write(&batch_file, batches.join("\n") + "\n")?;

    let script = |name: &str, path: &str, bodies: &Path| -> anyhow::Result<PathBuf> {
        let file = work.join(name);
        let text = cycling_script(path).replace("{bodies}", bodies.to_str().context("utf-8 path")?);
        std::fs::write(&file, text)?;
        Ok(file)
    };
    let check_script = script("check.lua", "/v1/anomaly/check", &bodies_file)?;
    let batch_script = script("batch.lua", "/v1/anomaly/check/batch", &batch_file)?;

    let env = |ttl: &str| {
        vec![
            ("ANOMALY_REDIS__URL", server.url()),
            ("ANOMALY_REDIS__KEY_PREFIX", "bench:".to_owned()),
            ("ANOMALY_CHECKER__CACHE__TTL", ttl.to_owned()),
        ]
    };
    let load = setup.load;

    // Cache on: /healthz and checks on the same process.
    let checker = Service::start(
        "checker",
        &setup.bin_dir,
        &env("5s"),
        work.join("checker.log"),
        "warn",
        READY_WITHIN,
    )
    .await?;
    verify_check(&checker.base, &bodies[1]).await?;
    eprintln!("wrk /healthz");
    let healthz = wrk(load, &format!("{}/healthz", checker.base), None, "/healthz").await?;
    let rss_before = checker.rss()?;
    eprintln!("wrk check, cache on");
    let cached = wrk(load, &checker.base, Some(&check_script), "check (cache on)").await?;
    let rss_after_first = checker.rss()?;
    eprintln!("wrk check, cache on, again (memory)");
    let cached_again = wrk(load, &checker.base, Some(&check_script), "check (cache on)").await?;
    let rss_after_second = checker.rss()?;
    eprintln!("wrk batch check");
    let batch = wrk(load, &checker.base, Some(&batch_script), "batch check").await?;
    drop(checker);

    // Cache off: every check is one Redis round trip.
    let uncached_checker = Service::start(
        "checker",
        &setup.bin_dir,
        &env("0s"),
        work.join("checker-0.log"),
        "warn",
        READY_WITHIN,
    )
    .await?;
    // Its own ceiling, measured right before: this machine's speed drifts over a minute, and
    // the first /healthz run is half a minute older by now.
    eprintln!("wrk /healthz, cache-off checker");
    let uncached_ceiling = wrk(
        load,
        &format!("{}/healthz", uncached_checker.base),
        None,
        "/healthz (cache-off checker)",
    )
    .await?
    .requests_per_sec;
    eprintln!("wrk check, cache off");
    let uncached = wrk(
        load,
        &uncached_checker.base,
        Some(&check_script),
        "check (cache off)",
    )
    .await?;
    drop(uncached_checker);

    let ceiling = healthz.requests_per_sec;
    let best_cached = if cached_again.requests_per_sec > cached.requests_per_sec {
        cached_again
    } else {
        cached
    };
    let latency = |r: &WrkResult| format!("p50 {:.2} ms, p99 {:.2} ms", r.p50_ms, r.p99_ms);
    let conns = load.connections;
    let growth = rss_after_second as f64 / rss_after_first as f64;
    Ok(vec![
        Row::new(
            format!("`/healthz`, same checker ({conns} connections)"),
            format!("{:.0} req/s, {}", ceiling, latency(&healthz)),
            "the HTTP ceiling",
            None,
        ),
        Row::new(
            format!("check, cache on ({} keys)", setup.keys),
            format!(
                "{:.0} checks/s ({:.2}x of /healthz), {}",
                best_cached.requests_per_sec,
                best_cached.requests_per_sec / ceiling,
                latency(&best_cached)
            ),
            ">= 40000/s, >= 0.6x, p99 <= 2 ms",
            Some(
                best_cached.requests_per_sec >= 40_000.0
                    && best_cached.requests_per_sec >= 0.6 * ceiling
                    && best_cached.p99_ms <= 2.0,
            ),
        ),
        Row::new(
            "check, cache off (one Redis round trip each)",
            format!(
                "{:.0} checks/s ({:.2}x of the same checker's /healthz, {:.0} req/s just before), {}",
                uncached.requests_per_sec,
                uncached.requests_per_sec / uncached_ceiling,
                uncached_ceiling,
                latency(&uncached)
            ),
            ">= 0.35x of /healthz",
            Some(uncached.requests_per_sec >= 0.35 * uncached_ceiling),
        ),
        Row::new(
            format!("batch check ({} items a request)", setup.batch_items),
            format!(
                "{:.0} checks/s, {}",
                batch.requests_per_sec * f64::from(setup.batch_items),
                latency(&batch)
            ),
            ">= 200000 checks/s",
            Some(batch.requests_per_sec * f64::from(setup.batch_items) >= 200_000.0),
        ),
        Row::new(
            "checker resident memory (after warm-up; after 1st and 2nd load run)",
            format!(
                "{}; {}; {} ({:+.1}% between runs)",
                mib(rss_before),
                mib(rss_after_first),
                mib(rss_after_second),
                (growth - 1.0) * 100.0
            ),
            "flat under load (< 10% growth)",
            Some(growth < 1.10),
        ),
    ])
}

/// One request by hand, so a misconfigured run fails loudly instead of measuring 4xx answers.
async fn verify_check(base: &str, body: &str) -> anyhow::Result<()> {
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/anomaly/check"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await?;
    let status = response.status();
    let text = response.text().await?;
    ensure!(
        status.is_success() && text.contains("\"ANOMALY\""),
        "the seeded check did not answer ANOMALY: {status} {text}"
    );
    Ok(())
}

async fn ingest(setup: &Setup) -> anyhow::Result<Vec<Row>> {
    let server = RedisServer::start_ephemeral();
    let work = tempdir()?;
    let all: Vec<BaselineKey> = (0..setup.keys).map(key).collect();
    let mut keys_text = String::new();
    for k in &all {
        let _ = writeln!(
            keys_text,
            "{}\t{}\t{}",
            k.service(),
            k.endpoint(),
            start_nanos(k.hour(), k.day_type())
        );
    }
    let keys_file = work.join("keys.tsv");
    std::fs::write(&keys_file, keys_text)?;
    let script_file = work.join("ingest.lua");
    std::fs::write(
        &script_file,
        ingest_script(setup.ingest_batch).replace("{keys}", keys_file.to_str().context("utf-8")?),
    )?;

    let ingester = start_ingester(setup, &server, work.join("ingester.log"), true).await?;
    let rss_before = ingester.rss()?;
    eprintln!("wrk ingest");
    // Each request carries a whole batch: 8 connections keep 4000 traces in flight, enough to
    // saturate the ingester, where 32 would only queue (and measure the queue).
    let load = Load {
        connections: setup.load.connections.min(INGEST_CONNECTIONS),
        ..setup.load
    };
    let meter = Meter::start(vec![
        ("ingester", Source::Process(ingester.pid())),
        (
            "redis-server",
            Source::Process(cpu::redis_pid(server.addr())?),
        ),
        ("wrk", Source::Children),
        ("all processes", Source::Machine),
    ])?;
    let result = wrk(load, &ingester.base, Some(&script_file), "ingest").await?;
    let push_cpu = meter.stop()?;
    let rss_after = ingester.rss()?;
    drop(ingester);
    let traces_per_sec = result.requests_per_sec * f64::from(setup.ingest_batch);

    // Every acknowledged trace is in Redis: count the dedup markers.
    let seen = count_keys(&server, &bench_store(&server)?.keys().seen_pattern())?;
    ensure!(seen > 0, "no trace was stored");

    // Right after the push run, so the machine's drift between the two is small.
    let otlp = otlp::ingest(setup, &all, load.connections, true).await?;
    // Span baselines off, right after: the ingest cost of span baselines is the ratio.
    let otlp_off = otlp::ingest(setup, &all, load.connections, false).await?;

    eprintln!("redis-benchmark lpush");
    let output = tokio::process::Command::new("redis-benchmark")
        .args([
            "-p",
            &server.addr().port().to_string(),
            "-P",
            "16",
            "-t",
            "lpush",
        ])
        .args(["-n", "1000000", "-q"])
        .output()
        .await
        .context(
            "running redis-benchmark (it comes with redis-server: apt-get install redis-server)",
        )?;
    let text = String::from_utf8_lossy(&output.stdout);
    let lpush = text
        .split(['\r', '\n'])
        .filter_map(|l| l.strip_prefix("LPUSH:"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .next_back()
        .with_context(|| format!("no LPUSH figure in redis-benchmark output: {text}"))?;

    Ok([
        Row::new(
            format!(
                "ingest, `POST /v1/traces/ingest` ({} distinct traces a request, {} keys, {} connections)",
                setup.ingest_batch, setup.keys, load.connections
            ),
            format!(
                "{traces_per_sec:.0} traces/s ({:.2}x of redis-benchmark LPUSH), p99 {:.1} ms a request",
                traces_per_sec / lpush,
                result.p99_ms
            ),
            ">= 50000 traces/s",
            Some(traces_per_sec >= 50_000.0),
        ),
    ]
    .into_iter()
    .chain(otlp::rows(setup, load.connections, &otlp, &otlp_off))
    .chain([
        Row::new(
            "OTLP roots/s : push API traces/s, same run",
            format!("{:.2}x", otlp.roots_per_sec / traces_per_sec),
            ">= 0.8x",
            Some(otlp.roots_per_sec >= 0.8 * traces_per_sec),
        ),
        Row::new(
            format!(
                "CPU during ingest, % of one core (the machine: {}%; all processes includes any outside the benchmark)",
                100 * std::thread::available_parallelism().map_or(1, |n| n.get())
            ),
            format!("push API: {push_cpu}; OTLP: {}", otlp.cpu),
            "which process is the bottleneck",
            None,
        ),
        Row::new(
            "redis-benchmark -P 16 -t lpush, same Redis",
            format!("{lpush:.0} LPUSH/s"),
            "Redis ceiling for one command",
            None,
        ),
        Row::new(
            "ingester resident memory (before; after load)",
            format!(
                "push API: {}; {}. OTLP: {}; {}",
                mib(rss_before),
                mib(rss_after),
                mib(otlp.rss_before),
                mib(otlp.rss_after)
            ),
            "",
            None,
        ),
    ])
    .collect())
}

/// The store of the benchmarked services (prefix `bench:`), for seeding and key names.
pub(crate) fn bench_store(server: &RedisServer) -> anyhow::Result<Store> {
    Ok(Store::connect(&RedisConfig {
        url: server.url(),
        key_prefix: "bench:".into(),
        ..RedisConfig::default()
    })?)
}

pub(crate) fn count_keys(server: &RedisServer, pattern: &str) -> anyhow::Result<u64> {
    let mut cursor = "0".to_owned();
    let mut count = 0u64;
    loop {
        let reply = raw_command(
            server.addr(),
            &["SCAN", &cursor, "MATCH", pattern, "COUNT", "10000"],
        )?;
        let mut lines = reply.lines();
        cursor = lines.next().unwrap_or("0").to_owned();
        count += lines.count() as u64;
        if cursor == "0" {
            return Ok(count);
        }
    }
}

pub(crate) fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("anomaly-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let text = "Running 10s test @ http://127.0.0.1:8080/healthz
  2 threads and 32 connections
  Latency Distribution
     50%  412.00us
     75%  1.10ms
     90%    2.01ms
     99%    5.20ms
  401234 requests in 10.00s, 40.12MB read
Requests/sec:  40123.45
Transfer/sec:      4.01MB
";
        let r = parse_wrk(text).unwrap();
        assert_eq!(r.requests_per_sec, 40123.45);
        assert!((r.p50_ms - 0.412).abs() < 1e-9);
        assert_eq!(r.p99_ms, 5.2);
        let failed = format!("{text}  Non-2xx or 3xx responses: 17\n");
        assert!(parse_wrk(&failed).is_err());
        let errors = format!("{text}  Socket errors: connect 0, read 3, write 0, timeout 0\n");
        assert!(parse_wrk(&errors).is_err());
        let clean = format!("{text}  Socket errors: connect 0, read 0, write 0, timeout 0\n");
        assert!(parse_wrk(&clean).is_ok());
        assert_eq!(parse_latency("1.02s").unwrap(), 1020.0);
        assert!(parse_latency("12").is_err());
    }

    #[test]
    fn seeded_instants_fall_in_their_bucket() {
        let zone = chrono_tz::Asia::Taipei;
        for day in [DayType::Weekday, DayType::Weekend] {
            for hour in [0u8, 13, 23] {
                let nanos = start_nanos(hour, day);
                let t = zone.timestamp_nanos(nanos as i64);
                assert_eq!(chrono::Timelike::hour(&t), u32::from(hour));
                let weekend = matches!(t.weekday(), Weekday::Sat | Weekday::Sun);
                assert_eq!(weekend, day == DayType::Weekend);
                assert!(t < chrono::Utc::now());
            }
        }
    }
}
