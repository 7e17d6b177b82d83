//! Configuration types shared by every service: statistics, time buckets and Redis.
//!
//! They deserialize with `deny_unknown_fields` and carry the contract's defaults; `validate`
//! checks what types cannot, naming the offending key so a bad deployment fails at start.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{NaiveDate, Weekday};
use chrono_tz::Tz;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// A configuration value that is well-typed but not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// `stats:`: the window and the rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatsConfig {
    /// Durations kept per key.
    pub window_size: u32,
    /// Multiplier of p95 in the first bound.
    pub factor: f64,
    /// Multiplier of MAD in the second bound.
    pub k: f64,
    /// Below this many samples the answer is INSUFFICIENT_DATA.
    pub min_samples: u32,
    /// Floor of the MAD, in milliseconds.
    pub mad_epsilon_ms: f64,
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            window_size: 1000,
            factor: 2.0,
            k: 10.0,
            min_samples: 50,
            mad_epsilon_ms: 1.0,
        }
    }
}

impl StatsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=100_000).contains(&self.window_size) {
            return Err(ConfigError::new(
                "stats.window_size",
                "must be from 1 to 100000",
            ));
        }
        if !(self.factor.is_finite() && self.factor > 0.0) {
            return Err(ConfigError::new(
                "stats.factor",
                "must be a positive number",
            ));
        }
        if !(self.k.is_finite() && self.k >= 0.0) {
            return Err(ConfigError::new("stats.k", "must be a number >= 0"));
        }
        if self.min_samples == 0 || self.min_samples > self.window_size {
            return Err(ConfigError::new(
                "stats.min_samples",
                format!("must be from 1 to stats.window_size ({})", self.window_size),
            ));
        }
        if !(self.mad_epsilon_ms.is_finite() && self.mad_epsilon_ms > 0.0) {
            return Err(ConfigError::new(
                "stats.mad_epsilon_ms",
                "must be a positive number",
            ));
        }
        Ok(())
    }
}

/// `timezone`, `weekend_days` and `holidays`: how instants become buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeConfig {
    pub timezone: Tz,
    pub weekend_days: Vec<Weekday>,
    pub holidays: Vec<NaiveDate>,
}

impl Default for TimeConfig {
    fn default() -> Self {
        TimeConfig {
            timezone: chrono_tz::Asia::Taipei,
            weekend_days: vec![Weekday::Sat, Weekday::Sun],
            holidays: Vec::new(),
        }
    }
}

impl TimeConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut seen = [false; 7];
        for d in &self.weekend_days {
            let i = d.num_days_from_monday() as usize;
            if seen[i] {
                return Err(ConfigError::new(
                    "weekend_days",
                    format!("{d} is listed twice"),
                ));
            }
            seen[i] = true;
        }
        if seen.iter().all(|&w| w) {
            return Err(ConfigError::new(
                "weekend_days",
                "cannot list all seven days",
            ));
        }
        Ok(())
    }
}

/// `redis:`: where the shared state lives.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:port/db`, `rediss://` for TLS, or `unix:///path`.
    pub url: String,
    /// Prepended to every key, so several deployments can share one Redis.
    pub key_prefix: String,
    /// ACL user name; overrides one in the URL.
    pub username: Option<String>,
    /// Password (AUTH); overrides one in the URL. Prefer `ANOMALY_REDIS__PASSWORD`.
    #[serde(skip_serializing)]
    pub password: Option<SecretString>,
    /// Most connections per process; operations share them (see anomaly-store).
    pub pool_size: usize,
    /// Upper bound on any one Redis operation, connecting included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// TLS (`rediss://` only): PEM file of the certificate authorities to trust instead of the
    /// system's roots (a private CA, e.g. a cert-manager issuer).
    pub tls_ca_file: Option<PathBuf>,
    /// TLS client certificate (PEM), for servers that set `tls-auth-clients yes`; needs
    /// `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// Private key (PEM) of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".to_owned(),
            key_prefix: String::new(),
            username: None,
            password: None,
            pool_size: 16,
            timeout: Duration::from_secs(2),
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

