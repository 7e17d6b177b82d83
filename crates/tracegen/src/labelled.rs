//! Labelled traffic for measuring detection quality (`anomaly-bench quality`): a shop whose
//! load and latency follow the hour of the day and the weekday/weekend split, with lognormal
//! tails, a bimodal endpoint, endpoints with a few requests an hour or a day, and requests
//! slowed down by known factors, each labelled with its factor.
//!
//! Like [`crate::traffic`], generation is stateless per (endpoint, minute): each minute of each
//! endpoint draws from its own stream seeded by (seed, endpoint, minute), so a seed gives the
//! same requests however a range is cut. Every request makes the same draws whether or not it
//! is slowed down, so two scenarios that differ only in `slowdown_rate` produce the same
//! requests at the same instants, the slowed ones `factor` times longer.

use anomaly_core::{Bucketer, DayType, TimeConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::traffic::{
    NANOS_PER_MINUTE, instant, latency_wave, mix, phase, poisson, standard_normal,
};

/// An endpoint with fewer requests an hour than this at average load is low-traffic: its hour
/// buckets fill slower than the default `min_samples` of 50 in a few weeks.
pub const LOW_TRAFFIC_PER_HOUR: f64 = 10.0;

/// The distribution of an endpoint's ordinary durations in an ordinary weekday hour, before the
/// hour-of-day wave, the slow hour and the weekend factor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shape {
    /// `median * exp(sigma * z)`, z standard normal.
    LogNormal { median_ms: f64, sigma: f64 },
    /// Two lognormal modes (a cache hit and a miss): the slow one with probability
    /// `slow_share`, both with spread `sigma`.
    Bimodal {
        fast_ms: f64,
        slow_ms: f64,
        sigma: f64,
        slow_share: f64,
    },
}

/// One endpoint of a [`Scenario`].
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub service: String,
    /// The root span name, e.g. `POST /api/checkout`.
    pub endpoint: String,
    pub shape: Shape,
    /// Mean requests an hour (Poisson) at average load, before the daily and weekly load waves.
    pub per_hour: f64,
    /// Duration multiplier during [`Scenario::slow_hour`].
    pub slow_hour_factor: f64,
    /// Duration multiplier on weekend days (and holidays).
    pub weekend_factor: f64,
}

impl Endpoint {
    fn new(service: &str, endpoint: &str, shape: Shape, per_hour: f64) -> Self {
        Endpoint {
            service: service.to_owned(),
            endpoint: endpoint.to_owned(),
            shape,
            per_hour,
            slow_hour_factor: 1.0,
            weekend_factor: 1.0,
        }
    }

    /// See [`LOW_TRAFFIC_PER_HOUR`].
    pub fn low_traffic(&self) -> bool {
        self.per_hour < LOW_TRAFFIC_PER_HOUR
    }
}

/// The whole model: endpoints, the load patterns and the slowdowns.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub endpoints: Vec<Endpoint>,
    /// Local hour (0-23) in which endpoints with a `slow_hour_factor` slow down.
    pub slow_hour: u8,
    /// The daily load wave: `1 + load_amplitude * sin`, highest at 15:00, lowest at 03:00.
    pub load_amplitude: f64,
    /// Load on weekend days relative to weekdays.
    pub weekend_load: f64,
    /// Share of requests slowed down (0-1).
    pub slowdown_rate: f64,
    /// A slowed request lasts its ordinary duration times one of these, drawn uniformly.
    pub slowdown_factors: Vec<u32>,
}

