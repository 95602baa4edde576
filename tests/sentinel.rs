//! A sentinel-managed master (feature `sentinel`): the whole conformance suite, async and
//! blocking, through three sentinels (one master, one replica; a key prefix per case),
//! plus failovers — followed by the client, and measured for what they can do to a lock
//! that had not reached the replica, with and without `min_replicas`.

#![cfg(feature = "sentinel")]

mod support;
#[macro_use]
mod suite;

use std::sync::{Arc, OnceLock};
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

/// The split-brain holder's lease, and its renewal (every `SPLIT_EVERY`, 500 ms timeout,
/// `max_retry` 3): long enough that the key, re-armed on the replica just before the
/// partition, is what keeps a contender out (not the failover's own delay, ~4 s).
const SPLIT_LEASE: Duration = Duration::from_secs(6);
const SPLIT_EVERY: Duration = Duration::from_secs(1);

/// What a partition of the old master did to a lock held through it, timed from the
/// partition.
struct SplitBrain {
    sentinel: RedisSentinel,
    /// The old master (the port the group knows it by: its proxy's) and the new one.
    old: u16,
    new: u16,
    holder: Arc<leasehold::Lock>,
    /// When the holder's `lost()` fired.
    lost: Arc<OnceLock<Instant>>,
    /// When renewal ended, and with what.
    ended: Arc<OnceLock<(Instant, Option<Error>)>>,
    _renewal: tokio::task::JoinHandle<leasehold::AutoRefresh>,
    partitioned: Instant,
    promoted: Instant,
    /// The contender's lock on the new master, and when it was granted.
    rival: leasehold::Lock,
    granted: Instant,
}

impl SplitBrain {
    /// Whether the holder knew it had lost the lock (renewal ended and `lost()` fired)
    /// before the contender was granted it: no instant with two holders.
    fn holder_knew_first(&self) -> bool {
        let lost = self.lost.get().is_some_and(|at| *at < self.granted);
        let ended = self.ended.get().is_some_and(|(at, _)| *at < self.granted);
        lost && ended
    }

    fn since_partition(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.partitioned)
    }
}

/// The split brain both tests below measure. A master/replica pair under three
/// sentinels, the master reached by everyone through one proxy (the network in front of
/// it: `RedisSentinel::start_with_master_proxy`). The holder is a real sentinel client
/// (`open_sentinel`, with or without `min_replicas(1, 200 ms)`): it asked the sentinels
/// and reached the master through that proxy. It locks `job` for 6 s and renews it every
/// second; 300 ms after a renewal the master is partitioned from the rest of the group:
/// the proxy stalls the connections of the sentinels (they name themselves `sentinel-…`
/// with `CLIENT SETNAME`) and of the replica (its `REPLCONF`s), and leaves the holder's
/// alone — a partition that leaves the master and its client on one side, as when a
/// rack or a zone is cut off. Replication is cut too: the replica is on the sentinels'
/// side (a replica that still heard the master would stop listening anyway the moment it
/// is promoted; cut, it also stops acknowledging the holder's renewals, which is what
/// `min_replicas` watches). The sentinels promote the replica (about 4 s: the 2 s
/// `down-after-milliseconds`, then an election); a contender opened then asks them, gets
/// the new master, and polls for `job` every 20 ms (without `min_replicas`: the earliest
/// anyone can be granted it there — a contender asking for a replica would be refused
/// until the old master rejoined as one).
async fn split_brain(min_replicas: bool) -> SplitBrain {
    let sentinel = RedisSentinel::start_with_master_proxy();
    let old = sentinel.master_port();
    let client = open(&sentinel, min_replicas).await;
    let holder = Arc::new(client.try_lock("job", "holder", SPLIT_LEASE).await.unwrap());
    let mut renewal = holder
        .auto_refresh(SPLIT_EVERY, SPLIT_LEASE, 500 * MS, 3)
        .unwrap();
    // 300 ms after the first renewal: the replica has the re-armed key.
    tokio::time::sleep(SPLIT_EVERY + 300 * MS).await;
    assert!(renewal.is_running());
    let partitioned = Instant::now();
    let cut = sentinel.isolate_master(true);
    // Three sentinels (a command and a pub/sub link each) and the replica.
    assert!(cut >= 7, "only {cut} connections to the master were cut");

    let lost = Arc::new(OnceLock::new());
    tokio::spawn({
        let (holder, lost) = (holder.clone(), lost.clone());
        async move {
            holder.lost().await;
            let _ = lost.set(Instant::now());
        }
    });
    let ended = Arc::new(OnceLock::new());
    let renewal = tokio::spawn({
        let ended = ended.clone();
        async move {
            let e = renewal.error().await;
            let _ = ended.set((Instant::now(), e));
            renewal
        }
    });

    let new = tokio::task::block_in_place(|| sentinel.wait_for_new_master(old));
    let promoted = Instant::now();
    let contender = open(&sentinel, false).await; // asks the sentinels now
    let rival = contender
        .lock(
            "job",
            "rival",
            SPLIT_LEASE,
            SEC,
            FixedInterval::new(20 * MS, 1000),
        )
        .await
        .expect("the contender acquires on the new master");
    let granted = Instant::now();
    // Granted on the new master, directly (not through the old master's proxy).
    assert_eq!(
        sentinel.server(new).get("job").as_deref(),
        Some("rival"),
        "the contender's lock is on the new master"
    );
    SplitBrain {
        sentinel,
        old,
        new,
        holder,
        lost,
        ended,
        _renewal: renewal,
        partitioned,
        promoted,
        rival,
        granted,
    }
}

