//! The async cases of what only a [`Client`] has: fencing tokens, inspection, holder
//! labels, lock requests, `refresh_for`, `run_exclusive`, `force_release_if`. Published
//! through [`cases`](super::cases).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::{Client, Error, FixedInterval, NoRetry};

use super::Traits;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

/// Promise: fencing tokens rise. Every acquisition of a key gets a token above every
/// earlier one, after an unlock and after an expiry too, and another key's first token
/// is above every earlier one (one counter for the store).
pub async fn fencing_tokens_rise_across_acquisitions_and_survive_expiry(c: &Client) {
    let t = Traits::of(c.granularity());
    let mut last = 0;
    for i in 0..5 {
        let lock = c.try_lock("k", &format!("v{i}"), 10 * SEC).await.unwrap();
        assert!(
            lock.fencing_token() > last,
            "fencing token {} after {last}: tokens do not rise across acquisitions",
            lock.fencing_token()
        );
        last = lock.fencing_token();
        lock.unlock().await.unwrap();
    }
    // Let one expire instead of unlocking it: the counter outlives the lock key.
    let expiring = c.try_lock("k", "short", 50 * MS).await.unwrap();
    assert!(expiring.fencing_token() > last, "tokens do not rise");
    last = expiring.fencing_token();
    tokio::time::sleep(t.outlive(expiring.expiration(), 120 * MS)).await;
    let next = c.try_lock("k", "after-expiry", 10 * SEC).await.unwrap();
    assert!(
        next.fencing_token() > last,
        "fencing token {} after {last}: the counter did not survive the lock's expiry",
        next.fencing_token()
    );
    // Tokens are promised per store key: another key may start its own count.
}

/// Promise: `list(prefix)` shows the locks under a prefix (not companion keys nor fenced
/// resources), with tokens and TTLs and never a value; `inspect` agrees; `force_release`
/// deletes once and the holder then finds its lock not held; the next token is higher.
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
    assert_eq!(
        keys,
        ["jobs:a", "jobs:{t}:b"],
        "list(prefix) does not show exactly the locks under the prefix, in key order"
    );
    assert_eq!(listed[0].fencing_token(), a.fencing_token());
    assert_eq!(listed[1].fencing_token(), b.fencing_token());
    let ttl = listed[0].ttl().unwrap();
    assert!(
        Traits::of(c.granularity()).above(ttl, 29 * SEC) && ttl <= 30 * SEC,
        "list() shows a TTL of {ttl:?} for a fresh 30 s lock"
    );
    assert_ne!(listed[0].holder(), listed[1].holder());
    for shown in [format!("{listed:?}"), listed[0].holder().to_owned()] {
        assert!(
            !shown.contains("secret"),
            "inspection shows the lock value: {shown}"
        );
    }
    let info = c.inspect("jobs:a").await.unwrap().expect("held");
    assert_eq!(
        (info.key(), info.fencing_token(), info.holder()),
        (
            listed[0].key(),
            listed[0].fencing_token(),
            listed[0].holder()
        ),
        "inspect() and list() disagree"
    );
    assert_eq!(c.inspect("jobs:none").await.unwrap(), None);
    assert_eq!(
        c.inspect("jobs:row").await.unwrap(),
        None,
        "a fenced resource is shown as a lock"
    );
    assert!(c.force_release("jobs:a").await.unwrap(), "force_release");
    assert!(
        !c.force_release("jobs:a").await.unwrap(),
        "force_release of a free key reported a deletion"
    );
    let err = a.refresh().await.unwrap_err();
    assert!(
        err.is_not_held(),
        "a force-released lock could still be refreshed: {err:?}"
    );
    let next = c.try_lock("jobs:a", "next", 30 * SEC).await.unwrap();
    assert!(
        next.fencing_token() > info.fencing_token(),
        "fencing tokens do not rise after a force_release"
    );
}

