//! The blocking facade: the core conformance lines through `leasehold::blocking`, against
//! a real `redis-server` (spawned per test), against `memory://` and, with the `etcd`
//! feature, against a real etcd (spawned per test; whole-second leases, as documented:
//! the cases wait out `Lock::expiration()`), plus what only the
//! facade has — renewal while the caller's thread sleeps, OS-thread contention, misuse
//! inside an async runtime, and the runtime thread's lifetime.
//!
//! Plain `#[test]`s: no runtime on the calling thread. Every test body runs under
//! [`bounded`], so a hang fails the test instead of stalling the suite.

mod support;

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use leasehold::blocking::{Client, Lock};
use leasehold::{Error, FixedInterval, NoRetry, NonFixedInterval, RetryStrategy};
use support::RedisServer;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

/// The facade's panic message for blocking calls inside a runtime (prefix of the rest).
const IN_RUNTIME: &str = "called from inside an async runtime";

/// Runs `f` on its own thread; fails the test if it does not finish within `limit`.
/// A panic inside `f` is resumed here.
fn bounded<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(panic::catch_unwind(AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(value)) => value,
        Ok(Err(payload)) => panic::resume_unwind(payload),
        Err(_) => panic!("the test did not finish within {limit:?}"),
    }
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .unwrap_or_default(),
    }
}

/// Runs `f`, which must panic with the facade's in-runtime message naming `what`.
fn assert_refused<T>(what: &str, f: impl FnOnce() -> T) {
    let Err(payload) = panic::catch_unwind(AssertUnwindSafe(f)) else {
        panic!("{what}: expected a panic inside the runtime");
    };
    let msg = panic_message(payload);
    assert!(msg.contains(IN_RUNTIME), "{what}: {msg}");
    assert!(msg.contains(what), "{what}: {msg}");
}

/// A store for one test: a fresh redis-server (kept alive by the guard, dropped after
/// the client) or a memory store of its own. `url` opens a second, independent client
/// (its own runtime thread and connection) on the same store.
struct Store {
    client: Client,
    url: String,
    server: Option<RedisServer>,
    /// How long a key may outlive its expiration (the store's expiry sweep).
    expiry_lag: Duration,
    /// Tokens count per key from 1 (etcd: one revision counter for every key).
    tokens_per_key: bool,
    /// The first token on a fresh store.
    first_token: u64,
    #[cfg(feature = "etcd")]
    _etcd: Option<support::EtcdServer>,
}

impl Store {
    fn second_client(&self) -> Client {
        Client::open(&self.url).expect("a second client")
    }

    /// Sleep until `lock` (acquired just before) surely expired on the store.
    fn outlive(&self, lock: &Lock) {
        thread::sleep(lock.expiration() + self.expiry_lag);
    }
}

fn redis_store() -> Store {
    let server = RedisServer::start();
    let url = server.url();
    Store {
        client: Client::open(&url).expect("connect"),
        url,
        server: Some(server),
        expiry_lag: 50 * MS,
        tokens_per_key: true,
        first_token: 1,
        #[cfg(feature = "etcd")]
        _etcd: None,
    }
}

#[cfg(feature = "etcd")]
fn etcd_store() -> Store {
    let server = support::EtcdServer::start();
    let url = server.url();
    Store {
        client: Client::open(&url).expect("connect"),
        url,
        server: None,
        expiry_lag: 700 * MS,
        tokens_per_key: false,
        first_token: 2,
        _etcd: Some(server),
    }
}

fn memory_store() -> Store {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let url = format!("memory://blocking-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    Store {
        client: Client::open(&url).expect("open memory"),
        url,
        server: None,
        expiry_lag: 50 * MS,
        tokens_per_key: true,
        first_token: 1,
        #[cfg(feature = "etcd")]
        _etcd: None,
    }
}

/// Generates `redis::<case>` and `memory::<case>` for every conformance case.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod redis {
            $(
                #[test]
                fn $case() {
                    super::bounded(super::SEC * 20, || {
                        let store = super::redis_store();
                        super::cases::$case(&store);
                    });
                }
            )*
        }
        mod memory {
            $(
                #[test]
                fn $case() {
                    super::bounded(super::SEC * 20, || {
                        let store = super::memory_store();
                        super::cases::$case(&store);
                    });
                }
            )*
        }
        #[cfg(feature = "etcd")]
        mod etcd {
            $(
                #[test]
                fn $case() {
                    super::bounded(super::SEC * 30, || {
                        let store = super::etcd_store();
                        super::cases::$case(&store);
                    });
                }
            )*
        }
    };
}

