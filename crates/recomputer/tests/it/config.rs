//! The shipped example configuration loads for this service, and its defaults match it.

use std::path::Path;

#[test]
fn example_config_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/example.yaml");
    let loaded = anomaly_runtime::load::<recomputer::Section>(Some(&path))
        .expect("configs/example.yaml loads");
    let defaults = anomaly_runtime::load::<recomputer::Section>(None).expect("defaults load");
    assert_eq!(loaded.service.listen, defaults.service.listen);
    assert_eq!(loaded.common.stats, defaults.common.stats);
}

/// `ANOMALY_CONFIG_FILE` is how `--config` is given in the environment, not a config key.
#[test]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment's own error type.
fn the_config_file_variable_is_not_a_key() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("ANOMALY_CONFIG_FILE", "/etc/latency-anomaly/config.yaml");
        jail.set_env("ANOMALY_RECOMPUTER__BATCH_SIZE", "77");
        let loaded = anomaly_runtime::load::<recomputer::Section>(None).expect("loads");
        assert_eq!(loaded.service.batch_size, 77);
        Ok(())
    });
}
