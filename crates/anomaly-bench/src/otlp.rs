//! OTLP/HTTP protobuf ingest (`POST /v1/traces`) of multi-span traces against the release
//! ingester, on a fresh Redis, measured right after the push API's run so that the two are
//! compared as a ratio within one run.
//!
//! The load generator is this process, not wrk: a request is half a megabyte of protobuf, and
//! building one in wrk's Lua for every request would make the generator the bottleneck. The
//! bodies are encoded once (one per slice of `batch` keys, so the run covers every seeded key,
//! through `tracegen::otlp`, the code behind `tracegen otlp`), and each request only copies one
//! and writes fresh trace IDs over the old ones at offsets found once. Every root is therefore a
//! new trace, and dedup never short-cuts the work.
//!
//! The same run measures span baselines on and off (`spans.enabled`), each on its own fresh
//! Redis and ingester: the ratio of the two is the ingest cost of span baselines.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anomaly_core::BaselineKey;
use anomaly_testkit::RedisServer;
use anyhow::{Context as _, ensure};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message as _;
use tracegen::traffic::{GenTrace, Root};

use crate::Row;
use crate::cpu::{self, Meter, Source, Usage};
use crate::http::{Setup, bench_store, count_keys, start_ingester, start_nanos, tempdir};

/// The first four bytes of every stamped trace ID: non-zero, so no ID is all zeros.
const ID_TAG: [u8; 4] = *b"otlp";

/// The protobuf key of `Span.trace_id` (field 1, length-delimited) and its length, 16.
const TRACE_ID_FIELD: [u8; 2] = [0x0a, 16];

/// One pre-encoded request: the protobuf body and where each span's trace ID lies in it.
struct Template {
    body: Vec<u8>,
    /// Offsets of the 16 trace-ID bytes of every span, with the index of its trace.
    ids: Vec<(usize, u32)>,
    traces: u64,
}

impl Template {
    /// A copy of the body in which trace `i` has the ID `otlp` + `request` + `i`: unique over
    /// the run as long as `request` is.
    fn stamp(&self, request: u64) -> Vec<u8> {
        let mut body = self.body.clone();
        for &(offset, trace) in &self.ids {
            let id = &mut body[offset..offset + 16];
            id[..4].copy_from_slice(&ID_TAG);
            id[4..12].copy_from_slice(&request.to_be_bytes());
            id[12..].copy_from_slice(&trace.to_be_bytes());
        }
        body
    }
}

/// A placeholder trace ID, unlikely to occur anywhere else in a body by chance.
fn placeholder(seq: u64) -> u128 {
    let mut h = seq.wrapping_add(0x9e37_79b9_7f4a_7c15);
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (u128::from(h) << 64) | u128::from(seq + 1)
}

/// One body per `batch` keys: trace `j` of body `t` is for key `(t * batch + j) * 7919 % keys`
/// (7919 is prime, so the bodies together hit every key once), starts in that key's bucket and
/// lasts 20-199 ms, as the push run's traces do.
fn templates(keys: &[BaselineKey], batch: usize, spans_per_trace: usize) -> Vec<Template> {
    let bodies = keys.len().div_ceil(batch).max(1);
    let mut out = Vec::with_capacity(bodies);
    for t in 0..bodies {
        let traces: Vec<GenTrace> = (0..batch)
            .map(|j| {
                let seq = (t * batch + j) as u64;
                let key = &keys[(seq as usize * 7919) % keys.len()];
                GenTrace {
                    trace_id: format!("{:032x}", placeholder(seq)),
                    service: key.service().to_owned(),
                    endpoint: key.endpoint().to_owned(),
                    start_unix_nano: start_nanos(key.hour(), key.day_type()) as u64,
                    duration_ms: 20 + (seq % 180) as u32,
                    anomaly: false,
                    root: Root::OnTime,
                }
            })
            .collect();
        let body = tracegen::otlp::export_request(&traces, spans_per_trace).encode_to_vec();
        let index: HashMap<[u8; 16], u32> = traces
            .iter()
            .enumerate()
            .map(|(j, g)| (tracegen::otlp::trace_id_bytes(&g.trace_id), j as u32))
            .collect();
        let ids: Vec<(usize, u32)> = body
            .windows(18)
            .enumerate()
            .filter(|(_, w)| w[..2] == TRACE_ID_FIELD)
            .filter_map(|(at, w)| {
                let id: [u8; 16] = w[2..].try_into().ok()?;
                index.get(&id).map(|&j| (at + 2, j))
            })
            .collect();
        out.push(Template {
            body,
            ids,
            traces: batch as u64,
        });
    }
    out
}

