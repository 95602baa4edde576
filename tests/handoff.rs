//! Hand-off on release: a waiter wakes when the holder releases the key or its lease
//! runs out, instead of sleeping out its strategy's delay — and the strategy still bounds
//! the whole wait. Against a real redis-server (pub/sub) and the memory store.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use leasehold::{Client, FixedInterval, RetryStrategy};
use support::RedisServer;
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

/// Two clients of one store (the holder's and the waiter's), with notifications on or
/// off, and the server keeping it alive.
struct Store {
    holder: Client,
    waiter: Client,
    server: Option<RedisServer>,
}

async fn redis(notify: bool) -> Store {
    let server = RedisServer::start();
    let url = server.url();
    let open = || Client::builder().notify(notify).open(&url);
    let holder = open().await.unwrap();
    let waiter = open().await.unwrap();
    // Scripts cached: every attempt below is one round trip.
    holder
        .try_lock("warm", "v", SEC)
        .await
        .unwrap()
        .unlock()
        .await
        .unwrap();
    Store {
        holder,
        waiter,
        server: Some(server),
    }
}

async fn memory(notify: bool) -> Store {
    let name = format!("memory://handoff-{}", leasehold::random_value());
    let open = || Client::builder().notify(notify).open(&name);
    Store {
        holder: open().await.unwrap(),
        waiter: open().await.unwrap(),
        server: None,
    }
}

/// Counts the strategy's steps.
struct Counted(Arc<AtomicUsize>, FixedInterval);

impl RetryStrategy for Counted {
    fn next_delay(&mut self) -> Option<Duration> {
        self.0.fetch_add(1, Ordering::SeqCst);
        self.1.next_delay()
    }
}

/// A waiter on a 200 ms fixed interval gets the key within a few ms of the unlock,
/// without spending a strategy step on the early wake.
async fn handoff_follows_the_unlock(s: &Store, store: &str) -> Duration {
    let held = s.holder.try_lock("k", "holder", 60 * SEC).await.unwrap();
    let steps = Arc::new(AtomicUsize::new(0));
    let waiting = s.waiter.lock(
        "k",
        "waiter",
        10 * SEC,
        SEC,
        Counted(steps.clone(), FixedInterval::new(200 * MS, 50)),
    );
    let release = async {
        tokio::time::sleep(250 * MS).await;
        held.unlock().await.unwrap();
        Instant::now()
    };
    let (lock, released) = tokio::join!(waiting, release);
    let lag = released.elapsed();
    let _held_until_expiry = lock.expect("acquired after the release");
    eprintln!("FIGURE handoff-{store}: acquired {lag:?} after the unlock (polling: up to 200 ms)");
    // Polling alone would have waited until the next step at 400 ms: 150 ms.
    assert!(lag < 60 * MS, "{lag:?}");
    assert_eq!(
        steps.load(Ordering::SeqCst),
        2,
        "steps at 0 ms and 200 ms only"
    );
    lag
}

/// A waiter wakes when the holder's key expires (which pub/sub cannot report).
async fn handoff_follows_the_holders_expiry(s: &Store, store: &str) {
    let started = Instant::now();
    let _held = s.holder.try_lock("k", "holder", 300 * MS).await.unwrap();
    let lock = s
        .waiter
        .lock(
            "k",
            "waiter",
            10 * SEC,
            SEC,
            FixedInterval::new(200 * MS, 50),
        )
        .await
        .expect("acquired once the holder's lease ran out");
    let at = started.elapsed();
    eprintln!(
        "FIGURE expiry-{store}: acquired at {at:?} (the lease ran out at 300 ms; polling: 400 ms)"
    );
    assert!(at >= 299 * MS && at < 360 * MS, "{at:?}");
    drop(lock);
}

