//! The store interface: what a lock store promises, for stores outside this crate.
//!
//! Every store — the built-in ones (memory, Redis, Redis Cluster, Sentinel, Redlock, etcd)
//! and yours — keeps one contract, [`Store`]. The client, the retry loop, renewal, the
//! fencing helpers, hand-off and the blocking facade are written once on top of it. To
//! bring your own (DynamoDB, ZooKeeper, Consul, an in-house service), implement [`Store`]
//! and open a client on it with [`Client::from_store`](crate::Client::from_store) (or
//! [`blocking::Client::from_store`](crate::blocking::Client::from_store)); then prove it
//! with the published kit, `leasehold::testing` (feature `testing`): the conformance
//! cases, the fault cases and the history checker that the built-in stores pass.
//!
//! # The obligations
//!
//! A store is a map from keys to *leases*: a value (the holder's identity), an expiry,
//! and a fencing token. Keys and values arrive validated (non-empty, any bytes of UTF-8);
//! durations arrive validated and in whole milliseconds, at most
//! [`MAX_DURATION`](crate::MAX_DURATION).
//!
//! * **The value is the identity.** Every operation that names a value acts only while the
//!   key holds that value (*owner check*), in one atomic step on the store: never a read
//!   of the holder followed by a separate write.
//! * **Expiry on one clock.** A lease ends `expiration` after the store granted it, on the
//!   store's clock (the client assumes no clock agreement between hosts; it measures its
//!   own validity from when it sent the request). A store whose clock cannot keep
//!   milliseconds says so with [`Store::granularity`].
//! * **Tokens rise per key.** Every fresh acquisition of a key gets a token strictly
//!   greater than every earlier acquisition of the same key, whichever client took it and
//!   even after the key expired or was deleted. A re-arm (the holder acquiring again)
//!   keeps its token.
//! * **Bounded round trips.** Each operation that talks to a server finishes within
//!   `timeout` or fails with [`Error::Timeout`]. Failures are
//!   classified: [`Error::is_transient`](crate::Error::is_transient) tells one another
//!   attempt could fix from one it cannot; build yours with [`StoreError`].
//! * **Idempotent under re-send.** `acquire`, `refresh`, `ttl` and `abort` may be sent again
//!   by the client after a timeout; running one twice must leave what running it once
//!   does. `release` and `force_release` are never sent again blindly: when their answer
//!   is lost, the store returns [`Error::Indeterminate`] (or
//!   a timeout) and does not retry them itself.
//! * **Cancellation.** Any future may be dropped at any `.await`. A dropped `acquire` may
//!   still land: the client then calls [`Store::abort`], which must make the attempt
//!   harmless whether it landed before, or lands after, the abort. The state kept for
//!   aborts is bounded per key and client, whatever the number of attempts.
//!
//! Optional extras ([`inspect`](Store::inspect), [`list`](Store::list),
//! [`force_release`](Store::force_release), [`fenced`](Store::fenced),
//! [`watch`](Store::watch)) have defaults: the operator calls fail with a non-transient
//! [`StoreError`] naming what is missing, and waiters poll under their retry strategy.
//!
//! # Example
//!
//! `examples/custom_store.rs` is a whole store over a `HashMap` that passes the
//! conformance kit, in about 150 lines.

mod backend;
mod dynamic;
#[cfg(feature = "etcd")]
pub(crate) mod etcd;
pub(crate) mod memory;
mod open;
#[cfg(feature = "postgres")]
pub mod postgres;
pub(crate) mod quorum;
pub(crate) mod redis;
mod types;

use std::future::Future;
use std::time::Duration;

pub(crate) use backend::{Backend, Custom};
pub(crate) use open::{Options, open};
pub use types::{Acquire, AttemptId, Fence, Fenced, Inspected};

pub use crate::error::StoreError;
pub use crate::wake::{Waiters, Watch};
use crate::{Error, Result};

