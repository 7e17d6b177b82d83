//! Configuration loading: built-in defaults < YAML file (`--config`) < `ANOMALY_` environment
//! (`__` between levels), as the contract fixes.
//!
//! Every binary reads the one shared file. The common sections are typed here; each service
//! types its own section and [`load`] extracts it, so the checker neither needs nor validates the
//! ingester's settings, while an unknown top-level key still stops every binary.

use std::path::Path;
use std::time::Duration;

use anomaly_core::{
    ConfigError, NameRules, Override, Overrides, SpanConfig, SpanRules, StatsConfig, TimeConfig,
};
use anomaly_store::RedisConfig;
use chrono::{NaiveDate, Weekday};
use chrono_tz::Tz;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Yaml};
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};

use crate::links::LinksConfig;

/// The sections every service reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommonConfig {
    pub redis: RedisConfig,
    /// IANA zone the hour buckets are taken in.
    pub timezone: Tz,
    pub weekend_days: Vec<Weekday>,
    /// Dates (YYYY-MM-DD) bucketed as weekend.
    pub holidays: Vec<NaiveDate>,
    pub stats: StatsConfig,
    /// How long a trace ID is remembered for deduplication.
    #[serde(with = "humantime_serde")]
    pub dedup_ttl: Duration,
    /// Keys that receive no samples for this long expire (window and baseline); 0 keeps them.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// `max_name_bytes`: the longest service or endpoint name, in bytes. One setting for every
    /// service, so the ingester stores no name the checker would refuse.
    #[serde(rename = "max_name_bytes")]
    pub names: NameRules,
    /// Per-service and per-endpoint tuning of the rule; the first match wins (see
    /// [`anomaly_core::overrides`]). Every service reads the same list.
    pub overrides: Vec<Override>,
    /// Span baselines: which spans get them and under which name (see
    /// [`anomaly_core::spans`]). The checker names spans by the same rules as the ingester.
    pub spans: SpanConfig,
    pub telemetry: TelemetryConfig,
    /// `links:`: URL templates for what answers name (`links.trace_url`).
    pub links: LinksConfig,
    // The service sections: typed and validated by their own binaries (see [`load`]).
    #[serde(skip_serializing)]
    ingester: IgnoredAny,
    #[serde(skip_serializing)]
    recomputer: IgnoredAny,
    #[serde(skip_serializing)]
    checker: IgnoredAny,
}

impl Default for CommonConfig {
    fn default() -> Self {
        let time = TimeConfig::default();
        CommonConfig {
            redis: RedisConfig::default(),
            timezone: time.timezone,
            weekend_days: time.weekend_days,
            holidays: time.holidays,
            stats: StatsConfig::default(),
            dedup_ttl: Duration::from_secs(6 * 3600),
            retention: Duration::from_secs(30 * 86_400),
            names: NameRules::default(),
            overrides: Vec::new(),
            spans: SpanConfig::default(),
            telemetry: TelemetryConfig::default(),
            links: LinksConfig::default(),
            ingester: IgnoredAny,
            recomputer: IgnoredAny,
            checker: IgnoredAny,
        }
    }
}

impl CommonConfig {
    pub fn time(&self) -> TimeConfig {
        TimeConfig {
            timezone: self.timezone,
            weekend_days: self.weekend_days.clone(),
            holidays: self.holidays.clone(),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.redis.validate()?;
        self.time().validate()?;
        self.stats.validate()?;
        if self.dedup_ttl < Duration::from_secs(1) {
            return Err(ConfigError::new("dedup_ttl", "must be at least 1s"));
        }
        self.compiled_overrides()?;
        self.span_rules()?;
        self.links.validate()?;
        self.telemetry.validate()
    }

    /// `overrides`, compiled (validated at load, so this only fails on a config never
    /// validated).
    pub fn compiled_overrides(&self) -> Result<Overrides, ConfigError> {
        Overrides::new(&self.overrides, self.stats.window_size)
    }
}

impl CommonConfig {
    /// `spans`, compiled (validated at load, so this only fails on a config never validated).
    pub fn span_rules(&self) -> Result<SpanRules, ConfigError> {
        SpanRules::new(&self.spans)
    }
}

/// `telemetry:`: logs and traces of the services themselves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// A tracing filter, e.g. `info` or `info,anomaly_store=debug`; `RUST_LOG` overrides it.
    pub log_level: String,
    /// `json` (one object per line, for log pipelines) or `text`.
    pub log_format: LogFormat,
    /// OTLP/gRPC endpoint for the services' own traces, e.g. `http://otel-collector:4317`;
    /// empty turns export off.
    pub otlp_endpoint: String,
    /// The `service.name` resource attribute prefix.
    pub service_namespace: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_level: "info".to_owned(),
            log_format: LogFormat::Json,
            otlp_endpoint: String::new(),
            service_namespace: "latency-anomaly".to_owned(),
        }
    }
}

