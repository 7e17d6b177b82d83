//! Test support: a real `redis-server` and isolated key prefixes.
//!
//! [`shared_redis_url`] starts one `redis-server` per test process on a free loopback port (or
//! uses `REDIS_URL` when it is set); [`unique_prefix`] gives every test its own key namespace so
//! tests sharing a server never see each other's keys; [`redis_config`] puts the two together
//! into the `redis:` settings of one test. [`RedisServer::start`] gives a test its own server
//! that it may stop and restart (outage tests).
//!
//! Each server runs under a small `sh` wrapper that reads its standard input from the test
//! process: when the test process exits for any reason, even SIGKILL, the pipe closes and the
//! wrapper stops the server, so no `redis-server` outlives the tests.
//!
//! When `redis-server` is not installed the tests fail, saying how to install it. They never
//! skip: a test that did not run checked nothing.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anomaly_store::RedisConfig;

const INSTALL_HINT: &str = "redis-server is required by the tests and was not found on PATH. \
     Install it (Debian/Ubuntu: `sudo apt-get install -y redis-server`; macOS: `brew install redis`) \
     or point REDIS_URL at a running Redis you can spare.";

/// A `redis-server` owned by the test process.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    persistent: bool,
    extra_args: Vec<String>,
    dir: tempfile::TempDir,
    running: Option<(Child, ChildStdin)>,
}

impl RedisServer {
    /// Starts a server on a free loopback port, with append-only persistence so that a
    /// [`RedisServer::restart`] keeps the data, as a production Redis would.
    pub fn start() -> RedisServer {
        Self::start_with(true)
    }

    /// Starts a server without persistence: faster, for tests that never restart it and for
    /// benchmarks (which must not measure fsync).
    pub fn start_ephemeral() -> RedisServer {
        Self::start_with(false)
    }

    /// Starts an ephemeral server with extra `redis-server` arguments (e.g. TLS settings). The
    /// plain port of [`RedisServer::url`] stays open for readiness checks and assertions.
    pub fn start_with_args(extra_args: &[&str]) -> RedisServer {
        Self::start_inner(false, extra_args.iter().map(|a| a.to_string()).collect())
    }

    fn start_with(persistent: bool) -> RedisServer {
        Self::start_inner(persistent, Vec::new())
    }

