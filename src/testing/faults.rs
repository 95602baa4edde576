//! Fault cases for any store, driven by hooks the store's harness provides.
//!
//! A [`Harness`] opens clients on the store — a direct one, and optionally one whose
//! path to the store the harness can break — and offers what it can do to the store:
//! restart it, cut the faulty client off, lose the next reply after the write ran. Every
//! hook is optional: a case whose hook is absent skips itself, saying so on stderr
//! (`SKIPPED <case>: …`), and returns [`Outcome::Skipped`], so that a test can insist a
//! case ran.
//!
//! Each case checks a promise that must hold whatever the store: **no silent loss** (a
//! holder learns it lost its lease no later than a rival can take it), **no write
//! re-sent blindly**, **no lock left behind** by an attempt whose answer was lost.
//!
//! ```ignore
//! struct MyHarness { /* servers, a proxy */ }
//! impl leasehold::testing::faults::Harness for MyHarness { /* client(), hooks */ }
//!
//! #[tokio::test(flavor = "multi_thread")]
//! async fn a_cut_off_holder_learns_it_lost_first() {
//!     let outcome = leasehold::testing::faults::a_cut_off_holder_learns_it_lost_before_a_rival_wins(
//!         &MyHarness::start(),
//!     )
//!     .await;
//!     assert_eq!(outcome, leasehold::testing::faults::Outcome::Ran);
//! }
//! ```

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::{Client, Error, NoRetry};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

/// What a store's test harness offers the fault cases. Only [`client`](Harness::client)
/// is required; each hook returns `false` when this harness cannot do it (the default).
pub trait Harness: Send + Sync {
    /// A new client with a direct path to the store (its own connection).
    fn client(&self) -> impl Future<Output = Client> + Send;

    /// A new client whose path to the store the hooks [`cut_off`](Harness::cut_off) and
    /// [`lose_next_reply`](Harness::lose_next_reply) break (through a proxy, say); `None`
    /// (the default) when the harness has none.
    fn faulty_client(&self) -> impl Future<Output = Option<Client>> + Send {
        async { None }
    }

    /// Restart the store, keeping what it persists, and return once it answers again.
    fn restart(&self) -> impl Future<Output = bool> + Send {
        async { false }
    }

    /// Cut the faulty clients off the store for `duration` (requests and answers
    /// vanish; the store is untouched), then let them through again. Returns at once.
    fn cut_off(&self, duration: Duration) -> impl Future<Output = bool> + Send {
        let _ = duration;
        async { false }
    }

    /// The next request of a faulty client reaches the store and runs, and its answer
    /// is lost (the connection breaks, or the answer never comes).
    fn lose_next_reply(&self) -> impl Future<Output = bool> + Send {
        async { false }
    }
}

/// Whether a case ran or skipped itself for want of a hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The case ran, and every assertion held.
    Ran,
    /// The harness lacks a hook the case needs (named on stderr).
    Skipped,
}

fn skipped(case: &str, why: &str) -> Outcome {
    eprintln!("SKIPPED {case}: the harness has no {why}");
    Outcome::Skipped
}

/// A unique key per case run.
fn key(case: &str) -> String {
    format!("faults-{case}-{}", &crate::random_value()[..8])
}

/// Until `until` resolves or `limit` passes: whether it resolved.
async fn within<F: Future>(limit: Duration, until: F) -> Option<F::Output> {
    tokio::time::timeout(limit, until).await.ok()
}

