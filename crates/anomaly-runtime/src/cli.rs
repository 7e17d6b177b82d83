//! What every binary's `main` does before its service starts: parse `--config`, load and
//! validate the configuration (exit 64 naming the key when it is bad), start telemetry.

use std::path::PathBuf;

use crate::config::{Loaded, ServiceSection, load};
use crate::telemetry::{self, TelemetryGuard};

/// Arguments every binary takes.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// The shared YAML configuration file; `ANOMALY_*` environment variables override it.
    #[arg(long, short = 'c', env = "ANOMALY_CONFIG_FILE", value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// Loads the configuration or exits with status 64 and a message naming the bad key.
pub fn load_or_exit<S: ServiceSection>(
    args: &CommonArgs,
    service: &'static str,
) -> (Loaded<S>, TelemetryGuard) {
    match load::<S>(args.config.as_deref()) {
        Ok(loaded) => {
            let guard = telemetry::init(&loaded.common.telemetry, service);
            for warning in &loaded.warnings {
                tracing::warn!(%warning, "deprecated configuration key");
            }
            (loaded, guard)
        }
        Err(e) => {
            eprintln!("{service}: {e}");
            std::process::exit(crate::EXIT_BAD_CONFIG);
        }
    }
}
