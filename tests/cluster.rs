//! Redis Cluster (feature `cluster`): the whole conformance suite, async and blocking, on a
//! cluster shared by this test binary (3 masters, 1 replica each; a key prefix per case),
//! plus what only a cluster has — keys in many slots, resharding while a lock is held,
//! a master failover, `min_replicas` routed to the key's master, sharded hand-off.

#![cfg(feature = "cluster")]

mod lost_reply;
mod support;
#[macro_use]
mod suite;

use std::time::{Duration, Instant};

use leasehold::{Client, FixedInterval, NoRetry};
use support::{FaultProxy, RedisCluster};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

conformance!(cluster);

/// Entry point of a history worker process (re-executed test binary); not a test itself.
#[test]
#[ignore = "worker entry point, run by the history test in child processes"]
fn history_worker() {
    suite::history::worker();
}

/// The exclusion history checker across 3 OS processes × 4 tasks, on the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_across_processes_never_overlap_on_a_cluster() {
    let target = suite::history::Target::Cluster(RedisCluster::shared().urls());
    suite::history::holds_never_overlap(&target).await;
}

async fn open(cluster: &RedisCluster) -> Client {
    let urls = cluster.urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    Client::open_cluster(&urls).await.expect("connect")
}

fn prefix(test: &str) -> String {
    format!("{test}-{}:", &leasehold::random_value()[..8])
}

/// Keys with and without hash tags, in many slots: every script is slot-safe (a
/// lock's companions share its slot), so lock, refresh, ttl, fenced access and unlock
/// work for all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_with_and_without_hash_tags_work_in_every_slot_they_land_in() {
    let cluster = RedisCluster::shared();
    let urls = cluster.urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let client = Client::builder()
        .key_prefix(prefix("slots"))
        .open_cluster(&urls)
        .await
        .unwrap();
    let mut slots = std::collections::HashSet::new();
    for i in 0..120 {
        let key = match i % 3 {
            0 => format!("job-{i}"),
            1 => format!("user:{{{i}}}:job"),
            _ => format!("a{{b-{i}"), // a stray brace: no valid tag
        };
        slots.insert(RedisCluster::hash_slot(&key));
        let lock = client.try_lock(&key, "v", 10 * SEC).await.unwrap();
        lock.refresh().await.unwrap();
        assert!(lock.ttl().await.unwrap().is_some());
        lock.fenced_set(&format!("{key}:row"), "x").await.unwrap();
        let token = lock.fencing_token();
        lock.unlock().await.unwrap();
        let again = client.try_lock(&key, "w", 10 * SEC).await.unwrap();
        assert!(again.fencing_token() > token);
        again.unlock().await.unwrap();
    }
    assert!(slots.len() > 100, "{} slots", slots.len());
}

/// The slot of a held lock moves to another master mid-hold (`MIGRATING`/`IMPORTING`,
/// `MIGRATE`, then `SETSLOT NODE`): refresh, ttl, unlock and the next acquire keep working
/// through `ASK` and `MOVED`, and tokens keep rising.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_survives_its_slot_moving_to_another_master() {
    let cluster = RedisCluster::start(3, 0);
    let client = open(&cluster).await;
    let key = "resharded:job";
    let slot = cluster.key_slot(key);
    let lock = client.try_lock(key, "v", 30 * SEC).await.unwrap();
    let source = cluster.master_of_slot(slot);
    let target = cluster
        .masters()
        .into_iter()
        .find(|m| m.port != source.port)
        .unwrap();
    let migration = cluster.begin_slot_migration(slot, target.port);
    let moved = migration.migrate_all_keys();
    assert!(moved >= 2, "the lock key and its state: {moved}");
    // Mid-migration: the keys live on the target, the source answers ASK.
    lock.refresh().await.expect("refresh through ASK");
    assert!(lock.ttl().await.unwrap().is_some());
    migration.finish();
    assert_eq!(cluster.master_of_slot(slot).port, target.port);
    lock.refresh().await.expect("refresh through MOVED");
    let token = lock.fencing_token();
    lock.unlock().await.unwrap();
    let next = client
        .lock(key, "w", 30 * SEC, SEC, FixedInterval::new(50 * MS, 20))
        .await
        .unwrap();
    assert!(
        next.fencing_token() > token,
        "the counter moved with the slot"
    );
    // And back.
    cluster.move_slot(slot, source.port);
    next.refresh().await.expect("refresh after moving back");
    next.unlock().await.unwrap();
}

