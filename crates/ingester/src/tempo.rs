//! A client for Tempo's search API that handles exactly what a real Tempo sends (see
//! `testdata/tempo/README.md`): `traces` absent when empty, `durationMs` absent under 1 ms,
//! numbers as strings, unknown fields, plain-text errors. Retries only what retrying can help.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use anomaly_traces::tempo::{TempoHttp, TraceFetcher};
use serde::Deserialize;
use serde_json::Value;

use crate::cap::{CapSource, ResultCap, parse_rejection, parse_status_config};
use crate::config::TempoSection;
use crate::metrics::IngestMetrics;
use crate::poller::SpanFetch;

// The error classes and request plumbing live in `anomaly-traces`, shared with the checker.
pub use anomaly_traces::tempo::{TempoError, is_request_error};

/// The parts of a search response the ingester reads; everything else is ignored.
#[derive(Debug, Default, Deserialize)]
pub struct SearchResponse {
    /// Absent (v2) or `[]` (v3) when nothing matched. Items stay raw so one bad item is
    /// counted, not fatal.
    #[serde(default)]
    pub traces: Option<Vec<Value>>,
}

impl SearchResponse {
    pub fn parse(body: &[u8]) -> Result<Vec<Value>, TempoError> {
        serde_json::from_slice::<SearchResponse>(body)
            .map(|r| r.traces.unwrap_or_default())
            .map_err(|e| TempoError::Malformed(e.to_string()))
    }
}

/// The last search's result, for `/readyz` (informational).
#[derive(Debug, Clone, Default)]
pub struct TempoStatus(Arc<Mutex<Option<String>>>);

impl TempoStatus {
    fn set(&self, error: Option<String>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = error;
    }

    /// `Ok` unless the last search failed.
    pub fn check(&self) -> Result<(), String> {
        match &*self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            None => Ok(()),
            Some(e) => Err(e.clone()),
        }
    }
}

/// One search's answer.
#[derive(Debug, Clone, Default)]
pub struct Search {
    pub traces: Vec<Value>,
    /// The `limit` it asked for: `tempo.limit`, or the lower cap Tempo enforces.
    pub limit: usize,
}

/// Searches one Tempo.
#[derive(Debug, Clone)]
pub struct TempoClient {
    http: TempoHttp,
    search_url: String,
    config_url: String,
    metrics: IngestMetrics,
    status: TempoStatus,
    cap: ResultCap,
    /// `fetch_spans`, when enabled.
    spans: Option<SpanFetch>,
}

impl TempoClient {
    pub fn new(
        settings: &TempoSection,
        user_agent: &str,
        metrics: IngestMetrics,
        status: TempoStatus,
    ) -> Result<Self, reqwest::Error> {
        let http = TempoHttp::new(settings, user_agent)?;
        let cap = ResultCap::new(settings.limit as usize, metrics.search_limit.clone());
        let spans = settings.fetch_spans.enabled.then(|| {
            // Trace-by-ID requests are Tempo requests: counted by status with the searches.
            let counted = metrics.clone();
            let fetcher = TraceFetcher::from_http(http.clone()).with_observer(Arc::new(
                move |status: &str, _| counted.tempo_request(status),
            ));
            SpanFetch::new(&settings.fetch_spans, fetcher, &metrics)
        });
        Ok(TempoClient {
            spans,
            search_url: http.url("/api/search"),
            config_url: http.url("/status/config"),
            http,
            metrics,
            status,
            cap,
        })
    }

    /// The shared request plumbing (tenant, auth, timeout, retries), e.g. for trace by ID.
    pub fn http(&self) -> &TempoHttp {
        &self.http
    }

    /// Span fetching (`fetch_spans`), when enabled.
    pub fn span_fetch(&self) -> Option<&SpanFetch> {
        self.spans.as_ref()
    }

    /// The search limit in force and what is known about Tempo's result cap.
    pub fn cap(&self) -> &ResultCap {
        &self.cap
    }

    /// Searches `start..end` (unix seconds), retrying with exponential backoff and jitter
    /// while retrying can help. A refusal of the limit (`limit 500 exceeds max limit 20`,
    /// Tempo v2.6+) lowers the limit to the cap and asks again at once.
    pub async fn search(&self, start: u64, end: u64) -> Result<Search, TempoError> {
        loop {
            let limit = self.cap.limit();
            let result = self
                .http
                .retry("search", |_| self.search_once(start, end, limit))
                .await;
            match result {
                Ok(traces) => {
                    self.status.set(None);
                    return Ok(Search { traces, limit });
                }
                // The cap only ever goes down, so this asks again a bounded number of times.
                Err(TempoError::Status { status: 400, body })
                    if parse_rejection(&body)
                        .is_some_and(|cap| self.cap.lower(cap, CapSource::Rejected)) =>
                {
                    tracing::debug!(start, end, limit, %body, "tempo refused the limit; asking again with its cap");
                }
                Err(e) => {
                    tracing::warn!(start, end, error = %e, "tempo search failed");
                    self.status.set(Some(e.to_string()));
                    return Err(e);
                }
            }
        }
    }

