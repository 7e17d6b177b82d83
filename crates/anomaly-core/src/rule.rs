//! The anomaly rule and its explanation.
//!
//! `threshold = max(p95 * factor, p50 + k * max(mad, mad_epsilon_ms))`; a duration is an
//! anomaly iff it is strictly greater than the threshold, and nothing is judged below
//! `min_samples`. Every verdict carries the numbers that produced it, and [`Verdict::reason`]
//! turns them into a sentence a person can act on during an incident.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::config::StatsConfig;
use crate::duration::DurationMs;
use crate::stats::Stats;

/// A precomputed baseline as stored for one key.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Baseline {
    pub p50: f64,
    pub p95: f64,
    pub mad: f64,
    pub sample_count: u64,
    /// Unix milliseconds of the recompute that wrote it.
    pub updated_at: i64,
}

impl Baseline {
    pub fn from_stats(stats: Stats, updated_at_ms: i64) -> Self {
        Baseline {
            p50: stats.p50,
            p95: stats.p95,
            mad: stats.mad,
            sample_count: stats.sample_count,
            updated_at: updated_at_ms,
        }
    }
}

/// The outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Normal,
    Anomaly,
    InsufficientData,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Normal => "NORMAL",
            Status::Anomaly => "ANOMALY",
            Status::InsufficientData => "INSUFFICIENT_DATA",
        }
    }
}

/// Which of the two bounds set the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Bound {
    /// `p95 * factor`
    #[serde(rename = "p95 * factor")]
    P95Factor,
    /// `p50 + k * MAD`
    #[serde(rename = "p50 + k * MAD")]
    P50KMad,
}

/// The two bounds of a judged check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judgement {
    pub threshold: f64,
    pub bound: Bound,
    /// `p95 * factor`.
    pub p95_bound: f64,
    /// `p50 + k * mad`, with mad floored at epsilon.
    pub mad_bound: f64,
    /// `duration - threshold`: positive for an anomaly, zero or negative otherwise.
    pub excess_ms: f64,
}

/// A verdict with every number it was decided on.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub status: Status,
    pub duration_ms: f64,
    pub baseline: Option<Baseline>,
    /// Present unless the status is `INSUFFICIENT_DATA`.
    pub judgement: Option<Judgement>,
    pub factor: f64,
    pub k: f64,
    pub min_samples: u64,
}

/// Words about the checked request, for [`Verdict::reason`]; the caller computes them (the
/// baseline's age needs the clock, which this crate never reads).
#[derive(Debug, Clone, Default)]
pub struct ReasonContext {
    /// What was checked, e.g. "checkout POST /pay".
    pub subject: String,
    /// The bucket, e.g. "weekdays 14:00-15:00 Asia/Taipei".
    pub bucket: String,
    /// Milliseconds since the baseline was computed.
    pub baseline_age_ms: Option<i64>,
}

impl Verdict {
    pub fn evaluate(
        duration: DurationMs,
        baseline: Option<&Baseline>,
        config: &StatsConfig,
    ) -> Verdict {
        let duration_ms = duration.get();
        let min_samples = u64::from(config.min_samples);
        let judgement = baseline
            .filter(|b| b.sample_count >= min_samples)
            .map(|b| judge(duration_ms, b, config));
        let status = match &judgement {
            None => Status::InsufficientData,
            Some(j) if j.excess_ms > 0.0 => Status::Anomaly,
            Some(_) => Status::Normal,
        };
        Verdict {
            status,
            duration_ms,
            baseline: baseline.copied(),
            judgement,
            factor: config.factor,
            k: config.k,
            min_samples,
        }
    }

    pub fn is_anomaly(&self) -> bool {
        self.status == Status::Anomaly
    }

    pub fn threshold(&self) -> Option<f64> {
        self.judgement.map(|j| j.threshold)
    }

