//! Background renewal of a lock, with failures reported to the holder.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::{Instant, MissedTickBehavior};

use crate::args::check_duration;
use crate::lease::{Lease, Renewal};
use crate::lock::Lock;
use crate::store::Store;
use crate::telemetry;
use crate::{Error, Result};
use tracing::Instrument;

/// How many renewals in a row may fail before the library's own renewal of a lease
/// ([`LockRequest::acquire_renewed`](crate::LockRequest::acquire_renewed),
/// `run_exclusive`, `run_while_leader`, the scheduler) gives up: 3, spread over what is
/// left of the lease (see [`Lock::auto_refresh`]). [`Lock::lost`] is the time-based
/// signal.
#[deprecated(note = "use `AutoRefresh::DEFAULT_MAX_RETRY`")]
pub const DEFAULT_MAX_RETRY: u32 = AutoRefresh::DEFAULT_MAX_RETRY;

static NEXT_RENEWAL_ID: AtomicU64 = AtomicU64::new(1);

/// The first pause after a failed renewal, doubled after each further failure (up to the
/// renewal interval), unless spreading the attempts left over the lease asks for more.
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Renewals per expiration when the library renews a lease for you
/// ([`Client::run_exclusive`](crate::Client::run_exclusive), `run_while_leader`,
/// [`LockRequest::acquire_renewed`](crate::LockRequest::acquire_renewed), the scheduler,
/// and their blocking twins): every third of it, so that one renewal can fail and the
/// next still lands in time.
const RENEWALS_PER_EXPIRATION: u32 = 3;

/// How the library renews a lease for you: one policy, in one place. Every third of the
/// expiration, each renewal bounded by the caller's timeout (at most the interval), and
/// [`AutoRefresh::DEFAULT_MAX_RETRY`] failed renewals, spread over what is
/// left of the lease, before the failure is reported.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub(crate) interval: Duration,
    pub(crate) expiration: Duration,
    pub(crate) timeout: Duration,
    pub(crate) max_retry: u32,
}

impl Policy {
    /// The policy for a lease of `expiration` whose round trips are bounded by
    /// `timeout`; checked before any I/O.
    pub(crate) fn for_lease(expiration: Duration, timeout: Duration) -> Result<Policy> {
        let expiration = check_duration("expiration", expiration)?;
        let interval = expiration / RENEWALS_PER_EXPIRATION;
        if interval < Duration::from_millis(1) {
            return Err(Error::invalid(format!(
                "expiration: must be at least 3 ms to renew it every third of it (got \
                 {expiration:?})"
            )));
        }
        Ok(Policy {
            interval,
            expiration,
            timeout: timeout.min(interval),
            max_retry: AutoRefresh::DEFAULT_MAX_RETRY,
        })
    }
}

/// The pause before the next renewal attempt after `failures` (≥ 1) failed in a row, with
/// `left` attempts left (≥ 1) and the lease valid for `valid_for`: attempts spread over
/// what is left of the lease — each an equal share of the time in which an attempt can
/// still start and answer before the lease ends (`valid_for - timeout`), or an
/// exponential backoff from [`FIRST_RETRY_PAUSE`] (at most `interval`) if that is
/// longer, never past that time — times `jitter` (½ to 1). `None`: the lease has run
/// out, and cannot be saved.
fn pause_after_failure(
    failures: u32,
    left: u32,
    valid_for: Duration,
    timeout: Duration,
    interval: Duration,
    jitter: f64,
) -> Option<Duration> {
    if valid_for.is_zero() {
        return None;
    }
    let budget = valid_for.saturating_sub(timeout);
    let share = budget / left.max(1);
    let backoff = FIRST_RETRY_PAUSE
        .saturating_mul(1 << (failures.clamp(1, 16) - 1))
        .min(interval);
    Some(
        share
            .max(backoff)
            .min(budget)
            .mul_f64(jitter.clamp(0.5, 1.0)),
    )
}

/// Renews a lock in the background until stopped, and reports why it ended if it
/// ended on a failure. Returned by [`Lock::auto_refresh`].
///
/// Dropping it stops renewal (it does not unlock): the key then expires by itself
/// unless refreshed or released otherwise. So does dropping the last handle of the lock
/// it renews — bind both for as long as the work lasts.
#[must_use = "dropping an AutoRefresh stops the renewal at once: bind it (`let renewal = …`) \
              for as long as the lock must be kept"]
