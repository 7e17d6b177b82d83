//! `GET /v1/anomalies`: the anomaly feed (anomaly-store's `feed`, written by the ingester as it
//! judges each trace), newest first, a page at a time. Each entry comes with the sentence the
//! check API would give the same verdict ([`Verdict::reason`], fed the same words about the
//! bucket, the fallback level and the override) and, when `links.trace_url` is set, a link to
//! the trace.
//!
//! `since` and `until` (RFC 3339, or unix milliseconds) select by the time the feed recorded the
//! entry (Redis's clock, within an ingest batch of when the trace was judged), both inclusive;
//! `time` in the answer is that time, so the filter and the answer agree. A page reads at most
//! `anomaly_store::FEED_SCAN_MAX` entries: with a `service` or `endpoint` filter it can be short,
//! or empty, while `nextCursor` is set. Like `GET /v1/keys`, it reads Redis directly, not
//! through the cache, and it takes its parameters as `GET /v1/keys` does (empty means absent;
//! other parameters are ignored).
//!
//! [`Verdict::reason`]: anomaly_core::Verdict::reason

use std::sync::Arc;

use anomaly_core::rule::Bound;
use anomaly_core::{BaselineKey, Level, NameField, Overrides, ReasonContext, Verdict, round3};
use anomaly_runtime::error::{ApiError, ErrorBody, ErrorCode};
use anomaly_runtime::http::ApiQuery;
use anomaly_runtime::links::LinksConfig;
use anomaly_store::{FeedCursor, FeedFilter, FeedItem, SampleKind};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::check::{BaselineBody, BoundName, DayTypeBody, SourceName};
use crate::keys::{cursor, given, limit, name};
use crate::state::AppState;

/// The earliest and latest instants `since` and `until` may name (2000 to 2100, as check
/// timestamps): a number outside is more likely seconds or nanoseconds than a real bound.
const EARLIEST_MS: i64 = 946_684_800_000;
const LATEST_MS: i64 = 4_102_444_800_000;

/// What the handler needs: the checker's state and the link template.
#[derive(Debug, Clone)]
pub(crate) struct FeedState {
    app: AppState,
    links: Arc<LinksConfig>,
}

/// `GET /v1/anomalies`, with its state; merge it into the API router before authentication and
/// limits are applied.
pub(crate) fn routes(app: AppState, links: &LinksConfig) -> Router {
    Router::new()
        .route("/v1/anomalies", get(list_anomalies))
        .with_state(FeedState {
            app,
            links: Arc::new(links.clone()),
        })
}

/// Which anomalies, and which page.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AnomaliesQuery {
    /// Only this service's anomalies (the exact name). Empty or absent: every service.
    #[param(example = "checkout")]
    service: Option<String>,
    /// Only this endpoint's (or span name's) anomalies, the exact name. Empty or absent: every
    /// endpoint.
    #[param(example = "POST /pay")]
    endpoint: Option<String>,
    /// Only anomalies recorded at or after this instant: RFC 3339 (send a `+` of an offset as
    /// `%2B`) or unix milliseconds.
    #[param(example = "2026-12-02T16:00:00Z")]
    since: Option<String>,
    /// Only anomalies recorded at or before this instant, as `since`; not before `since`.
    #[param(example = "1796230800000")]
    until: Option<String>,
    /// `nextCursor` of the previous page; absent for the first page.
    cursor: Option<String>,
    /// Most anomalies a page holds, from 1 to 1000; default 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000, example = 100)]
    limit: Option<String>,
}

/// A page of the feed, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AnomaliesResponse {
    anomalies: Vec<AnomalyBody>,
    /// Pass as `cursor` for the next page; null when nothing older is left.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// A sample judged anomalous on ingest, with the numbers and the sentence of its verdict.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AnomalyBody {
    /// 32 lowercase hex digits.
    #[schema(example = "0af7651916cd43dd8448eb211c80319c")]
    trace_id: String,
    /// What was judged: the trace's root span, or one of its spans (then `endpoint` is the
    /// span's name).
    kind: SampleKindName,
    #[schema(example = "checkout")]
    service: String,
    #[schema(example = "POST /pay")]
    endpoint: String,
    bucket: AnomalyBucket,
    #[schema(example = 1840.0)]
    duration_ms: f64,
    /// The threshold exceeded; null only for an entry that was not judged.
    #[schema(required = true, example = 620.0)]
    threshold: Option<f64>,
    /// Which bound set the threshold.
    #[schema(required = true)]
    bound: Option<BoundName>,
    /// `durationMs - threshold`.
    #[schema(required = true, example = 1220.0)]
    excess_ms: Option<f64>,
    /// Where `durationMs` fell among the samples of the baseline judged against, 0 to 1; null
    /// when that baseline has no stored quantiles.
    #[schema(required = true, example = 0.996)]
    rank: Option<f64>,
    /// Which baseline was judged against: the exact bucket or a fallback level.
    #[schema(required = true)]
    baseline_source: Option<SourceName>,
    /// The baseline judged against, as it stood then.
    #[schema(required = true)]
    baseline: Option<BaselineBody>,
    /// When the feed recorded it (what `since` and `until` select), RFC 3339 in UTC with
    /// milliseconds.
    #[schema(example = "2026-12-02T17:00:00.123Z")]
    time: String,
    /// `time` in unix milliseconds.
    #[schema(example = 1_796_230_800_123_i64)]
    time_unix_ms: i64,
    /// When the trace started, RFC 3339 in UTC with milliseconds.
    #[schema(example = "2026-12-02T16:59:58.400Z")]
    trace_start: String,
    /// The explanation, as the check API words it; the baseline's age is as it was when the
    /// trace was judged.
    #[schema(
        example = "1840 ms exceeds the threshold 620 ms by 1220 ms (p95 310 ms x factor 2.0; the MAD bound p50 120 ms + 10 x MAD 18 ms = 300 ms is lower) for checkout POST /pay on weekdays 14:00-15:00 Asia/Taipei, baseline of 1000 samples updated 12 s ago"
    )]
    reason: String,
    /// The trace's link from `links.trace_url`; absent when that is empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "https://grafana.example/explore?trace=0af7651916cd43dd8448eb211c80319c")]
    trace_url: Option<String>,
}

