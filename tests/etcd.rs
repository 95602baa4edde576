//! etcd (feature `etcd`): the whole conformance suite, async and blocking, on one etcd
//! member shared by this test binary (a key prefix per case), plus what only etcd has —
//! the fair wait in line, whole-second leases, a lock's bounded state as keys, the history
//! checker across processes, `Config` with an `etcd://` URL, and the published fault
//! cases on a member of their own. Member failures are in
//! `tests/etcd_cluster.rs` (a 3-member cluster per test).

#![cfg(feature = "etcd")]

mod support;
#[macro_use]
mod suite;

use std::sync::Arc;
use std::time::{Duration, Instant};

use leasehold::{Client, FixedInterval, Lock, NoRetry};
use support::{EtcdServer, FaultProxy};
use tokio::sync::Mutex;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

conformance!(etcd);

/// Entry point of a history worker process (re-executed test binary); not a test itself.
#[test]
#[ignore = "worker entry point, run by the history tests in child processes"]
fn history_worker() {
    suite::history::worker();
}

/// A namespace of its own on the shared server: a client with that key prefix, and the
/// prefix.
async fn client(test: &str) -> (Client, String) {
    let prefix = format!("{test}-{}:", &leasehold::random_value()[..8]);
    let client = Client::builder()
        .key_prefix(prefix.as_str())
        .open(&suite::etcd::url())
        .await
        .expect("connect to etcd");
    (client, prefix)
}

/// Another client on the same namespace (its own connection, its own waiters).
async fn another(prefix: &str) -> Client {
    Client::builder()
        .key_prefix(prefix)
        .open(&suite::etcd::url())
        .await
        .expect("connect to etcd")
}

async fn raw() -> etcd_client::Client {
    etcd_client::Client::connect([EtcdServer::shared().endpoint()], None)
        .await
        .expect("etcd-client")
}

/// The values in the line of lock `key` (its holder first, then its waiters in arrival
/// order), read directly.
async fn line(prefix: &str, key: &str) -> Vec<String> {
    use etcd_client::{GetOptions, SortOrder, SortTarget};
    let start = format!("{prefix}{key}\u{0}0");
    let end = format!("{prefix}{key}\0g");
    let got = raw()
        .await
        .get(
            start,
            Some(
                GetOptions::new()
                    .with_range(end)
                    .with_sort(SortTarget::Create, SortOrder::Ascend),
            ),
        )
        .await
        .unwrap();
    got.kvs()
        .iter()
        .map(|kv| kv.value_str().unwrap().to_owned())
        .collect()
}

/// Every key the store keeps for lock `key` (the line, creator keys, records of aborted
/// attempts), read directly.
async fn keys_of(prefix: &str, key: &str) -> Vec<String> {
    use etcd_client::GetOptions;
    let got = raw()
        .await
        .get(
            format!("{prefix}{key}\0"),
            Some(GetOptions::new().with_range(format!("{prefix}{key}\u{1}"))),
        )
        .await
        .unwrap();
    got.kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap().replace('\0', "\\0"))
        .collect()
}

/// Waits (bounded: 5 s) until the line of `key` has `n` keys.
async fn until_in_line(prefix: &str, key: &str, n: usize) {
    let deadline = Instant::now() + 5 * SEC;
    while line(prefix, key).await.len() < n {
        assert!(Instant::now() < deadline, "{n} never in line");
        tokio::time::sleep(5 * MS).await;
    }
}

// -- the history checker ----------------------------------------------------------

/// The exclusion history checker across 3 OS processes × 4 tasks, the lock, the counter
/// and the records all on etcd: no lost update, no overlapping holds, create-revision
/// tokens strictly rising in grant order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_across_processes_never_overlap_and_revisions_rise_in_grant_order() {
    let namespace = format!("history-{}:", &leasehold::random_value()[..8]);
    let target = suite::history::Target::Etcd(suite::etcd::url(), namespace);
    suite::history::holds_never_overlap(&target).await;
}

/// Negative control: the same workload without the lock is caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_the_same_workload_without_the_lock() {
    let namespace = format!("control-{}:", &leasehold::random_value()[..8]);
    let target = suite::history::Target::Etcd(suite::etcd::url(), namespace);
    suite::history::the_checker_catches_no_lock(&target).await;
}

// -- the fair wait ----------------------------------------------------------------

