//! The demo traffic has the patterns the demo relies on: a slow hour, a slower weekend endpoint,
//! anomalies at the requested rate that the rule catches, enough samples per bucket, and the
//! same traces for the same seed.

use std::collections::BTreeMap;

use anomaly_core::Stats;
use anomaly_core::{
    Baseline, Bucketer, DayType, DurationMs, StatsConfig, Status, TimeConfig, Verdict,
};
use tracegen::traffic::{GenTrace, Generator, Profile, Root};

const HOUR: u64 = 3_600 * 1_000_000_000;
const DAY: u64 = 24 * HOUR;
/// Monday 2026-11-23 00:00 in Asia/Taipei (the default calendar), as unix nanoseconds.
const MONDAY: u64 = 1_795_363_200 * 1_000_000_000;

fn generator(seed: u64) -> Generator {
    Generator::new(Profile::demo(), seed, &TimeConfig::default())
}

fn median(mut xs: Vec<f64>) -> f64 {
    assert!(!xs.is_empty());
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Ordinary (not injected) durations of one endpoint between two instants.
fn durations(traces: &[GenTrace], endpoint: &str, from: u64, to: u64) -> Vec<f64> {
    traces
        .iter()
        .filter(|t| t.endpoint == endpoint && !t.anomaly)
        .filter(|t| (from..to).contains(&t.start_unix_nano))
        .map(|t| f64::from(t.duration_ms))
        .collect()
}

#[test]
fn the_slow_hour_is_clearly_slower() {
    let g = generator(1);
    let week = g.traces_between(MONDAY, MONDAY + 5 * DAY);
    let (mut before, mut slow, mut after) = (Vec::new(), Vec::new(), Vec::new());
    for day in 0..5 {
        let d = MONDAY + day * DAY;
        before.extend(durations(
            &week,
            "POST /api/checkout",
            d + 13 * HOUR,
            d + 14 * HOUR,
        ));
        slow.extend(durations(
            &week,
            "POST /api/checkout",
            d + 14 * HOUR,
            d + 15 * HOUR,
        ));
        after.extend(durations(
            &week,
            "POST /api/checkout",
            d + 15 * HOUR,
            d + 16 * HOUR,
        ));
    }
    let (before, slow, after) = (median(before), median(slow), median(after));
    assert!(
        slow > 2.5 * before,
        "slow hour {slow} ms vs 13:00 {before} ms"
    );
    assert!(
        slow > 2.5 * after,
        "slow hour {slow} ms vs 15:00 {after} ms"
    );
    // The slow hour is checkout's only: the cart next to it keeps its pace.
    let cart = |h: u64| {
        median(
            (0..5)
                .flat_map(|day| {
                    let d = MONDAY + day * DAY;
                    durations(&week, "GET /api/cart", d + h * HOUR, d + (h + 1) * HOUR)
                })
                .collect(),
        )
    };
    assert!(
        cart(14) < 1.3 * cart(13),
        "cart {} vs {}",
        cart(14),
        cart(13)
    );
}

#[test]
fn the_weekend_endpoint_is_slower_on_weekends_only() {
    let g = generator(2);
    let week = g.traces_between(MONDAY, MONDAY + 7 * DAY);
    let weekdays = |ep: &str| median(durations(&week, ep, MONDAY, MONDAY + 5 * DAY));
    let weekend = |ep: &str| median(durations(&week, ep, MONDAY + 5 * DAY, MONDAY + 7 * DAY));
    let search = weekend("GET /api/search") / weekdays("GET /api/search");
    assert!(
        (1.7..2.3).contains(&search),
        "search weekend/weekday = {search}"
    );
    for ep in ["GET /api/cart", "POST /api/pay", "GET /api/products/{id}"] {
        let ratio = weekend(ep) / weekdays(ep);
        assert!(
            (0.85..1.15).contains(&ratio),
            "{ep}: weekend/weekday = {ratio}"
        );
    }
}

#[test]
fn latency_is_lognormal_around_the_model_median() {
    let g = generator(3);
    let traces = g.traces_between(MONDAY, MONDAY + 5 * DAY);
    // payments POST /api/pay (index 4): sigma 0.35, no slow hour, no weekend factor.
    let logs: Vec<f64> = traces
        .iter()
        .filter(|t| t.endpoint == "POST /api/pay" && !t.anomaly)
        .map(|t| (f64::from(t.duration_ms) + 0.5) / g.median_ms(4, t.start_unix_nano))
        .map(f64::ln)
        .collect();
    let n = logs.len() as f64;
    let mean = logs.iter().sum::<f64>() / n;
    let sd = (logs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    assert!(mean.abs() < 0.03, "log-ratio mean {mean}");
    assert!((sd - 0.35).abs() < 0.03, "log-ratio sd {sd}");
}

#[test]
fn anomalies_come_at_the_requested_rate() {
    for (rate, tolerance) in [(0.0, 0.0), (0.005, 0.001), (0.05, 0.004), (1.0, 0.0)] {
        let mut profile = Profile::demo();
        profile.anomaly_rate = rate;
        let g = Generator::new(profile, 4, &TimeConfig::default());
        let traces = g.traces_between(MONDAY, MONDAY + 7 * DAY);
        let injected = traces.iter().filter(|t| t.anomaly).count();
        let got = injected as f64 / traces.len() as f64;
        assert!(
            (got - rate).abs() <= tolerance,
            "{injected} of {} = {got}",
            traces.len()
        );
    }
}

#[test]
fn the_rule_catches_the_injected_anomalies_and_little_else() {
    // The demo's rate: rare enough not to lift the p95 they are judged against.
    let g = generator(4);
    let traces = g.traces_between(MONDAY, MONDAY + 7 * DAY);

    // Judge every trace against its own bucket's baseline, as the services would.
    let bucketer = Bucketer::new(&TimeConfig::default());
    let mut windows: BTreeMap<(String, u8, DayType), Vec<f64>> = BTreeMap::new();
    let key = |t: &GenTrace| {
        let b = bucketer.bucket(chrono::DateTime::from_timestamp_nanos(
            t.start_unix_nano as i64,
        ));
        (t.endpoint.clone(), b.hour, b.day_type)
    };
    for t in &traces {
        windows
            .entry(key(t))
            .or_default()
            .push(f64::from(t.duration_ms));
    }
    let config = StatsConfig::default();
    let (mut caught, mut judged, mut false_alarms, mut normals) = (0, 0, 0, 0);
    for t in traces
        .iter()
        .filter(|t| t.service != "inventory" && t.service != "admin")
    {
        let stats = Stats::compute(&windows[&key(t)], config.mad_epsilon_ms).unwrap();
        let baseline = Baseline::from_stats(stats, 0);
        let duration = DurationMs::new(f64::from(t.duration_ms)).unwrap();
        let verdict = Verdict::evaluate(duration, Some(&baseline), &config);
        if t.anomaly {
            judged += 1;
            caught += usize::from(verdict.status == Status::Anomaly);
        } else {
            normals += 1;
            false_alarms += usize::from(verdict.status == Status::Anomaly);
        }
    }
    assert!(
        caught as f64 > 0.95 * judged as f64,
        "caught {caught} of {judged}"
    );
    assert!(
        (false_alarms as f64) < 0.002 * normals as f64,
        "{false_alarms} false alarms in {normals}"
    );
}

#[test]
fn a_week_fills_every_bucket_but_the_rare_endpoints() {
    let g = generator(5);
    let bucketer = Bucketer::new(&TimeConfig::default());
    // Any 168 consecutive hours cover each (weekday, hour) once; start mid-week on purpose.
    let from = MONDAY + 2 * DAY + 7 * HOUR + 1_234_567;
    let mut counts: BTreeMap<(String, u8, DayType), u64> = BTreeMap::new();
    for t in g.traces_between(from, from + 7 * DAY) {
        if t.root == Root::Lost {
            continue; // Never complete, so never a sample.
        }
        let b = bucketer.bucket(chrono::DateTime::from_timestamp_nanos(
            t.start_unix_nano as i64,
        ));
        *counts.entry((t.endpoint, b.hour, b.day_type)).or_default() += 1;
    }
    let min_samples = u64::from(StatsConfig::default().min_samples);
    for spec in &g.profile().endpoints {
        for hour in 0..24 {
            for day_type in [DayType::Weekday, DayType::Weekend] {
                let n = counts
                    .get(&(spec.endpoint.clone(), hour, day_type))
                    .copied()
                    .unwrap_or(0);
                if spec.service == "admin" {
                    assert!(
                        n < min_samples / 2,
                        "{} {hour} {day_type}: {n}",
                        spec.endpoint
                    );
                } else {
                    assert!(
                        n >= min_samples + 20,
                        "{} {hour} {day_type}: {n}",
                        spec.endpoint
                    );
                }
            }
        }
    }
}

#[test]
fn the_same_seed_gives_the_same_traces() {
    let a = generator(6).traces_between(MONDAY, MONDAY + 6 * HOUR);
    let b = generator(6).traces_between(MONDAY, MONDAY + 6 * HOUR);
    let c = generator(7).traces_between(MONDAY, MONDAY + 6 * HOUR);
    assert!(a.len() > 1_000);
    assert_eq!(a, b);
    assert_ne!(a, c);
    let ids = |ts: &[GenTrace]| {
        ts.iter()
            .map(|t| t.trace_id.clone())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert!(
        ids(&a).is_disjoint(&ids(&c)),
        "other seeds give other trace IDs"
    );
    assert_eq!(ids(&a).len(), a.len(), "trace IDs are unique");
}

#[test]
fn a_range_cut_anywhere_gives_the_same_traces() {
    let g = generator(8);
    let whole = g.traces_between(MONDAY, MONDAY + 2 * HOUR);
    let mut pieces = Vec::new();
    let cuts = [
        MONDAY,
        MONDAY + 1,
        MONDAY + 59_999_999_999,
        MONDAY + 3_000_000_000_123,
        MONDAY + 2 * HOUR,
    ];
    for w in cuts.windows(2) {
        pieces.extend(g.traces_between(w[0], w[1]));
    }
    assert_eq!(whole, pieces);
    assert!(g.traces_between(MONDAY, MONDAY).is_empty());
    assert!(
        whole
            .windows(2)
            .all(|w| w[0].start_unix_nano <= w[1].start_unix_nano)
    );
}

#[test]
fn traces_have_tempo_shapes() {
    let g = generator(9);
    let traces = g.traces_between(MONDAY, MONDAY + DAY);
    assert!(traces.iter().all(|t| {
        t.trace_id.len() == 32
            && t.trace_id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    }));
    let short = traces
        .iter()
        .filter(|t| t.trace_id.starts_with("0000000000000000"))
        .count();
    assert!(short > traces.len() / 20, "some 64-bit IDs: {short}");
    let zero = traces.iter().filter(|t| t.duration_ms == 0).count();
    assert!(
        zero > 100,
        "sub-millisecond traces whose durationMs Tempo omits: {zero}"
    );
    let late = traces
        .iter()
        .filter(|t| matches!(t.root, Root::Late(_)))
        .count();
    let lost = traces.iter().filter(|t| t.root == Root::Lost).count();
    assert!(late > 50 && lost > 10, "late {late}, lost {lost}");

    let zero_trace = traces.iter().find(|t| t.duration_ms == 0).unwrap();
    let json = zero_trace.to_ingest_json();
    assert!(json.get("durationMs").is_none(), "{json}");
    assert_eq!(
        json["startTimeUnixNano"],
        zero_trace.start_unix_nano.to_string()
    );
    let partial = zero_trace.to_tempo_partial();
    assert_eq!(partial.root_service, tracegen::tempo::PARTIAL_ROOT);
    assert_eq!(partial.root_name, None);
}
