//! `recomputer rebuild`: recompute every baseline with a progress bar.

use anomaly_runtime::config::ServiceSection as _;
use anomaly_runtime::lifecycle;
use anomaly_store::Store;
use indicatif::{ProgressBar, ProgressStyle};

use crate::{Config, RecomputeMetrics, Recomputer, Section};

pub async fn rebuild(config: Config) -> anyhow::Result<()> {
    let store = Store::connect(&config.common.redis)?;
    store.ping().await?;
    let recomputer = Recomputer::new(
        &config,
        store,
        RecomputeMetrics::unregistered(),
        lifecycle::instance_id(Section::NAME),
    );
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "{spinner} rebuilding [{bar:40}] {pos}/{len} keys, {per_sec}, ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let outcome = recomputer
        .rebuild(|done, total| {
            bar.set_length(total);
            bar.set_position(done);
        })
        .await;
    bar.finish();
    let outcome = outcome?;
    tracing::info!(
        recomputed = outcome.recomputed,
        stale = outcome.stale,
        cleared = outcome.cleared,
        "rebuild finished"
    );
    Ok(())
}
