//! Connections in each `redis.mode`: one type, [`Conn`], that every operation runs on, and the
//! pool manager that makes them.
//!
//! - **standalone**: a multiplexed connection to `redis.url`.
//! - **sentinel**: a multiplexed connection to the primary the sentinels name. Every new
//!   connection asks them again (and redis-rs checks the named node's `ROLE`), and a connection
//!   whose operation failed as unavailable is never reused ([`crate::Store::run_holding`]), so a
//!   failover is followed without a restart: the old primary's connections break, or answer
//!   `READONLY` once it comes back as a replica, and the next operation connects to the new one.
//! - **cluster**: redis-rs's cluster connection, which discovers the slots from the seed nodes,
//!   follows MOVED and ASK, and refreshes its slot map on redirections and failures.
//!
//! A cluster connection sends a pipeline to one node and refuses one whose commands live in
//! several slots. The store's pipelines are plain batches (never MULTI), so [`Conn`] splits them:
//! keyless commands first, in order, then one sub-pipeline per primary (by a slot map read with
//! `CLUSTER SLOTS` and shared by the pool's connections), all in flight at once, with the
//! replies put back in the pipeline's order. A primary answers each command of its sub-pipeline
//! for itself, so commands of many slots can share one; a command answered MOVED or ASK (a slot
//! that moved since the map was read) is sent again on its own through the cluster client, which
//! follows the redirection, and the map is read again. Without a map (it could not be read),
//! each slot gets a sub-pipeline of its own. Scripts and multi-key commands must still touch one
//! slot each; the layout (see `keys`) sees to that.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use deadpool_redis::redis::aio::{ConnectionLike, MultiplexedConnection};
use deadpool_redis::redis::cluster_async::ClusterConnection;
use deadpool_redis::redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use deadpool_redis::redis::{
    self, Cmd, Pipeline, RedisFuture, RedisResult, ServerErrorKind, Value,
};
use futures::FutureExt;
use futures::future::try_join_all;

/// Slots of a Redis Cluster.
pub(crate) const SLOTS: u16 = 16384;

/// The cluster slot of `key`: CRC16 (XMODEM) of its hash tag (the bytes between the first `{`
/// and the next `}`, when not empty), else of the whole key, modulo 16384 — the Redis Cluster
/// specification's `HASH_SLOT`.
pub(crate) fn slot_of(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(key)) % SLOTS
}

/// Which primary serves each slot, as `CLUSTER SLOTS` last said; shared by a pool's cluster
/// connections, dropped when a reply shows it is out of date.
#[derive(Debug, Default)]
pub(crate) struct SlotMap(RwLock<Option<Arc<Owners>>>);

#[derive(Debug)]
struct Owners {
    /// Per slot, an index into `nodes` (`u16::MAX`: no owner known).
    slot_owner: Vec<u16>,
    nodes: Vec<(String, u16)>,
}

impl SlotMap {
    fn get(&self) -> Option<Arc<Owners>> {
        self.0.read().ok().and_then(|m| m.clone())
    }

    fn forget(&self) {
        if let Ok(mut m) = self.0.write() {
            *m = None;
        }
    }

    /// The map, read from the cluster if there is none.
    async fn get_or_read(&self, conn: &mut ClusterConnection) -> Option<Arc<Owners>> {
        if let Some(owners) = self.get() {
            return Some(owners);
        }
        let reply: Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(conn)
            .await
            .ok()?;
        let owners = Arc::new(parse_cluster_slots(&reply)?);
        if let Ok(mut m) = self.0.write() {
            *m = Some(Arc::clone(&owners));
        }
        Some(owners)
    }
}

/// `CLUSTER SLOTS`: `[[start, end, [host, port, id, ...], replicas...], ...]`.
fn parse_cluster_slots(reply: &Value) -> Option<Owners> {
    let Value::Array(ranges) = reply else {
        return None;
    };
    let mut owners = Owners {
        slot_owner: vec![u16::MAX; usize::from(SLOTS)],
        nodes: Vec::new(),
    };
    for range in ranges {
        let Value::Array(fields) = range else {
            return None;
        };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(primary))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            return None;
        };
        let host = match primary.first()? {
            Value::BulkString(b) => String::from_utf8(b.clone()).ok()?,
            Value::SimpleString(s) => s.clone(),
            _ => return None,
        };
        let Value::Int(port) = primary.get(1)? else {
            return None;
        };
        let node = (host, u16::try_from(*port).ok()?);
        let index = match owners.nodes.iter().position(|n| *n == node) {
            Some(i) => i,
            None => {
                owners.nodes.push(node);
                owners.nodes.len() - 1
            }
        };
        let (start, end) = (usize::try_from(*start).ok()?, usize::try_from(*end).ok()?);
        for slot in owners.slot_owner.get_mut(start..=end)? {
            *slot = u16::try_from(index).ok()?;
        }
    }
    Some(owners)
}

