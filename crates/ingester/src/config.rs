//! The `ingester:` section: the push API's limits and the Tempo poller's settings.

use std::net::SocketAddr;

use anomaly_core::ConfigError;
use anomaly_runtime::auth::AuthConfig;
use anomaly_runtime::config::{CommonConfig, ServiceSection};
use anomaly_runtime::http::HttpLimits;
use serde::Deserialize;

// The Tempo settings live in `anomaly-traces`, shared with the checker; the paths here stay.
pub use anomaly_traces::tempo::{FetchSpans, TEMPO_MAX_RANGE, TempoAuth, TempoSection};

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
    /// Judge on ingest: verdicts, the anomaly feed and the detection metrics.
    pub detect: crate::detect::DetectSection,
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
            detect: crate::detect::DetectSection::default(),
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
        self.detect.validate()?;
        self.tempo.validate()
    }
}
