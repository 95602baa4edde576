//! The backend conformance suite: every line of the contract's async surface, run
//! against a real `redis-server` (spawned per test), against `memory://` and, with the
//! `etcd` feature, against a real single-member etcd (spawned per test).
//!
//! Where a store documents a difference, the case checks the documented behaviour: etcd
//! grants whole seconds (at least its minimum lease, 1 s here), so a 50 ms expiration is
//! granted as 1 s and the key really lasts that long (`Lock::expiration()` says so); it
//! reports `ttl()` in whole seconds, rounded down; its tokens are revisions shared by
//! every key.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use leasehold::{Client, Error, FixedInterval, NoRetry, NonFixedInterval, RetryStrategy};
use support::RedisServer;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

/// A store for one test: a fresh server (kept alive by the guard) or a private memory
/// store, and what its documented differences are.
pub struct Store {
    client: Client,
    traits: Traits,
    _server: Option<Box<dyn std::any::Any + Send>>,
}

/// How a store differs where the contract lets it.
#[derive(Clone, Copy)]
pub struct Traits {
    /// `ttl()` counts whole seconds, rounded down.
    whole_seconds: bool,
    /// How long a key may outlive its expiration before the store deletes it.
    expiry_lag: Duration,
    /// Each key counts its own tokens from 1 (else: one counter for every key).
    tokens_per_key: bool,
    /// The token of the first acquisition on a fresh store.
    first_token: u64,
}

const MILLISECOND_STORE: Traits = Traits {
    whole_seconds: false,
    expiry_lag: Duration::from_millis(30),
    tokens_per_key: true,
    first_token: 1,
};

impl Traits {
    /// `ttl` is more than `lo` (at least `lo`'s whole seconds on a whole-second store).
    fn above(&self, ttl: Duration, lo: Duration) -> bool {
        if self.whole_seconds {
            ttl >= Duration::from_secs(lo.as_secs())
        } else {
            ttl > lo
        }
    }

    /// Sleep until `lock` (acquired just before) has surely expired on the store.
    async fn outlive(&self, lock: &leasehold::Lock) {
        tokio::time::sleep(lock.expiration() + self.expiry_lag).await;
    }
}

async fn redis_store() -> Store {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).await.expect("connect");
    Store {
        client,
        traits: MILLISECOND_STORE,
        _server: Some(Box::new(server)),
    }
}

fn memory_store() -> Store {
    Store {
        client: Client::memory(),
        traits: MILLISECOND_STORE,
        _server: None,
    }
}

/// etcd: leases of whole seconds (1 s at least here), deleted by the server's expiry
/// sweep up to 0.5 s after they ran out; revisions as tokens.
#[cfg(feature = "etcd")]
async fn etcd_store() -> Store {
    let server = support::EtcdServer::start();
    let client = Client::open(&server.url()).await.expect("connect");
    Store {
        client,
        traits: ETCD,
        _server: Some(Box::new(server)),
    }
}

#[cfg(feature = "etcd")]
const ETCD: Traits = Traits {
    whole_seconds: true,
    expiry_lag: Duration::from_millis(700),
    tokens_per_key: false,
    // Revision 1 is the empty store; the first write is revision 2.
    first_token: 2,
};

/// Generates `redis::<case>` and `memory::<case>` for every conformance case.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let store = super::redis_store().await;
                    super::cases::$case(&store).await;
                }
            )*
        }
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let store = super::memory_store();
                    super::cases::$case(&store).await;
                }
            )*
        }
        #[cfg(feature = "etcd")]
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let store = super::etcd_store().await;
                    super::cases::$case(&store).await;
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
    refresh_after_loss_is_not_held_and_leaves_the_new_owner_alone,
    ttl_reports_remaining_time_and_none_when_not_held,
    unlock_releases_and_a_stale_unlock_is_not_held,
    retry_waits_until_the_holder_releases,
    contention_exhausts_the_strategy_with_no_sleep_after_the_last_attempt,
    iterators_and_custom_strategies_plug_in,
    bad_input_is_rejected_before_any_io,
    many_tasks_never_hold_one_key_at_once,
    debug_output_never_shows_the_lock_value,
);