/// A connection in any mode; cheap to clone (both kinds are handles on a shared task).
#[derive(Clone)]
pub(crate) enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection, Arc<SlotMap>),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Conn::Single(c) => f.debug_tuple("Conn::Single").field(c).finish(),
            Conn::Cluster(..) => f.write_str("Conn::Cluster"),
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c, _) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c, map) => {
                if pipeline.is_transaction() {
                    c.req_packed_commands(pipeline, offset, count)
                } else {
                    split_by_node(c.clone(), Arc::clone(map), pipeline).boxed()
                }
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c, _) => c.get_db(),
        }
    }
}

/// Where a per-node command (SCAN) goes: the server, or one primary of the cluster.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Server,
    Node(String, u16),
}

impl Conn {
    /// The nodes that together hold every key: the server, or each primary of the cluster (as
    /// `CLUSTER SLOTS` names them now).
    pub(crate) async fn scan_targets(&mut self) -> Vec<Target> {
        match self {
            Conn::Single(_) => vec![Target::Server],
            Conn::Cluster(c, map) => {
                map.forget();
                match map.get_or_read(c).await {
                    Some(owners) => owners
                        .nodes
                        .iter()
                        .map(|(host, port)| Target::Node(host.clone(), *port))
                        .collect(),
                    None => Vec::new(),
                }
            }
        }
    }

    /// Sends `cmd` to `target`.
    pub(crate) async fn query_on(&mut self, target: &Target, cmd: Cmd) -> RedisResult<Value> {
        match (self, target) {
            (Conn::Cluster(c, _), Target::Node(host, port)) => {
                c.route_command(
                    cmd,
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                        host: host.clone(),
                        port: *port,
                    }),
                )
                .await
            }
            (conn, _) => cmd.query_async(conn).await,
        }
    }

    /// PING one node: the server, or a node of the cluster picked at random.
    pub(crate) async fn ping_any(&mut self) -> RedisResult<()> {
        let ping = redis::cmd("PING");
        let _: Value = match self {
            Conn::Single(c) => ping.query_async(c).await?,
            Conn::Cluster(c, _) => {
                c.route_command(ping, RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random))
                    .await?
            }
        };
        Ok(())
    }

    /// Sends `pipe` to one node as it is (never split): in a cluster, the node of its first
    /// keyed command, so that a `WAIT` in it follows that node's writes on the same connection.
    /// Every reply, ignored or not, in order.
    pub(crate) async fn query_one_node(&mut self, pipe: &Pipeline) -> RedisResult<Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipe, 0, pipe.len()).await,
            Conn::Cluster(c, _) => c.req_packed_commands(pipe, 0, pipe.len()).await,
        }
    }
}

/// The key a command is routed by, for the commands the store sends: the first key of
/// EVAL/EVALSHA (none when it has no keys), none for keyless commands, else the first argument.
fn routing_key(cmd: &Cmd) -> Option<Vec<u8>> {
    let mut args = cmd.args_iter().filter_map(|a| match a {
        redis::Arg::Simple(bytes) => Some(bytes),
        _ => None,
    });
    let name = args.next()?.to_ascii_uppercase();
    match name.as_slice() {
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" | b"FCALL_RO" => {
            let _script = args.next()?;
            let numkeys: usize = std::str::from_utf8(args.next()?).ok()?.parse().ok()?;
            if numkeys == 0 {
                None
            } else {
                args.next().map(<[u8]>::to_vec)
            }
        }
        b"SCRIPT" | b"PING" | b"INFO" | b"TIME" | b"WAIT" | b"CLUSTER" | b"CLIENT" => None,
        _ => args.next().map(<[u8]>::to_vec),
    }
}

