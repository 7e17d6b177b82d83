//! The `ingester:` section: the shipped example loads, defaults match the contract, the
//! environment overrides the file (secrets verbatim), and a bad value names its key.

// figment's Jail closures return figment::Error, which is large; that is figment's API.
#![allow(clippy::result_large_err)]

use std::path::Path;
use std::time::Duration;

use figment::Jail;
use ingester::Section;
use secrecy::ExposeSecret;

fn load(jail: &Jail) -> Result<ingester::Config, anomaly_runtime::ConfigLoadError> {
    let path = jail.directory().join("config.yaml");
    anomaly_runtime::load::<Section>(path.exists().then_some(path.as_path()))
}

#[test]
fn example_config_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/example.yaml");
    let loaded = anomaly_runtime::load::<Section>(Some(&path)).expect("configs/example.yaml loads");
    let defaults = anomaly_runtime::load::<Section>(None).expect("defaults load");
    assert_eq!(loaded.service.listen, defaults.service.listen);
    assert_eq!(loaded.common.stats, defaults.common.stats);
}

#[test]
fn defaults_match_the_contract_and_the_issue() {
    Jail::expect_with(|jail| {
        let s = load(jail).unwrap().service;
        assert_eq!(s.listen.to_string(), "0.0.0.0:8081");
        let t = &s.tempo;
        assert!(!t.enabled(), "an empty url turns the poller off");
        assert_eq!(t.poll_interval, Duration::from_secs(15));
        assert_eq!(t.lookback, Duration::from_secs(120));
        assert_eq!(t.freshness, Duration::from_secs(30));
        assert_eq!(t.max_catchup, Duration::from_secs(3600));
        assert_eq!(s.max_keys, 100_000);
        assert!(s.auth.tokens.is_empty());
        assert_eq!(
            s.otlp.grpc_listen.map(|a| a.to_string()).as_deref(),
            Some("0.0.0.0:4317")
        );
        Ok(())
    });
}

/// `ingester.otlp.grpc_listen: ""` (or the environment's empty value) turns gRPC off.
#[test]
fn an_empty_grpc_listen_turns_grpc_off() {
    Jail::expect_with(|jail| {
        jail.create_file("config.yaml", "ingester: { otlp: { grpc_listen: \"\" } }")?;
        assert_eq!(load(jail).unwrap().service.otlp.grpc_listen, None);
        jail.set_env("ANOMALY_INGESTER__OTLP__GRPC_LISTEN", "127.0.0.1:14317");
        let addr = load(jail).unwrap().service.otlp.grpc_listen;
        assert_eq!(addr.map(|a| a.port()), Some(14317));
        jail.set_env("ANOMALY_INGESTER__OTLP__GRPC_LISTEN", "");
        assert_eq!(load(jail).unwrap().service.otlp.grpc_listen, None);
        Ok(())
    });
}

#[test]
fn environment_overrides_the_file() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "config.yaml",
            r#"
ingester:
  listen: "0.0.0.0:9081"
  ignore: [{ endpoint: "GET /healthz" }]
  tempo: { url: "http://tempo:3200", org_id: "team-a", query: "{ }", lookback: "5m" }
"#,
        )?;
        jail.set_env(
            "ANOMALY_INGESTER__TEMPO__URL",
            "http://tempo-query-frontend:3200",
        );
        jail.set_env("ANOMALY_INGESTER__TEMPO__POLL_INTERVAL", "30s");
        jail.set_env("ANOMALY_INGESTER__TEMPO__AUTH__USERNAME", "poller");
        jail.set_env("ANOMALY_INGESTER__TEMPO__AUTH__PASSWORD", "0123");
        jail.set_env("ANOMALY_INGESTER__AUTH__TOKENS", "a1, b2");
        let s = load(jail).unwrap().service;
        assert_eq!(s.listen.to_string(), "0.0.0.0:9081");
        assert_eq!(s.tempo.url, "http://tempo-query-frontend:3200");
        assert_eq!(s.tempo.poll_interval, Duration::from_secs(30));
        assert_eq!(s.tempo.lookback, Duration::from_secs(300));
        assert_eq!(s.tempo.org_id, "team-a");
        assert_eq!(s.tempo.query, "{ }");
        assert_eq!(s.tempo.auth.username.as_deref(), Some("poller"));
        assert_eq!(
            s.tempo.auth.password.as_ref().unwrap().expose_secret(),
            "0123"
        );
        let tokens: Vec<&str> = s.auth.tokens.iter().map(|t| t.expose_secret()).collect();
        assert_eq!(tokens, ["a1", "b2"]);
        assert_eq!(s.ignore[0].endpoint.as_deref(), Some("GET /healthz"));
        Ok(())
    });
}

