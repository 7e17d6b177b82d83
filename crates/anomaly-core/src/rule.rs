//! The anomaly rule and its explanation.
//!
//! `threshold = max(p95 * factor, p50 + k * max(mad, mad_epsilon_ms), min_threshold_ms)`,
//! rounded to the microsecond (3 decimals of a millisecond, the precision durations are stored
//! and every figure is reported in); a duration is an anomaly iff it is strictly greater than
//! the threshold. The exact bucket is
//! judged when it has `min_samples`; otherwise the first level of the fallback chain with
//! enough samples of its own is ([`Verdict::judge`]); when none has, the answer is
//! INSUFFICIENT_DATA. Every verdict carries the numbers that produced it, and
//! [`Verdict::reason`] turns them into a sentence a person can act on during an incident.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::config::{FallbackStep, Level, RuleParams, StatsConfig};
use crate::duration::DurationMs;
use crate::stats::Stats;
use crate::summary::Quantiles;

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

/// A baseline with its shape (quantiles; absent in baselines written before they were kept).
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub baseline: Baseline,
    pub quantiles: Option<Quantiles>,
}

/// A fallback level's baseline as stored in a thin bucket's hash, with the hours it covers
/// (`first_hour` to `last_hour`, inclusive, wrapping past midnight).
#[derive(Debug, Clone, PartialEq)]
pub struct Fallback {
    pub summary: Summary,
    pub first_hour: u8,
    pub last_hour: u8,
}

impl Fallback {
    /// Compact text for one hash field: `p50,p95,mad,n,updatedAt,first,last;` then the
    /// quantiles as [`Quantiles::encode`] writes them.
    pub fn encode(&self) -> String {
        let b = &self.summary.baseline;
        let mut out = format!(
            "{},{},{},{},{},{},{};",
            b.p50, b.p95, b.mad, b.sample_count, b.updated_at, self.first_hour, self.last_hour
        );
        if let Some(q) = &self.summary.quantiles {
            out.push_str(&q.encode());
        }
        out
    }

    /// Reads [`Fallback::encode`]'s text; `None` when it is not that.
    pub fn decode(text: &str) -> Option<Fallback> {
        let (head, quantiles) = text.split_once(';')?;
        let mut f = head.split(',');
        let mut float = || f.next()?.parse::<f64>().ok().filter(|x| x.is_finite());
        let (p50, p95, mad) = (float()?, float()?, float()?);
        let mut int = || f.next()?.parse::<i64>().ok();
        let sample_count = u64::try_from(int()?).ok()?;
        let updated_at = int()?;
        let first_hour = u8::try_from(int()?).ok().filter(|h| *h < 24)?;
        let last_hour = u8::try_from(int()?).ok().filter(|h| *h < 24)?;
        Some(Fallback {
            summary: Summary {
                baseline: Baseline {
                    p50,
                    p95,
                    mad,
                    sample_count,
                    updated_at,
                },
                quantiles: Quantiles::decode(quantiles),
            },
            first_hour,
            last_hour,
        })
    }

    /// The hours covered, in order from `first_hour`.
    pub fn hours(&self) -> Vec<u8> {
        hours_between(self.first_hour, self.last_hour)
    }
}

/// The hours from `first` to `last` inclusive, wrapping past midnight.
pub fn hours_between(first: u8, last: u8) -> Vec<u8> {
    let (first, last) = (first % 24, last % 24);
    let span = (last + 24 - first) % 24;
    (0..=span).map(|i| (first + i) % 24).collect()
}

/// Everything stored for one key, read in one round trip: the exact bucket's baseline and,
/// for a thin bucket, the fallback levels (indexed as [`Level::FALLBACKS`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Baselines {
    pub exact: Option<Summary>,
    pub fallback: [Option<Fallback>; 3],
}

impl Baselines {
    /// Only an exact baseline, without quantiles (what was stored before levels existed).
    pub fn exact(baseline: Option<Baseline>) -> Self {
        Baselines {
            exact: baseline.map(|baseline| Summary {
                baseline,
                quantiles: None,
            }),
            fallback: [None, None, None],
        }
    }

