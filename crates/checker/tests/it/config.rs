//! Configuration: the shipped example loads, the checker's keys come from file and
//! environment, and bad values name their key.

// figment::Jail's closures return figment's own (large) error type.
#![allow(clippy::result_large_err)]

use std::path::Path;

#[test]
fn example_config_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/example.yaml");
    let loaded =
        anomaly_runtime::load::<checker::Section>(Some(&path)).expect("configs/example.yaml loads");
    let defaults = anomaly_runtime::load::<checker::Section>(None).expect("defaults load");
    assert_eq!(loaded.service.listen, defaults.service.listen);
    assert_eq!(loaded.common.stats, defaults.common.stats);
    assert_eq!(loaded.common.names, defaults.common.names);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn checker_keys_come_from_file_and_environment() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "config.yaml",
            "checker:\n  max_batch_items: 50\n  cache: { ttl: \"2s\", max_entries: 10 }\n",
        )?;
        jail.set_env("ANOMALY_CHECKER__CACHE__TTL", "750ms");
        jail.set_env("ANOMALY_CHECKER__AUTH__TOKENS", "a,b");
        let loaded =
            anomaly_runtime::load::<checker::Section>(Some(Path::new("config.yaml"))).unwrap();
        let s = loaded.service;
        assert_eq!(s.max_batch_items, 50);
        assert_eq!(s.cache.ttl, std::time::Duration::from_millis(750));
        assert_eq!(s.cache.max_entries, 10);
        assert_eq!(s.auth.tokens.len(), 2);
        assert_eq!(loaded.common.names.max_bytes(), 256);
        Ok(())
    });
}

#[test]
fn the_deprecated_checker_max_name_bytes_still_sets_the_limit() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("config.yaml", "checker:\n  max_name_bytes: 9\n")?;
        let loaded =
            anomaly_runtime::load::<checker::Section>(Some(Path::new("config.yaml"))).unwrap();
        assert_eq!(loaded.common.names.max_bytes(), 9);
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert!(loaded.warnings[0].contains("max_name_bytes"));
        Ok(())
    });
}

#[test]
fn bad_checker_values_name_their_key() {
    // (yaml, key named in the error)
    let cases = [
        ("checker: { max_batch_items: 0 }", "checker.max_batch_items"),
        ("checker: { cache: { ttl: \"2h\" } }", "checker.cache.ttl"),
        (
            "checker: { cache: { max_entries: 0 } }",
            "checker.cache.max_entries",
        ),
        ("checker: { max_name_bytes: 0 }", "checker.max_name_bytes"),
        ("max_name_bytes: 0", "max_name_bytes"),
        (
            "max_name_bytes: 64\nchecker: { max_name_bytes: 128 }",
            "checker.max_name_bytes",
        ),
        (
            "checker: { limits: { max_concurrency: 0 } }",
            "checker.limits.max_concurrency",
        ),
        (
            "checker: { auth: { tokens_file: /nonexistent } }",
            "checker.auth.tokens_file",
        ),
        ("checker: { cache: { size: 3 } }", "size"),
        ("checker: { listen: nowhere }", "listen"),
        // Issue 14's settings, read by every service.
        (
            "overrides: [{ service: \"a[\", factor: 2 }]",
            "overrides[0].service",
        ),
        (
            "overrides: [{ service: \"a\" }, { endpoint: \"GET /x\", factor: -1 }]",
            "overrides[1].factor",
        ),
        ("overrides: [{ factor: 3 }]", "overrides[0]"),
        ("overrides: [{ service: a, kk: 3 }]", "kk"),
        ("stats: { min_threshold_ms: -1 }", "stats.min_threshold_ms"),
        ("stats: { nearby_hours: 12 }", "stats.nearby_hours"),
        (
            "stats: { fallback: [{ level: exact, min_samples: 5 }] }",
            "stats.fallback[0].level",
        ),
        (
            "stats: { fallback: [{ level: all, min_samples: 5 }, { level: all, min_samples: 9 }] }",
            "stats.fallback[1].level",
        ),
        (
            "stats: { fallback: [{ level: hourly, min_samples: 5 }] }",
            "hourly",
        ),
    ];
    for (yaml, key) in cases {
        figment::Jail::expect_with(|jail| {
            jail.create_file("config.yaml", yaml)?;
            let err = anomaly_runtime::load::<checker::Section>(Some(Path::new("config.yaml")))
                .expect_err(yaml)
                .to_string();
            assert!(err.contains(key), "{yaml}: {err}");
            Ok(())
        });
    }
}
