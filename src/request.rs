//! [`LockRequest`]: [`Client::lock`] with named options instead of positional durations.

use std::fmt;
use std::time::Duration;

use crate::{AutoRefresh, Client, Lock, NoRetry, Result, RetryStrategy};

/// The expiration of a [`LockRequest`] that does not name one: 30 s.
#[deprecated(note = "use `LockRequest::DEFAULT_EXPIRATION`")]
pub const DEFAULT_EXPIRATION: Duration = LockRequest::DEFAULT_EXPIRATION;

/// A lock to acquire, with named options: [`Client::lock`] without positional durations
/// to swap by mistake. Made by [`Client::lock_request`]; nothing happens until
/// [`acquire`](LockRequest::acquire) or [`acquire_renewed`](LockRequest::acquire_renewed)
/// is awaited.
///
/// | option | default |
/// |---|---|
/// | [`value`](LockRequest::value) | a fresh [`random_value`](crate::random_value) |
/// | [`expiration`](LockRequest::expiration) | [`DEFAULT_EXPIRATION`](LockRequest::DEFAULT_EXPIRATION) (30 s) |
/// | [`attempt_timeout`](LockRequest::attempt_timeout) | the client's [`default_timeout`](Client::default_timeout) |
/// | [`retry`](LockRequest::retry) | [`NoRetry`]: one attempt |
///
/// ```
/// use std::time::Duration;
/// use leasehold::{Client, FixedInterval};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> leasehold::Result<()> {
/// let client = Client::open("memory://").await?;
/// let (lock, mut renewal) = client
///     .lock_request("nightly-report")
///     .expiration(Duration::from_secs(30))
///     .attempt_timeout(Duration::from_millis(200))
///     .retry(FixedInterval::new(Duration::from_millis(100), 20))
///     .acquire_renewed() // renewed every 10 s until unlocked
///     .await?;
/// assert!(renewal.try_error().is_none());
/// lock.unlock().await?;
/// # Ok(()) }
/// ```
#[must_use = "a LockRequest does nothing until `.acquire()` or `.acquire_renewed()` is awaited"]
pub struct LockRequest<'a, R = NoRetry> {
    client: &'a Client,
    key: &'a str,
    value: Option<String>,
    expiration: Duration,
    attempt_timeout: Duration,
    retry: R,
}

impl<R> fmt::Debug for LockRequest<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockRequest")
            .field("key", &self.key)
            .field("value", &self.value.as_ref().map(|_| "<redacted>"))
            .field("expiration", &self.expiration)
            .field("attempt_timeout", &self.attempt_timeout)
            .finish_non_exhaustive()
    }
}

impl LockRequest<'_> {
    /// The expiration of a request that does not name one: 30 s.
    pub const DEFAULT_EXPIRATION: Duration = Duration::from_secs(30);
}

impl Client {
    /// A lock on `key` to acquire with named options (see [`LockRequest`]): the same
    /// acquisition as [`lock`](Client::lock), which takes them in order.
    pub fn lock_request<'a>(&'a self, key: &'a str) -> LockRequest<'a> {
        LockRequest {
            client: self,
            key,
            value: None,
            expiration: LockRequest::DEFAULT_EXPIRATION,
            attempt_timeout: self.default_timeout(),
            retry: NoRetry,
        }
    }
}

impl<'a, R: RetryStrategy> LockRequest<'a, R> {
    /// The value to hold the key with; unique to this holder (whoever knows it can
    /// refresh or release the lock). Default: a fresh [`random_value`](crate::random_value).
    pub fn value(mut self, value: impl Into<String>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// How long the key is held unless refreshed. Default:
    /// [`DEFAULT_EXPIRATION`](LockRequest::DEFAULT_EXPIRATION).
    pub fn expiration(mut self, expiration: Duration) -> Self {
        self.expiration = expiration;
        self
    }

    /// The bound on each attempt's round trip (and, on the lock, on every refresh, TTL
    /// read and unlock). Default: the client's [`default_timeout`](Client::default_timeout).
    ///
    /// It may exceed the expiration: the lease counts from when the attempt was *sent*,
    /// so a slow answer can arrive with little or none of the lease left — check
    /// [`Lock::valid_for`] before relying on it.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// How long to wait between attempts while another holder has the key, and when to
    /// give up. Default: [`NoRetry`] (one attempt).
    pub fn retry<S: RetryStrategy>(self, retry: S) -> LockRequest<'a, S> {
        LockRequest {
            client: self.client,
            key: self.key,
            value: self.value,
            expiration: self.expiration,
            attempt_timeout: self.attempt_timeout,
            retry,
        }
    }

    /// Acquire the key: [`Client::lock`] with these options.
    ///
    /// # Errors
    ///
    /// As [`Client::lock`].
    ///
    /// # Cancel safety
    ///
    /// As [`Client::lock`].
    pub async fn acquire(self) -> Result<Lock> {
        let value = match &self.value {
            Some(value) => value.as_str(),
            None => &crate::random_value(),
        };
        self.client
            .lock(
                self.key,
                value,
                self.expiration,
                self.attempt_timeout,
                self.retry,
            )
            .await
    }

    /// Acquire the key and keep it: [`acquire`](LockRequest::acquire), then
    /// [`Lock::auto_refresh`] every third of the expiration, re-arming the expiration,
    /// each renewal bounded by the attempt timeout, giving up after
    /// [`DEFAULT_MAX_RETRY`](AutoRefresh::DEFAULT_MAX_RETRY) failed renewals in a row. Renewal ends with
    /// [`Lock::unlock`], or when the lock (every handle of it) or the returned
    /// [`AutoRefresh`] is dropped — so bind both: `let (lock, _) = …` stops renewal at
    /// once (the `must_use` lint does not see into a tuple).
    ///
    /// # Errors
    ///
    /// As [`Client::lock`]; and [`Error::InvalidArgument`](crate::Error::InvalidArgument)
    /// before any I/O for an expiration under 3 ms (no renewal interval fits in it).
    ///
    /// # Cancel safety
    ///
    /// As [`Client::lock`].
    pub async fn acquire_renewed(self) -> Result<(Lock, AutoRefresh)> {
        let policy = crate::refresh::Policy::for_lease(self.expiration, self.attempt_timeout)?;
        let lock = self.acquire().await?;
        let renewal = lock.renew(&policy)?;
        Ok((lock, renewal))
    }
}
