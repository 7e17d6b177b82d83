//! The structural half of a trace analysis: which span is behind a slow trace.
//!
//! The caller hands in the spans of one trace ([`SpanInput`]), [`Structure::build`] turns them
//! into a tree with self times and a critical path, the caller judges every span against its
//! own baseline ([`Judged`]), and [`Structure::culprits`] and [`Structure::sentence`] name the
//! spans that explain the slowness. Everything here is pure: no I/O, no clock.
//!
//! # Semantics
//!
//! Spans are addressed by their index in the input slice; every result speaks in those indices.
//! A span whose end is before its start is treated as lasting 0 ns (it ends at its start).
//!
//! - **Self time** of a span is its duration minus the *union* of its children's intervals,
//!   each clipped to the span's own interval: parallel children are not subtracted twice, and a
//!   child that runs past its parent's end only counts inside the parent.
//! - **Critical path** is a backward walk in the manner of Jaeger's critical-path view. It
//!   starts at a root's end with the current point `p` there. Every child is first clipped to
//!   its parent's (already clipped) interval. Among the children that start before `p`, each
//!   further clipped to end no later than `p`, take the one that ends last (ties: the one that
//!   started first). The parent owns the gap between that child's end and `p`; the walk
//!   descends into the child for its clipped interval, and then continues in the parent from
//!   the child's start. When no child starts before `p`, the parent owns the rest of its
//!   interval down to its start.
//!
//!   This differs from Jaeger's walk in one place, on purpose: Jaeger only considers children
//!   that *end* before `p`, so a child still running at `p` (in parallel with the one just
//!   walked) is skipped and its running time is charged to the parent. Here such a child is
//!   taken, cut off at `p`. The result is that a span only ever owns time during which none of
//!   its children ran, so an ancestor is never blamed for time a child was working, and
//!   `critical_ns(i) <= self_time_ns(i)` always holds. When children do not overlap the point
//!   where the walk returns, both walks give the same segments.
//!
//!   The segments of one root tile that root's interval exactly: their lengths sum to the
//!   root's duration. A span is *on the critical path* when it owns a non-empty segment;
//!   [`Structure::critical_ns`] is the total length it owns.
//! - **Roots**: a span with no parent id (or parent id 0) is a true root. A span whose parent
//!   id is not in the trace (a partial trace) is an *orphan* and becomes a root too, as does
//!   every span on a parent cycle (`a -> b -> a`, or a span that is its own parent): the cycle's
//!   links are cut and reported. Each root's subtree gets its own critical path. The *main*
//!   root is the longest true root, or the longest orphan when there is no true root.
//! - **Duplicates**: when several spans share a span id the first keeps it; the others are
//!   reported and left out of the tree altogether (no parent, no children, no time).
//! - **Culprit**: a span judged anomalous *and* on the critical path. It contributes
//!   `min(duration - threshold, critical time)`: an ancestor slow only because of its slow child
//!   contributes its own critical time, so the slow leaf ranks first. Culprits are ranked by
//!   that contribution (descending), ties deeper first, and those contributing nothing are
//!   dropped. A root is treated like any other span.
//!
//! Everything is iterative and O(n log n), so a hostile 100 000-span chain neither overflows
//! the stack nor takes long.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt::Write as _;

use crate::rule::{num, round3};

/// One span of a trace, as the analysis needs it. Strings are borrowed from the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanInput<'a> {
    /// The span id, its 8 bytes read big-endian.
    pub span_id: u64,
    /// The parent's span id; `None` or `Some(0)` for a root.
    pub parent_id: Option<u64>,
    pub start_ns: u64,
    /// Before `start_ns` means the span lasted 0 ns.
    pub end_ns: u64,
    pub service: &'a str,
    pub name: &'a str,
}

/// A stretch of the critical path owned by one span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Index of the span in the input.
    pub span: usize,
    pub start_ns: u64,
    pub end_ns: u64,
}

impl Segment {
    pub fn len_ns(&self) -> u64 {
        self.end_ns - self.start_ns
    }
}

/// A parent id that spans refer to but no span in the trace has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingParent {
    pub parent_id: u64,
    /// The spans naming it as their parent, in input order. Each is an orphan root.
    pub spans: Vec<usize>,
}

/// A span id used by more than one span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    pub span_id: u64,
    /// The first span with this id, the one in the tree.
    pub kept: usize,
    /// The later ones, in input order, left out of the tree.
    pub dropped: Vec<usize>,
}

/// How a span's baseline judged it, as the caller decided (one per input span).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judged {
    /// `None` when the span has no baseline or too few samples to judge.
    pub threshold_ms: Option<f64>,
    pub is_anomaly: bool,
}

/// A span that explains part of a slow trace. Figures are rounded to three decimals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Culprit {
    /// Index of the span in the input.
    pub span: usize,
    /// The root whose critical path it is on.
    pub root: usize,
    /// What it contributes: `min(duration_ms - threshold_ms, critical_ms)`, always > 0.
    pub excess_ms: f64,
    pub duration_ms: f64,
    pub threshold_ms: f64,
    /// The time it owns on the critical path.
    pub critical_ms: f64,
}