impl Scenario {
    /// A shop of six busy endpoints and a long tail of 34 low-traffic ones.
    ///
    /// - `checkout POST /api/checkout` is 3x slower from 14:00 to 15:00 (a settlement batch),
    ///   `search GET /api/search` 2x slower on weekends: patterns a baseline without hour
    ///   buckets cannot follow.
    /// - `payments POST /api/pay` has a long lognormal tail (sigma 0.5).
    /// - `catalog GET /api/products/{id}` is bimodal: 8 ms cache hits, 120 ms misses (30%).
    /// - `inventory GET /api/stock` answers in under a millisecond, where the MAD floor decides.
    /// - Low traffic: `admin` and `billing` endpoints with 3 and 1 requests an hour, 6 and 1 a
    ///   day, and a `backoffice` service of 30 endpoints from 4 requests an hour to 3 a day,
    ///   medians from 35 ms to 1.5 s: most endpoints of a real service are rare, and enough of
    ///   them make the low-traffic figures more than a handful of requests.
    ///
    /// Load swings from 0.4x of average at 03:00 to 1.6x at 15:00, and is half on weekends.
    /// 0.2% of requests are slowed down 2x, 3x, 5x or 10x.
    pub fn shop() -> Scenario {
        let log_normal = |median_ms, sigma| Shape::LogNormal { median_ms, sigma };
        let mut checkout = Endpoint::new(
            "checkout",
            "POST /api/checkout",
            log_normal(180.0, 0.25),
            450.0,
        );
        checkout.slow_hour_factor = 3.0;
        let mut search = Endpoint::new("search", "GET /api/search", log_normal(90.0, 0.3), 600.0);
        search.weekend_factor = 2.0;
        let catalog = Endpoint::new(
            "catalog",
            "GET /api/products/{id}",
            Shape::Bimodal {
                fast_ms: 8.0,
                slow_ms: 120.0,
                sigma: 0.3,
                slow_share: 0.3,
            },
            900.0,
        );
        Scenario {
            endpoints: [
                checkout,
                Endpoint::new("checkout", "GET /api/cart", log_normal(40.0, 0.2), 600.0),
                search,
                catalog,
                Endpoint::new("payments", "POST /api/pay", log_normal(250.0, 0.5), 300.0),
                Endpoint::new("inventory", "GET /api/stock", log_normal(0.8, 0.4), 600.0),
                Endpoint::new(
                    "admin",
                    "GET /api/reports/export",
                    log_normal(1200.0, 0.3),
                    3.0,
                ),
                Endpoint::new(
                    "admin",
                    "POST /api/users/invite",
                    log_normal(150.0, 0.35),
                    1.0,
                ),
                Endpoint::new(
                    "billing",
                    "POST /api/invoices/close",
                    log_normal(800.0, 0.4),
                    6.0 / 24.0,
                ),
                Endpoint::new(
                    "audit",
                    "GET /api/audit/export",
                    log_normal(3000.0, 0.3),
                    1.0 / 24.0,
                ),
            ]
            .into_iter()
            .chain((0..30).map(backoffice))
            .collect(),
            slow_hour: 14,
            load_amplitude: 0.6,
            weekend_load: 0.5,
            slowdown_rate: 0.002,
            slowdown_factors: vec![2, 3, 5, 10],
        }
    }

    /// The index of the endpoint `endpoint` of `service` in [`Scenario::endpoints`].
    pub fn endpoint_index(&self, service: &str, endpoint: &str) -> Option<usize> {
        self.endpoints
            .iter()
            .position(|e| e.service == service && e.endpoint == endpoint)
    }

    /// The same scenario with another share of slowed-down requests.
    pub fn with_slowdown_rate(mut self, rate: f64) -> Scenario {
        self.slowdown_rate = rate;
        self
    }

    /// Load (a multiplier of every endpoint's `per_hour`) in a local hour of a day type.
    pub fn load(&self, hour: u8, day_type: DayType) -> f64 {
        let daily = 1.0 + self.load_amplitude * phase(hour).sin();
        match day_type {
            DayType::Weekday => daily,
            DayType::Weekend => daily * self.weekend_load,
        }
    }

    /// The peak hours: those whose daily load is at least halfway from average to the
    /// maximum (11:00 to 20:00 for a wave peaking at 15:00), in order.
    pub fn peak_hours(&self) -> Vec<u8> {
        // Halfway is sin >= 0.5; the small tolerance keeps 11:00 and 19:00, where the sine is
        // exactly 0.5 up to rounding.
        (0..24).filter(|&h| phase(h).sin() >= 0.5 - 1e-9).collect()
    }
}

