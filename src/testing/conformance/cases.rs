//! The async conformance cases: every line of the contract's "Semantics users rely on",
//! each a function that takes a client on a store of its own (a fresh store, or a key
//! prefix of its own on a shared one: every case uses the keys `k`, `k2`, `s`, `other`,
//! `shared`, … and expects them free).
//!
//! The cases that take any [`Locker`] run on Redlock too; those of fencing tokens,
//! inspection and the client's own helpers take a [`Client`](crate::Client). Where the contract lets a
//! store differ (whole-second leases), a case checks what the store documents, through
//! [`Traits`]. A failing assertion names the promise it found broken.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::{Error, FixedInterval, NoRetry, NonFixedInterval, RetryStrategy};

pub use super::client_cases::{
    fencing_tokens_rise_across_acquisitions_and_survive_expiry,
    force_release_if_deletes_only_the_acquisition_named,
    holder_label_and_locked_at_show_who_holds_since_when,
    inspection_lists_locks_by_prefix_and_force_release_frees_them,
    lock_requests_take_named_options_and_keep_a_renewed_lock,
    refresh_for_sets_the_expiration_given, run_exclusive_renews_releases_and_reports_a_loss,
};
use super::{Held, Locker, Traits};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

/// Promise: a key is held by one value at a time. A second value's `try_lock` and `lock`
/// (retries exhausted) fail with `NotObtained`; another key is independent.
pub async fn acquire_then_contention_is_not_obtained<L: Locker>(c: &L) {
    let lock = c.try_lock("k", "a", 10 * SEC).await.unwrap();
    assert_eq!(
        (lock.key(), lock.value()),
        ("k", "a"),
        "the lock reports the key and value it was taken with"
    );
    let err = c.try_lock("k", "b", 10 * SEC).await.unwrap_err();
    assert!(
        err.is_not_obtained(),
        "a held key was not refused to another value with NotObtained: {err:?}"
    );
    let err = c
        .lock("k", "b", 10 * SEC, SEC, FixedInterval::new(5 * MS, 3))
        .await
        .unwrap_err();
    assert!(
        err.is_not_obtained(),
        "lock() on a held key did not end in NotObtained once its retries ran out: {err:?}"
    );
    let other = c.try_lock("other", "b", 10 * SEC).await;
    assert!(other.is_ok(), "another key is not independent: {other:?}");
}

/// Promise: the value is the holder's identity. Locking a held key again under its value
/// succeeds, re-arms the expiration to the new one, and keeps the fencing token.
pub async fn same_value_reacquires_rearms_and_keeps_its_token<L: Locker>(c: &L) {
    let t = Traits::of(c.granularity());
    let first = c.try_lock("k", "a", SEC).await.unwrap();
    tokio::time::sleep(300 * MS).await;
    let before = first.ttl().await.unwrap().unwrap();
    assert!(
        before <= 700 * MS,
        "ttl() did not count down: {before:?} left of 1 s after 300 ms"
    );
    let again = c
        .try_lock("k", "a", 10 * SEC)
        .await
        .expect("a same-value re-lock was refused: the value is not the holder's identity");
    assert_eq!(
        again.fencing_token(),
        first.fencing_token(),
        "a same-value re-lock changed the fencing token"
    );
    let after = first.ttl().await.unwrap().unwrap();
    assert!(
        t.above(after, 9 * SEC),
        "a same-value re-lock did not re-arm the key to the new expiration: {after:?} left"
    );
}

/// Promise: `refresh()` re-arms the lock's original expiration (not more), and the local
/// lease (`valid_for`) follows.
pub async fn refresh_rearms_the_original_expiration<L: Locker>(c: &L) {
    // 1 s; 3 s where `ttl()` counts whole seconds, so that it can tell a re-arm.
    let t = Traits::of(c.granularity());
    let expiration = t.distinct(SEC);
    let lock = c.try_lock("k", "a", expiration).await.unwrap();
    tokio::time::sleep(expiration * 2 / 5).await;
    let left = lock.ttl().await.unwrap().unwrap();
    assert!(
        left <= expiration * 3 / 5,
        "ttl() did not count down: {left:?}"
    );
    lock.refresh().await.unwrap();
    let ttl = lock.ttl().await.unwrap().unwrap();
    assert!(
        t.above(ttl, expiration * 9 / 10) && ttl <= expiration,
        "refresh() did not re-arm the original expiration {expiration:?}: {ttl:?} left"
    );
    assert!(
        lock.valid_for().unwrap() > expiration * 9 / 10,
        "refresh() did not extend the local lease (valid_for)"
    );
}

