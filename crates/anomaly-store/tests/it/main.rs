//! Integration tests of anomaly-store against a real redis-server.

mod baselines;
mod errors;
mod failover;
mod ingest;
mod listing;
mod poller;
mod spans;
mod tls;

use std::time::Duration;

use anomaly_core::{BaselineKey, DayType, DurationMs, TraceId};
use anomaly_store::{IngestItem, IngestSettings, Store};

pub(crate) fn store_at(url: String, test: &str) -> Store {
    Store::connect(&anomaly_testkit::redis_config(&url, test)).expect("store")
}

pub(crate) fn store(test: &str) -> Store {
    store_at(anomaly_testkit::shared_redis_url(), test)
}

pub(crate) fn settings() -> IngestSettings {
    IngestSettings {
        window_size: 1000,
        dedup_ttl: Duration::from_secs(6 * 3600),
        retention: Duration::from_secs(30 * 86_400),
        max_keys: 0,
    }
}

pub(crate) fn key(service: &str, hour: u8) -> BaselineKey {
    BaselineKey::new(service, "GET /items", hour, DayType::Weekday).unwrap()
}

pub(crate) fn trace(n: u128) -> TraceId {
    TraceId::parse(&format!("{n:x}")).unwrap()
}

pub(crate) fn item(n: u128, key: &BaselineKey, ms: f64) -> IngestItem {
    IngestItem {
        start_ms: 0,
        trace_id: trace(n),
        key: key.clone(),
        duration: DurationMs::new(ms).unwrap(),
    }
}

/// A redis-cli-like connection for assertions that bypass the code under test. On the shared
/// Redis Cluster (`TEST_REDIS_MODE=cluster`) a keyed command goes to its key's owner.
pub(crate) fn raw(url: &str, args: &[&str]) -> String {
    if anomaly_testkit::test_redis_mode() == anomaly_store::RedisMode::Cluster
        && url == anomaly_testkit::shared_redis_url()
    {
        return anomaly_testkit::shared_cluster().cluster_command(args);
    }
    let addr = url
        .trim_start_matches("redis://")
        .parse()
        .expect("test url is host:port");
    anomaly_testkit::raw_command(addr, args).expect("raw redis command")
}
