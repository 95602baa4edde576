//! Promises that broke under adversarial schedules ("Trust holes"), each written as the
//! promise it keeps, against a real redis-server (and the memory store where the
//! promise applies there too).

mod support;

use std::time::{Duration, Instant};

use leasehold::{Client, Error, FixedInterval, NoRetry};
use support::{FaultProxy, RedisServer, ServerOptions, wait_until};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

/// 2^53: above it, a Lua number (a double) no longer holds every integer.
const TWO_POW_53: u64 = 1 << 53;

/// Load the scripts into the server's cache, so that an attempt under test is one
/// `EVALSHA` round trip (a fresh server answers the first one with `NOSCRIPT`).
async fn warm_up(client: &Client) {
    let lock = client.try_lock("warm-up", "v", SEC).await.unwrap();
    lock.unlock().await.unwrap();
}

/// The remaining TTL of `key` on the server, in milliseconds (-2: no such key).
fn pttl(server: &RedisServer, key: &str) -> i64 {
    match server.cmd_sync(&["PTTL", key]) {
        redis::Value::Int(ms) => ms,
        other => panic!("unexpected {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// 1. A cancelled same-value re-lock never deletes (or outlives) the lock the caller holds.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_same_value_relock_never_deletes_the_held_lock() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).await.unwrap();
    warm_up(&client).await;
    let held = client.try_lock("k", "v", 10 * SEC).await.unwrap();
    server.client_pause(150 * MS);
    // Same-value acquire is idempotent, so this is allowed; then it is given up on.
    let cancelled =
        tokio::time::timeout(50 * MS, client.lock("k", "v", 10 * SEC, 5 * SEC, NoRetry)).await;
    assert!(cancelled.is_err(), "cancelled mid-flight");
    tokio::time::sleep(500 * MS).await; // the pause is over; anything detached has run
    assert_eq!(
        server.get("k").as_deref(),
        Some("v"),
        "the lock the caller holds was deleted"
    );
    let rival = Client::open(&server.url()).await.unwrap();
    let err = rival.try_lock("k", "rival", SEC).await.unwrap_err();
    assert!(err.is_not_obtained(), "{err:?}");
    assert!(held.valid_for().unwrap() > 9 * SEC);
    held.refresh().await.expect("still held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loser_of_a_select_between_same_value_locks_never_deletes_the_winner() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).await.unwrap();
    warm_up(&client).await;
    server.client_pause(100 * MS); // both attempts are in flight when the first answers
    let won = tokio::select! {
        a = client.lock("k", "v", 10 * SEC, 5 * SEC, NoRetry) => a,
        b = client.lock("k", "v", 10 * SEC, 5 * SEC, NoRetry) => b,
    }
    .expect("one of them wins");
    tokio::time::sleep(500 * MS).await;
    assert_eq!(
        server.get("k").as_deref(),
        Some("v"),
        "the winner was deleted"
    );
    let rival = Client::open(&server.url()).await.unwrap();
    assert!(
        rival
            .try_lock("k", "rival", SEC)
            .await
            .unwrap_err()
            .is_not_obtained()
    );
    assert!(won.valid_for().is_some());
    won.unlock().await.expect("the winner still holds the key");
}

/// A same-value re-lock with a shorter expiration that may have landed (it was given up
/// on during a server stall) re-arms the key to its own expiration (protocol v2: the
/// value is the identity, as in bsm). Every handle of the lease in the client counts on
/// no more than that from the moment it was sent, so none believes it holds past the
/// key's expiration; once it ran out, a rival takes the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_shorter_relock_shortens_every_handle_at_once() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).await.unwrap();
    warm_up(&client).await;
    let held = client.try_lock("k", "v", 10 * SEC).await.unwrap();
    server.client_pause(150 * MS);
    let cancelled =
        tokio::time::timeout(50 * MS, client.lock("k", "v", SEC, 5 * SEC, NoRetry)).await;
    assert!(cancelled.is_err());
    assert!(
        held.valid_for().unwrap() <= SEC,
        "the handle counts on the shorter re-lock"
    );
    tokio::time::sleep(300 * MS).await; // the re-lock landed after the pause
    let ttl = pttl(&server, "k");
    assert!(
        (0..=SEC.as_millis() as i64).contains(&ttl),
        "re-armed to 1 s: {ttl}"
    );
    assert!(held.valid_for().unwrap() <= Duration::from_millis(ttl as u64 + 50));
    tokio::time::sleep(1200 * MS).await; // past the re-lock's 1 s
    assert_eq!(held.valid_for(), None);
    let rival = Client::open(&server.url()).await.unwrap();
    let _rival = rival
        .try_lock("k", "rival", SEC)
        .await
        .expect("the key expired with the re-lock's expiration");
}

// ---------------------------------------------------------------------------------------
// 2. Attempts stalled on a replaced connection never land later.
// ---------------------------------------------------------------------------------------

/// The caller got `NotObtained`; its attempts that were stalled on the replaced
/// connection must not create a lock nobody will release when the path heals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_acquires_never_land_after_the_caller_got_not_obtained() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let client = Client::open(&proxy.url()).await.unwrap();
    warm_up(&client).await;
    let holder = Client::open(&server.url()).await.unwrap();
    let held = holder.try_lock("k", "other", 30 * SEC).await.unwrap();
    proxy.stall_existing(); // three attempts time out, the connection is replaced
    let err = client
        .lock(
            "k",
            "v",
            30 * SEC,
            100 * MS,
            FixedInterval::new(10 * MS, 10),
        )
        .await
        .unwrap_err();
    assert!(err.is_not_obtained(), "{err:?}");
    held.unlock().await.unwrap();
    proxy.heal_existing(); // the stalled acquires reach the server now
    tokio::time::sleep(500 * MS).await;
    assert_eq!(
        server.get("k"),
        None,
        "an acquire the caller had given up on created the lock"
    );
}

/// A lock that was unlocked must not be re-created by an earlier attempt of the same
/// call that was stalled on the connection the client replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_acquires_never_recreate_a_lock_after_unlock() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let client = Client::open(&proxy.url()).await.unwrap();
    warm_up(&client).await;
    proxy.stall_existing();
    let lock = client
        .lock(
            "k",
            "v",
            30 * SEC,
            100 * MS,
            FixedInterval::new(10 * MS, 10),
        )
        .await
        .expect("granted on the replacement connection");
    lock.unlock().await.unwrap();
    proxy.heal_existing();
    tokio::time::sleep(500 * MS).await;
    assert_eq!(server.get("k"), None, "an unlocked lock was re-created");
    // The key is free for anyone.
    let other = Client::open(&server.url()).await.unwrap();
    let _held_until_expiry = other.try_lock("k", "other", SEC).await.unwrap();
}

