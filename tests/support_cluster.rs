//! Self-tests of the `RedisCluster` harness (`tests/support/cluster.rs`). A test
//! binary of their own: they start several clusters.

mod support;

use std::time::{Duration, Instant};

use redis::Value;
use redis::cluster::ClusterClient;
use support::{RedisCluster, Role, wait_until};

fn text(v: Value) -> Option<String> {
    match v {
        Value::Nil => None,
        Value::BulkString(b) => Some(String::from_utf8(b).unwrap()),
        other => panic!("unexpected reply {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_cluster_forms_and_serves_set_get_through_the_cluster_client() {
    let cluster = RedisCluster::shared();
    let nodes = cluster.nodes();
    assert_eq!(nodes.len(), 6, "{nodes:#?}");
    let masters: Vec<_> = nodes.iter().filter(|n| n.is_master()).collect();
    assert_eq!(masters.len(), 3);
    let covered: u32 = masters
        .iter()
        .flat_map(|m| m.slots.iter())
        .map(|r| u32::from(*r.end() - *r.start()) + 1)
        .sum();
    assert_eq!(covered, 16384);
    for m in &masters {
        let replicas = cluster.replicas_of(m.port);
        assert_eq!(replicas.len(), 1, "one replica per master: {replicas:?}");
        assert_eq!(replicas[0].role, Role::Replica);
        assert_eq!(replicas[0].master_id.as_deref(), Some(m.id.as_str()));
    }
    assert_eq!(cluster.urls().len(), 3);

    let client = ClusterClient::new(cluster.urls()).unwrap();
    let mut con = client.get_async_connection().await.unwrap();
    // Keys on every master, through the cluster client's redirections.
    let keys: Vec<String> = masters
        .iter()
        .map(|m| RedisCluster::key_in_slot(*m.slots[0].start(), "selftest-setget-"))
        .collect();
    for key in &keys {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(format!("value of {key}"))
            .query_async(&mut con)
            .await
            .unwrap();
    }
    for (key, master) in keys.iter().zip(&masters) {
        let v: Option<String> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(v, Some(format!("value of {key}")));
        // And it is stored on the master that serves its slot.
        assert_eq!(cluster.master_of_key(key).port, master.port);
        assert_eq!(
            text(cluster.cmd(master.port, &["GET", key])),
            Some(format!("value of {key}"))
        );
    }
}

#[test]
fn key_slot_agrees_with_the_local_hash() {
    let cluster = RedisCluster::shared();
    for key in [
        "",
        "a",
        "leasehold:lock",
        "{user1000}.following",
        "foo{}{bar}",
        "{}x",
    ] {
        assert_eq!(
            cluster.key_slot(key),
            RedisCluster::hash_slot(key),
            "{key:?}"
        );
    }
    for slot in [0, 1, 5460, 5461, 16383] {
        let key = RedisCluster::key_in_slot(slot, "k");
        assert_eq!(cluster.key_slot(&key), slot, "{key}");
    }
}

#[test]
#[should_panic(expected = "shared cluster")]
fn shared_cluster_refuses_topology_changes() {
    let cluster = RedisCluster::shared();
    let port = cluster.masters()[0].port;
    cluster.kill(port);
}

#[test]
fn slot_migration_moves_the_key_and_the_key_follows() {
    let t0 = Instant::now();
    let cluster = RedisCluster::start(3, 0);
    eprintln!("RedisCluster::start(3, 0) took {:?}", t0.elapsed());

    let key = "selftest-migrate";
    let slot = cluster.key_slot(key);
    let source = cluster.master_of_slot(slot);
    let target = cluster
        .masters()
        .into_iter()
        .find(|m| m.port != source.port)
        .unwrap();
    cluster.cmd(source.port, &["SET", key, "v"]);

    cluster.move_slot(slot, target.port);
    assert_eq!(cluster.master_of_slot(slot).port, target.port);
    assert_eq!(
        text(cluster.cmd(target.port, &["GET", key])).as_deref(),
        Some("v")
    );
    let moved = cluster.try_cmd(source.port, &["GET", key]).unwrap_err();
    assert_eq!(
        moved.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::Moved),
        "{moved}"
    );
    // Every node, replicas included, agrees (move_slot waited for that).
    for port in cluster.ports() {
        let err = cluster.try_cmd(port, &["GET", key]);
        if port != target.port {
            assert!(err.is_err(), "node {port} must redirect: {err:?}");
        }
    }
    let client = ClusterClient::new(cluster.urls()).unwrap();
    let mut con = client.get_connection().unwrap();
    let v: Option<String> = redis::cmd("GET").arg(key).query(&mut con).unwrap();
    assert_eq!(
        v.as_deref(),
        Some("v"),
        "the cluster client follows the key"
    );

    // Two-phase: act in the middle of a migration.
    let other = RedisCluster::key_in_slot(slot, "selftest-other-");
    cluster.cmd(target.port, &["SET", &other, "stays-until-finish"]);
    let back = cluster.begin_slot_migration(slot, source.port);
    assert_eq!(back.source().port, target.port);
    assert_eq!(back.target().port, source.port);
    assert!(back.migrate_key(key));
    assert!(!back.migrate_key("selftest-migrate-missing{selftest-migrate}"));
    // A key already moved is answered with ASK; one not yet moved still served.
    let ask = cluster.try_cmd(target.port, &["GET", key]).unwrap_err();
    assert_eq!(
        ask.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::Ask),
        "{ask}"
    );
    assert_eq!(
        text(cluster.cmd(target.port, &["GET", &other])).as_deref(),
        Some("stays-until-finish")
    );
    let v: Option<String> = redis::cmd("GET").arg(key).query(&mut con).unwrap();
    assert_eq!(v.as_deref(), Some("v"), "the cluster client follows ASK");
    back.finish();
    assert_eq!(cluster.master_of_slot(slot).port, source.port);
    assert_eq!(
        text(cluster.cmd(source.port, &["GET", key])).as_deref(),
        Some("v")
    );
    assert_eq!(
        text(cluster.cmd(source.port, &["GET", &other])).as_deref(),
        Some("stays-until-finish")
    );
}

