//! A real Redis Cluster for tests: six `redis-server --cluster-enabled yes` nodes on loopback,
//! three primaries with one replica each, joined by `redis-cli --cluster create`.
//!
//! Settings, and why:
//! - No persistence (`--save '' --appendonly no`): a restarted node comes back empty and, as
//!   its `nodes.conf` is kept, rejoins as the same node; if a failover happened meanwhile it
//!   becomes a replica and resyncs. A primary restarted *before* its failover keeps its slots
//!   and comes back empty, as an unpersisted production node would.
//! - `--cluster-node-timeout` [`NODE_TIMEOUT_MS`]: small, so a killed primary is replaced in
//!   a few seconds, yet long enough that a node stalled by a loaded 2-core machine is not
//!   failed over by mistake.
//! - `cluster-require-full-coverage` stays at its default, `yes`: while a slot has no live
//!   primary every node answers CLUSTERDOWN, which is what clients meet in production and
//!   what the store's failover handling must survive.
//! - `--cluster-replica-validity-factor 0`: a replica always stands for election, however long
//!   its link was down, so a failover test never depends on timing against that factor.
//! - `--repl-diskless-sync-delay 0`: replicas sync at once instead of after the 5 s default.
//!
//! Raw commands ([`raw_command`], [`RedisCluster::command`]) go to one node, which answers
//! MOVED for a key of a slot it does not own; [`RedisCluster::cluster_command`] sends a
//! command to the primary owning its key.

use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::Supervised;
use crate::{
    ensure_cli_installed, ensure_installed, free_port, info_field, raw_command, raw_commands,
};

/// `cluster-node-timeout` of every node: how long a node must be unreachable before it is
/// suspected; a failover follows in about twice that.
pub const NODE_TIMEOUT_MS: u64 = 2000;

/// Number of nodes: three primaries, each with one replica.
const NODES: usize = 6;

/// Hash slots in a Redis Cluster.
const SLOTS: usize = 16384;

/// How long starting and joining the cluster may take on a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Cluster bus ports are data ports plus this; both must be free.
const BUS_OFFSET: u16 = 10000;

/// A six-node Redis Cluster owned by the test process. Every node runs under the wrapper that
/// stops it when the test process exits; dropping the cluster stops them all.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

#[derive(Debug)]
struct Node {
    port: u16,
    dir: PathBuf,
    process: Option<Supervised>,
}

impl Node {
    fn spawn(&mut self) -> Result<(), String> {
        let conf = self.dir.join("redis.conf");
        if !conf.exists() {
            std::fs::write(&conf, "").map_err(|e| format!("write {}: {e}", conf.display()))?;
        }
        let args = node_args(self.port, &self.dir);
        self.process = Some(Supervised::start(
            &conf,
            &args,
            addr(self.port),
            "redis.log",
        )?);
        Ok(())
    }
}

impl RedisCluster {
    /// Starts six nodes on free loopback ports, joins them into a cluster of three primaries
    /// with one replica each, and waits until it is healthy (see [`RedisCluster::health`]).
    /// Panics, saying why, when it cannot.
    pub fn start() -> RedisCluster {
        ensure_installed();
        ensure_cli_installed();
        let dir = tempfile::tempdir().expect("create a temporary directory for the cluster");
        let mut nodes = Vec::with_capacity(NODES);
        let mut taken = HashSet::new();
        let mut failures = Vec::new();
        while nodes.len() < NODES {
            if failures.len() >= 10 {
                panic!("could not start cluster nodes: {}", failures.join("; "));
            }
            let port = cluster_port(&taken);
            // Never offer a port twice, whether its node started or not.
            taken.extend([port, port + BUS_OFFSET]);
            let node_dir = dir.path().join(port.to_string());
            std::fs::create_dir_all(&node_dir).expect("create a node directory");
            let mut node = Node {
                port,
                dir: node_dir,
                process: None,
            };
            match node.spawn() {
                Ok(()) => nodes.push(node),
                Err(e) => failures.push(e),
            }
        }
        let cluster = RedisCluster { nodes, dir };
        cluster.create();
        if !cluster.wait_ok(START_TIMEOUT) {
            panic!(
                "the cluster on {:?} did not become healthy within {START_TIMEOUT:?}: {}",
                cluster.ports(),
                cluster.health().unwrap_err()
            );
        }
        cluster
    }