/// What the OTLP run measured.
pub(crate) struct OtlpRun {
    pub(crate) roots_per_sec: f64,
    pub(crate) spans_per_sec: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    /// Size of one request body.
    pub(crate) body_bytes: usize,
    pub(crate) cpu: Usage,
    pub(crate) rss_before: u64,
    pub(crate) rss_after: u64,
    /// Child spans a trace that the ingester accepted into span windows
    /// (`anomaly_span_samples_total{outcome="accepted"}` over the roots sent).
    pub(crate) span_samples_per_trace: f64,
}

/// The sum of `anomaly_span_samples_total{..., outcome="accepted"}` in `base`'s metrics.
async fn accepted_span_samples(client: &reqwest::Client, base: &str) -> anyhow::Result<f64> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| {
            l.starts_with("anomaly_span_samples_total{") && l.contains("outcome=\"accepted\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// Requests and latencies of one connection's loop.
#[derive(Default)]
struct Worker {
    /// Requests answered before the deadline (the throughput counts these).
    in_window: u64,
    /// Roots acknowledged by every answered request, including those finishing after it.
    roots: u64,
    latencies: Vec<Duration>,
}

async fn export(client: &reqwest::Client, url: &str, body: Vec<u8>) -> anyhow::Result<()> {
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
        .body(body)
        .send()
        .await?;
    let status = response.status();
    let bytes = response.bytes().await?;
    ensure!(
        status.is_success(),
        "{url} answered {status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    let answer = ExportTraceServiceResponse::decode(bytes.as_ref())
        .context("a 200 whose body is not an ExportTraceServiceResponse")?;
    if let Some(partial) = answer.partial_success {
        ensure!(
            partial.rejected_spans == 0,
            "{} spans rejected: {}",
            partial.rejected_spans,
            partial.error_message
        );
    }
    Ok(())
}

async fn worker(
    client: reqwest::Client,
    url: String,
    templates: Arc<Vec<Template>>,
    counter: Arc<AtomicU64>,
    deadline: Instant,
) -> anyhow::Result<Worker> {
    let mut w = Worker::default();
    while Instant::now() < deadline {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let template = &templates[n as usize % templates.len()];
        let body = template.stamp(n);
        let started = Instant::now();
        export(&client, &url, body).await?;
        let done = Instant::now();
        w.roots += template.traces;
        if done <= deadline {
            w.in_window += 1;
            w.latencies.push(done - started);
        }
    }
    Ok(w)
}

/// The rows of an OTLP run with span baselines on and one with them off, and their ratio.
pub(crate) fn rows(setup: &Setup, connections: u32, on: &OtlpRun, off: &OtlpRun) -> Vec<Row> {
    let figures = |r: &OtlpRun| {
        format!(
            "{:.0} spans/s = {:.0} roots/s, p50 {:.1} ms, p99 {:.1} ms a request",
            r.spans_per_sec, r.roots_per_sec, r.p50_ms, r.p99_ms
        )
    };
    vec![
        Row::new(
            format!(
                "ingest, OTLP/HTTP protobuf `POST /v1/traces` ({} traces x {} spans a request, {} KiB, {} keys, {} connections; span baselines on: {:.1} child spans a trace feed span windows)",
                setup.ingest_batch,
                setup.otlp_spans_per_trace,
                on.body_bytes / 1024,
                setup.keys,
                connections,
                on.span_samples_per_trace
            ),
            figures(on),
            ">= 500000 spans/s (50000 roots/s)",
            Some(on.spans_per_sec >= 500_000.0 && on.roots_per_sec >= 50_000.0),
        ),
        Row::new(
            "the same, span baselines off (`spans.enabled: false`), right after",
            figures(off),
            "",
            None,
        ),
        Row::new(
            "OTLP roots/s with span baselines on : off, same run (the ingest cost of span baselines)",
            format!("{:.2}x", on.roots_per_sec / off.roots_per_sec),
            "measured (issue 16 sets no bound)",
            None,
        ),
        Row::new(
            "CPU during OTLP ingest, % of one core, span baselines on; off",
            format!("on: {}; off: {}", on.cpu, off.cpu),
            "which process is the bottleneck",
            None,
        ),
    ]
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

/// Starts its own Redis and release ingester (span baselines on or off as `spans` says), sends
/// one checked request, then `connections` loops of pre-encoded requests for the load's
/// duration, and proves every acknowledged root is in Redis, and that child spans fed span
/// windows exactly when `spans` is on.
pub(crate) async fn ingest(
    setup: &Setup,
    keys: &[BaselineKey],
    connections: u32,
    spans_on: bool,
) -> anyhow::Result<OtlpRun> {
    let batch = setup.ingest_batch.max(1) as usize;
    let spans = setup.otlp_spans_per_trace.max(1) as usize;
    eprintln!("encoding OTLP bodies ({batch} traces x {spans} spans)");
    let templates = templates(keys, batch, spans);
    for t in &templates {
        ensure!(
            t.ids.len() == batch * spans,
            "found {} trace IDs in an encoded body, expected {}",
            t.ids.len(),
            batch * spans
        );
    }
    let body_bytes = templates[0].body.len();
    let templates = Arc::new(templates);

    let server = RedisServer::start_ephemeral();
    let work = tempdir()?;
    let log = if spans_on {
        "ingester-otlp.log"
    } else {
        "ingester-otlp-spans-off.log"
    };
    let ingester = start_ingester(setup, &server, work.join(log), spans_on).await?;
    let url = format!("{}/v1/traces", ingester.base);
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(connections as usize)
        .build()?;
    // One request by hand (ID 0), so a misconfigured run fails before it measures.
    export(&client, &url, templates[0].stamp(0))
        .await
        .context("the first OTLP request")?;
    let rss_before = ingester.rss()?;

    eprintln!(
        "OTLP ingest, {connections} connections, span baselines {}",
        if spans_on { "on" } else { "off" }
    );
    let counter = Arc::new(AtomicU64::new(1));
    let meter = Meter::start(vec![
        ("ingester", Source::Process(ingester.pid())),
        (
            "redis-server",
            Source::Process(cpu::redis_pid(server.addr())?),
        ),
        ("load generator", Source::This),
        ("all processes", Source::Machine),
    ])?;
    let started = Instant::now();
    let deadline = started + setup.load.duration;
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            tokio::spawn(worker(
                client.clone(),
                url.clone(),
                Arc::clone(&templates),
                Arc::clone(&counter),
                deadline,
            ))
        })
        .collect();
    let mut requests = 0u64;
    let mut roots = templates[0].traces;
    let mut latencies = Vec::new();
    for task in tasks {
        let w = task.await??;
        requests += w.in_window;
        roots += w.roots;
        latencies.extend(w.latencies);
    }
    let cpu = meter.stop()?;
    let rss_after = ingester.rss()?;
    let span_samples = accepted_span_samples(&client, &ingester.base).await?;
    drop(ingester);
    if spans_on {
        ensure!(
            span_samples > 0.0,
            "span baselines are on but no child span was accepted"
        );
    } else {
        ensure!(
            span_samples == 0.0,
            "span baselines are off but {span_samples} child spans were accepted"
        );
    }

    // Every acknowledged root is in Redis, each as a new trace: count the dedup markers.
    let seen = count_keys(&server, &bench_store(&server)?.keys().seen_pattern())?;
    ensure!(
        seen == roots,
        "{roots} root spans were acknowledged but {seen} traces are in Redis"
    );

    latencies.sort();
    let roots_per_sec = (requests * templates[0].traces) as f64 / setup.load.duration.as_secs_f64();
    Ok(OtlpRun {
        roots_per_sec,
        spans_per_sec: roots_per_sec * spans as f64,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        body_bytes,
        cpu,
        rss_before,
        rss_after,
        span_samples_per_trace: span_samples / roots as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

    #[test]
    fn stamped_bodies_carry_fresh_ids_and_nothing_else_changes() {
        let keys: Vec<BaselineKey> = (0..30).map(crate::key).collect();
        let templates = templates(&keys, 8, 10);
        assert_eq!(templates.len(), 4);
        let template = &templates[1];
        assert_eq!(template.ids.len(), 8 * 10);
        let original = ExportTraceServiceRequest::decode(template.body.as_slice()).unwrap();
        let stamped = ExportTraceServiceRequest::decode(template.stamp(77).as_slice()).unwrap();

        let spans = |r: &ExportTraceServiceRequest| -> Vec<_> {
            r.resource_spans
                .iter()
                .flat_map(|r| r.scope_spans.iter().flat_map(|s| s.spans.clone()))
                .collect()
        };
        let (before, after) = (spans(&original), spans(&stamped));
        assert_eq!(before.len(), 80);
        let mut roots = std::collections::HashSet::new();
        for (b, a) in before.iter().zip(&after) {
            assert_eq!(&a.trace_id[..4], b"otlp");
            assert_eq!(a.trace_id[4..12], 77u64.to_be_bytes());
            let mut unstamped = a.clone();
            unstamped.trace_id = b.trace_id.clone();
            assert_eq!(&unstamped, b, "only the trace ID changes");
            if a.parent_span_id.is_empty() {
                roots.insert(a.trace_id.clone());
            }
        }
        assert_eq!(roots.len(), 8, "one root per trace, each with its own ID");
        // Keys 8..16 in the 7919 stride, each trace in its key's bucket.
        let root = before.iter().find(|s| s.parent_span_id.is_empty()).unwrap();
        let key = &keys[(8 * 7919) % keys.len()];
        assert_eq!(root.name, key.endpoint());
        assert_eq!(
            root.start_time_unix_nano,
            start_nanos(key.hour(), key.day_type()) as u64
        );
    }

    #[test]
    fn percentiles_of_sorted_latencies() {
        let ms: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&ms, 0.5), 50.0);
        assert_eq!(percentile(&ms, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.99), 0.0);
    }
}
