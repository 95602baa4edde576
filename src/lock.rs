//! A held lock: owner-checked refresh, TTL, release, and the holder's own view of how
//! long the lease is still valid.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::client::Client;
use crate::refresh::Renewal;
use crate::{Error, Result};

/// A lock on a key, held by this process under its value.
///
/// Dropping a `Lock` does **not** release it: the key stays until it expires (or
/// until [`Lock::unlock`]). That is what a scheduled job that must run once per period
/// wants, and `Drop` never does I/O. Call [`Lock::unlock`] to hand the key over at once.
pub struct Lock {
    pub(crate) shared: Arc<LockShared>,
}

pub(crate) struct LockShared {
    pub(crate) client: Client,
    pub(crate) key: String,
    pub(crate) value: String,
    pub(crate) token: u64,
    pub(crate) expiration: Duration,
    pub(crate) timeout: Duration,
    /// The lease as this holder knows it; `lost()` and `valid_for()` read it.
    /// Every change (extended, lost) is followed by a wake-up of `lease_changed`.
    pub(crate) lease: Mutex<Lease>,
    /// Wakes [`lease_lost`] waiters when `lease` changed. Part of the lock's own
    /// allocation: a lock costs no channel.
    pub(crate) lease_changed: Notify,
    /// The running auto-refresh task, if any; `unlock` stops it first.
    pub(crate) renewal: Mutex<Option<Renewal>>,
}

/// What the holder knows about its lease without asking the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lease {
    /// The lease is certainly held until this instant (monotonic clock).
    pub(crate) valid_until: Instant,
    /// A store confirmed the key is gone or owned by someone else, or it was unlocked.
    pub(crate) lost: bool,
}

/// The drift allowance subtracted from every lease, as in the Redlock algorithm:
/// 1% of the expiration (clock-rate difference between this host and the server) plus
/// 2 ms (timer granularity on both sides).
pub fn drift_allowance(expiration: Duration) -> Duration {
    expiration / 100 + Duration::from_millis(2)
}

/// The instant until which a lease re-armed at `sent` for `expiration` is certainly held.
pub(crate) fn valid_until(sent: Instant, expiration: Duration) -> Instant {
    let drift = drift_allowance(expiration);
    sent + expiration.saturating_sub(drift)
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.shared;
        f.debug_struct("Lock")
            .field("key", &s.key)
            .field("value", &"<redacted>")
            .field("fencing_token", &s.token)
            .field("expiration", &s.expiration)
            .field("timeout", &s.timeout)
            .field("valid_for", &self.valid_for())
            .finish()
    }
}

impl Lock {
    pub(crate) fn new(
        client: Client,
        key: &str,
        value: &str,
        token: u64,
        expiration: Duration,
        timeout: Duration,
        sent: Instant,
    ) -> Lock {
        let lease = Mutex::new(Lease {
            valid_until: valid_until(sent, expiration),
            lost: false,
        });
        Lock {
            shared: Arc::new(LockShared {
                client,
                key: key.to_owned(),
                value: value.to_owned(),
                token,
                expiration,
                timeout,
                lease,
                lease_changed: Notify::new(),
                renewal: Mutex::new(None),
            }),
        }
    }

    /// The locked key.
    pub fn key(&self) -> &str {
        &self.shared.key
    }

    /// The value this lock holds the key with. Treat it as a secret: whoever knows it
    /// can refresh or release the lock.
    pub fn value(&self) -> &str {
        &self.shared.value
    }

    /// The fencing token of this acquisition: strictly greater than the token of every
    /// earlier acquisition of this key. Pass it to the resource you protect and have the
    /// resource reject writes carrying a lower token than it has seen.
    pub fn fencing_token(&self) -> u64 {
        self.shared.token
    }

    /// The expiration the lock was acquired with; [`refresh`](Lock::refresh) re-arms it.
    pub fn expiration(&self) -> Duration {
        self.shared.expiration
    }