/// The contract every lock store keeps; see the [module docs](self) for the obligations
/// every method shares. Implement the required core (`granularity`, `acquire`, `refresh`,
/// `release`, `abort`, `ttl`); the extras have defaults.
///
/// The futures are `Send`: a client's locks are renewed from spawned tasks. Write the
/// methods as `async fn` in your `impl`.
pub trait Store: Send + Sync + 'static {
    /// The finest expiration the store can grant: `Duration::from_millis(1)` for a store
    /// that keeps milliseconds, `Duration::from_secs(1)` for one that keeps whole seconds
    /// (etcd). Expirations are rounded up to it ([`grant`](Store::grant)), and the
    /// conformance kit checks timing to it.
    fn granularity(&self) -> Duration;

    /// What the store grants for a requested expiration: by default the expiration
    /// rounded up to [`granularity`](Store::granularity).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if it cannot be granted
    /// (a store with a minimum lease, say).
    fn grant(&self, expiration: Duration) -> Result<Duration> {
        let step = self.granularity().as_nanos().max(1);
        let rounded = expiration.as_nanos().div_ceil(step) * step;
        u64::try_from(rounded)
            .map(Duration::from_nanos)
            .map_err(|_| Error::invalid("expiration: too long for this store"))
    }

    /// Take `key` for `val` unless another value holds it.
    ///
    /// * Free (never held, expired, or released): hold it for `expiration`, with a token
    ///   above every earlier one of this key ([`Acquire::Acquired`]). Record `attempt` as
    ///   the acquisition's *creator* (what [`abort`](Store::abort) may undo), `label` (the
    ///   holder's label for operators; `""`: none) and when it was taken.
    /// * Held by `val`: re-arm it to exactly `expiration` (shorter or longer) and return
    ///   its token; keep its creator, label and time.
    /// * Held by another value: change nothing; [`Acquire::Held`], with the time left if
    ///   known.
    /// * `attempt` is at or below this client's highest aborted attempt on `key`: change
    ///   nothing; [`Acquire::Refused`].
    ///
    /// A store may also fail with
    /// [`Error::NotReplicated`] after the write ran but was
    /// not made durable: the client then aborts the attempt (deleting what it created).
    ///
    /// # Cancel safety
    ///
    /// Dropped, the attempt may still land later; the client aborts it.
    fn acquire(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
        attempt: AttemptId,
        label: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<Acquire>> + Send;

    /// Set the expiration of `key` to exactly `expiration` (shorter or longer) if `val`
    /// holds it. `false`: not held (gone, or another value); nothing changed.
    fn refresh(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
        timeout: Duration,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Delete `key` if `val` holds it (waking its waiters, for a store that
    /// [notifies](Store::watch)). `false`: not held; nothing changed. Never re-sent
    /// blindly: a lost answer is [`Error::Indeterminate`].
    fn release(
        &self,
        key: &str,
        val: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Give up on acquire `attempts` of `key` for `val` (all of one client) whose outcome
    /// is unknown (their caller stopped waiting, or their answer was lost):
    ///
    /// * any of them that reaches the store later is refused ([`Acquire::Refused`]): keep,
    ///   per key and client, the highest aborted attempt number, and refuse every attempt
    ///   of that client up to it — one record per key and client, never one per attempt;
    /// * with `undo`, delete the key if `val` holds it **and** one of `attempts` created
    ///   it — never a lock that was held before they began.
    ///
    /// `true`: the key was deleted. The records may expire after [`ABORT_MEMORY`], past
    /// which no attempt sent before them can still arrive.
    fn abort(
        &self,
        key: &str,
        val: &str,
        attempts: &[AttemptId],
        undo: bool,
        timeout: Duration,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Time left on `key` if `val` holds it; `None` if not. A key without expiry (set by
    /// hand) reports `Duration::MAX`.
    fn ttl(
        &self,
        key: &str,
        val: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<Option<Duration>>> + Send;

    /// Delete `key` whoever holds it (an operator's decision), or only while its current
    /// acquisition has token `only`. `false`: no lock there (or another token). Never
    /// re-sent blindly. Default: fails, unsupported.
    fn force_release(
        &self,
        _key: &str,
        _only: Option<u64>,
        _timeout: Duration,
    ) -> impl Future<Output = Result<bool>> + Send {
        async { Err(unsupported("force_release")) }
    }

    /// What an operator may see of the lock on `key`, if there is one. Default: fails,
    /// unsupported.
    fn inspect(
        &self,
        _key: &str,
        _timeout: Duration,
    ) -> impl Future<Output = Result<Option<Inspected>>> + Send {
        async { Err(unsupported("inspect")) }
    }

    /// Every lock whose key starts with `prefix` (in steps, never blocking the store),
    /// each round trip bounded by `timeout`. Default: fails, unsupported.
    fn list(
        &self,
        _prefix: &str,
        _timeout: Duration,
    ) -> impl Future<Output = Result<Vec<Inspected>>> + Send {
        async { Err(unsupported("list")) }
    }

    /// A fenced access to a resource kept in the store; see [`Fence`]. One atomic step:
    /// compare the token with the resource's highest, then read or write. Default: fails,
    /// unsupported.
    fn fenced(
        &self,
        _access: &Fence<'_>,
        _timeout: Duration,
    ) -> impl Future<Output = Result<Fenced>> + Send {
        async { Err(unsupported("fenced resources")) }
    }

    /// Watch `key` for its release, for a `lock` call that missed and will wait: keep a
    /// [`Waiters`] and return its [`Watch`]; call [`Waiters::released`] when the key is
    /// released (one waiter per release: no herd), and [`Waiters::wake_key`] when the
    /// store's notifications for it are set up (or set up again after being lost), so that
    /// a release in between is not missed. Default: `None` — waiters poll under their
    /// retry strategy.
    fn watch(&self, _key: &str) -> Option<Watch> {
        None
    }
}

/// How long a store remembers an abort ([`Store::abort`]): an attempt still in flight
/// after this long is not expected (an hour; a round trip is bounded by seconds).
pub const ABORT_MEMORY: Duration = Duration::from_secs(60 * 60);

/// A digest of a lock value, as operators see a holder ([`Inspected::holder`]): stable for
/// one value, never the value.
pub fn holder_digest(value: &str) -> String {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let digest = BuildHasherDefault::<DefaultHasher>::default().hash_one(value);
    format!("{digest:016x}")
}

/// The error of an optional extra a store does not offer.
fn unsupported(what: &str) -> Error {
    Error::Store(StoreError::new(
        "store",
        false,
        format!("{what} is not supported by this store"),
    ))
}
