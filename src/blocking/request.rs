//! The blocking [`LockRequest`]: [`crate::LockRequest`] without `.await`.

use std::fmt;
use std::sync::Arc;

use super::refresh::AutoRefresh;
use super::runtime::Runtime;
use super::{Client, Lock};
use crate::{NoRetry, Result, RetryStrategy};

/// A lock to acquire, with named options: [`Client::lock`] without positional durations
/// to swap by mistake. Made by [`Client::lock_request`]; the options and their defaults
/// are those of [`crate::LockRequest`].
///
/// ```
/// use std::time::Duration;
/// use leasehold::{FixedInterval, blocking::Client};
///
/// let client = Client::open("memory://")?;
/// let (lock, mut renewal) = client
///     .lock_request("nightly-report")
///     .expiration(Duration::from_secs(30))
///     .attempt_timeout(Duration::from_millis(200))
///     .retry(FixedInterval::new(Duration::from_millis(100), 20))
///     .acquire_renewed()?; // renewed every 10 s until unlocked
/// assert!(renewal.try_error().is_none());
/// lock.unlock()?;
/// # Ok::<(), leasehold::Error>(())
/// ```
#[must_use = "a LockRequest does nothing until `.acquire()` or `.acquire_renewed()` is called"]
pub struct LockRequest<'a, R = NoRetry> {
    inner: crate::LockRequest<'a, R>,
    rt: &'a Arc<Runtime>,
}

impl<R> fmt::Debug for LockRequest<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The async request's Debug redacts the value.
        fmt::Debug::fmt(&self.inner, f)
    }
}

impl Client {
    /// A lock on `key` to acquire with named options (see [`LockRequest`]): the same
    /// acquisition as [`lock`](Client::lock), which takes them in order.
    pub fn lock_request<'a>(&'a self, key: &'a str) -> LockRequest<'a> {
        LockRequest {
            inner: self.inner.lock_request(key),
            rt: &self.rt,
        }
    }
}

impl<'a, R: RetryStrategy> LockRequest<'a, R> {
    /// See [`crate::LockRequest::value`].
    pub fn value(self, value: impl Into<String>) -> Self {
        self.map(|r| r.value(value))
    }

    /// See [`crate::LockRequest::expiration`].
    pub fn expiration(self, expiration: std::time::Duration) -> Self {
        self.map(|r| r.expiration(expiration))
    }

    /// See [`crate::LockRequest::attempt_timeout`].
    pub fn attempt_timeout(self, timeout: std::time::Duration) -> Self {
        self.map(|r| r.attempt_timeout(timeout))
    }

    /// See [`crate::LockRequest::retry`].
    pub fn retry<S: RetryStrategy>(self, retry: S) -> LockRequest<'a, S> {
        LockRequest {
            inner: self.inner.retry(retry),
            rt: self.rt,
        }
    }

    fn map(self, f: impl FnOnce(crate::LockRequest<'a, R>) -> crate::LockRequest<'a, R>) -> Self {
        LockRequest {
            inner: f(self.inner),
            rt: self.rt,
        }
    }

    /// Acquire the key: the blocking form of [`crate::LockRequest::acquire`].
    ///
    /// # Errors
    ///
    /// As [`Client::lock`].
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[track_caller]
    pub fn acquire(self) -> Result<Lock> {
        let lock = self.rt.run("LockRequest::acquire", self.inner.acquire())?;
        Ok(Lock::new(lock, Arc::clone(self.rt)))
    }

    /// Acquire the key and keep it: the blocking form of
    /// [`crate::LockRequest::acquire_renewed`] (renewal every third of the expiration,
    /// until the lock is unlocked, or the lock or the returned [`AutoRefresh`] is dropped:
    /// bind both).
    ///
    /// # Errors
    ///
    /// As [`crate::LockRequest::acquire_renewed`].
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[track_caller]
    pub fn acquire_renewed(self) -> Result<(Lock, AutoRefresh)> {
        let (lock, renewal) = self
            .rt
            .run("LockRequest::acquire_renewed", self.inner.acquire_renewed())?;
        let renewal = AutoRefresh {
            inner: Some(renewal),
            rt: Arc::clone(self.rt),
        };
        Ok((Lock::new(lock, Arc::clone(self.rt)), renewal))
    }
}