conformance!(
    acquire_then_contention_is_not_obtained,
    same_value_reacquires_rearms_and_keeps_its_token,
    fencing_tokens_rise_across_acquisitions_and_survive_expiry,
    refresh_rearms_the_original_expiration,
    refresh_ttl_unlock_after_loss_are_not_held_and_leave_the_new_owner_alone,
    bad_input_is_rejected_before_any_io,
    renewal_continues_while_the_caller_sleeps,
    error_timeout_is_none_while_renewal_runs_and_not_held_after_a_takeover,
    unlock_and_stop_end_renewal_cleanly,
    many_threads_never_hold_one_key_at_once,
    debug_output_never_shows_the_lock_value,
    fenced_resources_refuse_a_superseded_holder,
);

mod cases {
    use super::*;

    pub fn acquire_then_contention_is_not_obtained(s: &Store) {
        let c = &s.client;
        let lock = c.try_lock("k", "a", 10 * SEC).unwrap();
        assert_eq!((lock.key(), lock.value()), ("k", "a"));
        assert_eq!(lock.expiration(), 10 * SEC);
        let err = c.try_lock("k", "b", 10 * SEC).unwrap_err();
        assert!(err.is_not_obtained(), "{err:?}");
        let started = Instant::now();
        let err = c
            .lock("k", "b", 10 * SEC, SEC, FixedInterval::new(20 * MS, 3))
            .unwrap_err();
        assert!(err.is_not_obtained(), "{err:?}");
        assert!(started.elapsed() >= 60 * MS, "{:?}", started.elapsed());
        // Another key is independent.
        c.try_lock("other", "b", 10 * SEC).unwrap();
    }

    pub fn same_value_reacquires_rearms_and_keeps_its_token(s: &Store) {
        let c = &s.client;
        let first = c.try_lock("k", "a", SEC).unwrap();
        thread::sleep(200 * MS);
        let before = first.ttl().unwrap().unwrap();
        assert!(before <= 800 * MS, "{before:?}");
        let again = c.try_lock("k", "a", 10 * SEC).unwrap();
        assert_eq!(again.fencing_token(), first.fencing_token());
        let after = first.ttl().unwrap().unwrap();
        assert!(
            after >= 9 * SEC,
            "re-armed to the new expiration: {after:?}"
        );
    }

    pub fn fencing_tokens_rise_across_acquisitions_and_survive_expiry(s: &Store) {
        let c = &s.client;
        let mut last = 0;
        for i in 0..5 {
            let lock = c.try_lock("k", &format!("v{i}"), 10 * SEC).unwrap();
            assert!(
                lock.fencing_token() > last,
                "{} after {last}",
                lock.fencing_token()
            );
            last = lock.fencing_token();
            lock.unlock().unwrap();
        }
        // Let one expire instead of unlocking it: the counter outlives the lock key.
        let expiring = c.try_lock("k", "short", 50 * MS).unwrap();
        assert!(expiring.fencing_token() > last);
        last = expiring.fencing_token();
        s.outlive(&expiring);
        let next = c.try_lock("k", "after-expiry", 10 * SEC).unwrap();
        assert!(next.fencing_token() > last);
        let fresh = c.try_lock("another-key", "v", 10 * SEC).unwrap();
        if s.tokens_per_key {
            assert_eq!(fresh.fencing_token(), 1);
        } else {
            assert!(fresh.fencing_token() > next.fencing_token());
        }
    }

    pub fn refresh_rearms_the_original_expiration(s: &Store) {
        let c = &s.client;
        let lock = c.try_lock("k", "a", SEC).unwrap();
        thread::sleep(300 * MS);
        assert!(lock.ttl().unwrap().unwrap() <= 700 * MS);
        lock.refresh().unwrap();
        let ttl = lock.ttl().unwrap().unwrap();
        // Whole seconds, rounded down, on etcd.
        let floor = if s.tokens_per_key {
            900 * MS
        } else {
            Duration::ZERO
        };
        assert!(ttl >= floor && ttl <= SEC, "{ttl:?}");
        assert!(lock.valid_for().unwrap() > 900 * MS);
        assert!(!lock.wait_lost_timeout(20 * MS), "not lost while valid");
    }