/// **No silent loss across a restart.** A holder renewing its lock goes through a
/// restart of the store. Either the store kept the lock (the holder still holds it and a
/// rival is refused) or it did not, and then the holder is told (`lost()`) no later than
/// a rival can take the key. Needs [`Harness::restart`].
pub async fn a_restart_never_loses_a_lock_silently<H: Harness>(h: &H) -> Outcome {
    const CASE: &str = "a_restart_never_loses_a_lock_silently";
    let key = key("restart");
    let holder = h.client().await;
    let lock = holder
        .try_lock(&key, "holder", 10 * SEC)
        .await
        .expect("the holder acquires a free key");
    let _renewal = lock
        .auto_refresh(SEC, 10 * SEC, 500 * MS, 1000)
        .expect("renewal starts");
    if !h.restart().await {
        return skipped(CASE, "restart hook");
    }
    // Two renewals after the store is back.
    tokio::time::sleep(2 * SEC + 200 * MS).await;
    let rival = h.client().await;
    let deadline = Instant::now() + 15 * SEC;
    loop {
        match rival.try_lock(&key, "rival", 10 * SEC).await {
            Ok(_won) => {
                assert!(
                    lock.valid_for().is_none(),
                    "{CASE}: a rival took the key while the holder believed it held it \
                     (silent loss)"
                );
                return Outcome::Ran;
            }
            Err(e) if e.is_not_obtained() => {
                if lock.valid_for().is_some() && lock.ttl().await.ok().flatten().is_some() {
                    // The store kept the lock: the holder holds it, renewed.
                    return Outcome::Ran;
                }
            }
            Err(e) => assert!(
                e.is_transient(),
                "{CASE}: the store answered a rival with a lasting failure after the restart: {e}"
            ),
        }
        assert!(
            Instant::now() < deadline,
            "{CASE}: neither held nor free 15 s after the restart"
        );
        tokio::time::sleep(100 * MS).await;
    }
}

/// **A cut-off holder learns it lost before a rival wins.** The holder's path to the
/// store is cut for longer than its lease. A rival takes the key once the lease ran out
/// on the store; by then the holder's own validity has ended ([`crate::Lock::valid_for`]
/// is `None`), since it measures the lease from before each renewal was sent. Needs
/// [`Harness::faulty_client`] and [`Harness::cut_off`].
pub async fn a_cut_off_holder_learns_it_lost_before_a_rival_wins<H: Harness>(h: &H) -> Outcome {
    const CASE: &str = "a_cut_off_holder_learns_it_lost_before_a_rival_wins";
    let Some(holder) = h.faulty_client().await else {
        return skipped(CASE, "faulty client");
    };
    let key = key("cut");
    let expiration = 2 * SEC;
    let lock = holder
        .try_lock(&key, "holder", expiration)
        .await
        .expect("the holder acquires a free key");
    let _renewal = lock
        .auto_refresh(500 * MS, expiration, 300 * MS, 1000)
        .expect("renewal starts");
    let cut = 3 * expiration;
    let healed = Instant::now() + cut;
    if !h.cut_off(cut).await {
        return skipped(CASE, "cut_off hook");
    }
    let rival = h.client().await;
    let won = within(
        4 * expiration + 5 * SEC,
        rival.lock(
            &key,
            "rival",
            10 * SEC,
            SEC,
            crate::FixedInterval::new(20 * MS, u32::MAX),
        ),
    )
    .await
    .expect("a rival wins within the lease and the store's expiry")
    .expect("a rival wins once the cut-off holder's lease ran out");
    assert!(
        lock.valid_for().is_none(),
        "{CASE}: the rival won (token {}) while the cut-off holder still believed it held \
         the key",
        won.fencing_token()
    );
    assert!(
        won.fencing_token() > lock.fencing_token(),
        "{CASE}: tokens must rise"
    );
    // Leave the harness as found: the next case's faulty client gets through.
    tokio::time::sleep_until(healed + 100 * MS).await;
    Outcome::Ran
}