/// `WAITERS` callers (each on its own client if `separate`, else all on one) get in line
/// one after the other behind a holder; each holds the lock 20 ms. They acquire in
/// arrival order, each within a few ms of its predecessor's unlock, though each polls
/// only every 10 s; nothing is left behind.
async fn waiters_acquire_in_arrival_order(test: &str, separate: bool) {
    const WAITERS: usize = 6;
    let (shared, prefix) = client(test).await;
    let holder = shared.try_lock("k", "holder", 30 * SEC).await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..WAITERS {
        let client = if separate {
            another(&prefix).await
        } else {
            shared.clone()
        };
        let order = Arc::clone(&order);
        tasks.push(tokio::spawn(async move {
            let lock = client
                .lock(
                    "k",
                    &format!("w{i}"),
                    30 * SEC,
                    SEC,
                    FixedInterval::new(10 * SEC, 1),
                )
                .await
                .unwrap();
            let got = Instant::now();
            order.lock().await.push((i, got, lock.fencing_token()));
            tokio::time::sleep(20 * MS).await;
            let released = Instant::now();
            lock.unlock().await.unwrap();
            released
        }));
        // In line before the next one arrives.
        until_in_line(&prefix, "k", i + 2).await;
    }
    let started = Instant::now();
    let released = Instant::now();
    holder.unlock().await.unwrap();
    let mut unlocks = vec![released];
    for task in tasks {
        unlocks.push(tokio::time::timeout(10 * SEC, task).await.unwrap().unwrap());
    }
    let order = order.lock().await.clone();
    let arrival: Vec<usize> = order.iter().map(|(i, ..)| *i).collect();
    assert_eq!(arrival, (0..WAITERS).collect::<Vec<_>>(), "FIFO");
    let tokens: Vec<u64> = order.iter().map(|(.., t)| *t).collect();
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
    let gaps: Vec<Duration> = order
        .iter()
        .enumerate()
        .map(|(k, (_, got, _))| got.saturating_duration_since(unlocks[k]))
        .collect();
    let worst = gaps.iter().max().unwrap();
    eprintln!(
        "FIGURE etcd hand-off ({} clients): gaps {gaps:?}, all {WAITERS} in {:?}",
        if separate { "separate" } else { "one" },
        started.elapsed()
    );
    assert!(
        *worst < 500 * MS,
        "woken by the release, not the 10 s poll: {gaps:?}"
    );
    // Claims, places and leases: nothing of the lock is left but the records of aborts.
    let left: Vec<String> = keys_of(&prefix, "k")
        .await
        .into_iter()
        .filter(|k| !k.contains("\\0~a"))
        .collect();
    assert_eq!(left, Vec::<String>::new(), "nothing left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_on_separate_clients_acquire_in_arrival_order() {
    waiters_acquire_in_arrival_order("fifo-separate", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_on_one_client_acquire_in_arrival_order() {
    waiters_acquire_in_arrival_order("fifo-one", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_strategy_runs_out_withdraws_within_the_bound() {
    let (client, prefix) = client("withdraw").await;
    let _holder = client.try_lock("k", "holder", 30 * SEC).await.unwrap();
    let other = another(&prefix).await;
    let started = Instant::now();
    let err = other
        .lock(
            "k",
            "waiter",
            30 * SEC,
            SEC,
            FixedInterval::new(150 * MS, 2),
        )
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(err.is_not_obtained(), "{err:?}");
    // Two delays of 150 ms, each kept to within the timer's millisecond (either way).
    assert!(waited >= 298 * MS, "the strategy's delays: {waited:?}");
    assert!(waited < 450 * MS, "and no more: {waited:?}");
    // Withdrawn before `lock` returned.
    assert_eq!(line(&prefix, "k").await, ["holder"]);

    // A single attempt leaves nothing either.
    let err = other.try_lock("k", "once", 30 * SEC).await.unwrap_err();
    assert!(err.is_not_obtained(), "{err:?}");
    assert_eq!(line(&prefix, "k").await, ["holder"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_waiter_leaves_no_key_and_the_line_moves_past_it() {
    let (client, prefix) = client("cancelled").await;
    let holder = client.try_lock("k", "holder", 30 * SEC).await.unwrap();
    let wait = |val: &'static str| {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .lock("k", val, 30 * SEC, SEC, FixedInterval::new(10 * SEC, 1))
                .await
        })
    };
    let first = wait("first");
    until_in_line(&prefix, "k", 2).await;
    let middle = wait("middle");
    until_in_line(&prefix, "k", 3).await;
    let last = wait("last");
    until_in_line(&prefix, "k", 4).await;
    // The middle waiter is cancelled: its key goes (the detached abort).
    middle.abort();
    let deadline = Instant::now() + 5 * SEC;
    while line(&prefix, "k").await.contains(&"middle".to_owned()) {
        assert!(
            Instant::now() < deadline,
            "the cancelled waiter's key stayed"
        );
        tokio::time::sleep(5 * MS).await;
    }
    holder.unlock().await.unwrap();
    let first: Lock = tokio::time::timeout(2 * SEC, first)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.value(), "first");
    let released = Instant::now();
    first.unlock().await.unwrap();
    let last = tokio::time::timeout(2 * SEC, last)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(last.value(), "last");
    assert!(released.elapsed() < SEC, "woken past the withdrawn waiter");
}

/// The digest `inspect` shows for a holder of `val` (it depends on the value only).
async fn digest_of(client: &Client, val: &str) -> String {
    let key = format!("digest-{}", &leasehold::random_value()[..8]);
    let lock = client.try_lock(&key, val, SEC).await.unwrap();
    let digest = client
        .inspect(&key)
        .await
        .unwrap()
        .unwrap()
        .holder()
        .to_owned();
    lock.unlock().await.unwrap();
    digest
}

/// A waiter whose client is cut off while in line (a crash looks the same from the
/// store: nothing of it arrives any more, not even the withdrawal of its place) is
/// skipped when the holder releases: the live waiter behind it acquires within about
/// the server's minimum lease TTL, and `inspect` never reports the dead waiter as the
/// holder meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_cut_off_in_line_is_skipped_and_never_reported_as_the_holder() {
    let (client, prefix) = client("dead-waiter").await;
    let dead_digest = digest_of(&client, "dead").await;
    let holder = client.try_lock("k", "holder", 30 * SEC).await.unwrap();
    let proxy = FaultProxy::start(EtcdServer::shared().port());
    let cut_off = Client::builder()
        .key_prefix(prefix.as_str())
        .open(&format!("etcd://127.0.0.1:{}", proxy.port()))
        .await
        .unwrap();
    let dead = tokio::spawn(async move {
        cut_off
            .lock("k", "dead", 30 * SEC, SEC, FixedInterval::new(10 * SEC, 3))
            .await
    });
    until_in_line(&prefix, "k", 2).await;
    let live = tokio::spawn({
        let client = another(&prefix).await;
        async move {
            let lock = client
                .lock("k", "live", 30 * SEC, SEC, FixedInterval::new(10 * SEC, 1))
                .await;
            (Instant::now(), lock)
        }
    });
    until_in_line(&prefix, "k", 3).await;
    assert_eq!(line(&prefix, "k").await, ["holder", "dead", "live"]);

    proxy.blackhole(true);
    tokio::time::sleep(100 * MS).await;
    holder.unlock().await.unwrap();
    let released = Instant::now();
    let mut reported = Vec::new();
    while !live.is_finished() && released.elapsed() < 5 * SEC {
        let info = client.inspect("k").await.unwrap();
        let holder = info.map(|i| i.holder().to_owned());
        if reported.last() != Some(&holder) {
            reported.push(holder);
        }
        tokio::time::sleep(20 * MS).await;
    }
    let Ok(live) = tokio::time::timeout(SEC, live).await else {
        panic!(
            "the live waiter did not acquire within 6 s of the release; inspect reported \
             {reported:?} (the dead waiter is {dead_digest})"
        );
    };
    let (acquired, lock) = live.unwrap();
    let lock = lock.unwrap();
    let waited = acquired - released;
    eprintln!(
        "FIGURE etcd dead waiter in line: the live waiter behind it acquired {waited:?} \
         after the release; inspect reported {reported:?} (the dead waiter is {dead_digest})"
    );
    assert!(
        !reported.contains(&Some(dead_digest.clone())),
        "the dead waiter was reported as the holder: {reported:?}"
    );
    assert!(
        waited < 2500 * MS,
        "skipped within about the minimum TTL: {waited:?}"
    );
    assert_eq!(lock.value(), "live");
    let info = client.inspect("k").await.unwrap().expect("held");
    assert_eq!(info.fencing_token(), lock.fencing_token());
    dead.abort();
    lock.unlock().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_wakes_when_the_holders_lease_runs_out() {
    let (holder_client, prefix) = client("expiry").await;
    let holder = holder_client.try_lock("k", "holder", SEC).await.unwrap();
    let expires = Instant::now() + holder.expiration();
    let waiter = another(&prefix).await;
    let lock = waiter
        .lock(
            "k",
            "waiter",
            10 * SEC,
            SEC,
            FixedInterval::new(10 * SEC, 1),
        )
        .await
        .unwrap();
    let late = Instant::now().saturating_duration_since(expires);
    eprintln!("FIGURE etcd hand-off on expiry: {late:?} after the holder's lease ran out");
    // etcd deletes expired leases in a sweep every 500 ms.
    assert!(late < 1500 * MS, "{late:?}");
    assert!(lock.fencing_token() > holder.fencing_token());
    drop(holder);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_notify_off_a_miss_leaves_nothing_and_waiters_poll() {
    let (client, prefix) = client("polling").await;
    let holder = client.try_lock("k", "holder", 30 * SEC).await.unwrap();
    let polling = Client::builder()
        .key_prefix(prefix.as_str())
        .notify(false)
        .open(&suite::etcd::url())
        .await
        .unwrap();
    let err = polling.try_lock("k", "p", 30 * SEC).await.unwrap_err();
    assert!(err.is_not_obtained(), "{err:?}");
    assert_eq!(line(&prefix, "k").await, ["holder"], "not in line");
    let waiter = tokio::spawn(async move {
        polling
            .lock("k", "p", 30 * SEC, SEC, FixedInterval::new(300 * MS, 10))
            .await
    });
    tokio::time::sleep(100 * MS).await;
    assert_eq!(line(&prefix, "k").await, ["holder"], "polls, out of line");
    holder.unlock().await.unwrap();
    let started = Instant::now();
    let lock = tokio::time::timeout(2 * SEC, waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(started.elapsed() <= 400 * MS, "{:?}", started.elapsed());
    assert_eq!(line(&prefix, "k").await, ["p"]);
    lock.unlock().await.unwrap();
}

// -- whole-second leases ------------------------------------------------------------

/// As documented on `Client::open`: rounded up to whole seconds and the server's minimum
/// (1 s with the harness' 100 ms election timeout), reported by `Lock::expiration()`,
/// and the key really lasts that long — then goes within etcd's 0.5 s expiry sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expirations_are_rounded_up_to_whole_seconds_and_the_key_lasts_that_long() {
    let (client, prefix) = client("rounded").await;
    let other = another(&prefix).await;
    let checks = [(50 * MS, SEC), (SEC, SEC), (1500 * MS, 2 * SEC)];
    let runs = checks.iter().map(|&(asked, granted)| {
        let (client, other) = (client.clone(), other.clone());
        async move {
            let key = format!("k{}", asked.as_millis());
            let started = Instant::now();
            let lock = client.try_lock(&key, "a", asked).await.unwrap();
            assert_eq!(lock.expiration(), granted, "asked {asked:?}");
            let valid = lock.valid_for().unwrap();
            assert!(valid > granted - 100 * MS && valid <= granted, "{valid:?}");
            // Held for the granted time, not the asked one.
            tokio::time::sleep((granted - 150 * MS).saturating_sub(started.elapsed())).await;
            assert!(
                lock.ttl().await.unwrap().is_some(),
                "still held at {:?}",
                started.elapsed()
            );
            let err = other.try_lock(&key, "b", SEC).await.unwrap_err();
            assert!(err.is_not_obtained(), "{err:?}");
            // Gone once the lease ran out, within the server's sweep.
            tokio::time::timeout(2 * SEC, lock.lost())
                .await
                .expect("lost fires");
            let deadline = Instant::now() + 2 * SEC;
            let next = loop {
                match other.try_lock(&key, "b", SEC).await {
                    Ok(next) => break next,
                    Err(e) if e.is_not_obtained() && Instant::now() < deadline => {
                        tokio::time::sleep(20 * MS).await
                    }
                    Err(e) => panic!("{e:?} after {:?}", started.elapsed()),
                }
            };
            let lasted = started.elapsed();
            assert!(lasted >= granted, "{lasted:?}");
            assert!(lasted < granted + 1200 * MS, "{lasted:?}");
            assert!(next.fencing_token() > lock.fencing_token());
        }
    });
    futures::future::join_all(runs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_with_a_sub_second_expiration_keeps_a_whole_second_lease() {
    let (client, _) = client("renewal").await;
    let lock = client.try_lock("k", "a", 300 * MS).await.unwrap();
    assert_eq!(lock.expiration(), SEC);
    let mut renewal = lock.auto_refresh(100 * MS, 300 * MS, 500 * MS, 3).unwrap();
    tokio::time::sleep(2500 * MS).await;
    assert!(renewal.try_error().is_none());
    assert!(lock.valid_for().unwrap() > 800 * MS);
    // `ttl()` counts whole seconds, rounded down.
    let ttl = lock.ttl().await.unwrap().unwrap();
    assert!(ttl <= SEC && ttl.subsec_nanos() == 0, "{ttl:?}");
    lock.unlock().await.unwrap();
}

// -- protocol v2: the value is the identity, state per key is bounded -------------

/// Two clients holding the same value are one holder: the second's 1 s re-lock shares
/// the key and its token and re-arms it to 1 s (shorter: the value is the identity), a
/// 20 s re-lock moves it to a 20 s lease, and one unlock through any handle frees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_value_relocks_share_the_key_and_rearm_it_to_their_own_expiration() {
    let (first_client, prefix) = client("identity").await;
    let second_client = another(&prefix).await;
    let first = first_client.try_lock("k", "v", 10 * SEC).await.unwrap();
    let second = second_client.try_lock("k", "v", SEC).await.unwrap();
    assert_eq!(second.fencing_token(), first.fencing_token());
    let ttl = first.ttl().await.unwrap().unwrap();
    assert!(ttl <= SEC, "re-armed to the shorter expiration: {ttl:?}");
    let third = second_client.try_lock("k", "v", 20 * SEC).await.unwrap();
    assert_eq!(third.fencing_token(), first.fencing_token());
    let ttl = first.ttl().await.unwrap().unwrap();
    assert!(
        ttl >= 19 * SEC,
        "re-armed to the longer expiration: {ttl:?}"
    );
    first.unlock().await.unwrap();
    assert_eq!(first_client.inspect("k").await.unwrap(), None, "deleted");
    assert_eq!(second.ttl().await.unwrap(), None);
    assert!(third.unlock().await.unwrap_err().is_not_held());
    assert_eq!(keys_of(&prefix, "k").await, Vec::<String>::new());
}

/// 300 same-value re-locks of one key (issue 20: 124 broke every longer re-arm with
/// `too many operations in txn request`), then a refresh to a longer expiration and one
/// to a shorter one: both succeed and set the TTL asked for; the key is still two etcd
/// keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_relocks_then_longer_and_shorter_refreshes() {
    let (client, prefix) = client("relocks300").await;
    let first = client.try_lock("k", "v", 5 * SEC).await.unwrap();
    for _ in 0..300 {
        let again = client.try_lock("k", "v", 5 * SEC).await.unwrap();
        assert_eq!(again.fencing_token(), first.fencing_token());
    }
    assert_eq!(
        keys_of(&prefix, "k").await.len(),
        2,
        "the key and its creator"
    );
    first.refresh_for(30 * SEC).await.expect("a longer re-arm");
    let ttl = first.ttl().await.unwrap().unwrap();
    assert!(ttl >= 29 * SEC, "extended: {ttl:?}");
    first.refresh_for(2 * SEC).await.expect("a shorter re-arm");
    let ttl = first.ttl().await.unwrap().unwrap();
    assert!(ttl <= 2 * SEC, "shortened: {ttl:?}");
    assert_eq!(
        keys_of(&prefix, "k").await.len(),
        2,
        "the key and its creator"
    );
    first.unlock().await.unwrap();
    assert_eq!(keys_of(&prefix, "k").await, Vec::<String>::new());
}

/// Lock, drop the handle, lock again with the same value, unlock: the key is free at
/// once (issue 20: it stayed held for its full expiration).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_drop_relock_unlock_frees_the_key_at_once() {
    let (client, prefix) = client("relock-drop").await;
    let rival = another(&prefix).await;
    for round in 0..5 {
        let first = client.try_lock("k", "v", 30 * SEC).await.unwrap();
        drop(first);
        let again = client.try_lock("k", "v", 30 * SEC).await.unwrap();
        again.unlock().await.unwrap();
        let other = rival
            .try_lock("k", "other", 30 * SEC)
            .await
            .unwrap_or_else(|e| panic!("round {round}: still held: {e:?}"));
        other.unlock().await.unwrap();
    }
    assert_eq!(keys_of(&prefix, "k").await, Vec::<String>::new());
}

/// 200 same-value re-locks and 200 `lock` calls cancelled mid-flight (0 or 1 ms
/// timeouts around calls on the held key; same value from the holder's client, another
/// value from a second client) leave a bounded number of etcd keys under the lock's
/// name: the held key and its creator, and one abort record per client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_per_key_stays_bounded_after_relocks_and_cancelled_calls() {
    const BOUND: usize = 4;
    let (client, prefix) = client("bounded").await;
    let waiter = another(&prefix).await;
    let held = client.try_lock("k", "v", 30 * SEC).await.unwrap();
    for _ in 0..200 {
        let again = client.try_lock("k", "v", 30 * SEC).await.unwrap();
        assert_eq!(again.fencing_token(), held.fencing_token());
    }
    let most = keys_of(&prefix, "k").await.len();
    assert_eq!(most, 2, "the key and its creator after the re-locks");
    for i in 0..200u64 {
        let cut = Duration::from_millis(i % 2);
        let (who, val) = if i % 4 < 2 {
            (&waiter, "w")
        } else {
            (&client, "v")
        };
        let call = who.lock("k", val, 30 * SEC, SEC, FixedInterval::new(SEC, 5));
        let _ = tokio::time::timeout(cut, call).await;
    }
    // The detached aborts run; then only the bounded state is left.
    let deadline = Instant::now() + 10 * SEC;
    let left = loop {
        let left = keys_of(&prefix, "k").await;
        if line(&prefix, "k").await == ["v"] && left.len() <= BOUND {
            break left;
        }
        assert!(Instant::now() < deadline, "left behind: {left:?}");
        tokio::time::sleep(20 * MS).await;
    };
    let records = left.iter().filter(|k| k.contains("\\0~a")).count();
    assert!(records <= 2, "one abort record per client: {left:?}");
    // The held lock survived every cancelled same-value call.
    let info = waiter.inspect("k").await.unwrap().expect("still held");
    assert_eq!(info.fencing_token(), held.fencing_token());
    held.refresh().await.expect("still held");
    held.unlock().await.unwrap();
    let next = waiter.try_lock("k", "w", SEC).await.expect("free");
    next.unlock().await.unwrap();
}

/// `lock` calls cancelled at every point of their attempts (timeouts from 0 to 20 ms
/// around a call that waits in line behind a holder, or takes a free key): the detached
/// aborts delete whatever the attempts created — no place in line, no creator key but
/// the holder's — and the key
/// is free for another value afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_attempts_leave_nothing_behind() {
    let (client, prefix) = client("aborts").await;
    let holder = client.try_lock("held", "holder", 30 * SEC).await.unwrap();
    for i in 0..40u64 {
        let cut = Duration::from_micros(i * 500);
        for key in ["held", "free"] {
            let call = client.lock(key, "v", 30 * SEC, SEC, FixedInterval::new(SEC, 5));
            if let Ok(Ok(lock)) = tokio::time::timeout(cut, call).await {
                lock.unlock().await.unwrap();
            }
        }
    }
    let deadline = Instant::now() + 10 * SEC;
    loop {
        let held = line(&prefix, "held").await;
        let free = line(&prefix, "free").await;
        let creators: Vec<String> = [
            keys_of(&prefix, "held").await,
            keys_of(&prefix, "free").await,
        ]
        .concat()
        .into_iter()
        .filter(|k| k.contains("\\0~c"))
        .collect();
        if held == ["holder"] && free.is_empty() && creators.len() == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: {held:?} {free:?} {creators:?}"
        );
        tokio::time::sleep(20 * MS).await;
    }
    holder.unlock().await.unwrap();
    for key in ["held", "free"] {
        let other = client.try_lock(key, "other", SEC).await.unwrap();
        other.unlock().await.unwrap();
    }
}

/// Same-value re-locks of a held lock, cancelled at every point of their attempts
/// (timeouts from 0 to 20 ms; some complete and join the held lock's lease): the aborts
/// never delete the held lock, it keeps its token and refreshes, a rival is refused; and
/// once it is unlocked nothing is left but records of aborts (no cancelled re-lock
/// created the key, so no abort deleted it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_same_value_relocks_never_delete_the_held_lock() {
    let (client, prefix) = client("relocks").await;
    let held = client.try_lock("k", "v", 10 * SEC).await.unwrap();
    for i in 0..40u64 {
        let cut = Duration::from_micros(i * 500);
        let relock = client.lock("k", "v", 10 * SEC, SEC, NoRetry);
        if let Ok(again) = tokio::time::timeout(cut, relock).await {
            assert_eq!(again.unwrap().fencing_token(), held.fencing_token());
        }
    }
    tokio::time::sleep(500 * MS).await; // the detached aborts have run
    let rival = another(&prefix).await;
    let err = rival.try_lock("k", "rival", SEC).await.unwrap_err();
    assert!(err.is_not_obtained(), "{err:?}");
    let info = rival.inspect("k").await.unwrap().expect("still held");
    assert_eq!(info.fencing_token(), held.fencing_token());
    held.refresh().await.expect("still held");
    held.unlock().await.expect("still held");
    let left = keys_of(&prefix, "k").await;
    assert!(
        left.iter().all(|k| k.contains("\\0~a")),
        "only records of aborts are left: {left:?}"
    );
}

