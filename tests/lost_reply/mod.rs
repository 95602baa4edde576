#![allow(dead_code)]
//! A write whose reply is lost after it ran (contract part 3: "no write is re-sent
//! blindly"), for unlock, refresh, forced release and acquire: the cases, written once
//! for every Redis connection kind. Each test binary gives them a client whose
//! connection to the key's server goes through a [`FaultProxy`], another client to look
//! and contend with, and that proxy (`tests/redis_failures.rs`: one server;
//! `tests/cluster.rs`: a proxy in front of each master).
//!
//! The proxy forwards the write, swallows what the server answers, and — once the case
//! has looked at what the write did, and acted on it — resets the connection, as a
//! connection that broke before the answer came back. A write that must not run twice
//! (a release, a forced release) is then not sent again, and reported
//! [`Error::Indeterminate`](leasehold::Error::Indeterminate); an idempotent one (acquire,
//! refresh) is sent again and succeeds, once.
//!
//! The scripts must be in the server's cache (see [`scripts`]): the request the proxy
//! watches for is the script's `EVALSHA`, and a `NOSCRIPT` answer would mean it did not
//! run.

use std::time::Duration;

use leasehold::Client;

use super::support::FaultProxy;

const SEC: Duration = Duration::from_secs(1);

/// Every script of the Redis store, as `SCRIPT LOAD` wants them.
pub fn scripts() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/store/redis/lua");
    let mut scripts = Vec::new();
    for entry in std::fs::read_dir(dir).expect("the scripts' directory") {
        let path = entry.expect("a script").path();
        if path.extension().is_some_and(|e| e == "lua") {
            scripts.push(std::fs::read_to_string(&path).expect("a script's text"));
        }
    }
    assert!(!scripts.is_empty(), "no script in {dir}");
    scripts
}

/// The `EVALSHA` argument of the script in `file` (`release.lua`, …).
fn sha(file: &str) -> String {
    let path = format!("{}/src/store/redis/lua/{file}", env!("CARGO_MANIFEST_DIR"));
    let code = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    redis::Script::new(&code).get_hash().to_owned()
}

