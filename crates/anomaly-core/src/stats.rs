//! Window statistics: p50, p95 and MAD, exactly as the contract defines them.
//!
//! Percentiles use linear interpolation between closest ranks (numpy's default, Excel
//! PERCENTILE.INC): for sorted `x[0..n)`, rank `r = q*(n-1)` and the value is
//! `x[floor r] + (r - floor r) * (x[ceil r] - x[floor r])`. Instead of sorting, each order
//! statistic is found by selection (`select_nth_unstable_by`), so a window costs O(n); the
//! interpolation needs `x[ceil r]` too, which is the minimum of the partition above `floor r`.
//! The results are bit-for-bit those of the sort-based definition (a property test checks).

/// The statistics of one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub p50: f64,
    pub p95: f64,
    /// Median absolute deviation from p50, floored at `mad_epsilon_ms`.
    pub mad: f64,
    pub sample_count: u64,
}

impl Stats {
    /// Computes the statistics of `samples` (any order). `None` when there are none.
    ///
    /// Samples must be finite; [`crate::DurationMs`] guarantees that for everything stored.
    pub fn compute(samples: &[f64], mad_epsilon_ms: f64) -> Option<Stats> {
        StatsScratch::default().compute(samples, mad_epsilon_ms)
    }

    /// Like [`Stats::compute`] but reorders `samples` in place instead of copying them.
    pub fn compute_in_place(samples: &mut [f64], mad_epsilon_ms: f64) -> Option<Stats> {
        let n = samples.len();
        if n == 0 {
            return None;
        }
        let (p50, p95) = p50_p95(samples);
        for x in samples.iter_mut() {
            *x = (*x - p50).abs();
        }
        let mad = median(samples);
        Some(Stats {
            p50,
            p95,
            mad: mad.max(mad_epsilon_ms),
            sample_count: n as u64,
        })
    }
}

/// A reusable buffer, so a recomputer computing thousands of windows allocates once.
#[derive(Debug, Default)]
pub struct StatsScratch {
    buf: Vec<f64>,
}

impl StatsScratch {
    pub fn compute(&mut self, samples: &[f64], mad_epsilon_ms: f64) -> Option<Stats> {
        self.buf.clear();
        self.buf.extend_from_slice(samples);
        Stats::compute_in_place(&mut self.buf, mad_epsilon_ms)
    }

    /// The statistics of the union of `windows` with its quantiles (one sort: O(n log n)).
    pub fn summarize<'a>(
        &mut self,
        windows: impl IntoIterator<Item = &'a [f64]>,
        mad_epsilon_ms: f64,
    ) -> Option<(Stats, crate::summary::Quantiles)> {
        self.buf.clear();
        for w in windows {
            self.buf.extend_from_slice(w);
        }
        self.buf.sort_unstable_by(f64::total_cmp);
        let quantiles = crate::summary::Quantiles::of_sorted(&self.buf)?;
        // Selection over sorted data finds the same order statistics.
        let stats = Stats::compute_in_place(&mut self.buf, mad_epsilon_ms)?;
        Some((stats, quantiles))
    }
}

/// The contract's percentile over an already sorted slice; the reference definition that the
/// selection-based code is tested against.
pub fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    let (lo, frac) = rank(q, sorted.len());
    let hi = if frac > 0.0 { lo + 1 } else { lo };
    sorted[lo] + frac * (sorted[hi] - sorted[lo])
}

/// `floor(q*(n-1))` and the fractional part of the rank.
fn rank(q: f64, n: usize) -> (usize, f64) {
    let r = q * (n - 1) as f64;
    let lo = r.floor();
    (lo as usize, r - lo)
}

fn interpolate(lo: f64, hi: Option<f64>, frac: f64) -> f64 {
    match hi {
        Some(hi) if frac > 0.0 => lo + frac * (hi - lo),
        _ => lo,
    }
}

/// Selects order statistic `k` of `xs` and returns it with order statistic `k + 1` (if any).
fn order_stats_pair(xs: &mut [f64], k: usize) -> (f64, Option<f64>) {
    let (_, kth, above) = xs.select_nth_unstable_by(k, f64::total_cmp);
    let next = above.iter().copied().min_by(f64::total_cmp);
    (*kth, next)
}

