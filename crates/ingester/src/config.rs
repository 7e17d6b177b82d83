//! The `ingester:` section: the push API's limits and the Tempo poller's settings.

use std::net::SocketAddr;
use std::time::Duration;

use anomaly_core::ConfigError;
use anomaly_runtime::auth::AuthConfig;
use anomaly_runtime::config::{CommonConfig, ServiceSection};
use anomaly_runtime::http::HttpLimits;
use secrecy::SecretString;
use serde::Deserialize;

/// The widest range Tempo's search accepts.
pub const TEMPO_MAX_RANGE: Duration = Duration::from_secs(168 * 3600);

/// The `ingester:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Section {
    /// Address of the push API, probes and metrics.
    pub listen: SocketAddr,
    pub limits: HttpLimits,
    /// Bearer tokens for `POST /v1/traces/ingest`; none configured means no authentication.
    pub auth: AuthConfig,
    /// Most traces one push request may carry (BATCH_TOO_LARGE beyond).
    pub max_batch_items: usize,
    /// Most distinct keys (service, endpoint, hour, dayType) stored; traces for new keys beyond
    /// it are counted and logged, not stored. 0 means no cap.
    pub max_keys: u64,
    /// Traces dropped before they become samples (health checks, probes), pushed or polled.
    pub ignore: Vec<IgnoreRule>,
    pub tempo: TempoSection,
    pub otlp: OtlpSection,
}

impl Default for Section {
    fn default() -> Self {
        Section {
            listen: SocketAddr::from(([0, 0, 0, 0], 8081)),
            limits: HttpLimits::default(),
            auth: AuthConfig::default(),
            max_batch_items: 10_000,
            max_keys: 100_000,
            ignore: Vec::new(),
            tempo: TempoSection::default(),
            otlp: OtlpSection::default(),
        }
    }
}

/// One ignore rule: regular expressions matched against the whole root service name and/or the
/// whole root span name (both must match when both are given), e.g.
/// `{endpoint: "GET /(healthz|readyz|metrics)"}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IgnoreRule {
    pub service: Option<String>,
    pub endpoint: Option<String>,
}

/// `ingester.otlp:`: the OTLP receiver. OTLP/HTTP (`POST /v1/traces`) is always served on
/// `ingester.listen`; OTLP/gRPC on its own port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpSection {
    /// Address of OTLP/gRPC `TraceService/Export`; empty (`""`) turns gRPC off.
    #[serde(deserialize_with = "optional_addr")]
    pub grpc_listen: Option<SocketAddr>,
    /// Largest request, both as received and after decompression (413 over HTTP;
    /// INVALID_ARGUMENT, or RESOURCE_EXHAUSTED once decompressed, over gRPC).
    pub max_body_bytes: usize,
    /// Most spans one request may carry (413 / INVALID_ARGUMENT beyond).
    pub max_spans: usize,
    /// OTLP requests handled at once, HTTP and gRPC together; beyond it requests are shed with
    /// 429 and `Retry-After` (gRPC: RESOURCE_EXHAUSTED with RetryInfo), which Collectors retry.
    pub max_concurrency: usize,
}

impl Default for OtlpSection {
    fn default() -> Self {
        OtlpSection {
            grpc_listen: Some(SocketAddr::from(([0, 0, 0, 0], 4317))),
            max_body_bytes: 16 * 1024 * 1024,
            max_spans: 100_000,
            max_concurrency: 32,
        }
    }
}

/// An address, or `""` for none.
fn optional_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Ok(None);
    }
    s.trim()
        .parse()
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("{e}: expected host:port, or \"\" for off")))
}

impl OtlpSection {
    fn validate(&self) -> Result<(), ConfigError> {
        let err = |key: &str, msg: &str| Err(ConfigError::new(format!("ingester.otlp.{key}"), msg));
        if self.max_body_bytes < 1024 {
            return err("max_body_bytes", "must be at least 1024");
        }
        if self.max_body_bytes > u32::MAX as usize {
            return err("max_body_bytes", "must be at most 4 GiB");
        }
        if self.max_spans == 0 {
            return err("max_spans", "must be at least 1");
        }
        if self.max_concurrency == 0 {
            return err("max_concurrency", "must be at least 1");
        }
        Ok(())
    }
}

