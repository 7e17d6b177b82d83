//! The statistics agree with numpy on fixed windows (testdata/stats, made by gen_vectors.py).

use anomaly_core::Stats;
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    name: String,
    samples: Vec<f64>,
    p50: f64,
    p95: f64,
    mad_raw: f64,
    mad: f64,
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-9 * want.abs().max(1.0)
}

#[test]
fn matches_numpy() {
    let cases: Vec<Case> =
        serde_json::from_str(include_str!("../../../../testdata/stats/vectors.json")).unwrap();
    assert!(
        cases.len() >= 15,
        "the vector file lost cases: {}",
        cases.len()
    );
    for c in &cases {
        let s = Stats::compute(&c.samples, 1.0).unwrap();
        assert_eq!(s.sample_count, c.samples.len() as u64, "{}", c.name);
        assert!(
            close(s.p50, c.p50),
            "{}: p50 {} != {}",
            c.name,
            s.p50,
            c.p50
        );
        assert!(
            close(s.p95, c.p95),
            "{}: p95 {} != {}",
            c.name,
            s.p95,
            c.p95
        );
        assert!(
            close(s.mad, c.mad),
            "{}: mad {} != {}",
            c.name,
            s.mad,
            c.mad
        );
        // With a tiny epsilon the raw MAD shows through unless it is zero.
        let raw = Stats::compute(&c.samples, 1e-12).unwrap();
        assert!(
            close(raw.mad, c.mad_raw.max(1e-12)),
            "{}: raw mad {} != {}",
            c.name,
            raw.mad,
            c.mad_raw
        );
    }
}
