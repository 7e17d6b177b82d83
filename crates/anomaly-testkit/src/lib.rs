//! Test support: real Redis deployments and isolated key prefixes.
//!
//! [`shared_redis_url`] gives every test in the process one shared Redis (or `REDIS_URL` when it
//! is set); [`unique_prefix`] gives every test its own key namespace so tests sharing a server
//! never see each other's keys; [`redis_config`] puts the two together into the `redis:`
//! settings of one test. [`RedisServer::start`] gives a test its own server that it may stop and
//! restart (outage tests); [`RedisCluster`] and [`RedisSentinels`] give it a whole Redis Cluster
//! or Sentinel deployment whose nodes it may kill.
//!
//! `TEST_REDIS_MODE` (`standalone`, the default, `cluster` or `sentinel`) picks what
//! the shared Redis is, so the same test suites run against each mode: see
//! [`shared_redis_url`] and [`redis_config`]. Tests that send raw commands
//! ([`raw_command`]) to the shared URL reach one node: in cluster mode that node answers MOVED
//! for keys of slots it does not own, so send those through
//! [`RedisCluster::cluster_command`] of [`shared_cluster`].
//!
//! Each server runs under a small `sh` wrapper that reads its standard input from the test
//! process: when the test process exits for any reason, even SIGKILL, the pipe closes and the
//! wrapper stops the server, so no `redis-server` outlives the tests.
//!
//! When `redis-server` (or, for clusters, `redis-cli`) is not installed the tests fail, saying
//! how to install it. They never skip: a test that did not run checked nothing.

mod cluster;
mod process;
mod sentinel;

pub use cluster::{NODE_TIMEOUT_MS, RedisCluster, Reshard};
pub use sentinel::{DOWN_AFTER_MS, FAILOVER_TIMEOUT_MS, MASTER_NAME, RedisSentinels, poll};

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anomaly_store::{RedisConfig, RedisMode};

use crate::process::Supervised;

const INSTALL_HINT: &str = "redis-server is required by the tests and was not found on PATH. \
     Install it (Debian/Ubuntu: `sudo apt-get install -y redis-server`; macOS: `brew install redis`) \
     or point REDIS_URL at a running Redis you can spare.";

const CLI_INSTALL_HINT: &str = "redis-cli is required by the Redis Cluster tests and was not \
     found on PATH. Install it (Debian/Ubuntu: `sudo apt-get install -y redis-tools`; macOS: \
     `brew install redis`).";

/// The environment variable that picks what the shared Redis is (see [`test_redis_mode`]).
pub const MODE_VAR: &str = "TEST_REDIS_MODE";

/// A `redis-server` owned by the test process.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    persistent: bool,
    extra_args: Vec<String>,
    dir: tempfile::TempDir,
    running: Option<Supervised>,
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
        if let Some(mut process) = self.running.take() {
            process.stop();
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
        // An empty config file: its path is how the start check tells this server from any
        // other that might hold the port.
        let conf = dir.join("redis.conf");
        if !conf.exists() {
            std::fs::write(&conf, "").map_err(|e| format!("write {}: {e}", conf.display()))?;
        }
        let mut args = server_args(self.port, dir, self.persistent);
        args.extend(self.extra_args.iter().cloned());
        self.running = Some(Supervised::start(&conf, &args, self.addr(), "redis.log")?);
        Ok(())
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
    if let Err(hint) = check_installed("redis-server", INSTALL_HINT, None) {
        panic!("{hint}");
    }
}

fn ensure_cli_installed() {
    if let Err(hint) = check_installed("redis-cli", CLI_INSTALL_HINT, None) {
        panic!("{hint}");
    }
}

/// Whether `program --version` runs (with `PATH` replaced by `path` when given); the error is
/// `hint`, the message a developer sees.
fn check_installed(
    program: &str,
    hint: &'static str,
    path: Option<&str>,
) -> Result<(), &'static str> {
    let mut cmd = Command::new(program);
    if let Some(path) = path {
        cmd.env("PATH", path);
    }
    let found = cmd
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found { Ok(()) } else { Err(hint) }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// What the shared Redis is, from `TEST_REDIS_MODE`: `standalone` (the default, also
/// when the variable is empty), `cluster` or `sentinel`. Panics on any other value, so a typo
/// never runs the suite in a mode nobody asked for.
pub fn test_redis_mode() -> RedisMode {
    parse_mode(std::env::var(MODE_VAR).ok().as_deref()).unwrap_or_else(|e| panic!("{e}"))
}

