//! Demo traffic: a deterministic model of a few services whose latencies follow the hour of the
//! day and the weekday/weekend split, with lognormal noise and injected anomalies.
//!
//! Generation is stateless per (endpoint, minute): each minute of each endpoint draws from its
//! own random stream seeded by (seed, endpoint, minute). So the traces of a range do not depend
//! on how the range is cut into calls, a live feed and a history agree, and two runs with one
//! seed produce the same trace IDs, start times and durations.

use std::time::Duration;

use anomaly_core::{Bucketer, DayType, TimeConfig};
use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

use crate::tempo;

pub(crate) const NANOS_PER_MINUTE: u64 = 60_000_000_000;

/// One endpoint of the model.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointSpec {
    pub service: String,
    /// The root span name, e.g. `POST /api/checkout`.
    pub endpoint: String,
    /// Median latency (ms) in an ordinary weekday hour, before the hour-of-day wave.
    pub median_ms: f64,
    /// Lognormal shape: durations are `median * exp(sigma * z)`, z standard normal.
    pub sigma: f64,
    /// Mean requests per minute (Poisson) before the daily load wave and `rate_scale`.
    pub per_minute: f64,
    /// Median multiplier during [`Profile::slow_hour`].
    pub slow_hour_factor: f64,
    /// Median multiplier on weekend days (and holidays).
    pub weekend_factor: f64,
}

impl EndpointSpec {
    fn new(service: &str, endpoint: &str, median_ms: f64, sigma: f64, per_minute: f64) -> Self {
        EndpointSpec {
            service: service.to_owned(),
            endpoint: endpoint.to_owned(),
            median_ms,
            sigma,
            per_minute,
            slow_hour_factor: 1.0,
            weekend_factor: 1.0,
        }
    }
}

/// The whole model: endpoints, their patterns and the fault mix.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub endpoints: Vec<EndpointSpec>,
    /// Local hour (0-23) in which endpoints with a `slow_hour_factor` slow down.
    pub slow_hour: u8,
    /// Share of traces made anomalously slow (0-1).
    pub anomaly_rate: f64,
    /// An anomalous trace lasts the bucket's median times a factor drawn from this range, far
    /// above any threshold the rule derives from ordinary traffic.
    pub anomaly_factor: (f64, f64),
    /// Share of traces whose root span reaches Tempo late: Tempo first lists them as partial.
    pub late_root_rate: f64,
    /// Share of traces whose root span never arrives: they stay partial.
    pub lost_root_rate: f64,
    /// Multiplies every endpoint's request rate.
    pub rate_scale: f64,
}

impl Profile {
    /// The demo's shop: five services, seven endpoints.
    ///
    /// - `checkout POST /api/checkout` is 3x slower in the slow hour (a settlement batch).
    /// - `search GET /api/search` is 2x slower on weekends (bigger weekend catalogue queries).
    /// - `inventory GET /api/stock` answers in under a millisecond, so Tempo often omits its
    ///   `durationMs` (a zero).
    /// - `admin GET /api/reports/export` is rare: its buckets stay below `min_samples`.
    pub fn demo() -> Self {
        let mut checkout = EndpointSpec::new("checkout", "POST /api/checkout", 180.0, 0.25, 1.0);
        checkout.slow_hour_factor = 3.0;
        let mut search = EndpointSpec::new("search", "GET /api/search", 90.0, 0.3, 1.0);
        search.weekend_factor = 2.0;
        Profile {
            endpoints: vec![
                checkout,
                EndpointSpec::new("checkout", "GET /api/cart", 40.0, 0.2, 1.0),
                search,
                EndpointSpec::new("catalog", "GET /api/products/{id}", 25.0, 0.3, 1.2),
                EndpointSpec::new("payments", "POST /api/pay", 250.0, 0.35, 1.0),
                EndpointSpec::new("inventory", "GET /api/stock", 0.8, 0.4, 1.0),
                EndpointSpec::new("admin", "GET /api/reports/export", 1200.0, 0.3, 0.02),
            ],
            slow_hour: 14,
            anomaly_rate: 0.005,
            anomaly_factor: (8.0, 20.0),
            late_root_rate: 0.02,
            lost_root_rate: 0.005,
            rate_scale: 1.0,
        }
    }
}