pub struct AutoRefresh {
    /// Weak: renewal never keeps a lock alive that nobody can unlock.
    lease: Weak<Lease>,
    key: Arc<str>,
    id: u64,
    /// The one failure that ends renewal, with its cause for a `MaxRetryExceeded`;
    /// `None` once taken or closed.
    failure: Option<oneshot::Receiver<Failure>>,
    /// The cause of a `MaxRetryExceeded` taken from `failure`.
    cause: Option<Error>,
}

/// What ends a renewal: the error reported, and the last failed renewal's error when
/// that is [`Error::MaxRetryExceeded`].
type Failure = (Error, Option<Error>);

impl fmt::Debug for AutoRefresh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AutoRefresh")
            .field("key", &self.key)
            .field("running", &self.is_running())
            .finish()
    }
}

impl Lock {
    /// Renew this lock in the background: every `interval`, re-arm `expiration`.
    ///
    /// Each renewal is one owner-checked round trip bounded by `timeout`. A renewal that
    /// timed out or hit a dropped connection is tried again, and `max_retry` such failures
    /// in a row end renewal with [`Error::MaxRetryExceeded`]
    /// ([`AutoRefresh::cause`] keeps the last failure's error). [`Error::NotHeld`] (the
    /// key is gone or owned by another value) or any other error ends it with that error.
    /// The ending failure is sent once on the returned handle's channel
    /// ([`AutoRefresh::try_error`], [`AutoRefresh::error`]); a clean stop
    /// ([`Lock::unlock`], [`AutoRefresh::stop`], dropping the handle, dropping the last
    /// handle of the lock) closes it.
    ///
    /// The attempts after a failure are spread over what is left of the lease, so that a
    /// server restart or a failover shorter than the lease's slack costs nothing: each
    /// waits an equal share of the time in which an attempt can still answer before the
    /// lease ends ([`Lock::valid_for`] minus `timeout`, over the attempts left), or an
    /// exponential backoff from 50 ms (at most `interval`) when that is longer, with
    /// jitter (½ to 1 times the pause). With `max_retry` 3 and a renewal every third of a
    /// 10 s lease, the two retries after a failure land about 1.6–3.2 s and 3.2–6.4 s
    /// later. Renewal also ends with [`Error::MaxRetryExceeded`] when the lease ran out
    /// before the attempts were made: it cannot be saved then. [`Lock::valid_for`] and
    /// [`Lock::lost`] remain the time-based signal, whatever renewal is doing. Pass
    /// `u32::MAX` to keep retrying (with backoff) for as long as the lease lasts.
    ///
    /// Ticks missed because a renewal was slow are not made up in a burst: the next tick
    /// is scheduled one `interval` after the late one. Renewal never re-creates a lost
    /// key, and every successful renewal extends [`Lock::valid_for`].
    ///
    /// Starting a new auto-refresh of the same lock stops the previous one (its channel
    /// closes).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] unless 1 ms ≤ `interval` < `expiration` ≤
    /// [`MAX_DURATION`](crate::MAX_DURATION), 1 ms ≤ `timeout` ≤ `MAX_DURATION` and
    /// `max_retry` ≥ 1.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (the renewal task is spawned on the current runtime).
    pub fn auto_refresh(
        &self,
        interval: Duration,
        expiration: Duration,
        timeout: Duration,
        max_retry: u32,
    ) -> Result<AutoRefresh> {
        let interval = check_duration("interval", interval)?;
        let expiration = check_duration("expiration", expiration)?;
        let timeout = check_duration("timeout", timeout)?;
        if interval >= expiration {
            return Err(Error::invalid(format!(
                "interval: must be shorter than expiration (got {interval:?} >= {expiration:?})"
            )));
        }
        if max_retry == 0 {
            return Err(Error::invalid("max_retry: must be at least 1"));
        }
        let expiration = self.lease.backend().grant(expiration)?;
        let (failure_tx, failure_rx) = oneshot::channel();
        let id = NEXT_RENEWAL_ID.fetch_add(1, Ordering::Relaxed);
        let renewal = Renewing {
            lease: Arc::downgrade(&self.lease),
            interval,
            expiration,
            timeout,
            max_retry,
        };
        let span = telemetry::renewal_span(
            self.lease.backend().kind(),
            self.key(),
            self.fencing_token(),
            interval,
        );
        let task = tokio::spawn(renewal.run(failure_tx).instrument(span));
        self.lease.set_renewal(Renewal { id, task });
        Ok(AutoRefresh {
            lease: Arc::downgrade(&self.lease),
            key: self.key().into(),
            id,
            failure: Some(failure_rx),
            cause: None,
        })
    }
}

