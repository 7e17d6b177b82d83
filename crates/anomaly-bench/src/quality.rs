//! `anomaly-bench quality`: how well the rule finds slowdowns, measured on labelled traffic
//! through the three release binaries.
//!
//! It generates tracegen's labelled shop (`tracegen::labelled`) for a fixed past period: weeks
//! of training history, pushed in time order through the ingester's push API and drained by
//! the recomputer (which also computes the fallback levels), then a test period checked,
//! without being ingested, through two checkers on the same Redis by the batch API: one with
//! the default fallback chain and one with `stats.fallback: []` (exact buckets only). A third
//! baseline is computed here: one window per endpoint (its last `window_size` training samples,
//! whatever their hour) judged by the same rule with `anomaly_core`. Every figure is a count of
//! labelled requests, so the same seed and dates give the same table on any machine.
//!
//! The baselines stay as the training left them while the test period is checked: the test
//! measures how well weeks of history describe the week after, not how fast baselines follow
//! a change, and the harness knows every window the checkers judged by, which lets it compare
//! the rank an answer reports with the exact rank on those samples.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anomaly_core::summary::{Quantiles, exact_rank};
use anomaly_core::{
    Baseline, BaselineKey, Bucketer, DayType, DurationMs, Level, Stats, StatsConfig, Status,
    TimeConfig, Verdict,
};
use anomaly_store::{RedisConfig, Store};
use anomaly_testkit::RedisServer;
use anyhow::{Context as _, bail, ensure};
use chrono::{NaiveDate, TimeZone as _};
use serde_json::{Value, json};
use tracegen::labelled::{LabelledGenerator, LabelledTrace, Scenario};

use crate::Row;
use crate::service::Service;

/// How long a started service may take to answer `/readyz`.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long the recomputer may take to turn the training history into baselines and levels.
const RECOMPUTE_WITHIN: Duration = Duration::from_secs(180);
/// Traces in each push request (the ingester takes up to 10,000).
const PUSH_BATCH: usize = 5000;
/// Items in each batch check (the checker's default maximum).
const CHECK_BATCH: usize = 1000;
const NANOS_PER_DAY: u64 = 86_400 * 1_000_000_000;
const DAY_TYPES: [DayType; 2] = [DayType::Weekday, DayType::Weekend];

/// What the run measures.
#[derive(Debug, Clone)]
pub(crate) struct Quality {
    pub(crate) bin_dir: PathBuf,
    pub(crate) seed: u64,
    /// The test period ends at local midnight at the start of this date.
    pub(crate) end: NaiveDate,
    pub(crate) test_days: u32,
    pub(crate) train_weeks: u32,
    /// Share of slowed-down requests in the training history (they stay in the windows, as
    /// real incidents do) and in the test period (where they are what recall counts).
    pub(crate) train_slowdown_rate: f64,
    pub(crate) test_slowdown_rate: f64,
}

impl Quality {
    /// The contamination guard's scenarios on the same seed and dates: two weeks of history and
    /// a 3x incident (issue 17), then a 5x one, which the rule finds in nearly every request.
    pub(crate) fn contamination(&self) -> Vec<crate::contamination::Contamination> {
        [3, 5]
            .into_iter()
            .map(|factor| crate::contamination::Contamination {
                bin_dir: self.bin_dir.clone(),
                seed: self.seed,
                end: self.end,
                history_days: 14,
                factor,
            })
            .collect()
    }
}

/// The three ways of judging a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Method {
    ExactOnly,
    Fallback,
    Global,
}

const METHODS: [Method; 3] = [Method::ExactOnly, Method::Fallback, Method::Global];

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::ExactOnly => "exact only (`fallback: []`)",
            Method::Fallback => "fallback chain (default)",
            Method::Global => "global (one window per endpoint)",
        }
    }
}

/// What a checker answered for one request, as far as the measurement needs it.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    status: Status,
    source: Option<Level>,
    rank: Option<f64>,
    bucket_samples: u64,
    /// The coverage of a fallback level: its hours and day types.
    coverage: Option<(Vec<u8>, Vec<DayType>)>,
}

