//! The shared Redis and `redis_config` in each mode.

use anomaly_store::RedisMode;
use anomaly_testkit::{
    redis_config, shared_cluster, shared_redis_url, shared_sentinels, test_redis_mode,
};

#[test]
fn the_shared_url_gives_settings_of_the_mode_under_test() {
    let config = redis_config(&shared_redis_url(), "mode");
    assert_eq!(config.mode, test_redis_mode());
    config.validate().unwrap();
    assert!(config.key_prefix.starts_with("test:mode:"));
}

#[test]
fn the_shared_cluster_url_gives_cluster_settings() {
    let cluster = shared_cluster();
    let config = redis_config(&cluster.seed_urls()[0], "cluster-mode");
    assert_eq!(config.mode, RedisMode::Cluster);
    assert_eq!(config.cluster.urls, cluster.seed_urls());
    assert_eq!(config.cluster.urls.len(), 6);
    config.validate().unwrap();
    assert_ne!(
        config.key_prefix,
        redis_config(&cluster.seed_urls()[0], "cluster-mode").key_prefix
    );
    // Another node's URL, or a server of the test's own, stays standalone.
    let other = redis_config(&cluster.seed_urls()[1], "cluster-mode");
    assert_eq!(other.mode, RedisMode::Standalone);
}

#[test]
fn the_shared_sentinel_url_gives_sentinel_settings() {
    let sentinels = shared_sentinels();
    let config = redis_config(&sentinels.master_url(), "sentinel-mode");
    assert_eq!(config.mode, RedisMode::Sentinel);
    assert_eq!(config.sentinel.master_name, "mymaster");
    assert_eq!(config.sentinel.urls, sentinels.sentinel_urls());
    config.validate().unwrap();
    let other = redis_config("redis://127.0.0.1:1", "sentinel-mode");
    assert_eq!(other.mode, RedisMode::Standalone);
}