/// `ingester.tempo:`: where and how to poll Grafana Tempo.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TempoSection {
    /// Tempo's HTTP base URL (e.g. `http://tempo-query-frontend:3200`); empty turns the poller
    /// off.
    pub url: String,
    /// How often the poller searches.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How far back each window reaches behind the cursor; traces that reach Tempo up to
    /// `lookback + freshness` after they end are still found (see the poller docs).
    #[serde(with = "humantime_serde")]
    pub lookback: Duration,
    /// How far behind now windows end. Tempo v3 hides the newest 30 s from search; a window
    /// ending there would be cut short without Tempo saying so.
    #[serde(with = "humantime_serde")]
    pub freshness: Duration,
    /// `X-Scope-OrgID` for multi-tenant Tempo; empty sends none.
    pub org_id: String,
    pub auth: TempoAuth,
    /// Upper bound on one search request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Traces per search; a response with this many or more is treated as truncated and its
    /// window split.
    pub limit: u32,
    /// A TraceQL filter sent as `q` (e.g. `{ resource.service.name != "loadgen" }`); empty
    /// sends none.
    pub query: String,
    /// Retries of a search that failed in a way retrying can help (5xx, 429, timeouts,
    /// connection errors, cut-off bodies); 4xx are never retried.
    pub retries: u32,
    /// The first retry waits about this long; each further one doubles it, with jitter.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    /// The longest wait between retries.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// After an outage, how far back the poller catches up from its cursor; an older gap is
    /// logged with the backfill command that fills it.
    #[serde(with = "humantime_serde")]
    pub max_catchup: Duration,
    /// The poller lease: one replica polls; another takes over within two of these after it
    /// dies.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// Largest search response read; a larger one is split like a truncated one.
    pub max_response_bytes: usize,
    /// Windows are not split below this (Tempo takes whole seconds).
    #[serde(with = "humantime_serde")]
    pub min_slice: Duration,
}

impl Default for TempoSection {
    fn default() -> Self {
        TempoSection {
            url: String::new(),
            poll_interval: Duration::from_secs(15),
            lookback: Duration::from_secs(120),
            freshness: Duration::from_secs(30),
            org_id: String::new(),
            auth: TempoAuth::default(),
            timeout: Duration::from_secs(10),
            limit: 500,
            query: String::new(),
            retries: 3,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            max_catchup: Duration::from_secs(3600),
            lease_ttl: Duration::from_secs(30),
            max_response_bytes: 32 * 1024 * 1024,
            min_slice: Duration::from_secs(1),
        }
    }
}

/// `ingester.tempo.auth`: for a proxy in front of Tempo (Tempo has no auth of its own). Basic
/// (`username` + `password`) or bearer (`token`); set secrets through the environment
/// (`ANOMALY_INGESTER__TEMPO__AUTH__PASSWORD`, `..._TOKEN`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TempoAuth {
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub token: Option<SecretString>,
}

impl ServiceSection for Section {
    const NAME: &'static str = "ingester";

    fn validate(&self, _common: &CommonConfig) -> Result<(), ConfigError> {
        self.limits.validate(Self::NAME)?;
        if self.max_batch_items == 0 {
            return Err(ConfigError::new(
                "ingester.max_batch_items",
                "must be at least 1",
            ));
        }
        for (i, rule) in self.ignore.iter().enumerate() {
            if rule.service.is_none() && rule.endpoint.is_none() {
                return Err(ConfigError::new(
                    format!("ingester.ignore[{i}]"),
                    "needs `service`, `endpoint` or both",
                ));
            }
            for (field, pattern) in [("service", &rule.service), ("endpoint", &rule.endpoint)] {
                if let Some(p) = pattern
                    && let Err(e) = regex::Regex::new(p)
                {
                    return Err(ConfigError::new(
                        format!("ingester.ignore[{i}].{field}"),
                        format!("is not a valid regular expression: {e}"),
                    ));
                }
            }
        }
        self.otlp.validate()?;
        self.tempo.validate()
    }
}

impl TempoSection {
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let err =
            |key: &str, msg: &str| Err(ConfigError::new(format!("ingester.tempo.{key}"), msg));
        if self.enabled() {
            match reqwest::Url::parse(&self.url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => return err("url", "must be an http(s) URL or empty"),
            }
        }
        if self.poll_interval.is_zero() {
            return err("poll_interval", "must be more than 0");
        }
        if self.lookback < self.poll_interval {
            return err(
                "lookback",
                "must be at least poll_interval, or traces fall between windows",
            );
        }
        if self.lookback + self.freshness > TEMPO_MAX_RANGE / 2 {
            return err("lookback", "is longer than Tempo can search");
        }
        if self.timeout.is_zero() {
            return err("timeout", "must be more than 0");
        }
        if !(1..=262_144).contains(&self.limit) {
            return err("limit", "must be from 1 to 262144");
        }
        if self.backoff > self.max_backoff {
            return err("backoff", "must not exceed max_backoff");
        }
        if self.max_catchup < self.lookback {
            return err("max_catchup", "must be at least lookback");
        }
        if self.lease_ttl < Duration::from_secs(1) {
            return err("lease_ttl", "must be at least 1s");
        }
        if self.max_response_bytes < 1024 {
            return err("max_response_bytes", "must be at least 1024");
        }
        if self.min_slice < Duration::from_secs(1) || self.min_slice.subsec_nanos() != 0 {
            return err(
                "min_slice",
                "must be a whole number of seconds, at least 1s",
            );
        }
        let a = &self.auth;
        if a.token.is_some() && (a.username.is_some() || a.password.is_some()) {
            return err("auth", "use either username/password or token, not both");
        }
        if a.password.is_some() != a.username.is_some() {
            return err(
                "auth.username",
                "basic auth needs both username and password",
            );
        }
        Ok(())
    }
}
