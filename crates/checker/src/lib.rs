//! The checker: the stateless, O(1), explainable check API.
//!
//! `POST /v1/anomaly/check` and `POST /v1/anomaly/check/batch` judge durations against the
//! precomputed baseline of their (service, endpoint, hour, dayType) key; `GET /v1/baseline`
//! shows a stored baseline and its bucket; `GET /v1/keys` and `GET /v1/services` list what has
//! samples, a page at a time. The per-request work of a check is a bucket computation, a cache
//! lookup or one pipelined `HMGET` per batch, and a comparison: it never reads a sample window
//! and never computes a percentile, so it does not grow with the window size or the number of
//! keys.
//!
//! Staleness: the checker adds at most `checker.cache.ttl` (default 5 s) to the age of what it
//! reads: a cached baseline, or a cached absence, is served for at most that long, so a new or
//! changed baseline is seen within the TTL of being written. Baselines themselves trail their
//! samples by the recomputer's schedule (a key marked dirty waits for the next drain, at most
//! `recomputer.interval`, 30 s, plus the drain's own time). The cache is only an optimisation:
//! losing it (a restart) loses nothing.

mod analysis;
mod anomalies;
mod baseline;
mod check;
mod keys;
mod metrics;
mod openapi;
mod state;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anomaly_core::ConfigError;
use anomaly_runtime::auth::{AuthConfig, Tokens};
use anomaly_runtime::config::{CommonConfig, Loaded, ServiceSection};
use anomaly_runtime::http::{self, HttpLimits};
use anomaly_runtime::lifecycle;
use anomaly_traces::tempo::TempoSection;
use axum::Router;
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::IgnoredAny;
use tokio::net::TcpListener;

pub use openapi::openapi_json;

use crate::state::AppState;

/// The `checker:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Section {
    /// Address the API, the probes and the metrics listen on.
    pub listen: SocketAddr,
    /// Body size, concurrency, timeout and shutdown limits.
    pub limits: HttpLimits,
    /// Optional bearer tokens for the API (probes, metrics and `/openapi.json` stay open).
    pub auth: AuthConfig,
    /// The in-process baseline cache.
    pub cache: CacheSection,
    /// Most items a batch may carry.
    pub max_batch_items: usize,
    /// `checker.max_name_bytes`, deprecated: the name limit is the top-level `max_name_bytes`,
    /// which every service reads. The old key is still accepted and applied to every service
    /// by the common configuration loader (anomaly-runtime), never read here.
    #[serde(rename = "max_name_bytes")]
    deprecated_max_name_bytes: IgnoredAny,
    /// A `startTimeUnixNano` further than this in the future is refused (a clock or unit
    /// mistake); `0s` accepts any instant up to 2100.
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// Distinct `service` label values of `anomaly_checks_total`; services beyond it (and
    /// services without a baseline) are counted as `other`, so callers cannot blow up the
    /// metric's cardinality.
    pub max_service_labels: usize,
    /// The trace analysis.
    pub analysis: AnalysisSection,
    /// Where the trace analysis fetches traces: the ingester's Tempo settings
    /// (`ingester.tempo.*`: URL, tenant, auth, timeout, retries), read from that section so
    /// one setting serves both. Not a key of `checker:`.
    #[serde(skip)]
    pub tempo: TempoSection,
}

/// `checker.analysis`: the trace analysis's limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalysisSection {
    /// Most spans a trace may have to be analysed (TRACE_TOO_LARGE beyond): bounds the memory
    /// and time of one analysis.
    pub max_spans: usize,
}

impl Default for AnalysisSection {
    fn default() -> Self {
        AnalysisSection { max_spans: 10_000 }
    }
}

/// `checker.cache`: baselines (and their absence) kept in memory so hot keys cost no Redis
/// round trip.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSection {
    /// How long a baseline, or the absence of one, is served from memory; `0s` turns the cache
    /// off.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Most keys kept; the least useful are evicted first.
    pub max_entries: u64,
}

