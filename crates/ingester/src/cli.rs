//! Command-line arguments: `ingester [serve]` and `ingester backfill`.

use std::time::{Duration, SystemTime};

use anomaly_runtime::cli::CommonArgs;
use clap::{Args as ClapArgs, Parser, Subcommand};

use crate::backfill::BackfillArgs;
use crate::poller::unix_secs;

#[derive(Debug, Parser)]
#[command(version, about = "Turns Tempo traces into latency samples")]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the push API and poll Tempo (the default).
    Serve,
    /// Ingest Tempo's history (resumable; safe to run beside the poller).
    Backfill(BackfillCli),
}

#[derive(Debug, Clone, ClapArgs)]
pub struct BackfillCli {
    /// How far back from now, e.g. `7d`.
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with_all = ["from", "to"], required_unless_present = "from")]
    pub since: Option<Duration>,
    /// Start: unix seconds or RFC 3339 (`2026-11-20T00:00:00Z`).
    #[arg(long, value_parser = parse_time, requires = "to")]
    pub from: Option<u64>,
    /// End: unix seconds or RFC 3339.
    #[arg(long, value_parser = parse_time)]
    pub to: Option<u64>,
    /// Step size, at most 168h (Tempo's search limit).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
    pub window: Duration,
    /// Names the progress record in Redis; an unfinished job of this name is resumed.
    #[arg(long, default_value = "default")]
    pub job: String,
    /// Start over instead of resuming an unfinished job.
    #[arg(long)]
    pub restart: bool,
}

impl BackfillCli {
    pub fn resolve(&self, now: SystemTime) -> BackfillArgs {
        let now_s = unix_secs(now);
        let (from, to) = match self.since {
            Some(since) => (now_s.saturating_sub(since.as_secs()), now_s),
            None => (self.from.unwrap_or(0), self.to.unwrap_or(now_s)),
        };
        BackfillArgs {
            from,
            to,
            window: self.window,
            job: self.job.clone(),
            restart: self.restart,
            progress: true,
        }
    }
}

fn parse_time(s: &str) -> Result<u64, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(secs);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map_err(|e| format!("{s:?} is neither unix seconds nor RFC 3339: {e}"))
        .and_then(|t| u64::try_from(t.timestamp()).map_err(|_| "before 1970".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_times_and_ranges() {
        assert_eq!(parse_time("1795587411"), Ok(1_795_587_411));
        assert_eq!(parse_time("2026-11-25T06:16:51Z"), Ok(1_795_587_411));
        assert!(parse_time("yesterday").is_err());
        let args = Args::try_parse_from(["ingester", "backfill", "--since", "7d"]).unwrap();
        let Some(Command::Backfill(b)) = args.command else {
            panic!("backfill")
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let r = b.resolve(now);
        assert_eq!((r.from, r.to), (1_000_000 - 7 * 86_400, 1_000_000));
        assert!(Args::try_parse_from(["ingester", "backfill"]).is_err());
        assert!(
            Args::try_parse_from(["ingester", "backfill", "--since", "1d", "--from", "1"]).is_err()
        );
        assert!(Args::try_parse_from(["ingester", "backfill", "--from", "1", "--to", "5"]).is_ok());
    }
}
