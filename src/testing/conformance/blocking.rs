//! The blocking conformance cases: the contract's lines through the blocking facade
//! ([`crate::blocking::Client`]), plus what only the facade has (renewal while the
//! caller's thread sleeps, OS-thread contention). Each takes a [`BlockingStore`] of its
//! own; call them outside any async runtime. A failing assertion names the promise it
//! found broken.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::blocking::Client;
use crate::{Error, FixedInterval, NoRetry, NonFixedInterval};

use super::{BlockingStore, Traits};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

/// Promise: a key is held by one value at a time; `lock()` waits its strategy's delays
/// before `NotObtained`; another key is independent.
pub fn acquire_then_contention_is_not_obtained(s: &BlockingStore) {
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
    // Three delays of 20 ms, each kept to within the timer's millisecond (either way).
    assert!(started.elapsed() >= 57 * MS, "{:?}", started.elapsed());
    // Another key is independent.
    let _held_until_expiry = c.try_lock("other", "b", 10 * SEC).unwrap();
}

/// Promise: the value is the holder's identity: a same-value re-lock re-arms the new
/// expiration and keeps the fencing token.
pub fn same_value_reacquires_rearms_and_keeps_its_token(s: &BlockingStore) {
    let c = &s.client;
    let t = Traits::of(c.granularity());
    let first = c.try_lock("k", "a", SEC).unwrap();
    thread::sleep(200 * MS);
    let before = first.ttl().unwrap().unwrap();
    assert!(before <= 800 * MS, "{before:?}");
    let again = c.try_lock("k", "a", 10 * SEC).unwrap();
    assert_eq!(
        again.fencing_token(),
        first.fencing_token(),
        "a same-value re-lock changed the fencing token"
    );
    let after = first.ttl().unwrap().unwrap();
    assert!(
        t.above(after, 9 * SEC),
        "re-armed to the new expiration: {after:?}"
    );
}

/// Promise: fencing tokens rise across acquisitions, unlocks and expiries, and across keys.
pub fn fencing_tokens_rise_across_acquisitions_and_survive_expiry(s: &BlockingStore) {
    let c = &s.client;
    let t = Traits::of(c.granularity());
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
    assert!(expiring.fencing_token() > last, "tokens do not rise");
    last = expiring.fencing_token();
    thread::sleep(t.outlive(expiring.expiration(), 120 * MS));
    let next = c.try_lock("k", "after-expiry", 10 * SEC).unwrap();
    assert!(
        next.fencing_token() > last,
        "fencing token {} after {last}: the counter did not survive the lock's expiry",
        next.fencing_token()
    );
    // Tokens are promised per store key: another key may start its own count.
}

/// Promise: `refresh()` re-arms the original expiration and the local lease; the lock is
/// not lost while valid.
pub fn refresh_rearms_the_original_expiration(s: &BlockingStore) {
    let c = &s.client;
    // 1 s; 3 s where `ttl()` counts whole seconds, so that it can tell a re-arm.
    let t = Traits::of(c.granularity());
    let expiration = t.distinct(SEC);
    let lock = c.try_lock("k", "a", expiration).unwrap();
    thread::sleep(expiration * 3 / 10);
    assert!(lock.ttl().unwrap().unwrap() <= expiration * 7 / 10);
    lock.refresh().unwrap();
    let ttl = lock.ttl().unwrap().unwrap();
    assert!(
        t.above(ttl, expiration * 9 / 10) && ttl <= expiration,
        "{ttl:?}"
    );
    assert!(lock.valid_for().unwrap() > expiration * 9 / 10);
    assert!(!lock.wait_lost_timeout(20 * MS), "not lost while valid");
}