/// The bucket judged.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AnomalyBucket {
    /// Local hour, 0 to 23.
    #[schema(example = 14)]
    hour: u8,
    day_type: DayTypeBody,
    /// The bucket in words.
    #[schema(example = "weekdays 14:00-15:00 Asia/Taipei")]
    description: String,
}

/// What was judged.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SampleKindName {
    Root,
    Span,
}

#[utoipa::path(
    get,
    path = "/v1/anomalies",
    tag = "anomalies",
    params(AnomaliesQuery),
    responses(
        (status = 200, description = "A page of the anomaly feed, newest first", body = AnomaliesResponse),
        (status = 400, description = "A parameter is invalid (INVALID_CURSOR, INVALID_SERVICE, INVALID_ENDPOINT, INVALID_QUERY: limit not from 1 to 1000, since or until not RFC 3339 or unix milliseconds from 2000 to 2100, since after until)", body = ErrorBody),
        (status = 401, description = "Authentication is on and the bearer token is missing or wrong", body = ErrorBody),
        (status = 503, description = "Redis cannot be reached (REDIS_UNAVAILABLE) or the service is overloaded; retry after Retry-After seconds", body = ErrorBody),
    )
)]
pub(crate) async fn list_anomalies(
    State(feed): State<FeedState>,
    ApiQuery(query): ApiQuery<AnomaliesQuery>,
) -> Result<Json<AnomaliesResponse>, ApiError> {
    let state = &feed.app;
    let service = name(&query.service, NameField::Service, state)?;
    let endpoint = name(&query.endpoint, NameField::Endpoint, state)?;
    let since = instant(&query.since, "since")?;
    let until = instant(&query.until, "until")?;
    if let (Some(s), Some(u)) = (since, until)
        && s > u
    {
        return Err(ApiError::new(
            ErrorCode::InvalidQuery,
            format!(
                "since ({}) is after until ({}); swap them",
                rfc3339(s),
                rfc3339(u)
            ),
        ));
    }
    let after = cursor(&query.cursor, FeedCursor::parse)?;
    let limit = limit(&query.limit)?;
    let filter = FeedFilter {
        service,
        endpoint,
        since_ms: since,
        until_ms: until,
    };
    let page = state
        .store()
        .anomalies_page(&filter, limit, after.as_ref())
        .await
        .inspect_err(|_| state.metrics().common.redis_error("list_anomalies"))?;
    if page.skipped > 0 {
        tracing::warn!(
            skipped = page.skipped,
            "feed entries that do not decode were left out of a page"
        );
    }
    Ok(Json(AnomaliesResponse {
        anomalies: page
            .entries
            .iter()
            .map(|item| body(state, &feed.links, item))
            .collect(),
        next_cursor: page.next.map(|c| c.to_string()),
    }))
}

/// `since` or `until`: RFC 3339, or unix milliseconds, from 2000 to 2100.
fn instant(value: &Option<String>, wire: &str) -> Result<Option<i64>, ApiError> {
    let Some(text) = given(value) else {
        return Ok(None);
    };
    let ms = if text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse::<i64>().ok()
    } else {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.timestamp_millis())
    };
    match ms {
        Some(ms) if (EARLIEST_MS..=LATEST_MS).contains(&ms) => Ok(Some(ms)),
        _ => Err(ApiError::new(
            ErrorCode::InvalidQuery,
            format!(
                "{wire} must be an RFC 3339 time (e.g. 2026-12-02T17:00:00Z; send a + as %2B) or \
                 unix milliseconds, from 2000 to 2100; got {text:?}"
            ),
        )),
    }
}

fn rfc3339(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.to_rfc3339_opts(SecondsFormat::Millis, true),
    )
}