impl Answer {
    fn parse(v: &Value) -> anyhow::Result<Answer> {
        if let Some(e) = v.get("error") {
            bail!("the checker refused an item: {e}");
        }
        let status = match v["status"].as_str() {
            Some("NORMAL") => Status::Normal,
            Some("ANOMALY") => Status::Anomaly,
            Some("INSUFFICIENT_DATA") => Status::InsufficientData,
            _ => bail!("an answer without a status: {v}"),
        };
        let source = match v["baselineSource"].as_str() {
            None => None,
            Some("exact") => Some(Level::Exact),
            Some("nearby") => Some(Level::Nearby),
            Some("dayType") => Some(Level::DayType),
            Some("all") => Some(Level::All),
            Some(other) => bail!("an unknown baselineSource {other}"),
        };
        let coverage = match &v["coverage"] {
            Value::Null => None,
            c => {
                let hours = c["hours"]
                    .as_array()
                    .context("coverage without hours")?
                    .iter()
                    .map(|h| h.as_u64().and_then(|h| u8::try_from(h).ok()))
                    .collect::<Option<Vec<u8>>>()
                    .context("an hour that is not a number")?;
                let days = c["dayTypes"]
                    .as_array()
                    .context("coverage without dayTypes")?
                    .iter()
                    .map(|d| match d.as_str() {
                        Some("weekday") => Some(DayType::Weekday),
                        Some("weekend") => Some(DayType::Weekend),
                        _ => None,
                    })
                    .collect::<Option<Vec<DayType>>>()
                    .context("an unknown day type")?;
                Some((hours, days))
            }
        };
        Ok(Answer {
            status,
            source,
            rank: v["rank"].as_f64(),
            bucket_samples: v["bucketSampleCount"].as_u64().unwrap_or(0),
            coverage,
        })
    }
}

/// Counts of one slice of the test traffic judged one way.
#[derive(Debug, Clone, Default)]
struct Tally {
    requests: u64,
    /// Ordinary requests judged (NORMAL or ANOMALY), and those judged ANOMALY.
    normal_judged: u64,
    false_positives: u64,
    /// Per slowdown factor: injected requests, and those judged ANOMALY.
    injected: BTreeMap<u32, (u64, u64)>,
    insufficient: u64,
}

impl Tally {
    fn add(&mut self, slowdown: Option<u32>, status: Status) {
        self.requests += 1;
        if status == Status::InsufficientData {
            self.insufficient += 1;
        }
        match slowdown {
            None if status != Status::InsufficientData => {
                self.normal_judged += 1;
                self.false_positives += u64::from(status == Status::Anomaly);
            }
            None => {}
            Some(f) => {
                let e = self.injected.entry(f).or_default();
                e.0 += 1;
                e.1 += u64::from(status == Status::Anomaly);
            }
        }
    }

    fn fp_rate(&self) -> f64 {
        ratio(self.false_positives, self.normal_judged)
    }