    fn create(&self) {
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        let text = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() || text.contains("[ERR]") {
            panic!(
                "redis-cli --cluster create failed ({}): {text}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }

    /// `redis://127.0.0.1:<port>` of every node, running or not, in a fixed order.
    pub fn seed_urls(&self) -> Vec<String> {
        self.ports()
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// The ports of every node, running or not, in the order of [`RedisCluster::seed_urls`].
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    pub fn addr(&self, port: u16) -> SocketAddr {
        addr(port)
    }

    /// Whether the node on `port` runs (it was not killed, or was restarted).
    pub fn is_running(&self, port: u16) -> bool {
        self.node(port).process.is_some()
    }

    /// The running primaries, as the first running node that answers sees them now.
    pub fn primaries(&self) -> Vec<u16> {
        self.live_entries(true)
    }

    /// The running replicas, as the first running node that answers sees them now.
    pub fn replicas(&self) -> Vec<u16> {
        self.live_entries(false)
    }

    /// The replicas of `primary`, running or not, as the first running node that answers sees
    /// them now.
    pub fn replicas_of(&self, primary: u16) -> Vec<u16> {
        let view = self.view();
        let Some(id) = view.iter().find(|e| e.port == primary).map(|e| &e.id) else {
            return Vec::new();
        };
        let mut ports: Vec<u16> = view
            .iter()
            .filter(|e| e.master_id.as_ref() == Some(id))
            .map(|e| e.port)
            .collect();
        ports.sort_unstable();
        ports
    }

    fn live_entries(&self, primaries: bool) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .view()
            .iter()
            .filter(|e| e.is_master() == primaries && !e.failing() && self.is_running(e.port))
            .map(|e| e.port)
            .collect();
        ports.sort_unstable();
        ports
    }

    /// The primary that owns `slot`, as the first running node that answers sees it now.
    /// Panics when no primary does.
    pub fn primary_of_slot(&self, slot: u16) -> u16 {
        self.view()
            .iter()
            .find(|e| e.is_master() && !e.failing() && e.owns(slot))
            .map(|e| e.port)
            .unwrap_or_else(|| panic!("no live primary owns slot {slot}"))
    }

    /// How many slots the primary on `primary` owns, as the first running node that answers
    /// sees it now.
    pub fn slot_count(&self, primary: u16) -> usize {
        self.view()
            .iter()
            .filter(|e| e.port == primary && e.is_master())
            .flat_map(|e| &e.slots)
            .map(|&(a, b)| usize::from(b - a) + 1)
            .sum()
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`).
    pub fn slot_of(&self, key: &str) -> u16 {
        let reply = self.any_node_command(&["CLUSTER", "KEYSLOT", key]);
        reply
            .parse()
            .unwrap_or_else(|_| panic!("CLUSTER KEYSLOT answered {reply:?}"))
    }

    /// The node id of the node on `port` (`CLUSTER MYID`).
    pub fn node_id(&self, port: u16) -> String {
        self.command(port, &["CLUSTER", "MYID"])
    }

    /// Sends one command to the node on `port` and returns its reply; panics on an error reply,
    /// MOVED included (use [`raw_command`] with [`RedisCluster::addr`] to see errors).
    pub fn command(&self, port: u16, args: &[&str]) -> String {
        raw_command(addr(port), args)
            .unwrap_or_else(|e| panic!("{args:?} on cluster node {port}: {e}"))
    }

    /// Sends a command whose first argument is its key (`GET k`, `HSET k f v`, ...) to the
    /// primary owning the key's slot, following one MOVED or ASK redirection (a slot moved
    /// or being moved since the slot map was read). Panics on any other error reply.
    pub fn cluster_command(&self, args: &[&str]) -> String {
        let key = args
            .get(1)
            .unwrap_or_else(|| panic!("{args:?} has no key argument"));
        let owner = self.primary_of_slot(self.slot_of(key));
        let reply = raw_command(addr(owner), args).or_else(|e| {
            let message = e.to_string();
            let mut words = message.split_whitespace();
            let (kind, target) = (words.next(), words.nth(1));
            match (kind, target.and_then(|t| t.parse::<SocketAddr>().ok())) {
                (Some("MOVED"), Some(target)) => raw_command(target, args),
                (Some("ASK"), Some(target)) => {
                    raw_commands(target, &[&["ASKING"], args]).map(|mut r| r.remove(1))
                }
                _ => Err(e),
            }
        });
        reply.unwrap_or_else(|e| panic!("{args:?} on the cluster: {e}"))
    }

    /// Kills the node on `port` with SIGKILL, as a crash would.
    pub fn kill(&mut self, port: u16) {
        let node = self.node_mut(port);
        let mut process = node
            .process
            .take()
            .unwrap_or_else(|| panic!("cluster node {port} is not running"));
        process.kill();
    }

    /// Starts the node on `port` again with the same directory (and so the same `nodes.conf`
    /// and node id); it rejoins the cluster. Returns once the node answers; use
    /// [`RedisCluster::wait_ok`] to wait until the cluster has taken it back.
    pub fn restart(&mut self, port: u16) {
        let node = self.node_mut(port);
        assert!(node.process.is_none(), "cluster node {port} is running");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match node.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => {
                    panic!("could not restart cluster node {port}: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Polls [`RedisCluster::health`] until it holds or `timeout` passes; returns whether it
    /// held.
    pub fn wait_ok(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.health().is_ok() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the cluster is healthy with the nodes that run, and if not, why: every running
    /// node says `cluster_state:ok`, knows every other running node as connected and not
    /// failing, and has the same view of roles and slots, in which all 16384 slots belong to
    /// running primaries; every running replica's link to its primary is up.
    pub fn health(&self) -> Result<(), String> {
        let running: Vec<u16> = self.running_ports();
        if running.is_empty() {
            return Err("no node runs".into());
        }
        let mut reference: Option<(u16, Vec<Summary>)> = None;
        for &port in &running {
            let query = |args: &[&str]| {
                raw_command(addr(port), args).map_err(|e| format!("node {port}: {e}"))
            };
            let info = query(&["CLUSTER", "INFO"])?;
            let state = info_field(&info, "cluster_state").unwrap_or("");
            if state != "ok" {
                return Err(format!("node {port} says cluster_state:{state}"));
            }
            let view = parse_nodes(&query(&["CLUSTER", "NODES"])?);
            let summary = summarize(&view, &running).map_err(|e| format!("node {port}: {e}"))?;
            match &reference {
                None => reference = Some((port, summary)),
                Some((first, seen)) if *seen != summary => {
                    return Err(format!(
                        "nodes {first} and {port} disagree: {seen:?} against {summary:?}"
                    ));
                }
                Some(_) => {}
            }
        }
        let (_, summary) = reference.expect("at least one node runs");
        for replica in summary.iter().filter(|s| s.master.is_some()) {
            let info = raw_command(addr(replica.port), &["INFO", "replication"])
                .map_err(|e| format!("node {}: {e}", replica.port))?;
            let link = info_field(&info, "master_link_status").unwrap_or("");
            if link != "up" {
                return Err(format!(
                    "replica {} has master_link_status:{link}",
                    replica.port
                ));
            }
        }
        Ok(())
    }

    /// Moves `slots` hash slots, with their keys, from the primary on `from` to the primary on
    /// `to` with `redis-cli --cluster reshard`, then waits until every node agrees on the new
    /// slot map. Panics with redis-cli's output when it fails.
    pub fn reshard(&self, from: u16, to: u16, slots: u32) {
        let output = self
            .reshard_command(from, to, slots)
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster reshard");
        let text = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() || text.contains("[ERR]") {
            panic!(
                "redis-cli --cluster reshard failed ({}): {text}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        if !self.wait_ok(Duration::from_secs(30)) {
            panic!(
                "the cluster was not healthy after a reshard: {}",
                self.health().unwrap_err()
            );
        }
    }

    /// Starts the reshard of [`RedisCluster::reshard`] in the background, so a test can run
    /// load while slots move; [`Reshard::wait`] waits for it to finish.
    pub fn start_reshard(&self, from: u16, to: u16, slots: u32) -> Reshard {
        let log = self
            .dir
            .path()
            .join(format!("reshard-{from}-{to}-{slots}-{}.log", unique()));
        let file = std::fs::File::create(&log).expect("create a reshard log");
        let child = self
            .reshard_command(from, to, slots)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone the reshard log handle"))
            .stderr(file)
            .spawn()
            .expect("run redis-cli --cluster reshard");
        Reshard { child, log }
    }

    fn reshard_command(&self, from: u16, to: u16, slots: u32) -> Command {
        let seed = self
            .running_ports()
            .first()
            .copied()
            .expect("a running cluster node");
        let mut cmd = Command::new("redis-cli");
        cmd.args(["--cluster", "reshard", &format!("127.0.0.1:{seed}")])
            .args(["--cluster-from", &self.node_id(from)])
            .args(["--cluster-to", &self.node_id(to)])
            .args(["--cluster-slots", &slots.to_string()])
            .arg("--cluster-yes");
        cmd
    }

    fn running_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.process.is_some())
            .map(|n| n.port)
            .collect()
    }

    fn node(&self, port: u16) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("{port} is not a node of this cluster"))
    }

    fn node_mut(&mut self, port: u16) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("{port} is not a node of this cluster"))
    }

    fn any_node_command(&self, args: &[&str]) -> String {
        let mut errors = Vec::new();
        for port in self.running_ports() {
            match raw_command(addr(port), args) {
                Ok(reply) => return reply,
                Err(e) => errors.push(format!("{port}: {e}")),
            }
        }
        panic!("no cluster node answered {args:?}: {}", errors.join("; "))
    }

    /// `CLUSTER NODES` of the first running node that answers.
    fn view(&self) -> Vec<Entry> {
        parse_nodes(&self.any_node_command(&["CLUSTER", "NODES"]))
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        // Stop every node at once rather than one after another; dropping the nodes waits.
        for process in self.nodes.iter_mut().filter_map(|n| n.process.as_mut()) {
            process.request_stop();
        }
    }
}

/// A reshard running in the background (see [`RedisCluster::start_reshard`]).
#[derive(Debug)]
pub struct Reshard {
    /// The `redis-cli --cluster reshard` process; its output goes to a log file.
    pub child: Child,
    log: PathBuf,
}

impl Reshard {
    /// Waits for the reshard to finish; panics with its output when it failed.
    pub fn wait(mut self) {
        let status = self
            .child
            .wait()
            .expect("wait for redis-cli --cluster reshard");
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        if !status.success() || text.contains("[ERR]") {
            panic!("redis-cli --cluster reshard failed ({status}): {text}");
        }
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A free loopback port below 55535 whose cluster bus port (+10000) is free too, and neither
/// of which is in `taken`.
fn cluster_port(taken: &HashSet<u16>) -> u16 {
    loop {
        let port = free_port();
        let Some(bus) = port.checked_add(BUS_OFFSET) else {
            continue;
        };
        if taken.contains(&port) || taken.contains(&bus) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", bus)).is_ok() {
            return port;
        }
    }
}

fn node_args(port: u16, dir: &Path) -> Vec<String> {
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
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        &NODE_TIMEOUT_MS.to_string(),
        "--cluster-replica-validity-factor",
        "0",
        "--repl-diskless-sync-delay",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    id: String,
    port: u16,
    flags: Vec<String>,
    master_id: Option<String>,
    connected: bool,
    /// Inclusive slot ranges; slots being imported or migrated (`[...]`) are left out.
    slots: Vec<(u16, u16)>,
}

impl Entry {
    fn is_master(&self) -> bool {
        self.flags.iter().any(|f| f == "master")
    }

    /// Failing, suspected, or not yet (or no longer) a proper member.
    fn failing(&self) -> bool {
        self.flags
            .iter()
            .any(|f| matches!(f.as_str(), "fail" | "fail?" | "handshake" | "noaddr"))
    }

    fn owns(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
    }
}

/// Parses `CLUSTER NODES`: `<id> <ip:port@cport[,hostname]> <flags> <master> <ping-sent>
/// <pong-recv> <config-epoch> <link-state> <slot> ...`.
fn parse_nodes(text: &str) -> Vec<Entry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            let host_port = fields[1].split(['@', ',']).next()?;
            let port = host_port.rsplit(':').next()?.parse().ok()?;
            let slots = fields[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|n| (n, n)),
                })
                .collect();
            Some(Entry {
                id: fields[0].to_owned(),
                port,
                flags: fields[2].split(',').map(str::to_owned).collect(),
                master_id: (fields[3] != "-").then(|| fields[3].to_owned()),
                connected: fields[7] == "connected",
                slots,
            })
        })
        .collect()
}