fn body(state: &AppState, links: &LinksConfig, item: &FeedItem) -> AnomalyBody {
    let entry = &item.entry;
    let key = &entry.key;
    let verdict = &entry.verdict;
    let j = verdict.judgement;
    let subject = match entry.kind {
        SampleKind::Root => format!("{} {}", key.service(), key.endpoint()),
        SampleKind::Span => format!("span {} {}", key.service(), key.endpoint()),
    };
    let override_text = entry
        .override_index
        .map(|i| override_text(&state.overrides, i));
    let ctx = reason_context(state, key, verdict, subject, override_text, entry.at_ms);
    AnomalyBody {
        trace_id: entry.trace_id.to_string(),
        kind: match entry.kind {
            SampleKind::Root => SampleKindName::Root,
            SampleKind::Span => SampleKindName::Span,
        },
        service: key.service().to_owned(),
        endpoint: key.endpoint().to_owned(),
        bucket: AnomalyBucket {
            hour: key.hour(),
            day_type: key.day_type().into(),
            description: ctx.bucket.clone(),
        },
        duration_ms: round3(verdict.duration_ms),
        threshold: verdict.threshold(),
        bound: j.map(|j| match j.bound {
            Bound::P95Factor => BoundName::P95Factor,
            Bound::P50KMad => BoundName::P50KMad,
            Bound::Floor => BoundName::Floor,
        }),
        excess_ms: j.map(|j| round3(j.excess_ms)),
        rank: verdict.rank.map(round3),
        baseline_source: verdict.source.map(SourceName::from),
        baseline: verdict.baseline.map(BaselineBody::from),
        time: rfc3339(item.recorded_ms),
        time_unix_ms: item.recorded_ms,
        trace_start: rfc3339(entry.start_ms),
        reason: verdict.reason(&ctx),
        trace_url: links.trace_url(&entry.trace_id),
    }
}

/// The words about a verdict that [`Verdict::reason`] needs, as the check answer gives them:
/// the bucket and a fallback level's scope in words, the bucket's hour, the baseline's age at
/// `now_ms`, and the override.
pub(crate) fn reason_context(
    state: &AppState,
    key: &BaselineKey,
    verdict: &Verdict,
    subject: String,
    override_text: Option<String>,
    now_ms: i64,
) -> ReasonContext {
    let scope = verdict
        .source
        .filter(|level| *level != Level::Exact)
        .map(|level| {
            let (first, last) = verdict.coverage.unwrap_or((key.hour(), key.hour()));
            state
                .bucketer
                .describe_level(level, key.day_type(), first, last)
        });
    ReasonContext {
        subject,
        bucket: state.describe(key.hour(), key.day_type()).to_owned(),
        baseline_age_ms: verdict
            .baseline
            .map(|b| now_ms.saturating_sub(b.updated_at)),
        scope,
        hour: format!("{:02}:00", key.hour()),
        override_text,
    }
}

/// How an explanation names the override at `index` of `overrides`: `overrides[i] (service
/// S, endpoint E)` with the patterns it has; the index alone when the list no longer has it.
pub(crate) fn override_text(overrides: &Overrides, index: usize) -> String {
    let mut text = format!("overrides[{index}]");
    if let Some(o) = overrides.entries().nth(index) {
        let parts: Vec<String> = [("service", &o.service), ("endpoint", &o.endpoint)]
            .into_iter()
            .filter_map(|(name, p)| p.as_ref().map(|p| format!("{name} {p}")))
            .collect();
        text.push_str(&format!(" ({})", parts.join(", ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_and_until_are_rfc3339_or_unix_ms_from_2000_to_2100() {
        let cases = [
            (None, Ok(None)),
            (Some(""), Ok(None)),
            (Some("1796230800123"), Ok(Some(1_796_230_800_123))),
            (
                Some("2026-12-02T17:00:00.123Z"),
                Ok(Some(1_796_230_800_123)),
            ),
            (
                Some("2026-12-03T01:00:00.123+08:00"),
                Ok(Some(1_796_230_800_123)),
            ),
            (Some("946684800000"), Ok(Some(EARLIEST_MS))),
            (Some("4102444800000"), Ok(Some(LATEST_MS))),
            (Some("1796230800"), Err(())),
            (Some("1796230800123000000"), Err(())),
            (Some("99999999999999999999999"), Err(())),
            (Some("-1"), Err(())),
            (Some("2026-12-03T01:00:00.123 08:00"), Err(())),
            (Some("2026-12-02"), Err(())),
            (Some("yesterday"), Err(())),
            (Some("1999-12-31T23:59:59Z"), Err(())),
        ];
        for (text, want) in cases {
            let got = instant(&text.map(str::to_owned), "since");
            match want {
                Ok(ms) => assert_eq!(got.unwrap(), ms, "{text:?}"),
                Err(()) => {
                    let e = got.unwrap_err();
                    assert_eq!(e.code, ErrorCode::InvalidQuery, "{text:?}");
                    assert!(e.message.starts_with("since must be"), "{}", e.message);
                }
            }
        }
    }

    #[test]
    fn times_print_as_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339(1_796_230_800_123), "2026-12-02T17:00:00.123Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    }
}
