//! A real Redis Sentinel deployment for tests: a primary, one replica and three sentinels on
//! loopback, monitoring the primary as [`MASTER_NAME`] with quorum 2.
//!
//! Settings, and why:
//! - `down-after-milliseconds` [`DOWN_AFTER_MS`], `failover-timeout` [`FAILOVER_TIMEOUT_MS`],
//!   `parallel-syncs 1`: a killed primary is replaced in a few seconds.
//! - `SENTINEL DEBUG info-period 1000 publish-period 500` (Redis 7's knobs for its internal
//!   periods, 10 s and 2 s by default): the same code paths, faster. Sentinels find each other
//!   through hello messages every `publish-period`, and a restarted old primary is turned into
//!   a replica only after it has reported itself primary for four `publish-period`s, noticed
//!   through `INFO` every `info-period`: with the defaults a restart test would wait ~20 s.
//! - `sentinel resolve-hostnames no`: everything is 127.0.0.1.
//! - The data nodes have no persistence and each has a config file of its own, as in
//!   production: the sentinels rewrite it (`CONFIG REWRITE`) when they reconfigure a node, so a
//!   restarted node comes back with the role the sentinels last gave it. The replica's
//!   `replicaof` is in that file rather than on the command line for the same reason.
//! - The sentinels' own config files are writable: sentinels rewrite them as they learn.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::process::Supervised;
use crate::{ensure_installed, free_port, info_field, raw_command};

/// The name the sentinels monitor the primary by.
pub const MASTER_NAME: &str = "mymaster";

/// `sentinel down-after-milliseconds`: how long the primary must not answer before a sentinel
/// considers it down.
pub const DOWN_AFTER_MS: u64 = 1000;

/// `sentinel failover-timeout`.
pub const FAILOVER_TIMEOUT_MS: u64 = 4000;

const SENTINELS: usize = 3;
const QUORUM: usize = 2;

/// How long starting the deployment may take on a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A primary, a replica and three sentinels owned by the test process. Every process runs
/// under the wrapper that stops it when the test process exits; dropping this stops them all.
#[derive(Debug)]
pub struct RedisSentinels {
    data: Vec<DataNode>,
    sentinels: Vec<(u16, Supervised)>,
    _dir: tempfile::TempDir,
}

#[derive(Debug)]
struct DataNode {
    port: u16,
    dir: PathBuf,
    process: Option<Supervised>,
}

impl DataNode {
    fn spawn(&mut self) -> Result<(), String> {
        let conf = self.dir.join("redis.conf");
        let args = data_args(self.port, &self.dir);
        self.process = Some(Supervised::start(
            &conf,
            &args,
            addr(self.port),
            "redis.log",
        )?);
        Ok(())
    }
}

impl RedisSentinels {
    /// Starts the primary, the replica and the sentinels on free loopback ports and waits until
    /// the deployment is healthy (see [`RedisSentinels::health`]). Panics, saying why, when it
    /// cannot.
    pub fn start() -> RedisSentinels {
        ensure_installed();
        let dir = tempfile::tempdir().expect("create a temporary directory for the sentinels");
        let master = start_data_node(dir.path(), None);
        let replica = start_data_node(dir.path(), Some(master.port));
        // Sentinels list the replicas from the primary's INFO; start them once the replica is
        // attached, so their first INFO already shows it.
        let synced = poll(START_TIMEOUT, || {
            raw_command(addr(replica.port), &["INFO", "replication"])
                .is_ok_and(|i| info_field(&i, "master_link_status") == Some("up"))
        });
        assert!(synced, "the replica did not sync with the primary");
        let sentinels = (0..SENTINELS)
            .map(|_| start_sentinel(dir.path(), master.port))
            .collect();
        let deployment = RedisSentinels {
            data: vec![master, replica],
            sentinels,
            _dir: dir,
        };
        if !deployment.wait_ok(START_TIMEOUT) {
            panic!(
                "the sentinels did not become ready within {START_TIMEOUT:?}: {}",
                deployment.health().unwrap_err()
            );
        }
        deployment
    }