    fn insufficient_rate(&self) -> f64 {
        ratio(self.insufficient, self.requests)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// `12.3% (45/366)`, with `decimals` decimals of a percent; `-` when nothing was counted.
fn percent(a: u64, b: u64, decimals: usize) -> String {
    if b == 0 {
        return "-".to_owned();
    }
    format!("{:.decimals$}% ({a}/{b})", 100.0 * ratio(a, b))
}

/// The bucket of a request: endpoint index, local hour, day type.
type Slot = (usize, u8, DayType);

fn slot(bucketer: &Bucketer, t: &LabelledTrace) -> Slot {
    let at = chrono::DateTime::from_timestamp_nanos(t.start_unix_nano as i64);
    let b = bucketer.bucket(at);
    (t.endpoint, b.hour, b.day_type)
}

/// A slice of the test traffic: its name, and which buckets belong to it.
type Split = (String, Box<dyn Fn(Slot) -> bool>);

fn key(scenario: &Scenario, (e, hour, day): Slot) -> anyhow::Result<BaselineKey> {
    let spec = &scenario.endpoints[e];
    Ok(BaselineKey::new(&spec.service, &spec.endpoint, hour, day)?)
}

/// The unix nanoseconds of local midnight at the start of `date`.
pub(crate) fn local_midnight(time: &TimeConfig, date: NaiveDate) -> anyhow::Result<u64> {
    let at = time
        .timezone
        .from_local_datetime(&date.and_hms_opt(0, 0, 0).context("midnight")?)
        .single()
        .with_context(|| format!("{date} 00:00 is not one instant in {}", time.timezone))?;
    Ok(u64::try_from(
        at.timestamp_nanos_opt().context("date out of range")?,
    )?)
}

/// What a run found.
#[derive(Debug)]
pub(crate) struct Report {
    /// The acceptance figures, the rank errors and the run's facts.
    pub(crate) rows: Vec<Row>,
    /// The quality table (markdown).
    pub(crate) table: String,
    pub(crate) elapsed: Duration,
}

pub(crate) async fn run(q: &Quality) -> anyhow::Result<Report> {
    let started = Instant::now();
    let time = TimeConfig::default();
    let bucketer = Bucketer::new(&time);
    let config = StatsConfig::default();
    let window_size = config.window_size as usize;

    let end = local_midnight(&time, q.end)?;
    let test_from = end - u64::from(q.test_days) * NANOS_PER_DAY;
    let train_from = test_from - u64::from(q.train_weeks) * 7 * NANOS_PER_DAY;
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX) as u64;
    ensure!(
        end <= now,
        "the test period must lie in the past (the checker refuses start times ahead of now); pick an earlier --end than {}",
        q.end
    );
    let scenario = Scenario::shop();
    let train_gen = LabelledGenerator::new(
        scenario.clone().with_slowdown_rate(q.train_slowdown_rate),
        q.seed,
        &time,
    );
    let test_gen = LabelledGenerator::new(
        scenario.clone().with_slowdown_rate(q.test_slowdown_rate),
        q.seed,
        &time,
    );
    let training = train_gen.traces_between(train_from, test_from);
    let test = test_gen.traces_between(test_from, end);
    eprintln!(
        "quality: seed {}, {} training requests ({} weeks), {} test requests ({} days to {})",
        q.seed,
        training.len(),
        q.train_weeks,
        test.len(),
        q.test_days,
        q.end
    );

    // What the windows hold once the history is in: each bucket's last `window_size` samples
    // in push order (start order), and each endpoint's last `window_size` for the global one.
    let mut windows: HashMap<Slot, Vec<f64>> = HashMap::new();
    let mut global: Vec<Vec<f64>> = vec![Vec::new(); scenario.endpoints.len()];
    for t in &training {
        windows
            .entry(slot(&bucketer, t))
            .or_default()
            .push(t.duration_ms());
        global[t.endpoint].push(t.duration_ms());
    }
    for w in windows.values_mut().chain(global.iter_mut()) {
        let excess = w.len().saturating_sub(window_size);
        w.drain(..excess);
    }

    let server = RedisServer::start_ephemeral();
    let work = std::env::temp_dir().join(format!("anomaly-quality-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let env = vec![
        ("ANOMALY_REDIS__URL", server.url()),
        ("ANOMALY_REDIS__KEY_PREFIX", "quality:".to_owned()),
        ("ANOMALY_INGESTER__OTLP__GRPC_LISTEN", String::new()),
        ("ANOMALY_RECOMPUTER__INTERVAL", "1s".to_owned()),
        ("ANOMALY_RECOMPUTER__FALLBACK_REFRESH", "1s".to_owned()),
    ];
    let store = Store::connect(&RedisConfig {
        url: server.url(),
        key_prefix: "quality:".into(),
        ..RedisConfig::default()
    })?;

    // Training: pushed in start order, one push request at a time, so each window keeps the
    // latest samples of its bucket, as live traffic would leave it.
    let push_started = Instant::now();
    {
        let ingester = Service::start(
            "ingester",
            &q.bin_dir,
            &env,
            work.join("ingester.log"),
            "warn",
            READY_WITHIN,
        )
        .await?;
        let client = reqwest::Client::new();
        let url = format!("{}/v1/traces/ingest", ingester.base);
        for chunk in training.chunks(PUSH_BATCH) {
            let body = json!({"traces": chunk.iter().map(|t| train_gen.ingest_json(t)).collect::<Vec<_>>()});
            let reply = client.post(&url).json(&body).send().await?;
            let status = reply.status();
            let answer: Value = reply.json().await?;
            ensure!(
                status.is_success() && answer["accepted"].as_u64() == Some(chunk.len() as u64),
                "the ingester did not accept a batch of {}: {status} {answer}",
                chunk.len()
            );
        }
    }
    let push_time = push_started.elapsed();

    // The recomputer starts after the last push, so its first drain sees the whole history and
    // computes every endpoint's levels from it.
    let recompute_started = Instant::now();
    let _recomputer = Service::start(
        "recomputer",
        &q.bin_dir,
        &env,
        work.join("recomputer.log"),
        "warn",
        READY_WITHIN,
    )
    .await?;
    let slots: Vec<Slot> = (0..scenario.endpoints.len())
        .flat_map(|e| {
            DAY_TYPES
                .iter()
                .flat_map(move |&d| (0..24).map(move |h| (e, h, d)))
        })
        .collect();
    let keys = slots
        .iter()
        .map(|&s| key(&scenario, s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    wait_for_baselines(&store, &slots, &keys, &windows, &config).await?;
    let recompute_time = recompute_started.elapsed();
    // The windows in Redis are the ones the harness computed (same samples, same order).
    let stored = store.read_windows(&keys).await?;
    let same_windows = slots
        .iter()
        .zip(&stored)
        .filter(|(s, w)| {
            let expected = windows.get(s).map_or(&[][..], Vec::as_slice);
            w.iter().rev().eq(expected.iter())
        })
        .count();

    let with_chain = Service::start(
        "checker",
        &q.bin_dir,
        &env,
        work.join("checker-fallback.log"),
        "warn",
        READY_WITHIN,
    )
    .await?;
    let mut exact_env = env.clone();
    exact_env.push(("ANOMALY_STATS__FALLBACK", "[]".to_owned()));
    let exact_only = Service::start(
        "checker",
        &q.bin_dir,
        &exact_env,
        work.join("checker-exact.log"),
        "warn",
        READY_WITHIN,
    )
    .await?;
    let check_started = Instant::now();
    let (chain_answers, exact_answers) = tokio::try_join!(
        check_all(&with_chain.base, &test_gen, &test),
        check_all(&exact_only.base, &test_gen, &test)
    )?;
    let check_time = check_started.elapsed();

    // The global baseline: one window per endpoint, the same rule.
    let global_baselines: Vec<Option<Baseline>> = global
        .iter()
        .map(|w| Stats::compute(w, config.mad_epsilon_ms).map(|s| Baseline::from_stats(s, 0)))
        .collect();

    let peak = scenario.peak_hours();
    let low: Vec<bool> = scenario.endpoints.iter().map(|e| e.low_traffic()).collect();
    let low2 = low.clone();
    let peak2 = peak.clone();
    let splits: Vec<Split> = vec![
        ("all traffic".into(), Box::new(|_| true)),
        (
            format!("peak hours ({})", hours_text(&peak)),
            Box::new(move |(_, h, _)| peak.contains(&h)),
        ),
        (
            "off-peak hours".into(),
            Box::new(move |(_, h, _)| !peak2.contains(&h)),
        ),
        (
            "weekdays".into(),
            Box::new(|(_, _, d)| d == DayType::Weekday),
        ),
        (
            "weekends".into(),
            Box::new(|(_, _, d)| d == DayType::Weekend),
        ),
        ("busy endpoints".into(), Box::new(move |(e, _, _)| !low[e])),
        (
            "low-traffic endpoints".into(),
            Box::new(move |(e, _, _)| low2[e]),
        ),
    ];
    let mut tallies = vec![vec![Tally::default(); METHODS.len()]; splits.len()];
    let mut sample_count_mismatches = 0u64;
    let mut exact_disagreements = 0u64;
    // Where each method's false positives fall (endpoint, local hour), and which endpoints'
    // slowdowns by the largest factor each method misses (missed, injected).
    let largest = scenario.slowdown_factors.iter().copied().max().unwrap_or(0);
    let mut fp_at: Vec<HashMap<(usize, u8), u64>> = vec![HashMap::new(); METHODS.len()];
    let mut missed: Vec<HashMap<usize, (u64, u64)>> = vec![HashMap::new(); METHODS.len()];
    for ((t, chain), exact) in test.iter().zip(&chain_answers).zip(&exact_answers) {
        let s = slot(&bucketer, t);
        let duration = DurationMs::new(t.duration_ms())?;
        let global_status =
            Verdict::evaluate(duration, global_baselines[t.endpoint].as_ref(), &config).status;
        let expected = windows.get(&s).map_or(0, Vec::len) as u64;
        sample_count_mismatches += u64::from(chain.bucket_samples != expected)
            + u64::from(exact.bucket_samples != expected);
        // A full bucket is judged on its own whatever the chain: both checkers agree on it.
        exact_disagreements +=
            u64::from(chain.source == Some(Level::Exact) && chain.status != exact.status);
        let statuses = [exact.status, chain.status, global_status];
        for (split, (_, applies)) in tallies.iter_mut().zip(&splits) {
            if applies(s) {
                for (tally, status) in split.iter_mut().zip(statuses) {
                    tally.add(t.slowdown, status);
                }
            }
        }
        for (m, status) in statuses.into_iter().enumerate() {
            let anomaly = status == Status::Anomaly;
            match t.slowdown {
                None if anomaly => *fp_at[m].entry((s.0, s.1)).or_default() += 1,
                Some(f) if f == largest => {
                    let e = missed[m].entry(s.0).or_default();
                    e.0 += u64::from(!anomaly);
                    e.1 += 1;
                }
                _ => {}
            }
        }
    }

    // The rank each judged answer reports against the exact rank on the samples behind it.
    let mut unions: HashMap<(usize, Vec<u8>, Vec<DayType>), Vec<f64>> = HashMap::new();
    let mut exact_errors = RankErrors::default();
    let mut level_errors = RankErrors::default();
    for (t, a) in test.iter().zip(&chain_answers) {
        let (Some(source), Some(rank)) = (a.source, a.rank) else {
            continue;
        };
        let (e, hour, day) = slot(&bucketer, t);
        let (hours, days) = match (&a.coverage, source) {
            (_, Level::Exact) => (vec![hour], vec![day]),
            (Some(c), _) => c.clone(),
            (None, _) => bail!("a {} answer without coverage", source.as_str()),
        };
        let sorted = unions
            .entry((e, hours, days))
            .or_insert_with_key(|(e, hours, days)| {
                let mut all: Vec<f64> = days
                    .iter()
                    .flat_map(|&d| hours.iter().map(move |&h| (*e, h, d)))
                    .filter_map(|s| windows.get(&s))
                    .flatten()
                    .copied()
                    .collect();
                all.sort_by(f64::total_cmp);
                all
            });
        let exact = exact_rank(sorted, t.duration_ms());
        let errors = if source == Level::Exact {
            &mut exact_errors
        } else {
            &mut level_errors
        };
        errors.add(rank, exact);
    }

    let name = |e: usize| {
        let spec = &scenario.endpoints[e];
        format!("{} {}", spec.service, spec.endpoint)
    };
    let mut diagnostics = Vec::new();
    for (m, method) in METHODS.iter().enumerate() {
        let mut at: Vec<_> = fp_at[m].iter().collect();
        at.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let total: u64 = fp_at[m].values().sum();
        let top: Vec<String> = at
            .iter()
            .take(3)
            .map(|((e, h), n)| format!("{} at {h:02}:00 ({n})", name(*e)))
            .collect();
        diagnostics.push(Row::new(
            format!(
                "where the false positives of {} fall (the 3 endpoint-hours with most)",
                method.name()
            ),
            format!("{total} in all; {}", top.join(", ")),
            "",
            None,
        ));
    }
    for (m, method) in METHODS.iter().enumerate() {
        let mut by: Vec<_> = missed[m].iter().filter(|(_, v)| v.0 > 0).collect();
        by.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(b.0)));
        let top: Vec<String> = by
            .iter()
            .take(3)
            .map(|(e, (n, of))| format!("{} {n} of {of}", name(**e)))
            .collect();
        diagnostics.push(Row::new(
            format!(
                "{largest}x slowdowns missed by {}, the 3 endpoints with most",
                method.name()
            ),
            top.join(", "),
            "",
            None,
        ));
    }

    let elapsed = started.elapsed();
    let table = quality_table(&splits, &tallies);
    let low_i = splits.len() - 1;
    let all_i = 0;
    let peak_i = 1;
    let low_exact = &tallies[low_i][0];
    let low_chain = &tallies[low_i][1];
    let mut rows = vec![
        Row::new(
            "low-traffic endpoints: insufficient-data rate, exact only -> fallback chain",
            format!(
                "{:.1}% -> {:.1}%",
                100.0 * low_exact.insufficient_rate(),
                100.0 * low_chain.insufficient_rate()
            ),
            "fallback chain <= half of exact only",
            Some(low_chain.insufficient_rate() <= 0.5 * low_exact.insufficient_rate()),
        ),
        Row::new(
            "fallback chain: false-positive rate, all traffic; low-traffic endpoints",
            format!(
                "{:.2}%; {:.2}%",
                100.0 * tallies[all_i][1].fp_rate(),
                100.0 * low_chain.fp_rate()
            ),
            "<= 0.5% each",
            Some(tallies[all_i][1].fp_rate() <= 0.005 && low_chain.fp_rate() <= 0.005),
        ),
        Row::new(
            format!(
                "{}: false-positive rate, exact only; fallback chain; global",
                splits[peak_i].0
            ),
            format!(
                "{:.2}%; {:.2}%; {:.2}%",
                100.0 * tallies[peak_i][0].fp_rate(),
                100.0 * tallies[peak_i][1].fp_rate(),
                100.0 * tallies[peak_i][2].fp_rate()
            ),
            "time buckets below global",
            Some(
                tallies[peak_i][0].fp_rate() < tallies[peak_i][2].fp_rate()
                    && tallies[peak_i][1].fp_rate() < tallies[peak_i][2].fp_rate(),
            ),
        ),
        exact_errors.row("rank of exact-bucket answers vs the exact rank on the bucket's window"),
        level_errors
            .row("rank of fallback answers vs the exact rank on the union of the level's windows"),
        Row::new(
            "the run: requests; windows; time",
            format!(
                "{} training requests pushed in {:.1} s, {} keys recomputed with levels in {:.1} s, windows in Redis equal to the harness's: {same_windows} of {}; {} test requests checked by each checker in {:.1} s (bucketSampleCount different from the harness's window: {sample_count_mismatches}; exact-bucket verdicts that differ between the two checkers: {exact_disagreements}); {:.0} s in all",
                training.len(),
                push_time.as_secs_f64(),
                keys.len(),
                recompute_time.as_secs_f64(),
                keys.len(),
                test.len(),
                check_time.as_secs_f64(),
                elapsed.as_secs_f64()
            ),
            "",
            None,
        ),
    ];
    rows.extend(diagnostics);
    for s in [&with_chain, &exact_only] {
        let warnings = s.warnings();
        ensure!(
            warnings.is_empty(),
            "a checker logged warnings: {}",
            warnings.join("\n")
        );
    }
    ensure!(
        exact_disagreements == 0,
        "{exact_disagreements} requests judged on their exact bucket got another verdict from the exact-only checker"
    );
    ensure!(
        same_windows == keys.len() && sample_count_mismatches == 0,
        "the windows differ from the generated history ({same_windows} of {} equal, {sample_count_mismatches} answers with another bucket size); logs in {}",
        keys.len(),
        work.display()
    );
    // The contamination guard through a one-hour incident, on its own Redis and services.
    let mut table = table;
    for c in q.contamination() {
        let guard = crate::contamination::run(&c).await?;
        rows.extend(guard.rows);
        table = format!("{table}\n{}", guard.table);
    }
    Ok(Report {
        rows,
        table,
        elapsed: started.elapsed(),
    })
}

/// `11:00-20:00` for hours 11 to 19 (contiguous, as the load wave's peak is).
fn hours_text(hours: &[u8]) -> String {
    match (hours.first(), hours.last()) {
        (Some(a), Some(b)) => format!("{a:02}:00-{:02}:00", (b + 1) % 24),
        _ => "none".to_owned(),
    }
}

/// Waits until every key's baseline and every level hold what the history put in the windows:
/// the recomputer has drained everything and computed each endpoint's levels since the last
/// push.
async fn wait_for_baselines(
    store: &Store,
    slots: &[Slot],
    keys: &[BaselineKey],
    windows: &HashMap<Slot, Vec<f64>>,
    config: &StatsConfig,
) -> anyhow::Result<()> {
    let len = |s: &Slot| windows.get(s).map_or(0, Vec::len) as u64;
    let union = |e: usize, days: &[DayType], hours: &[u8]| -> u64 {
        days.iter()
            .flat_map(|&d| hours.iter().map(move |&h| len(&(e, h, d))))
            .sum()
    };
    let every_hour: Vec<u8> = (0..24).collect();
    let n = config.nearby_hours;
    let deadline = Instant::now() + RECOMPUTE_WITHIN;
    loop {
        let stored = store.stored_baselines(keys).await?;
        let mut pending = 0;
        // The first few keys still pending, stored against expected, for the error.
        let mut examples = Vec::new();
        for ((s, b), k) in slots.iter().zip(&stored).zip(keys) {
            let &(e, hour, day) = s;
            let exact = b
                .as_ref()
                .and_then(|b| b.exact.as_ref())
                .map(|x| x.baseline.sample_count);
            let level = |l: Level| {
                b.as_ref()
                    .and_then(|b| b.level(l))
                    .map(|f| f.summary.baseline.sample_count)
            };
            // The recomputer computes levels only for an endpoint with a thin bucket (one with
            // fewer samples than the rule needs); an endpoint whose buckets are all full has none.
            let thin_endpoint = DAY_TYPES
                .iter()
                .any(|&d| (0..24).any(|h| len(&(e, h, d)) < u64::from(config.min_samples)));
            let mut ok = exact.unwrap_or(0) == len(s);
            if thin_endpoint {
                ok &= level(Level::DayType).unwrap_or(0) == union(e, &[day], &every_hour)
                    && level(Level::All).unwrap_or(0) == union(e, &DAY_TYPES, &every_hour);
            }
            // A thin bucket also has its nearby level: the same day type, `n` hours either side.
            if len(s) < u64::from(config.min_samples) {
                let hours: Vec<u8> = (0..=2 * n).map(|i| (hour + 24 - n + i) % 24).collect();
                ok &= level(Level::Nearby).unwrap_or(0) == union(e, &[day], &hours);
            }
            pending += u64::from(!ok);
            if !ok && examples.len() < 3 {
                examples.push(format!(
                    "{} {} {hour:02}h {}: exact {exact:?} of {}, dayType {:?} of {}, all {:?} of {}, nearby {:?}",
                    k.service(),
                    k.endpoint(),
                    day.as_str(),
                    len(s),
                    level(Level::DayType),
                    union(e, &[day], &every_hour),
                    level(Level::All),
                    union(e, &DAY_TYPES, &every_hour),
                    level(Level::Nearby),
                ));
            }
        }
        if pending == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{pending} of {} keys still lack the baselines or levels of the history after {RECOMPUTE_WITHIN:?}, e.g. {}",
                keys.len(),
                examples.join("; ")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Checks every request through `base`'s batch API, answers in request order.
async fn check_all(
    base: &str,
    generator: &LabelledGenerator,
    traces: &[LabelledTrace],
) -> anyhow::Result<Vec<Answer>> {
    let client = reqwest::Client::new();
    let url = format!("{base}/v1/anomaly/check/batch");
    let mut answers = Vec::with_capacity(traces.len());
    for chunk in traces.chunks(CHECK_BATCH) {
        let body =
            json!({"items": chunk.iter().map(|t| generator.check_json(t)).collect::<Vec<_>>()});
        let reply = client.post(&url).json(&body).send().await?;
        let status = reply.status();
        let answer: Value = reply.json().await?;
        ensure!(status.is_success(), "{url} answered {status}: {answer}");
        let results = answer["results"]
            .as_array()
            .with_context(|| format!("{url} answered without results: {answer}"))?;
        ensure!(
            results.len() == chunk.len(),
            "{url} answered {} results for {} items",
            results.len(),
            chunk.len()
        );
        for r in results {
            answers.push(Answer::parse(r)?);
        }
    }
    Ok(answers)
}

/// Differences between reported and exact ranks.
#[derive(Debug, Default)]
struct RankErrors {
    errors: Vec<f64>,
    /// Differences beyond the documented bound (the gap between the stored levels around
    /// either rank) plus the answer's rounding to 3 decimals.
    beyond_bound: u64,
}

impl RankErrors {
    fn add(&mut self, reported: f64, exact: f64) {
        let error = (reported - exact).abs();
        let bound = Quantiles::rank_error_bound(exact).max(Quantiles::rank_error_bound(reported));
        self.beyond_bound += u64::from(error > bound + 0.0005 + 1e-9);
        self.errors.push(error);
    }

    fn row(&mut self, name: &str) -> Row {
        self.errors.sort_by(f64::total_cmp);
        let n = self.errors.len();
        let p99 = if n == 0 {
            0.0
        } else {
            self.errors[((n - 1) as f64 * 0.99).round() as usize]
        };
        let max = self.errors.last().copied().unwrap_or(0.0);
        Row::new(
            name,
            format!(
                "{n} answers: max {max:.4}, p99 {p99:.4}; beyond the documented bound: {}",
                self.beyond_bound
            ),
            "within README's rank table (+ 0.0005 rounding)",
            Some(self.beyond_bound == 0),
        )
    }
}

/// The quality table: one row per slice of the traffic and way of judging it.
fn quality_table(splits: &[Split], tallies: &[Vec<Tally>]) -> String {
    let factors: Vec<u32> = {
        let mut f: Vec<u32> = tallies
            .iter()
            .flatten()
            .flat_map(|t| t.injected.keys().copied())
            .collect();
        f.sort_unstable();
        f.dedup();
        f
    };
    let mut out = String::from("| traffic | baseline | requests | false positives |");
    for f in &factors {
        let _ = write!(out, " recall {f}x |");
    }
    out.push_str(" insufficient data |\n|---|---|---|---|");
    for _ in &factors {
        out.push_str("---|");
    }
    out.push_str("---|\n");
    for ((name, _), row) in splits.iter().zip(tallies) {
        for (method, t) in METHODS.iter().zip(row) {
            let _ = write!(
                out,
                "| {name} | {} | {} | {} |",
                method.name(),
                t.requests,
                percent(t.false_positives, t.normal_judged, 2)
            );
            for f in &factors {
                let (n, caught) = t.injected.get(f).copied().unwrap_or_default();
                let _ = write!(out, " {} |", percent(caught, n, 1));
            }
            let _ = writeln!(out, " {} |", percent(t.insufficient, t.requests, 1));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_count_each_kind_once() {
        let mut t = Tally::default();
        let cases = [
            (None, Status::Normal),
            (None, Status::Anomaly),
            (None, Status::InsufficientData),
            (Some(2), Status::Normal),
            (Some(2), Status::Anomaly),
            (Some(10), Status::InsufficientData),
        ];
        for (slowdown, status) in cases {
            t.add(slowdown, status);
        }
        assert_eq!(t.requests, 6);
        assert_eq!((t.false_positives, t.normal_judged), (1, 2));
        assert_eq!(t.injected[&2], (2, 1));
        assert_eq!(t.injected[&10], (1, 0));
        assert_eq!(t.insufficient, 2);
        assert_eq!(percent(1, 8, 1), "12.5% (1/8)");
        assert_eq!(percent(0, 0, 2), "-");
    }

    #[test]
    fn answers_parse_as_the_checker_writes_them() {
        let judged = json!({"status": "ANOMALY", "baselineSource": "nearby", "rank": 0.994,
            "bucketSampleCount": 12,
            "coverage": {"hours": [23, 0, 1], "dayTypes": ["weekend"], "sampleCount": 80}});
        let a = Answer::parse(&judged).unwrap();
        assert_eq!(a.status, Status::Anomaly);
        assert_eq!(a.source, Some(Level::Nearby));
        assert_eq!(a.rank, Some(0.994));
        assert_eq!(a.coverage, Some((vec![23, 0, 1], vec![DayType::Weekend])));
        let thin = json!({"status": "INSUFFICIENT_DATA", "baselineSource": null, "rank": null,
            "bucketSampleCount": 3, "coverage": null});
        let a = Answer::parse(&thin).unwrap();
        assert_eq!(
            (a.status, a.source, a.bucket_samples),
            (Status::InsufficientData, None, 3)
        );
        assert!(Answer::parse(&json!({"error": {"code": "INVALID_DURATION"}})).is_err());
    }

    #[test]
    fn rank_errors_hold_answers_to_the_documented_bound() {
        let mut e = RankErrors::default();
        // Within 0.01 between p94 and p99, plus rounding.
        e.add(0.955, 0.9601);
        assert_eq!(e.beyond_bound, 0);
        e.add(0.999, 0.99);
        assert_eq!(e.beyond_bound, 1);
        assert_eq!(e.row("r").verdict, "MISSED");
    }

    #[test]
    fn local_midnight_is_in_the_calendar_zone() {
        let date = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        // Monday 2026-11-23 00:00 in Asia/Taipei.
        assert_eq!(
            local_midnight(&TimeConfig::default(), date).unwrap(),
            1_795_363_200 * 1_000_000_000
        );
        assert_eq!(hours_text(&[11, 12, 19]), "11:00-20:00");
    }
}