/// Sentinel split brain without `min_replicas` (issue 21): the old master, cut off from
/// the sentinels and its replica but not from the holder, goes on confirming the
/// holder's renewals while the promoted replica grants the key to a contender — two
/// holders, on two masters, for as long as the partition lasts. Here the partition is
/// held 1 s past the grant, then healed; the sentinels demote the old master (their
/// `+convert-to-slave`: they reconfigure it after its `INFO` has reported it a master for
/// over 8 s, and ask a replica for `INFO` every 10 s), which drops its clients; the
/// holder's renewal then asks the sentinels again, finds the key held by the contender
/// on the new master, and ends with `NotHeld`: `lost()` fires. Asserted: no signal to
/// the holder before the heal (the ordering `min_replicas` gives does not hold), and the
/// loss reported within 30 s of the heal and within one lease of the demotion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_brain_without_min_replicas_lasts_until_the_old_master_is_demoted() {
    const HOLD: Duration = Duration::from_secs(1);
    let split = split_brain(false).await;
    // Two holders: the contender on the new master, the holder still renewing on the old.
    assert!(
        !split.holder_knew_first(),
        "without min_replicas the holder cannot know before the contender is granted"
    );
    assert_eq!(
        split.sentinel.server(split.old).get("job").as_deref(),
        Some("holder"),
        "the old master still grants the key to the holder"
    );
    tokio::time::sleep(HOLD).await;
    assert!(split.lost.get().is_none() && split.ended.get().is_none());
    // Renewals are still confirmed: the lease the holder computes did not run down
    // (the replica's copy had run out before the grant).
    let valid = split
        .holder
        .valid_for()
        .expect("the holder believes it holds the key");
    assert!(valid > SPLIT_LEASE / 2, "valid_for {valid:?}");

    let healed = Instant::now();
    split.sentinel.isolate_master(false);
    let old_server = split.sentinel.server(split.old);
    let demoted = tokio::task::block_in_place(|| {
        wait_until(30 * SEC, || match old_server.try_cmd_sync(&["ROLE"]) {
            Ok(redis::Value::Array(role)) => role
                .first()
                .is_some_and(|r| matches!(r, redis::Value::BulkString(b) if b == b"slave")),
            _ => false,
        })
    });
    assert!(
        demoted,
        "the sentinels demote the old master after the heal"
    );
    let demoted = Instant::now();
    tokio::time::timeout(SPLIT_LEASE, split.holder.lost())
        .await
        .expect("the holder learns it lost within one lease of the demotion");
    let lost = *split.lost.get().unwrap_or(&Instant::now());
    let ended = tokio::time::timeout(SEC, async {
        loop {
            if let Some(ended) = split.ended.get() {
                return ended;
            }
            tokio::time::sleep(10 * MS).await;
        }
    })
    .await
    .expect("renewal ended");
    assert!(
        matches!(ended.1, Some(Error::NotHeld)),
        "renewal ends with NotHeld: {:?}",
        ended.1
    );
    assert!(
        lost > healed && ended.0 > healed,
        "told only after the heal"
    );
    eprintln!(
        "FIGURE sentinel-split-brain: promoted {:?} after the partition; the contender was \
         granted the key {:?} after it; the partition healed {:?} after the grant; the old \
         master was demoted {:?} after the heal; the holder's lost() fired {:?} after that \
         (renewal: {:?}) — a double-holder window of {:?}",
        split.since_partition(split.promoted),
        split.since_partition(split.granted),
        healed - split.granted,
        demoted - healed,
        lost.saturating_duration_since(demoted),
        ended.1,
        lost - split.granted,
    );
    assert!(split.rival.fencing_token() > split.holder.fencing_token());
    assert_ne!(split.new, split.old);
}

/// Sentinel split brain with `min_replicas(1, 200 ms)` (issue 21): the first renewal
/// after the partition reaches the old master but no replica acknowledges it, so renewal
/// ends with `NotReplicated` and the lease the holder computes runs out from the last
/// acknowledged renewal — which is also what the replica's copy of the key expires by.
/// Asserted with timestamps: renewal ended and `lost()` fired before the new master
/// granted the key to the contender (the same scenario without `min_replicas` fails
/// this: see the test above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_brain_with_min_replicas_the_holder_knows_before_the_contender_acquires() {
    let split = split_brain(true).await;
    let (ended_at, error) = split.ended.get().expect("renewal ended before the grant");
    assert!(
        matches!(
            error,
            Some(Error::NotReplicated {
                acked: 0,
                wanted: 1
            })
        ),
        "{error:?}"
    );
    let lost = *split.lost.get().expect("lost() fired before the grant");
    eprintln!(
        "FIGURE sentinel-split-brain-min-replicas: renewal ended ({error:?}) {:?} after the \
         partition; lost() fired {:?} after it; promoted {:?} after it; the contender was \
         granted the key {:?} after it — {:?} after lost()",
        split.since_partition(*ended_at),
        split.since_partition(lost),
        split.since_partition(split.promoted),
        split.since_partition(split.granted),
        split.granted.saturating_duration_since(lost),
    );
    assert!(*ended_at < split.granted, "renewal ended before the grant");
    assert!(lost < split.granted, "lost() fired before the grant");
    assert!(split.holder_knew_first());
    assert!(split.holder.is_lost());
    assert!(split.rival.fencing_token() > split.holder.fencing_token());
}
