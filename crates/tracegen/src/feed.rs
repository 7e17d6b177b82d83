//! Feeding generated traffic into the fake Tempo: a history at once, then new traces as time
//! passes, with late root spans arriving after their partial listing.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::tempo::{FakeTempo, Trace};
use crate::traffic::{Generator, Root};

/// Adds the generator's traces to a fake Tempo as their time comes.
///
/// [`LiveFeed::step`] is the whole logic and takes "now" as an argument; [`LiveFeed::run`] only
/// calls it on a timer. A first step over a long range loads a history in one go.
#[derive(Debug)]
pub struct LiveFeed {
    generator: Generator,
    /// Traces starting before this (unix ns) have been added.
    cursor: u64,
    /// Complete versions of partially listed traces, due at a time (unix ns).
    pending: Vec<(u64, Trace)>,
}

/// What one step added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepReport {
    /// New traces, listed complete.
    pub complete: usize,
    /// New traces listed partial (root span late or lost).
    pub partial: usize,
    /// Partially listed traces whose root span arrived in this step.
    pub completed_late: usize,
}

impl StepReport {
    pub fn traces(&self) -> usize {
        self.complete + self.partial
    }
}

impl LiveFeed {
    /// A feed whose first step adds the traces starting from `from_unix_nano`.
    pub fn new(generator: Generator, from_unix_nano: u64) -> Self {
        LiveFeed {
            generator,
            cursor: from_unix_nano,
            pending: Vec::new(),
        }
    }

    /// Late root spans not arrived yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Adds every trace that started since the last step and completes every partial trace
    /// whose root span is due by `now_unix_nano`.
    pub fn step(&mut self, tempo: &FakeTempo, now_unix_nano: u64) -> StepReport {
        let mut report = StepReport::default();
        let mut batch = Vec::new();
        for t in self.generator.traces_between(self.cursor, now_unix_nano) {
            match t.root {
                Root::OnTime => {
                    report.complete += 1;
                    batch.push(t.to_tempo());
                }
                Root::Lost => {
                    report.partial += 1;
                    batch.push(t.to_tempo_partial());
                }
                Root::Late(delay) => {
                    let due = t.end_unix_nano() + delay.as_nanos() as u64;
                    if due <= now_unix_nano {
                        // Arrived long ago: a history shows the settled trace.
                        report.complete += 1;
                        batch.push(t.to_tempo());
                    } else {
                        report.partial += 1;
                        batch.push(t.to_tempo_partial());
                        self.pending.push((due, t.to_tempo()));
                    }
                }
            }
        }
        self.cursor = self.cursor.max(now_unix_nano);
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(due, _)| *due <= now_unix_nano);
        self.pending = later;
        report.completed_late = due.len();
        batch.extend(due.into_iter().map(|(_, t)| t));
        tempo.upsert_all(batch);
        report
    }

    /// Steps every `tick` by the system clock until `shutdown` resolves.
    pub async fn run(
        mut self,
        tempo: FakeTempo,
        tick: Duration,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut timer = tokio::time::interval(tick);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = timer.tick() => {
                    let report = self.step(&tempo, unix_nanos(SystemTime::now()));
                    if report.traces() + report.completed_late > 0 {
                        tracing::debug!(
                            complete = report.complete,
                            partial = report.partial,
                            completed_late = report.completed_late,
                            "live traffic added"
                        );
                    }
                }
            }
        }
    }
}

/// Unix nanoseconds of a system time (0 before the epoch).
pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
