//! `ingester.tempo:`: where Tempo is and how to ask it. The poller reads all of it; the checker's
//! trace fetch reuses the connection part (URL, tenant, auth, timeout, retries, body cap).

use std::time::Duration;

use anomaly_core::ConfigError;
use secrecy::SecretString;
use serde::Deserialize;

/// The widest range Tempo's search accepts.
pub const TEMPO_MAX_RANGE: Duration = Duration::from_secs(168 * 3600);

/// `ingester.tempo:`: where and how to poll Grafana Tempo.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TempoSection {
    /// Tempo's HTTP base URL (e.g. `http://tempo-query-frontend:3200`); empty turns the poller
    /// off.
    pub url: String,
    /// How often the poller searches.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How far back each window reaches behind the cursor; traces that reach Tempo up to
    /// `lookback + freshness` after they end are still found (see the poller docs).
    #[serde(with = "humantime_serde")]
    pub lookback: Duration,
    /// How far behind now windows end. Tempo v3 hides the newest 30 s from search; a window
    /// ending there would be cut short without Tempo saying so.
    #[serde(with = "humantime_serde")]
    pub freshness: Duration,
    /// `X-Scope-OrgID` for multi-tenant Tempo; empty sends none.
    pub org_id: String,
    pub auth: TempoAuth,
    /// Upper bound on one request (search or trace by ID), body included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Traces per search; a response with this many or more is treated as truncated and its
    /// window split.
    pub limit: u32,
    /// A TraceQL filter sent as `q` (e.g. `{ resource.service.name != "loadgen" }`); empty
    /// sends none.
    pub query: String,
    /// Retries of a request that failed in a way retrying can help (5xx, 429, timeouts,
    /// connection errors, cut-off bodies); 4xx are never retried.
    pub retries: u32,
    /// The first retry waits about this long; each further one doubles it, with jitter.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    /// The longest wait between retries.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// After an outage, how far back the poller catches up from its cursor; an older gap is
    /// logged with the backfill command that fills it.
    #[serde(with = "humantime_serde")]
    pub max_catchup: Duration,
    /// The poller lease: one replica polls; another takes over within two of these after it
    /// dies.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// Largest response read; a larger search is split like a truncated one, a larger trace is
    /// refused.
    pub max_response_bytes: usize,
    /// Windows are not split below this (Tempo takes whole seconds).
    #[serde(with = "humantime_serde")]
    pub min_slice: Duration,
    /// Span baselines without OTLP: the poller also fetches each newly seen trace by ID.
    pub fetch_spans: FetchSpans,
}

/// `ingester.tempo.fetch_spans`: for deployments where spans reach only Tempo. The poller fetches
/// each complete trace it sees for the first time (`GET /api/traces/{id}`) and feeds its
/// non-root spans to span baselines, as OTLP ingest would. It costs one trace-by-ID request per
/// trace, so it is off by default and rate-limited; fetches run beside the poller and never hold
/// it up. A failed fetch is counted and offered again by the next windows that return the trace.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FetchSpans {
    pub enabled: bool,
    /// Most traces fetched per second.
    pub rate: u32,
    /// Most fetches in flight at once.
    pub concurrency: usize,
    /// Most traces waiting to be fetched; newly seen traces beyond it are dropped (counted),
    /// and offered again while later windows still return them.
    pub max_pending: usize,
    /// Trace IDs remembered as fetched, so that overlapping windows, which return a trace
    /// several times, fetch it once.
    pub memo: u64,
}

impl Default for FetchSpans {
    fn default() -> Self {
        FetchSpans {
            enabled: false,
            rate: 50,
            concurrency: 4,
            max_pending: 10_000,
            memo: 100_000,
        }
    }
}

impl Default for TempoSection {
    fn default() -> Self {
        TempoSection {
            url: String::new(),
            poll_interval: Duration::from_secs(15),
            lookback: Duration::from_secs(120),
            freshness: Duration::from_secs(30),
            org_id: String::new(),
            auth: TempoAuth::default(),
            timeout: Duration::from_secs(10),
            limit: 500,
            query: String::new(),
            retries: 3,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            max_catchup: Duration::from_secs(3600),
            lease_ttl: Duration::from_secs(30),
            max_response_bytes: 32 * 1024 * 1024,
            min_slice: Duration::from_secs(1),
            fetch_spans: FetchSpans::default(),
        }
    }
}