/// Wait (bounded, 5 s) until the proxy has swallowed a reply: the request ran.
async fn ran(proxy: &FaultProxy) {
    let deadline = tokio::time::Instant::now() + 5 * SEC;
    while proxy.replies_lost() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the request under test never reached the proxy"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Break the connection whose reply was swallowed; the instant the cut was asked for.
fn cut(proxy: &FaultProxy) -> std::time::Instant {
    let asked = std::time::Instant::now();
    tokio::task::block_in_place(|| proxy.cut_lost());
    asked
}

/// Report how long after the cut the call under test ended (for RELIABILITY.md).
fn figure(case: &str, cut: std::time::Instant, outcome: &str) {
    eprintln!(
        "FIGURE lost-reply {case}: {outcome} {:?} after the connection broke",
        cut.elapsed()
    );
}

/// `unlock`: the release ran and deleted the key, its reply was lost. Sent again, it
/// would find the key gone and report `NotHeld` for a release that succeeded.
pub async fn unlock(a: &Client, b: &Client, proxy: &FaultProxy, key: &str) {
    let lock = a
        .try_lock(key, &leasehold::random_value(), 30 * SEC)
        .await
        .expect("acquired");
    proxy.lose_reply_to(sha("release.lua"));
    let unlocking = tokio::spawn(lock.unlock());
    ran(proxy).await;
    assert!(
        b.inspect(key).await.unwrap().is_none(),
        "the release ran and deleted the key"
    );
    let broke = cut(proxy);
    let outcome = unlocking.await.unwrap();
    figure("unlock", broke, &format!("{outcome:?}"));
    let err = outcome.expect_err("the answer was lost: the outcome cannot be known");
    assert!(
        !err.is_not_held(),
        "a release that succeeded was reported NotHeld: it was sent again ({err:?})"
    );
    assert!(err.is_indeterminate(), "{err:?}");
    assert!(!err.is_transient(), "{err:?}");
    assert!(b.inspect(key).await.unwrap().is_none());
}

/// `force_release`: the delete ran, its reply was lost, and a waiter took the key in
/// between. Sent again, the delete would remove the next holder's lock.
pub async fn force_release(a: &Client, b: &Client, proxy: &FaultProxy, key: &str) {
    let outcome = force_release_spares_the_next_holder(a, b, proxy, key).await;
    let err = outcome.expect_err("the answer was lost: the outcome cannot be known");
    assert!(err.is_indeterminate(), "{err:?}");
}

/// What [`force_release`] checks of the next holder, on a connection that may send the
/// delete again (a user's cluster connection with redis-rs' own retries): the next
/// holder keeps its lock. Returns the forced release's outcome.
pub async fn force_release_spares_the_next_holder(
    a: &Client,
    b: &Client,
    proxy: &FaultProxy,
    key: &str,
) -> leasehold::Result<bool> {
    let first = b.try_lock(key, "first holder", 30 * SEC).await.unwrap();
    proxy.lose_reply_to(sha("force_release.lua"));
    let operator = a.clone();
    let owned = key.to_owned();
    let releasing = tokio::spawn(async move { operator.force_release(&owned).await });
    ran(proxy).await;
    assert!(
        b.inspect(key).await.unwrap().is_none(),
        "the forced release ran and deleted the key"
    );
    let next = b
        .try_lock(key, "next holder", 30 * SEC)
        .await
        .expect("the key is free");
    assert!(next.fencing_token() > first.fencing_token());
    let broke = cut(proxy);
    let outcome = releasing.await.unwrap();
    figure("force_release", broke, &format!("{outcome:?}"));
    let held = b.inspect(key).await.unwrap();
    assert_eq!(
        held.map(|info| info.fencing_token()),
        Some(next.fencing_token()),
        "the forced release deleted the next holder's lock (outcome {outcome:?})"
    );
    assert!(next.ttl().await.unwrap().is_some(), "the next holder holds");
    next.unlock()
        .await
        .expect("the next holder releases its own lock");
    outcome
}

/// `refresh_for`: the re-arm ran, its reply was lost. It is idempotent (it re-arms the
/// same value to the same expiration): sent again, it succeeds, and the lease counts
/// on the new expiration.
pub async fn refresh(a: &Client, b: &Client, proxy: &FaultProxy, key: &str) {
    let lock = a
        .try_lock(key, &leasehold::random_value(), 10 * SEC)
        .await
        .expect("acquired");
    let token = lock.fencing_token();
    proxy.lose_reply_to(sha("refresh.lua"));
    let refreshing = tokio::spawn(async move {
        let refreshed = lock.refresh_for(60 * SEC).await;
        (lock, refreshed)
    });
    ran(proxy).await;
    let ttl = b.inspect(key).await.unwrap().and_then(|info| info.ttl());
    assert!(
        ttl.is_some_and(|ttl| ttl > 30 * SEC),
        "the refresh ran: {ttl:?}"
    );
    let broke = cut(proxy);
    let (lock, refreshed) = refreshing.await.unwrap();
    figure(
        "refresh",
        broke,
        &format!("{:?}", refreshed.as_ref().map(|_| "refreshed")),
    );
    refreshed.expect("an idempotent write whose answer was lost is sent again");
    assert!(
        lock.valid_for().is_some_and(|v| v > 30 * SEC),
        "the lease counts on the refresh: {:?}",
        lock.valid_for()
    );
    let info = b.inspect(key).await.unwrap().expect("still held");
    assert_eq!(info.fencing_token(), token, "the same acquisition");
    lock.unlock().await.expect("released");
}

/// `try_lock`: the acquire ran and took the key, its reply was lost. It is idempotent
/// (it names its attempt; a second run re-arms the first one's key and returns its
/// token): sent again, it grants the lock — one acquisition, not two.
pub async fn acquire(a: &Client, b: &Client, proxy: &FaultProxy, key: &str) {
    proxy.lose_reply_to(sha("acquire.lua"));
    let locker = a.clone();
    let owned = key.to_owned();
    let locking = tokio::spawn(async move {
        locker
            .try_lock(&owned, &leasehold::random_value(), 30 * SEC)
            .await
    });
    ran(proxy).await;
    let first = b
        .inspect(key)
        .await
        .unwrap()
        .expect("the acquire ran and took the key");
    let broke = cut(proxy);
    let locked = locking.await.unwrap();
    figure(
        "acquire",
        broke,
        &format!("{:?}", locked.as_ref().map(|_| "granted")),
    );
    let lock = locked.expect("an idempotent write whose answer was lost is sent again");
    assert_eq!(
        lock.fencing_token(),
        first.fencing_token(),
        "one acquisition: the second run re-armed the first one's"
    );
    let info = b.inspect(key).await.unwrap().expect("held");
    assert_eq!(info.fencing_token(), lock.fencing_token());
    lock.unlock().await.expect("released");
}