/// Promise: operators see who holds a lock and since when: the client's holder label (by
/// default its host name and process id) and the acquisition's time, kept by a
/// same-value re-lock, gone with the lock. Never the value.
pub async fn holder_label_and_locked_at_show_who_holds_since_when(c: &Client) {
    let before = std::time::SystemTime::now() - SEC;
    let lock = c.try_lock("labelled", "secret-v", 30 * SEC).await.unwrap();
    let info = c.inspect("labelled").await.unwrap().expect("held");
    let label = info
        .holder_label()
        .expect("inspect() shows no holder label for a client with the default one");
    assert!(
        label.ends_with(&format!(":{}", std::process::id())) && label.len() > 2,
        "the default holder label is not HOST:PID: {label:?}"
    );
    assert!(
        !label.contains("secret"),
        "the holder label shows the value: {label:?}"
    );
    let at = info
        .locked_at()
        .expect("locked_at not recorded with the label");
    let after = std::time::SystemTime::now() + SEC;
    assert!(at > before && at < after, "locked_at is not now: {at:?}");
    // A same-value re-lock re-arms the acquisition: same time, same label.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let _again = c.try_lock("labelled", "secret-v", 30 * SEC).await.unwrap();
    let rearmed = c.inspect("labelled").await.unwrap().expect("held");
    assert_eq!(
        rearmed.locked_at(),
        Some(at),
        "a same-value re-lock changed locked_at"
    );
    assert_eq!(rearmed.holder_label(), Some(label));
    let listed = c.list("label").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].holder_label(), listed[0].locked_at()),
        (Some(label), Some(at)),
        "list() and inspect() disagree on label and time"
    );
    lock.unlock().await.unwrap();
    assert_eq!(
        c.inspect("labelled").await.unwrap(),
        None,
        "inspect() shows an unlocked lock"
    );
}

/// Promise: a lock request takes named options, a fresh random value per request
/// (32 characters, so two requests contend), never shows a given value, waits by its
/// retry strategy, and `acquire_renewed` keeps the lock past its expiration until
/// unlocked.
pub async fn lock_requests_take_named_options_and_keep_a_renewed_lock(c: &Client) {
    let first = c
        .lock_request("k")
        .expiration(10 * SEC)
        .attempt_timeout(2 * SEC)
        .acquire()
        .await
        .unwrap();
    assert_eq!(
        (first.expiration(), first.timeout()),
        (10 * SEC, 2 * SEC),
        "a lock request did not keep its named options"
    );
    assert_eq!(
        first.value().len(),
        32,
        "a lock request's default value is not a fresh random one"
    );
    let err = c.lock_request("k").acquire().await.unwrap_err();
    assert!(
        err.is_not_obtained(),
        "two lock requests did not contend: {err:?}"
    );
    assert!(
        !format!("{:?}", c.lock_request("k").value("secret-v")).contains("secret-v"),
        "a lock request's Debug output shows the value"
    );
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
    let second = waiter
        .await
        .unwrap()
        .expect("a lock request did not wait by its retry strategy");
    assert_eq!(second.value(), "second");
    second.unlock().await.unwrap();

    let (lock, mut renewal) = c
        .lock_request("renewed")
        .expiration(600 * MS)
        .acquire_renewed()
        .await
        .unwrap();
    tokio::time::sleep(1500 * MS).await;
    assert!(renewal.try_error().is_none(), "renewal failed");
    assert!(
        lock.ttl().await.unwrap().is_some(),
        "acquire_renewed did not keep the lock past its expiration"
    );
    assert!(lock.valid_for().is_some());
    lock.unlock().await.unwrap();
    assert_eq!(
        renewal.error().await.map(|e| e.to_string()),
        None,
        "an unlock did not end renewal cleanly"
    );
    let _held_until_expiry = c.try_lock("renewed", "next", SEC).await.unwrap();

    let err = c
        .lock_request("tiny")
        .expiration(2 * MS)
        .acquire_renewed()
        .await
        .unwrap_err();
    assert!(
        err.is_invalid_argument(),
        "a renewed lock of 2 ms was not refused: {err:?}"
    );
}