/// `ingester.tempo.auth`: for a proxy in front of Tempo (Tempo has no auth of its own). Basic
/// (`username` + `password`) or bearer (`token`); set secrets through the environment
/// (`ANOMALY_INGESTER__TEMPO__AUTH__PASSWORD`, `..._TOKEN`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TempoAuth {
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub token: Option<SecretString>,
}

impl TempoSection {
    /// Whether a Tempo is configured (a URL is set).
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }

    /// Checks every key; errors name the key as `ingester.tempo.KEY`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err =
            |key: &str, msg: &str| Err(ConfigError::new(format!("ingester.tempo.{key}"), msg));
        if self.enabled() {
            match reqwest::Url::parse(&self.url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => return err("url", "must be an http(s) URL or empty"),
            }
        }
        if self.poll_interval.is_zero() {
            return err("poll_interval", "must be more than 0");
        }
        if self.lookback < self.poll_interval {
            return err(
                "lookback",
                "must be at least poll_interval, or traces fall between windows",
            );
        }
        if self.lookback + self.freshness > TEMPO_MAX_RANGE / 2 {
            return err("lookback", "is longer than Tempo can search");
        }
        if self.timeout.is_zero() {
            return err("timeout", "must be more than 0");
        }
        if !(1..=262_144).contains(&self.limit) {
            return err("limit", "must be from 1 to 262144");
        }
        if self.backoff > self.max_backoff {
            return err("backoff", "must not exceed max_backoff");
        }
        if self.max_catchup < self.lookback {
            return err("max_catchup", "must be at least lookback");
        }
        if self.lease_ttl < Duration::from_secs(1) {
            return err("lease_ttl", "must be at least 1s");
        }
        if self.max_response_bytes < 1024 {
            return err("max_response_bytes", "must be at least 1024");
        }
        if self.min_slice < Duration::from_secs(1) || self.min_slice.subsec_nanos() != 0 {
            return err(
                "min_slice",
                "must be a whole number of seconds, at least 1s",
            );
        }
        let f = &self.fetch_spans;
        if !(1..=10_000).contains(&f.rate) {
            return err(
                "fetch_spans.rate",
                "must be from 1 to 10000 traces per second",
            );
        }
        if !(1..=256).contains(&f.concurrency) {
            return err("fetch_spans.concurrency", "must be from 1 to 256");
        }
        if f.max_pending == 0 {
            return err("fetch_spans.max_pending", "must be at least 1");
        }
        if f.memo < 1000 {
            return err("fetch_spans.memo", "must be at least 1000");
        }
        let a = &self.auth;
        if a.token.is_some() && (a.username.is_some() || a.password.is_some()) {
            return err("auth", "use either username/password or token, not both");
        }
        if a.password.is_some() != a.username.is_some() {
            return err(
                "auth.username",
                "basic auth needs both username and password",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_key() {
        assert!(TempoSection::default().validate().is_ok());
        type Change = fn(&mut TempoSection);
        let cases: [(Change, &str); 7] = [
            (|t| t.url = "ftp://tempo".into(), "ingester.tempo.url"),
            (|t| t.timeout = Duration::ZERO, "ingester.tempo.timeout"),
            (
                |t| t.backoff = Duration::from_secs(60),
                "ingester.tempo.backoff",
            ),
            (
                |t| t.fetch_spans.rate = 0,
                "ingester.tempo.fetch_spans.rate",
            ),
            (
                |t| t.fetch_spans.concurrency = 0,
                "ingester.tempo.fetch_spans.concurrency",
            ),
            (
                |t| t.fetch_spans.max_pending = 0,
                "ingester.tempo.fetch_spans.max_pending",
            ),
            (
                |t| t.fetch_spans.memo = 10,
                "ingester.tempo.fetch_spans.memo",
            ),
        ];
        for (change, key) in cases {
            let mut t = TempoSection::default();
            change(&mut t);
            let err = t.validate().unwrap_err();
            assert!(err.to_string().contains(key), "{key}: {err}");
        }
    }

    /// `fetch_spans` is optional and partial: unknown keys are refused, missing ones default.
    #[test]
    fn fetch_spans_deserialises_with_defaults() {
        let t: TempoSection =
            serde_json::from_str(r#"{"url":"http://tempo:3200","fetch_spans":{"enabled":true}}"#)
                .unwrap();
        assert!(t.fetch_spans.enabled);
        assert_eq!(t.fetch_spans.rate, 50);
        assert!(
            serde_json::from_str::<TempoSection>(r#"{"fetch_spans":{"rate_per_s":5}}"#).is_err()
        );
    }
}