    pub fn level(&self, level: Level) -> Option<&Fallback> {
        let i = Level::FALLBACKS.iter().position(|l| *l == level)?;
        self.fallback[i].as_ref()
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
    /// `min_threshold_ms`, the absolute floor.
    #[serde(rename = "min_threshold_ms")]
    Floor,
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
    /// The baseline judged against (a fallback level's when one was used); when not judged,
    /// the exact bucket's, if any.
    pub baseline: Option<Baseline>,
    /// Present unless the status is `INSUFFICIENT_DATA`.
    pub judgement: Option<Judgement>,
    pub factor: f64,
    pub k: f64,
    pub min_samples: u64,
    pub min_threshold_ms: f64,
    /// Which level was judged against; `None` when not judged.
    pub source: Option<Level>,
    /// Hours covered by a fallback level (`None` for the exact bucket).
    pub coverage: Option<(u8, u8)>,
    /// Samples in the exact bucket.
    pub bucket_samples: u64,
    /// Where the duration falls in the baseline judged against, 0 to 1, when its quantiles
    /// are stored.
    pub rank: Option<f64>,
    /// Whether a level of the fallback chain had samples, just not enough (for the
    /// explanation of a thin bucket).
    pub fallback_tried: bool,
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
    /// What a fallback level covers, e.g. "weekdays 12:00-17:00 Asia/Taipei".
    pub scope: Option<String>,
    /// The bucket's hour as people read it, e.g. "14:00" (for "the 14:00 bucket has ...").
    pub hour: String,
    /// The override that applied, e.g. "overrides[0] (service checkout, endpoint POST /pay*)".
    pub override_text: Option<String>,
}

impl Verdict {
    /// Judges against the exact bucket alone with the global settings (no override, no
    /// fallback): the rule as it stood before levels, kept for tools and tests.
    pub fn evaluate(
        duration: DurationMs,
        baseline: Option<&Baseline>,
        config: &StatsConfig,
    ) -> Verdict {
        let rule = config.rule(None);
        Verdict::judge(duration, &Baselines::exact(baseline.copied()), &rule, &[])
    }

    /// Judges `duration` against the exact bucket when it has `rule.min_samples`, else
    /// against the first level of `chain` that has its own minimum.
    pub fn judge(
        duration: DurationMs,
        stored: &Baselines,
        rule: &RuleParams,
        chain: &[FallbackStep],
    ) -> Verdict {
        let duration_ms = duration.get();
        let exact = stored.exact.as_ref();
        let bucket_samples = exact.map_or(0, |s| s.baseline.sample_count);
        // The level used, its baseline, and the hours a fallback level covers.
        type Chosen<'a> = (Level, &'a Summary, Option<(u8, u8)>);
        let chosen: Option<Chosen<'_>> = if bucket_samples >= u64::from(rule.min_samples) {
            exact.map(|s| (Level::Exact, s, None))
        } else {
            chain.iter().find_map(|step| {
                let f = stored.level(step.level)?;
                (f.summary.baseline.sample_count >= u64::from(step.min_samples)).then_some((
                    step.level,
                    &f.summary,
                    Some((f.first_hour, f.last_hour)),
                ))
            })
        };
        let judgement = chosen.map(|(_, s, _)| judge(duration_ms, &s.baseline, rule));
        let status = match &judgement {
            None => Status::InsufficientData,
            Some(j) if j.excess_ms > 0.0 => Status::Anomaly,
            Some(_) => Status::Normal,
        };
        Verdict {
            status,
            duration_ms,
            baseline: chosen
                .map(|(_, s, _)| s.baseline)
                .or_else(|| exact.map(|s| s.baseline)),
            judgement,
            factor: rule.factor,
            k: rule.k,
            min_samples: u64::from(rule.min_samples),
            min_threshold_ms: rule.min_threshold_ms,
            source: chosen.map(|(level, _, _)| level),
            coverage: chosen.and_then(|(_, _, c)| c),
            bucket_samples,
            rank: chosen.and_then(|(_, s, _)| Some(s.quantiles.as_ref()?.rank(duration_ms))),
            fallback_tried: chain.iter().any(|step| stored.level(step.level).is_some()),
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
            let have = self.bucket_samples;
            let _ = write!(
                out,
                "not judged: {have} of the {} samples needed for {} on {}",
                self.min_samples, ctx.subject, ctx.bucket
            );
            if self.fallback_tried {
                out.push_str(", and no wider baseline has enough samples either");
            }
            let _ = write!(out, "; {d} was not compared");
            if have == 0 && !self.fallback_tried {
                // Nothing at all: neither the bucket nor any wider level has a sample.
                out.push_str(" (no baseline yet)");
            }
            self.override_note(&mut out, ctx);
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
            Bound::Floor => write!(
                out,
                " (the floor min_threshold_ms; the p95 bound {p95_expr} = {} and the MAD bound \
                 {mad_expr} = {} are lower)",
                ms(j.p95_bound),
                ms(j.mad_bound)
            ),
        };
        match (self.source, &ctx.scope) {
            (Some(level), Some(scope)) if level != Level::Exact => {
                let _ = write!(
                    out,
                    ", judged against {} on {scope} ({} baseline of {} samples",
                    ctx.subject,
                    level.as_str(),
                    b.sample_count
                );
                if let Some(age) = ctx.baseline_age_ms {
                    let _ = write!(out, " updated {}", age_text(age));
                }
                let _ = write!(
                    out,
                    "; the {} bucket has {} samples)",
                    ctx.hour, self.bucket_samples
                );
            }
            _ => {
                let _ = write!(
                    out,
                    " for {} on {}, baseline of {} samples",
                    ctx.subject, ctx.bucket, b.sample_count
                );
                if let Some(age) = ctx.baseline_age_ms {
                    let _ = write!(out, " updated {}", age_text(age));
                }
            }
        }
        if let Some(rank) = self.rank {
            let whom = if self.source == Some(Level::Exact) {
                format!("the last {} requests in this bucket", b.sample_count)
            } else {
                format!("the {} requests in that baseline", b.sample_count)
            };
            let _ = write!(out, "; slower than {}% of {whom}", percent(rank));
        }
        self.override_note(&mut out, ctx);
        out
    }

    fn override_note(&self, out: &mut String, ctx: &ReasonContext) {
        if let Some(text) = &ctx.override_text {
            let _ = write!(
                out,
                "; tuned by {text}: factor {:?}, k {}, min_samples {}, min_threshold_ms {}",
                self.factor,
                num(self.k),
                self.min_samples,
                num(self.min_threshold_ms)
            );
        }
    }
}