// ---------------------------------------------------------------------------------------
// 3. A short outage does not lose a long lease: reconnection is prompt.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_resumes_promptly_after_a_short_outage() {
    let mut server = RedisServer::start_with(ServerOptions {
        appendonly_always: true,
        ..Default::default()
    });
    let client = Client::open(&server.url()).await.unwrap();
    let lock = client.try_lock("k", "v", 10 * SEC).await.unwrap();
    let mut renewal = lock
        .auto_refresh(500 * MS, 10 * SEC, 200 * MS, u32::MAX)
        .unwrap();
    tokio::time::sleep(600 * MS).await;
    server.stop();
    tokio::time::sleep(6 * SEC).await;
    server.start_again(); // the AOF brings the key back with under 4 s left
    let back = Instant::now();
    // Under 4 s left, unless a renewal already landed (it may be that quick).
    let left = pttl(&server, "k");
    assert!(left > 0, "the key came back: {left}");
    let renewed = wait_until(5 * SEC, || pttl(&server, "k") > 8000);
    let lag = back.elapsed();
    eprintln!(
        "FIGURE outage-6s: renewal landed {lag:?} after the server was back ({left} ms were left)"
    );
    assert!(renewed, "no renewal landed");
    assert!(lag < SEC, "renewal resumed only after {lag:?}");
    assert!(renewal.try_error().is_none());
    assert!(lock.valid_for().is_some());
}