/// When a trace's root span reaches Tempo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root {
    /// With the rest of the trace.
    OnTime,
    /// This long after the trace ended; until then Tempo lists the trace as partial.
    Late(Duration),
    /// Never: Tempo keeps listing the trace as partial.
    Lost,
}

/// One generated request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenTrace {
    /// 32 lowercase hex digits; some have leading zeros (64-bit IDs), which Tempo strips.
    pub trace_id: String,
    pub service: String,
    pub endpoint: String,
    pub start_unix_nano: u64,
    /// Whole milliseconds, as Tempo reports them (sub-millisecond traces are 0).
    pub duration_ms: u32,
    /// Injected as an anomaly.
    pub anomaly: bool,
    pub root: Root,
}

impl GenTrace {
    pub fn end_unix_nano(&self) -> u64 {
        self.start_unix_nano + u64::from(self.duration_ms) * 1_000_000
    }

    /// The trace as Tempo lists it once complete.
    pub fn to_tempo(&self) -> tempo::Trace {
        tempo::Trace::new(
            &self.trace_id,
            &self.service,
            &self.endpoint,
            self.start_unix_nano,
            self.duration_ms,
        )
    }

    /// The trace as Tempo lists it while its root span is missing: only the child spans, so a
    /// shorter duration and no root names.
    pub fn to_tempo_partial(&self) -> tempo::Trace {
        tempo::Trace::partial(
            &self.trace_id,
            self.start_unix_nano + u64::from(self.duration_ms / 4) * 1_000_000,
            self.duration_ms / 2,
        )
    }

    /// The trace as an item of `POST /v1/traces/ingest`: Tempo's field names, the start as a
    /// decimal string, `durationMs` omitted when zero (as Tempo does).
    pub fn to_ingest_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("traceID".into(), json!(self.trace_id));
        m.insert("rootServiceName".into(), json!(self.service));
        m.insert("rootTraceName".into(), json!(self.endpoint));
        m.insert(
            "startTimeUnixNano".into(),
            json!(self.start_unix_nano.to_string()),
        );
        if self.duration_ms > 0 {
            m.insert("durationMs".into(), json!(self.duration_ms));
        }
        Value::Object(m)
    }
}

/// Generates traces from a [`Profile`], a seed and a calendar.
#[derive(Debug, Clone)]
pub struct Generator {
    profile: Profile,
    seed: u64,
    bucketer: Bucketer,
}

