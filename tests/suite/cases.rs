//! The conformance cases through the async API: every line of the contract's
//! "Semantics users rely on", written once and run on every store by `conformance!`.
//! Each case gets a store of its own (or its own key prefix on a shared one). The cases
//! take any [`Locker`], so Redlock (`tests/redlock.rs`) runs them too — all but the
//! fencing-token and inspection cases, which take a `Client`. Where the contract lets a
//! store differ (etcd's whole seconds), a case checks what the store documents, through
//! [`Traits`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use leasehold::{Client, Error, FixedInterval, NoRetry, NonFixedInterval, RetryStrategy};

use super::Traits;
use super::locker::{Held, Locker};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

pub async fn acquire_then_contention_is_not_obtained<L: Locker>(c: &L) {
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
    let _held_until_expiry = c.try_lock("other", "b", 10 * SEC).await.unwrap();
}

pub async fn same_value_reacquires_rearms_and_keeps_its_token<L: Locker>(c: &L) {
    let t = Traits::of(c);
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

pub async fn fencing_tokens_rise_across_acquisitions_and_survive_expiry(c: &Client) {
    let t = Traits::of(c);
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
    tokio::time::sleep(t.outlive(expiring.expiration(), 120 * MS)).await;
    let next = c.try_lock("k", "after-expiry", 10 * SEC).await.unwrap();
    assert!(next.fencing_token() > last);
    let fresh = c.try_lock("another-key", "v", 10 * SEC).await.unwrap();
    // Another key's first token: above every earlier one too (one counter for the
    // store, etcd's revision, or Redis' clock in microseconds when a key has no state).
    assert!(fresh.fencing_token() > next.fencing_token());
}

pub async fn refresh_rearms_the_original_expiration<L: Locker>(c: &L) {
    // 1 s; 3 s where `ttl()` counts whole seconds, so that it can tell a re-arm.
    let t = Traits::of(c);
    let expiration = t.distinct(SEC);
    let lock = c.try_lock("k", "a", expiration).await.unwrap();
    tokio::time::sleep(expiration * 2 / 5).await;
    assert!(lock.ttl().await.unwrap().unwrap() <= expiration * 3 / 5);
    lock.refresh().await.unwrap();
    let ttl = lock.ttl().await.unwrap().unwrap();
    assert!(
        t.above(ttl, expiration * 9 / 10) && ttl <= expiration,
        "{ttl:?}"
    );
    assert!(lock.valid_for().unwrap() > expiration * 9 / 10);
}

pub async fn refresh_after_loss_is_not_held_and_leaves_the_new_owner_alone<L: Locker>(c: &L) {
    let t = Traits::of(c);
    let lock = c.try_lock("k", "a", 50 * MS).await.unwrap();
    tokio::time::sleep(t.outlive(lock.expiration(), 100 * MS)).await;
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

pub async fn ttl_reports_remaining_time_and_none_when_not_held<L: Locker>(c: &L) {
    let t = Traits::of(c);
    let lock = c.try_lock("k", "a", 2 * SEC).await.unwrap();
    let ttl = lock.ttl().await.unwrap().unwrap();
    assert!(t.above(ttl, SEC) && ttl <= 2 * SEC, "{ttl:?}");
    let short = c.try_lock("s", "a", 30 * MS).await.unwrap();
    tokio::time::sleep(t.outlive(short.expiration(), 80 * MS)).await;
    assert_eq!(short.ttl().await.unwrap(), None);
}

pub async fn unlock_releases_and_a_stale_unlock_is_not_held<L: Locker>(c: &L) {
    let t = Traits::of(c);
    let lock = c.try_lock("k", "a", 10 * SEC).await.unwrap();
    lock.unlock().await.unwrap();
    let next = c.try_lock("k", "b", 10 * SEC).await.unwrap();
    // A stale holder (same key, other value) cannot release the new owner.
    let stale = c.try_lock("k2", "x", 30 * MS).await.unwrap();
    tokio::time::sleep(t.outlive(stale.expiration(), 80 * MS)).await;
    let owner2 = c.try_lock("k2", "y", 10 * SEC).await.unwrap();
    assert!(stale.unlock().await.unwrap_err().is_not_held());
    assert!(owner2.ttl().await.unwrap().is_some());
    next.unlock().await.unwrap();
}

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
        .unwrap();
    assert!(started.elapsed() >= 140 * MS);
    assert_eq!(lock.value(), "b");
    releaser.await.unwrap();
}

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
    assert_eq!(asked.load(Ordering::SeqCst), 3);
    assert!(elapsed >= 200 * MS, "{elapsed:?}");
    assert!(
        elapsed < 290 * MS,
        "slept after the last attempt? {elapsed:?}"
    );
}

