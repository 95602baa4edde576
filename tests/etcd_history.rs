//! Exclusion history checker with the lock on etcd (feature `etcd`): 3 processes × 4
//! tasks × 8 read-modify-writes of a Redis counter under one etcd lock; no lost update,
//! no overlapping holds, create-revision tokens strictly rising in grant order. The
//! negative control (the same workload without the lock) must be caught.
#![cfg(feature = "etcd")]

mod history_check;
mod support;

use std::time::Instant;

use history_check::{PROCESSES, ROUNDS, TASKS, run_everywhere, violations};
use support::{EtcdServer, RedisServer};

/// Entry point of a worker process (re-executed test binary); not a test itself.
#[test]
#[ignore = "worker entry point, run by the history tests in child processes"]
fn history_worker() {
    history_check::worker();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_across_processes_never_overlap_and_revisions_rise_in_grant_order() {
    let etcd = EtcdServer::start();
    let data = RedisServer::start();
    let started = Instant::now();
    let (counter, holds) = run_everywhere(&etcd.url(), &data.url(), true).await;
    eprintln!(
        "FIGURE etcd history: {} holds by {PROCESSES} processes × {TASKS} tasks in {:?}",
        holds.len(),
        started.elapsed()
    );
    assert_eq!(holds.len(), PROCESSES * TASKS * ROUNDS);
    let found = violations(counter, holds);
    assert!(found.is_empty(), "{found:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_the_same_workload_without_the_lock() {
    let etcd = EtcdServer::start();
    let data = RedisServer::start();
    let (counter, holds) = run_everywhere(&etcd.url(), &data.url(), false).await;
    let found = violations(counter, holds);
    assert!(
        found.iter().any(|v| v.starts_with("lost updates")),
        "the negative control must be caught: {found:?}"
    );
    assert!(found.iter().any(|v| v.starts_with("overlapping holds")));
}