impl Lock {
    /// Renew this lock under `policy` (the library's own renewal of a lease it holds
    /// for you).
    pub(crate) fn renew(&self, policy: &Policy) -> Result<AutoRefresh> {
        self.auto_refresh(
            policy.interval,
            policy.expiration,
            policy.timeout,
            policy.max_retry,
        )
    }
}

/// What a renewal task does.
struct Renewing {
    lease: Weak<Lease>,
    interval: Duration,
    expiration: Duration,
    timeout: Duration,
    max_retry: u32,
}

impl Renewing {
    async fn run(self, failure: oneshot::Sender<Failure>) {
        let mut ticks = tokio::time::interval_at(Instant::now() + self.interval, self.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut jitter = crate::retry::rng::LazyRng::from_os();
        loop {
            ticks.tick().await;
            let mut failures = 0;
            loop {
                // Held only for this renewal: the last handle of the lock may go meanwhile
                // (then the lease's drop stops this task).
                let Some(lease) = self.lease.upgrade() else {
                    return;
                };
                // Boxed: the in-flight round trip is allocated only while it runs,
                // instead of inline in every idle renewal task.
                let renewed = Box::pin(lease.refresh(self.expiration, self.timeout)).await;
                let store = lease.backend().kind();
                match renewed {
                    Ok(()) => {
                        telemetry::renewed(store, None, false);
                        break;
                    }
                    // Timed out or hit a dropped connection: tried again after a pause,
                    // the attempts left spread over what is left of the lease.
                    Err(e) if e.is_transient() => {
                        failures += 1;
                        let pause = (failures < self.max_retry)
                            .then(|| {
                                let valid_for = lease.valid_for().unwrap_or(Duration::ZERO);
                                let draw = jitter.uniform(500, 1000) as f64 / 1000.0;
                                pause_after_failure(
                                    failures,
                                    self.max_retry - failures,
                                    valid_for,
                                    self.timeout,
                                    self.interval,
                                    draw,
                                )
                            })
                            .flatten();
                        telemetry::renewed(store, Some(&e), pause.is_some());
                        let Some(pause) = pause else {
                            let _ = failure.send((Error::MaxRetryExceeded, Some(e)));
                            return;
                        };
                        drop(lease);
                        tokio::time::sleep(pause).await;
                    }
                    Err(e) => {
                        telemetry::renewed(store, Some(&e), false);
                        let not_held = e.is_not_held();
                        // Report first, then wake `lost()`: whoever reacts to the loss
                        // finds its reason already on the channel.
                        let _ = failure.send((e, None));
                        if not_held {
                            lease.mark_lost();
                        }
                        return;
                    }
                }
            }
        }
    }
}

impl AutoRefresh {
    /// How many renewals in a row may fail before the library's own renewal of a lease
    /// ([`LockRequest::acquire_renewed`](crate::LockRequest::acquire_renewed),
    /// `run_exclusive`, `run_while_leader`, the scheduler) gives up: 3, spread over what
    /// is left of the lease (see [`Lock::auto_refresh`]). [`Lock::lost`] is the
    /// time-based signal.
    pub const DEFAULT_MAX_RETRY: u32 = 3;

    /// The failure that ended renewal, if there is one and it was not taken yet.
    /// Never blocks: `None` while renewal runs fine, after a clean stop, and after the
    /// failure was taken once.
    pub fn try_error(&mut self) -> Option<Error> {
        let rx = self.failure.as_mut()?;
        match rx.try_recv() {
            Ok((e, cause)) => {
                self.failure = None;
                self.cause = cause;
                Some(e)
            }
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => {
                self.failure = None;
                None
            }
        }
    }

