//! The ingester: turns traces into latency samples, pushed (`POST /v1/traces/ingest`) or
//! polled from Grafana Tempo's search API, deduplicated by trace ID.
//!
//! - [`api`]: the push API and its OpenAPI document.
//! - [`poller`]: the Tempo poller (`poll_once`, windows, splitting, the cursor, the lease).
//! - [`backfill`]: `ingester backfill`, history in resumable steps.
//! - [`tempo`]: the Tempo search client (retries, error classification, response parsing).
//! - [`cap`]: Tempo's result cap (`max_result_limit`), refused or silently applied, learned.
//! - [`trace`]: one trace validated into a sample (shared by push, poll and backfill).
//! - [`otlp`]: the OTLP trace receiver (HTTP `POST /v1/traces`, gRPC `TraceService/Export`):
//!   root spans become samples on the same path.

pub mod api;
pub mod backfill;
pub mod cap;
pub mod cli;
pub mod config;
pub mod detect;
pub mod detect_metrics;
mod ingest;
pub mod metrics;
pub mod otlp;
pub mod poller;
pub mod tempo;
pub mod trace;

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use anomaly_core::Bucketer;
use anomaly_runtime::auth::Tokens;
use anomaly_runtime::config::{Loaded, ServiceSection as _};
use anomaly_runtime::http::{self, ExtraCheck};
use anomaly_runtime::lifecycle;
use anomaly_runtime::metrics::{Metrics, MetricsBuilder};
use anomaly_store::{IngestSettings, Store};
use axum::Router;
use axum::routing::post;
use tokio::net::TcpListener;

pub use backfill::{BackfillArgs, BackfillError, BackfillReport};
pub use config::{IgnoreRule, OtlpSection, Section, TempoAuth, TempoSection};
pub use ingest::BatchReport;
pub use poller::{PollError, PollOutcome, Poller, WindowReport};

use crate::ingest::{Ingest, IngestRules};
use crate::metrics::IngestMetrics;
use crate::poller::WindowFetcher;
use crate::tempo::{TempoClient, TempoStatus};

pub type Config = Loaded<Section>;

/// One ingester instance: its store, metrics, push API and (when Tempo is configured) poller.
#[derive(Debug, Clone)]
pub struct Ingester {
    config: Arc<Config>,
    store: Store,
    metrics: Metrics,
    ingest_metrics: IngestMetrics,
    ingest: Ingest,
    tokens: Tokens,
    tempo: Option<TempoClient>,
    tempo_status: TempoStatus,
    owner: String,
    otlp: otlp::Receiver,
}

impl Ingester {
    /// Builds an instance on `config`; no connection is made yet.
    pub fn new(config: Config) -> anyhow::Result<Self> {
        let store = Store::connect(&config.common.redis)?;
        Self::with_store(config, store)
    }