/// `notify(false)`: the waiter polls as the strategy says, nothing earlier.
async fn without_notifications_waiters_poll(s: &Store) {
    let held = s.holder.try_lock("k", "holder", 60 * SEC).await.unwrap();
    let started = Instant::now();
    let waiting = s.waiter.lock(
        "k",
        "waiter",
        10 * SEC,
        SEC,
        FixedInterval::new(200 * MS, 50),
    );
    let release = async {
        tokio::time::sleep(250 * MS).await;
        held.unlock().await.unwrap();
    };
    let (lock, ()) = tokio::join!(waiting, release);
    let _held_until_expiry = lock.unwrap();
    let at = started.elapsed();
    // Two delays of 200 ms, each kept to within the timer's millisecond (either way).
    assert!(at >= 398 * MS && at < 600 * MS, "polled at 400 ms: {at:?}");
}

/// The strategy bounds the wait exactly when nobody releases: three 200 ms steps, then
/// `NotObtained`, no attempt after the last step.
async fn the_strategy_bounds_the_wait_when_nobody_releases(s: &Store) -> Duration {
    let _held = s.holder.try_lock("k", "holder", 60 * SEC).await.unwrap();
    let started = Instant::now();
    let err = s
        .waiter
        .lock(
            "k",
            "waiter",
            10 * SEC,
            SEC,
            FixedInterval::new(200 * MS, 3),
        )
        .await
        .unwrap_err();
    assert!(err.is_not_obtained(), "{err:?}");
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_handoff_follows_the_unlock() {
    let s = redis(true).await;
    handoff_follows_the_unlock(&s, "redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_handoff_follows_the_unlock() {
    let s = memory(true).await;
    handoff_follows_the_unlock(&s, "memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_handoff_follows_the_holders_expiry() {
    let s = redis(true).await;
    handoff_follows_the_holders_expiry(&s, "redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_handoff_follows_the_holders_expiry() {
    let s = memory(true).await;
    handoff_follows_the_holders_expiry(&s, "memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_without_notifications_waiters_poll() {
    without_notifications_waiters_poll(&redis(false).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_without_notifications_waiters_poll() {
    without_notifications_waiters_poll(&memory(false).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_the_strategy_bounds_the_wait_when_nobody_releases() {
    let waited = the_strategy_bounds_the_wait_when_nobody_releases(&redis(true).await).await;
    // Three delays of 200 ms, each kept to within the timer's millisecond (either way).
    assert!(waited >= 597 * MS && waited < 700 * MS, "{waited:?}");
}

#[tokio::test(start_paused = true)]
async fn memory_the_strategy_bounds_the_wait_exactly_when_nobody_releases() {
    let waited = the_strategy_bounds_the_wait_when_nobody_releases(&memory(true).await).await;
    assert_eq!(waited, 600 * MS);
}

/// `cmdstat_evalsha` calls so far.
fn script_calls(server: &RedisServer) -> u64 {
    let info = match server.cmd_sync(&["INFO", "commandstats"]) {
        redis::Value::BulkString(b) => String::from_utf8(b).unwrap(),
        redis::Value::VerbatimString { text, .. } => text,
        other => panic!("unexpected {other:?}"),
    };
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// `waiters` waiting for one key through `clients` (round robin); one release; how many
/// script calls followed (the release itself included).
async fn calls_after_one_release(server: &RedisServer, clients: &[Client], waiters: usize) -> u64 {
    let holder = Client::open(&server.url()).await.unwrap();
    let held = holder.try_lock("k", "holder", 60 * SEC).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..waiters {
        let client = clients[i % clients.len()].clone();
        tasks.push(tokio::spawn(async move {
            client
                .lock(
                    "k",
                    &format!("waiter-{i}"),
                    60 * SEC,
                    SEC,
                    FixedInterval::new(30 * SEC, 1),
                )
                .await
        }));
    }
    // Every waiter made its first attempt, and its client subscribed (and retried once).
    tokio::time::sleep(500 * MS).await;
    let before = script_calls(server);
    held.unlock().await.unwrap();
    tokio::time::sleep(500 * MS).await;
    let calls = script_calls(server) - before;
    for task in tasks {
        task.abort();
    }
    calls
}

/// One release wakes one waiter per client: 20 waiters of one client cost about one
/// script call after a release, not twenty. The control — the same 20 waiters spread
/// over 20 clients, each of which wakes its own first waiter — shows the count would
/// see a herd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_release_wakes_one_waiter_per_client_not_a_herd() {
    let server = RedisServer::start();
    let one = vec![Client::open(&server.url()).await.unwrap()];
    let calls = calls_after_one_release(&server, &one, 20).await;
    eprintln!("FIGURE no-herd: 20 waiters in one client, one release -> {calls} script calls");
    assert!(
        calls <= 3,
        "{calls} script calls: release, the woken waiter's attempt"
    );

    let server = RedisServer::start();
    let mut many = Vec::new();
    for _ in 0..20 {
        many.push(Client::open(&server.url()).await.unwrap());
    }
    let calls = calls_after_one_release(&server, &many, 20).await;
    eprintln!("FIGURE no-herd-control: 20 waiters in 20 clients -> {calls} script calls");
    assert!(
        calls >= 20,
        "the detector sees 20 clients' waiters: {calls}"
    );
}

/// The subscriber connection is killed while a waiter waits: it resubscribes, the
/// waiter retries once, and the next release still wakes it — long before its 5 s step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_subscription_is_taken_again_and_the_waiter_still_wakes() {
    let s = redis(true).await;
    let server = s.server.as_ref().unwrap();
    let held = s.holder.try_lock("k", "holder", 60 * SEC).await.unwrap();
    let waiting = s
        .waiter
        .lock("k", "waiter", 10 * SEC, SEC, FixedInterval::new(5 * SEC, 2));
    let release = async {
        tokio::time::sleep(300 * MS).await;
        server.cmd_sync(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        tokio::time::sleep(500 * MS).await; // resubscribed by now (100 ms backoff)
        held.unlock().await.unwrap();
        Instant::now()
    };
    let (lock, released) = tokio::join!(waiting, release);
    let lag = released.elapsed();
    let _held_until_expiry = lock.expect("acquired");
    eprintln!("FIGURE resubscribed: acquired {lag:?} after the unlock");
    assert!(lag < SEC, "{lag:?}");
}

/// A waiter whose key stays held makes exactly the attempts its strategy asks for: the
/// first, then one per step. The confirmation of its subscription is no release: the
/// subscriber checks that the key still exists instead of waking the waiter for one more
/// attempt (which it did before: 4 script calls for a 2-step strategy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_subscription_costs_no_attempt_while_the_key_is_held() {
    let s = redis(true).await;
    let server = s.server.as_ref().unwrap();
    let _held = s.holder.try_lock("k", "holder", 60 * SEC).await.unwrap();
    let before = script_calls(server);
    let err = s
        .waiter
        .lock(
            "k",
            "waiter",
            10 * SEC,
            SEC,
            FixedInterval::new(300 * MS, 2),
        )
        .await
        .unwrap_err();
    assert!(err.is_not_obtained(), "{err:?}");
    assert_eq!(
        script_calls(server) - before,
        3,
        "the first attempt and 2 steps"
    );
}

/// A key freed while the waiter's subscription was down is not missed: the key is
/// deleted with no release published, then the subscriber connection is killed; when the
/// resubscription is confirmed, the key is found gone and the waiter tries at once
/// instead of sleeping out its 5 s step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_freed_before_a_subscription_is_confirmed_still_wakes_the_waiter() {
    let s = redis(true).await;
    let server = s.server.as_ref().unwrap();
    let _held = s.holder.try_lock("k", "holder", 60 * SEC).await.unwrap();
    let started = Instant::now();
    let waiting = s
        .waiter
        .lock("k", "waiter", 10 * SEC, SEC, FixedInterval::new(5 * SEC, 1));
    let free = async {
        tokio::time::sleep(300 * MS).await;
        server.cmd_sync(&["DEL", "k"]);
        server.cmd_sync(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    };
    let (lock, ()) = tokio::join!(waiting, free);
    let _lock = lock.expect("acquired once the resubscription found the key gone");
    let waited = started.elapsed();
    eprintln!("FIGURE resubscribed-to-a-free-key: acquired after {waited:?}");
    assert!(waited < 2 * SEC, "{waited:?}");
}
