//! `GET /v1/keys` and `GET /v1/services`: which services and endpoints have samples, and how
//! many each of an endpoint's 48 buckets holds (a heatmap's data), a page at a time.
//!
//! Both read `keyEndpoints` through anomaly-store's listing, never `keyIndex` whole: a page costs
//! a bounded number of Redis round trips (one ZRANGEBYLEX and one pipeline of LLENs for keys, one
//! script call for services) whatever the number of keys. Like `GET /v1/baseline` they read Redis
//! directly, not through the cache.

use anomaly_core::{DayType, KeyError, NameField};
use anomaly_runtime::error::{ApiError, ErrorBody, ErrorCode};
use anomaly_runtime::http::ApiQuery;
use anomaly_store::{
    EndpointCursor, EndpointFilter, EndpointSamples, InvalidCursor, ServiceCursor,
};
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::check::{DayTypeBody, key_error};
use crate::state::AppState;

/// Items a page holds when `limit` is not given.
const DEFAULT_LIMIT: usize = 100;
/// The most items a page may be asked for.
const MAX_LIMIT: usize = 1000;

/// Which endpoints to list, and which page.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct KeysQuery {
    /// Only this service's endpoints (the exact name). Empty or absent: every service.
    #[param(example = "checkout")]
    service: Option<String>,
    /// Only endpoints of this exact name (of `service` when given, else of every service: a
    /// page then holds the matches among the `limit` endpoints it read, and can be short or
    /// empty while `nextCursor` is set). Empty or absent: every endpoint.
    #[param(example = "POST /pay")]
    endpoint: Option<String>,
    /// Count only this day type's 24 buckets (`weekday` or `weekend`); both when absent.
    #[serde(rename = "dayType")]
    #[param(rename = "dayType", value_type = Option<DayTypeBody>, example = "weekday")]
    day_type: Option<String>,
    /// Leave out endpoints whose busiest counted bucket has fewer samples (pages can then be
    /// short, or empty while `nextCursor` is set). A non-negative integer; default 0.
    #[serde(rename = "minSamples")]
    #[param(rename = "minSamples", value_type = Option<u64>, example = 50)]
    min_samples: Option<String>,
    /// `nextCursor` of the previous page; absent for the first page.
    cursor: Option<String>,
    /// Most endpoints a page reads, from 1 to 1000; default 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000, example = 100)]
    limit: Option<String>,
}

/// Which page of services.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ServicesQuery {
    /// `nextCursor` of the previous page; absent for the first page.
    cursor: Option<String>,
    /// Most services a page holds, from 1 to 1000; default 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000, example = 100)]
    limit: Option<String>,
}

/// A page of endpoints.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KeysResponse {
    endpoints: Vec<EndpointBody>,
    /// Pass as `cursor` for the next page; null on the last page.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// An endpoint and the samples in each of its buckets.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EndpointBody {
    #[schema(example = "checkout")]
    service: String,
    #[schema(example = "POST /pay")]
    endpoint: String,
    /// Samples in all the buckets counted.
    #[schema(example = 21450)]
    sample_count: u64,
    buckets: BucketCounts,
}

/// Samples in each bucket's window (at most `stats.window_size`), by local hour 0 to 23; a day
/// type is present when it was counted (both unless `dayType` was given).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BucketCounts {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, min_items = 24, max_items = 24)]
    weekday: Option<Vec<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, min_items = 24, max_items = 24)]
    weekend: Option<Vec<u64>>,
}

/// A page of service names.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServicesResponse {
    #[schema(example = json!(["cart", "checkout"]))]
    services: Vec<String>,
    /// Pass as `cursor` for the next page; null on the last page.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/keys",
    tag = "keys",
    params(KeysQuery),
    responses(
        (status = 200, description = "A page of endpoints with the samples of each bucket", body = KeysResponse),
        (status = 400, description = "A parameter is invalid (INVALID_CURSOR, INVALID_DAY_TYPE, INVALID_SERVICE, INVALID_ENDPOINT, INVALID_QUERY: limit not from 1 to 1000, minSamples not a non-negative integer)", body = ErrorBody),
        (status = 401, description = "Authentication is on and the bearer token is missing or wrong", body = ErrorBody),
        (status = 503, description = "Redis cannot be reached (REDIS_UNAVAILABLE) or the service is overloaded; retry after Retry-After seconds", body = ErrorBody),
    )
)]
pub(crate) async fn list_keys(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<KeysQuery>,
) -> Result<Json<KeysResponse>, ApiError> {
    let service = name(&query.service, NameField::Service, &state)?;
    let endpoint = name(&query.endpoint, NameField::Endpoint, &state)?;
    let day_type = match given(&query.day_type) {
        None => None,
        Some(d) => Some(d.parse::<DayType>().map_err(|e: KeyError| key_error(e))?),
    };
    let min_samples = match given(&query.min_samples) {
        None => 0,
        Some(n) => n.parse::<u64>().map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidQuery,
                format!("minSamples must be a non-negative integer, got {n:?}"),
            )
        })?,
    };
    let after = cursor(&query.cursor, EndpointCursor::parse)?;
    let limit = limit(&query.limit)?;
    let filter = EndpointFilter {
        service,
        endpoint,
        day_type,
    };
    let page = state
        .store()
        .list_endpoints(&filter, after.as_ref(), limit)
        .await
        .inspect_err(|_| state.metrics().common.redis_error("list_keys"))?;
    Ok(Json(KeysResponse {
        endpoints: page
            .items
            .into_iter()
            .filter(|e| e.busiest() >= min_samples)
            .map(EndpointBody::from)
            .collect(),
        next_cursor: page.next.map(|c| c.to_string()),
    }))
}