/// The tree of one trace with self times and critical paths, built by [`Structure::build`].
#[derive(Debug, Clone)]
pub struct Structure {
    start: Vec<u64>,
    /// Never before `start`.
    end: Vec<u64>,
    kept: Vec<bool>,
    parent: Vec<Option<usize>>,
    /// Children of span `i` are `child_list[child_offset[i]..child_offset[i + 1]]`.
    child_offset: Vec<usize>,
    child_list: Vec<usize>,
    depth: Vec<usize>,
    root_of: Vec<Option<usize>>,
    self_time: Vec<u64>,
    critical: Vec<u64>,
    roots: Vec<usize>,
    orphan: Vec<bool>,
    /// All roots' critical paths, one after the other in `roots` order.
    segments: Vec<Segment>,
    /// The range of `segments` for `roots[k]`.
    path_ranges: Vec<(usize, usize)>,
    missing: Vec<MissingParent>,
    duplicates: Vec<Duplicate>,
    cycles: Vec<Vec<usize>>,
}

impl Structure {
    /// Builds the tree, self times and critical paths. Never fails and never panics: whatever
    /// is wrong with the input is repaired as the module docs say and reported.
    pub fn build(spans: &[SpanInput<'_>]) -> Self {
        let n = spans.len();
        let start: Vec<u64> = spans.iter().map(|s| s.start_ns).collect();
        let end: Vec<u64> = spans.iter().map(|s| s.end_ns.max(s.start_ns)).collect();

        // Span ids: the first span with an id keeps it.
        let mut by_id: HashMap<u64, usize> = HashMap::with_capacity(n);
        let mut kept = vec![true; n];
        let mut duplicates: Vec<Duplicate> = Vec::new();
        let mut duplicate_at: HashMap<u64, usize> = HashMap::new();
        for (i, s) in spans.iter().enumerate() {
            match by_id.entry(s.span_id) {
                Entry::Vacant(v) => {
                    v.insert(i);
                }
                Entry::Occupied(o) => {
                    kept[i] = false;
                    let at = *duplicate_at.entry(s.span_id).or_insert_with(|| {
                        duplicates.push(Duplicate {
                            span_id: s.span_id,
                            kept: *o.get(),
                            dropped: Vec::new(),
                        });
                        duplicates.len() - 1
                    });
                    duplicates[at].dropped.push(i);
                }
            }
        }

        // Parents by index; an unknown parent id makes an orphan.
        let mut parent: Vec<Option<usize>> = vec![None; n];
        let mut orphan = vec![false; n];
        let mut missing: Vec<MissingParent> = Vec::new();
        let mut missing_at: HashMap<u64, usize> = HashMap::new();
        for (i, s) in spans.iter().enumerate() {
            let Some(pid) = s.parent_id.filter(|&p| p != 0 && kept[i]) else {
                continue;
            };
            if let Some(&j) = by_id.get(&pid) {
                parent[i] = Some(j);
            } else {
                orphan[i] = true;
                let at = *missing_at.entry(pid).or_insert_with(|| {
                    missing.push(MissingParent {
                        parent_id: pid,
                        spans: Vec::new(),
                    });
                    missing.len() - 1
                });
                missing[at].spans.push(i);
            }
        }

        let cycles = cut_cycles(&mut parent, &mut orphan);

        // Children, ordered by start time (then end, then input order).
        let mut child_offset = vec![0usize; n + 1];
        for p in parent.iter().flatten() {
            child_offset[p + 1] += 1;
        }
        for i in 0..n {
            child_offset[i + 1] += child_offset[i];
        }
        let mut fill = child_offset.clone();
        let mut child_list = vec![0usize; child_offset[n]];
        for (i, p) in parent.iter().enumerate() {
            if let Some(p) = *p {
                child_list[fill[p]] = i;
                fill[p] += 1;
            }
        }
        for i in 0..n {
            child_list[child_offset[i]..child_offset[i + 1]]
                .sort_unstable_by_key(|&c| (start[c], end[c], c));
        }

        // Roots: true roots first, longest first; then orphans, longest first.
        let mut roots: Vec<usize> = (0..n).filter(|&i| kept[i] && parent[i].is_none()).collect();
        roots.sort_unstable_by_key(|&i| {
            (orphan[i], std::cmp::Reverse(end[i] - start[i]), start[i], i)
        });

        let mut s = Structure {
            start,
            end,
            kept,
            parent,
            child_offset,
            child_list,
            depth: vec![0; n],
            root_of: vec![None; n],
            self_time: vec![0; n],
            critical: vec![0; n],
            roots,
            orphan,
            segments: Vec::new(),
            path_ranges: Vec::new(),
            missing,
            duplicates,
            cycles,
        };
        s.fill_depths();
        s.fill_self_times();
        s.fill_critical_paths();
        s
    }

    /// Number of input spans (kept or not).
    pub fn len(&self) -> usize {
        self.start.len()
    }

    pub fn is_empty(&self) -> bool {
        self.start.is_empty()
    }

    /// The span the trace is about: the longest true root, else the longest orphan; `None` for
    /// an empty trace.
    pub fn main_root(&self) -> Option<usize> {
        self.roots.first().copied()
    }

    /// Spans with no parent in the tree: true roots first (longest first), then orphans
    /// (longest first).
    pub fn roots(&self) -> &[usize] {
        &self.roots
    }

    /// Whether span `i` is a root only because its parent is missing or on a cycle.
    pub fn is_orphan(&self, i: usize) -> bool {
        self.orphan.get(i).copied().unwrap_or(false)
    }

    /// False for a span left out because an earlier span has its id.
    pub fn is_kept(&self, i: usize) -> bool {
        self.kept.get(i).copied().unwrap_or(false)
    }

    pub fn parent(&self, i: usize) -> Option<usize> {
        self.parent.get(i).copied().flatten()
    }

    /// Children of span `i`, ordered by start time.
    pub fn children(&self, i: usize) -> &[usize] {
        if i >= self.len() {
            return &[];
        }
        &self.child_list[self.child_offset[i]..self.child_offset[i + 1]]
    }

    /// Distance from the span's root (0 for a root and for a dropped duplicate).
    pub fn depth(&self, i: usize) -> usize {
        self.depth.get(i).copied().unwrap_or(0)
    }

    /// The root of span `i`'s tree; `None` for a dropped duplicate.
    pub fn root_of(&self, i: usize) -> Option<usize> {
        self.root_of.get(i).copied().flatten()
    }

    /// Duration, 0 when the span ends before it starts.
    pub fn duration_ns(&self, i: usize) -> u64 {
        match (self.start.get(i), self.end.get(i)) {
            (Some(s), Some(e)) => e - s,
            _ => 0,
        }
    }

    /// Duration minus the union of the children's intervals clipped to the span's own.
    pub fn self_time_ns(&self, i: usize) -> u64 {
        self.self_time.get(i).copied().unwrap_or(0)
    }

    /// Time span `i` owns on its root's critical path.
    pub fn critical_ns(&self, i: usize) -> u64 {
        self.critical.get(i).copied().unwrap_or(0)
    }

    pub fn on_critical_path(&self, i: usize) -> bool {
        self.critical_ns(i) > 0
    }

    /// The main root's critical path in time order (empty for an empty trace).
    pub fn critical_path(&self) -> &[Segment] {
        self.main_root()
            .map_or(&[], |root| self.critical_path_of(root))
    }

    /// The critical path of root `root` in time order; empty if `root` is not a root.
    pub fn critical_path_of(&self, root: usize) -> &[Segment] {
        match self.roots.iter().position(|&r| r == root) {
            Some(k) => {
                let (a, b) = self.path_ranges[k];
                &self.segments[a..b]
            }
            None => &[],
        }
    }

    /// Parent ids referenced but not present, in order of first reference.
    pub fn missing_parents(&self) -> &[MissingParent] {
        &self.missing
    }

    /// Span ids used more than once, in order of the first duplicate.
    pub fn duplicates(&self) -> &[Duplicate] {
        &self.duplicates
    }

    /// Parent cycles that were cut, each as its spans in ascending index order; a span that
    /// is its own parent is a cycle of one.
    pub fn cycles(&self) -> &[Vec<usize>] {
        &self.cycles
    }

    /// The spans that explain the slowness, ranked (see the module docs). `judged[i]` belongs
    /// to span `i`; a missing entry counts as not judged.
    pub fn culprits(&self, judged: &[Judged]) -> Vec<Culprit> {
        let mut out: Vec<Culprit> = Vec::new();
        for (i, j) in judged.iter().enumerate().take(self.len()) {
            let (true, Some(threshold), Some(root)) =
                (j.is_anomaly, j.threshold_ms, self.root_of(i))
            else {
                continue;
            };
            if !self.on_critical_path(i) || !threshold.is_finite() {
                continue;
            }
            let duration_ms = ns_to_ms(self.duration_ns(i));
            let critical_ms = ns_to_ms(self.critical_ns(i));
            let excess_ms = round3((duration_ms - threshold).min(critical_ms));
            if excess_ms > 0.0 {
                out.push(Culprit {
                    span: i,
                    root,
                    excess_ms,
                    duration_ms: round3(duration_ms),
                    threshold_ms: round3(threshold),
                    critical_ms: round3(critical_ms),
                });
            }
        }
        out.sort_by(|a, b| {
            b.excess_ms
                .total_cmp(&a.excess_ms)
                .then(self.depth(b.span).cmp(&self.depth(a.span)))
                .then(a.span.cmp(&b.span))
        });
        out
    }

    /// One sentence about the main root and the top culprit below it on its critical path
    /// (the root's own share is in the culprit list, but naming the root as the reason for
    /// its own slowness would explain nothing), e.g.
    /// "POST /pay took 1840 ms (threshold 420 ms); 1310 ms of the excess is in db SELECT orders
    /// (1400 ms, threshold 90 ms, on the critical path)". `culprits` is what
    /// [`Structure::culprits`] returned.
    pub fn sentence(
        &self,
        spans: &[SpanInput<'_>],
        judged: &[Judged],
        culprits: &[Culprit],
    ) -> String {
        let Some(root) = self.main_root().filter(|&r| r < spans.len()) else {
            return "the trace has no spans".to_owned();
        };
        let d = ms(ns_to_ms(self.duration_ns(root)));
        let name = spans[root].name;
        let top = culprits
            .iter()
            .find(|c| c.root == root && c.span != root && c.span < spans.len());
        let label = |c: &Culprit| format!("{} {}", spans[c.span].service, spans[c.span].name);
        let mut out = String::with_capacity(160);
        let judged_root = judged.get(root).copied();
        match judged_root.and_then(|j| j.threshold_ms.map(|t| (t, j.is_anomaly))) {
            None => {
                let _ = write!(out, "{name} took {d} and has no baseline to judge it by");
                if let Some(c) = top {
                    let _ = write!(
                        out,
                        "; on its critical path {} is {} over its threshold ({}, threshold {})",
                        label(c),
                        ms(c.excess_ms),
                        ms(c.duration_ms),
                        ms(c.threshold_ms)
                    );
                }
            }
            Some((threshold, true)) => {
                let _ = write!(out, "{name} took {d} (threshold {})", ms(threshold));
                let root_excess = ns_to_ms(self.duration_ns(root)) - threshold;
                match top {
                    Some(c) if c.excess_ms <= round3(root_excess) => {
                        let _ = write!(
                            out,
                            "; {} of the excess is in {} ({}, threshold {}, on the critical path)",
                            ms(c.excess_ms),
                            label(c),
                            ms(c.duration_ms),
                            ms(c.threshold_ms)
                        );
                    }
                    // The culprit is further over its own threshold than the whole trace is
                    // over the root's: "N ms of the excess" would overstate it.
                    Some(c) => {
                        let _ = write!(
                            out,
                            "; the excess is in {}, {} over its threshold ({}, threshold {}, on \
                             the critical path)",
                            label(c),
                            ms(c.excess_ms),
                            ms(c.duration_ms),
                            ms(c.threshold_ms)
                        );
                    }
                    None => out.push_str(
                        "; no single span on the critical path explains it: none below the \
                         root is over its own threshold",
                    ),
                }
            }
            Some((threshold, false)) => {
                let _ = write!(
                    out,
                    "{name} took {d}, within its threshold {}",
                    ms(threshold)
                );
                if let Some(c) = top {
                    let _ = write!(
                        out,
                        "; on its critical path {} is {} over its threshold ({}, threshold {})",
                        label(c),
                        ms(c.excess_ms),
                        ms(c.duration_ms),
                        ms(c.threshold_ms)
                    );
                }
            }
        }
        out
    }

    /// Depths and roots, breadth first from every root (no recursion).
    fn fill_depths(&mut self) {
        let mut queue: Vec<usize> = Vec::with_capacity(self.len());
        for &r in &self.roots {
            self.root_of[r] = Some(r);
            queue.push(r);
        }
        let mut next = 0;
        while let Some(&i) = queue.get(next) {
            next += 1;
            let (a, b) = (self.child_offset[i], self.child_offset[i + 1]);
            for k in a..b {
                let c = self.child_list[k];
                self.depth[c] = self.depth[i] + 1;
                self.root_of[c] = self.root_of[i];
                queue.push(c);
            }
        }
    }

    fn fill_self_times(&mut self) {
        for i in 0..self.len() {
            if !self.kept[i] {
                continue;
            }
            let (lo, hi) = (self.start[i], self.end[i]);
            // Children are sorted by start, so clipped starts are sorted too: one sweep.
            let mut covered = 0u64;
            let mut reach = lo;
            for &c in self.children(i) {
                let cs = self.start[c].clamp(lo, hi).max(reach);
                let ce = self.end[c].clamp(lo, hi);
                if ce > cs {
                    covered += ce - cs;
                    reach = ce;
                }
            }
            self.self_time[i] = (hi - lo) - covered;
        }
    }

    fn fill_critical_paths(&mut self) {
        let mut arena: Vec<Kid> = Vec::new();
        let mut stack: Vec<Frame> = Vec::new();
        let mut backwards: Vec<Segment> = Vec::new();
        for k in 0..self.roots.len() {
            let root = self.roots[k];
            backwards.clear();
            stack.push(self.frame(root, self.start[root], self.end[root], &mut arena));
            while let Some(top) = stack.last_mut() {
                if top.eligible == 0 {
                    if top.p > top.lo {
                        backwards.push(Segment {
                            span: top.span,
                            start_ns: top.lo,
                            end_ns: top.p,
                        });
                    }
                    arena.truncate(top.base);
                    stack.pop();
                    continue;
                }
                let kids = &arena[top.base..top.base + top.eligible];
                let target = kids[kids.len() - 1].reach.min(top.p);
                let t = kids.partition_point(|kid| kid.reach < target);
                let chosen = kids[t];
                if target < top.p {
                    backwards.push(Segment {
                        span: top.span,
                        start_ns: target,
                        end_ns: top.p,
                    });
                }
                top.p = chosen.start;
                // Only children starting before the new point stay eligible; `chosen` is not
                // among them, so every step shrinks the set and the walk ends.
                top.eligible = kids[..t].partition_point(|kid| kid.start < chosen.start);
                let frame = self.frame(chosen.span, chosen.start, target, &mut arena);
                stack.push(frame);
            }
            let first = self.segments.len();
            for seg in backwards.iter().rev() {
                self.critical[seg.span] += seg.len_ns();
                self.segments.push(*seg);
            }
            self.path_ranges.push((first, self.segments.len()));
        }
    }

    /// A walk frame for `span` over `[lo, hi]`, its non-empty clipped children pushed on
    /// `arena` in start order with the running maximum of their ends.
    fn frame(&self, span: usize, lo: u64, hi: u64, arena: &mut Vec<Kid>) -> Frame {
        let base = arena.len();
        let mut reach = 0u64;
        for &c in self.children(span) {
            let cs = self.start[c].clamp(lo, hi);
            let ce = self.end[c].clamp(lo, hi);
            if ce > cs {
                reach = reach.max(ce);
                arena.push(Kid {
                    span: c,
                    start: cs,
                    reach,
                });
            }
        }
        Frame {
            span,
            lo,
            p: hi,
            base,
            eligible: arena.len() - base,
        }
    }
}

/// A clipped child in a walk frame.
#[derive(Debug, Clone, Copy)]
struct Kid {
    span: usize,
    start: u64,
    /// The latest clipped end among this child and the ones before it in start order.
    reach: u64,
}

#[derive(Debug)]
struct Frame {
    span: usize,
    lo: u64,
    /// The current point of the backward walk.
    p: u64,
    /// Where this frame's children start in the arena.
    base: usize,
    /// How many of them (a prefix, by start) start before `p`.
    eligible: usize,
}

/// Finds the cycles of the parent relation, cuts them (their spans become orphan roots) and
/// returns them. Each span has at most one parent, so following parents from any span either
/// ends at a root or enters exactly one cycle; one pass with three colours finds them all.
fn cut_cycles(parent: &mut [Option<usize>], orphan: &mut [bool]) -> Vec<Vec<usize>> {
    const NEW: u8 = 0;
    const ON_PATH: u8 = 1;
    const DONE: u8 = 2;
    let n = parent.len();
    let mut state = vec![NEW; n];
    let mut pos = vec![0usize; n];
    let mut path: Vec<usize> = Vec::new();
    let mut cycles = Vec::new();
    for i in 0..n {
        if state[i] != NEW {
            continue;
        }
        path.clear();
        let mut at = Some(i);
        while let Some(x) = at {
            if state[x] != NEW {
                break;
            }
            state[x] = ON_PATH;
            pos[x] = path.len();
            path.push(x);
            at = parent[x];
        }
        if let Some(x) = at
            && state[x] == ON_PATH
        {
            let mut cycle = path[pos[x]..].to_vec();
            for &m in &cycle {
                parent[m] = None;
                orphan[m] = true;
            }
            cycle.sort_unstable();
            cycles.push(cycle);
        }
        for &x in &path {
            state[x] = DONE;
        }
    }
    cycles.sort_unstable();
    cycles
}

fn ns_to_ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn ms(x: f64) -> String {
    format!("{} ms", num(x))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MS: u64 = 1_000_000;

    fn span<'a>(
        id: u64,
        parent: Option<u64>,
        start_ms: u64,
        end_ms: u64,
        service: &'a str,
        name: &'a str,
    ) -> SpanInput<'a> {
        SpanInput {
            span_id: id,
            parent_id: parent,
            start_ns: start_ms * MS,
            end_ns: end_ms * MS,
            service,
            name,
        }
    }