fn parse_mode(value: Option<&str>) -> Result<RedisMode, String> {
    match value.map(str::trim) {
        None | Some("" | "standalone") => Ok(RedisMode::Standalone),
        Some("cluster") => Ok(RedisMode::Cluster),
        Some("sentinel") => Ok(RedisMode::Sentinel),
        Some(other) => Err(format!(
            "{MODE_VAR}={other:?}: expected standalone, cluster or sentinel"
        )),
    }
}

/// The URL of a Redis every test in this process may share, by [`test_redis_mode`]:
/// - `standalone`: `REDIS_URL` when set, else a `redis-server` started on first use;
/// - `cluster`: the first seed URL of [`shared_cluster`] (`REDIS_URL` is not used);
/// - `sentinel`: the primary's URL of [`shared_sentinels`] as it was started (`REDIS_URL` is
///   not used).
///
/// Pass it to [`redis_config`], which turns it into the settings of the mode.
pub fn shared_redis_url() -> String {
    match test_redis_mode() {
        RedisMode::Standalone => shared_standalone_url(),
        RedisMode::Cluster => shared_cluster().seed_urls()[0].clone(),
        RedisMode::Sentinel => shared_sentinels_and_url().1.clone(),
    }
}

fn shared_standalone_url() -> String {
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

static SHARED_CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
static SHARED_SENTINELS: OnceLock<(RedisSentinels, String)> = OnceLock::new();

/// The Redis Cluster every test in this process may share, started on first use whatever the
/// mode. Do not kill its nodes: start a [`RedisCluster`] of your own for that.
pub fn shared_cluster() -> &'static RedisCluster {
    SHARED_CLUSTER.get_or_init(RedisCluster::start)
}

/// The environment that points a service binary at the Redis of `config`, in its mode:
/// `ANOMALY_REDIS__URL`, or the mode with the sentinels or seed nodes (figment's inline list
/// syntax), and the key prefix.
pub fn redis_env(config: &RedisConfig) -> Vec<(String, String)> {
    let list = |urls: &[String]| {
        let quoted: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
        format!("[{}]", quoted.join(","))
    };
    let mut env = vec![
        (
            "ANOMALY_REDIS__MODE".to_owned(),
            config.mode.as_str().to_owned(),
        ),
        (
            "ANOMALY_REDIS__KEY_PREFIX".to_owned(),
            config.key_prefix.clone(),
        ),
    ];
    match config.mode {
        RedisMode::Standalone => env.push(("ANOMALY_REDIS__URL".to_owned(), config.url.clone())),
        RedisMode::Cluster => env.push((
            "ANOMALY_REDIS__CLUSTER__URLS".to_owned(),
            list(&config.cluster.urls),
        )),
        RedisMode::Sentinel => {
            env.push((
                "ANOMALY_REDIS__SENTINEL__MASTER_NAME".to_owned(),
                config.sentinel.master_name.clone(),
            ));
            env.push((
                "ANOMALY_REDIS__SENTINEL__URLS".to_owned(),
                list(&config.sentinel.urls),
            ));
        }
    }
    env
}