    pub fn refresh_ttl_unlock_after_loss_are_not_held_and_leave_the_new_owner_alone(s: &Store) {
        let c = &s.client;
        let lock = c.try_lock("k", "a", 50 * MS).unwrap();
        s.outlive(&lock);
        let owner = c.try_lock("k", "b", 10 * SEC).unwrap();
        let owner_ttl = owner.ttl().unwrap().unwrap();
        assert!(lock.refresh().unwrap_err().is_not_held());
        assert_eq!(lock.valid_for(), None, "a confirmed loss ends validity");
        assert!(lock.wait_lost_timeout(SEC), "lost fires");
        lock.wait_lost(); // returns at once
        assert_eq!(lock.ttl().unwrap(), None);
        assert!(lock.unlock().unwrap_err().is_not_held());
        let still = owner.ttl().unwrap().unwrap();
        assert!(
            still <= owner_ttl && still >= 9 * SEC,
            "untouched: {still:?}"
        );
        owner.refresh().expect("the new owner still holds the key");
        owner.unlock().unwrap();
        c.try_lock("k", "c", SEC).expect("released");
    }

    pub fn bad_input_is_rejected_before_any_io(s: &Store) {
        let c = &s.client;
        let bad: [(&str, &str, Duration, Duration, &str); 7] = [
            ("", "v", SEC, SEC, "key"),
            ("k", "", SEC, SEC, "val"),
            ("k", "v", Duration::ZERO, SEC, "expiration"),
            ("k", "v", Duration::from_micros(999), SEC, "expiration"),
            ("k", "v", Duration::MAX, SEC, "expiration"),
            ("k", "v", SEC, Duration::ZERO, "timeout"),
            ("k", "v", SEC, Duration::MAX, "timeout"),
        ];
        for (key, val, expiration, timeout, name) in bad {
            match c.lock(key, val, expiration, timeout, NoRetry) {
                Err(Error::InvalidArgument(msg)) => assert!(msg.starts_with(name), "{msg}"),
                other => panic!("{name}: expected InvalidArgument, got {other:?}"),
            }
        }
        assert!(c.try_lock("", "v", SEC).unwrap_err().is_invalid_argument());
        // Nothing was written.
        let lock = c.try_lock("k", "probe", SEC).unwrap();
        assert_eq!(lock.fencing_token(), s.first_token);
        for (interval, expiration, timeout, retry, name) in [
            (Duration::ZERO, SEC, 100 * MS, 3, "interval"),
            (SEC, SEC, 100 * MS, 3, "interval"),
            (100 * MS, Duration::ZERO, 100 * MS, 3, "expiration"),
            (100 * MS, SEC, Duration::ZERO, 3, "timeout"),
            (100 * MS, SEC, 100 * MS, 0, "max_retry"),
        ] {
            match lock.auto_refresh(interval, expiration, timeout, retry) {
                Err(Error::InvalidArgument(msg)) => assert!(msg.starts_with(name), "{msg}"),
                other => panic!("{name}: expected InvalidArgument, got {other:?}"),
            }
        }
        let err = Client::open("nope://host").unwrap_err();
        assert!(err.is_invalid_argument(), "{err:?}");
    }

    /// Expiration 300 ms, interval 100 ms: the calling thread sleeps through six
    /// expirations while the runtime thread renews; a second client (its own runtime
    /// thread and connection) then finds the key held with a live TTL.
    pub fn renewal_continues_while_the_caller_sleeps(s: &Store) {
        let c = &s.client;
        let lock = c.try_lock("k", "a", 300 * MS).unwrap();
        let mut renewal = lock.auto_refresh(100 * MS, 300 * MS, 100 * MS, 3).unwrap();
        thread::sleep(2 * SEC);
        assert!(renewal.try_error().is_none());
        assert!(renewal.is_running());
        assert!(
            lock.valid_for().is_some(),
            "renewals extended the local lease"
        );
        let ttl = lock.ttl().unwrap().expect("still held");
        assert!(ttl <= lock.expiration(), "{ttl:?}");
        if s.tokens_per_key {
            assert!(ttl > Duration::ZERO, "{ttl:?}");
        }
        if let Some(server) = &s.server {
            let ::redis::Value::Int(pttl) = server.cmd_sync(&["PTTL", "k"]) else {
                panic!("PTTL");
            };
            assert!(pttl > 0 && pttl <= 300, "{pttl}");
        }
        let other = s.second_client();
        let err = other.try_lock("k", "b", SEC).unwrap_err();
        assert!(err.is_not_obtained(), "{err:?}");
        lock.unlock().unwrap();
        other.try_lock("k", "b", SEC).expect("free after unlock");
    }

