//! Key strings: every key of the layout is spelled here, once, and nowhere else in the
//! workspace. The store's operations build their keys through [`Keys`]; tests and tools see it
//! only through the `testing` feature (`Store::keys`), so they inspect the same names the store
//! writes instead of spelling them again.
//!
//! **Redis Cluster.** In mode `cluster` every script and multi-key command must touch one slot
//! ([`crate::conn`] splits plain pipelines itself). Two things change there, and only there:
//! - The coordination keys (`dirtyKeys`, `keyIndex`, `keyEndpoints`, `fbPending`, the
//!   recomputer's claims and heartbeats, the poller's lease and cursor, backfill progress and the
//!   span key space's `serviceKeys`) share the hash tag `{ctl}`: `<prefix>{ctl}:dirtyKeys`, so
//!   that claiming (SPOP into an in-flight set), handing back and the cap check stay atomic
//!   scripts. They are small and touched once per batch, not per trace.
//! - The dedup marker of a trace lives in the slot of the window it was stored in:
//!   `<prefix>seen:{<tag>}<traceID>`, where `<tag>` is a short string that hashes to the slot of
//!   `dur:{B}` (see [`slot_tag`]), so the marker, the push and the version bump are one script.
//!
//! Windows, baselines, fallback levels and the feed keep their names in every mode.

use std::sync::LazyLock;

use anomaly_core::TraceId;

use crate::conn::{SLOTS, slot_of};

/// Builds every Redis key behind one prefix. `body` is an encoded key
/// ([`anomaly_core::BaselineKey::encode`]).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    spans: bool,
    /// Mode `cluster`: coordination keys behind `{ctl}`, markers in their window's slot.
    cluster: bool,
}

/// The hash tag that puts every coordination key of a deployment in one cluster slot.
const CONTROL_TAG: &str = "{ctl}:";

/// For each cluster slot, the shortest string (of `0-9a-z`, shortest first) whose CRC16 lands in
/// it: a hash tag `{tag}` that puts a key in that slot, a few bytes instead of a whole body.
static SLOT_TAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut tags = vec![String::new(); SLOTS as usize];
    let mut missing = SLOTS as usize;
    let mut candidates: Vec<String> = vec![String::new()];
    while missing > 0 {
        let mut longer = Vec::with_capacity(candidates.len() * ALPHABET.len());
        for prefix in &candidates {
            for &c in ALPHABET {
                let mut tag = prefix.clone();
                tag.push(c as char);
                let slot = &mut tags[slot_of(tag.as_bytes()) as usize];
                if slot.is_empty() {
                    *slot = tag.clone();
                    missing -= 1;
                }
                longer.push(tag);
            }
        }
        candidates = longer;
    }
    tags
});

/// A hash tag (without braces) whose keys land in `slot`.
pub(crate) fn slot_tag(slot: u16) -> &'static str {
    &SLOT_TAGS[usize::from(slot % SLOTS)]
}

/// What the span key space adds to the prefix: span baselines keep the whole layout of root
/// baselines (windows, baselines, dirty set, indexes, fallback levels, recomputer claims) behind
/// it, so a root and a span of the same names never share a key.
const SPANS: &str = "span:";

impl Keys {
    pub(crate) fn new(prefix: &str, cluster: bool) -> Self {
        Keys {
            prefix: prefix.to_owned(),
            spans: false,
            cluster,
        }
    }

    /// Whether these are the names of mode `cluster` (see the module docs).
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// A coordination key: `<prefix><name>`, or `<prefix>{ctl}:<name>` in a cluster.
    fn control(&self, name: std::fmt::Arguments<'_>) -> String {
        if self.cluster {
            format!("{}{CONTROL_TAG}{name}", self.prefix)
        } else {
            format!("{}{name}", self.prefix)
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
            cluster: self.cluster,
        }
    }

    /// Whether these are the span key space's names.
    pub fn is_spans(&self) -> bool {
        self.spans
    }

    /// `serviceKeys:{service}`: the span key space's bodies of one service, for its cap
    /// (`spans.max_keys_per_service`); `service` is encoded as in bodies.
    pub fn service_keys(&self, service_body: &str) -> String {
        if self.cluster {
            self.control(format_args!("serviceKeys:{service_body}"))
        } else {
            format!("{}serviceKeys:{{{service_body}}}", self.prefix)
        }
    }

    /// `dur:{B}`: the window (LIST, newest first).
    pub fn dur(&self, body: &str) -> String {
        format!("{}dur:{{{body}}}", self.prefix)
    }

