//! Tempo's result cap: the `limit` Tempo really honours, learned from its answers.
//!
//! An operator's `query_frontend.search.max_result_limit` caps every search. Where the
//! query-frontend serves `GET /status/config` (its running configuration as YAML; a gateway
//! may not route it), the cap is read from there before the first search and every
//! [`RECHECK_AFTER`] ([`CapSource::Config`]): exact, so no answer needs checking. Otherwise
//! the searches find it, as Tempo enforces it in one of two ways (`adjustLimit` in Tempo's
//! `modules/frontend`):
//!
//! - **v2.6 and later** answer a larger `limit` with `400 limit 500 exceeds max limit 20`. The
//!   client reads the cap from that message, lowers its limit and asks again at once
//!   ([`CapSource::Rejected`]). Nothing was returned, so nothing was lost, and a Tempo that
//!   refuses does not cut: no answer is checked while such a cap is known.
//! - **v2.0 to v2.5** silently lower `limit` to the cap: asked for 500, Tempo returns at most 20
//!   traces, with no error and no flag, and "20 < 500" reads as a complete window. The fetcher
//!   finds such a cap by **checking suspect answers**: it ingests what came, then searches the
//!   window's two halves; if together they hold more traces than the whole did, Tempo cut the
//!   answer, and its size becomes the cap ([`CapSource::Clamped`]).
//!
//! # Which answers are suspect
//! Tempo returns `min(matches, cap)` traces (v2.0.1 sometimes a few more, when several shards
//! answer at once). So every answer's size is a lower bound on the cap, and an answer smaller
//! than the largest one seen so far (the *high-water mark*) cannot have been cut. An answer is
//! checked when it is at least the high-water mark (a first answer, a new high, or the ceiling
//! that a cap makes every busy window hit), or when it has the same size (2 or more) as the
//! answer just before it (a cap that appeared mid-run, below the old high-water mark, shows up
//! as the same size again and again). An answer of `limit` or more is truncated anyway and is
//! split, never checked; an answer of one trace is never checked (a `max_result_limit` of 1
//! would go unnoticed). In steady traffic a check is rare: it costs two extra searches when a
//! window sets a new high or repeats the previous size, and the halves of a check are not
//! checked in turn, so a check never costs more than two searches.
//!
//! # Nothing lost when a cap appears
//! Every slice that was taken as complete is remembered (the last [`HISTORY`] of them, with
//! its size). When a clamp is proven, the remembered slices whose size is the new cap (or up
//! to twice it: v2.0.1 overshoots when several shards answer) may have been cut as well: they
//! are searched again, split against the cap, before the next window. A larger answer was
//! not cut at this cap, so a long history of busy windows is not searched again. A cap that appears mid-run therefore loses nothing as long as it is proven
//! within the last [`HISTORY`] slices, and the traces found twice are deduplicated as always.
//!
//! # A cap that goes away
//! A learned cap is forgotten after [`RECHECK_AFTER`], so a raised `max_result_limit` is used
//! without a restart: the next search asks for `tempo.limit` again (v2.6+ answers 400 again
//! if the cap is still there; a clamp is proven again by the next check).
//!
//! The cap is logged once per value at WARN and exported as `anomaly_tempo_search_limit`.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;

/// How long a learned cap is trusted before `tempo.limit` is tried again.
pub const RECHECK_AFTER: Duration = Duration::from_secs(15 * 60);

/// How many complete slices are remembered, to search again when a clamp is proven.
pub const HISTORY: usize = 1024;

/// How the cap was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapSource {
    /// Tempo v2.6+ refused the limit with `limit N exceeds max limit CAP`.
    Rejected,
    /// Tempo v2.0 to v2.5 cut answers without saying so; splitting proved it.
    Clamped,
    /// Tempo's running configuration says so (`GET /status/config`).
    Config,
}

impl CapSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CapSource::Rejected => "rejected",
            CapSource::Clamped => "clamped",
            CapSource::Config => "config",
        }
    }
}

/// What to do with an answer of some size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `limit` or more traces: Tempo cut it; split the window.
    Truncated,
    /// Fewer than `limit`, but maybe cut at a cap Tempo did not admit: check by splitting.
    Suspect,
    /// Fewer than anything a cap could have cut it to: the window is complete.
    Complete,
}

/// A slice of a window that was taken as complete, with the size of Tempo's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    /// Unix seconds.
    pub start: u64,
    pub end: u64,
    pub returned: usize,
}