impl Default for CacheSection {
    fn default() -> Self {
        CacheSection {
            ttl: Duration::from_secs(5),
            max_entries: 100_000,
        }
    }
}

impl Default for Section {
    fn default() -> Self {
        Section {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            limits: HttpLimits::default(),
            auth: AuthConfig::default(),
            cache: CacheSection::default(),
            max_batch_items: 1000,
            deprecated_max_name_bytes: IgnoredAny,
            max_future_skew: Duration::from_secs(3600),
            max_service_labels: 200,
            analysis: AnalysisSection::default(),
            tempo: TempoSection::default(),
        }
    }
}

impl ServiceSection for Section {
    const NAME: &'static str = "checker";

    fn read_shared(&mut self, figment: &figment::Figment) -> Result<(), Box<figment::Error>> {
        const TEMPO: &str = "ingester.tempo";
        if figment.contains(TEMPO) {
            self.tempo = figment.extract_inner(TEMPO).map_err(Box::new)?;
        }
        Ok(())
    }

    fn validate(&self, _common: &CommonConfig) -> Result<(), ConfigError> {
        self.limits.validate(Self::NAME)?;
        Tokens::load(&self.auth, Self::NAME)?;
        if self.cache.ttl > Duration::from_secs(3600) {
            return Err(ConfigError::new(
                "checker.cache.ttl",
                "must be at most 1h (answers would lag the baselines by that much)",
            ));
        }
        if self.cache.max_entries == 0 {
            return Err(ConfigError::new(
                "checker.cache.max_entries",
                "must be at least 1 (set checker.cache.ttl to 0s to turn the cache off)",
            ));
        }
        if !(1..=100_000).contains(&self.max_batch_items) {
            return Err(ConfigError::new(
                "checker.max_batch_items",
                "must be from 1 to 100000",
            ));
        }
        if self.max_service_labels > 10_000 {
            return Err(ConfigError::new(
                "checker.max_service_labels",
                "must be at most 10000",
            ));
        }
        if !(1..=1_000_000).contains(&self.analysis.max_spans) {
            return Err(ConfigError::new(
                "checker.analysis.max_spans",
                "must be from 1 to 1000000",
            ));
        }
        // The ingester's section, as the analysis reads it; the ingester validates it too.
        self.tempo.validate()
    }
}

pub type Config = Loaded<Section>;

/// The whole service as a router: the API (authenticated when tokens are configured, limited,
/// traced), `/openapi.json`, the probes and the metrics. Nothing connects until the first
/// request, so it builds while Redis is down.
pub fn app(config: &Config) -> anyhow::Result<Router> {
    let state = AppState::new(config)?;
    let tokens = Tokens::load(&config.service.auth, Section::NAME)?;
    let api = Router::new()
        .route("/v1/anomaly/check", post(check::check))
        .route("/v1/anomaly/check/batch", post(check::check_batch))
        .route("/v1/anomaly/check/span", post(check::check_span))
        .route(
            "/v1/traces/{trace_id}/analysis",
            get(analysis::analyse_by_id),
        )
        .route("/v1/traces/analysis", post(analysis::analyse_body))
        .route("/v1/baseline", get(baseline::get_baseline))
        .route("/v1/keys", get(keys::list_keys))
        .route("/v1/services", get(keys::list_services))
        .with_state(state.clone())
        .merge(anomalies::routes(state.clone(), &config.common.links));
    let api = http::trace(http::protect_api(api, &config.service.limits, tokens));
    let docs = anomaly_runtime::openapi::route(openapi_json);
    let probes = http::probes(state.store().clone(), state.metrics().clone(), Vec::new());
    Ok(http::finish(
        api.merge(docs).merge(probes),
        state.metrics().clone(),
    ))
}

/// Runs the service on `listener` until `shutdown` resolves, then gives in-flight requests
/// `checker.limits.shutdown_grace` to finish.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let router = app(&config)?;
    tracing::info!(addr = %listener.local_addr()?, "checker listening");
    let grace = config.service.limits.shutdown_grace;
    lifecycle::run(listener, router, grace, shutdown, |_| async {}).await?;
    Ok(())
}
