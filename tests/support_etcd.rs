//! Self-tests of the etcd harness (`tests/support/etcd.rs`). A test binary of
//! their own: they start several etcd processes.

mod support;

use std::time::Instant;

use support::{EtcdCluster, EtcdServer};

#[test]
fn single_member_answers_put_and_get() {
    let t0 = Instant::now();
    let etcd = EtcdServer::start();
    eprintln!("EtcdServer::start took {:?}", t0.elapsed());
    assert_eq!(etcd.endpoint(), format!("127.0.0.1:{}", etcd.port()));
    assert_eq!(etcd.url(), format!("etcd://127.0.0.1:{}", etcd.port()));
    assert!(etcd.is_running());

    assert_eq!(etcd.get("leasehold/absent"), None);
    // Values of every length modulo 3 (base64 padding), non-ASCII, empty.
    for value in ["", "v", "va", "val", "välue ∂ 🦀"] {
        etcd.put("leasehold/k", value);
        assert_eq!(etcd.get("leasehold/k").as_deref(), Some(value));
    }
    let status = etcd.post("/v3/maintenance/status", "{}");
    assert!(status.contains(r#""version":"3."#), "{status}");
}

#[test]
fn single_member_restart_keeps_data_and_drop_cleans_up() {
    let etcd = EtcdServer::start();
    etcd.put("leasehold/persisted", "yes");
    etcd.kill();
    assert!(!etcd.is_running());
    assert!(std::net::TcpStream::connect(etcd.endpoint()).is_err());
    etcd.restart();
    assert_eq!(etcd.get("leasehold/persisted").as_deref(), Some("yes"));

    let dir = etcd.dir().to_path_buf();
    let endpoint = etcd.endpoint();
    drop(etcd);
    assert!(!dir.exists());
    assert!(std::net::TcpStream::connect(endpoint).is_err());
}

#[test]
fn three_member_cluster_survives_killing_the_leader() {
    let t0 = Instant::now();
    let cluster = EtcdCluster::start(3);
    eprintln!("EtcdCluster::start(3) took {:?}", t0.elapsed());
    assert_eq!(cluster.len(), 3);
    let endpoints = cluster.endpoints();
    assert_eq!(endpoints.len(), 3);
    assert_eq!(cluster.url(), format!("etcd://{}", endpoints.join(",")));

    cluster.put("leasehold/before", "1");
    for i in 0..3 {
        assert_eq!(
            cluster.get_from(i, "leasehold/before").as_deref(),
            Some("1")
        );
    }

    let leader = cluster.leader();
    cluster.kill(leader);
    assert!(!cluster.is_running(leader));
    let t0 = Instant::now();
    let new_leader = cluster.leader();
    eprintln!("etcd leader re-election took {:?}", t0.elapsed());
    assert_ne!(new_leader, leader);
    assert!(cluster.is_running(new_leader));

    // The two survivors are a quorum: writes and linearizable reads go on.
    cluster.put("leasehold/after", "2");
    for i in (0..3).filter(|&i| i != leader) {
        assert_eq!(
            cluster.get_from(i, "leasehold/before").as_deref(),
            Some("1")
        );
        assert_eq!(cluster.get_from(i, "leasehold/after").as_deref(), Some("2"));
    }

    // The killed member rejoins and catches up.
    cluster.restart(leader);
    assert_eq!(
        cluster.get_from(leader, "leasehold/after").as_deref(),
        Some("2")
    );
    assert!(cluster.leader() < 3);
}
