//! A lock on a 3-member etcd cluster (feature `etcd`) whose client reaches each member
//! through a proxy of its own ([`FaultProxy`]), so that it can be cut off from some
//! members while they stay in the cluster: a partial partition. The client is renewed
//! with the README's settings (renewal every third of the expiration, a 200 ms timeout,
//! `max_retry` 3).
//!
//! * Cut off from the leader, from a follower, or from both: the lock survives (no
//!   renewal failure, `valid_for()` never runs out, the token stays) and fresh
//!   acquires keep succeeding within their 200 ms timeout. `valid_for()`'s low point
//!   while cut off is printed as a `FIGURE`.
//! * Cut off from every member: renewal reports the failure and `lost()` fires before a
//!   contender talking to the members directly acquires.
//!
//! One cluster per binary (it is never killed here, only cut off from); the tests take
//! turns (a lock), each on its own proxies and keys.
#![cfg(feature = "etcd")]

mod support;

use std::time::{Duration, Instant};

use leasehold::{AutoRefresh, Client, FixedInterval, Lock, NoRetry};
use support::{EtcdCluster, FaultProxy};
use tokio::sync::{Mutex, MutexGuard};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

/// The README's renewal settings, on a 3 s expiration.
const EXPIRATION: Duration = Duration::from_secs(3);
const INTERVAL: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_millis(200);
const MAX_RETRY: u32 = 3;
/// How long a test stays cut off: several renewals and many acquires.
const CUT_FOR: Duration = Duration::from_secs(8);

/// The tests take turns: their timing must not suffer from each other on 2 cores.
async fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::const_new(());
    SERIAL.lock().await
}

/// The shared cluster, and a proxy in front of each of its members.
struct Proxied {
    cluster: &'static EtcdCluster,
    proxies: Vec<FaultProxy>,
}

impl Proxied {
    fn new() -> Proxied {
        let cluster = EtcdCluster::shared();
        let proxies = (0..cluster.len())
            .map(|i| FaultProxy::start(cluster.port(i)))
            .collect();
        Proxied { cluster, proxies }
    }

    /// The members, each through its proxy.
    fn url(&self) -> String {
        let endpoints: Vec<String> = self
            .proxies
            .iter()
            .map(|p| format!("127.0.0.1:{}", p.port()))
            .collect();
        format!("etcd://{}", endpoints.join(","))
    }

    /// The member `lock`'s client sends to now: the one whose proxy forwards a `ttl()`.
    async fn in_use(&self, lock: &Lock) -> usize {
        let before: Vec<u64> = self.proxies.iter().map(FaultProxy::forwarded).collect();
        lock.ttl().await.unwrap();
        let grown: Vec<u64> = self
            .proxies
            .iter()
            .zip(before)
            .map(|(p, b)| p.forwarded() - b)
            .collect();
        let busiest = (0..grown.len()).max_by_key(|i| grown[*i]).unwrap();
        assert!(grown[busiest] > 0, "no request went anywhere");
        busiest
    }

    /// Make `lock`'s client send to `member`: while it is the only one reachable, an
    /// operation goes there; after the others heal, it stays (the client keeps to the
    /// member that answers). Whether it did.
    async fn steer(&self, lock: &Lock, member: usize) -> bool {
        for _ in 0..3 {
            if self.in_use(lock).await == member {
                return true;
            }
            let others: Vec<usize> = (0..self.proxies.len()).filter(|i| *i != member).collect();
            self.cut(&others, true);
            let _ = lock.ttl().await;
            self.cut(&others, false);
            // The others answer their probes again.
            tokio::time::sleep(SEC).await;
        }
        false
    }

    /// Cut the client off from `members` (nothing gets through either way, connections
    /// stay open: a partition), or heal.
    fn cut(&self, members: &[usize], on: bool) {
        for i in members {
            self.proxies[*i].blackhole(on);
        }
    }
}

/// Which members a test cuts the client off from.
#[derive(Debug, Clone, Copy)]
enum Which {
    Leader,
    Follower,
    LeaderAndFollower,
}

impl Which {
    fn members(self, cluster: &EtcdCluster) -> Vec<usize> {
        let leader = cluster.leader();
        let follower = (leader + 1) % cluster.len();
        match self {
            Which::Leader => vec![leader],
            Which::Follower => vec![follower],
            Which::LeaderAndFollower => vec![leader, follower],
        }
    }
}

