//! A lock held on a quorum of Redlock nodes.

use std::fmt;
use std::time::Duration;

#[cfg(doc)]
use crate::Error;
use crate::{AutoRefresh, Lock, Result};

/// A lock held on a quorum of [`Redlock`](super::Redlock) nodes, under its value.
///
/// It has **no fencing token**: Redlock cannot produce a monotonic one (see the
/// [module docs](super#why-there-is-no-fencing-token)), so there is no
/// `fencing_token()` to misuse.
///
/// Dropping a `RedlockLock` does **not** release it: the key stays on the nodes until it
/// expires (or until [`unlock`](RedlockLock::unlock)); dropping it does stop its
/// [auto-refresh](RedlockLock::auto_refresh). Locking a key again under the value that
/// holds it (through the same `Redlock`) gives another handle on the same lease.
#[must_use = "a RedlockLock dropped at once keeps its key until the key expires: bind it (`let lock = …`) and `unlock()` it when done"]
pub struct RedlockLock {
    inner: Lock,
}

impl fmt::Debug for RedlockLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedlockLock")
            .field("key", &self.key())
            .field("value", &"<redacted>")
            .field("expiration", &self.expiration())
            .field("timeout", &self.inner.timeout())
            .field("valid_for", &self.valid_for())
            .finish()
    }
}

impl RedlockLock {
    pub(super) fn new(inner: Lock) -> Self {
        RedlockLock { inner }
    }

    /// The lock on the quorum store underneath, for the blocking facade to wrap.
    pub(crate) fn into_lock(self) -> Lock {
        self.inner
    }

    /// The locked key.
    pub fn key(&self) -> &str {
        self.inner.key()
    }

    /// The value this lock holds the key with. Treat it as a secret: whoever knows it can
    /// refresh or release the lock. Where the protected resource supports
    /// compare-and-set, making writes conditional on it is the check Redlock can offer in
    /// place of a fencing token.
    pub fn value(&self) -> &str {
        self.inner.value()
    }

    /// The expiration the lock was acquired with; [`refresh`](RedlockLock::refresh)
    /// re-arms it.
    pub fn expiration(&self) -> Duration {
        self.inner.expiration()
    }

    /// How much longer a quorum certainly holds the lock, computed locally without I/O;
    /// `None` once it may have lapsed or was confirmed lost.
    ///
    /// It counts from the start of the last attempt or refresh that won a quorum:
    ///
    /// `valid_until = start + expiration − (expiration / 100 + 2 ms)`
    ///
    /// so the time the nodes took to answer is already subtracted. It assumes that the
    /// nodes' clocks do not jump and that this process is not paused between checking it
    /// and acting on it (see the [module docs](super#what-redlock-assumes)).
    pub fn valid_for(&self) -> Option<Duration> {
        self.inner.valid_for()
    }

    /// Whether this lock must be considered lost: `valid_for().is_none()`.
    pub fn is_lost(&self) -> bool {
        self.inner.is_lost()
    }

    /// Resolves when this lock must be considered lost: a majority of nodes confirmed that
    /// this value no longer holds the key, or the validity ([`valid_for`]) ran out without
    /// a refresh that won a quorum — before another client could win a quorum of the
    /// same nodes, given the drift allowance and clocks that do not jump. Use it in
    /// `tokio::select!` to abort work.
    ///
    /// [`valid_for`]: RedlockLock::valid_for
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes the lock.
    pub async fn lost(&self) {
        self.inner.lost().await
    }

    /// Re-arm the expiration the lock was acquired with on every node that still holds
    /// this value; succeeds when a quorum did, and the validity then counts from this
    /// refresh's start. Waits for every node, bounded by the `timeout` the lock was
    /// acquired with.
    ///
    /// A failed refresh **never releases** anything: the lock stays valid until its old
    /// validity runs out ([`lost`](RedlockLock::lost) fires then), and nodes that re-armed
    /// keep the key until their new expiration. Nodes that no longer hold the key are not
    /// given it back.
    ///
    /// # Errors
    ///
    /// * [`Error::NotHeld`] when a majority of nodes answered that the key is gone or held
    ///   by another value (the lock then counts as lost);
    /// * [`Error::Quorum`] when fewer than a quorum re-armed it for any other reason
    ///   (nodes down or timed out, answers split): transient, another refresh may succeed.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future may have re-armed some nodes and not others; either way the
    /// validity this holder computes ([`valid_for`](RedlockLock::valid_for)) is not
    /// extended.
    pub async fn refresh(&self) -> Result<()> {
        self.inner.refresh().await
    }

    /// How long a majority of nodes still holds the key for this value (the quorum-th
    /// longest remaining time to live), or `None` when a majority answered that this value
    /// no longer holds it. Asks every node; bounded by the lock's timeout. Unlike
    /// [`valid_for`](RedlockLock::valid_for), this is what the servers' clocks say, with
    /// no drift allowance.
    ///
    /// # Errors
    ///
    /// [`Error::Quorum`] when the answers that arrived in time show neither.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn ttl(&self) -> Result<Option<Duration>> {
        self.inner.ttl().await
    }

    /// Renew this lock in the background: every `interval`, re-arm `expiration` on a
    /// quorum of nodes, as [`Lock::auto_refresh`](crate::Lock::auto_refresh) does on one
    /// store. A renewal that missed the quorum ([`Error::Quorum`]) is retried at once;
    /// `max_retry` such failures in a row end renewal with [`Error::MaxRetryExceeded`],
    /// and [`Error::NotHeld`] (a majority no longer holds this value) ends it with that
    /// error, each sent once on the returned handle's channel. Renewal never releases:
    /// when it ends on a failure, the lock stays valid until its last validity runs out,
    /// and [`lost`](RedlockLock::lost) fires then.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] unless 1 ms ≤ `interval` < `expiration` ≤
    /// [`MAX_DURATION`](crate::MAX_DURATION), `expiration` ≥ 3 ms, 1 ms ≤ `timeout` ≤
    /// `MAX_DURATION` and `max_retry` ≥ 1.
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
        self.inner
            .auto_refresh(interval, expiration, timeout, max_retry)
    }

    /// Stop any auto-refresh of this lock, then release it on **every** node: the key is
    /// deleted wherever its value holds it (the value is the holder's identity); succeeds
    /// when a majority released it. Renewal is stopped (its task gone), and
    /// the lease ended for every handle, before the releases are sent.
    ///
    /// # Errors
    ///
    /// * [`Error::NotHeld`] when a majority of nodes answered that the key was already
    ///   gone or held by another value (those nodes are left untouched);
    /// * [`Error::Quorum`] when neither a majority released it nor a majority answered
    ///   that it was not held (nodes down or timed out): the nodes that did not answer
    ///   keep the key until it expires.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future after renewal was stopped may have released the key on some
    /// nodes and not on others; the others keep it until it expires.
    pub async fn unlock(self) -> Result<()> {
        self.inner.unlock().await
    }
}