/// Promise: owner checks. After an expiry and a takeover, `refresh()` and `unlock()` are
/// `NotHeld`, `ttl()` is `None`, the loss is signalled, and the new owner's key is
/// untouched.
pub fn refresh_ttl_unlock_after_loss_are_not_held_and_leave_the_new_owner_alone(s: &BlockingStore) {
    let c = &s.client;
    let t = Traits::of(c.granularity());
    let lock = c.try_lock("k", "a", 50 * MS).unwrap();
    thread::sleep(t.outlive(lock.expiration(), 100 * MS));
    let owner = c.try_lock("k", "b", 10 * SEC).unwrap();
    let owner_ttl = owner.ttl().unwrap().unwrap();
    let err = lock.refresh().unwrap_err();
    assert!(
        err.is_not_held(),
        "refresh by a former holder was not NotHeld: owner check broken: {err:?}"
    );
    assert_eq!(
        lock.valid_for(),
        None,
        "a confirmed loss did not end validity"
    );
    assert!(lock.wait_lost_timeout(SEC), "lost fires");
    lock.wait_lost(); // returns at once
    assert_eq!(lock.ttl().unwrap(), None);
    let err = lock.unlock().unwrap_err();
    assert!(
        err.is_not_held(),
        "unlock by a non-owner was not NotHeld: owner check broken: {err:?}"
    );
    let still = owner.ttl().unwrap().unwrap();
    assert!(
        still <= owner_ttl && t.above(still, 9 * SEC),
        "a former holder changed the new owner's key: owner check broken: {still:?}"
    );
    owner
        .refresh()
        .expect("unlock by a non-owner deleted the lock: owner check broken");
    owner.unlock().unwrap();
    let _held_until_expiry = c.try_lock("k", "c", SEC).expect("released");
}