#[test]
fn bad_values_name_their_key() {
    let cases = [
        (
            "ingester: { tempo: { url: \"tempo:3200\" } }",
            "ingester.tempo.url",
        ),
        (
            "ingester: { tempo: { poll_interval: \"0s\" } }",
            "ingester.tempo.poll_interval",
        ),
        (
            "ingester: { tempo: { poll_interval: \"5m\" } }",
            "ingester.tempo.lookback",
        ),
        (
            "ingester: { tempo: { lookback: \"100h\" } }",
            "ingester.tempo.lookback",
        ),
        ("ingester: { tempo: { limit: 0 } }", "ingester.tempo.limit"),
        (
            "ingester: { tempo: { limit: 300000 } }",
            "ingester.tempo.limit",
        ),
        (
            "ingester: { tempo: { max_catchup: \"1m\" } }",
            "ingester.tempo.max_catchup",
        ),
        (
            "ingester: { tempo: { backoff: \"1m\" } }",
            "ingester.tempo.backoff",
        ),
        (
            "ingester: { tempo: { min_slice: \"1500ms\" } }",
            "ingester.tempo.min_slice",
        ),
        (
            "ingester: { tempo: { lease_ttl: \"10ms\" } }",
            "ingester.tempo.lease_ttl",
        ),
        (
            "ingester: { tempo: { auth: { username: \"u\" } } }",
            "ingester.tempo.auth.username",
        ),
        (
            "ingester: { tempo: { auth: { token: \"t\", username: \"u\", password: \"p\" } } }",
            "ingester.tempo.auth",
        ),
        ("ingester: { tempo: { timeout: \"soon\" } }", "timeout"),
        ("ingester: { tempo: { q: \"{}\" } }", "q"),
        (
            "ingester: { max_batch_items: 0 }",
            "ingester.max_batch_items",
        ),
        ("ingester: { ignore: [{}] }", "ingester.ignore[0]"),
        (
            "ingester: { ignore: [{ endpoint: \"GET /(\" }] }",
            "ingester.ignore[0].endpoint",
        ),
        (
            "ingester: { limits: { max_body_bytes: 10 } }",
            "ingester.limits.max_body_bytes",
        ),
        ("ingester: { listen: \"nowhere\" }", "listen"),
        (
            "ingester: { otlp: { grpc_listen: \"nowhere\" } }",
            "grpc_listen",
        ),
        (
            "ingester: { otlp: { max_body_bytes: 10 } }",
            "ingester.otlp.max_body_bytes",
        ),
        (
            "ingester: { otlp: { max_spans: 0 } }",
            "ingester.otlp.max_spans",
        ),
        (
            "ingester: { otlp: { max_concurrency: 0 } }",
            "ingester.otlp.max_concurrency",
        ),
        ("ingester: { otlp: { port: 1 } }", "port"),
    ];
    for (yaml, key) in cases {
        Jail::expect_with(|jail| {
            jail.create_file("config.yaml", yaml)?;
            let err = load(jail).unwrap_err().to_string();
            assert!(
                err.contains(key),
                "{yaml} gave {err:?}, which does not name {key}"
            );
            Ok(())
        });
    }
}
