//! One server process (`redis-server`, a cluster node, a sentinel) tied to the test process.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::raw_command;

/// The `sh` wrapper every server runs under. The server runs in the background; a watcher reads
/// one line from the test process's pipe (kept as fd 3, because a background job's standard
/// input is /dev/null). End of file, which is what the watcher sees when the test process exits
/// however it died, or any other line, stops the server with SIGTERM; the line `kill` kills it
/// with SIGKILL, as a crash would. When the server exits on its own the wrapper exits with it,
/// so a server that could not start (its port taken) shows at once instead of at a deadline.
const WRAPPER: &str = r#"exec 3<&0
"$@" 3<&- &
pid=$!
(
    read -r line <&3
    if [ "$line" = kill ]; then kill -9 "$pid"; else kill "$pid"; fi
) 2>/dev/null &
watcher=$!
wait "$pid"
status=$?
kill "$watcher" 2>/dev/null
exit "$status""#;

/// How long a server may take to answer its first PING; generous, for a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running server under the wrapper. Dropping it stops the server.
#[derive(Debug)]
pub(crate) struct Supervised {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Supervised {
    /// Runs `redis-server <conf> <args>` and waits until the server at `addr` answers and is
    /// this one: its `INFO server` names `conf`, so a server of someone else's that holds the
    /// port is never taken for ours. `conf` is an absolute path; the server's log is
    /// `<dir of conf>/<log>`, quoted when the start fails, with what it wrote to standard error
    /// (`<dir of conf>/stderr.log`).
    pub(crate) fn start(
        conf: &Path,
        args: &[String],
        addr: SocketAddr,
        log: &str,
    ) -> Result<Supervised, String> {
        // Errors before the server opens its log (a bad setting) go to standard error.
        let dir = conf.parent().unwrap_or(Path::new("."));
        let stderr_path = dir.join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path)
            .map_err(|e| format!("create {}: {e}", stderr_path.display()))?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WRAPPER)
            .arg("redis-wrapper")
            .arg("redis-server")
            .arg(conf)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("spawn sh: {e}"))?;
        let stdin = child.stdin.take();
        let mut process = Supervised { child, stdin };
        let identity = format!("config_file:{}", conf.display());
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(info) = raw_command(addr, &["INFO", "server"]) {
                if !info.lines().any(|l| l.trim_end() == identity) {
                    return Err(format!("{addr} is taken by another server"));
                }
                // INFO answers while the server still loads its data (a restart with an
                // append-only file); other commands answer LOADING until it is done.
                match raw_command(addr, &["PING"]) {
                    Err(e) if e.to_string().contains("LOADING") => {}
                    _ => return Ok(process),
                }
            }
            if let Ok(Some(status)) = process.child.try_wait() {
                return Err(format!(
                    "redis-server on {addr} exited with {status}: {}{}",
                    log_tail(&stderr_path),
                    log_tail(&dir.join(log))
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "redis-server on {addr} did not answer within {START_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the server with SIGTERM and waits until it has exited.
    pub(crate) fn stop(&mut self) {
        self.end(false);
    }

    /// Kills the server with SIGKILL (a crash: no shutdown, no final save) and waits until it
    /// has exited.
    pub(crate) fn kill(&mut self) {
        self.end(true);
    }

    /// Asks the wrapper to stop the server with SIGTERM without waiting for it, so that
    /// several servers stop at once; dropping waits.
    pub(crate) fn request_stop(&mut self) {
        self.stdin.take();
    }

    fn end(&mut self, kill: bool) {
        if let Some(mut stdin) = self.stdin.take()
            && kill
        {
            let _ = stdin.write_all(b"kill\n");
        }
        let _ = self.child.wait();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last lines of a server's log, for a failure message.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RedisServer;

    #[test]
    fn a_port_held_by_another_server_is_refused() {
        let other = RedisServer::start_ephemeral();
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("redis.conf");
        std::fs::write(&conf, "").unwrap();
        let args = ["--port".to_owned(), other.port().to_string()];
        let started = Instant::now();
        let err = Supervised::start(&conf, &args, other.addr(), "redis.log").unwrap_err();
        assert!(err.contains("taken by another server"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5), "{err}");
        assert_eq!(
            other.command(&["PING"]),
            "PONG",
            "the other server still runs"
        );
    }

    #[test]
    fn a_server_that_cannot_start_is_reported_at_once_with_its_error() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("redis.conf");
        std::fs::write(&conf, "no-such-directive yes\n").unwrap();
        let port = crate::free_port();
        let args = ["--port".to_owned(), port.to_string()];
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let started = Instant::now();
        let err = Supervised::start(&conf, &args, addr, "redis.log").unwrap_err();
        assert!(err.contains("exited with"), "{err}");
        assert!(err.contains("no-such-directive"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the wrapper exits with the server, long before the start deadline: {err}"
        );
    }
}
