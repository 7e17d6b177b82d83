//! `RedisCluster`: six real nodes, failover by SIGKILL, resharding.

use std::time::Duration;

use anomaly_testkit::{RedisCluster, raw_command, raw_commands};

use crate::{DEADLINE, timed};

#[test]
fn a_cluster_starts_with_every_slot_covered_by_three_primaries() {
    let cluster = timed("cluster start", RedisCluster::start);
    assert_eq!(cluster.ports().len(), 6);
    assert_eq!(cluster.seed_urls().len(), 6);
    let primaries = cluster.primaries();
    assert_eq!(primaries.len(), 3, "{primaries:?}");
    assert_eq!(cluster.replicas().len(), 3);
    for &primary in &primaries {
        assert_eq!(cluster.replicas_of(primary).len(), 1, "{primary}");
    }
    let slots: usize = primaries.iter().map(|&p| cluster.slot_count(p)).sum();
    assert_eq!(slots, 16384);
    cluster.health().unwrap();
    for port in cluster.ports() {
        let info = cluster.command(port, &["CLUSTER", "INFO"]);
        assert!(info.contains("cluster_slots_assigned:16384"), "{info}");
    }

    // A key lives on the primary owning its slot; every other primary redirects.
    let slot = cluster.slot_of("greeting");
    let owner = cluster.primary_of_slot(slot);
    assert!(primaries.contains(&owner));
    assert_eq!(cluster.command(owner, &["SET", "greeting", "hello"]), "OK");
    assert_eq!(cluster.command(owner, &["GET", "greeting"]), "hello");
    for &other in primaries.iter().filter(|&&p| p != owner) {
        let err = raw_command(cluster.addr(other), &["GET", "greeting"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("MOVED {slot} 127.0.0.1:{owner}"),
            "node {other}"
        );
    }
    assert_eq!(cluster.cluster_command(&["GET", "greeting"]), "hello");
    assert_eq!(cluster.cluster_command(&["SET", "other", "x"]), "OK");
    assert_eq!(cluster.cluster_command(&["GET", "other"]), "x");
}

#[test]
fn a_killed_primary_is_replaced_by_its_replica_and_rejoins_as_a_replica() {
    let mut cluster = RedisCluster::start();
    let slot = cluster.slot_of("survivor");
    let old = cluster.primary_of_slot(slot);
    let replica = cluster.replicas_of(old)[0];
    // WAIT counts the writes of its own connection only.
    let replies = raw_commands(
        cluster.addr(old),
        &[&["SET", "survivor", "kept"], &["WAIT", "1", "5000"]],
    );
    assert_eq!(replies.unwrap(), ["OK", "1"]);
    let read = raw_commands(
        cluster.addr(replica),
        &[&["READONLY"], &["GET", "survivor"]],
    );
    assert_eq!(read.unwrap(), ["OK", "kept"], "the replica has the key");

    cluster.kill(old);
    assert!(!cluster.is_running(old));
    assert!(
        cluster.health().is_err(),
        "a dead primary's slots have no live primary"
    );
    let recovered = timed("cluster failover", || cluster.wait_ok(DEADLINE));
    assert!(recovered, "{:?}", cluster.health());
    assert_eq!(cluster.primary_of_slot(slot), replica);
    assert_eq!(cluster.primaries().len(), 3);
    assert!(!cluster.primaries().contains(&old));
    assert_eq!(cluster.command(replica, &["GET", "survivor"]), "kept");
    assert_eq!(cluster.cluster_command(&["GET", "survivor"]), "kept");

    cluster.restart(old);
    let rejoined = timed("cluster rejoin", || cluster.wait_ok(DEADLINE));
    assert!(rejoined, "{:?}", cluster.health());
    assert_eq!(cluster.replicas_of(replica), vec![old]);
    assert!(cluster.replicas().contains(&old));
    // The old primary came back empty (no persistence) and resynced from its new primary.
    let keyspace = cluster.command(old, &["INFO", "keyspace"]);
    assert!(keyspace.contains("db0:keys=1,"), "{keyspace}");
    let err = raw_command(cluster.addr(old), &["GET", "survivor"]).unwrap_err();
    assert_eq!(err.to_string(), format!("MOVED {slot} 127.0.0.1:{replica}"));
}

#[test]
fn reshard_moves_slots_with_their_keys() {
    let cluster = RedisCluster::start();
    let keys: Vec<String> = (0..300).map(|i| format!("key-{i}")).collect();
    for key in &keys {
        assert_eq!(cluster.cluster_command(&["SET", key, key]), "OK");
    }
    let primaries = cluster.primaries();
    let (from, to) = (primaries[0], primaries[1]);
    let (from_before, to_before) = (cluster.slot_count(from), cluster.slot_count(to));
    let owners_before: Vec<u16> = keys
        .iter()
        .map(|k| cluster.primary_of_slot(cluster.slot_of(k)))
        .collect();

    timed("reshard of 500 slots", || cluster.reshard(from, to, 500));

    assert_eq!(cluster.slot_count(from), from_before - 500);
    assert_eq!(cluster.slot_count(to), to_before + 500);
    let mut moved = 0;
    for (key, before) in keys.iter().zip(owners_before) {
        let now = cluster.primary_of_slot(cluster.slot_of(key));
        if before == from && now == to {
            moved += 1;
            // Read from the new owner directly: the key moved with its slot.
            assert_eq!(cluster.command(to, &["GET", key]), *key);
        } else {
            assert_eq!(now, before, "{key} moved though its slot was not resharded");
        }
        assert_eq!(cluster.cluster_command(&["GET", key]), *key);
    }
    // 500 of ~5461 slots, 300 keys spread over 16384 slots: about 9 keys move.
    assert!(moved > 0, "no key was in the 500 moved slots");
}

#[test]
fn commands_keep_working_while_a_background_reshard_moves_slots() {
    let cluster = RedisCluster::start();
    let primaries = cluster.primaries();
    let (from, to) = (primaries[0], primaries[1]);
    let to_before = cluster.slot_count(to);
    let mut reshard = cluster.start_reshard(from, to, 300);
    let mut written = 0;
    while reshard.child.try_wait().unwrap().is_none() {
        let key = format!("during-{written}");
        assert_eq!(cluster.cluster_command(&["SET", &key, "v"]), "OK");
        written += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    reshard.wait();
    assert!(cluster.wait_ok(DEADLINE), "{:?}", cluster.health());
    assert_eq!(cluster.slot_count(to), to_before + 300);
    assert!(written > 0);
    for i in 0..written {
        assert_eq!(
            cluster.cluster_command(&["GET", &format!("during-{i}")]),
            "v"
        );
    }
}