mod cases {
    use super::*;

    pub async fn acquire_then_contention_is_not_obtained(s: &Store) {
        let c = &s.client;
        let lock = c.try_lock("k", "a", 10 * SEC).await.unwrap();
        assert_eq!((lock.key(), lock.value()), ("k", "a"));
        let err = c.try_lock("k", "b", 10 * SEC).await.unwrap_err();
        assert!(err.is_not_obtained(), "{err:?}");
        let err = c
            .lock("k", "b", 10 * SEC, SEC, FixedInterval::new(5 * MS, 3))
            .await
            .unwrap_err();
        assert!(err.is_not_obtained(), "{err:?}");
        // Another key is independent.
        c.try_lock("other", "b", 10 * SEC).await.unwrap();
    }

    pub async fn same_value_reacquires_rearms_and_keeps_its_token(s: &Store) {
        let (c, t) = (&s.client, s.traits);
        let first = c.try_lock("k", "a", SEC).await.unwrap();
        tokio::time::sleep(300 * MS).await;
        let before = first.ttl().await.unwrap().unwrap();
        assert!(before <= 700 * MS, "{before:?}");
        let again = c.try_lock("k", "a", 10 * SEC).await.unwrap();
        assert_eq!(again.fencing_token(), first.fencing_token());
        let after = first.ttl().await.unwrap().unwrap();
        assert!(
            t.above(after, 9 * SEC),
            "re-armed to the new expiration: {after:?}"
        );
    }

    pub async fn fencing_tokens_rise_across_acquisitions_and_survive_expiry(s: &Store) {
        let (c, t) = (&s.client, s.traits);
        let mut last = 0;
        for i in 0..5 {
            let lock = c.try_lock("k", &format!("v{i}"), 10 * SEC).await.unwrap();
            assert!(
                lock.fencing_token() > last,
                "{} after {last}",
                lock.fencing_token()
            );
            last = lock.fencing_token();
            lock.unlock().await.unwrap();
        }
        // Let one expire instead of unlocking it: the counter outlives the lock key.
        let expiring = c.try_lock("k", "short", 50 * MS).await.unwrap();
        assert!(expiring.fencing_token() > last);
        last = expiring.fencing_token();
        t.outlive(&expiring).await;
        let next = c.try_lock("k", "after-expiry", 10 * SEC).await.unwrap();
        assert!(next.fencing_token() > last);
        let fresh = c.try_lock("another-key", "v", 10 * SEC).await.unwrap();
        if t.tokens_per_key {
            assert_eq!(fresh.fencing_token(), 1);
        } else {
            // One counter for every key: still above every earlier token.
            assert!(fresh.fencing_token() > next.fencing_token());
        }
    }

    pub async fn refresh_rearms_the_original_expiration(s: &Store) {
        let (c, t) = (&s.client, s.traits);
        let lock = c.try_lock("k", "a", SEC).await.unwrap();
        tokio::time::sleep(400 * MS).await;
        assert!(lock.ttl().await.unwrap().unwrap() <= 600 * MS);
        lock.refresh().await.unwrap();
        let ttl = lock.ttl().await.unwrap().unwrap();
        assert!(t.above(ttl, 900 * MS) && ttl <= SEC, "{ttl:?}");
        assert!(lock.valid_for().unwrap() > 900 * MS);
    }

