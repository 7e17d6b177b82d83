//! `RedisSentinels`: a primary, a replica and three real sentinels; failover by SIGKILL.

use anomaly_testkit::{MASTER_NAME, RedisSentinels, raw_command, raw_commands};

use crate::{DEADLINE, timed};

#[test]
fn sentinels_start_and_agree_on_the_primary_and_its_replica() {
    let sentinels = timed("sentinels start", RedisSentinels::start);
    sentinels.health().unwrap();
    assert_eq!(sentinels.master_name(), MASTER_NAME);
    assert_eq!(sentinels.sentinel_urls().len(), 3);
    let [first, second] = sentinels.data_ports()[..] else {
        panic!("two data nodes")
    };
    assert_eq!(sentinels.master_port(), first);
    assert_eq!(sentinels.replica_port(), second);
    for port in sentinels.sentinel_ports() {
        let state = sentinels.command(port, &["SENTINEL", "MASTER", MASTER_NAME]);
        assert!(state.contains("num-other-sentinels\n2\n"), "{state}");
        assert!(state.contains("num-slaves\n1\n"), "{state}");
    }

    // Writes to the primary reach the replica, which refuses writes of its own.
    // WAIT counts the writes of its own connection only.
    let replies = raw_commands(
        sentinels.addr(first),
        &[&["SET", "k", "v"], &["WAIT", "1", "5000"]],
    );
    assert_eq!(replies.unwrap(), ["OK", "1"]);
    assert_eq!(sentinels.command(second, &["GET", "k"]), "v");
    let err = raw_command(sentinels.addr(second), &["SET", "k", "w"]).unwrap_err();
    assert!(err.to_string().starts_with("READONLY"), "{err}");
}

#[test]
fn a_killed_master_fails_over_to_the_replica_and_comes_back_as_its_replica() {
    let mut sentinels = RedisSentinels::start();
    let replica = sentinels.replica_port();
    let master = sentinels.master_port();
    let replies = raw_commands(
        sentinels.addr(master),
        &[&["SET", "before", "1"], &["WAIT", "1", "5000"]],
    );
    assert_eq!(replies.unwrap(), ["OK", "1"]);
    assert_eq!(sentinels.command(replica, &["GET", "before"]), "1");

    assert_eq!(sentinels.kill_master(), master);
    assert!(!sentinels.is_running(master));
    let promoted = timed("sentinel failover", || {
        sentinels.wait_failover(master, DEADLINE)
    });
    assert_eq!(promoted, Some(replica));
    assert_eq!(sentinels.master_port(), replica);
    assert_eq!(sentinels.command(replica, &["GET", "before"]), "1");
    assert_eq!(sentinels.command(replica, &["SET", "after", "2"]), "OK");
    assert!(sentinels.health().is_err(), "the old primary is still down");

    sentinels.restart(master);
    let rejoined = timed("sentinel rejoin", || sentinels.wait_ok(DEADLINE));
    assert!(rejoined, "{:?}", sentinels.health());
    assert_eq!(sentinels.master_port(), replica);
    assert_eq!(sentinels.replica_port(), master);
    let info = sentinels.command(master, &["INFO", "replication"]);
    assert!(info.contains("role:slave"), "{info}");
    assert!(info.contains(&format!("master_port:{replica}")), "{info}");
    assert_eq!(sentinels.command(master, &["GET", "after"]), "2");
}