impl RedisConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let scheme_ok = ["redis://", "rediss://", "unix://", "redis+unix://"]
            .iter()
            .any(|s| self.url.starts_with(s));
        if !scheme_ok {
            return Err(ConfigError::new(
                "redis.url",
                "must start with redis://, rediss:// or unix://",
            ));
        }
        if self.key_prefix.contains(['{', '}']) {
            // A brace in the prefix would become the hash tag and put every key in one slot.
            return Err(ConfigError::new(
                "redis.key_prefix",
                "must not contain '{' or '}'",
            ));
        }
        if self.pool_size == 0 {
            return Err(ConfigError::new("redis.pool_size", "must be at least 1"));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new("redis.timeout", "must be more than 0"));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(ConfigError::new(
                "redis.tls_cert_file",
                "a client certificate needs its key, redis.tls_key_file, and the other way round",
            ));
        }
        let tls_set = [&self.tls_ca_file, &self.tls_cert_file]
            .iter()
            .any(|f| f.is_some());
        if tls_set && !self.url.starts_with("rediss://") {
            return Err(ConfigError::new(
                "redis.tls_ca_file",
                "TLS files apply only to a rediss:// URL",
            ));
        }
        Ok(())
    }

    /// The URL with any password replaced by `***`, for logs.
    pub fn redacted_url(&self) -> String {
        match (self.url.find("://"), self.url.rfind('@')) {
            (Some(scheme_end), Some(at)) if at > scheme_end => {
                let userinfo = &self.url[scheme_end + 3..at];
                let user = userinfo.split(':').next().unwrap_or("");
                format!(
                    "{}{user}:***{}",
                    &self.url[..scheme_end + 3],
                    &self.url[at..]
                )
            }
            _ => self.url.clone(),
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted_url())
            .field("key_prefix", &self.key_prefix)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("pool_size", &self.pool_size)
            .field("timeout", &self.timeout)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        StatsConfig::default().validate().unwrap();
        TimeConfig::default().validate().unwrap();
        RedisConfig::default().validate().unwrap();
    }

    #[test]
    fn rejects_bad_stats() {
        type Mutation = fn(&mut StatsConfig);
        let cases: [(Mutation, &str); 7] = [
            (|c| c.window_size = 0, "stats.window_size"),
            (|c| c.factor = 0.0, "stats.factor"),
            (|c| c.factor = f64::NAN, "stats.factor"),
            (|c| c.k = -1.0, "stats.k"),
            (|c| c.min_samples = 0, "stats.min_samples"),
            (|c| c.min_samples = 1001, "stats.min_samples"),
            (|c| c.mad_epsilon_ms = 0.0, "stats.mad_epsilon_ms"),
        ];
        for (mutate, key) in cases {
            let mut c = StatsConfig::default();
            mutate(&mut c);
            assert_eq!(c.validate().unwrap_err().key, key);
        }
    }

    #[test]
    fn rejects_bad_redis_and_time() {
        let mut r = RedisConfig {
            url: "http://x".into(),
            ..RedisConfig::default()
        };
        assert_eq!(r.validate().unwrap_err().key, "redis.url");
        r.url = "redis://h".into();
        r.key_prefix = "a{b}".into();
        assert_eq!(r.validate().unwrap_err().key, "redis.key_prefix");
        let t = TimeConfig {
            weekend_days: vec![Weekday::Sat, Weekday::Sat],
            ..TimeConfig::default()
        };
        assert_eq!(t.validate().unwrap_err().key, "weekend_days");
    }

    #[test]
    fn never_prints_passwords() {
        let r = RedisConfig {
            url: "redis://app:hunter2@redis:6379/0".into(),
            password: Some(SecretString::from("s3cret")),
            ..RedisConfig::default()
        };
        let shown = format!("{r:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert!(shown.contains("redis://app:***@redis:6379/0"), "{shown}");
    }
}
