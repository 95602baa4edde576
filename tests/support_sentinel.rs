//! Self-tests of the `RedisSentinel` harness (`tests/support/sentinel.rs`). A
//! test binary of their own: each starts five servers.

mod support;

use std::time::Instant;

use redis::Value;
use redis::sentinel::{SentinelClient, SentinelServerType};
use support::RedisSentinel;

// `build` takes a `String` without redis' `tls-rustls` feature and `impl AsRef<str>`
// with it (`--all-features`): the owned name suits both.
#[allow(clippy::unnecessary_to_owned)]
fn sentinel_client(sentinel: &RedisSentinel) -> SentinelClient {
    SentinelClient::build(
        sentinel.sentinel_urls(),
        sentinel.master_name().to_string(),
        None,
        SentinelServerType::Master,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn sentinels_report_the_master_and_fail_over_to_the_replica() {
    let t0 = Instant::now();
    let mut sentinel = RedisSentinel::start();
    eprintln!("RedisSentinel::start took {:?}", t0.elapsed());

    let [first, second] = sentinel.data_ports()[..] else {
        panic!("two data nodes")
    };
    assert_eq!(sentinel.sentinel_urls().len(), 3);
    assert_eq!(sentinel.master_port(), first);
    assert_eq!(sentinel.replica_port(), second);
    for i in 0..3 {
        let reply = sentinel.sentinel_cmd(
            i,
            &[
                "SENTINEL",
                "GET-MASTER-ADDR-BY-NAME",
                sentinel.master_name(),
            ],
        );
        assert_eq!(
            reply,
            Value::Array(vec![
                Value::BulkString(b"127.0.0.1".to_vec()),
                Value::BulkString(first.to_string().into_bytes()),
            ]),
            "sentinel {i}"
        );
    }

    // Through redis-rs' sentinel client: it finds the master.
    let mut client = sentinel_client(&sentinel);
    let mut con = client.get_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("replicated")
        .query_async(&mut con)
        .await
        .unwrap();
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(acked, 1, "the replica has the write");
    assert_eq!(
        sentinel.server(second).get("k").as_deref(),
        Some("replicated")
    );

    let killed = sentinel.kill_master();
    assert_eq!(killed, first);
    assert!(!sentinel.server(first).is_running());
    let t0 = Instant::now();
    let promoted = sentinel.wait_for_failover();
    eprintln!("sentinel failover took {:?}", t0.elapsed());
    assert_eq!(promoted, second, "the replica was promoted");
    assert_eq!(sentinel.master_port(), second);
    assert_eq!(sentinel.replica_port(), first);

    // A fresh resolution through the sentinels lands on the new master.
    let mut client = sentinel_client(&sentinel);
    let mut con = client.get_async_connection().await.unwrap();
    let v: Option<String> = redis::cmd("GET")
        .arg("k")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("replicated"));
    let _: () = redis::cmd("SET")
        .arg("k2")
        .arg("after-failover")
        .query_async(&mut con)
        .await
        .unwrap();

    // The old master comes back as a replica of the new one.
    let t0 = Instant::now();
    sentinel.restart(first);
    eprintln!("sentinel restart took {:?}", t0.elapsed());
    assert_eq!(sentinel.master_port(), second);
    assert!(support::wait_until(
        std::time::Duration::from_secs(5),
        || { sentinel.server(first).get("k2").as_deref() == Some("after-failover") }
    ));
}

#[test]
fn drop_kills_every_process() {
    let sentinel = RedisSentinel::start();
    let mut ports = sentinel.data_ports();
    ports.extend(sentinel.sentinel_ports());
    drop(sentinel);
    for port in ports {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "{port} still answers"
        );
    }
}
