//! Key strings: every key of the layout is spelled here, once, and nowhere else in the
//! workspace. The store's operations build their keys through [`Keys`]; tests and tools see it
//! only through the `testing` feature (`Store::keys`), so they inspect the same names the store
//! writes instead of spelling them again.

use anomaly_core::TraceId;

/// Builds every Redis key behind one prefix. `body` is an encoded key
/// ([`anomaly_core::BaselineKey::encode`]).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    spans: bool,
}

/// What the span key space adds to the prefix: span baselines keep the whole layout of root
/// baselines (windows, baselines, dirty set, indexes, fallback levels, recomputer claims) behind
/// it, so a root and a span of the same names never share a key.
const SPANS: &str = "span:";

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
            spans: false,
        }
    }

    /// The span key space: every name behind `{prefix}span:`.
    pub(crate) fn spans(&self) -> Self {
        if self.spans {
            return self.clone();
        }
        Keys {
            prefix: format!("{}{SPANS}", self.prefix),
            spans: true,
        }
    }

    /// Whether these are the span key space's names.
    pub fn is_spans(&self) -> bool {
        self.spans
    }

    /// `serviceKeys:{service}`: the span key space's bodies of one service, for its cap
    /// (`spans.max_keys_per_service`); `service` is encoded as in bodies.
    pub fn service_keys(&self, service_body: &str) -> String {
        format!("{}serviceKeys:{{{service_body}}}", self.prefix)
    }

    /// `dur:{B}`: the window (LIST, newest first).
    pub fn dur(&self, body: &str) -> String {
        format!("{}dur:{{{body}}}", self.prefix)
    }

    /// `base:{B}`: the baseline hash, and field `v`, the window's write count.
    pub fn base(&self, body: &str) -> String {
        format!("{}base:{{{body}}}", self.prefix)
    }

    /// `fb:{service|endpoint}`: the endpoint's fallback levels (HASH: `dayType:<d>`, `all`,
    /// and `nearby:<d>:<h>` for each thin bucket; see `recompute`).
    pub fn fallback(&self, endpoint_body: &str) -> String {
        format!("{}fb:{{{endpoint_body}}}", self.prefix)
    }

    /// `fbPending`: endpoints whose fallback levels were not due when their samples arrived
    /// (ZSET, a key body of the endpoint scored with the time it is due, unix ms).
    pub fn fallback_pending(&self) -> String {
        format!("{}fbPending", self.prefix)
    }

    /// `fbLease:{service|endpoint}`: held by the recomputer that last computed the endpoint's
    /// fallback levels, for `recomputer.fallback_refresh` (see `recompute`).
    pub fn fallback_lease(&self, endpoint_body: &str) -> String {
        format!("{}fbLease:{{{endpoint_body}}}", self.prefix)
    }

    /// `dirtyKeys`: bodies awaiting recompute.
    pub fn dirty(&self) -> String {
        format!("{}dirtyKeys", self.prefix)
    }

    /// `keyIndex`: every body with a window.
    pub fn key_index(&self) -> String {
        format!("{}keyIndex", self.prefix)
    }

    /// `keyEndpoints`: every `service|endpoint` with windows, for the key listing (see
    /// `listing`).
    pub fn key_endpoints(&self) -> String {
        format!("{}keyEndpoints", self.prefix)
    }

    /// `anomalies`: the anomaly feed (STREAM; see `feed`). Roots and spans share it: the span
    /// key space names the same key.
    pub fn anomalies(&self) -> String {
        let prefix = if self.spans {
            self.prefix.strip_suffix(SPANS).unwrap_or(&self.prefix)
        } else {
            &self.prefix
        };
        format!("{prefix}anomalies")
    }

    /// `seen:{traceID}`: the dedup marker of a trace; in the span key space a HASH whose fields
    /// are the trace's span IDs already stored (one key, and one TTL, per trace).
    pub fn seen(&self, trace: &TraceId) -> String {
        format!("{}seen:{{{trace}}}", self.prefix)
    }

    /// A `SCAN MATCH` pattern of every dedup marker, for tests and benchmarks that count them.
    #[cfg(feature = "testing")]
    pub fn seen_pattern(&self) -> String {
        format!("{}seen:*", self.prefix)
    }

    /// `poller:lease`: the ingester replica that polls Tempo (see `poller`).
    pub fn poller_lease(&self) -> String {
        format!("{}poller:lease", self.prefix)
    }

    /// `poller:cursor`: the end of the last window fully ingested.
    pub fn poller_cursor(&self) -> String {
        format!("{}poller:cursor", self.prefix)
    }

    /// `backfill:{job}`: how far a backfill got.
    pub fn backfill(&self, job: &str) -> String {
        format!("{}backfill:{job}", self.prefix)
    }

    /// `recomputer:workers`: every recomputer that claimed keys (see `recompute`).
    pub fn workers(&self) -> String {
        format!("{}recomputer:workers", self.prefix)
    }

    /// `recomputer:alive:<worker>`: a worker's heartbeat.
    pub fn alive(&self, worker: &str) -> String {
        format!("{}recomputer:alive:{worker}", self.prefix)
    }

    /// `recomputer:inflight:<worker>`: the bodies a worker claimed and has not committed.
    pub fn inflight(&self, worker: &str) -> String {
        format!("{}recomputer:inflight:{worker}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anomaly_core::{BaselineKey, DayType};

    #[test]
    fn layout_matches_the_contract() {
        let keys = Keys::new("prod:");
        let k = BaselineKey::new("checkout", "POST /pay", 14, DayType::Weekday).unwrap();
        let t = TraceId::parse("AF7651916cd43dd8448eb211c80319c").unwrap();
        let cases = [
            (
                keys.dur(&k.encode()),
                "prod:dur:{checkout|POST /pay|14|weekday}",
            ),
            (
                keys.base(&k.encode()),
                "prod:base:{checkout|POST /pay|14|weekday}",
            ),
            (keys.dirty(), "prod:dirtyKeys"),
            (
                keys.fallback(&k.endpoint_body()),
                "prod:fb:{checkout|POST /pay}",
            ),
            (
                keys.fallback_lease(&k.endpoint_body()),
                "prod:fbLease:{checkout|POST /pay}",
            ),
            (keys.fallback_pending(), "prod:fbPending"),
            (keys.key_index(), "prod:keyIndex"),
            (keys.key_endpoints(), "prod:keyEndpoints"),
            (keys.anomalies(), "prod:anomalies"),
            (keys.spans().anomalies(), "prod:anomalies"),
            (
                keys.seen(&t),
                "prod:seen:{0af7651916cd43dd8448eb211c80319c}",
            ),
            (keys.poller_lease(), "prod:poller:lease"),
            (keys.poller_cursor(), "prod:poller:cursor"),
            (keys.backfill("b1"), "prod:backfill:b1"),
            (keys.workers(), "prod:recomputer:workers"),
            (keys.alive("w1"), "prod:recomputer:alive:w1"),
            (keys.inflight("w1"), "prod:recomputer:inflight:w1"),
            (
                keys.spans().dur(&k.encode()),
                "prod:span:dur:{checkout|POST /pay|14|weekday}",
            ),
            (
                keys.spans().spans().base(&k.encode()),
                "prod:span:base:{checkout|POST /pay|14|weekday}",
            ),
            (keys.spans().dirty(), "prod:span:dirtyKeys"),
            (
                keys.spans().service_keys("checkout"),
                "prod:span:serviceKeys:{checkout}",
            ),
            (
                keys.spans().seen(&t),
                "prod:span:seen:{0af7651916cd43dd8448eb211c80319c}",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }
}