/// Two same-value `lock` calls raced in a `select!`: the loser is dropped mid-flight and
/// its abort never deletes the winner, whose unlock then leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loser_of_a_select_between_same_value_locks_never_deletes_the_winner() {
    let (client, prefix) = client("select").await;
    let rival = another(&prefix).await;
    for round in 0..10 {
        let key = format!("k{round}");
        let won = tokio::select! {
            a = client.lock(&key, "v", 10 * SEC, SEC, NoRetry) => a,
            b = client.lock(&key, "v", 10 * SEC, SEC, NoRetry) => b,
        }
        .expect("one of them wins");
        tokio::time::sleep(200 * MS).await; // the loser's abort has run
        let err = rival.try_lock(&key, "rival", SEC).await.unwrap_err();
        assert!(err.is_not_obtained(), "round {round}: {err:?}");
        assert!(won.valid_for().is_some());
        won.unlock().await.expect("the winner still holds the key");
        assert_eq!(line(&prefix, &key).await, Vec::<String>::new());
    }
}

// -- opening ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_keys_and_unreachable_members_fail_as_documented() {
    for bad in [
        "etcd://",
        "etcd://h",
        "etcd://u@h:1",
        "etcd://u:@h:1",
        "etcd://u:secret@h",
        "etcd://u:secret%zz@h:1",
        "etcd://h:1/path",
        "etcds://u:secret@h",
    ] {
        let err = Client::open(bad).await.unwrap_err();
        assert!(err.is_invalid_argument(), "{bad}: {err:?}");
        assert!(!format!("{err} {err:?}").contains("secret"), "{err}");
    }
    // Every member refused: the error names each, as soon as the last refused (not
    // after the connect timeout).
    let started = Instant::now();
    let err = Client::builder()
        .connect_timeout(5 * SEC)
        .open("etcd://127.0.0.1:1,127.0.0.1:2")
        .await
        .unwrap_err();
    let shown = err.to_string();
    assert!(err.is_store() && err.is_transient(), "{err:?}");
    for member in ["127.0.0.1:1:", "127.0.0.1:2:"] {
        assert!(shown.contains(member), "names {member}: {shown}");
    }
    assert!(
        shown.to_lowercase().contains("refused"),
        "says what happened: {shown}"
    );
    assert!(started.elapsed() < 2 * SEC, "{:?}", started.elapsed());
    // A member that accepts connections and never answers: named, after the timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_at = silent.local_addr().unwrap();
    let started = Instant::now();
    let err = Client::builder()
        .connect_timeout(300 * MS)
        .open(&format!("etcd://{silent_at}"))
        .await
        .unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains(&format!(
            "{silent_at}: no answer within the timeout (300ms)"
        )),
        "{shown}"
    );
    assert!(started.elapsed() < 2 * SEC, "{:?}", started.elapsed());
    drop(silent);
    let (client, _) = client("names").await;
    let err = client.try_lock("a\0b", "v", SEC).await.unwrap_err();
    assert!(err.is_invalid_argument(), "{err:?}");
    assert!(format!("{client:?}").contains("store: \"etcd\""));
}