    /// One sentence with the numbers behind the verdict.
    pub fn reason(&self, ctx: &ReasonContext) -> String {
        let mut out = String::with_capacity(256);
        let d = ms(self.duration_ms);
        let (Some(j), Some(b)) = (self.judgement, self.baseline) else {
            let have = self.baseline.map_or(0, |b| b.sample_count);
            let _ = write!(
                out,
                "not judged: {have} of the {} samples needed for {} on {}; {d} was not compared",
                self.min_samples, ctx.subject, ctx.bucket
            );
            if have == 0 {
                out.push_str(" (no baseline yet)");
            }
            return out;
        };
        let threshold = ms(j.threshold);
        let _ = match self.status {
            Status::Anomaly => {
                write!(
                    out,
                    "{d} exceeds the threshold {threshold} by {}",
                    ms(j.excess_ms)
                )
            }
            _ if j.excess_ms == 0.0 => {
                write!(
                    out,
                    "{d} equals the threshold {threshold}, which is not above it"
                )
            }
            _ => write!(
                out,
                "{d} is within the threshold {threshold}, {} below it",
                ms(-j.excess_ms)
            ),
        };
        let p95_expr = format!("p95 {} x factor {:?}", ms(b.p95), self.factor);
        let mad = if self.k > 0.0 {
            (j.mad_bound - b.p50) / self.k
        } else {
            b.mad
        };
        let mad_expr = format!("p50 {} + {} x MAD {}", ms(b.p50), num(self.k), ms(mad));
        let _ = match j.bound {
            Bound::P95Factor => write!(
                out,
                " ({p95_expr}; the MAD bound {mad_expr} = {} is {})",
                ms(j.mad_bound),
                if j.mad_bound == j.p95_bound {
                    "equal"
                } else {
                    "lower"
                }
            ),
            Bound::P50KMad => write!(
                out,
                " ({mad_expr}; the p95 bound {p95_expr} = {} is lower)",
                ms(j.p95_bound)
            ),
        };
        let _ = write!(
            out,
            " for {} on {}, baseline of {} samples",
            ctx.subject, ctx.bucket, b.sample_count
        );
        if let Some(age) = ctx.baseline_age_ms {
            let _ = write!(out, " updated {}", age_text(age));
        }
        out
    }
}

fn judge(duration_ms: f64, b: &Baseline, config: &StatsConfig) -> Judgement {
    let p95_bound = b.p95 * config.factor;
    let mad_bound = b.p50 + config.k * b.mad.max(config.mad_epsilon_ms);
    // On a tie the p95 bound is named: it is the simpler of the two to explain.
    let (threshold, bound) = if p95_bound >= mad_bound {
        (p95_bound, Bound::P95Factor)
    } else {
        (mad_bound, Bound::P50KMad)
    };
    Judgement {
        threshold,
        bound,
        p95_bound,
        mad_bound,
        excess_ms: duration_ms - threshold,
    }
}

/// A number for people: at most three decimals, no trailing zeros.
pub fn num(x: f64) -> String {
    // Rounded, then printed shortest: `{:.3}` takes the exact (bignum) formatting path, which
    // profiling showed as a tenth of a check's CPU.
    let rounded = (x * 1000.0).round() / 1000.0;
    if rounded == 0.0 {
        // Also turns -0 into 0.
        return "0".to_owned();
    }
    if !rounded.is_finite() || rounded.abs() >= 1e15 {
        let s = format!("{x:.3}");
        return s.trim_end_matches('0').trim_end_matches('.').to_owned();
    }
    rounded.to_string()
}

fn ms(x: f64) -> String {
    format!("{} ms", num(x))
}