/// The `i`-th rare endpoint of the shop's `backoffice` service: rates, medians and spreads
/// cycle through fixed lists, so every combination of a rate and a median occurs.
fn backoffice(i: usize) -> Endpoint {
    const PER_HOUR: [f64; 6] = [4.0, 2.0, 1.0, 0.5, 0.25, 0.125];
    const MEDIAN_MS: [f64; 5] = [35.0, 120.0, 400.0, 1500.0, 60.0];
    const SIGMA: [f64; 3] = [0.25, 0.35, 0.45];
    Endpoint::new(
        "backoffice",
        &format!("GET /api/backoffice/task-{i:02}"),
        Shape::LogNormal {
            median_ms: MEDIAN_MS[i % MEDIAN_MS.len()],
            sigma: SIGMA[i % SIGMA.len()],
        },
        PER_HOUR[i % PER_HOUR.len()],
    )
}

/// One generated request with its label.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledTrace {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// Index into [`Scenario::endpoints`].
    pub endpoint: usize,
    pub start_unix_nano: u64,
    /// Whole microseconds, the precision windows store.
    pub duration_us: u64,
    /// The slowdown factor injected into this request, if any.
    pub slowdown: Option<u32>,
}

impl LabelledTrace {
    /// The duration in milliseconds, exactly as a window returns it (microseconds / 1000).
    pub fn duration_ms(&self) -> f64 {
        self.duration_us as f64 / 1000.0
    }

    /// The same request lasting `factor` times longer, labelled with `factor` (an incident: the
    /// whole of an endpoint's traffic for a while, not a share of it). A request already slowed
    /// down keeps its own factor's duration times `factor` and the larger label.
    pub fn slowed(&self, factor: u32) -> LabelledTrace {
        LabelledTrace {
            duration_us: self.duration_us.saturating_mul(u64::from(factor)),
            slowdown: Some(self.slowdown.unwrap_or(1).max(factor)),
            ..self.clone()
        }
    }
}

/// Generates labelled requests from a [`Scenario`], a seed and a calendar.
#[derive(Debug, Clone)]
pub struct LabelledGenerator {
    scenario: Scenario,
    seed: u64,
    bucketer: Bucketer,
}

impl LabelledGenerator {
    pub fn new(scenario: Scenario, seed: u64, time: &TimeConfig) -> Self {
        LabelledGenerator {
            scenario,
            seed,
            bucketer: Bucketer::new(time),
        }
    }

    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// Every request starting in `[from, to)` (unix nanoseconds), ordered by start time (then
    /// trace ID).
    pub fn traces_between(&self, from_unix_nano: u64, to_unix_nano: u64) -> Vec<LabelledTrace> {
        let mut out = Vec::new();
        if to_unix_nano <= from_unix_nano {
            return out;
        }
        let first = from_unix_nano / NANOS_PER_MINUTE;
        let last = (to_unix_nano - 1) / NANOS_PER_MINUTE;
        for minute in first..=last {
            for index in 0..self.scenario.endpoints.len() {
                self.minute_of(index, minute, &mut out);
            }
        }
        out.retain(|t| (from_unix_nano..to_unix_nano).contains(&t.start_unix_nano));
        out.sort_by(|a, b| (a.start_unix_nano, &a.trace_id).cmp(&(b.start_unix_nano, &b.trace_id)));
        out
    }

    /// The request as an item of the ingester's `POST /v1/traces/ingest`.
    pub fn ingest_json(&self, t: &LabelledTrace) -> Value {
        let e = &self.scenario.endpoints[t.endpoint];
        json!({"traceID": t.trace_id, "rootServiceName": e.service, "rootTraceName": e.endpoint,
               "startTimeUnixNano": t.start_unix_nano.to_string(), "durationMs": t.duration_ms()})
    }

