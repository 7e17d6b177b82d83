//! `redis:`: where the shared state lives, and how to reach it. Here rather than in
//! anomaly-core because only this crate talks to Redis; anomaly-runtime reads it as a common
//! section.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anomaly_core::ConfigError;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// How the services reach Redis (`redis.mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One primary at `redis.url`.
    #[default]
    Standalone,
    /// The primary that Sentinel names `redis.sentinel.master_name`, asked of the sentinels at
    /// `redis.sentinel.urls` on every new connection, so a failover is followed without a
    /// restart.
    Sentinel,
    /// A Redis Cluster reached through the seed nodes `redis.cluster.urls`; slots are
    /// discovered and MOVED/ASK redirections followed by the client.
    Cluster,
}

impl RedisMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RedisMode::Standalone => "standalone",
            RedisMode::Sentinel => "sentinel",
            RedisMode::Cluster => "cluster",
        }
    }
}

/// `redis.sentinel:` (mode `sentinel`).
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SentinelConfig {
    /// The name the sentinels monitor the primary by (`sentinel monitor <name> ...`).
    pub master_name: String,
    /// The sentinels, `redis://host:26379` (`rediss://` for TLS to them).
    pub urls: Vec<String>,
    /// ACL user name for the sentinels, when they require one.
    pub username: Option<String>,
    /// Password for the sentinels (`requirepass` of sentinel.conf). Prefer
    /// `ANOMALY_REDIS__SENTINEL__PASSWORD`. The primary and replicas take `redis.password`.
    #[serde(skip_serializing)]
    pub password: Option<SecretString>,
    /// TLS to the primary the sentinels name (with `redis.tls_*`).
    pub tls: bool,
    /// Database number on the primary.
    pub db: i64,
}

impl fmt::Debug for SentinelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelConfig")
            .field("master_name", &self.master_name)
            .field(
                "urls",
                &self.urls.iter().map(|u| redact(u)).collect::<Vec<_>>(),
            )
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("tls", &self.tls)
            .field("db", &self.db)
            .finish()
    }
}

/// `redis.cluster:` (mode `cluster`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Seed nodes, `redis://host:port` (`rediss://` for TLS); any reachable one is enough to
    /// discover the others.
    pub urls: Vec<String>,
}