    /// Wait for the failure that ends renewal. `None` once renewal ended cleanly
    /// ([`Lock::unlock`], a newer `auto_refresh` of the lock) or the failure was taken.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a failure that arrives after the future is dropped stays in the
    /// channel for the next call.
    pub async fn error(&mut self) -> Option<Error> {
        let rx = self.failure.as_mut()?;
        let received = rx.await.ok();
        self.failure = None;
        let (error, cause) = received?;
        self.cause = cause;
        Some(error)
    }

    /// Why renewal gave up, once [`try_error`](AutoRefresh::try_error) or
    /// [`error`](AutoRefresh::error) returned [`Error::MaxRetryExceeded`]: the error of
    /// the last failed renewal (a timeout, a refused connection…). `None` before that,
    /// and for every other ending (which is its own cause).
    pub fn cause(&self) -> Option<&Error> {
        self.cause.as_ref()
    }

    /// Whether renewal is still going on: `false` once it was stopped, or ended on a
    /// failure (taken or not).
    pub fn is_running(&self) -> bool {
        let Some(failure) = &self.failure else {
            return false;
        };
        if !failure.is_empty() {
            return false; // a failure is waiting to be taken: renewal has ended
        }
        self.lease
            .upgrade()
            .is_some_and(|lease| lease.renewing(self.id))
    }

    /// Stop renewing; returns when the renewal task is gone, so no renewal is sent after
    /// it. Does not unlock.
    ///
    /// # Cancel safety
    ///
    /// The task is aborted at once; dropping the future only skips waiting for it to
    /// be gone.
    pub async fn stop(mut self) {
        if let Some(renewal) = self.take_renewal() {
            renewal.stop().await;
        }
    }