#[utoipa::path(
    get,
    path = "/v1/services",
    tag = "keys",
    params(ServicesQuery),
    responses(
        (status = 200, description = "A page of the services that have samples", body = ServicesResponse),
        (status = 400, description = "A parameter is invalid (INVALID_CURSOR, INVALID_QUERY: limit not from 1 to 1000)", body = ErrorBody),
        (status = 401, description = "Authentication is on and the bearer token is missing or wrong", body = ErrorBody),
        (status = 503, description = "Redis cannot be reached (REDIS_UNAVAILABLE) or the service is overloaded; retry after Retry-After seconds", body = ErrorBody),
    )
)]
pub(crate) async fn list_services(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ServicesQuery>,
) -> Result<Json<ServicesResponse>, ApiError> {
    let after = cursor(&query.cursor, ServiceCursor::parse)?;
    let limit = limit(&query.limit)?;
    let page = state
        .store()
        .list_services(after.as_ref(), limit)
        .await
        .inspect_err(|_| state.metrics().common.redis_error("list_services"))?;
    Ok(Json(ServicesResponse {
        services: page.items,
        next_cursor: page.next.map(|c| c.to_string()),
    }))
}

impl From<EndpointSamples> for EndpointBody {
    fn from(e: EndpointSamples) -> Self {
        EndpointBody {
            sample_count: e.total(),
            buckets: BucketCounts {
                weekday: e.weekday.map(Vec::from),
                weekend: e.weekend.map(Vec::from),
            },
            service: e.service,
            endpoint: e.endpoint,
        }
    }
}

/// A query parameter that is present and not empty (an empty one, as a form or a dashboard
/// variable sends it, means "not given").
pub(crate) fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

/// A name filter, held to the name rule: a name no key can have is refused, not searched.
pub(crate) fn name<'a>(
    value: &'a Option<String>,
    field: NameField,
    state: &AppState,
) -> Result<Option<&'a str>, ApiError> {
    let Some(name) = given(value) else {
        return Ok(None);
    };
    state.limits.names.check(field, name).map_err(key_error)?;
    Ok(Some(name))
}

pub(crate) fn cursor<C>(
    value: &Option<String>,
    parse: fn(&str) -> Result<C, InvalidCursor>,
) -> Result<Option<C>, ApiError> {
    given(value)
        .map(parse)
        .transpose()
        .map_err(|e| ApiError::new(ErrorCode::InvalidCursor, e.to_string()))
}

pub(crate) fn limit(value: &Option<String>) -> Result<usize, ApiError> {
    let Some(text) = given(value) else {
        return Ok(DEFAULT_LIMIT);
    };
    match text.parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(ApiError::new(
            ErrorCode::InvalidQuery,
            format!("limit must be an integer from 1 to {MAX_LIMIT}, got {text:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_from_1_to_1000_and_default_to_100() {
        let cases = [
            (None, Some(100)),
            (Some(""), Some(100)),
            (Some("1"), Some(1)),
            (Some("1000"), Some(1000)),
            (Some("0"), None),
            (Some("1001"), None),
            (Some("-1"), None),
            (Some("1.5"), None),
            (Some("ten"), None),
            (Some("99999999999999999999999"), None),
        ];
        for (text, want) in cases {
            let got = limit(&text.map(str::to_owned));
            match want {
                Some(n) => assert_eq!(got.unwrap(), n, "{text:?}"),
                None => assert_eq!(got.unwrap_err().code, ErrorCode::InvalidQuery, "{text:?}"),
            }
        }
    }
}
