//! Trace analysis latency: `POST /v1/traces/analysis` of one 50-span OTLP/JSON trace against the
//! release checker over HTTP, the Tempo fetch excluded (the body carries the trace), beside the
//! same process's `/healthz` for scale.
//!
//! The trace is tracegen's shape (root SERVER, INTERNAL handler and load step, CLIENT calls) with
//! its call three levels down slower by a second, so the answer has a culprit, a sentence and a
//! critical path to build. Every span of a kind in `spans.kinds` (SERVER and CLIENT: 48 of the
//! 50) has a baseline in its exact bucket, written through the store's testing API; the two
//! INTERNAL spans are not judged, by design. Requests are sent one at a time on one connection:
//! this is the latency of one analysis, not a throughput.

use std::path::Path;
use std::time::{Duration, Instant};

use anomaly_core::{Baseline, BaselineKey, DayType};
use anomaly_testkit::RedisServer;
use anyhow::{Context as _, ensure};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tracegen::traffic::{GenTrace, Root};

use crate::Row;
use crate::http::{READY_WITHIN, bench_store, start_nanos, tempdir};
use crate::service::Service;

/// Spans in the analysed trace.
pub(crate) const SPANS: usize = 50;

/// How much longer the slow span is, ms.
const EXTRA_MS: u32 = 1000;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

/// The trace, and the baselines its SERVER and CLIENT spans need (root keys, span keys).
/// Baselines to seed, by key.
type Seeds = Vec<(BaselineKey, Baseline)>;

fn trace() -> (serde_json::Value, Seeds, Seeds) {
    let (hour, day) = (14, DayType::Weekday);
    let trace = GenTrace {
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".to_owned(),
        service: "checkout".to_owned(),
        endpoint: "POST /api/checkout".to_owned(),
        start_unix_nano: start_nanos(hour, day) as u64,
        duration_ms: 160,
        anomaly: true,
        root: Root::OnTime,
    };
    let request = tracegen::otlp::export_request_slow(
        std::slice::from_ref(&trace),
        SPANS,
        tracegen::otlp::SlowSpans {
            every: 1,
            extra_ms: EXTRA_MS,
        },
        0,
    );
    let now = chrono::Utc::now().timestamp_millis();
    let baseline = |p50: f64| Baseline {
        p50,
        p95: p50 * 1.5,
        mad: p50 / 10.0,
        sample_count: 1000,
        updated_at: now,
    };
    let key = |name: &str| BaselineKey::new(&trace.service, name, hour, day).expect("valid key");
    let roots = vec![(key(&trace.endpoint), baseline(150.0))];
    let mut spans: Seeds = Vec::new();
    for span in request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
    {
        if span.kind == SpanKind::Client as i32
            && !spans.iter().any(|(k, _)| k.endpoint() == span.name)
        {
            spans.push((key(&span.name), baseline(3.0)));
        }
    }
    (tracegen::otlp::to_json(&request), roots, spans)
}

async fn latencies(
    client: &reqwest::Client,
    requests: u32,
    send: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
) -> anyhow::Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(requests as usize);
    for _ in 0..requests {
        let started = Instant::now();
        let response = send(client).send().await?;
        let status = response.status();
        let _ = response.bytes().await?;
        out.push(started.elapsed());
        ensure!(status.is_success(), "answered {status}");
    }
    out.sort();
    Ok(out)
}