pub async fn iterators_and_custom_strategies_plug_in<L: Locker>(c: &L) {
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
    // Nothing was written: the key is free.
    c.try_lock("k", "probe", SEC).await.unwrap();
}

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
    assert_eq!(overlaps, 0);
}

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
        assert!(!shown.contains(secret), "{shown}");
    }
    if lock.fencing_token().is_some() {
        assert!(format!("{lock:?}").contains("fencing_token"));
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

pub async fn inspection_lists_locks_by_prefix_and_force_release_frees_them(c: &Client) {
    let a = c.try_lock("jobs:a", "secret-a", 30 * SEC).await.unwrap();
    let b = c
        .try_lock("jobs:{t}:b", "secret-b", 30 * SEC)
        .await
        .unwrap();
    let _other = c.try_lock("reports:x", "v", 30 * SEC).await.unwrap();
    // Companion keys (counters, claims) and fenced resources are not locks.
    a.fenced_set("jobs:row", "x").await.unwrap();
    let listed = c.list("jobs:").await.unwrap();
    let keys: Vec<&str> = listed.iter().map(|l| l.key()).collect();
    assert_eq!(keys, ["jobs:a", "jobs:{t}:b"]);
    assert_eq!(listed[0].fencing_token(), a.fencing_token());
    assert_eq!(listed[1].fencing_token(), b.fencing_token());
    let ttl = listed[0].ttl().unwrap();
    assert!(
        Traits::of(c).above(ttl, 29 * SEC) && ttl <= 30 * SEC,
        "{ttl:?}"
    );
    assert_ne!(listed[0].holder(), listed[1].holder());
    for shown in [format!("{listed:?}"), listed[0].holder().to_owned()] {
        assert!(!shown.contains("secret"), "{shown}");
    }
    let info = c.inspect("jobs:a").await.unwrap().expect("held");
    assert_eq!(
        (info.key(), info.fencing_token(), info.holder()),
        (
            listed[0].key(),
            listed[0].fencing_token(),
            listed[0].holder()
        )
    );
    assert_eq!(c.inspect("jobs:none").await.unwrap(), None);
    assert_eq!(c.inspect("jobs:row").await.unwrap(), None, "not a lock");
    assert!(c.force_release("jobs:a").await.unwrap());
    assert!(!c.force_release("jobs:a").await.unwrap());
    assert!(a.refresh().await.unwrap_err().is_not_held());
    let next = c.try_lock("jobs:a", "next", 30 * SEC).await.unwrap();
    assert!(next.fencing_token() > info.fencing_token());
}

/// Operators see who holds a lock and since when: the client's holder label (by default
/// its host name and process id) and the acquisition's time, kept by a same-value re-lock,
/// new with the next acquisition. Never the value.
pub async fn holder_label_and_locked_at_show_who_holds_since_when(c: &Client) {
    let before = std::time::SystemTime::now() - SEC;
    let lock = c.try_lock("labelled", "secret-v", 30 * SEC).await.unwrap();
    let info = c.inspect("labelled").await.unwrap().expect("held");
    let label = info.holder_label().expect("a default label");
    assert!(
        label.ends_with(&format!(":{}", std::process::id())) && label.len() > 2,
        "{label:?}"
    );
    assert!(!label.contains("secret"), "{label:?}");
    let at = info.locked_at().expect("locked_at recorded with the label");
    let after = std::time::SystemTime::now() + SEC;
    assert!(at > before && at < after, "{at:?}");
    // A same-value re-lock re-arms the acquisition: same time, same label.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let _again = c.try_lock("labelled", "secret-v", 30 * SEC).await.unwrap();
    let rearmed = c.inspect("labelled").await.unwrap().expect("held");
    assert_eq!(rearmed.locked_at(), Some(at));
    assert_eq!(rearmed.holder_label(), Some(label));
    let listed = c.list("label").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].holder_label(), listed[0].locked_at()),
        (Some(label), Some(at))
    );
    lock.unlock().await.unwrap();
    assert_eq!(c.inspect("labelled").await.unwrap(), None);
}

