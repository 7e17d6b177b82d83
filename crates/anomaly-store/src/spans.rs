//! Ingesting span samples: the span key space's windows, deduplicated per span.
//!
//! A span baseline is kept exactly like a root one, behind the `span:` key space (see
//! [`Store::spans`]), so the recomputer, fallback levels, key listing and pruning work on it
//! unchanged. Two things differ, both in `ingest_spans.lua`:
//! - dedup is per span (trace ID + span ID): `seen:{traceID}` is a HASH of the trace's span IDs
//!   with one TTL, so a re-sent batch counts once and a trace costs one key, not one per span;
//! - the cardinality cap is per service (`spans.max_keys_per_service`), counted in
//!   `serviceKeys:{service}`, because span names explode per service (SQL, URLs with IDs) and
//!   one noisy service must not take the whole budget.

use std::sync::LazyLock;
use std::time::Duration;

use anomaly_core::{BaselineKey, DurationMs, TraceId};
use deadpool_redis::redis::Script;

use crate::ingest::{
    Caps, IngestOutcome, ItemOutcome, Keep, SKIP_WINDOW, Sample, sample_value, to_micros,
};
use crate::{Store, StoreError};

/// Spans per script call (as `ingest::CHUNK` for traces).
const CHUNK: usize = 256;

static INGEST_SPANS: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("ingest_spans.lua")));

/// One span sample to store; `key` names the span (service, span name, hour, dayType).
#[derive(Debug, Clone)]
pub struct SpanItem {
    pub trace_id: TraceId,
    /// The span ID's 8 bytes, big-endian.
    pub span_id: u64,
    pub key: BaselineKey,
    pub duration: DurationMs,
    /// When the span started (unix ms), for the anomaly feed; not stored in the window.
    pub start_ms: i64,
}

/// How span windows are kept.
#[derive(Debug, Clone, Copy)]
pub struct SpanSettings {
    pub window_size: u32,
    pub dedup_ttl: Duration,
    /// Windows untouched this long expire; zero keeps them forever.
    pub retention: Duration,
    /// At most this many span keys per service; zero means no cap.
    pub max_keys_per_service: u64,
}

impl Store {
    /// Stores span samples in the span key space (whichever store it is called on). As
    /// [`Store::ingest_detailed`]: either every span was handled or an error is returned, a
    /// retry is safe, the answer says what happened to each span, in order, and a span whose
    /// `skip_window` entry is true is marked seen but kept out of its window.
    pub async fn ingest_spans(
        &self,
        items: &[SpanItem],
        settings: &SpanSettings,
        skip_window: &[bool],
    ) -> Result<(IngestOutcome, Vec<ItemOutcome>), StoreError> {
        if items.is_empty() {
            return Ok((IngestOutcome::default(), Vec::new()));
        }
        let keys = self.keys.spans();
        let ttl_ms = settings.dedup_ttl.as_millis().max(1) as u64;
        let retention_ms = settings.retention.as_millis() as u64;
        if keys.is_cluster() {
            let samples = items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let body = item.key.encode();
                    Sample {
                        seen: keys.seen_in(&item.trace_id, &body),
                        trace_seen: None,
                        value: sample_value(item.duration, skip_window.get(i).copied()),
                        span: Some(format!("{:016x}", item.span_id)),
                        service: Some(body.split('|').next().unwrap_or_default().to_owned()),
                        body,
                    }
                })
                .collect();
            let caps = Caps {
                keys: 0,
                per_service: settings.max_keys_per_service,
            };
            let keep = Keep {
                ttl_ms,
                window_size: settings.window_size,
                retention_ms,
            };
            return self
                .spans()
                .ingest_sharded("ingest_spans", samples, keep, caps)
                .await;
        }
        let invocations: Vec<_> = items
            .chunks(CHUNK)
            .enumerate()
            .map(|(c, chunk)| {
                let mut inv = INGEST_SPANS.prepare_invoke();
                inv.key(keys.dirty()).key(keys.key_index());
                inv.arg(ttl_ms)
                    .arg(settings.window_size)
                    .arg(retention_ms)
                    .arg(settings.max_keys_per_service);
                for (i, item) in chunk.iter().enumerate() {
                    let body = item.key.encode();
                    // The service's part of the body: names are encoded, so the first `|` ends
                    // it.
                    let service = body.split('|').next().unwrap_or_default();
                    inv.key(keys.seen(&item.trace_id))
                        .key(keys.dur(&body))
                        .key(keys.base(&body))
                        .key(keys.service_keys(service));
                    if skip_window.get(c * CHUNK + i).copied().unwrap_or(false) {
                        inv.arg(SKIP_WINDOW);
                    } else {
                        inv.arg(to_micros(item.duration));
                    }
                    inv.arg(&body).arg(format!("{:016x}", item.span_id));
                }
                inv
            })
            .collect();
        self.run_ingest_scripts("ingest_spans", invocations, items.len())
            .await
    }
}