/// Starts Redis and the release checker, seeds the baselines, checks one answer (the slow span
/// ranked first, every SERVER and CLIENT span judged), then times `requests` analyses and as
/// many `/healthz`, after a warm-up of a tenth as many each.
pub(crate) async fn run(bin_dir: &Path, requests: u32) -> anyhow::Result<Vec<Row>> {
    let server = RedisServer::start_ephemeral();
    let store = bench_store(&server)?;
    let (body, roots, spans) = trace();
    store
        .write_baselines(&roots, Duration::from_secs(86_400))
        .await?;
    store
        .spans()
        .write_baselines(&spans, Duration::from_secs(86_400))
        .await?;
    let work = tempdir()?;
    let env = vec![
        ("ANOMALY_REDIS__URL", server.url()),
        ("ANOMALY_REDIS__KEY_PREFIX", "bench:".to_owned()),
    ];
    let checker = Service::start(
        "checker",
        bin_dir,
        &env,
        work.join("checker-analysis.log"),
        "warn",
        READY_WITHIN,
    )
    .await?;
    let client = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let url = format!("{}/v1/traces/analysis", checker.base);
    let body = serde_json::to_vec(&body)?;

    // One answer by hand: a misconfigured run fails before it measures.
    let response = client
        .post(&url)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await?;
    let status = response.status();
    let answer: serde_json::Value = response.json().await.context("the analysis is not JSON")?;
    ensure!(
        status.is_success(),
        "the analysis answered {status}: {answer}"
    );
    ensure!(answer["spanCount"] == SPANS, "not {SPANS} spans: {answer}");
    let judged = answer["spans"]
        .as_array()
        .context("no spans[]")?
        .iter()
        .filter(|s| s["verdict"]["baseline"]["sampleCount"] == 1000)
        .count();
    ensure!(
        judged == SPANS - 2,
        "{judged} spans judged against a seeded baseline, expected {}: {answer}",
        SPANS - 2
    );
    let slow = tracegen::otlp::slow_span_index(SPANS);
    let culprit = &answer["culprits"][0];
    ensure!(
        culprit["name"]
            .as_str()
            .is_some_and(|n| spans.iter().any(|(k, _)| k.endpoint() == n))
            && culprit["durationMs"]
                .as_f64()
                .is_some_and(|d| d >= f64::from(EXTRA_MS)),
        "the slow span (#{slow}) is not the first culprit: {answer}"
    );

    let post = |c: &reqwest::Client| {
        c.post(&url)
            .header("content-type", "application/json")
            .body(body.clone())
    };
    let healthz_url = format!("{}/healthz", checker.base);
    let healthz = |c: &reqwest::Client| c.get(&healthz_url);
    eprintln!("analysis latency, {requests} requests of {SPANS} spans, one at a time");
    latencies(&client, requests / 10, post).await?;
    let analysis = latencies(&client, requests, post).await?;
    latencies(&client, requests / 10, healthz).await?;
    let health = latencies(&client, requests, healthz).await?;
    drop(checker);

    Ok(vec![
        Row::new(
            format!(
                "trace analysis, `POST /v1/traces/analysis` of a {SPANS}-span OTLP/JSON trace ({} KiB; {} spans judged against seeded baselines, 2 INTERNAL not in `spans.kinds`; one slow span three levels down), {requests} requests one at a time",
                body.len() / 1024,
                SPANS - 2
            ),
            format!(
                "p50 {:.2} ms, p99 {:.2} ms",
                percentile(&analysis, 0.50),
                percentile(&analysis, 0.99)
            ),
            "measured (issue 16 sets no bound)",
            None,
        ),
        Row::new(
            "`GET /healthz` of the same checker, same client, for scale",
            format!(
                "p50 {:.2} ms, p99 {:.2} ms",
                percentile(&health, 0.50),
                percentile(&health, 0.99)
            ),
            "",
            None,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trace_has_fifty_spans_and_a_baseline_for_each_judged_name() {
        let (json, roots, spans) = trace();
        let all = json["resourceSpans"][0]["scopeSpans"][0]["spans"]
            .as_array()
            .unwrap();
        assert_eq!(all.len(), SPANS);
        assert_eq!(roots.len(), 1);
        let clients: Vec<&str> = all
            .iter()
            .filter(|s| s["kind"] == SpanKind::Client as i32)
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(clients.len(), SPANS - 3);
        for name in clients {
            assert!(spans.iter().any(|(k, _)| k.endpoint() == name), "{name}");
        }
    }
}