/// Runs `workers` tasks that each take the lock `rounds` times through `acquire`, hold it
/// for a moment, and unlock. Returns how many times a task entered the critical section
/// while another was inside it.
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
            .expect("workload finished in time")
            .unwrap();
    }
    overlaps.load(Ordering::SeqCst)
}

pub async fn lock_requests_take_named_options_and_keep_a_renewed_lock(c: &Client) {
    let first = c
        .lock_request("k")
        .expiration(10 * SEC)
        .attempt_timeout(2 * SEC)
        .acquire()
        .await
        .unwrap();
    assert_eq!((first.expiration(), first.timeout()), (10 * SEC, 2 * SEC));
    // A fresh random value per request: a second one contends.
    assert_eq!(first.value().len(), 32);
    let err = c.lock_request("k").acquire().await.unwrap_err();
    assert!(err.is_not_obtained(), "{err:?}");
    assert!(!format!("{:?}", c.lock_request("k").value("secret-v")).contains("secret-v"));
    // The retry strategy waits for the holder.
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move {
            c.lock_request("k")
                .value("second")
                .retry(FixedInterval::new(20 * MS, 200))
                .acquire()
                .await
        })
    };
    tokio::time::sleep(100 * MS).await;
    first.unlock().await.unwrap();
    let second = waiter.await.unwrap().unwrap();
    assert_eq!(second.value(), "second");
    second.unlock().await.unwrap();

    // Renewed: held well past its expiration, until unlocked.
    let (lock, mut renewal) = c
        .lock_request("renewed")
        .expiration(600 * MS)
        .acquire_renewed()
        .await
        .unwrap();
    tokio::time::sleep(1500 * MS).await;
    assert!(renewal.try_error().is_none());
    assert!(
        lock.ttl().await.unwrap().is_some(),
        "renewed past its expiration"
    );
    assert!(lock.valid_for().is_some());
    lock.unlock().await.unwrap();
    assert_eq!(renewal.error().await.map(|e| e.to_string()), None);
    let _held_until_expiry = c.try_lock("renewed", "next", SEC).await.unwrap();

    let err = c
        .lock_request("tiny")
        .expiration(2 * MS)
        .acquire_renewed()
        .await
        .unwrap_err();
    assert!(err.is_invalid_argument(), "{err:?}");
}