    pub fn error_timeout_is_none_while_renewal_runs_and_not_held_after_a_takeover(s: &Store) {
        let c = &s.client;
        let lock = c.try_lock("k", "a", 300 * MS).unwrap();
        let mut renewal = lock.auto_refresh(100 * MS, 300 * MS, 100 * MS, 3).unwrap();
        let started = Instant::now();
        assert!(renewal.error_timeout(400 * MS).is_none());
        let waited = started.elapsed();
        assert!(waited >= 400 * MS && waited < 2 * SEC, "{waited:?}");
        assert!(renewal.is_running());
        assert!(!lock.wait_lost_timeout(150 * MS));

        // A lock that expired and was taken over: its first renewal finds NotHeld.
        let stale = c.try_lock("s", "a", 50 * MS).unwrap();
        s.outlive(&stale);
        let thief = c.try_lock("s", "thief", 10 * SEC).unwrap();
        let mut renewal = stale.auto_refresh(20 * MS, 50 * MS, 100 * MS, 3).unwrap();
        let started = Instant::now();
        let err = renewal.error_timeout(2 * SEC).expect("a failure");
        assert!(err.is_not_held(), "{err:?}");
        assert!(started.elapsed() < SEC, "{:?}", started.elapsed());
        assert!(renewal.error_timeout(50 * MS).is_none(), "sent once");
        assert!(renewal.try_error().is_none());
        assert!(!renewal.is_running());
        assert!(stale.wait_lost_timeout(SEC));
        assert!(thief.ttl().unwrap().unwrap() >= 9 * SEC, "untouched");
    }

    pub fn unlock_and_stop_end_renewal_cleanly(s: &Store) {
        let c = &s.client;
        let lock = c.try_lock("k", "a", 300 * MS).unwrap();
        let mut renewal = lock.auto_refresh(100 * MS, 300 * MS, 100 * MS, 3).unwrap();
        thread::sleep(150 * MS);
        lock.unlock().unwrap();
        assert!(!renewal.is_running());
        let started = Instant::now();
        assert!(renewal.error().is_none(), "a clean stop closes the channel");
        assert!(started.elapsed() < 500 * MS);

        let lock = c.try_lock("k", "b", 300 * MS).unwrap();
        let renewal = lock.auto_refresh(100 * MS, 300 * MS, 100 * MS, 3).unwrap();
        renewal.stop();
        s.outlive(&lock);
        assert_eq!(
            lock.ttl().unwrap(),
            None,
            "stopped renewal lets the key expire"
        );

        let lock = c.try_lock("k", "c", 300 * MS).unwrap();
        drop(lock.auto_refresh(100 * MS, 300 * MS, 100 * MS, 3).unwrap());
        s.outlive(&lock);
        assert_eq!(
            lock.ttl().unwrap(),
            None,
            "dropped renewal lets the key expire"
        );
    }

    pub fn many_threads_never_hold_one_key_at_once(s: &Store) {
        let c = &s.client;
        let overlaps = exclusion_workload(c, 8, 5, |_| "shared".to_owned());
        assert_eq!(overlaps, 0);
    }

    pub fn fenced_resources_refuse_a_superseded_holder(s: &Store) {
        let c = &s.client;
        let old = c.try_lock("k", "old", 50 * MS).unwrap();
        old.fenced_set("row", "from-old").unwrap();
        s.outlive(&old); // the old lease runs out
        let new = c.try_lock("k", "new", 10 * SEC).unwrap();
        assert_eq!(new.fenced_get("row").unwrap().as_deref(), Some("from-old"));
        let err = old.fenced_set("row", "stale").unwrap_err();
        assert!(err.is_fenced(), "{err:?}");
        new.fenced_set("row", "from-new").unwrap();
        assert_eq!(new.fenced_get("row").unwrap().as_deref(), Some("from-new"));
        // The client-level form is an anonymous holder: the token `new` used is not its.
        let err = c.fenced_get("row", new.fencing_token()).unwrap_err();
        assert!(err.is_fenced(), "{err:?}");
        assert_eq!(
            c.fenced_get("row", new.fencing_token() + 1)
                .unwrap()
                .as_deref(),
            Some("from-new")
        );
    }

