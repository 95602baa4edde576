//! The blocking lock and its background renewal handle.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::refresh::AutoRefresh;
use super::runtime::Runtime;
use super::wait;
#[cfg(doc)]
use crate::Error;
use crate::Result;

/// A lock on a key, held by this process under its value: [`crate::Lock`] with
/// blocking methods.
///
/// Dropping a `Lock` does **not** release it: the key stays until it expires or until
/// [`Lock::unlock`]. A `Lock` keeps its client's runtime thread alive.
#[must_use = "a Lock dropped at once keeps its key until the key expires: bind it (`let lock = …`) and `unlock()` it when done"]
pub struct Lock {
    inner: crate::Lock,
    rt: Arc<Runtime>,
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The async lock's Debug redacts the value.
        fmt::Debug::fmt(&self.inner, f)
    }
}

impl Lock {
    pub(crate) fn new(inner: crate::Lock, rt: Arc<Runtime>) -> Lock {
        Lock { inner, rt }
    }

    /// The locked key.
    pub fn key(&self) -> &str {
        self.inner.key()
    }

    /// The value this lock holds the key with. Treat it as a secret: whoever knows it
    /// can refresh or release the lock.
    pub fn value(&self) -> &str {
        self.inner.value()
    }

    /// The fencing token of this acquisition: strictly greater than the token of every
    /// earlier acquisition of this key; see [`crate::Lock::fencing_token`].
    pub fn fencing_token(&self) -> u64 {
        self.inner.fencing_token()
    }

    /// The expiration the lock was acquired with; [`refresh`](Lock::refresh) re-arms it.
    pub fn expiration(&self) -> Duration {
        self.inner.expiration()
    }

    /// How much longer the lease is certainly held, computed locally without I/O;
    /// `None` once it may have lapsed or was confirmed lost. See
    /// [`crate::Lock::valid_for`] for how it is computed.
    pub fn valid_for(&self) -> Option<Duration> {
        self.inner.valid_for()
    }

    /// Re-arm the expiration the lock was acquired with, if this lock's value still
    /// holds the key. Bounded by the `timeout` the lock was acquired with.
    ///
    /// # Errors
    ///
    /// * [`Error::NotHeld`] when the key is gone or held by another value (it is left
    ///   untouched, and the lock counts as lost);
    /// * [`Error::NotReplicated`] when fewer replicas than `min_replicas` asked for
    ///   acknowledged the re-arm in time;
    /// * [`Error::Timeout`] when the round trip exceeded the timeout;
    /// * [`Error::Redis`] on a connection or server error;
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[track_caller]
    pub fn refresh(&self) -> Result<()> {
        self.rt.run("Lock::refresh", self.inner.refresh())
    }

    /// Re-arm the key to exactly `expiration` from now (shorter or longer): the blocking
    /// form of [`crate::Lock::refresh_for`].
    ///
    /// # Errors
    ///
    /// As [`crate::Lock::refresh_for`].
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[track_caller]
    pub fn refresh_for(&self, expiration: Duration) -> Result<()> {
        self.rt
            .run("Lock::refresh_for", self.inner.refresh_for(expiration))
    }

    /// Whether this lock must be considered lost: `valid_for().is_none()`.
    pub fn is_lost(&self) -> bool {
        self.inner.is_lost()
    }