    /// How much longer the lease is certainly held, computed locally without I/O;
    /// `None` once it may have lapsed or was confirmed lost.
    ///
    /// The lease counts from the instant the last *confirmed* acquire or refresh was
    /// *sent* (not answered), so network delay only ever shortens it:
    ///
    /// `valid_until = sent + expiration − (expiration / 100 + 2 ms)`
    ///
    /// The subtracted drift allowance covers clock-rate differences between this host
    /// and the server. The guarantee assumes this process is not paused for longer than
    /// the remaining validity between checking it and acting on it: use the
    /// [fencing token](Lock::fencing_token) to be safe even then.
    pub fn valid_for(&self) -> Option<Duration> {
        let lease = *self.shared.lease.lock();
        if lease.lost {
            return None;
        }
        let left = lease.valid_until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Resolves when this lock must be considered lost: a store confirmed that the key is
    /// gone or held by another value, or the validity deadline ([`valid_for`]) passed
    /// without a confirmed renewal — before any other client could acquire the key,
    /// given the drift allowance. Use it in `tokio::select!` to abort work.
    ///
    /// [`valid_for`]: Lock::valid_for
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes the lock.
    pub async fn lost(&self) {
        lease_lost(&self.shared).await
    }

    /// Re-arm the expiration the lock was acquired with, if this lock's value still
    /// holds the key. Bounded by the `timeout` the lock was acquired with.
    ///
    /// # Errors
    ///
    /// * [`Error::NotHeld`] when the key is gone or held by another value (it is left
    ///   untouched, and the lock counts as lost);
    /// * [`Error::Timeout`] when the round trip exceeded the timeout;
    /// * [`Error::Redis`] on a connection or server error.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future may or may not re-arm the key; either way the lease this
    /// holder computes ([`valid_for`](Lock::valid_for)) is not extended.
    pub async fn refresh(&self) -> Result<()> {
        self.shared.refresh(self.shared.expiration).await
    }

    /// The key's remaining time to live on the store, or `None` if this lock's value no
    /// longer holds it. Bounded by the lock's timeout.
    ///
    /// # Errors
    ///
    /// * [`Error::Timeout`] when the round trip exceeded the timeout;
    /// * [`Error::Redis`] on a connection or server error.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn ttl(&self) -> Result<Option<Duration>> {
        let s = &self.shared;
        let ttl = s
            .client
            .inner
            .backend
            .pttl(&s.key, &s.value, s.timeout)
            .await?;
        if ttl.is_none() {
            s.mark_lost();
        }
        Ok(ttl)
    }

    /// Stop any auto-refresh of this lock, then release it if this lock's value still
    /// holds the key. Renewal is stopped (its task gone) before the release is sent, so
    /// no renewal can land after it.
    ///
    /// # Errors
    ///
    /// * [`Error::NotHeld`] when the key was already gone or held by another value (it
    ///   is left untouched);
    /// * [`Error::Timeout`] when the round trip exceeded the lock's timeout;
    /// * [`Error::Redis`] on a connection or server error.
    ///
    /// On `Timeout` or `Redis` the key may still be held: it expires by itself.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future after renewal was stopped leaves the key to expire
    /// (or released, if the release was already sent).
    pub async fn unlock(self) -> Result<()> {
        let renewal = self.shared.renewal.lock().take();
        if let Some(renewal) = renewal {
            renewal.stop().await;
        }
        let s = &self.shared;
        let released = s
            .client
            .inner
            .backend
            .release(&s.key, &s.value, s.timeout)
            .await;
        s.mark_lost();
        if released? {
            Ok(())
        } else {
            Err(Error::NotHeld)
        }
    }
}

impl LockShared {
    /// One owner-checked refresh to `expiration`, bounded by the lock's timeout; sets the
    /// local lease on success and marks the lock lost on `NotHeld`.
    pub(crate) async fn refresh(&self, expiration: Duration) -> Result<()> {
        let refreshed = self.refresh_within(expiration, self.timeout).await;
        if matches!(refreshed, Err(Error::NotHeld)) {
            self.mark_lost();
        }
        refreshed
    }

