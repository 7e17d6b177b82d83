//! Micro benchmarks of the pure hot paths: statistics of a full window, key encoding, time
//! bucketing, and parsing a check request's JSON (the checker's first step; exact float parsing,
//! serde_json's `float_roundtrip`, is on for the workspace).

use std::hint::black_box;

use anomaly_core::{BaselineKey, Bucketer, DayType, Stats, StatsScratch, TimeConfig};
use chrono::DateTime;
use criterion::{Criterion, criterion_group, criterion_main};

fn window(n: usize) -> Vec<f64> {
    // A deterministic lognormal-ish spread without pulling in a RNG crate.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            (50.0 * (1.0 + 3.0 * u * u * u)).round()
        })
        .collect()
}

fn benches(c: &mut Criterion) {
    let samples = window(1000);
    let mut scratch = StatsScratch::default();
    c.bench_function("stats/1000 samples", |b| {
        b.iter(|| scratch.compute(black_box(&samples), 1.0))
    });
    c.bench_function("stats/1000 samples, fresh buffer", |b| {
        b.iter(|| Stats::compute(black_box(&samples), 1.0))
    });

    let key = BaselineKey::new("checkout|eu", "POST /pay/{id}", 14, DayType::Weekday).unwrap();
    let body = key.encode();
    c.bench_function("key/encode", |b| b.iter(|| black_box(&key).encode()));
    c.bench_function("key/decode", |b| {
        b.iter(|| BaselineKey::decode(black_box(&body)))
    });

    let bucketer = Bucketer::new(&TimeConfig::default());
    let instant = DateTime::from_timestamp(1_764_050_000, 0).unwrap_or_default();
    c.bench_function("time/bucket", |b| {
        b.iter(|| bucketer.bucket(black_box(instant)))
    });

    // A 17-digit duration takes serde_json's slowest float path, where float_roundtrip differs.
    let request = br#"{"rootServiceName":"checkout","rootTraceName":"POST /api/checkout","startTimeUnixNano":"1795586400000000000","durationMs":379.93829999999997}"#;
    c.bench_function("json/check request", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(request)))
    });
}

criterion_group!(core, benches);
criterion_main!(core);
