//! A lock on a 3-member etcd cluster (feature `etcd`) through member failures: the
//! leader killed while the lock is held and renewed (the lock survives with its token,
//! renewal reports nothing), and two of three killed (renewal reports the failure and
//! `lost()` fires before a contender can acquire once the cluster is back).
#![cfg(feature = "etcd")]

mod support;

use std::time::{Duration, Instant};

use leasehold::{Client, FixedInterval};
use support::EtcdCluster;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_survives_a_leader_kill_with_its_token_and_no_renewal_failure() {
    let cluster = EtcdCluster::start(3);
    let client = Client::open(&cluster.url()).await.unwrap();
    let lock = client
        .lock(
            "k",
            "holder",
            2 * SEC,
            SEC,
            FixedInterval::new(100 * MS, 10),
        )
        .await
        .unwrap();
    let token = lock.fencing_token();
    let mut renewal = lock.auto_refresh(400 * MS, 2 * SEC, SEC, 3).unwrap();
    tokio::time::sleep(500 * MS).await;

    let leader = cluster.leader();
    let killed = Instant::now();
    cluster.kill(leader);
    // Several renewals across the election and after it.
    tokio::time::sleep(3 * SEC).await;
    assert!(renewal.try_error().is_none(), "no renewal failure reported");
    assert!(lock.valid_for().is_some(), "still valid");
    assert_eq!(lock.fencing_token(), token);
    assert!(
        lock.ttl().await.unwrap().is_some(),
        "still held on the cluster"
    );
    let contender = Client::open(&cluster.url()).await.unwrap();
    let err = contender
        .try_lock("k", "contender", 2 * SEC)
        .await
        .unwrap_err();
    assert!(err.is_not_obtained(), "{err:?}");
    eprintln!(
        "FIGURE etcd leader kill: lock kept, token {token} unchanged, {:?} after the kill",
        killed.elapsed()
    );
    lock.unlock().await.unwrap();
    assert!(renewal.error().await.is_none(), "a clean stop");
    let next = contender.try_lock("k", "contender", 2 * SEC).await.unwrap();
    assert!(next.fencing_token() > token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_quorum_ends_renewal_and_lost_fires_before_a_contender_acquires() {
    let cluster = EtcdCluster::start(3);
    let client = Client::open(&cluster.url()).await.unwrap();
    let lock = client
        .lock(
            "k",
            "holder",
            2 * SEC,
            SEC,
            FixedInterval::new(100 * MS, 10),
        )
        .await
        .unwrap();
    let token = lock.fencing_token();
    let mut renewal = lock.auto_refresh(400 * MS, 2 * SEC, 300 * MS, 2).unwrap();
    tokio::time::sleep(500 * MS).await;

    let leader = cluster.leader();
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    // The leader and one follower: the survivor has no quorum.
    let killed = Instant::now();
    cluster.kill(leader);
    cluster.kill(others[0]);
    let failure = tokio::time::timeout(10 * SEC, renewal.error())
        .await
        .expect("renewal reports the failure")
        .expect("a failure, not a clean stop");
    assert!(
        failure.is_max_retry_exceeded() || failure.is_store() || failure.is_timeout(),
        "{failure:?}"
    );
    let reported = killed.elapsed();
    tokio::time::timeout(3 * SEC, lock.lost())
        .await
        .expect("lost fires when the validity runs out");
    let lost_at = Instant::now();
    eprintln!(
        "FIGURE etcd quorum loss: renewal failed after {reported:?} ({failure}), lost() after {:?}",
        killed.elapsed()
    );

    // The cluster comes back; a contender polls until it gets the key.
    let restarted = tokio::task::spawn_blocking(move || {
        cluster.restart(leader);
        cluster.restart(others[0]);
        cluster
    })
    .await
    .unwrap();
    let contender = Client::open(&restarted.url()).await.unwrap();
    let next = contender
        .lock(
            "k",
            "contender",
            2 * SEC,
            SEC,
            FixedInterval::new(50 * MS, 400),
        )
        .await
        .unwrap();
    let acquired_at = Instant::now();
    assert!(acquired_at > lost_at, "lost() fired first");
    assert!(next.fencing_token() > token);
    eprintln!(
        "FIGURE etcd quorum loss: contender acquired {:?} after lost()",
        acquired_at - lost_at
    );
}
