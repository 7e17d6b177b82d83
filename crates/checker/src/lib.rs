//! The checker service. (Its issue fills in the service itself; for now it serves the probes.)

use std::future::Future;
use std::net::SocketAddr;

use anomaly_core::ConfigError;
use anomaly_runtime::config::{CommonConfig, Loaded, ServiceSection};
use anomaly_runtime::http::{self, HttpLimits};
use anomaly_runtime::metrics::MetricsBuilder;
use anomaly_store::Store;
use serde::Deserialize;
use tokio::net::TcpListener;

/// The `checker:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Section {
    pub listen: SocketAddr,
    pub limits: HttpLimits,
}

impl Default for Section {
    fn default() -> Self {
        Section {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            limits: HttpLimits::default(),
        }
    }
}

impl ServiceSection for Section {
    const NAME: &'static str = "checker";

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
    tracing::info!(addr = %listener.local_addr()?, "checker listening");
    anomaly_runtime::shutdown::serve(
        listener,
        router,
        shutdown,
        config.service.limits.shutdown_grace,
    )
    .await?;
    Ok(())
}