fn judge(duration_ms: f64, b: &Baseline, rule: &RuleParams) -> Judgement {
    let p95_bound = b.p95 * rule.factor;
    let mad_bound = b.p50 + rule.k * b.mad.max(rule.mad_epsilon_ms);
    // On a tie the p95 bound is named: it is the simpler of the two to explain; the floor is
    // named only when it is above both.
    let (threshold, bound) = if p95_bound >= mad_bound {
        (p95_bound, Bound::P95Factor)
    } else {
        (mad_bound, Bound::P50KMad)
    };
    let (threshold, bound) = if rule.min_threshold_ms > threshold {
        (rule.min_threshold_ms, Bound::Floor)
    } else {
        (threshold, bound)
    };
    // Judged at the precision it is reported in (3 decimals: microseconds, as durations are
    // stored), so the threshold an answer shows, sent back, is normal and anything above it an
    // anomaly.
    let threshold = round3(threshold);
    Judgement {
        threshold,
        bound,
        p95_bound,
        mad_bound,
        excess_ms: duration_ms - threshold,
    }
}

/// A rank as a percentage with at most one decimal ("99.6", "42").
fn percent(rank: f64) -> String {
    let tenths = (rank * 1000.0).round() / 10.0;
    if tenths.fract() == 0.0 {
        format!("{tenths:.0}")
    } else {
        format!("{tenths:.1}")
    }
}

