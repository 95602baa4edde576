//! The stores a lock can live in, behind one crate-private interface.
//!
//! [`Store`] states the contract once; every store implements it with the same meaning,
//! and the client, the retry loop, renewal and fencing are written once on top of it.
//! [`Backend`] is the closed set of stores, dispatched statically (no boxed future per
//! call: the memory store's lock+unlock is a fraction of a microsecond). A new store is
//! a module here, a variant in [`Backend`] and an arm in [`dispatch!`]: `memory`,
//! `redis` (one server, Sentinel, Cluster) and `etcd` (feature `etcd`).

#[cfg(feature = "etcd")]
pub(crate) mod etcd;
pub(crate) mod memory;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
pub(crate) mod quorum;
pub(crate) mod redis;

use std::fmt;
use std::time::Duration;

use crate::Result;
use crate::wake::Watch;

/// The contract every store keeps. Keys and values arrive validated (non-empty);
/// durations are validated and whole milliseconds. Every operation that talks to a
/// server is one round trip bounded by `timeout` ([`crate::Error::Timeout`] past it).
/// Failures are classified by the store that saw them: [`crate::Error::is_transient`]
/// tells a failure another attempt could fix from one it cannot.
pub(crate) trait Store {
    /// What the store grants for a requested expiration: the same, or rounded to the
    /// store's granularity; [`crate::Error::InvalidArgument`] if it cannot be granted.
    fn grant(&self, expiration: Duration) -> Result<Duration>;

    /// Take `key` for `val` unless another value holds it. Idempotent, and the value is
    /// the holder's identity: if `val` already holds the key, re-arm it to exactly
    /// `expiration` (shorter or longer) and return the existing token. A fresh
    /// acquisition records `attempt` as the key's *creator* (what [`abort`](Store::abort)
    /// may undo). An attempt aborted before it reached the store is refused
    /// ([`Acquire::Refused`]: nothing done). A fresh acquisition also records `label`
    /// (the holder's label for operators, `""`: none) and when it was taken, both shown
    /// by [`inspect`](Store::inspect); a re-arm keeps what the acquisition recorded.
    async fn acquire(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
        attempt: AttemptId,
        label: &str,
        timeout: Duration,
    ) -> Result<Acquire>;

    /// Set the key's expiration to exactly `expiration` (shorter or longer) if `val`
    /// holds `key`. `false`: not held (gone, or another value), nothing changed.
    async fn refresh(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
        timeout: Duration,
    ) -> Result<bool>;

    /// Delete `key` if `val` holds it. `false`: not held, nothing changed.
    async fn release(&self, key: &str, val: &str, timeout: Duration) -> Result<bool>;

    /// Give up on acquire `attempts` of `key` for `val` (all of this client) whose
    /// outcome is unknown (their caller stopped waiting, or their connection was
    /// replaced): any of them that reaches the store later is refused, and, with `undo`,
    /// the key is deleted if `val` holds it and one of `attempts` created it — never a
    /// lock that was held before they began. The record of aborted attempts is one per
    /// key and client: the highest aborted attempt number, refusing every attempt of the
    /// client up to it (an earlier attempt still in flight is refused too, and its caller
    /// tries again). `true`: the key was deleted.
    async fn abort(
        &self,
        key: &str,
        val: &str,
        attempts: &[AttemptId],
        undo: bool,
        timeout: Duration,
    ) -> Result<bool>;

    /// Remaining time to live if `val` holds `key`; `None` if not. A key without expiry
    /// (set by hand) reports `Duration::MAX`.
    async fn pttl(&self, key: &str, val: &str, timeout: Duration) -> Result<Option<Duration>>;

    /// Delete `key` whoever holds it (an operator's decision), or only while its current
    /// incarnation has fencing token `only`. `false`: no lock there (or another token).
    async fn force_release(&self, key: &str, only: Option<u64>, timeout: Duration) -> Result<bool>;

    /// What an operator may see of the lock on `key`, if there is one. Each round trip
    /// is bounded by `timeout`.
    async fn inspect(&self, key: &str, timeout: Duration) -> Result<Option<Inspected>>;

    /// Every lock whose key starts with `prefix`, walking the whole keyspace in steps
    /// (never `KEYS`; on a cluster, every master), each round trip bounded by `timeout`.
    async fn list(&self, prefix: &str, timeout: Duration) -> Result<Vec<Inspected>>;