/// `Config { url: "etcd://…" }` (feature `serde`) opens an etcd client, async and
/// blocking, with the file's key prefix and timeouts.
#[cfg(feature = "serde")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_with_an_etcd_url_opens_an_etcd_client() {
    let prefix = format!("config-{}:", &leasehold::random_value()[..8]);
    let text = format!(
        "url = \"{}\"\nkey_prefix = \"{prefix}\"\ndefault_timeout = \"2s\"\n",
        suite::etcd::url()
    );
    let config: leasehold::Config = toml::from_str(&text).unwrap();
    let client = config.open().await.unwrap();
    assert_eq!(client.default_timeout(), 2 * SEC);
    let lock = client.try_lock("job", "v", 30 * SEC).await.unwrap();
    assert_eq!(line(&prefix, "job").await, ["v"], "under the key prefix");
    let info = client.inspect("job").await.unwrap().expect("held");
    assert_eq!(
        (info.key(), info.fencing_token()),
        ("job", lock.fencing_token())
    );
    // A plain thread: the blocking facade refuses a runtime's.
    let blocking = std::thread::spawn(move || {
        let client = config.open_blocking().unwrap();
        client.try_lock("job", "w", SEC).unwrap_err()
    })
    .join()
    .unwrap();
    assert!(blocking.is_not_obtained(), "{blocking:?}");
    lock.unlock().await.unwrap();
}

