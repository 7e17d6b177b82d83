//! Pushing generated traces to the ingester's `POST /v1/traces/ingest` in batches.

use serde::Deserialize;
use serde_json::json;

use crate::traffic::GenTrace;

/// What the ingester answered, summed over batches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct PushSummary {
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    /// Requests sent (not part of the ingester's answer).
    #[serde(skip)]
    pub batches: u64,
}

impl std::ops::AddAssign for PushSummary {
    fn add_assign(&mut self, o: PushSummary) {
        self.accepted += o.accepted;
        self.duplicates += o.duplicates;
        self.rejected += o.rejected;
        self.batches += o.batches;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("cannot reach {url}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url} answered 200 with a body that is not an ingest summary: {body}")]
    Body { url: String, body: String },
}

/// Where and how to push.
#[derive(Debug, Clone)]
pub struct Pusher {
    client: reqwest::Client,
    url: String,
    token: Option<String>,
    batch_size: usize,
}

impl Pusher {
    /// `url` is the full endpoint, e.g. `http://127.0.0.1:8081/v1/traces/ingest`; `token` is
    /// sent as a bearer token when set.
    pub fn new(url: impl Into<String>, token: Option<String>, batch_size: usize) -> Self {
        Pusher {
            client: reqwest::Client::new(),
            url: url.into(),
            token,
            batch_size: batch_size.max(1),
        }
    }

    /// Pushes `traces` in batches of at most `batch_size`, in order; stops at the first
    /// failed request.
    pub async fn push(&self, traces: &[GenTrace]) -> Result<PushSummary, PushError> {
        let mut total = PushSummary::default();
        for chunk in traces.chunks(self.batch_size) {
            total += self.push_batch(chunk).await?;
        }
        Ok(total)
    }

    async fn push_batch(&self, chunk: &[GenTrace]) -> Result<PushSummary, PushError> {
        let body =
            json!({ "traces": chunk.iter().map(GenTrace::to_ingest_json).collect::<Vec<_>>() });
        let mut request = self.client.post(&self.url).json(&body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let http = |source| PushError::Http {
            url: self.url.clone(),
            source,
        };
        let response = request.send().await.map_err(http)?;
        let status = response.status();
        let text = response.text().await.map_err(http)?;
        if !status.is_success() {
            return Err(PushError::Status {
                url: self.url.clone(),
                status: status.as_u16(),
                body: text,
            });
        }
        let mut summary: PushSummary =
            serde_json::from_str(&text).map_err(|_| PushError::Body {
                url: self.url.clone(),
                body: text.clone(),
            })?;
        summary.batches = 1;
        Ok(summary)
    }
}
