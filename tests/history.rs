//! Exclusion history checker on Redis: workers in several tasks and several OS processes
//! do a read-modify-write on a Redis counter under the lock and record every hold as
//! (token, acquired, released). The checker asserts no lost updates, no overlapping
//! holds, and fencing tokens strictly rising in grant order. A negative control runs
//! the same workload without the lock and must be caught. (`history_check/` holds the
//! workload and the checker; `etcd_history.rs` runs them with the lock on etcd.)
//!
//! The worker processes are this test binary re-executed on the ignored
//! `history_worker` entry point (so no extra binary ships with the crate).

mod history_check;
mod support;

use std::time::Instant;

use history_check::{PROCESSES, ROUNDS, TASKS, run_everywhere, violations};
use support::RedisServer;

/// Entry point of a worker process (re-executed test binary); not a test itself.
#[test]
#[ignore = "worker entry point, run by the history tests in child processes"]
fn history_worker() {
    history_check::worker();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_across_processes_never_overlap_and_tokens_rise_in_grant_order() {
    let server = RedisServer::start();
    let started = Instant::now();
    let (counter, holds) = run_everywhere(&server.url(), &server.url(), true).await;
    eprintln!(
        "{} holds by {PROCESSES} processes × {TASKS} tasks in {:?}",
        holds.len(),
        started.elapsed()
    );
    assert_eq!(holds.len(), PROCESSES * TASKS * ROUNDS);
    let found = violations(counter, holds);
    assert!(found.is_empty(), "{found:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_the_same_workload_without_the_lock() {
    let server = RedisServer::start();
    let (counter, holds) = run_everywhere(&server.url(), &server.url(), false).await;
    let found = violations(counter, holds);
    assert!(
        found.iter().any(|v| v.starts_with("lost updates")),
        "the negative control must be caught: {found:?}"
    );
    assert!(found.iter().any(|v| v.starts_with("overlapping holds")));
}
