//! Integration tests of the recomputer against a real redis-server.

mod config;
mod crash;
mod drain;
mod levels;
mod listing;
mod service;

use std::time::Duration;

use anomaly_core::{BaselineKey, DayType, DurationMs, TraceId};
use anomaly_runtime::config::Loaded;
use anomaly_store::{IngestItem, IngestSettings, Store};
use recomputer::{Config, RecomputeMetrics, Recomputer, Section};

/// A config for tests: defaults, the given Redis, a unique key prefix.
pub(crate) fn config(url: &str, test: &str) -> Config {
    let mut loaded: Config = anomaly_runtime::load::<Section>(None).expect("defaults load");
    loaded.common.redis = anomaly_testkit::redis_config(url, test);
    loaded
}

pub(crate) fn recomputer(config: &Config, worker: &str) -> Recomputer {
    let store = Store::connect(&config.common.redis).expect("store");
    Recomputer::new(
        config,
        store,
        RecomputeMetrics::unregistered(),
        worker.to_owned(),
    )
}

pub(crate) fn key(i: u32) -> BaselineKey {
    BaselineKey::new(
        format!("svc-{}", i % 97),
        format!("GET /r/{i}"),
        (i % 24) as u8,
        DayType::Weekday,
    )
    .unwrap()
}

pub(crate) fn settings(config: &Loaded<Section>) -> IngestSettings {
    IngestSettings {
        window_size: config.common.stats.window_size,
        dedup_ttl: Duration::from_secs(3600),
        retention: config.common.retention,
        max_keys: 0,
    }
}

/// Ingests `per_key` samples for each of `keys`, sample j of key i being `f(i, j)` ms.
pub(crate) async fn seed(
    store: &Store,
    config: &Config,
    keys: &[BaselineKey],
    per_key: u32,
    f: impl Fn(usize, u32) -> f64,
) {
    let mut items = Vec::new();
    let mut trace = 1u128;
    for (i, k) in keys.iter().enumerate() {
        for j in 0..per_key {
            items.push(IngestItem {
                start_ms: 0,
                trace_id: TraceId::parse(&format!("{trace:x}")).unwrap(),
                key: k.clone(),
                duration: DurationMs::new(f(i, j)).unwrap(),
            });
            trace += 1;
        }
    }
    for chunk in items.chunks(20_000) {
        store
            .ingest(chunk, &settings(config))
            .await
            .expect("seed ingest");
    }
}