/// One running node as a view sees it, with everything that should be the same in every
/// node's view.
#[derive(Debug, PartialEq, Eq)]
struct Summary {
    port: u16,
    /// The port of its primary, for a replica.
    master: Option<u16>,
    slots: Vec<(u16, u16)>,
}

/// The part of one node's view that must agree across nodes, checked for sanity: every
/// running node is present, connected and not failing; all slots belong to running primaries.
fn summarize(view: &[Entry], running: &[u16]) -> Result<Vec<Summary>, String> {
    let port_of: BTreeMap<&str, u16> = view.iter().map(|e| (e.id.as_str(), e.port)).collect();
    let mut summary = Vec::new();
    let mut covered = 0;
    for &port in running {
        let entry = view
            .iter()
            .find(|e| e.port == port)
            .ok_or_else(|| format!("does not know node {port}"))?;
        if entry.failing() || !entry.connected {
            return Err(format!(
                "sees node {port} as {} ({})",
                entry.flags.join(","),
                if entry.connected {
                    "connected"
                } else {
                    "disconnected"
                }
            ));
        }
        let master = match (&entry.master_id, entry.is_master()) {
            (_, true) => None,
            (Some(id), false) => Some(
                *port_of
                    .get(id.as_str())
                    .ok_or_else(|| format!("node {port} replicates unknown node {id}"))?,
            ),
            (None, false) => return Err(format!("node {port} is neither primary nor replica")),
        };
        let mut slots = entry.slots.clone();
        slots.sort_unstable();
        covered += slots
            .iter()
            .map(|&(a, b)| usize::from(b - a) + 1)
            .sum::<usize>();
        summary.push(Summary {
            port,
            master,
            slots,
        });
    }
    if covered != SLOTS {
        return Err(format!("running primaries own {covered} of {SLOTS} slots"));
    }
    summary.sort_by_key(|s| s.port);
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES_REPLY: &str = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host replica e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@31005 slave 67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 0 1426238316232 5 connected
824fe116063bc5fcf9f4ffd895bc17aee7731ac3 127.0.0.1:30006@31006 slave 292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 0 1426238317741 6 connected
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5459 5460 [5461->-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]
";

    #[test]
    fn parses_cluster_nodes() {
        let view = parse_nodes(NODES_REPLY);
        assert_eq!(view.len(), 6);
        let first = view.iter().find(|e| e.port == 30001).unwrap();
        assert!(first.is_master() && !first.failing());
        assert_eq!(first.slots, vec![(0, 5459), (5460, 5460)]);
        assert!(first.owns(5460) && !first.owns(5461));
        let replica = view.iter().find(|e| e.port == 30005).unwrap();
        assert!(!replica.is_master());
        assert_eq!(
            replica.master_id.as_deref(),
            Some("67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1")
        );
    }

    #[test]
    fn summaries_require_full_coverage_by_running_nodes() {
        let view = parse_nodes(NODES_REPLY);
        let all = [30001, 30002, 30003, 30004, 30005, 30006];
        let summary = summarize(&view, &all).unwrap();
        assert_eq!(summary[4].master, Some(30002));
        // 30001's slots count only while it runs.
        let err = summarize(&view, &all[1..]).unwrap_err();
        assert!(err.contains("own 10923 of 16384"), "{err}");
        let failed = NODES_REPLY.replace("30002@31002 master", "30002@31002 master,fail?");
        let err = summarize(&parse_nodes(&failed), &all).unwrap_err();
        assert!(err.contains("sees node 30002 as master,fail?"), "{err}");
    }
}