    fn take_renewal(&mut self) -> Option<Renewal> {
        self.lease.upgrade()?.take_renewal(self.id)
    }
}

impl Drop for AutoRefresh {
    fn drop(&mut self) {
        if let Some(renewal) = self.take_renewal() {
            renewal.task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Client;

    #[test]
    fn retries_after_a_failure_spread_over_what_is_left_of_the_lease() {
        let ms = Duration::from_millis;
        // README settings under a 10 s lease: interval 3.33 s, timeout 200 ms, max_retry 3.
        // After the first failure (6.6 s left, 2 attempts left): half of 6.4 s.
        let p = |f, left, valid, jitter| {
            pause_after_failure(f, left, ms(valid), ms(200), ms(3333), jitter)
        };
        assert_eq!(p(1, 2, 6600, 1.0), Some(ms(3200)));
        assert_eq!(p(1, 2, 6600, 0.5), Some(ms(1600)));
        // Jitter outside ½..1 is clamped.
        assert_eq!(p(1, 2, 6600, 0.0), Some(ms(1600)));
        // The last attempt left may wait until the last moment it can still answer.
        assert_eq!(p(2, 1, 3400, 1.0), Some(ms(3200)));
        // Many attempts left: exponential backoff from 50 ms, capped by the interval...
        assert_eq!(p(1, 1000, 6600, 1.0), Some(ms(50)));
        assert_eq!(p(3, 1000, 6600, 1.0), Some(ms(200)));
        assert_eq!(p(12, 1000, 60_000, 1.0), Some(ms(3333)));
        // ...and never past the time an attempt can still answer in.
        assert_eq!(p(12, 1000, 1000, 1.0), Some(ms(800)));
        assert_eq!(p(1, 2, 150, 1.0), Some(Duration::ZERO));
        // A lease that ran out cannot be saved.
        assert_eq!(p(1, 2, 0, 1.0), None);
    }

    #[test]
    fn auto_refresh_is_send_sync() {
        fn assert<T: Send + Sync>() {}
        assert::<AutoRefresh>();
    }

    async fn held(client: &Client, expiration: Duration) -> Lock {
        client.try_lock("job", "me", expiration).await.unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn arguments_are_checked_before_anything_runs() {
        let client = Client::memory();
        let lock = held(&client, Duration::from_secs(1)).await;
        let ms = Duration::from_millis;
        for (interval, expiration, timeout, retry, name) in [
            (ms(0), ms(1000), ms(100), 3, "interval"),
            (ms(1000), ms(1000), ms(100), 3, "interval"),
            (ms(100), ms(0), ms(100), 3, "expiration"),
            (ms(100), ms(1000), ms(0), 3, "timeout"),
            (ms(100), ms(1000), ms(100), 0, "max_retry"),
        ] {
            match lock.auto_refresh(interval, expiration, timeout, retry) {
                Err(Error::InvalidArgument(msg)) => assert!(msg.starts_with(name), "{msg}"),
                other => panic!("expected InvalidArgument for {name}, got {other:?}"),
            }
        }
        assert!(!lock.lease.has_renewal());
    }

    #[tokio::test(start_paused = true)]
    async fn renewal_keeps_the_lock_for_many_expirations() {
        let client = Client::memory();
        let lock = held(&client, Duration::from_millis(300)).await;
        let mut renewal = lock
            .auto_refresh(
                Duration::from_millis(100),
                Duration::from_millis(300),
                Duration::from_millis(50),
                3,
            )
            .unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(renewal.try_error().is_none());
        assert!(lock.valid_for().is_some());
        assert!(
            client
                .try_lock("job", "other", Duration::from_secs(1))
                .await
                .unwrap_err()
                .is_not_obtained()
        );
        renewal.stop().await;
        tokio::time::sleep(Duration::from_millis(301)).await;
        assert_eq!(
            lock.ttl().await.unwrap(),
            None,
            "stopped renewal lets the key expire"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn loss_is_reported_once_within_an_interval_and_never_overwritten() {
        let client = Client::memory();
        let lock = held(&client, Duration::from_millis(300)).await;
        let mut renewal = lock
            .auto_refresh(
                Duration::from_millis(100),
                Duration::from_millis(300),
                Duration::from_millis(50),
                3,
            )
            .unwrap();
        // Someone else takes the key behind our back.
        assert!(client.release_behind_the_back("job", "me").await);
        let thief = client
            .try_lock("job", "thief", Duration::from_secs(60))
            .await
            .unwrap();
        let started = Instant::now();
        let err = renewal.error().await.expect("a failure");
        assert!(err.is_not_held(), "{err:?}");
        assert!(started.elapsed() <= Duration::from_millis(100));
        assert!(renewal.error().await.is_none(), "sent once");
        assert!(renewal.try_error().is_none());
        assert!(thief.ttl().await.unwrap().unwrap() > Duration::from_secs(59));
        assert_eq!(lock.valid_for(), None);
    }

    /// A renewal sets the expiration it is given: renewing a 60 s lock every 100 ms to
    /// 300 ms shortens the key and the local lease at once, and once renewal stops the
    /// key expires 300 ms later (a crashed holder does not block everyone for 60 s).
    #[tokio::test(start_paused = true)]
    async fn a_shorter_renewal_expiration_shortens_the_key_and_the_lease() {
        let client = Client::memory();
        let lock = held(&client, Duration::from_secs(60)).await;
        let renewal = lock
            .auto_refresh(
                Duration::from_millis(100),
                Duration::from_millis(300),
                Duration::from_millis(50),
                3,
            )
            .unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        let valid = lock.valid_for().unwrap();
        assert!(valid <= Duration::from_millis(300), "{valid:?}");
        let ttl = lock.ttl().await.unwrap().unwrap();
        assert!(
            valid <= ttl && ttl <= Duration::from_millis(300),
            "{valid:?} of {ttl:?}"
        );
        drop(renewal);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(lock.valid_for(), None, "the lease ended with the key");
        let _next = client
            .try_lock("job", "next", Duration::from_secs(60))
            .await
            .expect("the key expired 300 ms after the last renewal");
    }

    #[tokio::test(start_paused = true)]
    async fn unlock_and_drop_close_the_channel_cleanly() {
        let client = Client::memory();
        let lock = held(&client, Duration::from_millis(300)).await;
        let mut renewal = lock
            .auto_refresh(
                Duration::from_millis(100),
                Duration::from_millis(300),
                Duration::from_millis(50),
                3,
            )
            .unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        lock.unlock().await.unwrap();
        assert!(!renewal.is_running());
        assert!(renewal.error().await.is_none());

        let lock = held(&client, Duration::from_millis(300)).await;
        let renewal = lock
            .auto_refresh(
                Duration::from_millis(100),
                Duration::from_millis(300),
                Duration::from_millis(50),
                3,
            )
            .unwrap();
        drop(renewal);
        assert!(!lock.lease.has_renewal());
        tokio::time::sleep(Duration::from_millis(301)).await;
        assert_eq!(
            lock.ttl().await.unwrap(),
            None,
            "dropped renewal lets the key expire"
        );
    }
}
