//! `GET /v1/baseline`: the stored baseline of one key and its bucket's local time range, read
//! from Redis directly (not through the cache), so an SRE sees what is stored right now.

use anomaly_core::key::parse_hour;
use anomaly_core::time::hour_range;
use anomaly_core::{BaselineKey, Baselines, DayType, DurationMs, NameField, Verdict};
use anomaly_runtime::error::{ApiError, ErrorBody, ErrorCode};
use anomaly_runtime::http::ApiQuery;
use axum::Json;
use axum::extract::State;
use chrono::Weekday;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::check::{BaselineBody, DayTypeBody, key_error};
use crate::state::AppState;

/// The key to look up.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct BaselineQuery {
    /// The service (`rootServiceName`): 1 to `max_name_bytes` (default 256) bytes of UTF-8.
    #[param(example = "checkout")]
    service: Option<String>,
    /// The endpoint (`rootTraceName`): 1 to `max_name_bytes` (default 256) bytes of UTF-8.
    #[param(example = "POST /pay")]
    endpoint: Option<String>,
    /// Local hour, 0 to 23, without leading zeros.
    #[param(value_type = u8, example = 14)]
    hour: Option<String>,
    /// `weekday` or `weekend`.
    #[serde(rename = "dayType")]
    #[param(rename = "dayType", value_type = DayTypeBody, example = "weekday")]
    day_type: Option<String>,
}

/// A stored baseline, its key and its bucket.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BaselineResponse {
    key: KeyBody,
    baseline: BaselineBody,
    bucket: BucketRange,
    /// The threshold a check in this bucket is judged against now; null while the baseline
    /// has fewer than `minSamples` samples.
    #[schema(required = true)]
    threshold: Option<f64>,
    /// Samples needed before a duration is judged (`stats.min_samples`).
    min_samples: u64,
}

/// A baseline key.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KeyBody {
    #[schema(example = "checkout")]
    service: String,
    #[schema(example = "POST /pay")]
    endpoint: String,
    #[schema(example = 14)]
    hour: u8,
    day_type: DayTypeBody,
}

/// The local time range a bucket covers.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BucketRange {
    /// The configured IANA time zone.
    #[schema(example = "Asia/Taipei")]
    timezone: String,
    /// The weekdays in this day type (`weekend_days` for weekend, the others for weekday).
    #[schema(example = json!(["Mon", "Tue", "Wed", "Thu", "Fri"]))]
    days: Vec<String>,
    /// Configured holidays, which count as weekend; empty for the weekday bucket.
    holidays: Vec<String>,
    /// Local start of the hour, inclusive.
    #[schema(example = "14:00")]
    from: String,
    /// Local end of the hour, exclusive ("24:00" for hour 23).
    #[schema(example = "15:00")]
    to: String,
    #[schema(example = "weekdays 14:00-15:00 Asia/Taipei")]
    description: String,
}

