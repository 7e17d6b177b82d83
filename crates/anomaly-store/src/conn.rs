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
//! keyless commands first, in order, then one sub-pipeline per slot, all in flight at once, with
//! the replies put back in the pipeline's order. Scripts and multi-key commands must still touch
//! one slot each; the layout (see `keys`) sees to that.

use std::collections::HashMap;

use deadpool_redis::redis::aio::{ConnectionLike, MultiplexedConnection};
use deadpool_redis::redis::cluster_async::ClusterConnection;
use deadpool_redis::redis::{self, Cmd, Pipeline, RedisFuture, RedisResult, Value};
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

/// A connection in any mode; cheap to clone (both kinds are handles on a shared task).
#[derive(Clone)]
pub(crate) enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Conn::Single(c) => f.debug_tuple("Conn::Single").field(c).finish(),
            Conn::Cluster(_) => f.write_str("Conn::Cluster"),
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
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
            Conn::Cluster(c) => {
                if pipeline.is_transaction() {
                    c.req_packed_commands(pipeline, offset, count)
                } else {
                    split_by_slot(c.clone(), pipeline).boxed()
                }
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Conn {
    /// Sends `pipe` to one node as it is (never split): in a cluster, the node of its first
    /// keyed command, so that a `WAIT` in it follows that node's writes on the same connection.
    /// Every reply, ignored or not, in order.
    pub(crate) async fn query_one_node(&mut self, pipe: &Pipeline) -> RedisResult<Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipe, 0, pipe.len()).await,
            Conn::Cluster(c) => c.req_packed_commands(pipe, 0, pipe.len()).await,
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

/// Runs a non-transactional pipeline on a cluster: keyless commands first, one at a time in
/// order (a SCRIPT LOAD then reaches every primary before the EVALSHAs that need it), then the
/// keyed commands grouped by slot, one sub-pipeline per slot, concurrently. Replies come back in
/// the pipeline's order, ignored ones included (the caller drops those).
async fn split_by_slot(conn: ClusterConnection, pipeline: &Pipeline) -> RedisResult<Vec<Value>> {
    let commands: Vec<&Cmd> = pipeline.cmd_iter().collect();
    let mut replies: Vec<Option<Value>> = vec![None; commands.len()];
    let mut groups: HashMap<u16, (Pipeline, Vec<usize>)> = HashMap::new();
    let mut keyless = Vec::new();
    for (i, cmd) in commands.iter().enumerate() {
        match routing_key(cmd) {
            Some(key) => {
                let (sub, positions) = groups.entry(slot_of(&key)).or_default();
                sub.add_command((*cmd).clone());
                positions.push(i);
            }
            None => keyless.push(i),
        }
    }
    for i in keyless {
        let mut c = conn.clone();
        replies[i] = Some(c.req_packed_command(commands[i]).await?);
    }
    let answered = try_join_all(groups.into_values().map(|(sub, positions)| {
        let mut c = conn.clone();
        async move {
            let values = c.req_packed_commands(&sub, 0, sub.len()).await?;
            Ok::<_, redis::RedisError>((positions, values))
        }
    }))
    .await?;
    for (positions, values) in answered {
        for (i, value) in positions.into_iter().zip(values) {
            replies[i] = Some(value);
        }
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
