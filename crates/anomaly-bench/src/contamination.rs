//! The contamination guard (`stats.exclude_anomalies`) through a one-hour incident, part of
//! `anomaly-bench quality`.
//!
//! One endpoint of tracegen's labelled shop (`checkout GET /api/cart`, about 800 requests in a
//! weekday 10:00 hour) gets two weeks of history, pushed through the release ingester and
//! drained by the release recomputer. Then its traffic of one weekday's 10:00-11:00 is pushed
//! `factor` times slower (the same requests, each `factor` x longer), in 10-minute slices, as
//! live traffic would arrive: after each slice the harness waits until the recomputer has
//! recomputed the bucket, so the next slice is judged on ingest against a baseline that holds
//! the slices before it, as it would be an hour of wall-clock time later. The detector's and the
//! checker's baseline caches are off, so every judgment reads the newest baseline.
//!
//! The slowdown then goes on: 11:00-12:00 (another bucket, which the incident has not touched),
//! and 10:00-11:00 of the next weekday (the incident's bucket again). Everything runs twice, on
//! a fresh Redis each time, with the guard off (the default) and on. Recall is counted on
//! ingest (`anomaly_detected_total` over `anomaly_judged_total` of each slice), the threshold
//! is the one a check of the bucket answers (the checker's `threshold`) before each slice.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anomaly_core::{BaselineKey, Bucketer, DayType, TimeConfig};
use anomaly_store::{RedisConfig, Store};
use anomaly_testkit::RedisServer;
use anyhow::{Context as _, bail, ensure};
use chrono::NaiveDate;
use serde_json::{Value, json};
use tracegen::labelled::{LabelledGenerator, LabelledTrace, Scenario};

use crate::Row;
use crate::service::Service;

const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long the recomputer may take to fold a slice into the bucket's baseline.
const RECOMPUTE_WITHIN: Duration = Duration::from_secs(60);
const NANOS_PER_MINUTE: u64 = 60 * 1_000_000_000;
const NANOS_PER_HOUR: u64 = 60 * NANOS_PER_MINUTE;
const NANOS_PER_DAY: u64 = 24 * NANOS_PER_HOUR;
/// Traces in each push request of the history.
const PUSH_BATCH: usize = 5000;
/// The incident's endpoint and local hour.
const SERVICE: &str = "checkout";
const ENDPOINT: &str = "GET /api/cart";
const INCIDENT_HOUR: u8 = 10;
/// Slices of an hour pushed one at a time.
const SLICE_MINUTES: u64 = 10;

/// What the scenario runs.
#[derive(Debug, Clone)]
pub(crate) struct Contamination {
    pub(crate) bin_dir: PathBuf,
    pub(crate) seed: u64,
    /// The incident is on the last weekday before this date that another weekday follows.
    pub(crate) end: NaiveDate,
    /// Days of history before the incident.
    pub(crate) history_days: u32,
    /// How many times slower the endpoint answers during the incident.
    pub(crate) factor: u32,
}

/// One hour of the slowdown: its name, the bucket it falls in and its 10-minute slices.
struct Phase {
    name: String,
    key: BaselineKey,
    /// An instant in the bucket, for the threshold probe.
    probe_nanos: u64,
    slices: Vec<Vec<LabelledTrace>>,
}

/// One slice measured under one setting.
#[derive(Debug, Clone, Copy)]
struct Slice {
    /// The bucket's threshold before the slice was pushed (ms).
    threshold: f64,
    requests: u64,
    detected: u64,
}

/// What one setting measured: per phase, its slices, and the threshold after the last one.
struct Measured {
    phases: Vec<(Vec<Slice>, f64)>,
}

/// The table and the rows of both settings.
pub(crate) struct Report {
    pub(crate) table: String,
    pub(crate) rows: Vec<Row>,
}

fn local_midnight(time: &TimeConfig, date: NaiveDate) -> anyhow::Result<u64> {
    crate::quality::local_midnight(time, date)
}

