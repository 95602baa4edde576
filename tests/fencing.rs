//! Resource-side fencing: leases shorter than the critical section make holders
//! overlap. Unfenced read-modify-writes then lose updates; fenced ones are refused
//! instead, and no accepted update is lost.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use leasehold::{Client, FixedInterval};
use support::RedisServer;

const MS: Duration = Duration::from_millis(1);

const WORKERS: usize = 4;
const ROUNDS: usize = 5;
/// Shorter than every other critical section (`hold`): those holders outlive their lease.
const EXPIRATION: Duration = Duration::from_millis(30);

fn hold(round: usize) -> Duration {
    if round.is_multiple_of(2) {
        5 * MS
    } else {
        50 * MS
    }
}

#[derive(Debug, Default)]
struct Tally {
    /// Updates whose write the resource accepted.
    accepted: AtomicUsize,
    /// Updates the resource refused (stale token on the read or the write).
    refused: AtomicUsize,
}

async fn take(c: &Client, worker: usize) -> leasehold::Lock {
    c.lock(
        "counter-lock",
        &format!("worker-{worker}-{}", leasehold::random_value()),
        EXPIRATION,
        Duration::from_secs(1),
        FixedInterval::new(2 * MS, 5_000),
    )
    .await
    .unwrap()
}

/// Read-modify-write of a counter through the fenced resource API.
async fn fenced_workload(c: &Client) -> (i64, Arc<Tally>) {
    let tally = Arc::new(Tally::default());
    let mut tasks = Vec::new();
    for worker in 0..WORKERS {
        let (c, tally) = (c.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            for round in 0..ROUNDS {
                let lock = take(&c, worker).await;
                let read = lock.fenced_get("counter").await;
                let outcome = match read {
                    Ok(v) => {
                        let n: i64 = v.map_or(0, |v| v.parse().unwrap());
                        tokio::time::sleep(hold(round)).await; // the lease runs out here
                        lock.fenced_set("counter", &(n + 1).to_string()).await
                    }
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok(()) => tally.accepted.fetch_add(1, Ordering::SeqCst),
                    Err(e) if e.is_fenced() => tally.refused.fetch_add(1, Ordering::SeqCst),
                    Err(e) => panic!("{e:?}"),
                };
                let _ = lock.unlock().await; // usually NotHeld: the lease ran out
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .unwrap()
            .unwrap();
    }
    let final_value = c
        .fenced_get("counter", u64::MAX - 1)
        .await
        .unwrap()
        .map_or(0, |v| v.parse().unwrap());
    (final_value, tally)
}

/// The same read-modify-write on an unfenced resource (an in-process cell, so the
/// control is independent of the store).
async fn unfenced_workload(c: &Client) -> (i64, usize) {
    let cell = Arc::new(AtomicI64::new(0));
    let completed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for worker in 0..WORKERS {
        let (c, cell, completed) = (c.clone(), cell.clone(), completed.clone());
        tasks.push(tokio::spawn(async move {
            for round in 0..ROUNDS {
                let lock = take(&c, worker).await;
                let n = cell.load(Ordering::SeqCst);
                tokio::time::sleep(hold(round)).await;
                cell.store(n + 1, Ordering::SeqCst);
                completed.fetch_add(1, Ordering::SeqCst);
                let _ = lock.unlock().await;
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .unwrap()
            .unwrap();
    }
    (
        cell.load(Ordering::SeqCst),
        completed.load(Ordering::SeqCst),
    )
}

async fn check(c: &Client) {
    let (lost_value, completed) = unfenced_workload(c).await;
    eprintln!("unfenced: {completed} updates completed, counter = {lost_value}");
    assert_eq!(completed, WORKERS * ROUNDS);
    assert!(
        (lost_value as usize) < completed,
        "control: overlapping holders must lose unfenced updates"
    );

    let (value, tally) = fenced_workload(c).await;
    let accepted = tally.accepted.load(Ordering::SeqCst);
    let refused = tally.refused.load(Ordering::SeqCst);
    eprintln!("fenced: {accepted} accepted, {refused} refused, counter = {value}");
    assert_eq!(accepted + refused, WORKERS * ROUNDS);
    assert!(refused > 0, "stale holders occurred and were refused");
    assert_eq!(value as usize, accepted, "no accepted update was lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_fencing_refuses_stale_holders_instead_of_losing_updates() {
    let server = RedisServer::start();
    let c = Client::open(&server.url()).await.unwrap();
    check(&c).await;
    // The resource is a plain string next to its highest-token key.
    assert!(matches!(
        server.cmd_sync(&["GET", "counter"]),
        redis::Value::BulkString(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_fencing_refuses_stale_holders_instead_of_losing_updates() {
    check(&Client::memory()).await;
}