    /// The timeout the lock was acquired with: it bounds every call on the lock.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout()
    }

    /// Read the fenced `resource` with this lock's fencing token: the blocking form of
    /// [`crate::Lock::fenced_get`].
    ///
    /// # Errors
    ///
    /// As [`crate::Client::fenced_get`].
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[track_caller]
    pub fn fenced_get(&self, resource: &str) -> Result<Option<String>> {
        self.rt
            .run("Lock::fenced_get", self.inner.fenced_get(resource))
    }

    /// Write the fenced `resource` with this lock's fencing token: the blocking form of
    /// [`crate::Lock::fenced_set`].
    ///
    /// # Errors
    ///
    /// As [`crate::Client::fenced_set`].
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[track_caller]
    pub fn fenced_set(&self, resource: &str, value: &str) -> Result<()> {
        self.rt
            .run("Lock::fenced_set", self.inner.fenced_set(resource, value))
    }

    /// The key's remaining time to live on the store, or `None` if this lock's value no
    /// longer holds it. Bounded by the lock's timeout.
    ///
    /// # Errors
    ///
    /// * [`Error::Timeout`] when the round trip exceeded the timeout;
    /// * [`Error::Redis`] on a connection or server error;
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[track_caller]
    pub fn ttl(&self) -> Result<Option<Duration>> {
        self.rt.run("Lock::ttl", self.inner.ttl())
    }

    /// Renew this lock in the background, on the runtime thread: every `interval`,
    /// re-arm `expiration`. Renewal goes on whatever the calling thread does (computing,
    /// sleeping, blocked on I/O). Same semantics as [`crate::Lock::auto_refresh`].
    ///
    /// Does not block, so it may also be called inside an async runtime.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] unless 1 ms ≤ `interval` < `expiration` ≤
    /// [`MAX_DURATION`](crate::MAX_DURATION), 1 ms ≤ `timeout` ≤ `MAX_DURATION` and
    /// `max_retry` ≥ 1.
    pub fn auto_refresh(
        &self,
        interval: Duration,
        expiration: Duration,
        timeout: Duration,
        max_retry: u32,
    ) -> Result<AutoRefresh> {
        // The renewal task is spawned on the runtime the context points at.
        let _runtime = self.rt.handle().enter();
        let inner = self
            .inner
            .auto_refresh(interval, expiration, timeout, max_retry)?;
        Ok(AutoRefresh {
            inner: Some(inner),
            rt: Arc::clone(&self.rt),
        })
    }

    /// Renew this lock under `policy` (the library's own renewal of a lease it holds
    /// for you).
    pub(crate) fn renew(&self, policy: &crate::refresh::Policy) -> Result<AutoRefresh> {
        self.auto_refresh(
            policy.interval,
            policy.expiration,
            policy.timeout,
            policy.max_retry,
        )
    }

    /// Stop any auto-refresh of this lock, then release it if this lock's value still
    /// holds the key. Renewal is stopped (its task gone) before the release is sent.
    ///
    /// # Errors
    ///
    /// * [`Error::NotHeld`] when the key was already gone or held by another value (it
    ///   is left untouched);
    /// * [`Error::Indeterminate`] when the connection failed after the release went out:
    ///   it may or may not have deleted the key;
    /// * [`Error::Timeout`] when the round trip exceeded the lock's timeout;
    /// * [`Error::Redis`] on a connection or server error;
    ///
    /// On `Indeterminate`, `Timeout` or `Redis` the key may still be held: it expires by
    /// itself. A release is never sent again once it may have reached the store, as
    /// [`crate::Lock::unlock`] tells.
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[track_caller]
    pub fn unlock(self) -> Result<()> {
        let Lock { inner, rt } = self;
        rt.run("Lock::unlock", async move { inner.unlock().await })
    }

    /// Park until this lock must be considered lost: a store confirmed that the key is
    /// gone or held by another value, or the validity deadline ([`valid_for`]) passed
    /// without a confirmed renewal; see [`crate::Lock::lost`].
    ///
    /// With auto-refresh running this may never return: prefer
    /// [`wait_lost_timeout`](Lock::wait_lost_timeout) or polling
    /// [`valid_for`](Lock::valid_for) between steps of work.
    ///
    /// [`valid_for`]: Lock::valid_for
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[track_caller]
    pub fn wait_lost(&self) {
        wait::block_on(self.rt.handle(), "Lock::wait_lost", self.inner.lost());
    }

    /// Park until this lock must be considered lost (as [`wait_lost`](Lock::wait_lost))
    /// or `timeout` passes. `true` if the lock is lost.
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[track_caller]
    pub fn wait_lost_timeout(&self, timeout: Duration) -> bool {
        wait::timeout(
            self.rt.handle(),
            "Lock::wait_lost_timeout",
            self.inner.lost(),
            timeout,
        )
        .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_and_auto_refresh_are_send_sync() {
        fn assert<T: Send + Sync>() {}
        assert::<Lock>();
        assert::<AutoRefresh>();
    }
}
