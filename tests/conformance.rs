//! The published conformance kit (`leasehold::testing::conformance`, through
//! `tests/suite`'s `conformance!`) on a real `redis-server` (spawned per test) and on
//! `memory://`, through the async API and the blocking facade. Redis Cluster,
//! Sentinel and etcd run the same suite in their own test binaries.

mod support;
#[macro_use]
mod suite;

use std::time::Duration;

use leasehold::Client;

const SEC: Duration = Duration::from_secs(1);

conformance!(redis);
conformance!(memory);

/// Negative control: the same checker catches overlaps when the "lock" does not
/// exclude (every worker locks its own key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusion_checker_catches_a_lock_that_does_not_exclude() {
    let c = Client::memory();
    let overlaps = leasehold::testing::conformance::cases::exclusion_workload(12, 5, |worker| {
        let c = c.clone();
        async move {
            c.try_lock(&format!("own-key-{worker}"), "v", 10 * SEC)
                .await
                .unwrap()
        }
    })
    .await;
    assert!(overlaps > 0, "the checker must see overlapping holders");
}

/// A label set on the client is stored and shown; `""` stores none (and no time), and a
/// label over 256 bytes is refused before any I/O. On a real Redis and in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_labels_are_the_clients_own_or_none() {
    let server = support::RedisServer::start();
    for url in [server.url(), "memory://labels".to_owned()] {
        let named = Client::builder()
            .holder_label("billing-worker-7 \u{1b}[31m")
            .open(&url)
            .await
            .unwrap();
        let quiet = Client::builder().holder_label("").open(&url).await.unwrap();
        let _a = named.try_lock("a", "va", 10 * SEC).await.unwrap();
        let _b = quiet.try_lock("b", "vb", 10 * SEC).await.unwrap();
        let a = named.inspect("a").await.unwrap().expect("held");
        assert_eq!(
            a.holder_label(),
            Some("billing-worker-7 \u{1b}[31m"),
            "{url}"
        );
        assert!(a.locked_at().is_some());
        let b = quiet.inspect("b").await.unwrap().expect("held");
        assert_eq!((b.holder_label(), b.locked_at()), (None, None), "{url}");
        // Another client sees the label of the holder, not its own.
        assert_eq!(
            quiet.inspect("a").await.unwrap().unwrap().holder_label(),
            a.holder_label()
        );
        let err = Client::builder()
            .holder_label("x".repeat(257))
            .open(&url)
            .await
            .unwrap_err();
        assert!(err.is_invalid_argument(), "{err:?}");
    }
}

/// `run_all` (the one-test form users may prefer) runs every async case on memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_passes_on_memory() {
    leasehold::testing::conformance::run_all(suite::memory::open).await;
}

/// `run_all_blocking` runs every blocking case on memory.
#[test]
fn run_all_blocking_passes_on_memory() {
    leasehold::testing::conformance::run_all_blocking(suite::memory::open_blocking);
}
