//! The conformance suite (`tests/suite`) on a real `redis-server` (spawned per test) and
//! on `memory://`, through the async API and the blocking facade. Redis Cluster,
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
    let overlaps = suite::cases::exclusion_workload(12, 5, |worker| {
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