#[utoipa::path(
    get,
    path = "/v1/baseline",
    tag = "baseline",
    params(BaselineQuery),
    responses(
        (status = 200, description = "The stored baseline", body = BaselineResponse),
        (status = 400, description = "A parameter is missing or invalid (INVALID_SERVICE, INVALID_ENDPOINT, INVALID_HOUR, INVALID_DAY_TYPE, INVALID_QUERY)", body = ErrorBody),
        (status = 401, description = "Authentication is on and the bearer token is missing or wrong", body = ErrorBody),
        (status = 404, description = "No baseline is stored for the key (BASELINE_NOT_FOUND)", body = ErrorBody),
        (status = 503, description = "Redis cannot be reached (REDIS_UNAVAILABLE) or the service is overloaded; retry after Retry-After seconds", body = ErrorBody),
    )
)]
pub(crate) async fn get_baseline(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<BaselineQuery>,
) -> Result<Json<BaselineResponse>, ApiError> {
    let key = parse_key(&query, &state)?;
    let baseline = state.store().baseline(&key).await.inspect_err(|_| {
        state.metrics().common.redis_error("baseline");
    })?;
    let description = state.describe(key.hour(), key.day_type()).to_owned();
    let Some(baseline) = baseline else {
        return Err(ApiError::new(
            ErrorCode::BaselineNotFound,
            format!(
                "no baseline is stored for {} {} on {description}; one appears after the \
                 recomputer has processed samples for this key",
                key.service(),
                key.endpoint()
            ),
        ));
    };
    // The rule is decided in one place: evaluating any duration yields the threshold, with
    // the override a check of this key would apply.
    let over = state.overrides.find(key.service(), key.endpoint());
    let rule = state.stats.rule(over.map(|a| a.over));
    let threshold = DurationMs::new(0.0).ok().and_then(|zero| {
        Verdict::judge(zero, &Baselines::exact(Some(baseline)), &rule, &[]).threshold()
    });
    let (from, to) = hour_range(key.hour());
    Ok(Json(BaselineResponse {
        bucket: BucketRange {
            timezone: state.time.timezone.name().to_owned(),
            days: days(&state.time.weekend_days, key.day_type()),
            holidays: match key.day_type() {
                DayType::Weekday => Vec::new(),
                DayType::Weekend => state.time.holidays.iter().map(|d| d.to_string()).collect(),
            },
            from,
            to,
            description,
        },
        key: KeyBody {
            service: key.service().to_owned(),
            endpoint: key.endpoint().to_owned(),
            hour: key.hour(),
            day_type: key.day_type().into(),
        },
        baseline: baseline.into(),
        threshold,
        min_samples: u64::from(state.stats.min_samples),
    }))
}

fn parse_key(query: &BaselineQuery, state: &AppState) -> Result<BaselineKey, ApiError> {
    let limits = &state.limits;
    let required = |v: &Option<String>, name: &str, code: ErrorCode| {
        v.clone()
            .ok_or_else(|| ApiError::new(code, format!("query parameter {name} is missing")))
    };
    let service = required(&query.service, "service", ErrorCode::InvalidService)?;
    limits
        .names
        .check(NameField::Service, &service)
        .map_err(key_error)?;
    let endpoint = required(&query.endpoint, "endpoint", ErrorCode::InvalidEndpoint)?;
    limits
        .names
        .check(NameField::Endpoint, &endpoint)
        .map_err(key_error)?;
    let hour = required(&query.hour, "hour", ErrorCode::InvalidHour)?;
    let hour =
        parse_hour(&hour).map_err(|e| ApiError::new(ErrorCode::InvalidHour, e.to_string()))?;
    let day_type = required(&query.day_type, "dayType", ErrorCode::InvalidDayType)?;
    let day_type: DayType = day_type.parse().map_err(|e: anomaly_core::KeyError| {
        ApiError::new(ErrorCode::InvalidDayType, e.to_string())
    })?;
    BaselineKey::with_rules(service, endpoint, hour, day_type, limits.names).map_err(key_error)
}

/// The weekdays of a day type, Monday first.
fn days(weekend_days: &[Weekday], day_type: DayType) -> Vec<String> {
    const WEEK: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];
    WEEK.iter()
        .filter(|d| weekend_days.contains(d) == (day_type == DayType::Weekend))
        .map(|d| d.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_the_days_of_a_day_type() {
        let sat_sun = [Weekday::Sat, Weekday::Sun];
        assert_eq!(
            days(&sat_sun, DayType::Weekday),
            ["Mon", "Tue", "Wed", "Thu", "Fri"]
        );
        assert_eq!(days(&sat_sun, DayType::Weekend), ["Sat", "Sun"]);
        assert_eq!(
            days(&[Weekday::Fri, Weekday::Sat], DayType::Weekday),
            ["Mon", "Tue", "Wed", "Thu", "Sun"]
        );
    }
}