    /// A `SCAN MATCH` pattern of every window of this key space (the prefix's glob characters
    /// escaped), and how to take a body back out of a window's name.
    pub(crate) fn dur_pattern(&self) -> String {
        let mut escaped = String::with_capacity(self.prefix.len() + 8);
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                escaped.push('\\');
            }
            escaped.push(c);
        }
        format!("{escaped}dur:{{*}}")
    }

    /// The body `B` of a window's name `dur:{B}`, if it is one of this key space's.
    pub(crate) fn body_of_dur<'a>(&self, name: &'a str) -> Option<&'a str> {
        name.strip_prefix(self.prefix.as_str())?
            .strip_prefix("dur:{")?
            .strip_suffix('}')
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
        self.control(format_args!("fbPending"))
    }

    /// `fbLease:{service|endpoint}`: held by the recomputer that last computed the endpoint's
    /// fallback levels, for `recomputer.fallback_refresh` (see `recompute`).
    pub fn fallback_lease(&self, endpoint_body: &str) -> String {
        format!("{}fbLease:{{{endpoint_body}}}", self.prefix)
    }

    /// `dirtyKeys`: bodies awaiting recompute.
    pub fn dirty(&self) -> String {
        self.control(format_args!("dirtyKeys"))
    }

    /// `keyIndex`: every body with a window.
    pub fn key_index(&self) -> String {
        self.control(format_args!("keyIndex"))
    }

    /// `keyEndpoints`: every `service|endpoint` with windows, for the key listing (see
    /// `listing`).
    pub fn key_endpoints(&self) -> String {
        self.control(format_args!("keyEndpoints"))
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

    /// The dedup marker of a trace stored in the window of `body`: [`Keys::seen`], or in a
    /// cluster `seen:{<tag>}<traceID>` in the window's slot.
    pub fn seen_in(&self, trace: &TraceId, body: &str) -> String {
        if self.cluster {
            let tag = slot_tag(slot_of(self.dur(body).as_bytes()));
            format!("{}seen:{{{tag}}}{trace}", self.prefix)
        } else {
            self.seen(trace)
        }
    }

    /// A `SCAN MATCH` pattern of every dedup marker, for tests and benchmarks that count them.
    #[cfg(feature = "testing")]
    pub fn seen_pattern(&self) -> String {
        format!("{}seen:*", self.prefix)
    }

    /// `poller:lease`: the ingester replica that polls Tempo (see `poller`).
    pub fn poller_lease(&self) -> String {
        self.control(format_args!("poller:lease"))
    }

    /// `poller:cursor`: the end of the last window fully ingested.
    pub fn poller_cursor(&self) -> String {
        self.control(format_args!("poller:cursor"))
    }

    /// `backfill:{job}`: how far a backfill got.
    pub fn backfill(&self, job: &str) -> String {
        self.control(format_args!("backfill:{job}"))
    }

    /// `recomputer:workers`: every recomputer that claimed keys (see `recompute`).
    pub fn workers(&self) -> String {
        self.control(format_args!("recomputer:workers"))
    }

    /// `recomputer:alive:<worker>`: a worker's heartbeat.
    pub fn alive(&self, worker: &str) -> String {
        self.control(format_args!("recomputer:alive:{worker}"))
    }

    /// `recomputer:inflight:<worker>`: the bodies a worker claimed and has not committed.
    pub fn inflight(&self, worker: &str) -> String {
        self.control(format_args!("recomputer:inflight:{worker}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anomaly_core::{BaselineKey, DayType};

    #[test]
    fn layout_matches_the_contract() {
        let keys = Keys::new("prod:", false);
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

    #[test]
    fn every_slot_has_a_short_tag_that_lands_in_it() {
        for slot in 0..SLOTS {
            let tag = slot_tag(slot);
            assert!(!tag.is_empty() && tag.len() <= 4, "slot {slot}: {tag:?}");
            assert_eq!(slot_of(tag.as_bytes()), slot);
        }
    }

    #[test]
    fn in_a_cluster_scripts_touch_one_slot() {
        let keys = Keys::new("prod:", true);
        let body = BaselineKey::new("checkout", "POST /pay", 14, DayType::Weekday)
            .unwrap()
            .encode();
        let t = TraceId::parse("af7651916cd43dd8448eb211c80319c").unwrap();
        for keys in [keys.clone(), keys.spans()] {
            // The ingest script's keys.
            let window = slot_of(keys.dur(&body).as_bytes());
            assert_eq!(slot_of(keys.base(&body).as_bytes()), window);
            assert_eq!(slot_of(keys.seen_in(&t, &body).as_bytes()), window);
            assert!(keys.seen_in(&t, &body).ends_with(&t.to_string()));
            // The coordination keys (claims, hand-back, the cap, the poller).
            let control = slot_of(keys.dirty().as_bytes());
            for name in [
                keys.key_index(),
                keys.key_endpoints(),
                keys.fallback_pending(),
                keys.workers(),
                keys.alive("w1"),
                keys.inflight("w1"),
                keys.poller_lease(),
                keys.poller_cursor(),
                keys.backfill("b1"),
                keys.service_keys("checkout"),
            ] {
                assert_eq!(slot_of(name.as_bytes()), control, "{name}");
            }
        }
        assert_eq!(keys.dirty(), "prod:{ctl}:dirtyKeys");
        assert_eq!(keys.dur(&body), "prod:dur:{checkout|POST /pay|14|weekday}");
        // Standalone keeps the contract's names.
        let standalone = Keys::new("prod:", false);
        assert_eq!(standalone.seen_in(&t, &body), standalone.seen(&t));
    }
}
