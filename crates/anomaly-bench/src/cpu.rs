//! CPU time of the processes in a measurement (the service, redis-server, the load generator),
//! read from `/proc`, so a figure says which of them was the bottleneck.

use std::time::{Duration, Instant};

use anyhow::Context as _;

/// Clock ticks per second of `/proc/PID/stat` (`getconf CLK_TCK`; 100 on every common Linux).
fn ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// `(utime + stime, cutime + cstime)` of a process, in clock ticks: its own CPU time and that
/// of its children it has waited for.
fn ticks(pid: &str) -> anyhow::Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("process {pid} is gone"))?;
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("a /proc stat line without a command name")?;
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // Fields 14-17 of proc(5); the state (field 3) is skipped, so field 4 is at index 0.
    let field = |n: usize| fields.get(n - 4).copied().unwrap_or(0);
    Ok((field(14) + field(15), field(16) + field(17)))
}

/// Where a process's CPU time is read.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// Another process, by PID.
    Process(u32),
    /// This process.
    This,
    /// The children this process ran and waited for during the interval (wrk).
    Children,
    /// Every process on the machine (`/proc/stat`: all but idle and iowait), so that CPU taken
    /// by anything outside the measurement shows.
    Machine,
}

/// CPU time of some named processes, sampled at the start of an interval.
pub(crate) struct Meter {
    sources: Vec<(&'static str, Source)>,
    start: Vec<u64>,
    at: Instant,
    per_second: u64,
}

impl Meter {
    pub(crate) fn start(sources: Vec<(&'static str, Source)>) -> anyhow::Result<Meter> {
        let start = sources
            .iter()
            .map(|(_, s)| read(s))
            .collect::<anyhow::Result<_>>()?;
        Ok(Meter {
            sources,
            start,
            at: Instant::now(),
            per_second: ticks_per_second(),
        })
    }

    /// Each process's CPU use since the start, as a share of one core (1.0 = a whole core).
    pub(crate) fn stop(&self) -> anyhow::Result<Usage> {
        let wall = self.at.elapsed();
        let mut shares = Vec::new();
        for ((name, source), start) in self.sources.iter().zip(&self.start) {
            let used = read(source)?.saturating_sub(*start);
            let cpu = Duration::from_secs_f64(used as f64 / self.per_second as f64);
            shares.push((*name, cpu.as_secs_f64() / wall.as_secs_f64()));
        }
        Ok(Usage(shares))
    }
}

fn read(source: &Source) -> anyhow::Result<u64> {
    Ok(match source {
        Source::Process(pid) => ticks(&pid.to_string())?.0,
        Source::This => ticks("self")?.0,
        Source::Children => ticks("self")?.1,
        Source::Machine => machine_ticks()?,
    })
}

/// Busy clock ticks of all CPUs since boot: the first line of `/proc/stat` without its idle
/// and iowait columns (and without guest time, which user time already includes).
fn machine_ticks() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .context("no cpu line in /proc/stat")?
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal
    Ok([0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| cpu.get(i).copied().unwrap_or(0))
        .sum())
}

/// CPU shares of one core, by process name.
#[derive(Debug, Clone)]
pub(crate) struct Usage(Vec<(&'static str, f64)>);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, share)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name} {:.0}%", share * 100.0)?;
        }
        Ok(())
    }
}

/// The PID of the redis-server answering at `addr` (`INFO server`).
pub(crate) fn redis_pid(addr: std::net::SocketAddr) -> anyhow::Result<u32> {
    let info = anomaly_testkit::raw_command(addr, &["INFO", "server"])?;
    info.lines()
        .find_map(|l| l.trim().strip_prefix("process_id:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no process_id in INFO server")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let meter = Meter::start(vec![
            ("self", Source::This),
            ("kids", Source::Children),
            ("all", Source::Machine),
        ])
        .expect("read /proc/self/stat and /proc/stat");
        // Burn a little CPU so the share is positive but at most one core.
        let until = Instant::now() + Duration::from_millis(200);
        let mut x = 0u64;
        while Instant::now() < until {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let usage = meter.stop().unwrap();
        let own = usage.0[0].1;
        // Positive, and at most a core (with some slack for the clock): on a loaded machine the
        // burn gets less than the whole core.
        assert!(own > 0.05 && own < 1.5, "{own}");
        assert_eq!(usage.0[1].1, 0.0);
        let all = usage.0[2].1;
        assert!(
            all >= own * 0.9,
            "the machine {all} includes this process {own}"
        );
        assert!(usage.to_string().starts_with("self "), "{usage}");
    }
}