fn p50_p95(xs: &mut [f64]) -> (f64, f64) {
    let n = xs.len();
    let (lo95, frac95) = rank(0.95, n);
    let (lo50, frac50) = rank(0.5, n);
    let (x95, next95) = order_stats_pair(xs, lo95);
    let p95 = interpolate(x95, next95, frac95);
    let p50 = if lo50 == lo95 {
        interpolate(x95, next95, frac50)
    } else {
        // After selecting lo95, xs[..=lo95] holds the lo95 + 1 smallest values, which include
        // order statistics lo50 and lo50 + 1; selecting there touches about half the window.
        let (x50, next50) = order_stats_pair(&mut xs[..=lo95], lo50);
        interpolate(x50, next50, frac50)
    };
    (p50, p95)
}

fn median(xs: &mut [f64]) -> f64 {
    let (lo, frac) = rank(0.5, xs.len());
    let (x, next) = order_stats_pair(xs, lo);
    interpolate(x, next, frac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(samples: &[f64], eps: f64) -> Stats {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let p50 = percentile_sorted(&sorted, 0.5);
        let p95 = percentile_sorted(&sorted, 0.95);
        let mut dev: Vec<f64> = samples.iter().map(|x| (x - p50).abs()).collect();
        dev.sort_by(f64::total_cmp);
        Stats {
            p50,
            p95,
            mad: percentile_sorted(&dev, 0.5).max(eps),
            sample_count: samples.len() as u64,
        }
    }

    #[test]
    fn small_windows() {
        // (samples, p50, p95, mad) worked by hand from the contract's definition.
        let cases: [(&[f64], f64, f64, f64); 6] = [
            (&[42.5], 42.5, 42.5, 1.0),
            (&[10.0, 30.0], 20.0, 29.0, 10.0),
            (&[30.0, 10.0], 20.0, 29.0, 10.0),
            (&[5.0, 1.0, 3.0], 3.0, 4.8, 2.0),
            (&[7.0; 60], 7.0, 7.0, 1.0),
            (&[1.0, 2.0, 3.0, 4.0, 100.0], 3.0, 80.8, 1.0),
        ];
        for (samples, p50, p95, mad) in cases {
            let s = Stats::compute(samples, 1.0).unwrap();
            let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
            assert!(
                close(s.p50, p50) && close(s.p95, p95) && close(s.mad, mad),
                "{samples:?}: {s:?}"
            );
            assert_eq!(s.sample_count, samples.len() as u64);
        }
        assert_eq!(Stats::compute(&[], 1.0), None);
    }

    #[test]
    fn epsilon_floors_mad_only() {
        let s = Stats::compute(&[100.0, 100.2, 100.4, 100.1, 100.3], 1.0).unwrap();
        assert_eq!(s.mad, 1.0);
        let s = Stats::compute(&[100.0, 100.2, 100.4, 100.1, 100.3], 0.001).unwrap();
        assert!((s.mad - 0.1).abs() < 1e-9, "{}", s.mad);
    }

    #[test]
    fn scratch_is_reusable() {
        let mut scratch = StatsScratch::default();
        let a = scratch.compute(&[3.0, 1.0, 2.0], 1.0).unwrap();
        let b = scratch.compute(&[10.0, 30.0], 1.0).unwrap();
        assert_eq!(a.p50, 2.0);
        assert_eq!(b.p50, 20.0);
    }

    proptest! {
        #[test]
        fn a_union_summarizes_like_its_samples(
            a in prop::collection::vec(0.0..1e4f64, 0..300),
            b in prop::collection::vec(0.0..1e4f64, 1..300),
        ) {
            let all: Vec<f64> = a.iter().chain(&b).copied().collect();
            let (stats, _) = StatsScratch::default().summarize([&a[..], &b[..]], 1.0).unwrap();
            prop_assert_eq!(stats, Stats::compute(&all, 1.0).unwrap());
        }

        #[test]
        fn selection_equals_sorting(
            samples in prop::collection::vec(
                prop_oneof![0.0..1e4f64, 0.0..1.0f64, Just(0.0), Just(250.0), 1e6..1e7f64],
                1..1200,
            ),
        ) {
            let got = Stats::compute(&samples, 1.0).unwrap();
            let want = reference(&samples, 1.0);
            prop_assert_eq!(got.p50.to_bits(), want.p50.to_bits());
            prop_assert_eq!(got.p95.to_bits(), want.p95.to_bits());
            prop_assert_eq!(got.mad.to_bits(), want.mad.to_bits());
        }
    }
}