/// A millisecond figure for JSON: rounded to at most three decimals (durations are whole
/// microseconds; interpolation adds float noise below that).
pub fn round3(x: f64) -> f64 {
    let rounded = (x * 1000.0).round() / 1000.0;
    if rounded.is_finite() {
        rounded + 0.0
    } else {
        x
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
            ..ReasonContext::default()
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

    fn stored(exact: Option<u64>, levels: [Option<u64>; 3]) -> Baselines {
        let summary = |p50: f64, n: u64| Summary {
            baseline: baseline(p50, p50 * 2.0, 10.0, n),
            quantiles: crate::summary::Quantiles::of_sorted(
                &(0..=100)
                    .map(|i| p50 * 4.0 * f64::from(i) / 100.0)
                    .collect::<Vec<_>>(),
            ),
        };
        let mut fallback = [None, None, None];
        for (i, n) in levels.into_iter().enumerate() {
            fallback[i] = n.map(|n| Fallback {
                summary: summary(200.0 + 100.0 * i as f64, n),
                first_hour: if i == 0 { 12 } else { 0 },
                last_hour: if i == 0 { 16 } else { 23 },
            });
        }
        Baselines {
            exact: exact.map(|n| summary(100.0, n)),
            fallback,
        }
    }

    #[test]
    fn a_thin_bucket_falls_back_level_by_level() {
        let chain = StatsConfig::default().fallback;
        let rule = RuleParams::default();
        let d = DurationMs::new(450.0).unwrap();
        // (exact n, levels' n, source, p50 judged against)
        let cases = [
            (
                Some(50),
                [Some(900), Some(900), Some(900)],
                Some(Level::Exact),
                100.0,
            ),
            (
                Some(12),
                [Some(50), Some(900), Some(900)],
                Some(Level::Nearby),
                200.0,
            ),
            (
                Some(12),
                [Some(49), Some(60), Some(900)],
                Some(Level::DayType),
                300.0,
            ),
            (None, [None, Some(49), Some(900)], Some(Level::All), 400.0),
            (Some(3), [Some(4), Some(5), Some(6)], None, 100.0),
        ];
        for (exact, levels, source, p50) in cases {
            let v = Verdict::judge(d, &stored(exact, levels), &rule, &chain);
            assert_eq!(v.source, source, "{exact:?} {levels:?}");
            assert_eq!(v.bucket_samples, exact.unwrap_or(0));
            if source.is_some() {
                assert_eq!(v.baseline.map(|b| b.p50), Some(p50));
                assert!(v.rank.is_some());
            } else {
                assert_eq!(v.status, Status::InsufficientData);
            }
        }
        // An empty chain judges exactly as before.
        let v = Verdict::judge(d, &stored(Some(12), [Some(900); 3]), &rule, &[]);
        assert_eq!(v.status, Status::InsufficientData);
    }

    #[test]
    fn fallback_answers_say_what_they_used() {
        let chain = StatsConfig::default().fallback;
        let v = Verdict::judge(
            DurationMs::new(1840.0).unwrap(),
            &stored(Some(12), [Some(800), None, None]),
            &RuleParams::default(),
            &chain,
        );
        assert_eq!(v.coverage, Some((12, 16)));
        let reason = v.reason(&ReasonContext {
            scope: Some("weekdays 12:00-17:00 Asia/Taipei".into()),
            hour: "14:00".into(),
            ..ctx()
        });
        assert!(
            reason.starts_with(
                "1840 ms exceeds the threshold 800 ms by 1040 ms (p95 400 ms x factor 2.0; "
            ),
            "{reason}"
        );
        assert!(
            reason.ends_with(
                ", judged against checkout POST /pay on weekdays 12:00-17:00 Asia/Taipei (nearby \
                 baseline of 800 samples updated 12 s ago; the 14:00 bucket has 12 samples); \
                 slower than 100% of the 800 requests in that baseline"
            ),
            "{reason}"
        );
        let thin = Verdict::judge(
            DurationMs::new(5.0).unwrap(),
            &stored(Some(3), [Some(4), Some(9), Some(12)]),
            &RuleParams::default(),
            &chain,
        );
        assert_eq!(
            thin.reason(&ctx()),
            "not judged: 3 of the 50 samples needed for checkout POST /pay on weekdays \
             14:00-15:00 Asia/Taipei, and no wider baseline has enough samples either; 5 ms was \
             not compared"
        );
    }

    #[test]
    fn the_floor_holds_and_overrides_are_named() {
        let rule = RuleParams {
            min_threshold_ms: 50.0,
            factor: 3.0,
            ..RuleParams::default()
        };
        let b = Baselines::exact(Some(baseline(2.0, 3.0, 0.1, 1000)));
        // 3 x 3 = 9 and 2 + 10 x 1 = 12 are both under the floor: 49 ms is normal.
        let v = Verdict::judge(DurationMs::new(49.0).unwrap(), &b, &rule, &[]);
        assert_eq!(v.status, Status::Normal);
        let j = v.judgement.unwrap();
        assert_eq!((j.threshold, j.bound), (50.0, Bound::Floor));
        let v = Verdict::judge(DurationMs::new(50.5).unwrap(), &b, &rule, &[]);
        assert_eq!(v.status, Status::Anomaly);
        let reason = v.reason(&ReasonContext {
            override_text: Some("overrides[0] (service checkout)".into()),
            ..ctx()
        });
        assert!(
            reason.contains("(the floor min_threshold_ms; the p95 bound p95 3 ms x factor 3.0 = 9 ms and the MAD bound p50 2 ms + 10 x MAD 1 ms = 12 ms are lower)"),
            "{reason}"
        );
        assert!(
            reason.ends_with("; tuned by overrides[0] (service checkout): factor 3.0, k 10, min_samples 50, min_threshold_ms 50"),
            "{reason}"
        );
    }

    #[test]
    fn fallback_fields_round_trip() {
        let f = stored(None, [Some(812), None, None]).fallback[0]
            .clone()
            .unwrap();
        // Quantiles are stored to the microsecond; everything else exactly.
        let back = Fallback::decode(&f.encode()).unwrap();
        assert_eq!(back.encode(), f.encode());
        assert_eq!(back.summary.baseline, f.summary.baseline);
        assert_eq!(f.hours(), vec![12, 13, 14, 15, 16]);
        let wrap = Fallback {
            first_hour: 22,
            last_hour: 2,
            ..f
        };
        assert_eq!(wrap.hours(), vec![22, 23, 0, 1, 2]);
        assert_eq!(Fallback::decode("1,2,3;"), None);
        assert_eq!(Fallback::decode("garbage"), None);
        assert_eq!(round3(301.39999999999986), 301.4);
        assert_eq!(round3(602.7999999999997), 602.8);
        assert_eq!(percent(0.9961), "99.6");
        assert_eq!(percent(0.42), "42");
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
