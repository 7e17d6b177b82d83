//! `redis:`: where the shared state lives, and how to reach it. Here rather than in
//! anomaly-core because only this crate talks to Redis; anomaly-runtime reads it as a common
//! section.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anomaly_core::ConfigError;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

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
        RedisConfig::default().validate().unwrap();
    }

    #[test]
    fn rejects_bad_redis() {
        let mut r = RedisConfig {
            url: "http://x".into(),
            ..RedisConfig::default()
        };
        assert_eq!(r.validate().unwrap_err().key, "redis.url");
        r.url = "redis://h".into();
        r.key_prefix = "a{b}".into();
        assert_eq!(r.validate().unwrap_err().key, "redis.key_prefix");
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
