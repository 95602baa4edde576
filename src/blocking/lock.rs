//! The blocking lock and its background renewal handle.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::client::Runtime;
use super::wait;
use crate::{Error, Result};

/// A lock on a key, held by this process under its value: [`crate::Lock`] with
/// blocking methods.
///
/// Dropping a `Lock` does **not** release it: the key stays until it expires or until
/// [`Lock::unlock`]. A `Lock` keeps its client's runtime thread alive.
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

    /// Stop any auto-refresh of this lock, then release it if this lock's value still
    /// holds the key. Renewal is stopped (its task gone) before the release is sent.
    ///
    /// # Errors
    ///
    /// * [`Error::NotHeld`] when the key was already gone or held by another value (it
    ///   is left untouched);
    /// * [`Error::Timeout`] when the round trip exceeded the lock's timeout;
    /// * [`Error::Redis`] on a connection or server error;
    ///
    /// On `Timeout` or `Redis` the key may still be held: it expires by itself.
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

/// Renews a lock in the background, on the client's runtime thread, until stopped, and
/// reports why it ended if it ended on a failure: [`crate::AutoRefresh`] with blocking
/// methods. Returned by [`Lock::auto_refresh`].
///
/// Dropping it stops renewal (it does not unlock) without blocking. It keeps its
/// client's runtime thread alive.
#[must_use = "dropping an AutoRefresh stops the renewal"]
pub struct AutoRefresh {
    /// `None` once stopped.
    inner: Option<crate::AutoRefresh>,
    rt: Arc<Runtime>,
}

impl fmt::Debug for AutoRefresh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Some(inner) => fmt::Debug::fmt(inner, f),
            None => f
                .debug_struct("AutoRefresh")
                .field("running", &false)
                .finish_non_exhaustive(),
        }
    }
}

impl AutoRefresh {
    /// The failure that ended renewal, if there is one and it was not taken yet.
    /// Never blocks (so it may be called anywhere): `None` while renewal runs fine, after
    /// a clean stop, and after the failure was taken once.
    pub fn try_error(&mut self) -> Option<Error> {
        self.inner.as_mut()?.try_error()
    }

    /// Park until the failure that ends renewal arrives. `None` once renewal ended
    /// cleanly ([`Lock::unlock`], a newer `auto_refresh` of the lock) or the failure was
    /// taken.
    ///
    /// While renewal runs fine this does not return: prefer
    /// [`error_timeout`](AutoRefresh::error_timeout) or [`try_error`](AutoRefresh::try_error).
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[track_caller]
    pub fn error(&mut self) -> Option<Error> {
        self.wait_error("AutoRefresh::error", None)
    }

    /// Park until the failure that ends renewal arrives or `timeout` passes. `None` when
    /// the timeout passed with renewal running fine, once renewal ended cleanly, or when
    /// the failure was already taken.
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[track_caller]
    pub fn error_timeout(&mut self, timeout: Duration) -> Option<Error> {
        self.wait_error("AutoRefresh::error_timeout", Some(timeout))
    }

    /// Whether the renewal task is still running.
    pub fn is_running(&self) -> bool {
        self.inner.as_ref().is_some_and(|r| r.is_running())
    }

    /// Stop renewing; returns when the renewal task is gone, so no renewal is sent after
    /// it. Does not unlock.
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[track_caller]
    pub fn stop(mut self) {
        wait::enter("AutoRefresh::stop");
        if let Some(inner) = self.inner.take() {
            wait::block_on(self.rt.handle(), "AutoRefresh::stop", inner.stop());
        }
    }

    #[track_caller]
    fn wait_error(&mut self, what: &str, timeout: Option<Duration>) -> Option<Error> {
        wait::enter(what);
        let inner = self.inner.as_mut()?;
        match timeout {
            None => wait::block_on(self.rt.handle(), what, inner.error()),
            // `error` is cancel safe: a failure arriving after the timeout stays queued.
            Some(timeout) => wait::timeout(self.rt.handle(), what, inner.error(), timeout)?,
        }
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