/// The incident day and the weekday after it: the last pair of consecutive weekdays before
/// `end`.
fn incident_days(
    time: &TimeConfig,
    bucketer: &Bucketer,
    end: NaiveDate,
) -> anyhow::Result<(u64, u64)> {
    let day_type = |d: NaiveDate| -> anyhow::Result<DayType> {
        let noon = local_midnight(time, d)? + 12 * NANOS_PER_HOUR;
        Ok(bucketer
            .bucket(chrono::DateTime::from_timestamp_nanos(noon as i64))
            .day_type)
    };
    let mut next = end.pred_opt().context("date out of range")?;
    for _ in 0..30 {
        let day = next.pred_opt().context("date out of range")?;
        if day_type(day)? == DayType::Weekday && day_type(next)? == DayType::Weekday {
            return Ok((local_midnight(time, day)?, local_midnight(time, next)?));
        }
        next = day;
    }
    bail!("no two consecutive weekdays in the month before {end}")
}

pub(crate) async fn run(c: &Contamination) -> anyhow::Result<Report> {
    let time = TimeConfig::default();
    let bucketer = Bucketer::new(&time);
    let (day, next_day) = incident_days(&time, &bucketer, c.end)?;
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX) as u64;
    ensure!(
        next_day + NANOS_PER_DAY <= now,
        "the incident must lie in the past; pick an earlier end than {}",
        c.end
    );
    let scenario = Scenario::shop();
    let endpoint = scenario
        .endpoint_index(SERVICE, ENDPOINT)
        .context("the shop has no cart endpoint")?;
    let history_gen = LabelledGenerator::new(scenario.clone(), c.seed, &time);
    let clean_gen = LabelledGenerator::new(scenario.clone().with_slowdown_rate(0.0), c.seed, &time);
    let incident_start = day + u64::from(INCIDENT_HOUR) * NANOS_PER_HOUR;
    let history: Vec<LabelledTrace> = history_gen
        .traces_between(
            incident_start - u64::from(c.history_days) * NANOS_PER_DAY,
            incident_start,
        )
        .into_iter()
        .filter(|t| t.endpoint == endpoint)
        .collect();
    let phase = |name: String, from: u64| -> anyhow::Result<Phase> {
        let b = bucketer.bucket(chrono::DateTime::from_timestamp_nanos(
            (from + NANOS_PER_HOUR / 2) as i64,
        ));
        let slices = (0..60 / SLICE_MINUTES)
            .map(|i| {
                let a = from + i * SLICE_MINUTES * NANOS_PER_MINUTE;
                clean_gen
                    .traces_between(a, a + SLICE_MINUTES * NANOS_PER_MINUTE)
                    .into_iter()
                    .filter(|t| t.endpoint == endpoint)
                    .map(|t| t.slowed(c.factor))
                    .collect()
            })
            .collect();
        Ok(Phase {
            name,
            key: BaselineKey::new(SERVICE, ENDPOINT, b.hour, b.day_type)?,
            probe_nanos: from + NANOS_PER_HOUR / 2,
            slices,
        })
    };
    let h = INCIDENT_HOUR;
    let phases = vec![
        phase(
            format!("the incident, {h:02}:00-{:02}:00", h + 1),
            incident_start,
        )?,
        phase(
            format!(
                "the hour after, {:02}:00-{:02}:00, still {}x (another bucket)",
                h + 1,
                h + 2,
                c.factor
            ),
            incident_start + NANOS_PER_HOUR,
        )?,
        phase(
            format!(
                "the next weekday {h:02}:00-{:02}:00, still {}x (the incident's bucket)",
                h + 1,
                c.factor
            ),
            next_day + u64::from(h) * NANOS_PER_HOUR,
        )?,
    ];
    ensure!(
        phases[0].key == phases[2].key,
        "the next weekday's hour is not the incident's bucket"
    );
    eprintln!(
        "contamination: {} history requests of {SERVICE} {ENDPOINT}, a {}x incident of {} requests",
        history.len(),
        c.factor,
        phases[0].slices.iter().map(Vec::len).sum::<usize>()
    );
    let off = measure(c, &history_gen, &history, &phases, false).await?;
    let on = measure(c, &history_gen, &history, &phases, true).await?;
    Ok(report(c, &phases, &off, &on))
}

