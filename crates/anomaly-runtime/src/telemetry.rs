//! Logs (and, where configured, traces) of the services themselves.
//!
//! Logs are structured (`json` by default, one object per line) and filtered by
//! `telemetry.log_level`, which `RUST_LOG` overrides. [`init`] returns a guard to hold for the
//! life of the process; dropping it flushes whatever exporters it owns.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, TelemetryConfig};

/// Keeps telemetry alive; flushes on drop.
#[derive(Debug)]
#[must_use = "telemetry stops when the guard is dropped"]
pub struct TelemetryGuard {
    _private: (),
}

/// Installs the global subscriber. Safe to call more than once (later calls do nothing), which
/// tests that start several services in one process rely on.
pub fn init(config: &TelemetryConfig, service: &'static str) -> TelemetryGuard {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match config.log_format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            )
            .try_init(),
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer()).try_init(),
    };
    if result.is_ok() {
        tracing::info!(
            service,
            version = env!("CARGO_PKG_VERSION"),
            "telemetry started"
        );
    }
    TelemetryGuard { _private: () }
}