/// Sends one command to the Redis at `url` for an assertion that bypasses the code under test:
/// on the shared cluster to the owner of the command's key (its first argument), on the shared
/// Sentinel deployment to the current primary, else to `url` itself. Panics on an error reply.
pub fn command_at(url: &str, args: &[&str]) -> String {
    let shared = url == shared_redis_url();
    match test_redis_mode() {
        RedisMode::Cluster if shared => shared_cluster().cluster_command(args),
        RedisMode::Sentinel if shared => {
            let addr = SocketAddr::from(([127, 0, 0, 1], shared_sentinels().master_port()));
            raw_command(addr, args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
        }
        _ => {
            let addr = url
                .trim_start_matches("redis://")
                .parse()
                .unwrap_or_else(|e| panic!("{url} is not redis://host:port: {e}"));
            raw_command(addr, args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
        }
    }
}

/// The Sentinel deployment every test in this process may share, started on first use
/// whatever the mode. Do not kill its nodes: start a [`RedisSentinels`] of your own for that.
pub fn shared_sentinels() -> &'static RedisSentinels {
    &shared_sentinels_and_url().0
}

fn shared_sentinels_and_url() -> &'static (RedisSentinels, String) {
    SHARED_SENTINELS.get_or_init(|| {
        let sentinels = RedisSentinels::start();
        let url = sentinels.master_url();
        (sentinels, url)
    })
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
/// When `url` is the shared URL of [`shared_cluster`] or [`shared_sentinels`], the settings are
/// those of that mode: `redis.cluster.urls` with every node, or `redis.sentinel` with the
/// master name and every sentinel. Any other URL gives standalone settings.
pub fn redis_config(url: &str, test: &str) -> RedisConfig {
    let mut config = RedisConfig {
        url: url.to_owned(),
        key_prefix: unique_prefix(test),
        ..RedisConfig::default()
    };
    if let Some(cluster) = SHARED_CLUSTER.get()
        && cluster.seed_urls().first().map(String::as_str) == Some(url)
    {
        config.mode = RedisMode::Cluster;
        config.cluster.urls = cluster.seed_urls();
    } else if let Some((sentinels, shared_url)) = SHARED_SENTINELS.get()
        && shared_url == url
    {
        config.mode = RedisMode::Sentinel;
        config.sentinel.master_name = sentinels.master_name().to_owned();
        config.sentinel.urls = sentinels.sentinel_urls();
    }
    config
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
/// strings as-is, integers in decimal, arrays joined by newlines). An error reply is an error
/// whose text is the reply's (`MOVED 3999 127.0.0.1:6381`).
///
/// It reaches the one server at `addr`: in a cluster, only keys of slots that node owns (see
/// [`RedisCluster::cluster_command`]).
pub fn raw_command(addr: SocketAddr, args: &[&str]) -> std::io::Result<String> {
    let mut stream = connect(addr)?;
    write_command(&mut stream, args)?;
    read_reply(&mut std::io::BufReader::new(stream))
}

/// Sends several commands on one connection and returns their replies, as [`raw_command`]
/// does; the first error reply is the error. For commands that depend on their connection: a
/// write and the `WAIT` for it (`WAIT` counts only its own connection's writes, so on a
/// connection of its own it returns at once), `ASKING` and the command it allows, `READONLY`
/// and a read from a cluster replica.
pub fn raw_commands(addr: SocketAddr, commands: &[&[&str]]) -> std::io::Result<Vec<String>> {
    let mut stream = connect(addr)?;
    for args in commands {
        write_command(&mut stream, args)?;
    }
    let mut reader = std::io::BufReader::new(stream);
    commands.iter().map(|_| read_reply(&mut reader)).collect()
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(stream)
}

fn write_command(stream: &mut TcpStream, args: &[&str]) -> std::io::Result<()> {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.write_all(req.as_bytes())
}

/// The value of `field` in an `INFO` or `CLUSTER INFO` reply (`field:value` lines).
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == field).then(|| value.trim_end())
    })
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
        let hint = check_installed("redis-server", INSTALL_HINT, Some("/nonexistent")).unwrap_err();
        assert!(hint.contains("apt-get install -y redis-server"), "{hint}");
        check_installed("redis-server", INSTALL_HINT, None)
            .expect("redis-server is installed on this machine");
        let hint =
            check_installed("redis-cli", CLI_INSTALL_HINT, Some("/nonexistent")).unwrap_err();
        assert!(hint.contains("apt-get install -y redis-tools"), "{hint}");
        check_installed("redis-cli", CLI_INSTALL_HINT, None)
            .expect("redis-cli is installed on this machine");
    }

    #[test]
    fn modes_parse_and_typos_are_refused() {
        let cases = [
            (None, Some(RedisMode::Standalone)),
            (Some(""), Some(RedisMode::Standalone)),
            (Some("standalone"), Some(RedisMode::Standalone)),
            (Some("cluster"), Some(RedisMode::Cluster)),
            (Some(" sentinel "), Some(RedisMode::Sentinel)),
            (Some("Cluster"), None),
            (Some("clustre"), None),
        ];
        for (value, want) in cases {
            assert_eq!(parse_mode(value).ok(), want, "{value:?}");
        }
        let err = parse_mode(Some("clustre")).unwrap_err();
        assert!(err.contains(MODE_VAR) && err.contains("clustre"), "{err}");
    }

    #[test]
    fn info_fields_are_found_by_whole_name() {
        let info = "# Replication\r\nrole:slave\r\nmaster_port:6380\r\nmaster_link_status:up\r\n";
        assert_eq!(info_field(info, "role"), Some("slave"));
        assert_eq!(info_field(info, "master_link_status"), Some("up"));
        assert_eq!(info_field(info, "master"), None);
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