/// Promise: refresh is owner-checked. After the key expired and another holder took it,
/// `refresh()` and `unlock()` fail with `NotHeld`, `lost()` fires, and the new owner's
/// key is left untouched.
pub async fn refresh_after_loss_is_not_held_and_leaves_the_new_owner_alone<L: Locker>(c: &L) {
    let t = Traits::of(c.granularity());
    let lock = c.try_lock("k", "a", 50 * MS).await.unwrap();
    tokio::time::sleep(t.outlive(lock.expiration(), 100 * MS)).await;
    let owner = c
        .try_lock("k", "b", 10 * SEC)
        .await
        .expect("an expired lock still kept its key: expiry broken");
    let owner_ttl = owner.ttl().await.unwrap().unwrap();
    let err = lock
        .refresh()
        .await
        .expect_err("refresh by a former holder succeeded: owner check broken");
    assert!(
        err.is_not_held(),
        "refresh by a former holder was not NotHeld: owner check broken: {err:?}"
    );
    assert_eq!(
        lock.valid_for(),
        None,
        "a confirmed loss did not end validity"
    );
    tokio::time::timeout(SEC, lock.lost())
        .await
        .expect("lost() did not fire after a confirmed loss");
    let still = owner.ttl().await.unwrap().unwrap();
    assert!(
        still <= owner_ttl && t.above(still, 9 * SEC),
        "a refresh by a former holder changed the new owner's key: {still:?} left"
    );
    let err = lock
        .unlock()
        .await
        .expect_err("unlock by a former holder succeeded: owner check broken");
    assert!(
        err.is_not_held(),
        "unlock by a former holder was not NotHeld: owner check broken: {err:?}"
    );
    owner
        .refresh()
        .await
        .expect("unlock by a former holder deleted the new owner's lock: owner check broken");
}

/// Promise: `ttl()` reports the time left while held, and `None` once the key is gone.
pub async fn ttl_reports_remaining_time_and_none_when_not_held<L: Locker>(c: &L) {
    let t = Traits::of(c.granularity());
    let lock = c.try_lock("k", "a", 2 * SEC).await.unwrap();
    let ttl = lock.ttl().await.unwrap().unwrap();
    assert!(
        t.above(ttl, SEC) && ttl <= 2 * SEC,
        "ttl() of a fresh 2 s lock is {ttl:?}"
    );
    let short = c.try_lock("s", "a", 30 * MS).await.unwrap();
    tokio::time::sleep(t.outlive(short.expiration(), 80 * MS)).await;
    assert_eq!(
        short.ttl().await.unwrap(),
        None,
        "ttl() of an expired lock is not None: expiry broken"
    );
}

/// Promise: `unlock()` frees the key at once; an unlock by a non-owner (a stale holder
/// whose key expired and was taken) is `NotHeld` and deletes nothing.
pub async fn unlock_releases_and_a_stale_unlock_is_not_held<L: Locker>(c: &L) {
    let t = Traits::of(c.granularity());
    let lock = c.try_lock("k", "a", 10 * SEC).await.unwrap();
    lock.unlock().await.unwrap();
    let next = c
        .try_lock("k", "b", 10 * SEC)
        .await
        .expect("unlock() did not free the key");
    let stale = c.try_lock("k2", "x", 30 * MS).await.unwrap();
    tokio::time::sleep(t.outlive(stale.expiration(), 80 * MS)).await;
    let owner2 = c.try_lock("k2", "y", 10 * SEC).await.unwrap();
    let err = stale
        .unlock()
        .await
        .expect_err("unlock by a non-owner succeeded: owner check broken");
    assert!(
        err.is_not_held(),
        "unlock by a non-owner was not NotHeld: owner check broken: {err:?}"
    );
    assert!(
        owner2.ttl().await.unwrap().is_some(),
        "unlock by a non-owner deleted the lock: owner check broken"
    );
    next.unlock().await.unwrap();
}

/// Promise: `lock()` retries by its strategy until the holder releases, then gets the key.
pub async fn retry_waits_until_the_holder_releases<L: Locker>(c: &L) {
    let holder = c.try_lock("k", "a", 10 * SEC).await.unwrap();
    let releaser = tokio::spawn(async move {
        tokio::time::sleep(150 * MS).await;
        holder.unlock().await.unwrap();
    });
    let started = std::time::Instant::now();
    let lock = c
        .lock("k", "b", 10 * SEC, SEC, FixedInterval::new(20 * MS, 100))
        .await
        .expect("lock() did not get the key its holder released within its retries");
    assert!(
        started.elapsed() >= 140 * MS,
        "lock() got a held key before its holder released it: exclusion broken"
    );
    assert_eq!(lock.value(), "b");
    releaser.await.unwrap();
}

