//! A window's shape in 32 numbers: its quantiles at fixed levels, stored with its baseline, so
//! that a check can say where a duration falls (its rank) in O(1) without the window.
//!
//! The levels are denser in the upper tail, where anomalies are judged: a rank read from them
//! is the exact rank (the inverse of the contract's interpolated percentile over the window)
//! up to the gap between the two levels around it, i.e. within 0.05 below p90, 0.02 from p90
//! to p94, 0.01 from p94 to p99, 0.005 from p99 to p99.5, 0.003 to p99.8 and 0.001 above
//! ([`Quantiles::rank_error_bound`]).

use crate::stats::percentile_sorted;

/// The quantile levels kept, from the minimum to the maximum.
pub const LEVELS: [f64; 32] = [
    0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7,
    0.75, 0.8, 0.85, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999, 1.0,
];

/// A window's values at [`LEVELS`], non-decreasing.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantiles(Box<[f64; 32]>);

impl Quantiles {
    /// The quantiles of a sorted, non-empty window.
    pub fn of_sorted(sorted: &[f64]) -> Option<Quantiles> {
        if sorted.is_empty() {
            return None;
        }
        let mut values = [0.0; 32];
        for (v, q) in values.iter_mut().zip(LEVELS) {
            *v = percentile_sorted(sorted, q);
        }
        Some(Quantiles(Box::new(values)))
    }

    pub fn values(&self) -> &[f64; 32] {
        &self.0
    }

    /// Where `x` falls, from 0 (at or below the minimum) to 1 (at or above the maximum): the
    /// level at which the piecewise-linear quantile function through the stored points
    /// reaches `x`.
    pub fn rank(&self, x: f64) -> f64 {
        let q = &self.0;
        if x <= q[0] {
            return 0.0;
        }
        if x >= q[31] {
            return 1.0;
        }
        // The last point at or below x; the next one is above it.
        let i = q.partition_point(|&v| v <= x) - 1;
        let (lo, hi) = (q[i], q[i + 1]);
        let within = if hi > lo { (x - lo) / (hi - lo) } else { 0.0 };
        LEVELS[i] + within * (LEVELS[i + 1] - LEVELS[i])
    }

    /// The most [`Quantiles::rank`] can differ from the exact rank on the window at `rank`:
    /// the gap between the stored levels around it.
    pub fn rank_error_bound(rank: f64) -> f64 {
        let i = LEVELS.partition_point(|&l| l <= rank).clamp(1, 31);
        LEVELS[i] - LEVELS[i - 1]
    }

    /// Compact text for storage: the values in milliseconds to the microsecond (the
    /// precision samples are stored in), comma-separated.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(32 * 8);
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&crate::rule::round3(*v).to_string());
        }
        out
    }

    /// Reads [`Quantiles::encode`]'s text: 32 finite, non-decreasing numbers.
    pub fn decode(text: &str) -> Option<Quantiles> {
        let mut values = [0.0; 32];
        let mut parts = text.split(',');
        for v in &mut values {
            *v = parts
                .next()?
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())?;
        }
        if parts.next().is_some() || values.windows(2).any(|w| w[1] < w[0]) {
            return None;
        }
        Some(Quantiles(Box::new(values)))
    }
}

/// The exact rank of `x` on a sorted window: the inverse of the contract's percentile (linear
/// interpolation between closest ranks), what [`Quantiles::rank`] approximates.
pub fn exact_rank(sorted: &[f64], x: f64) -> f64 {
    let n = sorted.len();
    if n == 0 || x <= sorted[0] {
        return 0.0;
    }
    if x >= sorted[n - 1] {
        return 1.0;
    }
    let i = sorted.partition_point(|&v| v <= x) - 1;
    let (lo, hi) = (sorted[i], sorted[i + 1]);
    let within = if hi > lo { (x - lo) / (hi - lo) } else { 0.0 };
    (i as f64 + within) / (n - 1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ranks_read_from_the_points() {
        let sorted: Vec<f64> = (0..=100).map(f64::from).collect();
        let q = Quantiles::of_sorted(&sorted).unwrap();
        assert_eq!(q.values()[0], 0.0);
        assert_eq!(q.values()[31], 100.0);
        assert_eq!(q.rank(-1.0), 0.0);
        assert_eq!(q.rank(100.0), 1.0);
        assert!((q.rank(50.0) - 0.5).abs() < 1e-12);
        assert!((q.rank(99.6) - 0.996).abs() < 1e-12);
        let text = q.encode();
        assert_eq!(
            Quantiles::decode(&text).map(|q| q.encode()),
            Some(text.clone())
        );
        let noisy = Quantiles::of_sorted(&[0.1 + 0.2, 1.0 / 3.0]).unwrap();
        assert!(noisy.encode().starts_with("0.3,0.3,"), "{}", noisy.encode());
        assert_eq!(Quantiles::decode("1,2"), None);
        assert_eq!(Quantiles::decode(&format!("{text},1")), None);
        let descending: Vec<String> = (0..32).rev().map(|i| i.to_string()).collect();
        assert_eq!(Quantiles::decode(&descending.join(",")), None);
    }

    #[test]
    fn the_bound_is_the_gap_between_levels() {
        assert!((Quantiles::rank_error_bound(0.5) - 0.05).abs() < 1e-12);
        assert!((Quantiles::rank_error_bound(0.93) - 0.02).abs() < 1e-12);
        assert!((Quantiles::rank_error_bound(0.996) - 0.003).abs() < 1e-9);
        assert!((Quantiles::rank_error_bound(0.9995) - 0.001).abs() < 1e-9);
        assert!((Quantiles::rank_error_bound(1.0) - 0.001).abs() < 1e-9);
    }

    proptest! {
        /// On random windows (lognormal-like, ties, spikes) the stored rank stays within the
        /// documented bound of the exact rank.
        #[test]
        fn rank_is_within_the_bound(
            samples in prop::collection::vec(
                prop_oneof![
                    (0.0..6.0f64).prop_map(f64::exp),
                    Just(20.0),
                    (1e3..1e5f64),
                ],
                1..1000,
            ),
            probes in prop::collection::vec(0.0..2e5f64, 1..20),
        ) {
            let mut sorted = samples.clone();
            sorted.sort_by(f64::total_cmp);
            let q = Quantiles::of_sorted(&sorted).unwrap();
            for x in probes.into_iter().chain(sorted.iter().copied().step_by(7)) {
                let exact = exact_rank(&sorted, x);
                let got = q.rank(x);
                let bound = Quantiles::rank_error_bound(exact).max(Quantiles::rank_error_bound(got));
                prop_assert!((got - exact).abs() <= bound + 1e-9,
                    "x {x}: rank {got}, exact {exact}, bound {bound}");
            }
        }
    }
}