/// Promise: `refresh_for(d)` sets the key and the lease to `d`, longer or shorter than
/// what is left, and is owner-checked: after a takeover it is `NotHeld` and leaves the
/// new owner alone.
pub async fn refresh_for_sets_the_expiration_given(c: &Client) {
    let t = Traits::of(c.granularity());
    let lock = c.try_lock("k", "a", 2 * SEC).await.unwrap();
    lock.refresh_for(20 * SEC).await.unwrap();
    let ttl = lock.ttl().await.unwrap().unwrap();
    assert!(
        ttl > 15 * SEC,
        "refresh_for did not extend the key: {ttl:?}"
    );
    assert!(lock.valid_for().unwrap() > 15 * SEC);
    // Shorter than what is left: the key and the lease follow, so a crashed holder does
    // not block everyone for the longer time.
    let short = t.distinct(SEC);
    lock.refresh_for(short).await.unwrap();
    let ttl = lock.ttl().await.unwrap().unwrap();
    assert!(ttl <= short, "refresh_for did not shorten the key: {ttl:?}");
    assert!(lock.valid_for().unwrap() <= short);
    assert!(!lock.is_lost());
    assert!(c.force_release("k").await.unwrap());
    let rival = c.try_lock("k", "b", 10 * SEC).await.unwrap();
    let err = lock.refresh_for(20 * SEC).await.unwrap_err();
    assert!(
        err.is_not_held(),
        "refresh_for by a former holder was not NotHeld: owner check broken: {err:?}"
    );
    assert!(lock.is_lost());
    let left = rival.ttl().await.unwrap().unwrap();
    assert!(
        left <= 10 * SEC,
        "refresh_for by a former holder re-armed the new owner's key: owner check broken: \
         {left:?}"
    );
    let err = lock.refresh_for(Duration::ZERO).await.unwrap_err();
    assert!(err.is_invalid_argument(), "{err:?}");
}

/// Promise: `run_exclusive` renews while the job runs, releases at the end, skips a job
/// whose key is held, refuses bad input before running anything, and aborts the job and
/// returns `NotHeld` when the lock is taken away, leaving the new holder alone.
pub async fn run_exclusive_renews_releases_and_reports_a_loss(c: &Client) {
    let token = c
        .run_exclusive("job", 600 * MS, NoRetry, |token| async move {
            for _ in 0..3 {
                tokio::time::sleep(500 * MS).await;
                let err = c.try_lock("job", "rival", SEC).await.unwrap_err();
                assert!(
                    err.is_not_obtained(),
                    "a rival got the key of a running exclusive job: renewal broken: {err:?}"
                );
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

    let ran = &AtomicUsize::new(0);
    let err = c
        .run_exclusive("job", 600 * MS, NoRetry, |_| async move {
            ran.fetch_add(1, Ordering::SeqCst);
        })
        .await
        .unwrap_err();
    assert!(
        err.is_not_obtained(),
        "run_exclusive on a held key: {err:?}"
    );
    let err = c
        .run_exclusive("job", 2 * MS, NoRetry, |_| async move {
            ran.fetch_add(1, Ordering::SeqCst);
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "a job ran without holding its lock"
    );
    rival.unlock().await.unwrap();

    let err = c
        .run_exclusive("job", 600 * MS, NoRetry, |_| async move {
            assert!(c.force_release("job").await.unwrap());
            let _rival = c.try_lock("job", "rival", 10 * SEC).await.unwrap();
            tokio::time::sleep(10 * SEC).await;
            ran.fetch_add(1, Ordering::SeqCst);
        })
        .await
        .unwrap_err();
    assert!(
        err.is_not_held(),
        "renewal did not report the key gone: {err:?}"
    );
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "a job that lost its lock was not aborted"
    );
    assert!(
        c.inspect("job").await.unwrap().is_some(),
        "the end of a lost job deleted the new holder's lock: owner check broken"
    );
}

/// Promise: `force_release_if(key, token)` deletes only the acquisition of that token
/// (not a newer one, even under the same value), once.
pub async fn force_release_if_deletes_only_the_acquisition_named(c: &Client) {
    let first = c.try_lock("k", "a", 30 * SEC).await.unwrap();
    let shown = c.inspect("k").await.unwrap().expect("held").fencing_token();
    assert_eq!(shown, first.fencing_token());
    first.unlock().await.unwrap();
    let again = c.try_lock("k", "a", 30 * SEC).await.unwrap();
    assert!(again.fencing_token() > shown);
    assert!(
        !c.force_release_if("k", shown).await.unwrap(),
        "force_release_if reported deleting a newer acquisition"
    );
    assert!(
        again.ttl().await.unwrap().is_some(),
        "force_release_if deleted a newer acquisition than the one named"
    );
    assert!(
        c.force_release_if("k", again.fencing_token())
            .await
            .unwrap(),
        "force_release_if did not delete the acquisition named"
    );
    assert!(c.inspect("k").await.unwrap().is_none());
    assert!(
        !c.force_release_if("k", again.fencing_token())
            .await
            .unwrap(),
        "force_release_if deleted twice"
    );
    let err = c.force_release_if("", 1).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
}