#[test]
fn failover_promotes_the_replica_and_the_old_master_rejoins_as_replica() {
    let t0 = Instant::now();
    let cluster = RedisCluster::start(3, 1);
    eprintln!("RedisCluster::start(3, 1) took {:?}", t0.elapsed());

    let key = "selftest-failover";
    let master = cluster.master_of_key(key);
    let replicas = cluster.replicas_of(master.port);
    assert_eq!(replicas.len(), 1);
    // The write reached the replica before the crash. (WAIT on the connection
    // that wrote: on a fresh one it has nothing to wait for.)
    let mut con = cluster.connect(master.port);
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg("kept")
        .query(&mut con)
        .unwrap();
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut con).unwrap();
    assert_eq!(acked, 1);

    cluster.kill(master.port);
    assert!(!cluster.is_running(master.port));
    let t0 = Instant::now();
    let promoted = cluster.wait_for_failover(master.port);
    eprintln!("failover took {:?}", t0.elapsed());
    assert_eq!(promoted.port, replicas[0].port, "its replica was promoted");
    assert_eq!(promoted.role, Role::Master);
    assert_eq!(promoted.slots, master.slots);
    assert_eq!(cluster.master_of_key(key).port, promoted.port);
    assert_eq!(
        text(cluster.cmd(promoted.port, &["GET", key])).as_deref(),
        Some("kept")
    );
    assert!(cluster.node(master.port).failed);

    cluster.restart(master.port);
    let old = cluster.node(master.port);
    assert_eq!(old.role, Role::Replica, "{old:?}");
    assert_eq!(old.master_id.as_deref(), Some(promoted.id.as_str()));
    assert!(!old.failed);

    // A coordinated hand-over back.
    cluster.manual_failover(master.port);
    assert_eq!(cluster.master_of_key(key).port, master.port);
    assert!(wait_until(Duration::from_secs(5), || cluster
        .node(promoted.port)
        .role
        == Role::Replica));
}

#[test]
fn drop_kills_every_node_and_removes_the_directory() {
    let cluster = RedisCluster::start(3, 0);
    let ports = cluster.ports();
    let dir = cluster.dir().to_path_buf();
    assert!(dir.exists());
    drop(cluster);
    assert!(!dir.exists());
    for port in ports {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "{port} still answers"
        );
    }
}
