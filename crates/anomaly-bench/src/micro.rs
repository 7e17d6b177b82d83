//! Rows from criterion's own results (`cargo bench -p anomaly-core` writes them under
//! `target/criterion`): the statistics on 1000 samples, key encoding, time bucketing and
//! parsing a check request's JSON.

use std::path::Path;

use anyhow::Context as _;

use crate::Row;

/// Each benchmark of `crates/anomaly-core/benches/core.rs`, with its target in nanoseconds.
const BENCHES: &[(&str, Option<f64>)] = &[
    ("stats/1000 samples", Some(20_000.0)),
    ("stats/1000 samples, fresh buffer", Some(20_000.0)),
    ("key/encode", None),
    ("key/decode", None),
    ("time/bucket", None),
    ("json/check request", None),
];

pub(crate) fn rows(dir: &Path) -> anyhow::Result<Vec<Row>> {
    let mut found = Vec::new();
    collect(dir, &mut found).with_context(|| {
        format!(
            "reading criterion results under {} (run `cargo bench -p anomaly-core` first)",
            dir.display()
        )
    })?;
    BENCHES
        .iter()
        .map(|&(id, target)| {
            let &(_, ns) = found
                .iter()
                .find(|(full_id, _)| full_id == id)
                .with_context(|| {
                    format!("no criterion result for {id:?} under {}", dir.display())
                })?;
            Ok(Row::new(
                format!("micro: {id} (criterion median)"),
                format_ns(ns),
                target.map_or_else(String::new, |t| format!("<= {}", format_ns(t))),
                target.map(|t| ns <= t),
            ))
        })
        .collect()
}

/// `(full_id, median ns)` of every `new/` result below `dir`.
fn collect(dir: &Path, found: &mut Vec<(String, f64)>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") {
            let bench: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(path.join("benchmark.json"))?)?;
            let estimates: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(path.join("estimates.json"))?)?;
            if let (Some(id), Some(median)) = (
                bench["full_id"].as_str(),
                estimates["median"]["point_estimate"].as_f64(),
            ) {
                found.push((id.to_owned(), median));
            }
        } else {
            collect(&path, found)?;
        }
    }
    Ok(())
}

fn format_ns(ns: f64) -> String {
    if ns >= 1000.0 {
        format!("{:.2} µs", ns / 1000.0)
    } else {
        format!("{ns:.0} ns")
    }
}
