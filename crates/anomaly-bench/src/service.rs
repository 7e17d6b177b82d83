//! A service binary (checker, ingester, recomputer) run as a child process on a free loopback
//! port, for the HTTP benchmark and the soak; killed when dropped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

pub(crate) struct Service {
    pub(crate) name: &'static str,
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub(crate) base: String,
    log: PathBuf,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    /// Starts `bin_dir/name` on a free port with `env`, logging at `log_level` to `log`, and
    /// waits until its `/readyz` answers 200; after `ready_within` it fails with the log.
    pub(crate) async fn start(
        name: &'static str,
        bin_dir: &Path,
        env: &[(&str, String)],
        log: PathBuf,
        log_level: &str,
        ready_within: Duration,
    ) -> anyhow::Result<Service> {
        let port = anomaly_testkit::free_port();
        let log_file = std::fs::File::create(&log)?;
        let mut command = std::process::Command::new(bin_dir.join(name));
        command
            .env(
                format!("ANOMALY_{}__LISTEN", name.to_uppercase()),
                format!("127.0.0.1:{port}"),
            )
            .env("ANOMALY_TELEMETRY__LOG_LEVEL", log_level)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", bin_dir.join(name).display()))?;
        let service = Service {
            name,
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + ready_within;
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", service.base)).send().await
                && r.status().is_success()
            {
                return Ok(service);
            }
            if Instant::now() > deadline {
                bail!(
                    "{name} was not ready within {ready_within:?}; its log: {}",
                    std::fs::read_to_string(&service.log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size in bytes, from /proc.
    pub(crate) fn rss(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .with_context(|| format!("{} is gone", self.name))?;
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .with_context(|| format!("no VmRSS for {}", self.name))?;
        Ok(kb * 1024)
    }

    /// Log lines at WARN or ERROR (JSON logs).
    pub(crate) fn warnings(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\""))
            .map(str::to_owned)
            .collect()
    }
}
