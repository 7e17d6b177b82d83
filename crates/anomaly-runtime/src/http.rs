//! HTTP plumbing shared by the checker and the ingester: JSON and query extractors whose
//! rejections come out in the contract's error shape, probes, the metrics middleware, limits
//! and load shedding. Every error answered here, `/readyz`'s 503 included, is a
//! [`crate::error::ApiError`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use anomaly_core::ConfigError;
use anomaly_store::Store;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::{header, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tower::BoxError;
use tower::ServiceBuilder;

use crate::auth::{self, Tokens};
use crate::error::{ApiError, ErrorCode};
use crate::metrics::{Exposition, HttpLabels, Metrics, RouteLabels};

/// `axum::Json` whose rejections come out in the contract's error shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(v)| ApiJson(v))
            .map_err(ApiError::from)
    }
}

/// `axum::extract::Query` whose rejections come out in the contract's error shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e: QueryRejection| ApiError::new(ErrorCode::InvalidQuery, e.body_text()))
    }
}

/// `<service>.limits`: protection against oversized and overwhelming traffic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpLimits {
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Requests handled at once; beyond it requests are shed with 503 and Retry-After.
    pub max_concurrency: usize,
    /// A request taking longer than this is answered 503.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// On SIGTERM, how long in-flight requests get to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_body_bytes: 4 * 1024 * 1024,
            max_concurrency: 1024,
            request_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

impl HttpLimits {
    pub fn validate(&self, section: &str) -> Result<(), ConfigError> {
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::new(
                format!("{section}.limits.max_body_bytes"),
                "must be at least 1024",
            ));
        }
        if self.max_concurrency == 0 {
            return Err(ConfigError::new(
                format!("{section}.limits.max_concurrency"),
                "must be at least 1",
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError::new(
                format!("{section}.limits.request_timeout"),
                "must be more than 0",
            ));
        }
        Ok(())
    }
}

/// Wraps API routes with authentication, the body limit, the request timeout and load shedding
/// past the concurrency limit. Probes and metrics are not wrapped: a busy pod must still answer
/// its liveness probe, and Prometheus must still see why it is busy.
///
/// The concurrency limit is one budget for all of `api`'s routes together (axum applies a
/// layer to each route separately, so a per-layer limit would multiply by the route count).
pub fn protect_api(api: Router, limits: &HttpLimits, tokens: Tokens) -> Router {
    // Without tokens there is nothing to check: no layer, no per-request cost.
    let api = if tokens.enabled() {
        api.layer(axum::middleware::from_fn_with_state(
            tokens,
            auth::require_bearer,
        ))
    } else {
        api
    };
    api.layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(
            ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(overloaded))
                .load_shed()
                .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                    limits.max_concurrency,
                ))
                .timeout(limits.request_timeout),
        )
}

async fn overloaded(err: BoxError) -> ApiError {
    if err.is::<tower::load_shed::error::Overloaded>() {
        ApiError::new(
            ErrorCode::Overloaded,
            "too many requests in flight; retry shortly",
        )
    } else if err.is::<tower::timeout::error::Elapsed>() {
        ApiError::new(
            ErrorCode::Timeout,
            "the request took too long; retry shortly",
        )
    } else {
        ApiError::internal(&err)
    }
}

/// A readiness check beyond Redis (e.g. Tempo): named, informational, shown on `/readyz`.
pub type ExtraCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

#[derive(Clone)]
struct ProbeState {
    store: Store,
    metrics: Metrics,
    extra: Arc<Vec<(&'static str, ExtraCheck)>>,
}

/// `/healthz`, `/readyz` (200 only when Redis answers) and `/metrics`.
pub fn probes(store: Store, metrics: Metrics, extra: Vec<(&'static str, ExtraCheck)>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(ProbeState {
            store,
            metrics,
            extra: Arc::new(extra),
        })
}

async fn readyz(State(state): State<ProbeState>) -> Response {
    let redis = state.store.ping().await;
    state.metrics.common.redis_up.set(i64::from(redis.is_ok()));
    let mut checks = serde_json::Map::new();
    checks.insert(
        "redis".into(),
        json!(match &redis {
            Ok(()) => "ok".to_owned(),
            Err(e) => e.to_string(),
        }),
    );
    for (name, check) in state.extra.iter() {
        checks.insert(
            (*name).into(),
            json!(check().err().unwrap_or_else(|| "ok".into())),
        );
    }
    match redis {
        Ok(()) => Json(json!({"status": "ready", "checks": checks})).into_response(),
        Err(e) => {
            state.metrics.common.redis_error("ping");
            tracing::warn!(error = %e, "not ready: redis unavailable");
            let error = ApiError::new(ErrorCode::RedisUnavailable, "Redis cannot be reached");
            error.respond(json!({"error": error.body().error, "checks": checks}))
        }
    }
}

/// OpenMetrics (with exemplars) when the scraper's `Accept` asks for it, else the classic text
/// format (see [`Exposition::negotiate`]).
async fn metrics_text(State(state): State<ProbeState>, headers: header::HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok());
    let format = Exposition::negotiate(accept);
    (
        [
            (header::CONTENT_TYPE, format.content_type()),
            (header::VARY, "accept"),
        ],
        state.metrics.encode_as(format),
    )
        .into_response()
}

/// Finishes a service's router: JSON 404/405 answers and request metrics on every route.
pub fn finish(router: Router, metrics: Metrics) -> Router {
    router
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "this route does not take that method",
            )
        })
        .layer(axum::middleware::from_fn_with_state(metrics, record))
}

async fn record(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let start = Instant::now();
    let response = next.run(request).await;
    let common = &metrics.common;
    common
        .http_duration
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(start.elapsed().as_secs_f64());
    common
        .http_requests
        .get_or_create(&HttpLabels {
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// Runs every request to `router`'s routes in an `http request` span, named `METHOD /route` for
/// OpenTelemetry, whose parent is the caller's W3C `traceparent` when it carries a valid one
/// (see [`crate::telemetry::parent_context`]). The caller's trace ID is also recorded as the
/// `trace_id` field, so logs correlate even when OTLP export is off. Apply it to API routes; the
/// probes would only add noise to traces.
pub fn trace(router: Router) -> Router {
    router.layer(axum::middleware::from_fn(trace_request))
}

async fn trace_request(request: Request, next: Next) -> Response {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing::Instrument as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str());
    let method = request.method().as_str();
    let span = tracing::info_span!(
        "http request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    let parent = crate::telemetry::parent_context(request.headers());
    let remote = parent.span().span_context().clone();
    if remote.is_valid() {
        span.record("trace_id", remote.trace_id().to_string());
        // Without the OpenTelemetry layer (export off) there is no parent to set; that is fine.
        let _ = span.set_parent(parent);
    }
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}

#[cfg(test)]
mod tests {
    use anomaly_testkit::{free_port, redis_config};
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::metrics::MetricsBuilder;

    /// Not ready is an error answer like any other (code, Retry-After), plus the checks.
    #[tokio::test]
    async fn readyz_answers_an_unreachable_redis_in_the_error_shape() {
        let url = format!("redis://127.0.0.1:{}", free_port());
        let store = Store::connect(&redis_config(&url, "readyz")).unwrap();
        let response = probes(store, MetricsBuilder::new().freeze(), Vec::new())
            .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "REDIS_UNAVAILABLE");
        let redis = body["checks"]["redis"].as_str().unwrap();
        assert!(redis.starts_with("redis unavailable: "), "{body}");
    }
}