    /// Builds an instance on an existing store handle.
    pub fn with_store(config: Config, store: Store) -> anyhow::Result<Self> {
        let mut builder = MetricsBuilder::new();
        let ingest_metrics = IngestMetrics::register(builder.registry());
        let common = builder.common().clone();
        let detector = detect::Detector::new(
            &config.service.detect,
            &store,
            &config.common.stats,
            config.common.compiled_overrides()?,
            &mut builder,
            &common,
        );
        let metrics = builder.freeze();
        let section = &config.service;
        let settings = IngestSettings {
            window_size: config.common.stats.window_size,
            dedup_ttl: config.common.dedup_ttl,
            retention: config.common.retention,
            max_keys: section.max_keys,
        };
        let ignore = trace::ignore_rules(&section.ignore)?;
        let rules = IngestRules {
            bucketer: Bucketer::new(&config.common.time()),
            ignore,
            names: config.common.names,
            spans: config.common.span_rules()?,
        };
        let ingest = Ingest::new(
            store.clone(),
            settings,
            rules,
            ingest_metrics.clone(),
            detector,
        );
        let tokens = Tokens::load(&section.auth, "ingester")?;
        let otlp = otlp::Receiver::new(
            ingest.clone(),
            tokens.clone(),
            section.otlp.clone(),
            ingest_metrics.clone(),
        );
        let owner = lifecycle::instance_id(Section::NAME);
        let tempo_status = TempoStatus::default();
        let tempo = section
            .tempo
            .enabled()
            .then(|| {
                let agent = format!(
                    "latency-anomaly-ingester/{} ({owner})",
                    env!("CARGO_PKG_VERSION")
                );
                TempoClient::new(
                    &section.tempo,
                    &agent,
                    ingest_metrics.clone(),
                    tempo_status.clone(),
                )
            })
            .transpose()?;
        Ok(Ingester {
            config: Arc::new(config),
            store,
            metrics,
            ingest_metrics,
            ingest,
            tokens,
            tempo,
            tempo_status,
            owner,
            otlp,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The OTLP/gRPC service (`TraceService/Export`), to serve with HTTP/2 on its own port.
    pub fn grpc_router(&self) -> Router {
        http::finish(otlp::grpc::router(self.otlp.clone()), self.metrics.clone())
    }

    /// The HTTP service: the push API (auth, limits), OTLP/HTTP (`POST /v1/traces`, its own
    /// auth, limits and shedding, see [`otlp`]), probes (with Tempo's last search result on
    /// `/readyz`, informational), `/metrics` and `/openapi.json`.
    pub fn router(&self) -> Router {
        let section = &self.config.service;
        let api = Router::new()
            .route("/v1/traces/ingest", post(api::ingest_traces))
            .with_state(api::ApiState {
                ingest: self.ingest.clone(),
                max_batch_items: section.max_batch_items,
            });
        let api = http::trace(http::protect_api(api, &section.limits, self.tokens.clone()));
        let otlp_http = http::trace(
            Router::new()
                .route(otlp::http::PATH, post(otlp::http::export))
                .with_state(self.otlp.clone()),
        );
        let api = api.merge(otlp_http);
        let mut extra: Vec<(&'static str, ExtraCheck)> = Vec::new();
        if self.tempo.is_some() {
            let status = self.tempo_status.clone();
            extra.push(("tempo", Arc::new(move || status.check())));
        }
        let probes = http::probes(self.store.clone(), self.metrics.clone(), extra);
        let openapi = anomaly_runtime::openapi::route(api::openapi_json);
        http::finish(api.merge(probes).merge(openapi), self.metrics.clone())
    }

    fn fetcher(&self) -> Option<WindowFetcher> {
        Some(WindowFetcher {
            tempo: self.tempo.clone()?,
            ingest: self.ingest.clone(),
            metrics: self.ingest_metrics.clone(),
            min_slice: self.config.service.tempo.min_slice.as_secs().max(1),
        })
    }

    /// The poller, when `ingester.tempo.url` is set.
    pub fn poller(&self) -> Option<Poller> {
        Some(Poller::new(
            self.fetcher()?,
            self.store.clone(),
            self.config.service.tempo.clone(),
            self.owner.clone(),
        ))
    }

    /// Backfills `args` (see [`backfill`]); `now` caps the range at Tempo's horizon.
    pub async fn backfill(
        &self,
        args: &BackfillArgs,
        now: SystemTime,
    ) -> Result<BackfillReport, BackfillError> {
        let fetcher = self.fetcher().ok_or(BackfillError::NoTempo)?;
        backfill::backfill(
            &fetcher,
            &self.store,
            self.config.service.tempo.freshness,
            args,
            now,
        )
        .await
    }
}

/// Runs the service on `listener` until `shutdown` resolves: the push API and OTLP/HTTP on
/// every replica, OTLP/gRPC on `ingester.otlp.grpc_listen` when set, the poller wherever it
/// holds the lease.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let grpc = match config.service.otlp.grpc_listen {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
            anyhow::anyhow!("cannot listen on {addr} (ingester.otlp.grpc_listen): {e}")
        })?),
        None => None,
    };
    run_with(config, listener, grpc, shutdown).await
}

/// [`run`] on listeners already bound: `grpc` serves OTLP/gRPC (whatever
/// `ingester.otlp.grpc_listen` says).
pub async fn run_with(
    config: Config,
    listener: TcpListener,
    grpc: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let grace = config.service.limits.shutdown_grace;
    let ingester = Ingester::new(config)?;
    let poller = ingester.poller();
    tracing::info!(addr = %listener.local_addr()?, "ingester listening");
    let grpc = grpc
        .map(|l| {
            tracing::info!(addr = %l.local_addr()?, "otlp/grpc listening");
            Ok::<_, std::io::Error>((l, ingester.grpc_router()))
        })
        .transpose()?;
    lifecycle::run(
        listener,
        ingester.router(),
        grace,
        shutdown,
        |stop| async move {
            let grpc = async {
                if let Some((listener, router)) = grpc
                    && let Err(e) = lifecycle::serve(listener, router, stop.clone(), grace).await
                {
                    tracing::error!(error = %e, "otlp/grpc server failed");
                }
            };
            let poll = async {
                if let Some(poller) = poller {
                    tracing::info!(owner = poller.owner(), "tempo poller started");
                    // Stops on shutdown and releases the lease.
                    poller.run(stop.clone()).await;
                }
            };
            tokio::join!(grpc, poll);
        },
    )
    .await?;
    Ok(())
}

/// Runs `ingester backfill` to completion.
pub async fn run_backfill(config: Config, args: BackfillArgs) -> anyhow::Result<BackfillReport> {
    let ingester = Ingester::new(config)?;
    Ok(ingester.backfill(&args, SystemTime::now()).await?)
}