    pub fn debug_output_never_shows_the_lock_value(s: &Store) {
        let c = &s.client;
        let secret = "s3cr3t-lock-value";
        let lock = c.try_lock("k", secret, SEC).unwrap();
        let renewal = lock.auto_refresh(100 * MS, SEC, 100 * MS, 3).unwrap();
        for shown in [
            format!("{lock:?}"),
            format!("{renewal:?}"),
            format!("{c:?}"),
            format!("{:?}", c.try_lock("k", "other", SEC).unwrap_err()),
        ] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(format!("{lock:?}").contains("fencing_token"));
    }
}

/// Runs `workers` OS threads that each take the lock on `key(worker)` `rounds` times,
/// hold it for a moment, and unlock. Returns how many times a thread entered the
/// critical section while another was inside it.
fn exclusion_workload(
    c: &Client,
    workers: usize,
    rounds: usize,
    key: fn(usize) -> String,
) -> usize {
    let inside = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..workers)
        .map(|worker| {
            let (c, inside, overlaps) = (c.clone(), inside.clone(), overlaps.clone());
            thread::spawn(move || {
                for _ in 0..rounds {
                    let lock = c
                        .lock(
                            &key(worker),
                            &format!("worker-{worker}"),
                            10 * SEC,
                            SEC,
                            NonFixedInterval::new(2 * MS, 10_000),
                        )
                        .unwrap();
                    if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                        overlaps.fetch_add(1, Ordering::SeqCst);
                    }
                    thread::sleep(3 * MS);
                    inside.fetch_sub(1, Ordering::SeqCst);
                    lock.unlock().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("worker");
    }
    overlaps.load(Ordering::SeqCst)
}

/// Negative control: the same checker catches overlaps when the "lock" does not
/// exclude (every thread locks its own key).
#[test]
fn exclusion_checker_catches_a_lock_that_does_not_exclude() {
    bounded(20 * SEC, || {
        let c = Client::memory();
        let overlaps = exclusion_workload(&c, 8, 5, |worker| format!("own-key-{worker}"));
        assert!(overlaps > 0, "the checker must see overlapping holders");
    });
}

/// A key stolen from a running renewal (set behind its back on the server): the next
/// renewal reports `NotHeld`, and the thief's key is left alone.
#[test]
fn renewal_reports_a_takeover_on_the_server() {
    bounded(20 * SEC, || {
        let store = redis_store();
        let server = store.server.as_ref().unwrap();
        let lock = store.client.try_lock("k", "a", 300 * MS).unwrap();
        let mut renewal = lock.auto_refresh(100 * MS, 300 * MS, 100 * MS, 3).unwrap();
        assert!(renewal.error_timeout(250 * MS).is_none());
        server.cmd_sync(&["SET", "k", "thief", "PX", "60000"]);
        let started = Instant::now();
        let err = renewal.error_timeout(2 * SEC).expect("a failure");
        assert!(err.is_not_held(), "{err:?}");
        assert!(started.elapsed() < SEC, "{:?}", started.elapsed());
        assert!(lock.wait_lost_timeout(SEC));
        assert_eq!(
            server.cmd_sync(&["GET", "k"]),
            ::redis::Value::BulkString(b"thief".to_vec())
        );
    });
}

/// Every parking method panics inside a runtime (current-thread and multi-thread), with
/// a message naming it; nothing hangs; the handles keep working afterwards.
#[test]
fn blocking_calls_inside_an_async_runtime_panic_instead_of_hanging() {
    bounded(20 * SEC, || {
        let client = Client::memory();
        let lock = client.try_lock("k", "v", 10 * SEC).unwrap();
        let mut renewal = lock.auto_refresh(100 * MS, 10 * SEC, 100 * MS, 3).unwrap();
        let to_unlock = client.try_lock("u", "v", 10 * SEC).unwrap();
        let to_stop = to_unlock
            .auto_refresh(100 * MS, 10 * SEC, 100 * MS, 3)
            .unwrap();
        let spare = client.try_lock("s", "v", 10 * SEC).unwrap();

        let current_thread = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        current_thread.block_on(async {
            assert_refused("Client::open", || Client::open("memory://"));
            assert_refused("ClientBuilder::open", || {
                Client::builder().open("memory://")
            });
            assert_refused("Client::try_lock", || client.try_lock("k2", "v", SEC));
            assert_refused("Client::lock", || client.lock("k2", "v", SEC, SEC, NoRetry));
            assert_refused("Lock::refresh", || lock.refresh());
            assert_refused("Lock::ttl", || lock.ttl());
            assert_refused("Lock::wait_lost", || lock.wait_lost());
            assert_refused("Lock::wait_lost_timeout", || lock.wait_lost_timeout(SEC));
            assert_refused("Lock::unlock", || to_unlock.unlock());
            assert_refused("AutoRefresh::error", || renewal.error());
            assert_refused("AutoRefresh::error_timeout", || renewal.error_timeout(SEC));
            assert_refused("AutoRefresh::stop", || to_stop.stop());
            // What never parks works anywhere.
            assert!(renewal.try_error().is_none());
            assert!(lock.valid_for().is_some());
            assert_eq!(lock.key(), "k");
            let spare = spare.auto_refresh(100 * MS, 10 * SEC, 100 * MS, 3).unwrap();
            drop(spare);
            // Dropping handles (even the last of a client) never blocks here.
            let started = Instant::now();
            drop(client.clone());
            drop(Client::memory());
            assert!(started.elapsed() < 500 * MS, "{:?}", started.elapsed());
        });
        drop(current_thread);

        let multi_thread = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        multi_thread.block_on(async {
            let task = tokio::spawn({
                let client = client.clone();
                async move {
                    panic::catch_unwind(AssertUnwindSafe(|| client.try_lock("k2", "v", SEC)))
                        .map(|_| ())
                        .map_err(panic_message)
                }
            });
            let msg = task.await.unwrap().unwrap_err();
            assert!(msg.contains(IN_RUNTIME), "{msg}");
            let msg = tokio::task::spawn_blocking({
                let client = client.clone();
                move || {
                    panic::catch_unwind(AssertUnwindSafe(|| client.try_lock("k2", "v", SEC)))
                        .map(|_| ())
                        .map_err(panic_message)
                }
            })
            .await
            .unwrap()
            .unwrap_err();
            assert!(
                msg.contains(IN_RUNTIME),
                "spawn_blocking has a context too: {msg}"
            );
        });
        drop(multi_thread);

        // The refused calls did no damage: renewal ran on, the handles work.
        assert!(renewal.try_error().is_none());
        assert!(renewal.is_running());
        lock.refresh().unwrap();
        assert!(lock.ttl().unwrap().is_some());
        lock.unlock().unwrap();
        assert!(renewal.error_timeout(SEC).is_none());
    });
}

/// A blocking call made from a retry strategy (which runs with the client's runtime
/// entered) panics instead of deadlocking; the panic reaches the caller.
#[test]
fn a_blocking_call_from_a_retry_strategy_panics_instead_of_deadlocking() {
    struct Reentrant(Client);
    impl RetryStrategy for Reentrant {
        fn next_delay(&mut self) -> Option<Duration> {
            let _ = self.0.try_lock("other", "v", SEC);
            None
        }
    }
    bounded(20 * SEC, || {
        let client = Client::memory();
        let _holder = client.try_lock("k", "a", 10 * SEC).unwrap();
        let strategy = Reentrant(client.clone());
        assert_refused("Client::try_lock", || {
            client.lock("k", "b", 10 * SEC, SEC, strategy)
        });
        // The runtime survived the panic of one task.
        client.try_lock("k3", "v", SEC).unwrap();
    });
}

/// Where the runtime thread of `client` lives: its `/proc/self/task/<tid>` directory,
/// found from inside it. A retry strategy runs while the client's runtime is entered, so
/// it can spawn a probe task onto that runtime's thread.
#[cfg(target_os = "linux")]
fn runtime_thread_dir(client: &Client) -> std::path::PathBuf {
    struct Probe(mpsc::Sender<(Option<String>, std::path::PathBuf)>);
    impl RetryStrategy for Probe {
        fn next_delay(&mut self) -> Option<Duration> {
            let tx = self.0.clone();
            tokio::runtime::Handle::current().spawn(async move {
                let name = thread::current().name().map(str::to_owned);
                let here = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
                let _ = tx.send((name, here));
            });
            None
        }
    }
    let _holder = client.try_lock("probe", "a", 10 * SEC).unwrap();
    let (tx, rx) = mpsc::channel();
    let err = client
        .lock("probe", "b", 10 * SEC, SEC, Probe(tx))
        .unwrap_err();
    assert!(err.is_not_obtained(), "{err:?}");
    let (name, here) = rx.recv_timeout(SEC).expect("the probe ran");
    assert_eq!(
        name.as_deref(),
        Some(leasehold::blocking::RUNTIME_THREAD_NAME)
    );
    // "<pid>/task/<tid>"
    let tid = here.file_name().expect("a tid").to_owned();
    let dir = std::path::Path::new("/proc/self/task").join(tid);
    let comm = std::fs::read_to_string(dir.join("comm")).unwrap();
    assert!("leasehold-runtime".starts_with(comm.trim()), "{comm:?}");
    dir
}

#[cfg(target_os = "linux")]
#[test]
fn dropping_the_last_handle_stops_the_runtime_thread() {
    bounded(20 * SEC, || {
        let client = Client::memory();
        let thread_dir = runtime_thread_dir(&client);
        let lock = client.try_lock("k", "a", 300 * MS).unwrap();
        let mut renewal = lock.auto_refresh(100 * MS, 300 * MS, 100 * MS, 3).unwrap();
        let clone = client.clone();
        drop(client);
        drop(clone);
        // The lock and its renewal keep the runtime (and the renewal) going.
        thread::sleep(400 * MS);
        assert!(thread_dir.exists(), "still running for the lock");
        assert!(renewal.try_error().is_none());
        assert!(lock.ttl().unwrap().is_some(), "renewed past its expiration");
        drop(lock);
        thread::sleep(50 * MS);
        assert!(thread_dir.exists(), "still running for the renewal handle");
        // Nobody can unlock the key any more: renewal ended with the last lock handle.
        assert!(!renewal.is_running());
        assert!(renewal.error_timeout(SEC).is_none(), "ended cleanly");

        let started = Instant::now();
        drop(renewal);
        let took = started.elapsed();
        assert!(took < 2 * SEC, "drop is bounded: {took:?}");
        // The drop waited for the thread; the kernel drops its entry right after.
        assert!(
            support::wait_until(SEC, || !thread_dir.exists()),
            "the runtime thread is gone"
        );
    });
}

#[cfg(target_os = "linux")]
#[test]
fn dropping_the_last_handle_inside_a_runtime_does_not_block_and_the_thread_still_exits() {
    bounded(20 * SEC, || {
        let client = Client::memory();
        let thread_dir = runtime_thread_dir(&client);
        let lock = client.try_lock("k", "a", 10 * SEC).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let started = Instant::now();
            drop(client);
            drop(lock);
            assert!(started.elapsed() < 100 * MS, "{:?}", started.elapsed());
        });
        assert!(
            support::wait_until(3 * SEC, || !thread_dir.exists()),
            "the runtime thread exits on its own"
        );
    });
}

#[test]
fn clones_share_one_runtime_thread_and_store() {
    bounded(20 * SEC, || {
        let a = Client::memory();
        let b = a.clone();
        let _lock = a.try_lock("k", "a", 10 * SEC).unwrap();
        assert!(b.try_lock("k", "b", SEC).unwrap_err().is_not_obtained());
        #[cfg(target_os = "linux")]
        assert_eq!(runtime_thread_dir(&a), runtime_thread_dir(&b));
        // A private memory store is private to a client and its clones.
        let c = Client::memory();
        c.try_lock("k", "c", SEC).unwrap();
    });
}

#[test]
fn handles_are_send_sync_and_clients_clone() {
    fn assert<T: Send + Sync + 'static>() {}
    fn clone<T: Clone>() {}
    assert::<Client>();
    assert::<Lock>();
    assert::<leasehold::blocking::AutoRefresh>();
    clone::<Client>();
}