    /// The request as an item of the checker's `POST /v1/anomaly/check(/batch)`.
    pub fn check_json(&self, t: &LabelledTrace) -> Value {
        let e = &self.scenario.endpoints[t.endpoint];
        json!({"rootServiceName": e.service, "rootTraceName": e.endpoint,
               "startTimeUnixNano": t.start_unix_nano.to_string(), "durationMs": t.duration_ms()})
    }

    /// The requests endpoint `index` starts in one minute (minutes since the epoch).
    fn minute_of(&self, index: usize, minute: u64, out: &mut Vec<LabelledTrace>) {
        let s = &self.scenario;
        let spec = &s.endpoints[index];
        let minute_start = minute * NANOS_PER_MINUTE;
        // Another stream than traffic.rs's for the same seed, endpoint and minute.
        let mut rng =
            StdRng::seed_from_u64(mix(self.seed ^ 0x6c61_6265_6c6c_6564, index as u64, minute));
        let bucket = self.bucketer.bucket(instant(minute_start));
        let count = poisson(
            &mut rng,
            spec.per_hour / 60.0 * s.load(bucket.hour, bucket.day_type),
        );
        let mut scale = latency_wave(bucket.hour);
        if bucket.hour == s.slow_hour {
            scale *= spec.slow_hour_factor;
        }
        if bucket.day_type == DayType::Weekend {
            scale *= spec.weekend_factor;
        }
        for _ in 0..count {
            // Every draw is made for every request, so the slowdown rate changes labels and
            // durations, never which requests exist or when.
            let start = minute_start + rng.random_range(0..NANOS_PER_MINUTE);
            let slowed = rng.random::<f64>() < s.slowdown_rate;
            let factor_draw = rng.random_range(0..s.slowdown_factors.len().max(1));
            let mode_draw = rng.random::<f64>();
            let z = standard_normal(&mut rng);
            let id: u128 = rng.random::<u128>() | 1;
            let (median, sigma) = match spec.shape {
                Shape::LogNormal { median_ms, sigma } => (median_ms, sigma),
                Shape::Bimodal {
                    fast_ms,
                    slow_ms,
                    sigma,
                    slow_share,
                } => (
                    if mode_draw < slow_share {
                        slow_ms
                    } else {
                        fast_ms
                    },
                    sigma,
                ),
            };
            let slowdown = s
                .slowdown_factors
                .get(factor_draw)
                .copied()
                .filter(|_| slowed);
            let ms = median * scale * (sigma * z).exp() * f64::from(slowdown.unwrap_or(1));
            out.push(LabelledTrace {
                trace_id: format!("{id:032x}"),
                endpoint: index,
                start_unix_nano: start,
                // Windows keep whole microseconds and at most 24 hours.
                duration_us: (ms * 1000.0).round().clamp(0.0, 86_400_000_000.0) as u64,
                slowdown,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const HOUR: u64 = 3_600 * 1_000_000_000;
    const DAY: u64 = 24 * HOUR;
    const WEEK: u64 = 7 * DAY;
    /// Monday 2026-11-23 00:00 in Asia/Taipei (the default calendar), as unix nanoseconds.
    const MONDAY: u64 = 1_795_363_200 * 1_000_000_000;

    fn generator(scenario: Scenario, seed: u64) -> LabelledGenerator {
        LabelledGenerator::new(scenario, seed, &TimeConfig::default())
    }

    fn bucket_of(t: &LabelledTrace) -> (u8, DayType) {
        let b = Bucketer::new(&TimeConfig::default()).bucket(instant(t.start_unix_nano));
        (b.hour, b.day_type)
    }

    #[test]
    fn an_incident_slows_a_request_down_and_labels_it() {
        let scenario = Scenario::shop();
        let cart = scenario
            .endpoint_index("checkout", "GET /api/cart")
            .expect("the shop has a cart");
        assert_eq!(scenario.endpoints[cart].endpoint, "GET /api/cart");
        assert_eq!(
            scenario.endpoint_index("checkout", "GET /api/nothing"),
            None
        );
        let g = generator(scenario.with_slowdown_rate(0.0), 5);
        let hour = g.traces_between(MONDAY + 10 * HOUR, MONDAY + 11 * HOUR);
        let t = hour
            .iter()
            .find(|t| t.endpoint == cart)
            .expect("cart traffic");
        let slow = t.slowed(3);
        assert_eq!(slow.duration_us, 3 * t.duration_us);
        assert_eq!(slow.slowdown, Some(3));
        assert_eq!(
            (&slow.trace_id, slow.start_unix_nano, slow.endpoint),
            (&t.trace_id, t.start_unix_nano, t.endpoint)
        );
        assert_eq!(slow.slowed(2).slowdown, Some(3));
    }

    #[test]
    fn a_seed_gives_the_same_requests_however_the_range_is_cut() {
        let g = generator(Scenario::shop(), 3);
        let whole = g.traces_between(MONDAY, MONDAY + 3 * HOUR);
        let mut pieces = Vec::new();
        for w in [0, 7, 60, 61, 180].windows(2) {
            pieces.extend(g.traces_between(
                MONDAY + w[0] * 60 * 1_000_000_000 + 17,
                MONDAY + w[1] * 60 * 1_000_000_000 + 17,
            ));
        }
        pieces.retain(|t| t.start_unix_nano < MONDAY + 3 * HOUR);
        let head: Vec<_> = whole
            .iter()
            .filter(|t| t.start_unix_nano >= MONDAY + 17)
            .collect();
        assert_eq!(head, pieces.iter().collect::<Vec<_>>());
        assert_eq!(
            whole,
            generator(Scenario::shop(), 3).traces_between(MONDAY, MONDAY + 3 * HOUR)
        );
        assert_ne!(
            whole,
            generator(Scenario::shop(), 4).traces_between(MONDAY, MONDAY + 3 * HOUR)
        );
        assert!(g.traces_between(MONDAY, MONDAY).is_empty());
    }

    #[test]
    fn a_slowdown_multiplies_the_ordinary_duration_by_its_label() {
        let plain = generator(Scenario::shop().with_slowdown_rate(0.0), 5)
            .traces_between(MONDAY, MONDAY + DAY);
        let slowed = generator(Scenario::shop().with_slowdown_rate(1.0), 5)
            .traces_between(MONDAY, MONDAY + DAY);
        assert_eq!(plain.len(), slowed.len());
        let mut seen = BTreeMap::new();
        for (p, s) in plain.iter().zip(&slowed) {
            assert_eq!(
                (&p.trace_id, p.start_unix_nano),
                (&s.trace_id, s.start_unix_nano)
            );
            assert_eq!(p.slowdown, None);
            let factor = s.slowdown.expect("every request slowed at rate 1");
            *seen.entry(factor).or_insert(0u32) += 1;
            // Both are rounded to the microsecond from the same unrounded duration.
            let expected = p.duration_us as f64 * f64::from(factor);
            assert!(
                (s.duration_us as f64 - expected).abs() <= f64::from(factor),
                "{factor}x of {} is {}",
                p.duration_us,
                s.duration_us
            );
        }
        assert_eq!(seen.keys().copied().collect::<Vec<_>>(), vec![2, 3, 5, 10]);
        assert!(
            seen.values().all(|&n| n as usize > plain.len() / 6),
            "{seen:?}"
        );
    }

    #[test]
    fn slowdowns_come_at_the_requested_rate() {
        for rate in [0.002, 0.1] {
            let traces = generator(Scenario::shop().with_slowdown_rate(rate), 6)
                .traces_between(MONDAY, MONDAY + WEEK);
            let share =
                traces.iter().filter(|t| t.slowdown.is_some()).count() as f64 / traces.len() as f64;
            assert!((share - rate).abs() < 0.15 * rate, "{rate}: {share}");
        }
    }

    #[test]
    fn the_bimodal_endpoint_has_two_modes() {
        let g = generator(Scenario::shop().with_slowdown_rate(0.0), 7);
        let catalog = 3;
        assert!(matches!(
            g.scenario().endpoints[catalog].shape,
            Shape::Bimodal { .. }
        ));
        let ms: Vec<f64> = g
            .traces_between(MONDAY, MONDAY + DAY)
            .iter()
            .filter(|t| t.endpoint == catalog)
            .map(LabelledTrace::duration_ms)
            .collect();
        // The modes are 15x apart with sigma 0.3: almost nothing falls between 20 and 50 ms.
        let fast = ms.iter().filter(|&&x| x < 20.0).count() as f64 / ms.len() as f64;
        let slow = ms.iter().filter(|&&x| x > 50.0).count() as f64 / ms.len() as f64;
        assert!((fast - 0.7).abs() < 0.04, "{fast}");
        assert!((slow - 0.3).abs() < 0.04, "{slow}");
    }

    #[test]
    fn load_follows_the_day_and_the_week() {
        let s = Scenario::shop();
        assert_eq!(s.peak_hours(), (11..=19).collect::<Vec<u8>>());
        let cases = [
            (15, DayType::Weekday, 1.6),
            (3, DayType::Weekday, 0.4),
            (9, DayType::Weekday, 1.0),
            (15, DayType::Weekend, 0.8),
            (3, DayType::Weekend, 0.2),
        ];
        for (hour, day, expected) in cases {
            assert!(
                (s.load(hour, day) - expected).abs() < 1e-9,
                "{hour} {day:?}"
            );
        }
        // Over a week the counts follow the load: 15:00 on weekdays has four times the
        // requests of 03:00, and a weekend hour half a weekday's.
        let traces = generator(s, 8).traces_between(MONDAY, MONDAY + WEEK);
        let mut per_bucket: BTreeMap<(u8, DayType), f64> = BTreeMap::new();
        for t in &traces {
            *per_bucket.entry(bucket_of(t)).or_default() += 1.0;
        }
        let at = |h, d| per_bucket[&(h, d)];
        let peak_to_night = at(15, DayType::Weekday) / at(3, DayType::Weekday);
        assert!((peak_to_night - 4.0).abs() < 0.4, "{peak_to_night}");
        // Five weekdays against two weekend days.
        let weekend = (at(15, DayType::Weekend) / 2.0) / (at(15, DayType::Weekday) / 5.0);
        assert!((weekend - 0.5).abs() < 0.06, "{weekend}");
    }

    #[test]
    fn three_weeks_fill_busy_buckets_and_leave_low_traffic_ones_thin() {
        let s = Scenario::shop();
        let low: Vec<usize> = (0..s.endpoints.len())
            .filter(|&i| s.endpoints[i].low_traffic())
            .collect();
        assert_eq!(low, (6..40).collect::<Vec<_>>());
        let traces = generator(s, 9).traces_between(MONDAY, MONDAY + 3 * WEEK);
        let mut per_key: BTreeMap<(usize, u8, DayType), u32> = BTreeMap::new();
        for t in &traces {
            let (h, d) = bucket_of(t);
            *per_key.entry((t.endpoint, h, d)).or_default() += 1;
        }
        let count = |e, h, d| per_key.get(&(e, h, d)).copied().unwrap_or(0);
        let days = [DayType::Weekday, DayType::Weekend];
        for e in 0..6 {
            for d in days {
                for h in 0..24 {
                    assert!(count(e, h, d) >= 50, "busy endpoint {e} at {h} {d:?}");
                }
            }
        }
        // Three an hour: every weekend bucket and most weekday buckets are under 50 samples,
        // yet five nearby weekday hours hold well over 50.
        for h in 0..24 {
            assert!(count(6, h, DayType::Weekend) < 50, "{h}");
        }
        let thin = (0..24)
            .filter(|&h| count(6, h, DayType::Weekday) < 50)
            .count();
        assert!(thin >= 12, "{thin}");
        assert!((0..5).map(|h| count(6, h, DayType::Weekday)).sum::<u32>() > 50);
        // One a day: about 18 samples in three weeks, too few even for the whole endpoint.
        let audit: u32 = (0..24).flat_map(|h| days.map(|d| count(9, h, d))).sum();
        assert!((8..35).contains(&audit), "{audit}");
    }
}
