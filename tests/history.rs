//! The exclusion history checker (`tests/suite/history.rs`) across 3 OS processes × 4
//! tasks on one `redis-server`, with its no-lock negative control. Cluster, Redlock and
//! etcd run it in their own test binaries. The published in-process workload
//! (`leasehold::testing::history`) runs here on Redis and memory.

mod support;
#[macro_use]
#[allow(unused_macros)]
mod suite;

use suite::history::{self, Target};
use support::RedisServer;

/// Entry point of a worker process (re-executed test binary); not a test itself.
#[test]
#[ignore = "worker entry point, run by the history tests in child processes"]
fn history_worker() {
    history::worker();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_across_processes_never_overlap_and_tokens_rise_in_grant_order() {
    let server = RedisServer::start();
    history::holds_never_overlap(&Target::Redis(server.url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_the_same_workload_without_the_lock() {
    let server = RedisServer::start();
    history::the_checker_catches_no_lock(&Target::Redis(server.url())).await;
}

/// The published in-process workload (`leasehold::testing::history`) on a real Redis:
/// six tasks, a client each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_published_workload_finds_no_violation_on_redis() {
    let server = RedisServer::start();
    let url = server.url();
    leasehold::testing::history::holds_never_overlap(|| {
        let url = url.clone();
        async move { leasehold::Client::open(&url).await.unwrap() }
    })
    .await;
}

/// The published in-process workload on one memory store, with its negative control.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_published_workload_finds_no_violation_in_memory_and_catches_no_lock() {
    let open = || async { leasehold::Client::open("memory://history").await.unwrap() };
    leasehold::testing::history::holds_never_overlap(open).await;
    leasehold::testing::history::the_checker_catches_no_lock(open).await;
}
