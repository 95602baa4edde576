//! [`Backend`]: the store a client talks to. The built-in stores are a closed set,
//! dispatched statically (no boxed future per call: the memory store's lock+unlock is a
//! fraction of a microsecond); a store from outside the crate goes behind one pointer
//! ([`Custom`]).

use std::sync::Arc;
use std::time::Duration;

pub(crate) use super::dynamic::Custom;
#[cfg(feature = "etcd")]
use super::etcd;
use super::{Acquire, AttemptId, Fence, Fenced, Inspected, Store, Watch};
use super::{memory, quorum, redis};
use crate::Result;

/// One of the supported stores.
pub(crate) enum Backend {
    Memory(memory::MemoryStore),
    // Behind a pointer: a network store's state is large, and a pointer away costs
    // nothing next to a round trip. Shared: a Redlock quorum is made of the stores of
    // the clients it was built from.
    Redis(Arc<redis::RedisStore>),
    Redlock(Box<quorum::Quorum>),
    #[cfg(feature = "etcd")]
    Etcd(Box<etcd::EtcdStore>),
    /// A store from outside the crate, or one built on the public interface.
    Custom(Custom),
}

/// `dispatch!(backend, store => expression)`: the expression with `store` bound to the
/// concrete store of `backend`.
macro_rules! dispatch {
    ($backend:expr, $store:ident => $call:expr) => {
        match $backend {
            Backend::Memory($store) => $call,
            Backend::Redis($store) => $call,
            Backend::Redlock($store) => $call,
            #[cfg(feature = "etcd")]
            Backend::Etcd($store) => $call,
            Backend::Custom($store) => $call,
        }
    };
}

impl Backend {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Backend::Memory(_) => "memory",
            Backend::Redis(_) => "redis",
            Backend::Redlock(_) => "redlock",
            #[cfg(feature = "etcd")]
            Backend::Etcd(_) => "etcd",
            Backend::Custom(_) => "custom",
        }
    }

    /// [`Store::watch`] for the waiter `val` of `key`: a store that keeps waiters in line
    /// (etcd) wakes each for its own turn.
    pub(crate) fn watch_waiter(&self, key: &str, val: &str) -> Option<Watch> {
        match self {
            #[cfg(feature = "etcd")]
            Backend::Etcd(s) => s.watch_waiter(key, val),
            _ => {
                let _ = val;
                self.watch(key)
            }
        }
    }

    /// Whether a miss leaves the attempt's place in line in the store (etcd: its key,
    /// queued behind the holder, and the attempt's claim on it): then a `lock` call that
    /// ends without the lock must withdraw it, by aborting its attempts — those that got
    /// an answer too.
    pub(crate) fn queues(&self) -> bool {
        match self {
            #[cfg(feature = "etcd")]
            Backend::Etcd(s) => s.queues(),
            _ => false,
        }
    }

    /// Whether an attempt that did not grant the key may still have taken it on part of
    /// the store (a quorum over several nodes, some of which granted): then the client
    /// [aborts](Store::abort) every such attempt at once — deleting what it created —
    /// before it waits for another try.
    pub(crate) fn partial(&self) -> bool {
        matches!(self, Backend::Redlock(_))
    }
}

impl Store for Backend {
    fn granularity(&self) -> Duration {
        dispatch!(self, s => s.granularity())
    }

    fn grant(&self, expiration: Duration) -> Result<Duration> {
        dispatch!(self, s => s.grant(expiration))
    }

    async fn acquire(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
        attempt: AttemptId,
        label: &str,
        timeout: Duration,
    ) -> Result<Acquire> {
        dispatch!(self, s => s.acquire(key, val, expiration, attempt, label, timeout).await)
    }

    async fn refresh(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
        timeout: Duration,
    ) -> Result<bool> {
        dispatch!(self, s => s.refresh(key, val, expiration, timeout).await)
    }

    async fn release(&self, key: &str, val: &str, timeout: Duration) -> Result<bool> {
        dispatch!(self, s => s.release(key, val, timeout).await)
    }

    async fn abort(
        &self,
        key: &str,
        val: &str,
        attempts: &[AttemptId],
        undo: bool,
        timeout: Duration,
    ) -> Result<bool> {
        dispatch!(self, s => s.abort(key, val, attempts, undo, timeout).await)
    }

    async fn ttl(&self, key: &str, val: &str, timeout: Duration) -> Result<Option<Duration>> {
        dispatch!(self, s => s.ttl(key, val, timeout).await)
    }

    async fn force_release(&self, key: &str, only: Option<u64>, timeout: Duration) -> Result<bool> {
        dispatch!(self, s => s.force_release(key, only, timeout).await)
    }

    async fn inspect(&self, key: &str, timeout: Duration) -> Result<Option<Inspected>> {
        dispatch!(self, s => s.inspect(key, timeout).await)
    }

    async fn list(&self, prefix: &str, timeout: Duration) -> Result<Vec<Inspected>> {
        dispatch!(self, s => s.list(prefix, timeout).await)
    }

    async fn fenced(&self, access: &Fence<'_>, timeout: Duration) -> Result<Fenced> {
        dispatch!(self, s => s.fenced(access, timeout).await)
    }

    fn watch(&self, key: &str) -> Option<Watch> {
        dispatch!(self, s => s.watch(key))
    }
}