#[derive(Debug, Clone, Copy)]
struct Learned {
    cap: usize,
    source: CapSource,
    at: Instant,
}

#[derive(Debug, Default)]
struct State {
    learned: Option<Learned>,
    high_water: usize,
    last_returned: Option<usize>,
    history: VecDeque<Slice>,
    refetch: Vec<Slice>,
    /// Caps already logged at WARN, so each value is logged once.
    warned: BTreeSet<usize>,
    /// When `/status/config` was last asked for.
    config_read: Option<Instant>,
}

/// The search limit in force and what is known about Tempo's cap; cheap to clone, clones share
/// one state (the poller and the backfill of one process learn together).
#[derive(Debug, Clone)]
pub struct ResultCap {
    configured: usize,
    recheck_after: Duration,
    state: Arc<Mutex<State>>,
    gauge: Gauge,
}

impl ResultCap {
    /// Starts at `configured` (`tempo.limit`) and reports the limit in force on `gauge`.
    pub fn new(configured: usize, gauge: Gauge) -> Self {
        Self::with_recheck(configured, gauge, RECHECK_AFTER)
    }

    /// As [`ResultCap::new`], forgetting a learned cap after `recheck_after` (tests shorten it).
    pub fn with_recheck(configured: usize, gauge: Gauge, recheck_after: Duration) -> Self {
        let cap = ResultCap {
            configured,
            recheck_after,
            state: Arc::default(),
            gauge,
        };
        cap.enter(&mut cap.lock(), None);
        cap
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts `learned` (or, without one, `tempo.limit`) in force: what was known about answer
    /// sizes belongs to the old limit, and the gauge reports the new one.
    fn enter(&self, s: &mut State, learned: Option<Learned>) {
        s.learned = learned;
        s.high_water = 0;
        s.last_returned = None;
        let limit = learned.map_or(self.configured, |l| l.cap);
        self.gauge.set(i64::try_from(limit).unwrap_or(i64::MAX));
    }

    /// The limit to ask Tempo for: the learned cap, or `tempo.limit`. A cap older than
    /// [`RECHECK_AFTER`] is forgotten here.
    pub fn limit(&self) -> usize {
        let mut s = self.lock();
        if let Some(l) = s.learned
            && l.at.elapsed() >= self.recheck_after
        {
            tracing::info!(
                cap = l.cap,
                limit = self.configured,
                "asking tempo for tempo.limit again to see whether its result cap is still there"
            );
            self.enter(&mut s, None);
        }
        s.learned.map_or(self.configured, |l| l.cap)
    }

    /// The learned cap and how it was learned, if any.
    pub fn learned(&self) -> Option<(usize, CapSource)> {
        self.lock().learned.map(|l| (l.cap, l.source))
    }

    /// Lowers the limit to `cap`; returns whether it was lower than the limit in force (the
    /// same cap again only renews it). A proven clamp also queues the remembered slices it may
    /// have cut (see the module docs).
    pub fn lower(&self, cap: usize, source: CapSource) -> bool {
        let cap = cap.max(1);
        let mut s = self.lock();
        let current = s.learned.map_or(self.configured, |l| l.cap);
        if let Some(learned) = s.learned.as_mut()
            && cap == current
        {
            // The same cap again: it is still there, so trust it for another interval, and
            // prefer the exact sources (a refusal, the configuration) to a proven clamp.
            learned.at = Instant::now();
            if source != CapSource::Clamped {
                learned.source = source;
            }
            return false;
        }
        if cap >= current {
            return false;
        }
        let learned = Learned {
            cap,
            source,
            at: Instant::now(),
        };
        self.enter(&mut s, Some(learned));
        if source == CapSource::Clamped {
            // A cut answer holds the cap, or a few more when several shards answer at once
            // (v2.0.1 returned 10 for a limit of 5); a larger one was not cut at this cap.
            let (doubtful, kept): (Vec<Slice>, Vec<Slice>) = s
                .history
                .drain(..)
                .partition(|slice| (cap..=cap.saturating_mul(2)).contains(&slice.returned));
            s.history = kept.into();
            s.refetch.extend(doubtful);
        }
        let queued = s.refetch.len();
        if s.warned.insert(cap) {
            let how = match source {
                CapSource::Rejected => "tempo refused a larger limit",
                CapSource::Clamped => "tempo cut answers at this size without saying so",
                CapSource::Config => {
                    "tempo's /status/config sets query_frontend.search.max_result_limit"
                }
            };
            tracing::warn!(
                cap,
                limit = self.configured,
                source = source.as_str(),
                queued,
                "tempo returns at most {cap} traces per search, fewer than tempo.limit ({}): {how}; \
                 windows are split against the cap (raise query_frontend.search.max_result_limit \
                 or lower tempo.limit to it)",
                self.configured
            );
        } else {
            tracing::debug!(
                cap,
                source = source.as_str(),
                "tempo's result cap confirmed"
            );
        }
        true
    }

    /// Judges an answer of `returned` traces to a search that asked for `asked`, and records
    /// its size.
    pub fn judge(&self, returned: usize, asked: usize) -> Verdict {
        let limit = asked.min(self.limit());
        let mut s = self.lock();
        // A Tempo that refuses a larger limit (v2.6+) never cuts an answer silently, and a cap
        // read from its configuration is exact: asked for it, Tempo cuts nothing below it.
        let refuses = s
            .learned
            .is_some_and(|l| matches!(l.source, CapSource::Rejected | CapSource::Config));
        let verdict = if returned >= limit {
            Verdict::Truncated
        } else if !refuses
            && returned >= 2
            && (returned >= s.high_water || s.last_returned == Some(returned))
        {
            Verdict::Suspect
        } else {
            Verdict::Complete
        };
        s.high_water = s.high_water.max(returned);
        s.last_returned = Some(returned);
        verdict
    }

    /// Remembers a slice taken as complete, to search again if a clamp is proven later.
    pub fn remember(&self, slice: Slice) {
        if slice.returned == 0 {
            return;
        }
        let mut s = self.lock();
        if s.history.len() >= HISTORY {
            s.history.pop_front();
        }
        s.history.push_back(slice);
    }

    /// Whether Tempo's `/status/config` should be read now (first, then every recheck
    /// interval), and notes that it is.
    pub fn config_read_due(&self) -> bool {
        let mut s = self.lock();
        let due = s
            .config_read
            .is_none_or(|at| at.elapsed() >= self.recheck_after);
        if due {
            s.config_read = Some(Instant::now());
        }
        due
    }

    /// Takes the slices to search again.
    pub fn take_refetch(&self) -> Vec<Slice> {
        std::mem::take(&mut self.lock().refetch)
    }

    /// Puts back slices not searched again yet (the search failed).
    pub fn requeue(&self, slices: Vec<Slice>) {
        let mut s = self.lock();
        let mut slices = slices;
        slices.append(&mut s.refetch);
        s.refetch = slices;
    }
}

/// The cap in a Tempo v2.6+ refusal, `limit 500 exceeds max limit 20` (possibly behind a
/// prefix such as `adjust limit: `).
pub fn parse_rejection(body: &str) -> Option<usize> {
    const MARK: &str = "exceeds max limit ";
    let at = body.find(MARK)? + MARK.len();
    let digits: &str = &body[at..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok().filter(|&n: &usize| n > 0)
}

/// `query_frontend.search.max_result_limit` from the YAML of Tempo's `/status/config`;
/// `None` when the body is not that YAML, the key is absent, or it is 0 (no cap).
pub fn parse_status_config(yaml: &str) -> Option<usize> {
    use figment::Figment;
    use figment::providers::{Format, Yaml};
    Figment::from(Yaml::string(yaml))
        .extract_inner::<u64>("query_frontend.search.max_result_limit")
        .ok()
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_read_from_tempos_refusal() {
        for (body, want) in [
            ("limit 500 exceeds max limit 20", Some(20)),
            ("limit 300000 exceeds max limit 262144", Some(262_144)),
            ("adjust limit: limit 20 exceeds max limit 15", Some(15)),
            ("limit 500 exceeds max limit 20\n", Some(20)),
            ("limit 500 exceeds max limit 0", None),
            ("limit 500 exceeds max limit ", None),
            ("invalid limit: must be a positive number", None),
            ("limit 500 exceeds max limit 99999999999999999999999", None),
        ] {
            assert_eq!(parse_rejection(body), want, "{body:?}");
        }
    }

    fn cap() -> ResultCap {
        ResultCap::new(500, Gauge::default())
    }

    #[test]
    fn the_cap_is_read_from_tempos_running_configuration() {
        let config = |limit: &str| {
            format!(
                "target: all\nhttp_api_prefix: \"\"\nquery_frontend:\n    max_retries: 2\n    search:\n        concurrent_jobs: 1000\n        default_result_limit: 20\n        max_result_limit: {limit}\n        max_duration: 168h0m0s\n    trace_by_id:\n        query_shards: 50\n"
            )
        };
        assert_eq!(parse_status_config(&config("20")), Some(20));
        assert_eq!(parse_status_config(&config("262144")), Some(262_144));
        assert_eq!(parse_status_config(&config("0")), None, "0 is no cap");
        assert_eq!(
            parse_status_config("target: all\nquery_frontend:\n    max_retries: 2\n"),
            None
        );
        assert_eq!(parse_status_config("404 page not found"), None);
        assert_eq!(parse_status_config("<html>gateway</html>"), None);
        assert_eq!(parse_status_config(""), None);
    }

    #[test]
    fn answers_are_judged_against_the_limit_and_the_high_water_mark() {
        let c = cap();
        // (returned, verdict): the first answer sets the mark and is checked; smaller ones are
        // complete unless they repeat the one before; a new high or the mark itself is checked.
        for (returned, want) in [
            (0, Verdict::Complete),
            (40, Verdict::Suspect),
            (12, Verdict::Complete),
            (31, Verdict::Complete),
            (40, Verdict::Suspect),
            (55, Verdict::Suspect),
            (20, Verdict::Complete),
            (20, Verdict::Suspect),
            (1, Verdict::Complete),
            (1, Verdict::Complete),
            (2, Verdict::Complete),
            (2, Verdict::Suspect),
            (500, Verdict::Truncated),
            (503, Verdict::Truncated),
        ] {
            assert_eq!(c.judge(returned, 500), want, "{returned}");
        }
        assert_eq!(
            c.judge(30, 30),
            Verdict::Truncated,
            "against what was asked"
        );
    }

    #[test]
    fn a_proven_clamp_lowers_the_limit_and_queues_what_it_may_have_cut() {
        let gauge = Gauge::default();
        let c = ResultCap::new(500, gauge.clone());
        assert_eq!(gauge.get(), 500);
        for (start, returned) in [(0, 20), (10, 7), (20, 25), (30, 0), (40, 41), (50, 40)] {
            c.remember(Slice {
                start,
                end: start + 10,
                returned,
            });
        }
        assert!(c.lower(20, CapSource::Clamped));
        assert_eq!((c.limit(), gauge.get()), (20, 20));
        assert_eq!(c.learned(), Some((20, CapSource::Clamped)));
        let queued: Vec<u64> = c.take_refetch().iter().map(|s| s.start).collect();
        assert_eq!(
            queued,
            [0, 20, 50],
            "the slices that reached the cap, not far beyond it"
        );
        assert!(c.take_refetch().is_empty());
        assert!(!c.lower(30, CapSource::Clamped), "never raised by a proof");
        assert!(!c.lower(20, CapSource::Rejected));
        assert!(c.lower(15, CapSource::Rejected));
        assert!(c.take_refetch().is_empty(), "a refusal cut nothing");
        assert_eq!(
            c.judge(15, 500),
            Verdict::Truncated,
            "judged against the cap"
        );
        assert_eq!(
            c.judge(14, 15),
            Verdict::Complete,
            "a refusing tempo does not cut"
        );
        assert_eq!(c.judge(14, 15), Verdict::Complete);
    }

    #[test]
    fn a_learned_cap_is_forgotten_after_the_recheck_interval() {
        // An interval of zero has always passed: the next search asks for tempo.limit again.
        // (The other tests keep the default 15 minutes, which never passes while they run.)
        let gauge = Gauge::default();
        let c = ResultCap::with_recheck(500, gauge.clone(), Duration::ZERO);
        assert!(c.lower(20, CapSource::Rejected));
        assert_eq!(gauge.get(), 20);
        assert_eq!(
            (c.limit(), gauge.get()),
            (500, 500),
            "tempo.limit is asked for again"
        );
        assert_eq!(c.learned(), None);
        // Without the refusal known, an answer that could be a silent cut is checked again.
        assert_eq!(c.judge(19, 500), Verdict::Suspect);
        // A cap that is still there is learned again.
        assert!(c.lower(20, CapSource::Rejected));
        assert_eq!(c.learned(), Some((20, CapSource::Rejected)));
    }

    #[test]
    fn history_is_bounded() {
        let c = cap();
        for i in 0..(HISTORY as u64 + 10) {
            c.remember(Slice {
                start: i,
                end: i + 1,
                returned: 5,
            });
        }
        c.lower(5, CapSource::Clamped);
        let queued = c.take_refetch();
        assert_eq!(queued.len(), HISTORY);
        assert_eq!(queued[0].start, 10, "the oldest are dropped");
    }
}