/// Promise: the retry strategy is asked once per attempt, and `lock()` returns
/// `NotObtained` as soon as it says `None`: no sleep after the last attempt.
pub async fn contention_exhausts_the_strategy_with_no_sleep_after_the_last_attempt<L: Locker>(
    c: &L,
) {
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
    assert_eq!(
        asked.load(Ordering::SeqCst),
        3,
        "the retry strategy was not asked once per attempt"
    );
    assert!(
        // Two delays of 100 ms, each kept to within the timer's millisecond (either way).
        elapsed >= 198 * MS,
        "lock() did not wait the strategy's delays: {elapsed:?}"
    );
    assert!(
        elapsed < 290 * MS,
        "lock() slept after the last attempt: {elapsed:?}"
    );
}

/// Promise: any `Iterator<Item = Duration>`, a boxed strategy, and the built-in
/// strategies plug in as retry strategies.
pub async fn iterators_and_custom_strategies_plug_in<L: Locker>(c: &L) {
    let _holder = c.try_lock("k", "a", 30 * SEC).await.unwrap();
    let delays = vec![MS, 2 * MS, 3 * MS];
    let err = c
        .lock("k", "b", SEC, SEC, delays.into_iter())
        .await
        .unwrap_err();
    assert!(err.is_not_obtained(), "an iterator strategy: {err:?}");
    let boxed: Box<dyn RetryStrategy> = Box::new(NonFixedInterval::new(2 * MS, 3));
    let err = c.lock("k", "b", SEC, SEC, boxed).await.unwrap_err();
    assert!(err.is_not_obtained(), "a boxed strategy: {err:?}");
    let err = c
        .lock("k", "b", SEC, SEC, std::iter::repeat_n(MS, 2))
        .await
        .unwrap_err();
    assert!(err.is_not_obtained(), "a repeat iterator: {err:?}");
}

/// Promise: bad input (empty key or value, an expiration or timeout under 1 ms or
/// unbounded) is an `InvalidArgument` naming the argument, before any I/O.
pub async fn bad_input_is_rejected_before_any_io<L: Locker>(c: &L) {
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
            Err(Error::InvalidArgument(msg)) => assert!(
                msg.starts_with(name),
                "the InvalidArgument does not name `{name}` first: {msg}"
            ),
            other => panic!("bad `{name}` was not refused with InvalidArgument: {other:?}"),
        }
    }
    let err = c.try_lock("", "v", SEC).await.unwrap_err();
    assert!(
        err.is_invalid_argument(),
        "try_lock of an empty key: {err:?}"
    );
    c.try_lock("k", "probe", SEC)
        .await
        .expect("a refused request wrote the key: validation after I/O");
}

/// Promise: mutual exclusion. Twelve tasks sharing one client take one key five times
/// each; no task ever enters while another is inside.
pub async fn many_tasks_never_hold_one_key_at_once<L: Locker>(c: &L) {
    let overlaps = exclusion_workload(12, 5, |worker| {
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
    assert_eq!(
        overlaps, 0,
        "two holders of one key at once: mutual exclusion broken"
    );
}

/// Promise: the lock value (a secret that can release the lock) never shows in `Debug`
/// output: of the lock, its renewal, the client, or an error.
pub async fn debug_output_never_shows_the_lock_value<L: Locker>(c: &L) {
    let secret = "s3cr3t-lock-value";
    let lock = c.try_lock("k", secret, SEC).await.unwrap();
    let renewal = lock.auto_refresh(100 * MS, SEC, 100 * MS, 3).unwrap();
    for shown in [
        format!("{lock:?}"),
        format!("{renewal:?}"),
        format!("{c:?}"),
        format!("{:?}", c.try_lock("k", "other", SEC).await.unwrap_err()),
    ] {
        assert!(
            !shown.contains(secret),
            "Debug output shows the lock value: {shown}"
        );
    }
    if lock.fencing_token().is_some() {
        assert!(
            format!("{lock:?}").contains("fencing_token"),
            "a lock's Debug output does not show its fencing token"
        );
    }
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

/// Runs `workers` tasks that each take a lock `rounds` times through `acquire(worker)`,
/// hold it for 2 ms, and unlock. Returns how many times a task entered the critical
/// section while another was inside it (0 for a lock that excludes; give it a lock on a
/// key per worker for a negative control). Panics if the workload takes over 30 s.
pub async fn exclusion_workload<F, Fut, H>(workers: usize, rounds: usize, acquire: F) -> usize
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = H> + Send + 'static,
    H: Held,
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
            .expect("the exclusion workload did not finish within 30 s")
            .unwrap();
    }
    overlaps.load(Ordering::SeqCst)
}
