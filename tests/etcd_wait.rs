//! The fair wait on etcd (feature `etcd`): waiters get in line behind the holder and
//! acquire in arrival order, each woken by its predecessor's deletion; the retry strategy
//! still bounds every wait, and a waiter that gives up (or is cancelled) leaves no key.
#![cfg(feature = "etcd")]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::GetOptions;
use leasehold::{Client, FixedInterval, Lock, NoRetry};
use support::EtcdServer;
use tokio::sync::Mutex;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

/// Every key under the lock name `key` (the holder and its line), read directly.
async fn line(server: &EtcdServer, key: &str) -> Vec<String> {
    let mut raw = etcd_client::Client::connect([server.endpoint()], None)
        .await
        .unwrap();
    let start = format!("{key}\0");
    let end = format!("{key}\u{1}");
    let got = raw
        .get(start, Some(GetOptions::new().with_range(end)))
        .await
        .unwrap();
    got.kvs()
        .iter()
        .map(|kv| kv.value_str().unwrap().to_owned())
        .collect()
}

/// `waiters` callers (each on its own client if `separate`, else all on one) get in
/// line one after the other behind a holder; each holds the lock 20 ms. They acquire in
/// arrival order, each within a few ms of its predecessor's unlock, though each polls
/// only every 10 s.
async fn waiters_acquire_in_arrival_order(separate: bool) {
    let server = EtcdServer::start();
    let shared = Client::open(&server.url()).await.unwrap();
    let holder = shared.try_lock("k", "holder", 30 * SEC).await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    const WAITERS: usize = 6;
    for i in 0..WAITERS {
        let client = if separate {
            Client::open(&server.url()).await.unwrap()
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
        let deadline = Instant::now() + 5 * SEC;
        while line(&server, "k").await.len() < i + 2 {
            assert!(Instant::now() < deadline, "waiter {i} never got in line");
            tokio::time::sleep(5 * MS).await;
        }
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
    let mut gaps = Vec::new();
    for (k, (_, got, _)) in order.iter().enumerate() {
        gaps.push(got.saturating_duration_since(unlocks[k]));
    }
    let worst = gaps.iter().max().unwrap();
    eprintln!(
        "FIGURE etcd hand-off ({} clients): gaps {:?}, all {WAITERS} in {:?}",
        if separate { "separate" } else { "one" },
        gaps,
        started.elapsed()
    );
    assert!(
        *worst < 500 * MS,
        "woken by the release, not the 10 s poll: {gaps:?}"
    );
    assert!(line(&server, "k").await.is_empty(), "nothing left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_on_separate_clients_acquire_in_arrival_order() {
    waiters_acquire_in_arrival_order(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_on_one_client_acquire_in_arrival_order() {
    waiters_acquire_in_arrival_order(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_strategy_runs_out_withdraws_within_the_bound() {
    let server = EtcdServer::start();
    let client = Client::open(&server.url()).await.unwrap();
    let _holder = client.try_lock("k", "holder", 30 * SEC).await.unwrap();
    let other = Client::open(&server.url()).await.unwrap();
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
    assert!(waited >= 300 * MS, "the strategy's delays: {waited:?}");
    assert!(waited < 450 * MS, "and no more: {waited:?}");
    // Withdrawn before `lock` returned.
    assert_eq!(line(&server, "k").await, ["holder"]);

    // A single attempt leaves nothing either.
    let err = other.try_lock("k", "once", 30 * SEC).await.unwrap_err();
    assert!(err.is_not_obtained(), "{err:?}");
    assert_eq!(line(&server, "k").await, ["holder"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_waiter_leaves_no_key_and_the_line_moves_past_it() {
    let server = EtcdServer::start();
    let client = Client::open(&server.url()).await.unwrap();
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
    let deadline = Instant::now() + 5 * SEC;
    while line(&server, "k").await.len() < 2 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(5 * MS).await;
    }
    let middle = wait("middle");
    while line(&server, "k").await.len() < 3 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(5 * MS).await;
    }
    let last = wait("last");
    while line(&server, "k").await.len() < 4 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(5 * MS).await;
    }
    // The middle waiter is cancelled: its key goes (the detached abort).
    middle.abort();
    let deadline = Instant::now() + 5 * SEC;
    while line(&server, "k").await.contains(&"middle".to_owned()) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_wakes_when_the_holders_lease_runs_out() {
    let server = EtcdServer::start();
    let holder_client = Client::open(&server.url()).await.unwrap();
    let holder = holder_client.try_lock("k", "holder", SEC).await.unwrap();
    let expires = Instant::now() + holder.expiration();
    let waiter = Client::open(&server.url()).await.unwrap();
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
async fn no_retry_is_one_attempt_and_no_line() {
    let server = EtcdServer::start();
    let client = Client::open(&server.url()).await.unwrap();
    let _holder = client.try_lock("k", "holder", 30 * SEC).await.unwrap();
    let started = Instant::now();
    let err = client
        .lock("k", "x", 30 * SEC, SEC, NoRetry)
        .await
        .unwrap_err();
    assert!(err.is_not_obtained());
    assert!(started.elapsed() < 500 * MS);
    assert_eq!(line(&server, "k").await, ["holder"]);
}