/// Promise: bad input to `lock`, `try_lock`, `auto_refresh` and `open` is an
/// `InvalidArgument` naming the argument, before any I/O.
pub fn bad_input_is_rejected_before_any_io(s: &BlockingStore) {
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
    // Nothing was written: the key is free.
    let lock = c.try_lock("k", "probe", SEC).unwrap();
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
///
/// Promise: renewal runs on the facade's runtime thread while the caller's thread sleeps.
pub fn renewal_continues_while_the_caller_sleeps(s: &BlockingStore) {
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
    // 300 ms as asked (1 s where leases count whole seconds; there `ttl()` is rounded
    // down, to 0 s within the last second).
    assert!(ttl <= lock.expiration(), "{ttl:?}");
    if !Traits::of(c.granularity()).whole_seconds {
        assert!(ttl > Duration::ZERO && ttl <= 300 * MS, "{ttl:?}");
    }
    let other = s.second_client();
    let err = other.try_lock("k", "b", SEC).unwrap_err();
    assert!(err.is_not_obtained(), "{err:?}");
    lock.unlock().unwrap();
    let _held_until_expiry = other.try_lock("k", "b", SEC).expect("free after unlock");
}

/// Promise: renewal reports nothing while it succeeds, and `NotHeld` once, promptly, after
/// a takeover, leaving the new owner alone.
pub fn error_timeout_is_none_while_renewal_runs_and_not_held_after_a_takeover(s: &BlockingStore) {
    let c = &s.client;
    let t = Traits::of(c.granularity());
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
    thread::sleep(t.outlive(stale.expiration(), 100 * MS));
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
    assert!(
        t.above(thief.ttl().unwrap().unwrap(), 9 * SEC),
        "a failed renewal changed the new owner's key: owner check broken"
    );
}

/// Promise: `unlock()` ends renewal cleanly; a stopped or dropped renewal lets the key
/// expire.
pub fn unlock_and_stop_end_renewal_cleanly(s: &BlockingStore) {
    let c = &s.client;
    let t = Traits::of(c.granularity());
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
    thread::sleep(t.outlive(lock.expiration(), 400 * MS));
    assert_eq!(
        lock.ttl().unwrap(),
        None,
        "stopped renewal lets the key expire"
    );

    let lock = c.try_lock("k", "c", 300 * MS).unwrap();
    drop(lock.auto_refresh(100 * MS, 300 * MS, 100 * MS, 3).unwrap());
    thread::sleep(t.outlive(lock.expiration(), 400 * MS));
    assert_eq!(
        lock.ttl().unwrap(),
        None,
        "dropped renewal lets the key expire"
    );
}

/// Promise: mutual exclusion between OS threads sharing one client.
pub fn many_threads_never_hold_one_key_at_once(s: &BlockingStore) {
    let c = &s.client;
    let overlaps = exclusion_workload(c, 8, 5, |_| "shared".to_owned());
    assert_eq!(
        overlaps, 0,
        "two holders of one key at once: mutual exclusion broken"
    );
}

/// Promise: a fenced resource refuses a holder whose token was superseded, and the client-
/// level form is an anonymous holder.
pub fn fenced_resources_refuse_a_superseded_holder(s: &BlockingStore) {
    let c = &s.client;
    let old = c.try_lock("k", "old", 50 * MS).unwrap();
    old.fenced_set("row", "from-old").unwrap();
    // The old lease runs out.
    std::thread::sleep(Traits::of(c.granularity()).outlive(old.expiration(), 100 * MS));
    let new = c.try_lock("k", "new", 10 * SEC).unwrap();
    assert_eq!(new.fenced_get("row").unwrap().as_deref(), Some("from-old"));
    let err = old.fenced_set("row", "stale").unwrap_err();
    assert!(
        err.is_fenced(),
        "a superseded holder wrote a fenced resource: fencing broken: {err:?}"
    );
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

/// Promise: the lock value never shows in `Debug` output.
pub fn debug_output_never_shows_the_lock_value(s: &BlockingStore) {
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
        assert!(
            !shown.contains(secret),
            "Debug output shows the lock value: {shown}"
        );
    }
    assert!(format!("{lock:?}").contains("fencing_token"));
}

/// Runs `workers` OS threads that each take the lock on `key(worker)` `rounds` times,
/// hold it for a moment, and unlock. Returns how many times a thread entered the
/// critical section while another was inside it.
pub fn exclusion_workload(
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

/// Promise: lock requests take named options and contend; `acquire_renewed` keeps the lock
/// past its expiration until unlocked.
pub fn lock_requests_take_named_options_and_keep_a_renewed_lock(s: &BlockingStore) {
    let c = &s.client;
    let lock = c
        .lock_request("k")
        .expiration(10 * SEC)
        .attempt_timeout(2 * SEC)
        .retry(NoRetry)
        .acquire()
        .unwrap();
    assert_eq!(lock.expiration(), 10 * SEC);
    let err = c.lock_request("k").acquire().unwrap_err();
    assert!(err.is_not_obtained(), "{err:?}");
    lock.unlock().unwrap();

    let (lock, mut renewal) = c
        .lock_request("renewed")
        .value("mine")
        .expiration(600 * MS)
        .acquire_renewed()
        .unwrap();
    thread::sleep(1500 * MS);
    assert!(renewal.try_error().is_none());
    assert!(lock.ttl().unwrap().is_some(), "renewed past its expiration");
    lock.unlock().unwrap();
    assert!(renewal.error().is_none());
}

/// Promise: `refresh_for` extends the key; `inspect` and `list` show the lock (never its
/// value); `force_release` deletes once and the holder finds its lock lost.
pub fn refresh_for_inspection_and_force_release(s: &BlockingStore) {
    let c = &s.client;
    let lock = c.try_lock("k", "a", 2 * SEC).unwrap();
    assert_eq!(lock.timeout(), c.default_timeout());
    lock.refresh_for(20 * SEC).unwrap();
    assert!(lock.ttl().unwrap().unwrap() > 15 * SEC);
    let info = c.inspect("k").unwrap().expect("held");
    assert_eq!(
        (info.key(), info.fencing_token()),
        ("k", lock.fencing_token())
    );
    assert_ne!(info.holder(), "a");
    let keys: Vec<String> = c
        .list("")
        .unwrap()
        .iter()
        .map(|i| i.key().to_owned())
        .collect();
    assert_eq!(keys, ["k"]);
    assert!(c.force_release("k").unwrap());
    assert!(!c.force_release("k").unwrap());
    assert!(c.inspect("k").unwrap().is_none());
    assert!(lock.refresh().unwrap_err().is_not_held());
    assert!(lock.is_lost());
}

/// Promise: `run_exclusive` renews while the job runs, releases at the end, skips a held
/// key, and reports a loss while running, leaving the new holder alone.
pub fn run_exclusive_renews_releases_and_reports_a_loss(s: &BlockingStore) {
    let c = &s.client;
    // Runs longer than its expiration: renewal keeps a rival out; released at the end.
    let token = c
        .run_exclusive("job", 600 * MS, NoRetry, |lock| {
            for _ in 0..3 {
                thread::sleep(500 * MS);
                let err = c.try_lock("job", "rival", SEC).unwrap_err();
                assert!(err.is_not_obtained(), "{err:?}");
                assert!(!lock.is_lost());
            }
            lock.fencing_token()
        })
        .unwrap();
    assert!(token > 0);
    let rival = c.try_lock("job", "rival", SEC).unwrap();
    assert!(
        rival.fencing_token() > token,
        "released, then a newer token"
    );

    // Held elsewhere: skipped, the job never runs; bad input before any I/O.
    let mut ran = 0;
    let err = c
        .run_exclusive("job", 600 * MS, NoRetry, |_| ran += 1)
        .unwrap_err();
    assert!(err.is_not_obtained(), "{err:?}");
    let err = c
        .run_exclusive("job", 2 * MS, NoRetry, |_| ran += 1)
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert_eq!(ran, 0);
    rival.unlock().unwrap();

    // Taken away while running: the job sees it, and its output gives way to the loss;
    // the new holder is left alone.
    let err = c
        .run_exclusive("job", 600 * MS, NoRetry, |lock| {
            assert!(c.force_release("job").unwrap());
            let _rival = c.try_lock("job", "rival", 10 * SEC).unwrap();
            let deadline = Instant::now() + 5 * SEC;
            while !lock.is_lost() {
                assert!(Instant::now() < deadline, "loss not seen within 5 s");
                thread::sleep(10 * MS);
            }
            "finished"
        })
        .unwrap_err();
    assert!(err.is_not_held(), "renewal found the key gone: {err:?}");
    assert!(c.inspect("job").unwrap().is_some(), "rival still holds");
}

/// Promise: `force_release_if(key, token)` deletes only the acquisition of that token,
/// once.
pub fn force_release_if_deletes_only_the_acquisition_named(s: &BlockingStore) {
    let c = &s.client;
    let first = c.try_lock("k", "a", 30 * SEC).unwrap();
    let shown = c.inspect("k").unwrap().expect("held").fencing_token();
    first.unlock().unwrap();
    let again = c.try_lock("k", "a", 30 * SEC).unwrap();
    assert!(again.fencing_token() > shown);
    assert!(!c.force_release_if("k", shown).unwrap());
    assert!(
        again.ttl().unwrap().is_some(),
        "force_release_if deleted a newer acquisition than the one named"
    );
    assert!(c.force_release_if("k", again.fencing_token()).unwrap());
    assert!(c.inspect("k").unwrap().is_none());
    assert!(!c.force_release_if("k", again.fencing_token()).unwrap());
    let err = c.force_release_if("", 1).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
}

/// The value is the holder's identity (contract part 3), as in redsync and bsm: another
/// client presenting the value re-arms the lock with its token, sets a shorter expiration,
/// and unlocks it for everyone — the key is free at once, and the first handle then finds
/// it not held.
pub fn the_value_is_the_identity_across_clients(s: &BlockingStore) {
    let (a, b) = (&s.client, s.second_client());
    let t = Traits::of(a.granularity());
    let first = a.try_lock("k", "shared-v", 60 * SEC).unwrap();
    let second = b.try_lock("k", "shared-v", 60 * SEC).unwrap();
    assert_eq!(second.fencing_token(), first.fencing_token());
    // A refresh to a shorter expiration through the other client is not ignored.
    second.refresh_for(5 * SEC).unwrap();
    let left = first.ttl().unwrap().expect("held");
    assert!(left <= 5 * SEC && t.above(left, 3 * SEC), "{left:?}");
    // Unlocked through the other client: free at once, for a rival too.
    second.unlock().unwrap();
    let rival = b.try_lock("k", "rival", 10 * SEC).unwrap();
    assert!(rival.fencing_token() > first.fencing_token());
    assert!(first.refresh().unwrap_err().is_not_held());
    rival.unlock().unwrap();
    // Lock, drop the handle, lock again with the same value, unlock: the key is free.
    drop(a.try_lock("k", "v2", 30 * SEC).unwrap());
    let again = a.try_lock("k", "v2", 30 * SEC).unwrap();
    again.unlock().unwrap();
    let _free = b.try_lock("k", "after", 10 * SEC).unwrap();
}