/// `redis:`: where the shared state lives.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `standalone` (default), `sentinel` or `cluster`.
    pub mode: RedisMode,
    /// Mode `standalone`: `redis://host:port/db`, `rediss://` for TLS, or `unix:///path`.
    pub url: String,
    pub sentinel: SentinelConfig,
    pub cluster: ClusterConfig,
    /// Replicas that must acknowledge an ingest's writes (`WAIT`) before it is answered 200;
    /// 0 (default) answers once the primary has them. Replication stays asynchronous: see the
    /// README.
    pub min_replicas_ack: u32,
    /// How long an ingest waits for `min_replicas_ack` replicas before answering 503.
    #[serde(with = "humantime_serde")]
    pub min_replicas_ack_timeout: Duration,
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
            mode: RedisMode::Standalone,
            url: "redis://127.0.0.1:6379".to_owned(),
            sentinel: SentinelConfig::default(),
            cluster: ClusterConfig::default(),
            min_replicas_ack: 0,
            min_replicas_ack_timeout: Duration::from_secs(1),
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
        if self.mode == RedisMode::Standalone && !scheme_ok {
            return Err(ConfigError::new(
                "redis.url",
                "must start with redis://, rediss:// or unix://",
            ));
        }
        let tcp_urls = |key: &'static str, urls: &[String]| {
            if urls.is_empty() {
                return Err(ConfigError::new(key, "needs at least one address"));
            }
            match urls
                .iter()
                .find(|u| !u.starts_with("redis://") && !u.starts_with("rediss://"))
            {
                Some(bad) => Err(ConfigError::new(
                    key,
                    format!("{bad:?} must start with redis:// or rediss://"),
                )),
                None => Ok(()),
            }
        };
        match self.mode {
            RedisMode::Standalone => {}
            RedisMode::Sentinel => {
                if self.sentinel.master_name.trim().is_empty() {
                    return Err(ConfigError::new(
                        "redis.sentinel.master_name",
                        "mode sentinel needs the name the sentinels monitor the primary by",
                    ));
                }
                tcp_urls("redis.sentinel.urls", &self.sentinel.urls)?;
            }
            RedisMode::Cluster => {
                tcp_urls("redis.cluster.urls", &self.cluster.urls)?;
                // One client speaks to every node alike: TLS to all seeds or to none.
                let tls = self
                    .cluster
                    .urls
                    .iter()
                    .filter(|u| u.starts_with("rediss://"));
                if !matches!(tls.count(), n if n == 0 || n == self.cluster.urls.len()) {
                    return Err(ConfigError::new(
                        "redis.cluster.urls",
                        "mix redis:// and rediss:// seeds; use one scheme for every node",
                    ));
                }
            }
        }
        if self.min_replicas_ack > 0 && self.min_replicas_ack_timeout.is_zero() {
            return Err(ConfigError::new(
                "redis.min_replicas_ack_timeout",
                "must be more than 0",
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
        let tls_on = match self.mode {
            RedisMode::Standalone => self.url.starts_with("rediss://"),
            RedisMode::Sentinel => self.sentinel.tls,
            RedisMode::Cluster => self.cluster.urls.iter().all(|u| u.starts_with("rediss://")),
        };
        if tls_set && !tls_on {
            return Err(ConfigError::new(
                "redis.tls_ca_file",
                "TLS files apply only to rediss:// URLs (in mode sentinel, redis.sentinel.tls)",
            ));
        }
        Ok(())
    }

    /// Where Redis is, with any password replaced by `***`, for logs: the URL, the sentinels
    /// and master name, or the seed nodes.
    pub fn redacted_url(&self) -> String {
        match self.mode {
            RedisMode::Standalone => redact(&self.url),
            RedisMode::Sentinel => format!(
                "sentinel {} via {}",
                self.sentinel.master_name,
                self.sentinel
                    .urls
                    .iter()
                    .map(|u| redact(u))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            RedisMode::Cluster => format!(
                "cluster via {}",
                self.cluster
                    .urls
                    .iter()
                    .map(|u| redact(u))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }
}

/// `url` with any password replaced by `***`.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("mode", &self.mode)
            .field("url", &self.redacted_url())
            .field(
                "sentinel_password",
                &self.sentinel.password.as_ref().map(|_| "***"),
            )
            .field("min_replicas_ack", &self.min_replicas_ack)
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
        r.key_prefix = String::new();
        r.mode = RedisMode::Cluster;
        assert_eq!(r.validate().unwrap_err().key, "redis.cluster.urls");
        r.cluster.urls = vec!["redis://a:7000".into(), "tcp://b:7001".into()];
        assert_eq!(r.validate().unwrap_err().key, "redis.cluster.urls");
        r.cluster.urls.pop();
        r.validate().unwrap();
        r.cluster.urls.push("rediss://b:7001".into());
        let mixed = r.validate().unwrap_err();
        assert_eq!(mixed.key, "redis.cluster.urls");
        assert!(mixed.to_string().contains("mix"), "{mixed}");
        r.cluster.urls = vec!["rediss://a:7000".into(), "rediss://b:7001".into()];
        r.validate().unwrap();
        r.mode = RedisMode::Sentinel;
        assert_eq!(r.validate().unwrap_err().key, "redis.sentinel.master_name");
        r.sentinel.master_name = "mymaster".into();
        assert_eq!(r.validate().unwrap_err().key, "redis.sentinel.urls");
        r.sentinel.urls = vec!["redis://s1:26379".into()];
        r.validate().unwrap();
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