pub async fn refresh_for_sets_the_expiration_given(c: &Client) {
    let t = Traits::of(c);
    let lock = c.try_lock("k", "a", 2 * SEC).await.unwrap();
    lock.refresh_for(20 * SEC).await.unwrap();
    let ttl = lock.ttl().await.unwrap().unwrap();
    assert!(ttl > 15 * SEC, "extended: {ttl:?}");
    assert!(lock.valid_for().unwrap() > 15 * SEC);
    // Shorter than what is left: the key and the lease follow (bsm's refresh to a new,
    // shorter TTL), so a crashed holder does not block everyone for the longer time.
    let short = t.distinct(SEC);
    lock.refresh_for(short).await.unwrap();
    let ttl = lock.ttl().await.unwrap().unwrap();
    assert!(ttl <= short, "shortened: {ttl:?}");
    assert!(lock.valid_for().unwrap() <= short);
    assert!(!lock.is_lost());
    // Owner-checked: after a takeover it is NotHeld and leaves the new owner alone.
    assert!(c.force_release("k").await.unwrap());
    let rival = c.try_lock("k", "b", 10 * SEC).await.unwrap();
    let err = lock.refresh_for(20 * SEC).await.unwrap_err();
    assert!(err.is_not_held(), "{err:?}");
    assert!(lock.is_lost());
    let left = rival.ttl().await.unwrap().unwrap();
    assert!(
        left <= 10 * SEC,
        "the rival's key was not re-armed: {left:?}"
    );
    let err = lock.refresh_for(Duration::ZERO).await.unwrap_err();
    assert!(err.is_invalid_argument(), "{err:?}");
}

pub async fn run_exclusive_renews_releases_and_reports_a_loss(c: &Client) {
    // Runs longer than its expiration: renewal keeps a rival out; released at the end.
    let token = c
        .run_exclusive("job", 600 * MS, NoRetry, |token| async move {
            for _ in 0..3 {
                tokio::time::sleep(500 * MS).await;
                let err = c.try_lock("job", "rival", SEC).await.unwrap_err();
                assert!(err.is_not_obtained(), "{err:?}");
            }
            token
        })
        .await
        .unwrap();
    assert!(token > 0);
    let rival = c.try_lock("job", "rival", SEC).await.unwrap();
    assert!(
        rival.fencing_token() > token,
        "released, then a newer token"
    );

    // Held elsewhere: skipped, the job never runs.
    let ran = &AtomicUsize::new(0);
    let err = c
        .run_exclusive("job", 600 * MS, NoRetry, |_| async move {
            ran.fetch_add(1, Ordering::SeqCst);
        })
        .await
        .unwrap_err();
    assert!(err.is_not_obtained(), "{err:?}");
    let err = c
        .run_exclusive("job", 2 * MS, NoRetry, |_| async move {
            ran.fetch_add(1, Ordering::SeqCst);
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    rival.unlock().await.unwrap();

    // Taken away while running: the job is aborted and the loss returned; the new
    // holder is left alone.
    let err = c
        .run_exclusive("job", 600 * MS, NoRetry, |_| async move {
            assert!(c.force_release("job").await.unwrap());
            let _rival = c.try_lock("job", "rival", 10 * SEC).await.unwrap();
            tokio::time::sleep(10 * SEC).await;
            ran.fetch_add(1, Ordering::SeqCst);
        })
        .await
        .unwrap_err();
    assert!(err.is_not_held(), "renewal found the key gone: {err:?}");
    assert_eq!(ran.load(Ordering::SeqCst), 0, "aborted before it finished");
    assert!(
        c.inspect("job").await.unwrap().is_some(),
        "rival still holds"
    );
}

pub async fn force_release_if_deletes_only_the_acquisition_named(c: &Client) {
    let first = c.try_lock("k", "a", 30 * SEC).await.unwrap();
    let shown = c.inspect("k").await.unwrap().expect("held").fencing_token();
    assert_eq!(shown, first.fencing_token());
    first.unlock().await.unwrap();
    // Taken again since it was shown, even under the same value: not deleted.
    let again = c.try_lock("k", "a", 30 * SEC).await.unwrap();
    assert!(again.fencing_token() > shown);
    assert!(!c.force_release_if("k", shown).await.unwrap());
    assert!(
        again.ttl().await.unwrap().is_some(),
        "the newer lock is kept"
    );
    // The acquisition named: deleted, once.
    assert!(
        c.force_release_if("k", again.fencing_token())
            .await
            .unwrap()
    );
    assert!(c.inspect("k").await.unwrap().is_none());
    assert!(
        !c.force_release_if("k", again.fencing_token())
            .await
            .unwrap()
    );
    let err = c.force_release_if("", 1).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
}
