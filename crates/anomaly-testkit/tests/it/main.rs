//! The harness itself against real servers: clusters and sentinels start, fail over, reshard,
//! and the shared Redis follows `TEST_REDIS_MODE`.

mod cluster;
mod mode;
mod sentinel;

use std::time::{Duration, Instant};

/// Generous for a loaded 2-core machine; the conditions are polled every few milliseconds, so
/// a healthy run takes a few seconds whatever this is.
const DEADLINE: Duration = Duration::from_secs(30);

/// Runs `f` and prints how long it took (shown with `--no-capture`), for the timings quoted in
/// reviews.
fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let value = f();
    eprintln!("{what}: {:.2} s", started.elapsed().as_secs_f64());
    value
}
