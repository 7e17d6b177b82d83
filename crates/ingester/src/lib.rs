//! The ingester service. (Its issue fills in the service itself; for now it serves the probes.)

use std::future::Future;
use std::net::SocketAddr;

use anomaly_core::ConfigError;
use anomaly_runtime::config::{CommonConfig, Loaded, ServiceSection};
use anomaly_runtime::http::{self, HttpLimits};
use anomaly_runtime::metrics::MetricsBuilder;
use anomaly_store::Store;
use serde::Deserialize;
use tokio::net::TcpListener;

/// The `ingester:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Section {
    pub listen: SocketAddr,
    pub limits: HttpLimits,
    pub tempo: TempoSection,
}

/// `ingester.tempo:`: where and how often to poll.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TempoSection {
    /// Tempo's HTTP base URL; empty turns the poller off.
    pub url: String,
    #[serde(with = "humantime_serde")]
    pub poll_interval: std::time::Duration,
    #[serde(with = "humantime_serde")]
    pub lookback: std::time::Duration,
}

impl Default for TempoSection {
    fn default() -> Self {
        TempoSection {
            url: String::new(),
            poll_interval: std::time::Duration::from_secs(15),
            lookback: std::time::Duration::from_secs(120),
        }
    }
}

impl Default for Section {
    fn default() -> Self {
        Section {
            listen: SocketAddr::from(([0, 0, 0, 0], 8081)),
            limits: HttpLimits::default(),
            tempo: TempoSection::default(),
        }
    }
}

impl ServiceSection for Section {
    const NAME: &'static str = "ingester";

    fn validate(&self, _common: &CommonConfig) -> Result<(), ConfigError> {
        self.limits.validate(Self::NAME)
    }
}

pub type Config = Loaded<Section>;

/// Runs the service on `listener` until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = Store::connect(&config.common.redis)?;
    let metrics = MetricsBuilder::new().freeze();
    let router = http::finish(http::probes(store, metrics.clone(), Vec::new()), metrics);
    tracing::info!(addr = %listener.local_addr()?, "ingester listening");
    anomaly_runtime::shutdown::serve(
        listener,
        router,
        shutdown,
        config.service.limits.shutdown_grace,
    )
    .await?;
    Ok(())
}