/// Time from the server accepting connections again to the first successful `lock()`,
/// under renewal traffic, after outages of 1, 5 and 30 seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_lag_after_outages_is_bounded() {
    let mut server = RedisServer::start_with(ServerOptions {
        appendonly_always: true,
        ..Default::default()
    });
    let client = Client::open(&server.url()).await.unwrap();
    // Renewal traffic: twenty locks renewed every 100 ms, retried at once when failing.
    let mut held = Vec::new();
    for i in 0..20 {
        let lock = client
            .try_lock(&format!("busy{i}"), "v", 120 * SEC)
            .await
            .unwrap();
        let renewal = lock
            .auto_refresh(100 * MS, 120 * SEC, 100 * MS, u32::MAX)
            .unwrap();
        held.push((lock, renewal));
    }
    for outage in [SEC, 5 * SEC, 30 * SEC] {
        server.stop();
        tokio::time::sleep(outage).await;
        server.start_again();
        let back = Instant::now();
        let lock = client
            .lock("probe", "v", SEC, 100 * MS, FixedInterval::new(MS, 10_000))
            .await
            .expect("recovered");
        let lag = back.elapsed();
        lock.unlock().await.unwrap();
        eprintln!("FIGURE recovery-lag: {lag:?} after a {outage:?} outage");
        assert!(lag < SEC, "{lag:?} after a {outage:?} outage");
    }
    for (lock, mut renewal) in held {
        assert!(renewal.try_error().is_none());
        assert!(lock.valid_for().is_some());
    }
}

// ---------------------------------------------------------------------------------------
// 4. A fence never accepts two different holders under one token.
// ---------------------------------------------------------------------------------------

/// After a failover that lost the lock key and its fence counter (the replica had not
/// received them), the next holder gets the same token. The fenced resource must refuse
/// it: it has already seen that token from another holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_token_from_another_holder_is_refused() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).await.unwrap();
    let a = client.try_lock("job", "holder-a", 30 * SEC).await.unwrap();
    a.fenced_set("row", "from a").await.unwrap();
    // What a failover to a replica that had not received the lock does: the lock key
    // and its fence counter are gone (the resource, replicated earlier, is not).
    let lost: Vec<String> = server.keys("job*");
    let state = server.keys("job:state*");
    assert!(lost.len() >= 2 && state.len() == 1, "{lost:?}");
    for key in &lost {
        server.cmd_sync(&["DEL", key]);
    }
    // The replica had the key's state of the incarnation before: the next token repeats
    // (without the state, the server's clock would give a higher one).
    let before = format!("{} earlier:1", a.fencing_token() - 1);
    server.cmd_sync(&["SET", &state[0], &before]);
    let b = client.try_lock("job", "holder-b", 30 * SEC).await.unwrap();
    assert_eq!(b.fencing_token(), a.fencing_token(), "the token repeats");
    let err = b.fenced_set("row", "from b").await.unwrap_err();
    assert!(
        matches!(err, Error::Fenced { token, highest } if token == highest),
        "{err:?}"
    );
    assert_eq!(server.get("row").as_deref(), Some("from a"));
    // The first holder keeps writing under its token.
    a.fenced_set("row", "from a again").await.unwrap();
    assert_eq!(
        a.fenced_get("row").await.unwrap().as_deref(),
        Some("from a again")
    );
}

// ---------------------------------------------------------------------------------------
// 5. Tokens above 2^53 are compared exactly.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_tokens_above_two_pow_53_stay_exact_and_distinct() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).await.unwrap();
    client
        .try_lock("k", "v", SEC)
        .await
        .unwrap()
        .unlock()
        .await
        .unwrap();
    let state = server.keys("k:state*");
    assert_eq!(state.len(), 1, "{state:?}");
    let start = TWO_POW_53 + 2;
    server.cmd_sync(&["SET", &state[0], &format!("{start} x:1")]);
    let a = client.try_lock("k", "a", 10 * SEC).await.unwrap();
    assert_eq!(a.fencing_token(), start + 1);
    a.unlock().await.unwrap();
    let b = client.try_lock("k", "b", 10 * SEC).await.unwrap();
    assert_eq!(b.fencing_token(), start + 2);
    // Idempotent re-acquire keeps the exact token.
    let again = client.try_lock("k", "b", 10 * SEC).await.unwrap();
    assert_eq!(again.fencing_token(), start + 2);
    // Carries across a run of nines.
    b.unlock().await.unwrap();
    server.cmd_sync(&["SET", &state[0], "18446744073709551599 x:1"]);
    let c = client.try_lock("k", "c", 10 * SEC).await.unwrap();
    assert_eq!(c.fencing_token(), 18_446_744_073_709_551_600);
}