    pub async fn refresh_after_loss_is_not_held_and_leaves_the_new_owner_alone(s: &Store) {
        let (c, t) = (&s.client, s.traits);
        let lock = c.try_lock("k", "a", 50 * MS).await.unwrap();
        t.outlive(&lock).await;
        let owner = c.try_lock("k", "b", 10 * SEC).await.unwrap();
        let owner_ttl = owner.ttl().await.unwrap().unwrap();
        assert!(lock.refresh().await.unwrap_err().is_not_held());
        assert_eq!(lock.valid_for(), None, "a confirmed loss ends validity");
        tokio::time::timeout(SEC, lock.lost())
            .await
            .expect("lost fires");
        let still = owner.ttl().await.unwrap().unwrap();
        assert!(
            still <= owner_ttl && t.above(still, 9 * SEC),
            "untouched: {still:?}"
        );
        assert!(lock.unlock().await.unwrap_err().is_not_held());
        owner
            .refresh()
            .await
            .expect("the new owner still holds the key");
    }

    pub async fn ttl_reports_remaining_time_and_none_when_not_held(s: &Store) {
        let (c, t) = (&s.client, s.traits);
        let lock = c.try_lock("k", "a", 2 * SEC).await.unwrap();
        let ttl = lock.ttl().await.unwrap().unwrap();
        assert!(t.above(ttl, SEC) && ttl <= 2 * SEC, "{ttl:?}");
        let short = c.try_lock("s", "a", 30 * MS).await.unwrap();
        t.outlive(&short).await;
        assert_eq!(short.ttl().await.unwrap(), None);
    }

    pub async fn unlock_releases_and_a_stale_unlock_is_not_held(s: &Store) {
        let (c, t) = (&s.client, s.traits);
        let lock = c.try_lock("k", "a", 10 * SEC).await.unwrap();
        lock.unlock().await.unwrap();
        let next = c.try_lock("k", "b", 10 * SEC).await.unwrap();
        // A stale holder (same key, other value) cannot release the new owner.
        let stale = c.try_lock("k2", "x", 30 * MS).await.unwrap();
        t.outlive(&stale).await;
        let owner2 = c.try_lock("k2", "y", 10 * SEC).await.unwrap();
        assert!(stale.unlock().await.unwrap_err().is_not_held());
        assert!(owner2.ttl().await.unwrap().is_some());
        next.unlock().await.unwrap();
    }

    pub async fn retry_waits_until_the_holder_releases(s: &Store) {
        let c = &s.client;
        let holder = c.try_lock("k", "a", 10 * SEC).await.unwrap();
        let releaser = tokio::spawn(async move {
            tokio::time::sleep(150 * MS).await;
            holder.unlock().await.unwrap();
        });
        let started = std::time::Instant::now();
        let lock = c
            .lock("k", "b", 10 * SEC, SEC, FixedInterval::new(20 * MS, 100))
            .await
            .unwrap();
        assert!(started.elapsed() >= 140 * MS);
        assert_eq!(lock.value(), "b");
        releaser.await.unwrap();
    }

    pub async fn contention_exhausts_the_strategy_with_no_sleep_after_the_last_attempt(s: &Store) {
        let c = &s.client;
        let _holder = c.try_lock("k", "a", 30 * SEC).await.unwrap();
        let asked = Arc::new(AtomicUsize::new(0));
        let strategy = Counting {
            inner: FixedInterval::new(100 * MS, 2),
            asked: asked.clone(),
        };
        let started = std::time::Instant::now();
        let err = c.lock("k", "b", 30 * SEC, SEC, strategy).await.unwrap_err();
        let elapsed = started.elapsed();
        assert!(err.is_not_obtained(), "{err:?}");
        // Three attempts, asked for a delay after each: two delays, then `None`.
        assert_eq!(asked.load(Ordering::SeqCst), 3);
        assert!(elapsed >= 200 * MS, "{elapsed:?}");
        assert!(
            elapsed < 290 * MS,
            "slept after the last attempt? {elapsed:?}"
        );
    }

