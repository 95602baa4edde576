//! A sentinel-managed master (feature `sentinel`): the whole conformance suite, async and
//! blocking, through three sentinels (one master, one replica; a key prefix per case),
//! plus failovers — followed by the client, and measured for what they can do to a lock
//! that had not reached the replica, with and without `min_replicas`.

#![cfg(feature = "sentinel")]

mod support;
#[macro_use]
mod suite;

use std::time::{Duration, Instant};

use leasehold::{Client, Error, FixedInterval};
use support::{FaultProxy, RedisSentinel, wait_until};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

conformance!(sentinel);

async fn open(sentinel: &RedisSentinel, min_replicas: bool) -> Client {
    let urls = sentinel.sentinel_urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let builder = Client::builder();
    let builder = if min_replicas {
        builder.min_replicas(1, 200 * MS)
    } else {
        builder
    };
    builder
        .open_sentinel(&urls, sentinel.master_name())
        .await
        .expect("connect through the sentinels")
}

/// Point the replica at the master through a proxy, so that replication can be cut.
fn proxied_replication(sentinel: &RedisSentinel) -> FaultProxy {
    let master = sentinel.master_port();
    let replica = sentinel.server(sentinel.replica_port());
    let proxy = FaultProxy::start(master);
    replica.cmd_sync(&["REPLICAOF", "127.0.0.1", &proxy.port().to_string()]);
    let synced = wait_until(10 * SEC, || {
        match replica.cmd_sync(&["INFO", "replication"]) {
            redis::Value::BulkString(b) => {
                String::from_utf8_lossy(&b).contains("master_link_status:up")
            }
            redis::Value::VerbatimString { text, .. } => text.contains("master_link_status:up"),
            _ => false,
        }
    });
    assert!(synced, "the replica syncs through the proxy");
    proxy
}

/// The client follows a failover: after the master dies and the sentinels promote the
/// replica, new locks are taken on the new master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_follows_a_failover() {
    let mut sentinel = RedisSentinel::start();
    let client = open(&sentinel, false).await;
    let before = client.try_lock("before", "v", 60 * SEC).await.unwrap();
    tokio::time::sleep(100 * MS).await; // replicated
    let old = sentinel.kill_master();
    let started = Instant::now();
    let lock = client
        .lock(
            "after",
            "v",
            60 * SEC,
            SEC,
            FixedInterval::new(100 * MS, 200),
        )
        .await
        .expect("a lock on the new master");
    let took = started.elapsed();
    let new = sentinel.master_port();
    assert_ne!(new, old);
    eprintln!(
        "FIGURE sentinel-follow: first lock on the new master {took:?} after the old one died"
    );
    // The replicated lock is still held, on the new master.
    before
        .refresh()
        .await
        .expect("the replicated lock survived");
    lock.unlock().await.unwrap();
}