/// Upgrading from the layout with fence counters: a key without state takes a token
/// above its counter of the earlier layout, so a token never goes back (here a counter
/// above the clock, which alone would have given a lower token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_of_the_earlier_layout_are_merged_on_first_use() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).await.unwrap();
    // `{t}:job` has a hash tag: its counter of the earlier layout was `{t}:job:fence`.
    let legacy = TWO_POW_53 + 40;
    server.cmd_sync(&["SET", "{t}:job:fence", &legacy.to_string()]);
    let a = client.try_lock("{t}:job", "a", 10 * SEC).await.unwrap();
    assert_eq!(a.fencing_token(), legacy + 1);
    // A realistic counter (far below the clock in microseconds) is passed by the clock.
    server.cmd_sync(&["SET", "{u}:job:fence", "123456"]);
    let b = client.try_lock("{u}:job", "b", 10 * SEC).await.unwrap();
    assert!(b.fencing_token() > 123_456);
    // Negative control: the same key without the counter takes the clock, which is
    // below the large counter: the merge is what kept the token from going back.
    let c = client.try_lock("{v}:job", "c", 10 * SEC).await.unwrap();
    assert!(c.fencing_token() < legacy, "{}", c.fencing_token());
}

async fn stale_tokens_above_two_pow_53_are_refused(client: &Client) {
    client
        .fenced_set("row", "fresh", TWO_POW_53 + 1)
        .await
        .unwrap();
    let err = client
        .fenced_set("row", "stale", TWO_POW_53)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Fenced { token, highest } if token == TWO_POW_53 && highest == TWO_POW_53 + 1),
        "{err:?}"
    );
    assert_eq!(
        client.fenced_get("row", u64::MAX).await.unwrap().as_deref(),
        Some("fresh")
    );
    let err = client.fenced_get("row", u64::MAX - 1).await.unwrap_err();
    assert!(err.is_fenced(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_refuses_stale_tokens_above_two_pow_53() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).await.unwrap();
    stale_tokens_above_two_pow_53_are_refused(&client).await;
}

#[tokio::test]
async fn memory_refuses_stale_tokens_above_two_pow_53() {
    stale_tokens_above_two_pow_53_are_refused(&Client::memory()).await;
}

// ---------------------------------------------------------------------------------------
// Found by the model check (`tests/model.rs`).
// ---------------------------------------------------------------------------------------

/// An abort's first try (with its release) timed out on a connection that was then
/// replaced; its retry was answered on the new connection, so the abort is over as far
/// as the client knows, and a later `lock` of the same key and value is granted there.
/// When the old connection delivers what it held, that first try must not delete the
/// lock the later `lock` returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_abort_from_a_replaced_connection_never_deletes_a_later_lock() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let client = Client::builder()
        .default_timeout(100 * MS) // bounds each try of the abort
        .open(&proxy.url())
        .await
        .unwrap();
    warm_up(&client).await;
    proxy.stall_existing();
    // The attempt times out (1st timeout in a row on the connection); its abort is sent
    // with its release and times out (2nd), its retry too (3rd): the connection is
    // replaced and the next try is answered on the fresh one.
    let err = client
        .lock("k", "v", 30 * SEC, 100 * MS, NoRetry)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout), "{err:?}");
    tokio::time::sleep(SEC).await;
    let lock = client
        .lock("k", "v", 30 * SEC, SEC, NoRetry)
        .await
        .expect("granted on the replacement connection");
    proxy.heal_existing(); // the abort's first try reaches the server now
    tokio::time::sleep(500 * MS).await;
    assert!(lock.valid_for().is_some());
    assert_eq!(
        server.get("k").as_deref(),
        Some("v"),
        "a stale abort deleted a lock its client holds"
    );
    let rival = Client::open(&server.url()).await.unwrap();
    let err = rival.try_lock("k", "rival", SEC).await.unwrap_err();
    assert!(err.is_not_obtained(), "{err:?}");
}

