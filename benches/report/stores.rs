//! 7. Redis Cluster and `min_replicas`.

#![cfg_attr(not(feature = "cluster"), allow(unused_imports))]

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use leasehold::Client;

use crate::common;
use crate::common::base::median;
use crate::settings::Settings;
use crate::stats::{paired_ratio, rotated, us};
use crate::support::{self, RedisServer};

/// Mean µs per lock+unlock per round, for each store setup (in [`STORE_SETUPS`] order).
#[cfg(feature = "cluster")]
pub struct StoresResult {
    means: [Vec<f64>; 4],
}

#[cfg(feature = "cluster")]
pub const STORE_SETUPS: [&str; 4] = [
    "one redis-server",
    "3-master Redis Cluster",
    "a master with one replica",
    "the same with `min_replicas(1, 100 ms)`",
];

/// lock+unlock through a 3-master cluster against the same client on one server, and
/// with `min_replicas(1)` against the same master without it, interleaved.
#[cfg(feature = "cluster")]
pub fn stores(settings: &Settings, url: &str) -> StoresResult {
    let cluster = support::RedisCluster::start(3, 0);
    let master = RedisServer::start();
    let replica = RedisServer::start_with(support::ServerOptions {
        extra_args: vec![
            "--replicaof".into(),
            "127.0.0.1".into(),
            master.port().to_string(),
        ],
        ..support::ServerOptions::default()
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(
        replica.try_cmd_sync(&["INFO", "replication"]),
        Ok(redis::Value::BulkString(ref b)) if String::from_utf8_lossy(b).contains("master_link_status:up")
    ) {
        assert!(Instant::now() < deadline, "the replica never synced");
        std::thread::sleep(Duration::from_millis(50));
    }
    let rt = common::base::current_thread_runtime();
    rt.block_on(async {
        let urls = cluster.urls();
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        let clients = [
            Client::open(url).await.expect("single"),
            Client::open_cluster(&urls).await.expect("cluster"),
            Client::open(&master.url()).await.expect("master"),
            Client::builder()
                .min_replicas(1, Duration::from_millis(100))
                .open(&master.url())
                .await
                .expect("master with min_replicas"),
        ];
        let mut r = StoresResult {
            means: Default::default(),
        };
        for round in 0..settings.latency_rounds {
            for i in rotated(&[0usize, 1, 2, 3], round) {
                let client = &clients[i];
                let key = format!("stores:{i}");
                for _ in 0..settings.latency_ops / 20 {
                    client
                        .try_lock(&key, "v", common::base::EXPIRATION)
                        .await
                        .unwrap()
                        .unlock()
                        .await
                        .unwrap();
                }
                let started = Instant::now();
                for _ in 0..settings.latency_ops {
                    let lock = client
                        .try_lock(&key, "v", common::base::EXPIRATION)
                        .await
                        .expect("lock");
                    lock.unlock().await.expect("unlock");
                }
                r.means[i].push(us(started.elapsed()) / settings.latency_ops as f64);
            }
        }
        r
    })
}

/// Section 7 of the report; returns lock+unlock through the cluster ÷ one server.
#[cfg(feature = "cluster")]
pub fn write(w: &mut String, settings: &Settings, st: &StoresResult) -> f64 {
    let _ = writeln!(w, "\n## 7. Redis Cluster and `min_replicas`\n");
    let _ = writeln!(
        w,
        "Uncontended `try_lock` + `unlock` through the same client API on four setups, \
         interleaved ({} rounds × {} ops): one redis-server (the one of section 1), a \
         3-master Redis Cluster (every node on this machine), and a master with one \
         replica without and with `min_replicas(1, 100 ms)` (`WAIT 1 100` pipelined after \
         the acquire script: same round trip, but the master answers once the replica \
         acknowledged).\n",
        settings.latency_rounds, settings.latency_ops
    );
    let _ = writeln!(
        w,
        "| setup | µs per lock+unlock | ratio |\n| --- | ---: | --- |"
    );
    let base = [0usize, 0, 2, 2];
    for (i, name) in STORE_SETUPS.iter().enumerate() {
        let ratio = if i == base[i] {
            "—".to_owned()
        } else {
            format!(
                "{:.3} × {}",
                paired_ratio(&st.means[i], &st.means[base[i]]),
                STORE_SETUPS[base[i]]
            )
        };
        let _ = writeln!(w, "| {name} | {:.1} | {ratio} |", median(&st.means[i]));
    }
    paired_ratio(&st.means[1], &st.means[0])
}

/// Section 7 of the report, without the `cluster` feature.
#[cfg(not(feature = "cluster"))]
pub fn write(w: &mut String) -> f64 {
    let _ = writeln!(w, "\n## 7. Redis Cluster and `min_replicas`\n");
    let _ = writeln!(
        w,
        "Not measured: run the report with `--features cluster` (or `--all-features`)."
    );
    f64::NAN
}