/// `NoRetry` is one attempt: it leaves no place in line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_retry_is_one_attempt_and_no_line() {
    let (client, prefix) = client("noretry").await;
    let _holder = client.try_lock("k", "holder", 30 * SEC).await.unwrap();
    let started = Instant::now();
    let err = client
        .lock("k", "x", 30 * SEC, SEC, NoRetry)
        .await
        .unwrap_err();
    assert!(err.is_not_obtained());
    assert!(started.elapsed() < 500 * MS);
    assert_eq!(line(&prefix, "k").await, ["holder"]);
}

/// `etcd://user:password@…` on a member with authentication enabled: the whole cycle
/// works with the right credentials; wrong or missing ones fail with a store error that
/// never quotes the password, and never as contention.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_the_url_open_a_member_with_authentication() {
    let server = EtcdServer::start();
    server.post("/v3/auth/role/add", r#"{"name":"root"}"#);
    server.post(
        "/v3/auth/user/add",
        r#"{"name":"root","password":"s3cret:@x"}"#,
    );
    server.post("/v3/auth/user/grant", r#"{"user":"root","role":"root"}"#);
    server.post("/v3/auth/enable", "{}");
    let ep = server.endpoint();

    let client = Client::open(&format!("etcd://root:s3cret%3A%40x@{ep}"))
        .await
        .expect("the right credentials");
    assert!(!format!("{client:?}").contains("s3cret"), "{client:?}");
    let lock = client.try_lock("k", "v", 10 * SEC).await.unwrap();
    let err = client.try_lock("k", "w", 2 * SEC).await.unwrap_err();
    assert!(err.is_not_obtained(), "{err:?}");
    lock.refresh().await.unwrap();
    assert!(client.inspect("k").await.unwrap().is_some());
    // Idle past the token's 2 s (`--auth-token-ttl`): the next call authenticates again.
    tokio::time::sleep(3500 * MS).await;
    lock.refresh().await.unwrap();
    // The fair wait's watch runs authenticated too: the waiter wakes on the release,
    // long before its strategy's 2 s step.
    let waiter = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .lock("k", "w", 2 * SEC, SEC, FixedInterval::new(2 * SEC, 3))
                .await
        }
    });
    tokio::time::sleep(300 * MS).await;
    let released = Instant::now();
    lock.unlock().await.unwrap();
    let next = tokio::time::timeout(5 * SEC, waiter)
        .await
        .expect("bounded")
        .unwrap()
        .unwrap();
    assert!(released.elapsed() < SEC, "{:?}", released.elapsed());
    next.unlock().await.unwrap();

    // Wrong credentials: refused when the client opens.
    let err = Client::builder()
        .connect_timeout(3 * SEC)
        .open(&format!("etcd://root:wrong-pw@{ep}"))
        .await
        .unwrap_err();
    assert!(err.is_store(), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("wrong-pw"), "{err:?}");
    // None: whatever the first operation needing them is, it fails as a store error.
    let outcome = async {
        let client = Client::builder()
            .connect_timeout(3 * SEC)
            .open(&format!("etcd://{ep}"))
            .await?;
        client.try_lock("k", "v", 2 * SEC).await
    }
    .await;
    let err = outcome.expect_err("no credentials");
    assert!(err.is_store(), "{err:?}");
    eprintln!("without credentials: {err}");
}