/// A same-value `lock` whose attempt re-armed the key before an `unlock` of the lease
/// deleted it, and whose answer is taken after the unlock: it must not return a lock
/// that believes it holds the deleted key.
#[tokio::test]
async fn a_relock_answered_after_an_unlock_never_believes_in_the_deleted_key() {
    use futures::FutureExt;
    let server = RedisServer::start();
    let client = Client::open(&server.url()).await.unwrap();
    warm_up(&client).await;
    let held = client.try_lock("k", "v", 10 * SEC).await.unwrap();
    let relock = client.lock("k", "v", 10 * SEC, SEC, NoRetry);
    let mut relock = std::pin::pin!(relock);
    // One poll sends the attempt; its answer is not taken yet.
    assert!(relock.as_mut().now_or_never().is_none());
    // Processed after the attempt (one connection, in order): deletes the key it re-armed.
    held.unlock().await.unwrap();
    let relocked = relock.await.expect("the attempt re-armed the key");
    let rival = Client::open(&server.url()).await.unwrap();
    let rival_got_it = rival.try_lock("k", "rival", SEC).await.is_ok();
    assert!(
        relocked.valid_for().is_none() || !rival_got_it,
        "the re-lock believes it holds the key for {:?}, and a rival holds it",
        relocked.valid_for()
    );
}

/// Two handles share one lease (a same-value re-lock). Once one of them unlocks, the
/// other must not go on believing in the lease while the release may land — not after
/// the answer, and not at all if the unlock is given up on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlock_in_flight_ends_the_lease_for_every_handle() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).await.unwrap();
    warm_up(&client).await;
    let first = client.try_lock("k", "v", 10 * SEC).await.unwrap();
    let second = client.try_lock("k", "v", 10 * SEC).await.unwrap();
    assert_eq!(first.fencing_token(), second.fencing_token());
    server.client_pause(300 * MS);
    // Given up on while in flight: the release lands when the pause ends.
    let unlocked = tokio::time::timeout(50 * MS, first.unlock()).await;
    assert!(unlocked.is_err(), "the unlock was in flight");
    assert_eq!(
        second.valid_for(),
        None,
        "the other handle still believes in a lease being released"
    );
    tokio::time::sleep(500 * MS).await;
    assert_eq!(server.get("k"), None, "the release landed");
}

/// Releases of other keys never make a grant unbelievable: 64 tasks of one client each
/// `try_lock` and `unlock` a key of their own, and no `try_lock` of a free key is refused.
/// Before the fix, a release marked one of 64 groups of keys, and a grant of any key of
/// the group sent before it was not believed: 3 refusals in a row ended `try_lock` with
/// `NotObtained` on a free key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_of_other_keys_never_refuse_a_free_key() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).await.unwrap();
    let mut tasks = Vec::new();
    for task in 0..64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("own-{task}");
            let mut refused = 0;
            for _ in 0..100 {
                match client.try_lock(&key, "v", 10 * SEC).await {
                    Ok(lock) => lock.unlock().await.unwrap(),
                    Err(e) if e.is_not_obtained() => refused += 1,
                    Err(e) => panic!("{e:?}"),
                }
            }
            refused
        }));
    }
    let mut refused = 0;
    for task in tasks {
        refused += task.await.unwrap();
    }
    assert_eq!(
        refused, 0,
        "try_lock of a free key refused {refused} times in 6400"
    );
}

/// Tokens belong to the store key: a client with `key_prefix("svc:jobs:")` locking
/// `nightly` and a client without a prefix locking `svc:jobs:nightly` lock the same store
/// key, and every acquisition gets a strictly greater token, whichever took it (the
/// earlier layout counted per prefix: 1, 1, 2, 2, 3, 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_prefixes_on_one_store_key_draw_rising_tokens() {
    let server = RedisServer::start();
    let prefixed = Client::builder()
        .key_prefix("svc:jobs:")
        .open(&server.url())
        .await
        .unwrap();
    let bare = Client::open(&server.url()).await.unwrap();
    let mut last = 0;
    for i in 0..6 {
        let lock = if i % 2 == 0 {
            prefixed.try_lock("nightly", "a", 10 * SEC).await.unwrap()
        } else {
            bare.try_lock("svc:jobs:nightly", "b", 10 * SEC)
                .await
                .unwrap()
        };
        assert!(
            lock.fencing_token() > last,
            "{} after {last}",
            lock.fencing_token()
        );
        last = lock.fencing_token();
        // The other client sees it held: one store key.
        let other = if i % 2 == 0 {
            bare.try_lock("svc:jobs:nightly", "b", 10 * SEC).await
        } else {
            prefixed.try_lock("nightly", "a", 10 * SEC).await
        };
        assert!(other.unwrap_err().is_not_obtained());
        lock.unlock().await.unwrap();
    }
}
