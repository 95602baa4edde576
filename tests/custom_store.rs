//! The store of `examples/custom_store.rs` — a `HashMap` behind the public
//! `leasehold::store::Store` trait, built with public items only — passes the published
//! kit: every conformance case (async and blocking) and the history checker. A wrong
//! variant of it (an unlock without the owner check) fails, and the failure names the
//! broken promise.

#[path = "../examples/custom_store.rs"]
#[allow(dead_code)]
mod custom_store;

use custom_store::HashMapStore;
use leasehold::Client;
use leasehold::testing::conformance::{self, BlockingStore};

async fn open(_case: &'static str) -> Client {
    Client::from_store(HashMapStore::default())
}

fn open_blocking(_case: &'static str) -> BlockingStore {
    let store = HashMapStore::default();
    BlockingStore::new(move || leasehold::blocking::Client::from_store(store.clone()))
}

leasehold::conformance_tests!(open, open_blocking);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_checker_finds_no_violation_and_catches_no_lock() {
    let store = HashMapStore::default();
    let open = || {
        let store = store.clone();
        async move { Client::from_store(store) }
    };
    leasehold::testing::history::holds_never_overlap(open).await;
    leasehold::testing::history::the_checker_catches_no_lock(open).await;
}

/// The documentation's negative example: a store whose unlock skips the owner check fails
/// the conformance case that checks it, and the message names the promise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_without_the_owner_check_fails_naming_the_promise() {
    let mut store = HashMapStore::default();
    store.skip_owner_check = true;
    let wrong = Client::from_store(store);
    let failed = tokio::spawn(async move {
        conformance::cases::unlock_releases_and_a_stale_unlock_is_not_held(&wrong).await;
    })
    .await
    .expect_err("a store without the owner check must fail the case");
    let payload = failed.into_panic();
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(msg.contains("owner check broken"), "{msg}");
    // Control: the right store passes the same case.
    let right = Client::from_store(HashMapStore::default());
    conformance::cases::unlock_releases_and_a_stale_unlock_is_not_held(&right).await;
}