/// What a failover does to a lock the replica had not received: measured without and
/// with `min_replicas(1, 200 ms)`. Replication is cut (a stalled proxy between replica
/// and master), a lock is taken, the master dies, the replica is promoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_before_replication_and_what_min_replicas_changes() {
    // Without min_replicas: the lock is granted, lost in the failover, and the next
    // holder gets the same token — a window with two holders, closed by fencing.
    let mut sentinel = RedisSentinel::start();
    let proxy = proxied_replication(&sentinel);
    let holder = open(&sentinel, false).await;
    let contender = open(&sentinel, false).await; // before the kill: it follows the failover
    let warm = holder.try_lock("job", "warm", SEC).await.unwrap();
    let first_token = warm.fencing_token();
    warm.unlock().await.unwrap();
    tokio::time::sleep(200 * MS).await; // the counter reached the replica
    proxy.blackhole(true);
    let lock = holder.try_lock("job", "holder", 30 * SEC).await.unwrap();
    let token = lock.fencing_token();
    let mut renewal = lock
        .auto_refresh(500 * MS, 30 * SEC, 500 * MS, u32::MAX)
        .unwrap();
    let killed = Instant::now();
    sentinel.kill_master();
    drop(proxy);
    let (rival, lost_at) = tokio::join!(
        async {
            let rival = contender
                .lock(
                    "job",
                    "rival",
                    30 * SEC,
                    SEC,
                    FixedInterval::new(50 * MS, 400),
                )
                .await
                .expect("the promoted replica never saw the lock");
            (rival, killed.elapsed())
        },
        async {
            tokio::time::timeout(20 * SEC, lock.lost())
                .await
                .expect("the old holder learns it lost the lock");
            killed.elapsed()
        }
    );
    let (rival, rival_at) = rival;
    eprintln!(
        "FIGURE sentinel-unreplicated: the rival acquired {rival_at:?} after the kill with \
         token {} (the holder's: {token}); the holder's lost() fired at {lost_at:?} \
         (renewal every 500 ms: a double-holder window of {:?})",
        rival.fencing_token(),
        lost_at.saturating_sub(rival_at)
    );
    assert!(
        rival.fencing_token() <= token,
        "the counter increment was lost too: token {} after {token}",
        rival.fencing_token()
    );
    assert!(rival.fencing_token() > first_token);
    assert!(matches!(renewal.try_error(), Some(Error::NotHeld) | None));
    // The fence refuses the second holder under the repeated token.
    lock.fenced_set("row", "holder").await.ok(); // may fail: the holder's key is gone
    let err = rival.fenced_set("row", "rival").await;
    assert!(err.is_ok() || err.unwrap_err().is_fenced());

    // With min_replicas: the same lock is refused (NotReplicated) and released before it
    // is handed out — nobody believes in a lock a failover can lose.
    let mut sentinel = RedisSentinel::start();
    let proxy = proxied_replication(&sentinel);
    let holder = open(&sentinel, true).await;
    let contender = open(&sentinel, true).await;
    holder
        .try_lock("job", "warm", SEC)
        .await
        .expect("replicated")
        .unlock()
        .await
        .unwrap();
    proxy.blackhole(true);
    let started = Instant::now();
    let err = holder
        .try_lock("job", "holder", 30 * SEC)
        .await
        .unwrap_err();
    eprintln!(
        "FIGURE sentinel-min-replicas: refused in {:?}: {err}",
        started.elapsed()
    );
    assert!(
        matches!(
            err,
            Error::NotReplicated {
                acked: 0,
                wanted: 1
            }
        ),
        "{err:?}"
    );
    sentinel.kill_master();
    drop(proxy);
    let rival = contender
        .lock(
            "job",
            "rival",
            30 * SEC,
            SEC,
            FixedInterval::new(50 * MS, 400),
        )
        .await;
    // No replica is left to acknowledge: the rival is refused too — nobody holds it.
    assert!(
        matches!(rival, Err(Error::NotReplicated { .. })),
        "{rival:?}"
    );
}

/// The README's renewal settings (every third of a 10 s lease, 200 ms timeout,
/// `max_retry` 3) ride out a Sentinel failover: the master dies after a renewal, the
/// sentinels promote the replica, and renewal goes on there — nothing reported, the same
/// token, the lease never lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_renewal_settings_ride_out_a_failover() {
    let mut sentinel = RedisSentinel::start();
    let client = open(&sentinel, false).await;
    let lock = client.try_lock("job", "me", 10 * SEC).await.unwrap();
    let token = lock.fencing_token();
    let mut renewal = lock
        .auto_refresh(10 * SEC / 3, 10 * SEC, 200 * MS, 3)
        .unwrap();
    // Killed just after the first renewal (3.3 s), so that the next one meets the failover.
    tokio::time::sleep(3500 * MS).await;
    let killed = Instant::now();
    let old = sentinel.kill_master();
    let mut low = 10 * SEC;
    while killed.elapsed() < 12 * SEC {
        assert!(renewal.try_error().is_none(), "{:?}", renewal.cause());
        low = low.min(lock.valid_for().expect("the lease never lapses"));
        tokio::time::sleep(100 * MS).await;
    }
    assert_ne!(sentinel.master_port(), old, "failed over");
    eprintln!("FIGURE sentinel failover under a 10 s lease: valid_for fell to {low:?}");
    let again = client.try_lock("job", "me", 10 * SEC).await.unwrap();
    assert_eq!(again.fencing_token(), token);
    assert!(renewal.is_running());
}