/// Runs a non-transactional pipeline on a cluster (see the module docs): keyless commands first,
/// one at a time in order (a SCRIPT LOAD then reaches every primary before the EVALSHAs that
/// need it), then the keyed commands grouped by primary, one sub-pipeline each, concurrently.
/// Replies come back in the pipeline's order, ignored ones included (the caller drops those).
async fn split_by_node(
    mut conn: ClusterConnection,
    map: Arc<SlotMap>,
    pipeline: &Pipeline,
) -> RedisResult<Vec<Value>> {
    let commands: Vec<&Cmd> = pipeline.cmd_iter().collect();
    let mut replies: Vec<Option<Value>> = vec![None; commands.len()];
    let owners = map.get_or_read(&mut conn).await;
    // Per group: where it goes (a node, or a slot when no map is known) and its positions.
    let mut groups: HashMap<(u16, bool), (Pipeline, Vec<usize>)> = HashMap::new();
    let mut keyless = Vec::new();
    for (i, cmd) in commands.iter().enumerate() {
        match routing_key(cmd) {
            Some(key) => {
                let slot = slot_of(&key);
                let group = match owners.as_ref().map(|o| o.slot_owner[usize::from(slot)]) {
                    Some(node) if node != u16::MAX => (node, true),
                    _ => (slot, false),
                };
                let (sub, positions) = groups.entry(group).or_default();
                sub.add_command((*cmd).clone());
                positions.push(i);
            }
            None => keyless.push(i),
        }
    }
    for i in keyless {
        replies[i] = Some(conn.req_packed_command(commands[i]).await?);
    }
    let answered = try_join_all(
        groups
            .into_iter()
            .map(|((target, by_node), (sub, positions))| {
                let mut c = conn.clone();
                let node = owners
                    .as_ref()
                    .filter(|_| by_node)
                    .and_then(|o| o.nodes.get(usize::from(target)).cloned());
                async move {
                    let values = match node {
                        Some((host, port)) => {
                            c.route_pipeline(
                                sub.clone(),
                                0,
                                sub.len(),
                                SingleNodeRoutingInfo::ByAddress { host, port },
                            )
                            .await
                        }
                        None => c.req_packed_commands(&sub, 0, sub.len()).await,
                    };
                    Ok::<_, redis::RedisError>((positions, sub, values))
                }
            }),
    )
    .await?;
    let mut stale = false;
    for (positions, sub, values) in answered {
        match values {
            Ok(values) => {
                for ((i, cmd), value) in positions.into_iter().zip(sub.cmd_iter()).zip(values) {
                    let redirected = matches!(
                        &value,
                        Value::ServerError(e)
                            if matches!(e.kind(), Some(ServerErrorKind::Moved | ServerErrorKind::Ask))
                    );
                    replies[i] = Some(if redirected {
                        stale = true;
                        conn.req_packed_command(cmd).await?
                    } else {
                        value
                    });
                }
            }
            Err(e) => {
                // The node may be gone or its slots elsewhere: each command on its own, through
                // the client's own routing and retries.
                stale = true;
                if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                    map.forget();
                }
                for (i, cmd) in positions.into_iter().zip(sub.cmd_iter()) {
                    replies[i] = Some(conn.req_packed_command(cmd).await?);
                }
            }
        }
    }
    if stale {
        map.forget();
    }
    Ok(replies
        .into_iter()
        .map(|v| v.unwrap_or(Value::Nil))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_cluster_specification() {
        // Values from the specification and `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(slot_of(b"123456789"), 0x31C3 % SLOTS);
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        assert_eq!(slot_of(b"foo{}{bar}"), slot_of(b"foo{}{bar}"));
        assert_ne!(
            slot_of(b"foo{}{bar}"),
            slot_of(b"bar"),
            "an empty tag hashes the whole key"
        );
        assert_eq!(slot_of(b"foo{{bar}}zap"), slot_of(b"{bar"));
        assert_eq!(
            slot_of(b"dur:{a|b|1|weekday}"),
            slot_of(b"base:{a|b|1|weekday}")
        );
    }

    #[test]
    fn commands_route_by_their_key() {
        let mut eval = redis::cmd("EVALSHA");
        eval.arg("abc").arg(2).arg("k1").arg("k2").arg("a");
        assert_eq!(routing_key(&eval).as_deref(), Some(&b"k1"[..]));
        let mut keyless = redis::cmd("EVAL");
        keyless.arg("return 1").arg(0);
        assert_eq!(routing_key(&keyless), None);
        let mut load = redis::cmd("SCRIPT");
        load.arg("LOAD").arg("return 1");
        assert_eq!(routing_key(&load), None);
        let mut get = redis::cmd("hget");
        get.arg("base:{x}").arg("v");
        assert_eq!(routing_key(&get).as_deref(), Some(&b"base:{x}"[..]));
    }
}