/// Sums of `anomaly_detected_total` and `anomaly_judged_total` in `base`'s metrics.
async fn counts(client: &reqwest::Client, base: &str) -> anyhow::Result<(u64, u64)> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let sum = |metric: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with(['{', ' ']))
            .filter_map(|l| {
                l.split(" # ")
                    .next()?
                    .rsplit(' ')
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
            .sum::<f64>() as u64
    };
    Ok((sum("anomaly_detected_total"), sum("anomaly_judged_total")))
}

/// The bucket's threshold and the baseline's `updatedAt`, from a check of a 1 ms request.
async fn probe(client: &reqwest::Client, base: &str, nanos: u64) -> anyhow::Result<(f64, i64)> {
    let body = json!({"rootServiceName": SERVICE, "rootTraceName": ENDPOINT,
        "startTimeUnixNano": nanos.to_string(), "durationMs": 1.0});
    let reply = client
        .post(format!("{base}/v1/anomaly/check"))
        .json(&body)
        .send()
        .await?;
    let status = reply.status();
    let answer: Value = reply.json().await?;
    ensure!(status.is_success(), "the check answered {status}: {answer}");
    let threshold = answer["threshold"]
        .as_f64()
        .with_context(|| format!("a check without a threshold: {answer}"))?;
    let updated = answer["baseline"]["updatedAt"].as_i64().unwrap_or(0);
    Ok((threshold, updated))
}

async fn push(
    client: &reqwest::Client,
    base: &str,
    generator: &LabelledGenerator,
    traces: &[LabelledTrace],
) -> anyhow::Result<()> {
    let url = format!("{base}/v1/traces/ingest");
    for chunk in traces.chunks(PUSH_BATCH) {
        let body =
            json!({"traces": chunk.iter().map(|t| generator.ingest_json(t)).collect::<Vec<_>>()});
        let reply = client.post(&url).json(&body).send().await?;
        let status = reply.status();
        let answer: Value = reply.json().await?;
        ensure!(
            status.is_success() && answer["accepted"].as_u64() == Some(chunk.len() as u64),
            "the ingester did not accept a batch of {}: {status} {answer}",
            chunk.len()
        );
    }
    Ok(())
}