    fn seg(span: usize, start_ms: u64, end_ms: u64) -> Segment {
        Segment {
            span,
            start_ns: start_ms * MS,
            end_ns: end_ms * MS,
        }
    }

    const A: usize = 0;
    const B: usize = 1;
    const C: usize = 2;
    const D: usize = 3;
    const E: usize = 4;
    const F: usize = 5;
    const G: usize = 6;
    const H: usize = 7;
    const I: usize = 8;

    /// A checkout: the root calls auth, then orders (which reads a cache, then loads from the
    /// database while an audit runs in parallel), charges in parallel with orders, and fires a
    /// notification that outlives the root. The database query three levels down is slow.
    fn pay() -> Vec<SpanInput<'static>> {
        vec![
            span(0xa, None, 0, 1840, "checkout", "POST /pay"), // A
            span(0xb, Some(0xa), 10, 100, "auth", "verify"),   // B
            span(0xc, Some(0xa), 100, 1700, "orders", "GET /orders"), // C
            span(0xd, Some(0xc), 110, 150, "orders", "cache get"), // D
            span(0xe, Some(0xc), 150, 1650, "orders", "load"), // E
            span(0xf, Some(0xe), 200, 1600, "db", "SELECT orders"), // F
            span(0x10, Some(0xc), 160, 400, "orders", "audit"), // G
            span(0x11, Some(0xa), 1750, 1900, "notify", "send"), // H
            span(0x12, Some(0xa), 1000, 1200, "payments", "charge"), // I
        ]
    }

    fn judged(threshold_ms: f64, is_anomaly: bool) -> Judged {
        Judged {
            threshold_ms: Some(threshold_ms),
            is_anomaly,
        }
    }

    const UNJUDGED: Judged = Judged {
        threshold_ms: None,
        is_anomaly: false,
    };

    fn pay_judged(root_threshold: f64) -> Vec<Judged> {
        vec![
            judged(root_threshold, true), // A: 1840 ms
            judged(120.0, false),         // B: 90 ms
            judged(400.0, true),          // C: 1600 ms
            judged(60.0, false),          // D: 40 ms
            judged(300.0, true),          // E: 1500 ms
            judged(90.0, true),           // F: 1400 ms
            judged(50.0, true),           // G: 240 ms, but off the critical path
            UNJUDGED,                     // H
            judged(100.0, true),          // I: 200 ms, but off the critical path
        ]
    }

    #[test]
    fn tree_self_times_and_depths() {
        let spans = pay();
        let s = Structure::build(&spans);
        assert_eq!(s.roots(), &[A]);
        assert_eq!(s.main_root(), Some(A));
        assert_eq!(s.children(A), &[B, C, I, H]);
        assert_eq!(s.children(C), &[D, E, G]);
        let depths: Vec<usize> = (0..spans.len()).map(|i| s.depth(i)).collect();
        assert_eq!(depths, [0, 1, 1, 2, 2, 3, 2, 1, 1]);
        // A: 1840 minus the union [10, 1700] + [1750, 1840] (H clipped, I inside C).
        // C: 1600 minus [110, 1650] (G runs alongside E and is not subtracted again).
        // H: its own 150 ms, though only 90 of them are inside A.
        let self_ms: Vec<u64> = (0..spans.len()).map(|i| s.self_time_ns(i) / MS).collect();
        assert_eq!(self_ms, [60, 90, 60, 40, 100, 1400, 240, 150, 200]);
        assert!(s.missing_parents().is_empty());
        assert!(s.duplicates().is_empty());
        assert!(s.cycles().is_empty());
    }

    #[test]
    fn critical_path_walks_back_from_the_root_end() {
        let s = Structure::build(&pay());
        assert_eq!(
            s.critical_path(),
            &[
                seg(A, 0, 10),
                seg(B, 10, 100),
                seg(C, 100, 110),
                seg(D, 110, 150),
                seg(E, 150, 200),
                seg(F, 200, 1600),
                seg(E, 1600, 1650),
                seg(C, 1650, 1700),
                seg(A, 1700, 1750),
                seg(H, 1750, 1840),
            ]
        );
        let critical_ms: Vec<u64> = (0..9).map(|i| s.critical_ns(i) / MS).collect();
        assert_eq!(critical_ms, [60, 90, 60, 40, 100, 1400, 0, 90, 0]);
        assert!(!s.on_critical_path(G));
        assert!(!s.on_critical_path(I));
        assert!(s.on_critical_path(H));
    }

    #[test]
    fn a_child_running_at_the_return_point_is_taken_not_charged_to_the_parent() {
        // P [0, 10] with Q [5, 10] and R [3, 7]: after Q the walk is at 5 while R still
        // runs; R owns [3, 5] (Jaeger's walk would give it to P).
        let spans = [
            span(1, None, 0, 10, "s", "P"),
            span(2, Some(1), 5, 10, "s", "Q"),
            span(3, Some(1), 3, 7, "s", "R"),
        ];
        let s = Structure::build(&spans);
        assert_eq!(
            s.critical_path(),
            &[seg(0, 0, 3), seg(2, 3, 5), seg(1, 5, 10)]
        );
        assert_eq!(s.self_time_ns(0), 3 * MS);
    }

    #[test]
    fn culprits_rank_the_deep_slow_span_first() {
        let s = Structure::build(&pay());
        let got = s.culprits(&pay_judged(420.0));
        let ranked: Vec<(usize, f64)> = got.iter().map(|c| (c.span, c.excess_ms)).collect();
        // F: 1400 - 90 = 1310 (it owns 1400 on the path). E and C are far over their
        // thresholds but only because of F: they contribute their own critical time. C and A
        // tie at 60 and the deeper C ranks first. G and I are slow but off the path.
        assert_eq!(ranked, [(F, 1310.0), (E, 100.0), (C, 60.0), (A, 60.0)]);
        assert_eq!(
            got[0],
            Culprit {
                span: F,
                root: A,
                excess_ms: 1310.0,
                duration_ms: 1400.0,
                threshold_ms: 90.0,
                critical_ms: 1400.0,
            }
        );
    }

    #[test]
    fn sentences() {
        let spans = pay();
        let s = Structure::build(&spans);
        let say = |judged: &[Judged]| s.sentence(&spans, judged, &s.culprits(judged));
        assert_eq!(
            say(&pay_judged(420.0)),
            "POST /pay took 1840 ms (threshold 420 ms); 1310 ms of the excess is in db SELECT \
             orders (1400 ms, threshold 90 ms, on the critical path)"
        );
        // The root is 1220 ms over, less than the 1310 ms the query is over its own.
        assert_eq!(
            say(&pay_judged(620.0)),
            "POST /pay took 1840 ms (threshold 620 ms); the excess is in db SELECT orders, 1310 \
             ms over its threshold (1400 ms, threshold 90 ms, on the critical path)"
        );
        let mut only_root = vec![judged(1.0, false); spans.len()];
        only_root[A] = judged(620.5, true);
        assert_eq!(
            say(&only_root),
            "POST /pay took 1840 ms (threshold 620.5 ms); no single span on the critical path \
             explains it: none below the root is over its own threshold"
        );
        // The root's own 60 ms outrank the query's 10 ms, but the sentence names the query.
        let mut slightly = vec![judged(1.0e6, false); spans.len()];
        slightly[A] = judged(620.0, true);
        slightly[F] = judged(1390.0, true);
        let ranked: Vec<usize> = s.culprits(&slightly).iter().map(|c| c.span).collect();
        assert_eq!(ranked, [A, F]);
        assert_eq!(
            say(&slightly),
            "POST /pay took 1840 ms (threshold 620 ms); 10 ms of the excess is in db SELECT \
             orders (1400 ms, threshold 1390 ms, on the critical path)"
        );
        let mut no_baseline = pay_judged(0.0);
        no_baseline[A] = UNJUDGED;
        assert_eq!(
            say(&no_baseline),
            "POST /pay took 1840 ms and has no baseline to judge it by; on its critical path db \
             SELECT orders is 1310 ms over its threshold (1400 ms, threshold 90 ms)"
        );
        let unjudged = vec![UNJUDGED; spans.len()];
        assert_eq!(
            say(&unjudged),
            "POST /pay took 1840 ms and has no baseline to judge it by"
        );
        let mut normal_root = pay_judged(0.0);
        normal_root[A] = judged(2000.0, false);
        assert_eq!(
            say(&normal_root),
            "POST /pay took 1840 ms, within its threshold 2000 ms; on its critical path db \
             SELECT orders is 1310 ms over its threshold (1400 ms, threshold 90 ms)"
        );
        assert_eq!(
            Structure::build(&[]).sentence(&[], &[], &[]),
            "the trace has no spans"
        );
    }

    #[test]
    fn a_normal_trace_has_no_culprit() {
        let spans = pay();
        let s = Structure::build(&spans);
        let mut normal: Vec<Judged> = (0..spans.len())
            .map(|i| judged((s.duration_ns(i) / MS) as f64 + 1.0, false))
            .collect();
        assert!(s.culprits(&normal).is_empty());
        assert_eq!(
            s.sentence(&spans, &normal, &[]),
            "POST /pay took 1840 ms, within its threshold 1841 ms"
        );
        // Flagged as anomalous yet within the threshold contributes nothing either.
        normal[F].is_anomaly = true;
        assert!(s.culprits(&normal).is_empty());
        // So does a judged list that is too short.
        assert!(s.culprits(&normal[..2]).is_empty());
    }

    #[test]
    fn a_partial_trace_reports_missing_parents_and_analyses_orphans() {
        let spans = [
            span(1, Some(99), 0, 100, "a", "x"),    // orphan of 99
            span(2, Some(1), 10, 90, "a", "x-kid"), // child of 1
            span(3, Some(99), 0, 300, "b", "z"),    // orphan of 99, the longest
            span(4, Some(77), 50, 60, "c", "w"),    // orphan of 77
        ];
        let s = Structure::build(&spans);
        assert_eq!(
            s.missing_parents(),
            &[
                MissingParent {
                    parent_id: 99,
                    spans: vec![0, 2],
                },
                MissingParent {
                    parent_id: 77,
                    spans: vec![3],
                },
            ]
        );
        assert_eq!(s.roots(), &[2, 0, 3]);
        assert_eq!(s.main_root(), Some(2));
        assert!(s.is_orphan(0) && s.is_orphan(2) && !s.is_orphan(1));
        assert_eq!(
            s.critical_path_of(0),
            &[seg(0, 0, 10), seg(1, 10, 90), seg(0, 90, 100)]
        );
        assert_eq!(s.critical_path(), &[seg(2, 0, 300)]);
        assert_eq!(s.critical_path_of(1), &[], "not a root");
        assert_eq!(s.root_of(1), Some(0));
        // A culprit under another orphan is listed but not used for the main root's sentence.
        let mut j = vec![UNJUDGED; 4];
        j[1] = judged(20.0, true);
        j[2] = judged(500.0, false);
        let culprits = s.culprits(&j);
        assert_eq!(culprits.len(), 1);
        assert_eq!((culprits[0].span, culprits[0].root), (1, 0));
        assert_eq!(
            s.sentence(&spans, &j, &culprits),
            "z took 300 ms, within its threshold 500 ms"
        );
    }

    #[test]
    fn cycles_and_self_parents_become_orphan_roots() {
        let spans = [
            span(1, Some(2), 0, 10, "s", "a"), // a -> b
            span(2, Some(1), 0, 20, "s", "b"), // b -> a
            span(3, Some(1), 2, 5, "s", "c"),  // child of a, not on the cycle
            span(4, Some(4), 0, 7, "s", "d"),  // its own parent
            span(5, None, 0, 4, "s", "root"),  // the only true root
            span(6, Some(3), 3, 4, "s", "e"),  // grandchild through c
        ];
        let s = Structure::build(&spans);
        assert_eq!(s.cycles(), &[vec![0, 1], vec![3]]);
        assert_eq!(s.roots(), &[4, 1, 0, 3]);
        assert_eq!(s.children(0), &[2]);
        assert_eq!(s.children(2), &[5]);
        assert_eq!(s.depth(5), 2);
        assert!(s.missing_parents().is_empty());
        assert_eq!(s.critical_ns(0), 7 * MS);
        assert_eq!(s.critical_ns(2), 2 * MS);
        assert_eq!(s.critical_ns(5), MS);
    }

    #[test]
    fn duplicate_ids_keep_the_first() {
        let spans = [
            span(1, None, 0, 100, "s", "root"),
            span(2, Some(1), 10, 50, "s", "first"),
            span(2, Some(1), 0, 100, "s", "second"),
            span(3, Some(2), 20, 30, "s", "kid"),
            span(2, None, 0, 1000, "s", "third"),
            span(4, Some(1), 60, 40, "s", "backwards"),
        ];
        let s = Structure::build(&spans);
        assert_eq!(
            s.duplicates(),
            &[Duplicate {
                span_id: 2,
                kept: 1,
                dropped: vec![2, 4],
            }]
        );
        assert_eq!(s.roots(), &[0]);
        assert!(!s.is_kept(2) && !s.is_kept(4));
        assert_eq!(s.root_of(2), None);
        assert_eq!(s.children(0), &[1, 5]);
        assert_eq!(s.children(1), &[3]);
        assert_eq!(s.duration_ns(5), 0);
        assert_eq!(s.self_time_ns(0), 60 * MS);
        assert_eq!(s.critical_ns(2), 0);
        let total: u64 = (0..spans.len()).map(|i| s.critical_ns(i)).sum();
        assert_eq!(total, 100 * MS);
    }

    #[test]
    fn a_100k_deep_chain_does_not_overflow_the_stack() {
        let n = 100_000u64;
        let spans: Vec<SpanInput<'_>> = (0..n)
            .map(|i| SpanInput {
                span_id: i + 1,
                parent_id: Some(i),
                start_ns: i,
                end_ns: 2 * n - i,
                service: "s",
                name: "deep",
            })
            .collect();
        let s = Structure::build(&spans);
        assert_eq!(s.roots(), &[0]);
        assert_eq!(s.depth(n as usize - 1), n as usize - 1);
        assert_eq!(s.critical_path().len(), 2 * n as usize - 1);
        let total: u64 = (0..spans.len()).map(|i| s.critical_ns(i)).sum();
        assert_eq!(total, 2 * n);
        // The same chain with a cycle closing it is cut, not walked forever.
        let mut looped = spans.clone();
        looped[0].parent_id = Some(n);
        let s = Structure::build(&looped);
        assert_eq!(s.cycles().len(), 1);
        assert_eq!(s.cycles()[0].len(), n as usize);
    }

    #[test]
    fn a_100k_wide_fan_is_walked_without_quadratic_work() {
        let n = 100_000u64;
        let mut spans = vec![SpanInput {
            span_id: 1,
            parent_id: None,
            start_ns: 0,
            end_ns: 3 * n,
            service: "s",
            name: "fan",
        }];
        // Staggered children that all overlap their neighbours.
        spans.extend((0..n).map(|i| SpanInput {
            span_id: i + 2,
            parent_id: Some(1),
            start_ns: n - i,
            end_ns: 2 * n - i,
            service: "s",
            name: "kid",
        }));
        let s = Structure::build(&spans);
        assert_eq!(s.children(0).len(), n as usize);
        // The root owns its head and tail, the child ending last [n, 2n] owns its whole
        // interval, and at n, where all the others still run, the walk takes the one that
        // started first, [1, n + 1], cut off at n: four segments, each step a binary search.
        assert_eq!(s.self_time_ns(0), 3 * n - (2 * n - 1));
        assert_eq!(s.critical_ns(0), s.self_time_ns(0));
        assert_eq!(s.critical_ns(1), n);
        assert_eq!(s.critical_ns(n as usize), n - 1);
        assert_eq!(s.critical_path().len(), 4);
        let total: u64 = (0..spans.len()).map(|i| s.critical_ns(i)).sum();
        assert_eq!(total, 3 * n);
        // Back to back with gaps, every child is on the path: 100 000 steps of the walk.
        spans[0].end_ns = 2 * n + 1;
        for (i, kid) in spans[1..].iter_mut().enumerate() {
            kid.start_ns = 2 * i as u64 + 1;
            kid.end_ns = 2 * i as u64 + 2;
        }
        let s = Structure::build(&spans);
        assert_eq!(s.critical_path().len(), 2 * n as usize + 1);
        assert_eq!(s.critical_ns(0), n + 1);
        assert!((1..spans.len()).all(|i| s.critical_ns(i) == 1));
    }

    /// Checks what must hold for any input, however broken.
    fn check_invariants(spans: &[SpanInput<'_>]) {
        let s = Structure::build(spans);
        let mut reached = 0;
        for &r in s.roots() {
            assert_eq!(s.parent(r), None);
            let path = s.critical_path_of(r);
            // The segments tile the root's interval, in time order.
            let mut at = spans[r].start_ns;
            for seg in path {
                assert_eq!(seg.start_ns, at);
                assert!(seg.end_ns > seg.start_ns);
                assert_eq!(s.root_of(seg.span), Some(r));
                at = seg.end_ns;
            }
            if !path.is_empty() {
                assert_eq!(at, spans[r].end_ns.max(spans[r].start_ns));
            }
            let owned: u64 = (0..spans.len())
                .filter(|&i| s.root_of(i) == Some(r))
                .map(|i| s.critical_ns(i))
                .sum();
            assert_eq!(owned, s.duration_ns(r));
            reached += (0..spans.len())
                .filter(|&i| s.root_of(i) == Some(r))
                .count();
        }
        let kept = (0..spans.len()).filter(|&i| s.is_kept(i)).count();
        assert_eq!(reached, kept, "every kept span hangs under a root");
        for i in 0..spans.len() {
            assert!(s.self_time_ns(i) <= s.duration_ns(i));
            assert!(s.critical_ns(i) <= s.self_time_ns(i), "span {i}");
            for &c in s.children(i) {
                assert_eq!(s.depth(c), s.depth(i) + 1);
            }
        }
    }

    proptest! {
        /// Well-formed trees: one root, every parent listed before its child.
        #[test]
        fn invariants_hold_for_trees(
            raw in prop::collection::vec((any::<prop::sample::Index>(), 0u64..1000, 0u64..500), 1..40)
        ) {
            let spans: Vec<SpanInput<'_>> = raw
                .iter()
                .enumerate()
                .map(|(i, (p, start, len))| SpanInput {
                    span_id: i as u64 + 1,
                    parent_id: (i > 0).then(|| p.index(i) as u64 + 1),
                    start_ns: *start,
                    end_ns: start + len,
                    service: "s",
                    name: "n",
                })
                .collect();
            check_invariants(&spans);
            let s = Structure::build(&spans);
            prop_assert_eq!(s.roots(), &[0]);
            let total: u64 = (0..spans.len()).map(|i| s.critical_ns(i)).sum();
            prop_assert_eq!(total, s.duration_ns(0));
        }

        /// Hostile input: ids and parents from a small range give duplicates, cycles, self
        /// parents and missing parents; ends may precede starts.
        #[test]
        fn invariants_hold_for_hostile_input(
            raw in prop::collection::vec(
                (0u64..12, prop::option::of(0u64..14), 0u64..100, 0u64..100),
                0..30,
            )
        ) {
            let spans: Vec<SpanInput<'_>> = raw
                .iter()
                .map(|&(id, parent, start, end)| SpanInput {
                    span_id: id,
                    parent_id: parent,
                    start_ns: start,
                    end_ns: end,
                    service: "s",
                    name: "n",
                })
                .collect();
            check_invariants(&spans);
        }
    }
}