/// The master of a held, renewed lock is killed: its replica is promoted. The lock
/// survives (its key was replicated), renewal rides out the failover, a contender never
/// gets the key, and the next token after the release is higher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_failover_keeps_a_replicated_lock() {
    let cluster = RedisCluster::start(3, 1);
    let client = open(&cluster).await;
    let key = "failover:job";
    let lock = client.try_lock(key, "v", 10 * SEC).await.unwrap();
    let mut renewal = lock
        .auto_refresh(SEC, 10 * SEC, 500 * MS, u32::MAX)
        .unwrap();
    tokio::time::sleep(200 * MS).await; // replicated by now
    let master = cluster.master_of_key(key);
    let started = Instant::now();
    cluster.kill(master.port);
    let contender = open(&cluster).await;
    let promoted = tokio::task::spawn_blocking(move || {
        let cluster = cluster;
        let promoted = cluster.wait_for_failover(master.port);
        (cluster, promoted)
    });
    // A contender tries throughout the failover: it must never get the key.
    let mut tries = 0;
    while !promoted.is_finished() {
        if let Ok(stolen) = contender.try_lock(key, "contender", SEC).await {
            panic!("a contender got the key during the failover: {stolen:?}");
        }
        tries += 1;
        tokio::time::sleep(50 * MS).await;
    }
    let (_cluster, promoted) = promoted.await.unwrap();
    let failover = started.elapsed();
    // Renewal resumes on the promoted replica.
    let renewed_by = Instant::now() + 5 * SEC;
    while lock.ttl().await.ok().flatten().is_none() {
        assert!(
            Instant::now() < renewed_by,
            "the lock is gone after the failover"
        );
        tokio::time::sleep(100 * MS).await;
    }
    eprintln!(
        "FIGURE cluster-failover: replica {} promoted {failover:?} after the master died; \
         the lock held throughout ({tries} contender attempts refused or failed)",
        promoted.port
    );
    if let Some(e) = renewal.try_error() {
        panic!("renewal ended: {e:?}");
    }
    assert!(lock.valid_for().is_some());
    let token = lock.fencing_token();
    lock.unlock().await.unwrap();
    let next = contender
        .lock(key, "contender", SEC, SEC, FixedInterval::new(100 * MS, 50))
        .await
        .unwrap();
    assert!(next.fencing_token() > token, "no token regression");
}

/// `min_replicas` waits on the key's master only: with the replica of that master
/// frozen, an acquire is `NotReplicated` and released; with it running, granted. Locks
/// on the other masters are not held up by the frozen replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_replicas_waits_for_the_keys_own_master() {
    let cluster = RedisCluster::start(3, 1);
    let urls = cluster.urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let client = Client::builder()
        .min_replicas(1, 200 * MS)
        .open_cluster(&urls)
        .await
        .unwrap();
    let key = "replicated:job";
    let lock = client
        .try_lock(key, "v", 10 * SEC)
        .await
        .expect("replicated");
    lock.refresh()
        .await
        .expect("the refresh reached the replica too");
    lock.unlock().await.unwrap();
    let master = cluster.master_of_key(key);
    let replica = cluster.replicas_of(master.port)[0].port;
    // A key on another master does not wait for this replica.
    let elsewhere = (0..)
        .map(|i| format!("elsewhere-{i}"))
        .find(|k| cluster.master_of_key(k).port != master.port)
        .unwrap();
    cluster.freeze(replica, true);
    let started = Instant::now();
    let err = client
        .lock(key, "v", 10 * SEC, SEC, NoRetry)
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(
        matches!(
            err,
            leasehold::Error::NotReplicated {
                acked: 0,
                wanted: 1
            }
        ),
        "{err:?}"
    );
    assert!(waited >= 190 * MS, "WAIT waited: {waited:?}");
    let other = client
        .try_lock(&elsewhere, "v", 10 * SEC)
        .await
        .expect("another master's replica acknowledges");
    other.unlock().await.unwrap();
    cluster.freeze(replica, false);
    // The refused acquire was released: the key is free.
    let free = client
        .lock(key, "w", 10 * SEC, SEC, FixedInterval::new(50 * MS, 40))
        .await
        .expect("released after NotReplicated");
    free.unlock().await.unwrap();
}

/// Hand-off on a cluster: a release is announced with `SPUBLISH` in the key's slot and
/// wakes a waiter on its 200 ms interval within a few ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoff_uses_sharded_pubsub_in_the_keys_slot() {
    let cluster = RedisCluster::shared();
    let urls = cluster.urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let prefix = prefix("handoff");
    let holder = Client::builder()
        .key_prefix(prefix.clone())
        .open_cluster(&urls)
        .await
        .unwrap();
    let waiter = Client::builder()
        .key_prefix(prefix)
        .open_cluster(&urls)
        .await
        .unwrap();
    for key in ["plain", "tagged:{t1}:job"] {
        let held = holder.try_lock(key, "holder", 60 * SEC).await.unwrap();
        let waiting = waiter.lock(
            key,
            "waiter",
            10 * SEC,
            SEC,
            FixedInterval::new(200 * MS, 50),
        );
        let release = async {
            tokio::time::sleep(250 * MS).await;
            held.unlock().await.unwrap();
            Instant::now()
        };
        let (lock, released) = tokio::join!(waiting, release);
        let lag = released.elapsed();
        lock.unwrap().unlock().await.unwrap();
        eprintln!("FIGURE handoff-cluster: {key:?} acquired {lag:?} after the unlock");
        assert!(lag < 60 * MS, "{key}: {lag:?}");
    }
}

