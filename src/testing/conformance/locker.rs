//! The surface the async cases use: [`Locker`] and [`Held`].

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use crate::redlock::{Redlock, RedlockLock};
use crate::{AutoRefresh, Client, Lock, Result, RetryStrategy};

/// Takes locks: implemented by every lock API that keeps the contract's semantics,
/// [`Client`] (on every store, your own included) and [`Redlock`]. The async cases of
/// [`cases`](super::cases) that take a `Locker` run on both; those of fencing tokens and
/// inspection take a `Client`.
pub trait Locker: Clone + Debug + Send + Sync + 'static {
    /// The lock it hands out.
    type Held: Held;

    /// [`Client::lock`].
    fn lock(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
        timeout: Duration,
        retry: impl RetryStrategy + 'static,
    ) -> impl Future<Output = Result<Self::Held>> + Send;

    /// [`Client::try_lock`].
    fn try_lock(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
    ) -> impl Future<Output = Result<Self::Held>> + Send;

    /// The finest expiration the store grants ([`Client::granularity`]; 1 ms for
    /// Redlock): the cases read the store's [`Traits`](super::Traits) from it.
    fn granularity(&self) -> Duration;
}

/// A held lock: [`Lock`] or [`RedlockLock`].
pub trait Held: Debug + Send + Sync + 'static {
    /// [`Lock::key`].
    fn key(&self) -> &str;
    /// [`Lock::value`].
    fn value(&self) -> &str;
    /// [`Lock::expiration`]: the expiration granted (whole seconds on such a store).
    fn expiration(&self) -> Duration;
    /// [`Lock::fencing_token`]; `None` where the lock has none (Redlock).
    fn fencing_token(&self) -> Option<u64>;
    /// [`Lock::valid_for`].
    fn valid_for(&self) -> Option<Duration>;
    /// [`Lock::refresh`].
    fn refresh(&self) -> impl Future<Output = Result<()>> + Send;
    /// [`Lock::ttl`].
    fn ttl(&self) -> impl Future<Output = Result<Option<Duration>>> + Send;
    /// [`Lock::lost`].
    fn lost(&self) -> impl Future<Output = ()> + Send;
    /// [`Lock::auto_refresh`].
    ///
    /// # Errors
    ///
    /// As [`Lock::auto_refresh`].
    fn auto_refresh(
        &self,
        interval: Duration,
        expiration: Duration,
        timeout: Duration,
        max_retry: u32,
    ) -> Result<AutoRefresh>;
    /// [`Lock::unlock`].
    fn unlock(self) -> impl Future<Output = Result<()>> + Send;
}

macro_rules! held {
    ($ty:ty, $token:expr) => {
        impl Held for $ty {
            fn key(&self) -> &str {
                <$ty>::key(self)
            }
            fn value(&self) -> &str {
                <$ty>::value(self)
            }
            fn expiration(&self) -> Duration {
                <$ty>::expiration(self)
            }
            fn fencing_token(&self) -> Option<u64> {
                let token: fn(&$ty) -> Option<u64> = $token;
                token(self)
            }
            fn valid_for(&self) -> Option<Duration> {
                <$ty>::valid_for(self)
            }
            fn refresh(&self) -> impl Future<Output = Result<()>> + Send {
                <$ty>::refresh(self)
            }
            fn ttl(&self) -> impl Future<Output = Result<Option<Duration>>> + Send {
                <$ty>::ttl(self)
            }
            fn lost(&self) -> impl Future<Output = ()> + Send {
                <$ty>::lost(self)
            }
            fn auto_refresh(
                &self,
                interval: Duration,
                expiration: Duration,
                timeout: Duration,
                max_retry: u32,
            ) -> Result<AutoRefresh> {
                <$ty>::auto_refresh(self, interval, expiration, timeout, max_retry)
            }
            fn unlock(self) -> impl Future<Output = Result<()>> + Send {
                <$ty>::unlock(self)
            }
        }
    };
}

held!(Lock, |lock| Some(lock.fencing_token()));
held!(RedlockLock, |_| None);

macro_rules! locker {
    ($ty:ty, $held:ty, $granularity:expr) => {
        impl Locker for $ty {
            type Held = $held;
            fn lock(
                &self,
                key: &str,
                val: &str,
                expiration: Duration,
                timeout: Duration,
                retry: impl RetryStrategy + 'static,
            ) -> impl Future<Output = Result<$held>> + Send {
                <$ty>::lock(self, key, val, expiration, timeout, retry)
            }
            fn try_lock(
                &self,
                key: &str,
                val: &str,
                expiration: Duration,
            ) -> impl Future<Output = Result<$held>> + Send {
                <$ty>::try_lock(self, key, val, expiration)
            }
            fn granularity(&self) -> Duration {
                let granularity: fn(&$ty) -> Duration = $granularity;
                granularity(self)
            }
        }
    };
}

locker!(Client, Lock, Client::granularity);
// Redlock's nodes are Redis masters: milliseconds.
locker!(Redlock, RedlockLock, |_| Duration::from_millis(1));
