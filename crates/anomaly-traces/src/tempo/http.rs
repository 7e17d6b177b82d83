//! The request plumbing every Tempo call shares: one `reqwest` client with the configured
//! timeout and user agent, the tenant (`X-Scope-OrgID`) and a proxy's basic or bearer auth,
//! bodies read up to `max_response_bytes`, transport errors classified, and retries with
//! exponential backoff and jitter for what retrying can help.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use reqwest::header::CONTENT_TYPE;
use secrecy::ExposeSecret as _;

use super::{TempoError, TempoSection};

/// One answer read in full (up to `max_response_bytes`): any status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TempoResponse {
    pub status: u16,
    /// `Content-Type` as sent, if any.
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl TempoResponse {
    /// The body as text for an error message: trimmed, at most 1000 characters.
    pub fn text(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        text.trim().chars().take(1000).collect()
    }

    /// This answer as a [`TempoError::Status`].
    pub fn into_error(self) -> TempoError {
        TempoError::Status {
            status: self.status,
            body: self.text(),
        }
    }
}

/// A client for one Tempo; cheap to clone.
#[derive(Debug, Clone)]
pub struct TempoHttp {
    client: reqwest::Client,
    settings: Arc<TempoSection>,
    base: Arc<str>,
}

impl TempoHttp {
    /// A client for `settings.url` that identifies itself as `user_agent`.
    pub fn new(settings: &TempoSection, user_agent: &str) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .user_agent(user_agent)
            .build()?;
        Ok(TempoHttp {
            client,
            base: settings.url.trim_end_matches('/').into(),
            settings: Arc::new(settings.clone()),
        })
    }

    pub fn settings(&self) -> &TempoSection {
        &self.settings
    }

    /// `path` (starting with `/`) under Tempo's base URL.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A GET of `url` with the tenant and the proxy's credentials.
    pub fn get(&self, url: &str) -> reqwest::RequestBuilder {
        self.authorised(self.client.get(url))
    }

    /// The tenant and the credentials of a proxy in front of Tempo, as configured.
    pub fn authorised(&self, mut request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if !self.settings.org_id.is_empty() {
            request = request.header("X-Scope-OrgID", &self.settings.org_id);
        }
        let auth = &self.settings.auth;
        if let Some(token) = &auth.token {
            request = request.bearer_auth(token.expose_secret());
        } else if let Some(user) = &auth.username {
            request = request.basic_auth(user, auth.password.as_ref().map(|p| p.expose_secret()));
        }
        request
    }

    /// Sends `request` and reads its answer, whatever the status. A success body over
    /// `max_response_bytes` (declared or streamed) is [`TempoError::TooLarge`]; an error body
    /// is cut at the cap, since only its start is kept.
    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<TempoResponse, TempoError> {
        let mut response = request.send().await.map_err(|e| self.transport(e))?;
        let status = response.status();
        let cap = self.settings.max_response_bytes;
        if response.content_length().is_some_and(|n| n > cap as u64) && status.is_success() {
            return Err(TempoError::TooLarge(cap));
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(e))? {
            if body.len() + chunk.len() > cap {
                if status.is_success() {
                    return Err(TempoError::TooLarge(cap));
                }
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(TempoResponse {
            status: status.as_u16(),
            content_type,
            body,
        })
    }

    /// Sends `request` and reads a 200's body; any other status is a [`TempoError::Status`]
    /// carrying the start of Tempo's plain-text message.
    pub async fn body(&self, request: reqwest::RequestBuilder) -> Result<Vec<u8>, TempoError> {
        let response = self.send(request).await?;
        if response.status != 200 {
            return Err(response.into_error());
        }
        Ok(response.body)
    }

    /// Runs `attempt` (given its number, from 0) until it succeeds, fails in a way retrying
    /// cannot help, or `retries` retries have failed, sleeping [`TempoHttp::backoff`] between
    /// attempts. Each failure is logged at WARN with `what`.
    pub async fn retry<T, F, Fut>(
        &self,
        what: &'static str,
        mut attempt: F,
    ) -> Result<T, TempoError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, TempoError>>,
    {
        let mut n = 0u32;
        loop {
            match attempt(n).await {
                Ok(value) => return Ok(value),
                Err(e) => {
                    let retry = e.retryable() && n < self.settings.retries;
                    tracing::warn!(request = what, attempt = n, retry, error = %e, "tempo request failed");
                    if !retry {
                        return Err(e);
                    }
                    tokio::time::sleep(self.backoff(n)).await;
                    n += 1;
                }
            }
        }
    }

    /// `backoff * 2^attempt`, capped at `max_backoff`, with "equal jitter": half fixed, half
    /// random, so retries from many replicas spread out yet always wait.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .settings
            .backoff
            .saturating_mul(2u32.saturating_pow(attempt))
            .min(self.settings.max_backoff);
        let half = base / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }

    /// A transport failure's class: a timeout, a cut-off body, or no connection (with the
    /// whole cause chain, which reqwest's own message omits).
    pub fn transport(&self, e: reqwest::Error) -> TempoError {
        if e.is_timeout() {
            TempoError::Timeout(self.settings.timeout)
        } else if e.is_body() || e.is_decode() {
            TempoError::Malformed(e.to_string())
        } else {
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                source = s.source();
            }
            TempoError::Connect(msg)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_jittered_within_half() {
        let settings = TempoSection {
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            ..TempoSection::default()
        };
        let http = TempoHttp::new(&settings, "test").unwrap();
        for (attempt, base) in [(0, 100), (1, 200), (2, 350), (10, 350), (40, 350)] {
            for _ in 0..50 {
                let wait = http.backoff(attempt).as_secs_f64() * 1000.0;
                let base = f64::from(base);
                assert!(
                    wait >= base / 2.0 - 1e-6 && wait <= base + 1e-6,
                    "{attempt}: {wait}"
                );
            }
        }
    }
}