    pub async fn iterators_and_custom_strategies_plug_in(s: &Store) {
        let c = &s.client;
        let _holder = c.try_lock("k", "a", 30 * SEC).await.unwrap();
        let delays = vec![MS, 2 * MS, 3 * MS];
        let err = c
            .lock("k", "b", SEC, SEC, delays.into_iter())
            .await
            .unwrap_err();
        assert!(err.is_not_obtained());
        let boxed: Box<dyn RetryStrategy> = Box::new(NonFixedInterval::new(2 * MS, 3));
        assert!(
            c.lock("k", "b", SEC, SEC, boxed)
                .await
                .unwrap_err()
                .is_not_obtained()
        );
        let err = c
            .lock("k", "b", SEC, SEC, std::iter::repeat_n(MS, 2))
            .await
            .unwrap_err();
        assert!(err.is_not_obtained());
    }

    pub async fn bad_input_is_rejected_before_any_io(s: &Store) {
        let (c, t) = (&s.client, s.traits);
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
            match c.lock(key, val, expiration, timeout, NoRetry).await {
                Err(Error::InvalidArgument(msg)) => assert!(msg.starts_with(name), "{msg}"),
                other => panic!("{name}: expected InvalidArgument, got {other:?}"),
            }
        }
        assert!(
            c.try_lock("", "v", SEC)
                .await
                .unwrap_err()
                .is_invalid_argument()
        );
        // Nothing was written.
        let lock = c.try_lock("k", "probe", SEC).await.unwrap();
        assert_eq!(lock.fencing_token(), t.first_token);
    }

    pub async fn many_tasks_never_hold_one_key_at_once(s: &Store) {
        let c = &s.client;
        let overlaps = super::exclusion_workload(12, 5, |worker| {
            let c = c.clone();
            async move {
                c.lock(
                    "shared",
                    &format!("worker-{worker}"),
                    10 * SEC,
                    SEC,
                    NonFixedInterval::new(2 * MS, 10_000),
                )
                .await
                .unwrap()
            }
        })
        .await;
        assert_eq!(overlaps, 0);
    }

    pub async fn debug_output_never_shows_the_lock_value(s: &Store) {
        let c = &s.client;
        let secret = "s3cr3t-lock-value";
        let lock = c.try_lock("k", secret, SEC).await.unwrap();
        let renewal = lock.auto_refresh(100 * MS, SEC, 100 * MS, 3).unwrap();
        for shown in [
            format!("{lock:?}"),
            format!("{renewal:?}"),
            format!("{c:?}"),
            format!("{:?}", c.try_lock("k", "other", SEC).await.unwrap_err()),
        ] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(format!("{lock:?}").contains("fencing_token"));
    }

    struct Counting<S> {
        inner: S,
        asked: Arc<AtomicUsize>,
    }

    impl<S: RetryStrategy> RetryStrategy for Counting<S> {
        fn next_delay(&mut self) -> Option<Duration> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            self.inner.next_delay()
        }
    }
}

/// Runs `workers` tasks that each take the lock `rounds` times through `acquire`, hold it
/// for a moment, and unlock. Returns how many times a task entered the critical section
/// while another was inside it.
async fn exclusion_workload<F, Fut>(workers: usize, rounds: usize, acquire: F) -> usize
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = leasehold::Lock> + Send + 'static,
{
    let inside = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let (inside, overlaps) = (inside.clone(), overlaps.clone());
        let acquires: Vec<Fut> = (0..rounds).map(|_| acquire(worker)).collect();
        tasks.push(tokio::spawn(async move {
            for acquiring in acquires {
                let lock = acquiring.await;
                if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                    overlaps.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                lock.unlock().await.unwrap();
            }
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("workload finished in time")
            .unwrap();
    }
    overlaps.load(Ordering::SeqCst)
}

/// Negative control: the same checker catches overlaps when the "lock" does not
/// exclude (every worker locks its own key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusion_checker_catches_a_lock_that_does_not_exclude() {
    let c = Client::memory();
    let overlaps = exclusion_workload(12, 5, |worker| {
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