impl Generator {
    pub fn new(profile: Profile, seed: u64, time: &TimeConfig) -> Self {
        Generator {
            profile,
            seed,
            bucketer: Bucketer::new(time),
        }
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The model's median latency (ms) of endpoint `index` at an instant: the number the
    /// ordinary traffic of that bucket is centred on.
    pub fn median_ms(&self, index: usize, at_unix_nano: u64) -> f64 {
        let spec = &self.profile.endpoints[index];
        let bucket = self.bucketer.bucket(instant(at_unix_nano));
        let mut median = spec.median_ms * latency_wave(bucket.hour);
        if bucket.hour == self.profile.slow_hour {
            median *= spec.slow_hour_factor;
        }
        if bucket.day_type == DayType::Weekend {
            median *= spec.weekend_factor;
        }
        median
    }

    /// Every trace starting in `[from, to)` (unix nanoseconds), ordered by start time.
    pub fn traces_between(&self, from_unix_nano: u64, to_unix_nano: u64) -> Vec<GenTrace> {
        let mut out = Vec::new();
        if to_unix_nano <= from_unix_nano {
            return out;
        }
        let first = from_unix_nano / NANOS_PER_MINUTE;
        let last = (to_unix_nano - 1) / NANOS_PER_MINUTE;
        for minute in first..=last {
            for index in 0..self.profile.endpoints.len() {
                self.minute_of(index, minute, &mut out);
            }
        }
        out.retain(|t| (from_unix_nano..to_unix_nano).contains(&t.start_unix_nano));
        out.sort_by(|a, b| (a.start_unix_nano, &a.trace_id).cmp(&(b.start_unix_nano, &b.trace_id)));
        out
    }

    /// The traces endpoint `index` starts in one minute (minutes since the epoch).
    fn minute_of(&self, index: usize, minute: u64, out: &mut Vec<GenTrace>) {
        let spec = &self.profile.endpoints[index];
        let p = &self.profile;
        let minute_start = minute * NANOS_PER_MINUTE;
        let mut rng = StdRng::seed_from_u64(mix(self.seed, index as u64, minute));
        let hour = self.bucketer.bucket(instant(minute_start)).hour;
        let mean = spec.per_minute * p.rate_scale * load_wave(hour);
        let count = poisson(&mut rng, mean);
        let median = self.median_ms(index, minute_start);
        for _ in 0..count {
            let start = minute_start + rng.random_range(0..NANOS_PER_MINUTE);
            let anomaly = rng.random::<f64>() < p.anomaly_rate;
            let ms = if anomaly {
                median * rng.random_range(p.anomaly_factor.0..=p.anomaly_factor.1)
            } else {
                median * (spec.sigma * standard_normal(&mut rng)).exp()
            };
            let root_draw = rng.random::<f64>();
            let root = if root_draw < p.lost_root_rate {
                Root::Lost
            } else if root_draw < p.lost_root_rate + p.late_root_rate {
                Root::Late(Duration::from_millis(rng.random_range(5_000..45_000)))
            } else {
                Root::OnTime
            };
            // One in ten IDs is 64-bit, so it has leading zeros Tempo strips.
            let id: u128 = if rng.random_range(0..10) == 0 {
                u128::from(rng.random::<u64>())
            } else {
                rng.random()
            };
            out.push(GenTrace {
                trace_id: format!("{id:032x}"),
                service: spec.service.clone(),
                endpoint: spec.endpoint.clone(),
                start_unix_nano: start,
                // Tempo truncates to whole milliseconds; the cast saturates absurd values.
                duration_ms: ms.floor() as u32,
                anomaly,
                root,
            });
        }
    }
}

pub(crate) fn instant(unix_nano: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(i64::try_from(unix_nano).unwrap_or(i64::MAX))
}

/// Latency over the day: about 15 % above average mid-afternoon, below it at night.
pub(crate) fn latency_wave(hour: u8) -> f64 {
    1.0 + 0.15 * phase(hour).sin()
}

/// Load over the day: 20 % above average mid-afternoon, 20 % below at night. Even the quietest
/// weekend hour of a week (two of them) then expects about 96 requests per endpoint, safely
/// above the default `min_samples` of 50.
fn load_wave(hour: u8) -> f64 {
    1.0 + 0.2 * phase(hour).sin()
}

/// Zero at 09:00 and 21:00, peaking at 15:00.
pub(crate) fn phase(hour: u8) -> f64 {
    2.0 * std::f64::consts::PI * (f64::from(hour) - 9.0) / 24.0
}

/// A 64-bit mix of the three inputs (splitmix64's finaliser after each), so nearby seeds,
/// endpoints and minutes get unrelated streams.
pub(crate) fn mix(seed: u64, endpoint: u64, minute: u64) -> u64 {
    let mut h = 0u64;
    for v in [seed, endpoint, minute] {
        h = h.wrapping_add(v).wrapping_add(0x9e37_79b9_7f4a_7c15);
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^= h >> 31;
    }
    h
}

/// Box-Muller: one standard normal draw.
pub(crate) fn standard_normal(rng: &mut StdRng) -> f64 {
    // 1 - u lies in (0, 1], so the logarithm is finite.
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A Poisson draw: Knuth's product method for small means, a rounded normal for large ones.
pub(crate) fn poisson(rng: &mut StdRng, mean: f64) -> u64 {
    if mean <= 0.0 {
        return 0;
    }
    if mean > 50.0 {
        let x = mean + mean.sqrt() * standard_normal(rng);
        return x.round().max(0.0) as u64;
    }
    let limit = (-mean).exp();
    let mut k = 0;
    let mut p = rng.random::<f64>();
    while p > limit {
        k += 1;
        p *= rng.random::<f64>();
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400 * 1_000_000_000;
    /// Monday 2026-11-23 00:00 in Asia/Taipei (UTC+8), as unix nanoseconds.
    const MONDAY_TAIPEI: u64 = 1_795_363_200 * 1_000_000_000;

    fn generator(seed: u64) -> Generator {
        Generator::new(Profile::demo(), seed, &TimeConfig::default())
    }

    #[test]
    fn the_reference_monday_is_a_taipei_monday_midnight() {
        let b = Bucketer::new(&TimeConfig::default()).bucket(instant(MONDAY_TAIPEI));
        assert_eq!((b.hour, b.day_type), (0, DayType::Weekday));
        assert_eq!(b.local_date.to_string(), "2026-11-23");
        let sat = Bucketer::new(&TimeConfig::default()).bucket(instant(MONDAY_TAIPEI + 5 * DAY));
        assert_eq!(sat.day_type, DayType::Weekend);
    }

    #[test]
    fn poisson_mean_is_close() {
        let mut rng = StdRng::seed_from_u64(7);
        for mean in [0.02, 0.9, 5.0, 80.0] {
            let n = 20_000;
            let total: u64 = (0..n).map(|_| poisson(&mut rng, mean)).sum();
            let got = total as f64 / f64::from(n);
            assert!((got - mean).abs() < 0.05 * mean + 0.01, "{mean}: {got}");
        }
        assert_eq!(poisson(&mut rng, 0.0), 0);
    }

    #[test]
    fn normal_draws_have_unit_spread() {
        let mut rng = StdRng::seed_from_u64(11);
        let xs: Vec<f64> = (0..50_000).map(|_| standard_normal(&mut rng)).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.02, "{mean}");
        assert!((var - 1.0).abs() < 0.03, "{var}");
        assert!(xs.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn model_medians_follow_the_calendar() {
        let g = generator(1);
        let hour = 3_600 * 1_000_000_000;
        // Endpoint 0 is checkout's slow-hour endpoint, 2 search's weekend endpoint.
        let before = g.median_ms(0, MONDAY_TAIPEI + 13 * hour);
        let slow = g.median_ms(0, MONDAY_TAIPEI + 14 * hour);
        assert!(slow > 2.5 * before, "{slow} vs {before}");
        let weekday = g.median_ms(2, MONDAY_TAIPEI + 10 * hour);
        let weekend = g.median_ms(2, MONDAY_TAIPEI + 5 * DAY + 10 * hour);
        assert!((weekend / weekday - 2.0).abs() < 1e-9);
        // Endpoints without a weekend factor keep their median.
        let cart = (
            g.median_ms(1, MONDAY_TAIPEI + 10 * hour),
            g.median_ms(1, MONDAY_TAIPEI + 5 * DAY + 10 * hour),
        );
        assert!((cart.0 - cart.1).abs() < 1e-9);
    }

    #[test]
    fn mix_separates_neighbours() {
        let a = mix(1, 0, 100);
        // (2, 0, 100) once collided with (1, 1, 100) when the seed was not mixed first.
        for (s, e, m) in [
            (1, 0, 101),
            (1, 1, 100),
            (2, 0, 100),
            (0, 1, 100),
            (2, 1, 99),
        ] {
            assert_ne!(a, mix(s, e, m));
        }
    }
}