fn age_text(age_ms: i64) -> String {
    let s = age_ms / 1000;
    match s {
        i64::MIN..=0 => "just now".to_owned(),
        1..=119 => format!("{s} s ago"),
        120..=7199 => format!("{} min ago", s / 60),
        7200..=172_799 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> StatsConfig {
        StatsConfig::default()
    }

    fn baseline(p50: f64, p95: f64, mad: f64, n: u64) -> Baseline {
        Baseline {
            p50,
            p95,
            mad,
            sample_count: n,
            updated_at: 1_764_050_000_000,
        }
    }

    fn check(duration: f64, b: Option<Baseline>) -> Verdict {
        Verdict::evaluate(DurationMs::new(duration).unwrap(), b.as_ref(), &config())
    }

    fn ctx() -> ReasonContext {
        ReasonContext {
            subject: "checkout POST /pay".into(),
            bucket: "weekdays 14:00-15:00 Asia/Taipei".into(),
            baseline_age_ms: Some(12_400),
        }
    }

    #[test]
    fn judges_against_the_larger_bound() {
        // (p50, p95, mad, duration, status, threshold, bound)
        let cases = [
            // p95 bound 620 beats MAD bound 120 + 180 = 300.
            (
                120.0,
                310.0,
                18.0,
                1840.0,
                Status::Anomaly,
                620.0,
                Bound::P95Factor,
            ),
            (
                120.0,
                310.0,
                18.0,
                620.0,
                Status::Normal,
                620.0,
                Bound::P95Factor,
            ),
            (
                120.0,
                310.0,
                18.0,
                620.001,
                Status::Anomaly,
                620.0,
                Bound::P95Factor,
            ),
            // MAD bound 100 + 10 * 50 = 600 beats p95 bound 2 * 150 = 300.
            (
                100.0,
                150.0,
                50.0,
                600.0,
                Status::Normal,
                600.0,
                Bound::P50KMad,
            ),
            (
                100.0,
                150.0,
                50.0,
                600.5,
                Status::Anomaly,
                600.0,
                Bound::P50KMad,
            ),
            // MAD below epsilon is floored at 1 ms: 100 + 10 = 110 beats 2 * 50.
            (
                100.0,
                50.0,
                0.0,
                110.0,
                Status::Normal,
                110.0,
                Bound::P50KMad,
            ),
            (
                100.0,
                50.0,
                0.0,
                110.5,
                Status::Anomaly,
                110.0,
                Bound::P50KMad,
            ),
            // A tie names the p95 bound.
            (
                100.0,
                100.0,
                10.0,
                200.0,
                Status::Normal,
                200.0,
                Bound::P95Factor,
            ),
        ];
        for (p50, p95, mad, d, status, threshold, bound) in cases {
            let v = check(d, Some(baseline(p50, p95, mad, 1000)));
            assert_eq!(v.status, status, "{d} against {p50}/{p95}/{mad}");
            let j = v.judgement.unwrap();
            assert_eq!((j.threshold, j.bound), (threshold, bound));
            assert_eq!(j.excess_ms, d - threshold);
            assert_eq!(v.is_anomaly(), status == Status::Anomaly);
        }
    }

    #[test]
    fn needs_min_samples() {
        let v = check(5000.0, Some(baseline(1.0, 2.0, 1.0, 49)));
        assert_eq!(v.status, Status::InsufficientData);
        assert_eq!(v.threshold(), None);
        assert!(!v.is_anomaly());
        assert_eq!(
            check(5000.0, Some(baseline(1.0, 2.0, 1.0, 50))).status,
            Status::Anomaly
        );
        assert_eq!(check(5000.0, None).status, Status::InsufficientData);
    }

    #[test]
    fn explains_with_numbers() {
        let v = check(1840.0, Some(baseline(120.0, 310.0, 18.0, 1000)));
        assert_eq!(
            v.reason(&ctx()),
            "1840 ms exceeds the threshold 620 ms by 1220 ms (p95 310 ms x factor 2.0; the MAD \
             bound p50 120 ms + 10 x MAD 18 ms = 300 ms is lower) for checkout POST /pay on \
             weekdays 14:00-15:00 Asia/Taipei, baseline of 1000 samples updated 12 s ago"
        );
        let v = check(450.25, Some(baseline(100.0, 150.0, 50.0, 60)));
        assert_eq!(
            v.reason(&ctx()),
            "450.25 ms is within the threshold 600 ms, 149.75 ms below it (p50 100 ms + 10 x MAD \
             50 ms; the p95 bound p95 150 ms x factor 2.0 = 300 ms is lower) for checkout POST \
             /pay on weekdays 14:00-15:00 Asia/Taipei, baseline of 60 samples updated 12 s ago"
        );
        let v = check(620.0, Some(baseline(120.0, 310.0, 18.0, 1000)));
        assert!(
            v.reason(&ctx())
                .starts_with("620 ms equals the threshold 620 ms")
        );
        let v = check(90.0, Some(baseline(100.0, 50.0, 0.2, 1000)));
        assert!(
            v.reason(&ctx()).contains("p50 100 ms + 10 x MAD 1 ms"),
            "{}",
            v.reason(&ctx())
        );
        let v = check(90.0, Some(baseline(1.0, 2.0, 1.0, 49)));
        assert_eq!(
            v.reason(&ctx()),
            "not judged: 49 of the 50 samples needed for checkout POST /pay on weekdays \
             14:00-15:00 Asia/Taipei; 90 ms was not compared"
        );
        assert!(
            check(90.0, None)
                .reason(&ctx())
                .ends_with("(no baseline yet)")
        );
    }

    proptest::proptest! {
        #[test]
        fn numbers_print_with_at_most_three_decimals(thousandths in 0u64..100_000_000_000) {
            let x = thousandths as f64 / 1000.0;
            let (int, frac) = (thousandths / 1000, thousandths % 1000);
            let expected = if frac == 0 {
                int.to_string()
            } else {
                format!("{int}.{frac:03}").trim_end_matches('0').to_owned()
            };
            proptest::prop_assert_eq!(num(x), expected.clone());
            proptest::prop_assert_eq!(num(-x), if x == 0.0 { expected } else { format!("-{expected}") });
        }

        #[test]
        fn numbers_round_to_the_nearest_thousandth(x in -1e9f64..1e9) {
            let printed: f64 = num(x).parse().unwrap();
            proptest::prop_assert!((printed - x).abs() <= 0.0005 + 1e-9 * x.abs(), "{x} -> {printed}");
        }
    }

    #[test]
    fn formats_numbers_and_ages() {
        for (x, s) in [
            (620.0, "620"),
            (0.5, "0.5"),
            (1.23456, "1.235"),
            (-0.0001, "0"),
            (1e6, "1000000"),
            (86_400_000.0, "86400000"),
            (2.0005, "2.001"),
            (f64::INFINITY, "inf"),
        ] {
            assert_eq!(num(x), s);
        }
        for (age, s) in [
            (-5, "just now"),
            (0, "just now"),
            (12_400, "12 s ago"),
            (600_000, "10 min ago"),
            (7_200_000, "2 h ago"),
            (3 * 86_400_000, "3 d ago"),
        ] {
            assert_eq!(age_text(age), s);
        }
    }
}
