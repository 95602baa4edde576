//! The surface the async conformance cases use, implemented by every lock API that keeps
//! the contract's semantics: [`leasehold::Client`] (on every store) and
//! [`leasehold::redlock::Redlock`] (every case but those of fencing tokens and
//! inspection, which Redlock does not offer).

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use leasehold::redlock::{Redlock, RedlockLock};
use leasehold::{AutoRefresh, Client, Lock, Result, RetryStrategy};

/// Takes locks: `Client` or `Redlock`.
pub trait Locker: Clone + Debug + Send + Sync + 'static {
    type Held: Held;
    fn lock(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
        timeout: Duration,
        retry: impl RetryStrategy + 'static,
    ) -> impl Future<Output = Result<Self::Held>> + Send;
    fn try_lock(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
    ) -> impl Future<Output = Result<Self::Held>> + Send;
}

/// A held lock: `Lock` or `RedlockLock`.
pub trait Held: Debug + Send + Sync + 'static {
    fn key(&self) -> &str;
    fn value(&self) -> &str;
    /// The expiration granted (etcd: in whole seconds).
    fn expiration(&self) -> Duration;
    /// `None` where the lock has no fencing token (Redlock).
    fn fencing_token(&self) -> Option<u64>;
    fn valid_for(&self) -> Option<Duration>;
    fn refresh(&self) -> impl Future<Output = Result<()>> + Send;
    fn ttl(&self) -> impl Future<Output = Result<Option<Duration>>> + Send;
    fn lost(&self) -> impl Future<Output = ()> + Send;
    fn auto_refresh(
        &self,
        interval: Duration,
        expiration: Duration,
        timeout: Duration,
        max_retry: u32,
    ) -> Result<AutoRefresh>;
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
    ($ty:ty, $held:ty) => {
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
        }
    };
}

locker!(Client, Lock);
locker!(Redlock, RedlockLock);