/// Waits until the checker answers for `nanos` with a baseline newer than `after_ms`.
async fn wait_recomputed(
    client: &reqwest::Client,
    checker: &str,
    nanos: u64,
    after_ms: i64,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + RECOMPUTE_WITHIN;
    loop {
        if let Ok((_, updated)) = probe(client, checker, nanos).await
            && updated > after_ms
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the bucket was not recomputed within {RECOMPUTE_WITHIN:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The whole scenario under one setting of the guard, on a fresh Redis.
async fn measure(
    c: &Contamination,
    generator: &LabelledGenerator,
    history: &[LabelledTrace],
    phases: &[Phase],
    guard: bool,
) -> anyhow::Result<Measured> {
    let server = RedisServer::start_ephemeral();
    let work = std::env::temp_dir().join(format!("anomaly-contamination-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let env = vec![
        ("ANOMALY_REDIS__URL", server.url()),
        ("ANOMALY_REDIS__KEY_PREFIX", "quality:".to_owned()),
        ("ANOMALY_INGESTER__OTLP__GRPC_LISTEN", String::new()),
        ("ANOMALY_INGESTER__DETECT__CACHE__TTL", "0s".to_owned()),
        ("ANOMALY_CHECKER__CACHE__TTL", "0s".to_owned()),
        ("ANOMALY_RECOMPUTER__INTERVAL", "100ms".to_owned()),
        ("ANOMALY_RECOMPUTER__FALLBACK_REFRESH", "1s".to_owned()),
        ("ANOMALY_STATS__EXCLUDE_ANOMALIES", guard.to_string()),
    ];
    let store = Store::connect(&RedisConfig {
        url: server.url(),
        key_prefix: "quality:".into(),
        ..RedisConfig::default()
    })?;
    let log = |name: &str| work.join(format!("{name}-guard-{guard}.log"));
    let ingester = Service::start(
        "ingester",
        &c.bin_dir,
        &env,
        log("ingester"),
        "warn",
        READY_WITHIN,
    )
    .await?;
    let client = reqwest::Client::new();
    push(&client, &ingester.base, generator, history).await?;
    let pushed_ms = chrono::Utc::now().timestamp_millis();
    let checker = Service::start(
        "checker",
        &c.bin_dir,
        &env,
        log("checker"),
        "warn",
        READY_WITHIN,
    )
    .await?;
    let _recomputer = Service::start(
        "recomputer",
        &c.bin_dir,
        &env,
        log("recomputer"),
        "warn",
        READY_WITHIN,
    )
    .await?;
    for p in phases {
        wait_recomputed(&client, &checker.base, p.probe_nanos, pushed_ms)
            .await
            .with_context(|| format!("the history's baseline of {}", p.name))?;
    }

    let mut measured = Measured { phases: Vec::new() };
    for p in phases {
        let mut slices = Vec::new();
        for traces in &p.slices {
            let (threshold, _) = probe(&client, &checker.base, p.probe_nanos).await?;
            let window = store.read_window(&p.key).await?;
            let (detected, judged) = counts(&client, &ingester.base).await?;
            push(&client, &ingester.base, generator, traces).await?;
            let pushed_ms = chrono::Utc::now().timestamp_millis();
            let (detected_after, judged_after) = counts(&client, &ingester.base).await?;
            ensure!(
                judged_after - judged == traces.len() as u64,
                "{} of {} requests were judged on ingest",
                judged_after - judged,
                traces.len()
            );
            // With the guard on, a slice judged anomalous to the last request leaves the
            // window as it was, and nothing is recomputed.
            if store.read_window(&p.key).await? != window {
                wait_recomputed(&client, &checker.base, p.probe_nanos, pushed_ms)
                    .await
                    .with_context(|| format!("a slice of {}", p.name))?;
            }
            slices.push(Slice {
                threshold,
                requests: traces.len() as u64,
                detected: detected_after - detected,
            });
        }
        let (after, _) = probe(&client, &checker.base, p.probe_nanos).await?;
        measured.phases.push((slices, after));
    }
    for s in [&ingester, &checker] {
        let warnings = s.warnings();
        ensure!(
            warnings.is_empty(),
            "the {} logged warnings: {}",
            s.name,
            warnings.join("\n")
        );
    }
    Ok(measured)
}

fn recall(slices: &[Slice]) -> (u64, u64) {
    slices
        .iter()
        .fold((0, 0), |(d, n), s| (d + s.detected, n + s.requests))
}

fn percent((a, b): (u64, u64)) -> String {
    if b == 0 {
        return "-".to_owned();
    }
    format!("{:.0}% ({a}/{b})", 100.0 * a as f64 / b as f64)
}

fn report(c: &Contamination, phases: &[Phase], off: &Measured, on: &Measured) -> Report {
    let mut table = format!(
        "Contamination guard (`stats.exclude_anomalies`) through a {}x incident of {SERVICE} `{ENDPOINT}`, pushed in {SLICE_MINUTES}-minute slices, each judged on ingest against the baseline the slices before it left (threshold of the bucket before the slice; recall = share of the slice judged ANOMALY on ingest):\n\n\
         | hour | minutes | requests | guard off: threshold | guard off: recall | guard on: threshold | guard on: recall |\n|---|---|---|---|---|---|---|\n",
        c.factor
    );
    for (i, p) in phases.iter().enumerate() {
        let (off_slices, off_after) = &off.phases[i];
        let (on_slices, on_after) = &on.phases[i];
        for (j, (a, b)) in off_slices.iter().zip(on_slices).enumerate() {
            let from = j as u64 * SLICE_MINUTES;
            let _ = writeln!(
                table,
                "| {} | {from:02}-{:02} | {} | {:.1} ms | {} | {:.1} ms | {} |",
                if j == 0 { p.name.as_str() } else { "" },
                from + SLICE_MINUTES,
                a.requests,
                a.threshold,
                percent((a.detected, a.requests)),
                b.threshold,
                percent((b.detected, b.requests)),
            );
        }
        let _ = writeln!(
            table,
            "| | whole hour (threshold after it) | {} | {off_after:.1} ms | {} | {on_after:.1} ms | {} |",
            recall(off_slices).1,
            percent(recall(off_slices)),
            percent(recall(on_slices)),
        );
    }

    let half = |m: &Measured, second: bool| {
        let slices = &m.phases[0].0;
        let mid = slices.len() / 2;
        recall(if second {
            &slices[mid..]
        } else {
            &slices[..mid]
        })
    };
    let thresholds = |m: &Measured| {
        let slices = &m.phases[0].0;
        format!(
            "{:.1} ms; {:.1} ms; {:.1} ms",
            slices[0].threshold,
            slices[slices.len() / 2].threshold,
            m.phases[0].1
        )
    };
    let ratio = |(a, b): (u64, u64)| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let on_incident = recall(&on.phases[0].0);
    let on_start = on.phases[0].0[0].threshold;
    let on_rise = on.phases[0].1 / on_start;
    let rows = vec![
        Row::new(
            format!(
                "{}x incident, threshold of its bucket at the start; 30 min in; at the end: guard off",
                c.factor
            ),
            thresholds(off),
            "measured",
            None,
        ),
        Row::new(
            format!(
                "the same, guard on (`stats.exclude_anomalies: true`); rise over the hour {on_rise:.2}x"
            ),
            thresholds(on),
            "measured",
            None,
        ),
        Row::new(
            "recall during the incident, first 30 min; last 30 min: guard off -> on",
            format!(
                "{}; {} -> {}; {}",
                percent(half(off, false)),
                percent(half(off, true)),
                percent(half(on, false)),
                percent(half(on, true))
            ),
            "measured",
            None,
        ),
        Row::new(
            format!(
                "recall in the hour after (still {}x, another bucket); the next weekday's same hour (still {}x, the incident's bucket): guard off -> on",
                c.factor, c.factor
            ),
            format!(
                "{}; {} -> {}; {}",
                percent(recall(&off.phases[1].0)),
                percent(recall(&off.phases[2].0)),
                percent(recall(&on.phases[1].0)),
                percent(recall(&on.phases[2].0)),
            ),
            "measured",
            None,
        ),
        Row::new(
            "recall of the whole incident hour, guard off -> on",
            format!(
                "{} -> {}",
                percent(recall(&off.phases[0].0)),
                percent(on_incident)
            ),
            "guard on >= guard off",
            Some(ratio(on_incident) >= ratio(recall(&off.phases[0].0))),
        ),
    ];
    Report { table, rows }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_incident_falls_on_a_weekday_followed_by_one() {
        let time = TimeConfig::default();
        let bucketer = Bucketer::new(&time);
        // Monday 2026-11-30: the last weekday pair before it is Thursday and Friday.
        let end = NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
        let (day, next) = incident_days(&time, &bucketer, end).unwrap();
        assert_eq!(next - day, NANOS_PER_DAY);
        let thursday = NaiveDate::from_ymd_opt(2026, 11, 26).unwrap();
        assert_eq!(day, local_midnight(&time, thursday).unwrap());
    }

    #[test]
    fn recall_adds_slices() {
        let s = |detected, requests| Slice {
            threshold: 1.0,
            requests,
            detected,
        };
        assert_eq!(recall(&[s(3, 10), s(5, 10)]), (8, 20));
        assert_eq!(percent((8, 20)), "40% (8/20)");
        assert_eq!(percent((0, 0)), "-");
    }
}