impl TelemetryConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return Err(ConfigError::new(
                "telemetry.log_level",
                "is not a valid tracing filter",
            ));
        }
        let http = ["http://", "https://"]
            .iter()
            .any(|p| self.otlp_endpoint.starts_with(p));
        if !self.otlp_endpoint.is_empty() && !http {
            return Err(ConfigError::new(
                "telemetry.otlp_endpoint",
                "must be an http(s) URL or empty",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

/// A service's own section (`checker:`, `ingester:`, `recomputer:`).
pub trait ServiceSection: DeserializeOwned + Default {
    /// The top-level key of the section.
    const NAME: &'static str;
    /// Checks what types cannot; keys in errors are full paths (`checker.listen`).
    fn validate(&self, common: &CommonConfig) -> Result<(), ConfigError>;

    /// Reads the settings this service shares with another service's section, so one key
    /// configures both (the checker's trace analysis reads `ingester.tempo`); the default reads
    /// nothing.
    fn read_shared(&mut self, _figment: &Figment) -> Result<(), Box<figment::Error>> {
        Ok(())
    }
}

/// A loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct Loaded<S> {
    pub common: CommonConfig,
    pub service: S,
    /// Deprecated keys that were used, each with what replaces it; logged at start.
    pub warnings: Vec<String>,
}

/// Why the configuration could not be loaded; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigLoadError {
    #[error("configuration: {0}")]
    Parse(Box<figment::Error>),
    #[error("configuration: {0}")]
    Invalid(#[from] ConfigError),
}

/// Loads defaults, then the YAML file at `path` (which must exist when given), then `ANOMALY_*`
/// variables from the environment; validates the common sections and the service's own.
pub fn load<S: ServiceSection>(path: Option<&Path>) -> Result<Loaded<S>, ConfigLoadError> {
    let mut figment = Figment::new();
    if let Some(path) = path {
        figment = figment.merge(Yaml::file_exact(path));
    }
    figment = figment.merge(env().filter(|k| !is_secret(k.as_str())));
    // Secrets are taken verbatim: figment would read a password of digits as a number (and
    // "1.50" as 1.5), so they bypass its value parsing. A `tokens` list is comma-separated.
    for (key, raw) in env().iter().filter(|(k, _)| is_secret(k.as_str())) {
        figment = if key.as_str().ends_with("tokens") {
            let list: Vec<&str> = raw
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect();
            figment.merge(Serialized::default(key.as_str(), list))
        } else {
            figment.merge(Serialized::default(key.as_str(), raw))
        };
    }
    extract(&figment)
}

/// The environment variable naming the config file (`--config`'s `env`); not a config key.
pub const CONFIG_FILE_ENV: &str = "ANOMALY_CONFIG_FILE";

fn env() -> Env {
    let file_var = CONFIG_FILE_ENV
        .trim_start_matches("ANOMALY_")
        .to_lowercase();
    Env::prefixed("ANOMALY_")
        .ignore(&[file_var.as_str()])
        .split("__")
}

fn is_secret(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    matches!(last, "password" | "token" | "tokens")
}

/// `checker.max_name_bytes`: the name limit's key from when only the checker applied it. It
/// is read here, for every binary, so that a deployment still setting it gets the same limit at
/// ingest as at check.
const DEPRECATED_NAME_BYTES: &str = "checker.max_name_bytes";

fn extract<S: ServiceSection>(figment: &Figment) -> Result<Loaded<S>, ConfigLoadError> {
    let mut common: CommonConfig = figment.extract().map_err(parse_error)?;
    let warnings = apply_deprecated_name_bytes(figment, &mut common)?;
    let mut service: S = if figment.contains(S::NAME) {
        figment.extract_inner(S::NAME).map_err(parse_error)?
    } else {
        S::default()
    };
    service.read_shared(figment).map_err(|e| parse_error(*e))?;
    common.validate()?;
    service.validate(&common)?;
    Ok(Loaded {
        common,
        service,
        warnings,
    })
}

fn parse_error(e: figment::Error) -> ConfigLoadError {
    ConfigLoadError::Parse(Box::new(e))
}

/// Takes `checker.max_name_bytes` as `max_name_bytes` when only the old key is set; both set
/// to different values is an error, since one of them would be silently ignored.
fn apply_deprecated_name_bytes(
    figment: &Figment,
    common: &mut CommonConfig,
) -> Result<Vec<String>, ConfigLoadError> {
    if !figment.contains(DEPRECATED_NAME_BYTES) {
        return Ok(Vec::new());
    }
    let old: usize = figment
        .extract_inner(DEPRECATED_NAME_BYTES)
        .map_err(parse_error)?;
    let key = NameRules::CONFIG_KEY;
    if figment.contains(key) {
        let new = common.names.max_bytes();
        if old != new {
            return Err(ConfigError::new(
                DEPRECATED_NAME_BYTES,
                format!(
                    "is {old} but {key} is {new}; {DEPRECATED_NAME_BYTES} is a deprecated \
                     name of {key}, remove it"
                ),
            )
            .into());
        }
    } else {
        common.names =
            NameRules::new(old).map_err(|e| ConfigError::new(DEPRECATED_NAME_BYTES, e.message))?;
    }
    Ok(vec![format!(
        "{DEPRECATED_NAME_BYTES} is deprecated: the limit now applies to every service; set \
         {key} (ANOMALY_MAX_NAME_BYTES) instead"
    )])
}

#[cfg(test)]
// figment's Jail closures return figment::Error, which is large; that is figment's API.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;
    use secrecy::ExposeSecret;

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Demo {
        listen: String,
        #[serde(with = "humantime_serde")]
        interval: Option<Duration>,
        tokens: Vec<secrecy::SecretString>,
    }

    impl ServiceSection for Demo {
        const NAME: &'static str = "checker";
        fn validate(&self, _: &CommonConfig) -> Result<(), ConfigError> {
            if self.listen == "bad" {
                return Err(ConfigError::new("checker.listen", "is bad"));
            }
            Ok(())
        }
    }

    fn load_in_jail(jail: &Jail) -> Result<Loaded<Demo>, ConfigLoadError> {
        let path = jail.directory().join("config.yaml");
        load::<Demo>(path.exists().then_some(path.as_path()))
    }

    #[test]
    fn defaults_match_the_contract() {
        Jail::expect_with(|jail| {
            let c = load_in_jail(jail).unwrap().common;
            assert_eq!(c.redis.url, "redis://127.0.0.1:6379");
            assert_eq!(c.timezone, chrono_tz::Asia::Taipei);
            assert_eq!(c.weekend_days, vec![Weekday::Sat, Weekday::Sun]);
            assert_eq!(c.stats, StatsConfig::default());
            assert_eq!(c.dedup_ttl, Duration::from_secs(21_600));
            Ok(())
        });
    }

    #[test]
    fn file_then_environment() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "config.yaml",
                r#"
redis: { url: "redis://file:6379", key_prefix: "p:" }
timezone: "America/New_York"
weekend_days: ["Fri", "Sat"]
holidays: ["2026-12-25"]
stats: { window_size: 500, factor: 3.0 }
dedup_ttl: "1h"
checker: { listen: "0.0.0.0:9000", interval: "15s" }
ingester: { anything: "is the ingester's business" }
"#,
            )?;
            jail.set_env("ANOMALY_REDIS__URL", "redis://env:6379");
            jail.set_env("ANOMALY_STATS__K", "7.5");
            jail.set_env("ANOMALY_CHECKER__LISTEN", "127.0.0.1:1234");
            jail.set_env("ANOMALY_REDIS__PASSWORD", "123456");
            jail.set_env("ANOMALY_CHECKER__TOKENS", "007, abc");
            let l = load_in_jail(jail).unwrap();
            assert_eq!(l.common.redis.url, "redis://env:6379");
            assert_eq!(l.common.redis.key_prefix, "p:");
            assert_eq!(
                l.common.redis.password.as_ref().unwrap().expose_secret(),
                "123456"
            );
            assert_eq!(l.common.timezone, chrono_tz::America::New_York);
            assert_eq!(l.common.weekend_days, vec![Weekday::Fri, Weekday::Sat]);
            assert_eq!(
                l.common.holidays,
                vec![NaiveDate::from_ymd_opt(2026, 12, 25).unwrap()]
            );
            assert_eq!(
                (
                    l.common.stats.window_size,
                    l.common.stats.factor,
                    l.common.stats.k
                ),
                (500, 3.0, 7.5)
            );
            assert_eq!(l.common.stats.min_samples, 50);
            assert_eq!(l.common.dedup_ttl, Duration::from_secs(3600));
            assert_eq!(l.service.listen, "127.0.0.1:1234");
            assert_eq!(l.service.interval, Some(Duration::from_secs(15)));
            let tokens: Vec<&str> = l.service.tokens.iter().map(|t| t.expose_secret()).collect();
            assert_eq!(tokens, ["007", "abc"]);
            Ok(())
        });
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("bogus: 1\n", "bogus"),
            ("stats: { windowsize: 5 }\n", "windowsize"),
            ("stats: { factor: \"two\" }\n", "stats.factor"),
            ("timezone: \"Mars/Olympus\"\n", "timezone"),
            ("weekend_days: [\"Caturday\"]\n", "weekend_days"),
            ("holidays: [\"2026-13-01\"]\n", "holidays"),
            ("dedup_ttl: \"forever\"\n", "dedup_ttl"),
            ("stats: { min_samples: 0 }\n", "stats.min_samples"),
            ("redis: { url: \"http://x\" }\n", "redis.url"),
            ("checker: { listen: \"bad\" }\n", "checker.listen"),
            ("checker: { port: 1 }\n", "port"),
        ];
        for (yaml, key) in cases {
            Jail::expect_with(|jail| {
                jail.create_file("config.yaml", yaml)?;
                let err = load_in_jail(jail).unwrap_err().to_string();
                assert!(
                    err.contains(key),
                    "{yaml:?} gave {err:?}, which does not name {key}"
                );
                Ok(())
            });
        }
    }

    #[test]
    fn unknown_environment_keys_are_rejected() {
        Jail::expect_with(|jail| {
            jail.set_env("ANOMALY_REDIS__URLL", "redis://typo:6379");
            let err = load_in_jail(jail).unwrap_err().to_string();
            assert!(err.contains("urll"), "{err}");
            Ok(())
        });
    }

    /// A service other than the checker: the name limit must reach it too.
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Ingester {}

    impl ServiceSection for Ingester {
        const NAME: &'static str = "ingester";
        fn validate(&self, _: &CommonConfig) -> Result<(), ConfigError> {
            Ok(())
        }
    }

    /// Environment variables a case sets.
    type Vars = &'static [(&'static str, &'static str)];

    /// `max_name_bytes` (and the warnings) as an ingester would load them from `yaml` and `env`.
    fn name_bytes(yaml: &str, env: Vars) -> Result<(usize, usize), String> {
        let mut out = Err(String::new());
        Jail::expect_with(|jail| {
            jail.create_file("config.yaml", yaml)?;
            for (k, v) in env {
                jail.set_env(k, v);
            }
            out = load::<Ingester>(Some(&jail.directory().join("config.yaml")))
                .map(|l| (l.common.names.max_bytes(), l.warnings.len()))
                .map_err(|e| e.to_string());
            Ok(())
        });
        out
    }

    #[test]
    fn max_name_bytes_is_one_setting_for_every_service() {
        // (yaml, environment, limit and number of deprecation warnings)
        let cases: [(&str, Vars, (usize, usize)); 7] = [
            ("{}", &[], (256, 0)),
            ("max_name_bytes: 1024", &[], (1024, 0)),
            (
                "max_name_bytes: 1024",
                &[("ANOMALY_MAX_NAME_BYTES", "64")],
                (64, 0),
            ),
            // The deprecated key still works, for every service, and says so.
            ("checker: { max_name_bytes: 512 }", &[], (512, 1)),
            (
                "{}",
                &[("ANOMALY_CHECKER__MAX_NAME_BYTES", "128")],
                (128, 1),
            ),
            (
                "max_name_bytes: 512\nchecker: { max_name_bytes: 512 }",
                &[],
                (512, 1),
            ),
            ("max_name_bytes: 65536", &[], (65_536, 0)),
        ];
        for (yaml, env, want) in cases {
            assert_eq!(name_bytes(yaml, env), Ok(want), "{yaml} {env:?}");
        }
    }

    #[test]
    fn bad_max_name_bytes_names_the_key() {
        // (yaml, environment, what the error must say)
        let cases: [(&str, Vars, &[&str]); 6] = [
            (
                "max_name_bytes: 0",
                &[],
                &["max_name_bytes", "from 1 to 65536"],
            ),
            (
                "max_name_bytes: 65537",
                &[],
                &["max_name_bytes", "from 1 to 65536"],
            ),
            ("max_name_bytes: lots", &[], &["max_name_bytes"]),
            (
                "checker: { max_name_bytes: 0 }",
                &[],
                &["checker.max_name_bytes", "from 1 to 65536"],
            ),
            (
                "checker: { max_name_bytes: -3 }",
                &[],
                &["checker.max_name_bytes"],
            ),
            (
                "max_name_bytes: 512",
                &[("ANOMALY_CHECKER__MAX_NAME_BYTES", "1024")],
                &["checker.max_name_bytes", "1024", "512", "deprecated"],
            ),
        ];
        for (yaml, env, needles) in cases {
            let err = name_bytes(yaml, env).expect_err(yaml);
            for needle in needles {
                assert!(err.contains(needle), "{yaml} {env:?}: {err}");
            }
        }
    }

    #[test]
    fn missing_file_is_an_error() {
        Jail::expect_with(|jail| {
            let missing = jail.directory().join("nope.yaml");
            assert!(load::<Demo>(Some(&missing)).is_err());
            Ok(())
        });
    }
}