    /// The name the sentinels monitor the primary by ([`MASTER_NAME`]).
    pub fn master_name(&self) -> &'static str {
        MASTER_NAME
    }

    /// `redis://127.0.0.1:<port>` of every sentinel.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinel_ports()
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|(port, _)| *port).collect()
    }

    /// The ports of the primary and the replica as they were started (roles change with
    /// failovers).
    pub fn data_ports(&self) -> Vec<u16> {
        self.data.iter().map(|n| n.port).collect()
    }

    pub fn addr(&self, port: u16) -> SocketAddr {
        addr(port)
    }

    /// The primary's port, as the first sentinel that answers names it now
    /// (`SENTINEL GET-MASTER-ADDR-BY-NAME`).
    pub fn master_port(&self) -> u16 {
        let mut errors = Vec::new();
        for port in self.sentinel_ports() {
            match master_addr_of(port) {
                Ok(master) => return master,
                Err(e) => errors.push(format!("sentinel {port}: {e}")),
            }
        }
        panic!("no sentinel named the primary: {}", errors.join("; "))
    }

    /// `redis://127.0.0.1:<port>` of [`RedisSentinels::master_port`].
    pub fn master_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.master_port())
    }

    /// The data node that is not [`RedisSentinels::master_port`], running or not.
    pub fn replica_port(&self) -> u16 {
        let master = self.master_port();
        self.data_ports()
            .into_iter()
            .find(|&p| p != master)
            .expect("two data nodes")
    }

    /// Whether the data node on `port` runs.
    pub fn is_running(&self, port: u16) -> bool {
        self.data_node(port).process.is_some()
    }

    /// Sends one command to the server (data node or sentinel) on `port`; panics on an error
    /// reply.
    pub fn command(&self, port: u16, args: &[&str]) -> String {
        raw_command(addr(port), args).unwrap_or_else(|e| panic!("{args:?} on {port}: {e}"))
    }

    /// Kills the current primary with SIGKILL, as a crash would, and returns its port.
    pub fn kill_master(&mut self) -> u16 {
        let port = self.master_port();
        self.kill(port);
        port
    }

    /// Kills the data node on `port` with SIGKILL.
    pub fn kill(&mut self, port: u16) {
        let mut process = self
            .data_node_mut(port)
            .process
            .take()
            .unwrap_or_else(|| panic!("data node {port} is not running"));
        process.kill();
    }

    /// Waits until every sentinel names the same primary other than `old_port` and that
    /// server says `role:master`; returns its port, or `None` after `timeout`.
    pub fn wait_failover(&self, old_port: u16, timeout: Duration) -> Option<u16> {
        let mut found = None;
        let done = poll(timeout, || {
            let named: Result<Vec<u16>, _> = self
                .sentinel_ports()
                .into_iter()
                .map(master_addr_of)
                .collect();
            let Ok(named) = named else { return false };
            let new = named[0];
            let promoted = new != old_port
                && named.iter().all(|&p| p == new)
                && raw_command(addr(new), &["INFO", "replication"])
                    .is_ok_and(|i| info_field(&i, "role") == Some("master"));
            if promoted {
                found = Some(new);
            }
            promoted
        });
        if done { found } else { None }
    }

    /// Starts the data node on `port` again with its config file, which holds the role the
    /// sentinels last gave it: a primary killed before a failover comes back as the primary;
    /// an old primary comes back as a primary too, and the sentinels turn it into a replica
    /// ([`RedisSentinels::wait_ok`] waits for that). Returns once the node answers.
    pub fn restart(&mut self, port: u16) {
        let node = self.data_node_mut(port);
        assert!(node.process.is_none(), "data node {port} is running");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match node.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => {
                    panic!("could not restart data node {port}: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Polls [`RedisSentinels::health`] until it holds or `timeout` passes; returns whether it
    /// held.
    pub fn wait_ok(&self, timeout: Duration) -> bool {
        poll(timeout, || self.health().is_ok())
    }

    /// Whether the deployment is whole, and if not, why: every sentinel names the same primary,
    /// sees it up, knows the other two sentinels and one replica, which it sees up and linked;
    /// that replica is a replica of that primary with its link up.
    pub fn health(&self) -> Result<(), String> {
        let mut master = None;
        for port in self.sentinel_ports() {
            let query = |args: &[&str]| {
                raw_command(addr(port), args).map_err(|e| format!("sentinel {port}: {e}"))
            };
            let named = master_addr_of(port).map_err(|e| format!("sentinel {port}: {e}"))?;
            if *master.get_or_insert(named) != named {
                return Err(format!(
                    "sentinels disagree on the primary: {master:?}, {named}"
                ));
            }
            let state = pairs(&query(&["SENTINEL", "MASTER", MASTER_NAME])?);
            let field = |k: &str| {
                state
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.as_str())
            };
            let expected = [
                ("flags", "master".to_owned()),
                ("num-slaves", "1".to_owned()),
                ("num-other-sentinels", (SENTINELS - 1).to_string()),
                ("quorum", QUORUM.to_string()),
            ];
            for (key, want) in &expected {
                if field(key) != Some(want.as_str()) {
                    return Err(format!(
                        "sentinel {port} says {key} {:?} of the primary, not {want:?}",
                        field(key)
                    ));
                }
            }
            let replica = pairs(&query(&["SENTINEL", "REPLICAS", MASTER_NAME])?);
            let field = |k: &str| {
                replica
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.as_str())
            };
            if field("flags") != Some("slave") || field("master-link-status") != Some("ok") {
                return Err(format!(
                    "sentinel {port} sees the replica {:?} as {:?}, link {:?}",
                    field("port"),
                    field("flags"),
                    field("master-link-status")
                ));
            }
        }
        let master = master.expect("three sentinels");
        let replica = self
            .data_ports()
            .into_iter()
            .find(|&p| p != master)
            .expect("two data nodes");
        let info = raw_command(addr(replica), &["INFO", "replication"])
            .map_err(|e| format!("replica {replica}: {e}"))?;
        let (role, of, link) = (
            info_field(&info, "role"),
            info_field(&info, "master_port"),
            info_field(&info, "master_link_status"),
        );
        if role != Some("slave") || of != Some(&master.to_string()) || link != Some("up") {
            return Err(format!(
                "{replica} says role {role:?} of {of:?}, link {link:?}; the primary is {master}"
            ));
        }
        Ok(())
    }

    fn data_node(&self, port: u16) -> &DataNode {
        self.data
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("{port} is not a data node of this deployment"))
    }

    fn data_node_mut(&mut self, port: u16) -> &mut DataNode {
        self.data
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("{port} is not a data node of this deployment"))
    }
}