/// `etcds://` (feature `tls`) against a member serving TLS with a certificate from a CA
/// made for the test: with that CA as the root certificate the whole cycle works; with
/// the platform's roots the certificate is refused, as a store error, never contention.
#[cfg(feature = "tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcds_works_against_a_member_serving_tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    support::make_certs(dir.path());
    let server = EtcdServer::start_tls(support::TlsFiles {
        cert: &dir.path().join("server.crt"),
        key: &dir.path().join("server.key"),
    });
    let url = format!("etcds://{}", server.tls_endpoint());
    let ca = std::fs::read(dir.path().join("ca.crt")).unwrap();

    let client = Client::builder()
        .tls_root_certificate(ca.clone())
        .open(&url)
        .await
        .expect("TLS with the test CA");
    let lock = client.try_lock("k", "v", 2 * SEC).await.unwrap();
    let err = client.try_lock("k", "w", 2 * SEC).await.unwrap_err();
    assert!(err.is_not_obtained(), "{err:?}");
    lock.refresh().await.unwrap();
    lock.unlock().await.unwrap();
    // A plain thread: the blocking API refuses a runtime context.
    let blocking = std::thread::spawn(move || {
        let client = leasehold::blocking::Client::builder()
            .tls_root_certificate(ca)
            .open(&url)?;
        client.try_lock("k", "v", 2 * SEC)?.unlock()
    });
    blocking.join().unwrap().expect("blocking over TLS");

    // The platform's roots do not know the test CA: refused at open.
    let err = Client::builder()
        .connect_timeout(3 * SEC)
        .open(&format!("etcds://{}", server.tls_endpoint()))
        .await
        .unwrap_err();
    assert!(err.is_store() || err.is_timeout(), "{err:?}");
    // Plain HTTP/2 to the TLS port is no etcd either.
    let err = Client::builder()
        .connect_timeout(3 * SEC)
        .open(&format!("etcd://{}", server.tls_endpoint()))
        .await
        .unwrap_err();
    assert!(err.is_store() || err.is_timeout(), "{err:?}");
}