    /// Fenced access to a resource; see [`Fence`].
    async fn fenced(&self, access: &Fence<'_>, timeout: Duration) -> Result<Fenced>;

    /// Watch `key` for its release, for a `lock` call that missed and will wait: its
    /// [`Watch`] is woken when the key is released (one waiter per release), and every
    /// waiter of the key is woken once when the store's notifications for it are set up
    /// (or set up again after being lost), so that a release in between is not missed.
    /// `None`: this store does not notify; waiters poll under their retry strategy.
    fn watch(&self, _key: &str) -> Option<Watch> {
        None
    }

    /// [`watch`](Store::watch) for the waiter `val` of `key`: a store that keeps waiters
    /// in line wakes each for its own turn. Default: `watch(key)`.
    fn watch_waiter(&self, key: &str, _val: &str) -> Option<Watch> {
        self.watch(key)
    }

    /// Whether a miss leaves the attempt's place in line in the store (etcd: its key,
    /// queued behind the holder, and the attempt's claim on it): then a `lock` call that
    /// ends without the lock must withdraw it, by aborting its attempts — those that got
    /// an answer too.
    fn queues(&self) -> bool {
        false
    }

    /// Whether an attempt that did not grant the key may still have taken it on part of
    /// the store (a quorum over several nodes, some of which granted): then the client
    /// [aborts](Store::abort) every such attempt at once — deleting what it created —
    /// before it waits for another try.
    fn partial(&self) -> bool {
        false
    }
}

/// A lock as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Inspected {
    /// The key, as the store knows it.
    pub(crate) key: String,
    /// `None`: no expiry (set by hand).
    pub(crate) ttl: Option<Duration>,
    pub(crate) token: u64,
    /// A digest of the holder's value (the value itself is a secret).
    pub(crate) holder: String,
    /// The holder's label, if its client gave one.
    pub(crate) label: Option<String>,
    /// When the current incarnation was acquired (the store's clock where it has one),
    /// if recorded (with a label).
    pub(crate) locked_at: Option<std::time::SystemTime>,
}

/// Outcome of one acquire attempt that reached the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acquire {
    /// The key now holds our value; the fencing token of this acquisition.
    Acquired(u64),
    /// Another value holds the key, for this much longer if the store said (its
    /// expiry cannot be notified: a waiter wakes for it by the clock).
    Held(Option<Duration>),
    /// The key now holds our value on the master, but fewer replicas than asked for
    /// acknowledged it (`min_replicas`): a failover could lose it.
    Unreplicated { token: u64, acked: u32, wanted: u32 },
    /// An attempt of this client up to this one was aborted before it reached the store:
    /// it did nothing (another attempt, with a higher number, is not refused).
    Refused,
}

/// The identity of one acquire attempt: the client that sent it and its sequence
/// number there. Unique while the client lives (the client id is random).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct AttemptId {
    pub(crate) client: u64,
    pub(crate) seq: u64,
}

impl fmt::Display for AttemptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}:{}", self.client, self.seq)
    }
}

/// One fenced access to a resource: accepted when `token` is above the highest token
/// the resource has seen, or equal to it and from the same `holder` (a different holder
/// under an equal token — possible after a failover lost the counter — is refused). An
/// accepted token becomes the highest. `write: Some(v)` sets the resource; `None` reads.
///
/// No `Debug`: it carries a lock value.
#[derive(Clone, Copy)]
pub(crate) struct Fence<'a> {
    pub(crate) resource: &'a str,
    pub(crate) token: u64,
    /// The lock value of the holder; `None` for an anonymous (client-level) access.
    pub(crate) holder: Option<&'a str>,
    pub(crate) write: Option<&'a str>,
}

/// Outcome of a fenced access: the resource's value (for a read), or the highest token
/// that made this access stale.
pub(crate) type Fenced = std::result::Result<Option<String>, u64>;

/// One of the supported stores.
pub(crate) enum Backend {
    Memory(memory::MemoryStore),
    // Behind a pointer: a network store's state is large, and a pointer away costs
    // nothing next to a round trip. Shared: a Redlock quorum is made of the stores of
    // the clients it was built from.
    Redis(std::sync::Arc<redis::RedisStore>),
    Redlock(Box<quorum::Quorum>),
    #[cfg(feature = "etcd")]
    Etcd(Box<etcd::EtcdStore>),
    #[cfg(feature = "postgres")]
    Postgres(Box<postgres::PostgresStore>),
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
            #[cfg(feature = "postgres")]
            Backend::Postgres($store) => $call,
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
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => "postgres",
        }
    }
}

impl Store for Backend {
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

    async fn pttl(&self, key: &str, val: &str, timeout: Duration) -> Result<Option<Duration>> {
        dispatch!(self, s => s.pttl(key, val, timeout).await)
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

    fn watch_waiter(&self, key: &str, val: &str) -> Option<Watch> {
        dispatch!(self, s => s.watch_waiter(key, val))
    }

    fn queues(&self) -> bool {
        dispatch!(self, s => s.queues())
    }

    fn partial(&self) -> bool {
        dispatch!(self, s => s.partial())
    }
}