/// A lock renewed with the README's settings.
async fn renewed(client: &Client, key: &str) -> (Lock, AutoRefresh) {
    let lock = client
        .lock(
            key,
            "holder",
            EXPIRATION,
            SEC,
            FixedInterval::new(100 * MS, 10),
        )
        .await
        .unwrap();
    let renewal = lock
        .auto_refresh(INTERVAL, EXPIRATION, TIMEOUT, MAX_RETRY)
        .unwrap();
    (lock, renewal)
}

/// Cut off from `which` for [`CUT_FOR`], renewing a lock and acquiring (then
/// releasing) a fresh key every 250 ms with a 200 ms timeout: the lock survives and
/// every acquire succeeds.
async fn survives(test: &str, which: Which) {
    let _serial = serial().await;
    let proxied = Proxied::new();
    let client = Client::open(&proxied.url()).await.unwrap();
    let key = format!("{test}-{}", &leasehold::random_value()[..8]);
    let (lock, mut renewal) = renewed(&client, &key).await;
    let token = lock.fencing_token();
    tokio::time::sleep(200 * MS).await;

    // The worst case: cut off from the member the client sends to.
    let members = which.members(proxied.cluster);
    let steered = proxied.steer(&lock, members[0]).await;
    proxied.cut(&members, true);
    let cut_at = Instant::now();
    let acquiring = tokio::spawn({
        let client = client.clone();
        let key = key.clone();
        async move {
            let (mut acquired, mut released, mut slowest) = (0, 0, Duration::ZERO);
            let mut failures = Vec::new();
            let mut n = 0;
            while cut_at.elapsed() < CUT_FOR {
                n += 1;
                let started = Instant::now();
                match client
                    .lock(
                        &format!("{key}-probe-{n}"),
                        "probe",
                        EXPIRATION,
                        TIMEOUT,
                        NoRetry,
                    )
                    .await
                {
                    Ok(probe) => {
                        acquired += 1;
                        slowest = slowest.max(started.elapsed());
                        match probe.unlock().await {
                            Ok(()) => released += 1,
                            Err(e) => failures.push(format!("unlock {n}: {e}")),
                        }
                    }
                    Err(e) => failures.push(format!("lock {n}: {e} after {:?}", started.elapsed())),
                }
                tokio::time::sleep(250 * MS).await;
            }
            (n, acquired, released, slowest, failures)
        }
    });
    let mut low = EXPIRATION;
    while cut_at.elapsed() < CUT_FOR {
        match lock.valid_for() {
            Some(left) => low = low.min(left),
            None => panic!(
                "{which:?}: the lock lapsed {:?} after the cut",
                cut_at.elapsed()
            ),
        }
        if let Some(e) = renewal.try_error() {
            panic!(
                "{which:?}: renewal ended {:?} after the cut: {e}",
                cut_at.elapsed()
            );
        }
        tokio::time::sleep(10 * MS).await;
    }
    let (n, acquired, released, slowest, failures) = acquiring.await.unwrap();
    eprintln!(
        "FIGURE etcd cut off from {which:?} for {CUT_FOR:?} (expiration {EXPIRATION:?}, \
         renewal every {INTERVAL:?}, timeout {TIMEOUT:?}, max_retry {MAX_RETRY}): \
         valid_for low point {low:?}; {acquired}/{n} acquires (slowest {slowest:?}), \
         {released} releases; failures {failures:?}"
    );
    assert!(failures.is_empty(), "{which:?}: {failures:?}");
    assert_eq!(lock.fencing_token(), token);
    assert!(lock.ttl().await.unwrap().is_some(), "still held");
    let contender = Client::open(&proxied.cluster.url()).await.unwrap();
    let err = contender
        .try_lock(&key, "contender", SEC)
        .await
        .unwrap_err();
    assert!(err.is_not_obtained(), "{err:?}");

    proxied.cut(&members, false);
    lock.unlock().await.unwrap();
    assert!(renewal.error().await.is_none(), "a clean stop");
    assert!(
        steered,
        "the client sent to member {} when it was cut",
        members[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_from_the_leader_the_lock_survives_and_acquires_succeed() {
    survives("leader", Which::Leader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_from_a_follower_the_lock_survives_and_acquires_succeed() {
    survives("follower", Which::Follower).await;
}

/// Two of three members out of reach: the third still reaches the leader (the members
/// are not partitioned from each other), and a member serves a client's linearizable
/// writes and lease keep-alives for the quorum. So the lock survives this too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_from_two_members_the_lock_survives_through_the_third() {
    survives("two", Which::LeaderAndFollower).await;
}

/// Cut off from every member: renewal reports the failure and `lost()` fires, both
/// before a contender that reaches the members directly (polling every 20 ms) acquires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_from_every_member_the_loss_is_reported_before_a_contender_acquires() {
    let _serial = serial().await;
    let proxied = Proxied::new();
    let client = Client::open(&proxied.url()).await.unwrap();
    let key = format!("all-{}", &leasehold::random_value()[..8]);
    let (lock, mut renewal) = renewed(&client, &key).await;
    let token = lock.fencing_token();
    tokio::time::sleep(200 * MS).await;

    let contender = Client::open(&proxied.cluster.url()).await.unwrap();
    proxied.cut(&[0, 1, 2], true);
    let cut_at = Instant::now();
    let polling = tokio::spawn({
        let key = key.clone();
        async move {
            let next = contender
                .lock(
                    &key,
                    "contender",
                    EXPIRATION,
                    SEC,
                    FixedInterval::new(20 * MS, 1000),
                )
                .await
                .unwrap();
            (Instant::now(), next)
        }
    });
    let failure = tokio::time::timeout(10 * SEC, renewal.error())
        .await
        .expect("renewal reports the failure")
        .expect("a failure, not a clean stop");
    let reported = Instant::now();
    tokio::time::timeout(10 * SEC, lock.lost())
        .await
        .expect("lost() fires");
    let lost = Instant::now();
    let (acquired, next) = tokio::time::timeout(10 * SEC, polling)
        .await
        .expect("the contender acquires once the lease ran out")
        .unwrap();
    eprintln!(
        "FIGURE etcd cut off from every member: renewal failed after {:?} ({failure}), \
         lost() after {:?}, a contender acquired after {:?}",
        reported - cut_at,
        lost - cut_at,
        acquired - cut_at
    );
    assert!(failure.is_max_retry_exceeded(), "{failure:?}");
    assert!(reported < acquired, "renewal reported the loss first");
    assert!(lost < acquired, "lost() fired first");
    assert!(next.fencing_token() > token);
    proxied.cut(&[0, 1, 2], false);
    next.unlock().await.unwrap();
}

/// A client waiting in line, cut off from the member it watches its predecessor on:
/// it notices (its place's keep-alive fails over), watches on another member, and is
/// woken by the release, not by its strategy's 10 s poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_cut_off_from_its_member_is_woken_by_the_release() {
    let _serial = serial().await;
    let proxied = Proxied::new();
    let client = Client::open(&proxied.url()).await.unwrap();
    let direct = Client::open(&proxied.cluster.url()).await.unwrap();
    let key = format!("waiter-{}", &leasehold::random_value()[..8]);
    let holder = direct.try_lock(&key, "holder", 30 * SEC).await.unwrap();
    let token = holder.fencing_token();
    // The worst case: the member the client sends to (and watches on) is cut.
    let own = client
        .try_lock(&format!("{key}-own"), "own", 30 * SEC)
        .await
        .unwrap();
    let member = proxied.in_use(&own).await;
    let waiter = tokio::spawn({
        let client = client.clone();
        let key = key.clone();
        async move {
            let lock = client
                .lock(
                    &key,
                    "waiter",
                    EXPIRATION,
                    TIMEOUT,
                    FixedInterval::new(10 * SEC, 1),
                )
                .await;
            (Instant::now(), lock)
        }
    });
    tokio::time::sleep(500 * MS).await;
    assert!(!waiter.is_finished(), "waiting in line");
    proxied.cut(&[member], true);
    tokio::time::sleep(SEC).await;
    holder.unlock().await.unwrap();
    let released = Instant::now();
    let (acquired, lock) = tokio::time::timeout(5 * SEC, waiter)
        .await
        .expect("woken by the release")
        .unwrap();
    let lock = lock.unwrap();
    let waited = acquired - released;
    eprintln!("FIGURE etcd waiter cut off from its member: acquired {waited:?} after the release");
    assert!(waited < SEC, "{waited:?}");
    assert!(lock.fencing_token() > token);
    proxied.cut(&[member], false);
    lock.unlock().await.unwrap();
    own.unlock().await.unwrap();
}