impl Drop for RedisSentinels {
    fn drop(&mut self) {
        // Stop every process at once rather than one after another; dropping them waits.
        let data = self.data.iter_mut().filter_map(|n| n.process.as_mut());
        for process in data.chain(self.sentinels.iter_mut().map(|(_, p)| p)) {
            process.request_stop();
        }
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Calls `condition` every 25 ms until it holds or `timeout` passes; returns whether it held.
pub fn poll(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The primary's port as the sentinel on `sentinel` names it.
fn master_addr_of(sentinel: u16) -> Result<u16, String> {
    let reply = raw_command(
        addr(sentinel),
        &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME],
    )
    .map_err(|e| e.to_string())?;
    reply
        .lines()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("GET-MASTER-ADDR-BY-NAME answered {reply:?}"))
}

/// A flattened `SENTINEL MASTER`/`REPLICAS` reply as key/value pairs.
fn pairs(reply: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = reply.lines().collect();
    lines
        .chunks_exact(2)
        .map(|kv| (kv[0].to_owned(), kv[1].to_owned()))
        .collect()
}

fn start_data_node(dir: &Path, replica_of: Option<u16>) -> DataNode {
    let mut failures = Vec::new();
    while failures.len() < 5 {
        let port = free_port();
        let node_dir = dir.join(port.to_string());
        std::fs::create_dir_all(&node_dir).expect("create a data node directory");
        let conf = match replica_of {
            Some(master) => format!("replicaof 127.0.0.1 {master}\n"),
            None => String::new(),
        };
        std::fs::write(node_dir.join("redis.conf"), conf).expect("write a data node config");
        let mut node = DataNode {
            port,
            dir: node_dir,
            process: None,
        };
        match node.spawn() {
            Ok(()) => return node,
            Err(e) => failures.push(e),
        }
    }
    panic!("could not start a data node: {}", failures.join("; "))
}

fn data_args(port: u16, dir: &Path) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--dir",
        &dir.display().to_string(),
        "--logfile",
        "redis.log",
        "--daemonize",
        "no",
        "--save",
        "",
        "--appendonly",
        "no",
        "--repl-diskless-sync-delay",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn start_sentinel(dir: &Path, master: u16) -> (u16, Supervised) {
    let mut failures = Vec::new();
    while failures.len() < 5 {
        let port = free_port();
        let sentinel_dir = dir.join(format!("sentinel-{port}"));
        std::fs::create_dir_all(&sentinel_dir).expect("create a sentinel directory");
        let conf = sentinel_dir.join("sentinel.conf");
        let text = format!(
            "port {port}\n\
             bind 127.0.0.1\n\
             dir {dir}\n\
             logfile sentinel.log\n\
             daemonize no\n\
             sentinel resolve-hostnames no\n\
             sentinel monitor {MASTER_NAME} 127.0.0.1 {master} {QUORUM}\n\
             sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n\
             sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n",
            dir = sentinel_dir.display()
        );
        std::fs::write(&conf, text).expect("write a sentinel config");
        match Supervised::start(
            &conf,
            &["--sentinel".to_owned()],
            addr(port),
            "sentinel.log",
        ) {
            Ok(process) => {
                let tuned = raw_command(
                    addr(port),
                    &[
                        "SENTINEL",
                        "DEBUG",
                        "info-period",
                        "1000",
                        "publish-period",
                        "500",
                    ],
                );
                if let Err(e) = tuned {
                    panic!("SENTINEL DEBUG on sentinel {port}: {e}");
                }
                return (port, process);
            }
            Err(e) => failures.push(e),
        }
    }
    panic!("could not start a sentinel: {}", failures.join("; "))
}