    /// Reads `query_frontend.search.max_result_limit` from Tempo's `GET /status/config` (the
    /// running configuration as YAML, served by every Tempo version) when it is due, and lowers
    /// the limit to it: an exact cap before the first search, where the query-frontend exposes
    /// it. Anything else (a gateway's 404, a timeout, another body, the key absent or 0: no
    /// cap) leaves the limit to the searches to find out.
    pub async fn read_configured_cap(&self) {
        if !self.cap.config_read_due() {
            return;
        }
        match self.http.body(self.http.get(&self.config_url)).await {
            Ok(body) => match parse_status_config(&String::from_utf8_lossy(&body)) {
                Some(cap) => {
                    self.cap.lower(cap, CapSource::Config);
                }
                None => tracing::debug!("tempo's /status/config names no max_result_limit"),
            },
            Err(e) => tracing::debug!(error = %e, "tempo's /status/config is not available"),
        }
    }

    /// One search request, a debug span (the bounds and limit only: never the query, the
    /// credentials or the body).
    #[tracing::instrument(
        name = "tempo search",
        level = "debug",
        skip_all,
        fields(start = start, end = end, limit = limit)
    )]
    async fn search_once(
        &self,
        start: u64,
        end: u64,
        limit: usize,
    ) -> Result<Vec<Value>, TempoError> {
        let mut query: Vec<(&str, String)> = vec![
            ("start", start.to_string()),
            ("end", end.to_string()),
            ("limit", limit.to_string()),
        ];
        let settings = self.http.settings();
        if !settings.query.is_empty() {
            query.push(("q", settings.query.clone()));
        }
        let request = self
            .http
            .get(&self.search_url)
            .query(&query)
            .header(reqwest::header::ACCEPT, "application/json");
        let started = Instant::now();
        let result = self.send(request).await;
        self.metrics
            .tempo_duration
            .observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(traces) => {
                self.metrics.tempo_request("200");
                self.metrics
                    .tempo_traces_fetched
                    .inc_by(traces.len() as u64);
            }
            Err(e) => self.metrics.tempo_request(&e.metric_label()),
        }
        result
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Vec<Value>, TempoError> {
        SearchResponse::parse(&self.http.body(request).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn recorded(rel: &str) -> Vec<u8> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/tempo")
            .join(rel);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Every recorded response of both versions: each 200 search body parses (`traces` absent
    /// or `[]`, `durationMs` absent, numbers as strings, unknown fields such as `spanSet`,
    /// `spanSets`, `serviceStats`, `metrics`), and each of its traces is a sample or a partial
    /// trace; each error is a plain-text body that the client does not retry.
    #[test]
    fn every_recorded_response_is_handled() {
        let bucketer = anomaly_core::Bucketer::new(&anomaly_core::TimeConfig::default());
        let (mut bodies, mut traces, mut partial, mut errors) = (0, 0, 0, 0);
        for version in ["v2.0.1", "v3.0.3"] {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../testdata/tempo")
                .join(version);
            let mut names: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .filter_map(|e| {
                    let name = e.unwrap().file_name().into_string().unwrap();
                    name.strip_suffix(".url").map(str::to_owned)
                })
                .collect();
            names.sort();
            for stem in names {
                let url = std::fs::read_to_string(dir.join(format!("{stem}.url"))).unwrap();
                // One recording (v2.0.1/47, a 200 JSON search) was kept without its headers.
                let headers = std::fs::read_to_string(dir.join(format!("{stem}.headers")))
                    .unwrap_or_else(|_| "HTTP/1.1 200 OK\nContent-Type: application/json".into());
                let body = recorded(&format!("{version}/{stem}.json"));
                let status: u16 = headers
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("{version}/{stem}: no status line"));
                let name = format!("{version}/{stem} ({})", url.trim());
                if status != 200 {
                    let text = String::from_utf8(body).unwrap();
                    assert!(
                        headers.to_ascii_lowercase().contains("text/plain"),
                        "{name}: errors are plain text"
                    );
                    assert!(
                        serde_json::from_str::<Value>(&text).is_err(),
                        "{name}: an error body is not JSON"
                    );
                    let e = TempoError::Status {
                        status,
                        body: text.trim().to_owned(),
                    };
                    assert!(!e.retryable(), "{name}: a request error is not retried");
                    errors += 1;
                    continue;
                }
                let search = url.starts_with("/api/search?") || url.trim() == "/api/search";
                if !search || !headers.contains("application/json") {
                    continue;
                }
                let parsed = SearchResponse::parse(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
                for t in &parsed {
                    match crate::trace::parse(t, &bucketer, &Default::default()) {
                        Ok(crate::trace::Parsed::Sample(_)) => traces += 1,
                        Ok(crate::trace::Parsed::Partial) => partial += 1,
                        other => panic!("{name}: {t}: {other:?}"),
                    }
                }
                bodies += 1;
            }
        }
        assert!(bodies >= 30, "only {bodies} recorded search bodies found");
        assert!(
            traces >= 100 && partial >= 1 && errors >= 18,
            "{traces} {partial} {errors}"
        );
        // v2.0.1 can return more than `limit` when several shards answer.
        let overshoot =
            SearchResponse::parse(&recorded("v2.0.1/47_mt_range_limit5_exceeded.json")).unwrap();
        assert!(overshoot.len() > 5, "{}", overshoot.len());
        // v2.0.1 omits `traces` when nothing matched; v3 sends `[]`.
        assert!(
            SearchResponse::parse(&recorded("v2.0.1/43_mt_search_team_a_or_b.json"))
                .unwrap()
                .is_empty()
        );
        assert!(
            SearchResponse::parse(&recorded("v3.0.3/36_empty_result.json"))
                .unwrap()
                .is_empty()
        );
        assert!(matches!(
            SearchResponse::parse(b"{\"traces\":[{\"traceID\":"),
            Err(TempoError::Malformed(_))
        ));
    }
}