/// A one-server URL pointed at a cluster node is refused at open, with what to do
/// instead — not accepted and then failing with a raw `MOVED` on the keys of other nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_server_url_at_a_cluster_node_is_refused_at_open() {
    let cluster = RedisCluster::shared();
    for node in cluster.masters() {
        let err = Client::open(&node.url()).await.unwrap_err();
        assert!(err.is_invalid_argument(), "{err:?}");
        let shown = err.to_string();
        assert!(
            shown.contains("Redis Cluster node") && shown.contains("open_cluster"),
            "{shown}"
        );
    }
}

/// A cluster of 3 masters (no replicas), each behind a [`FaultProxy`] that it announces
/// as its address: every connection of a cluster client goes through the proxy of the
/// node it reaches. The scripts are in every master's cache.
struct Proxied {
    proxies: Vec<FaultProxy>,
    cluster: RedisCluster,
}

impl Proxied {
    fn start() -> Proxied {
        let cluster = RedisCluster::start(3, 0);
        let mut proxies = Vec::new();
        for master in cluster.masters() {
            for script in lost_reply::scripts() {
                cluster.cmd(master.port, &["SCRIPT", "LOAD", &script]);
            }
            let proxy = FaultProxy::start(master.port);
            cluster.announce_port(master.port, proxy.port());
            proxies.push(proxy);
        }
        Proxied { proxies, cluster }
    }

    async fn client(&self) -> Client {
        let urls = self.cluster.urls();
        assert!(
            urls.iter()
                .all(|url| self.proxies.iter().any(|p| *url == p.url())),
            "every master is reached through its proxy: {urls:?}"
        );
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        Client::builder()
            .default_timeout(5 * SEC)
            .open_cluster(&urls)
            .await
            .expect("connect")
    }

    /// The proxy in front of `key`'s master.
    fn proxy_of(&self, key: &str) -> &FaultProxy {
        let port = self.cluster.master_of_key(key).port;
        self.proxies
            .iter()
            .find(|p| p.port() == port)
            .expect("the key's master is announced at its proxy")
    }

    /// A case of `lost_reply` on `key`, with a client under test and another client.
    async fn case(key: &str) -> (Proxied, Client, Client) {
        let proxied = Proxied::start();
        let a = proxied.client().await;
        let b = proxied.client().await;
        let _ = proxied.proxy_of(key);
        (proxied, a, b)
    }
}

/// redis-rs' cluster client sends a call again on a new connection when the one it was
/// out on breaks: a release whose reply was lost would report `NotHeld`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlock_whose_reply_was_lost_is_indeterminate_never_not_held() {
    let key = "lost-unlock";
    let (proxied, a, b) = Proxied::case(key).await;
    lost_reply::unlock(&a, &b, proxied.proxy_of(key), key).await;
}

/// A forced release sent again after its reply was lost would delete the next holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_release_whose_reply_was_lost_never_deletes_the_next_holder() {
    let key = "lost-force-release";
    let (proxied, a, b) = Proxied::case(key).await;
    lost_reply::force_release(&a, &b, proxied.proxy_of(key), key).await;
}

/// An idempotent write is sent again by the store (no longer by redis-rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_whose_reply_was_lost_is_sent_again_and_succeeds() {
    let key = "lost-refresh";
    let (proxied, a, b) = Proxied::case(key).await;
    lost_reply::refresh(&a, &b, proxied.proxy_of(key), key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquire_whose_reply_was_lost_is_sent_again_and_grants_one_acquisition() {
    let key = "lost-acquire";
    let (proxied, a, b) = Proxied::case(key).await;
    lost_reply::acquire(&a, &b, proxied.proxy_of(key), key).await;
}

/// On a cluster connection of the user's, redis-rs' own retries (its default: 16) still
/// send a call again after a connection lost while it was out. The forced release
/// deletes only the acquisition it observed, so the delete sent again finds the next
/// holder and leaves it; it answers `false` (documented on `Client::from_cluster`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_release_sent_again_by_a_users_connection_never_deletes_the_next_holder() {
    let key = "lost-force-release-user";
    let (proxied, _, b) = Proxied::case(key).await;
    let urls = proxied.cluster.urls();
    let users = redis::cluster::ClusterClient::new(urls)
        .unwrap()
        .get_async_connection()
        .await
        .unwrap();
    let a = Client::builder()
        .default_timeout(5 * SEC)
        .from_cluster(users);
    let outcome =
        lost_reply::force_release_spares_the_next_holder(&a, &b, proxied.proxy_of(key), key).await;
    assert!(matches!(outcome, Ok(false)), "{outcome:?}");
}