/// **An unlock whose answer was lost is not sent again.** The unlock runs on the store
/// and its answer is lost: the caller gets `Ok`, a timeout or
/// [`Error::Indeterminate`] — never [`Error::NotHeld`] (what a second run would answer) —
/// and the key is free. Needs [`Harness::faulty_client`] and
/// [`Harness::lose_next_reply`].
pub async fn a_lost_unlock_reply_is_not_sent_again<H: Harness>(h: &H) -> Outcome {
    const CASE: &str = "a_lost_unlock_reply_is_not_sent_again";
    let Some(holder) = h.faulty_client().await else {
        return skipped(CASE, "faulty client");
    };
    let key = key("unlock");
    let lock = holder
        .try_lock(&key, "holder", 30 * SEC)
        .await
        .expect("the holder acquires a free key");
    if !h.lose_next_reply().await {
        return skipped(CASE, "lose_next_reply hook");
    }
    match lock.unlock().await {
        Ok(()) => {}
        Err(e) => assert!(
            e.is_timeout() || e.is_indeterminate(),
            "{CASE}: an unlock that ran answered {e:?}: it was sent again (or failed to run)"
        ),
    }
    let rival = h.client().await;
    let _won = within(
        10 * SEC,
        rival.lock(
            &key,
            "rival",
            10 * SEC,
            SEC,
            crate::FixedInterval::new(50 * MS, 100),
        ),
    )
    .await
    .expect("bounded")
    .unwrap_or_else(|e| panic!("{CASE}: the unlock that ran left the key held: {e}"));
    Outcome::Ran
}

/// **An acquire whose answer was lost leaves no lock behind.** The attempt lands on the
/// store and its answer is lost; the caller gets a failure, and the client's abort
/// deletes what the attempt created, so a rival can take the key at once (not after the
/// expiration). Needs [`Harness::faulty_client`] and [`Harness::lose_next_reply`].
pub async fn a_lost_acquire_reply_leaves_no_lock_behind<H: Harness>(h: &H) -> Outcome {
    const CASE: &str = "a_lost_acquire_reply_leaves_no_lock_behind";
    let Some(holder) = h.faulty_client().await else {
        return skipped(CASE, "faulty client");
    };
    let key = key("acquire");
    // Connected, scripts loaded: the lost answer is the acquire's.
    drop(
        holder
            .try_lock(&key, "warm-up", SEC)
            .await
            .expect("warm-up")
            .unlock()
            .await,
    );
    if !h.lose_next_reply().await {
        return skipped(CASE, "lose_next_reply hook");
    }
    let expiration = 60 * SEC;
    match holder.lock(&key, "holder", expiration, SEC, NoRetry).await {
        // An idempotent acquire sent again after the loss, and answered: held.
        Ok(lock) => {
            assert_eq!(lock.value(), "holder");
            return Outcome::Ran;
        }
        Err(e) => assert!(
            e.is_transient() || matches!(e, Error::Indeterminate(_)),
            "{CASE}: {e:?}"
        ),
    }
    let rival = h.client().await;
    let started = Instant::now();
    let _won = within(
        10 * SEC,
        rival.lock(
            &key,
            "rival",
            10 * SEC,
            SEC,
            crate::FixedInterval::new(50 * MS, 200),
        ),
    )
    .await
    .expect("bounded")
    .unwrap_or_else(|e| panic!("{CASE}: the attempt whose answer was lost left the key held: {e}"));
    assert!(
        started.elapsed() < expiration / 2,
        "{CASE}: the key was freed only by its expiration, not by the abort"
    );
    Outcome::Ran
}

/// Every fault case, in turn; what each did.
pub async fn run_all<H: Harness>(h: &H) -> Vec<(&'static str, Outcome)> {
    vec![
        (
            "a_restart_never_loses_a_lock_silently",
            a_restart_never_loses_a_lock_silently(h).await,
        ),
        (
            "a_cut_off_holder_learns_it_lost_before_a_rival_wins",
            a_cut_off_holder_learns_it_lost_before_a_rival_wins(h).await,
        ),
        (
            "a_lost_unlock_reply_is_not_sent_again",
            a_lost_unlock_reply_is_not_sent_again(h).await,
        ),
        (
            "a_lost_acquire_reply_leaves_no_lock_behind",
            a_lost_acquire_reply_leaves_no_lock_behind(h).await,
        ),
    ]
}