    fn start_inner(persistent: bool, extra_args: Vec<String>) -> RedisServer {
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut server = RedisServer {
                port,
                persistent,
                extra_args: extra_args.clone(),
                dir: tempfile::tempdir().expect("create a temporary directory for redis-server"),
                running: None,
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("could not start redis-server: {last_error}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Stops the server (as a crash would look to clients: connections drop).
    pub fn stop(&mut self) {
        if let Some((mut child, stdin)) = self.running.take() {
            drop(stdin);
            let _ = child.wait();
        }
        // The wrapper waits for redis-server; make sure the port is really free.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(self.addr()).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same port with the same data directory.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => {
                    panic!("could not restart redis-server: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Runs a command with `redis-cli`-like simplicity over RESP, for assertions that must not
    /// go through the code under test (e.g. `INFO commandstats`). Returns the raw reply text.
    pub fn command(&self, args: &[&str]) -> String {
        raw_command(self.addr(), args).expect("talk to the test redis-server")
    }

    fn spawn(&mut self) -> Result<(), String> {
        ensure_installed();
        let dir = self.dir.path();
        let script =
            r#"redis-server "$@" & pid=$!; read _ignored; kill "$pid" 2>/dev/null; wait "$pid""#;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("redis-wrapper")
            .args(server_args(self.port, dir, self.persistent))
            .args(&self.extra_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn sh: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin pipe")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(reply) = raw_command(self.addr(), &["PING"])
                && reply == "PONG"
            {
                self.running = Some((child, stdin));
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
                return Err(format!("redis-server exited with {status}: {log}"));
            }
            if Instant::now() > deadline {
                drop(stdin);
                let _ = child.kill();
                return Err("redis-server did not answer PING within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn server_args(port: u16, dir: &Path, persistent: bool) -> Vec<String> {
    let appendonly = if persistent { "yes" } else { "no" };
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--dir",
        &dir.display().to_string(),
        "--logfile",
        "redis.log",
        "--save",
        "",
        "--appendonly",
        appendonly,
        "--appendfsync",
        "always",
        "--daemonize",
        "no",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn ensure_installed() {
    if let Err(hint) = check_installed(None) {
        panic!("{hint}");
    }
}

/// Whether `redis-server` runs (with `PATH` replaced by `path` when given); the error is the
/// message a developer sees.
fn check_installed(path: Option<&str>) -> Result<(), &'static str> {
    let mut cmd = Command::new("redis-server");
    if let Some(path) = path {
        cmd.env("PATH", path);
    }
    let found = cmd
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found { Ok(()) } else { Err(INSTALL_HINT) }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// The URL of a Redis every test in this process may share: `REDIS_URL` when set, else a
/// server started on first use.
pub fn shared_redis_url() -> String {
    static SHARED: OnceLock<(String, Option<RedisServer>)> = OnceLock::new();
    SHARED
        .get_or_init(|| match std::env::var("REDIS_URL") {
            Ok(url) if !url.is_empty() => (url, None),
            _ => {
                let server = RedisServer::start_ephemeral();
                (server.url(), Some(server))
            }
        })
        .0
        .clone()
}

/// A key prefix no other test (in this process or another) uses.
pub fn unique_prefix(test: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("test:{test}:{}-{n}-{nanos}:", std::process::id())
}

/// The `redis:` settings of one test: Redis at `url` (usually [`shared_redis_url`], or a
/// [`RedisServer`] of the test's own), a key prefix no other test uses, the rest defaults.
pub fn redis_config(url: &str, test: &str) -> RedisConfig {
    RedisConfig {
        url: url.to_owned(),
        key_prefix: unique_prefix(test),
        ..RedisConfig::default()
    }
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub async fn eventually<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends one command in RESP and returns the reply flattened to text (bulk strings and simple
/// strings as-is, integers in decimal, arrays joined by newlines).
pub fn raw_command(addr: SocketAddr, args: &[&str]) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.write_all(req.as_bytes())?;
    let mut reader = std::io::BufReader::new(stream);
    read_reply(&mut reader)
}

fn read_line(r: &mut impl std::io::BufRead) -> std::io::Result<String> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    if line.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    Ok(line.trim_end_matches("\r\n").to_owned())
}

fn read_reply(r: &mut impl std::io::BufRead) -> std::io::Result<String> {
    let line = read_line(r)?;
    let (kind, rest) = line.split_at(1);
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    match kind {
        "+" | ":" => Ok(rest.to_owned()),
        "-" => Err(std::io::Error::other(rest.to_owned())),
        "$" => {
            let len: i64 = rest.parse().map_err(|_| bad("bad bulk length"))?;
            if len < 0 {
                return Ok(String::new());
            }
            let mut buf = vec![0; len as usize + 2];
            r.read_exact(&mut buf)?;
            buf.truncate(len as usize);
            Ok(String::from_utf8_lossy(&buf).into_owned())
        }
        "*" => {
            let n: i64 = rest.parse().map_err(|_| bad("bad array length"))?;
            let mut items = Vec::new();
            for _ in 0..n.max(0) {
                items.push(read_reply(r)?);
            }
            Ok(items.join("\n"))
        }
        _ => Err(bad("unknown reply type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_redis_server_fails_with_an_install_hint() {
        let hint = check_installed(Some("/nonexistent")).unwrap_err();
        assert!(hint.contains("apt-get install -y redis-server"), "{hint}");
        check_installed(None).expect("redis-server is installed on this machine");
    }

    #[test]
    fn servers_stop_and_restart_on_the_same_port() {
        let mut server = RedisServer::start();
        let port = server.port();
        server.command(&["SET", "k", "v"]);
        server.stop();
        assert!(raw_command(server.addr(), &["PING"]).is_err());
        server.restart();
        assert_eq!(server.port(), port);
        assert_eq!(
            server.command(&["GET", "k"]),
            "v",
            "append-only persistence keeps data"
        );
    }

    #[test]
    fn prefixes_are_unique() {
        assert_ne!(unique_prefix("a"), unique_prefix("a"));
    }
}