/// The published fault cases (`leasehold::testing::faults`) on a member of their own:
/// killed and started again on the same data, and a proxy for the faulty client that
/// stalls it (cut off) or swallows every answer after its next write of one of the kit's
/// keys (the acquire's transaction, the release's delete) and then resets the connection
/// (a reply lost after the write ran). Every case runs; none is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_published_fault_cases_pass_on_etcd() {
    use leasehold::testing::faults::{Harness, Outcome, run_all};

    struct Etcd {
        server: EtcdServer,
        proxy: Arc<FaultProxy>,
    }

    impl Harness for Etcd {
        async fn client(&self) -> Client {
            Client::open(&self.server.url()).await.unwrap()
        }
        async fn faulty_client(&self) -> Option<Client> {
            let url = format!("etcd://127.0.0.1:{}", self.proxy.port());
            Some(Client::open(&url).await.unwrap())
        }
        async fn restart(&self) -> bool {
            tokio::task::block_in_place(|| self.server.restart());
            true
        }
        async fn cut_off(&self, duration: Duration) -> bool {
            self.proxy.blackhole_for(duration);
            true
        }
        async fn lose_next_reply(&self) -> bool {
            // A transaction that compares a key of the kit's (`…faults-…`): a write —
            // the acquire, the release's delete. Reads compare nothing, and a lease
            // grant or keep-alive names no key. (Protobuf: `Compare.key` is field 3,
            // tag 0x1a, then a one-byte length and the key.)
            self.proxy.lose_reply_then_cut(|chunk| {
                (0..chunk.len().saturating_sub(2)).any(|i| {
                    let len = usize::from(chunk[i + 1]);
                    chunk[i] == 0x1a
                        && chunk
                            .get(i + 2..i + 2 + len)
                            .is_some_and(|key| key.windows(7).any(|w| w == b"faults-"))
                })
            });
            true
        }
    }

    let server = EtcdServer::start();
    let proxy = Arc::new(FaultProxy::start(server.port()));
    let harness = Etcd { server, proxy };
    let outcomes = run_all(&harness).await;
    assert!(
        outcomes.iter().all(|(_, o)| *o == Outcome::Ran),
        "{outcomes:?}"
    );
    // The unlock's answer and the acquire's were lost (and their connections reset).
    let both = tokio::task::block_in_place(|| {
        support::wait_until(5 * SEC, || harness.proxy.losses_cut() == 2)
    });
    assert!(both, "replies lost: {}", harness.proxy.losses_cut());
}