    /// One owner-checked refresh to `expiration`, bounded by `timeout`. On success the
    /// local lease becomes what this refresh armed — `PEXPIRE` replaces the TTL, so a
    /// shorter expiration shortens the lease too. `NotHeld` is returned without marking
    /// the lock lost: the caller does that (after reporting it, for renewal).
    pub(crate) async fn refresh_within(
        &self,
        expiration: Duration,
        timeout: Duration,
    ) -> Result<()> {
        let sent = Instant::now();
        let ttl_ms = expiration.as_millis() as u64;
        let refreshed = self
            .client
            .inner
            .backend
            .refresh(&self.key, &self.value, ttl_ms, timeout)
            .await?;
        if !refreshed {
            return Err(Error::NotHeld);
        }
        let until = valid_until(sent, expiration);
        let changed = {
            let mut lease = self.lease.lock();
            let change = !lease.lost && until != lease.valid_until;
            if change {
                // Replies come back in the order the refreshes were sent (one
                // connection): the last confirmed one is what the store holds.
                lease.valid_until = until;
            }
            change
        };
        if changed {
            self.lease_changed.notify_waiters();
        }
        Ok(())
    }

    pub(crate) fn mark_lost(&self) {
        let newly_lost = !std::mem::replace(&mut self.lease.lock().lost, true);
        if newly_lost {
            self.lease_changed.notify_waiters();
        }
    }
}

/// Resolves once the lease is confirmed lost or its validity deadline passes.
pub(crate) async fn lease_lost(shared: &LockShared) {
    loop {
        // Registered before the lease is read, so that a change made after the read
        // (`notify_waiters` wakes only registered waiters) is not missed.
        let changed = shared.lease_changed.notified();
        let mut changed = std::pin::pin!(changed);
        changed.as_mut().enable();
        let lease = *shared.lease.lock();
        if lease.lost || Instant::now() >= lease.valid_until {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(lease.valid_until) => {}
            _ = changed => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_send_sync() {
        fn assert<T: Send + Sync>() {}
        assert::<Lock>();
    }

    #[test]
    fn drift_allowance_is_one_percent_plus_two_ms() {
        assert_eq!(
            drift_allowance(Duration::from_secs(10)),
            Duration::from_millis(102)
        );
        assert_eq!(
            drift_allowance(Duration::from_millis(1)),
            Duration::from_micros(2010)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn validity_runs_out_on_the_paused_clock() {
        let client = Client::memory();
        let lock = client
            .try_lock("k", "v", Duration::from_millis(1000))
            .await
            .unwrap();
        // 1000 ms − (10 ms + 2 ms)
        assert_eq!(lock.valid_for(), Some(Duration::from_millis(988)));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(lock.valid_for(), Some(Duration::from_millis(488)));
        lock.refresh().await.unwrap();
        assert_eq!(lock.valid_for(), Some(Duration::from_millis(988)));
        let started = Instant::now();
        lock.lost().await;
        assert_eq!(started.elapsed(), Duration::from_millis(988));
        assert_eq!(lock.valid_for(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_lost_follows_extensions_and_wakes_on_loss() {
        let client = Client::memory();
        let lock = client
            .try_lock("k", "v", Duration::from_millis(1000))
            .await
            .unwrap();
        let started = Instant::now();
        let waiter = async {
            lock.lost().await;
            started.elapsed()
        };
        let driver = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            // Valid until 500 + 988 ms now: the waiter must not fire at 988 ms.
            lock.refresh().await.unwrap();
            tokio::time::sleep(Duration::from_millis(700)).await;
            assert!(lock.valid_for().is_some());
            assert!(client.release_behind_the_back("k", "v").await);
            assert!(lock.refresh().await.unwrap_err().is_not_held());
        };
        let (elapsed, ()) = tokio::join!(waiter, driver);
        assert_eq!(elapsed, Duration::from_millis(1200));
    }

    #[tokio::test(start_paused = true)]
    async fn lost_fires_at_once_on_confirmed_loss() {
        let client = Client::memory();
        let lock = client
            .try_lock("k", "v", Duration::from_secs(10))
            .await
            .unwrap();
        // Another owner takes over after expiry would be impossible here; release it
        // behind the lock's back instead.
        assert!(client.release_behind_the_back("k", "v").await);
        assert!(lock.refresh().await.unwrap_err().is_not_held());
        let started = Instant::now();
        lock.lost().await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(lock.valid_for(), None);
    }
}
