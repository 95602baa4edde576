//! The blocking Redlock: [`crate::redlock`] without `.await`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::client::Client;
use super::lock::Lock;
use super::refresh::AutoRefresh;
use super::runtime::{Runtime, runtime_failed};
use super::wait;
#[cfg(doc)]
use crate::Error;
use crate::{Result, RetryStrategy};

/// A lock client over N independent Redis masters: [`crate::redlock::Redlock`] with
/// blocking methods, driven by a background runtime thread. Read the
/// [`redlock` module docs](crate::redlock) for the algorithm and what it cannot promise.
///
/// Cheap to clone, `Send + Sync + 'static`. Its locks keep its runtime thread (and, for
/// one built [from clients](Redlock::from_clients), theirs) alive.
#[derive(Clone)]
pub struct Redlock {
    inner: crate::redlock::Redlock,
    rt: Arc<Runtime>,
    /// Runtime threads that drive some nodes' connections (from clients).
    nodes: Arc<[Arc<Runtime>]>,
}

impl fmt::Debug for Redlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}

/// Configures a blocking [`Redlock`]: [`crate::redlock::RedlockBuilder`] with blocking
/// `open`.
///
/// **Each node is a different server.** [`open`](RedlockBuilder::open) refuses, with
/// [`Error::InvalidArgument`] naming both URLs (never their passwords), two URLs that
/// reach one server, however they are spelled: the same text before any I/O, then two
/// nodes whose servers report the same `run_id` (`INFO server`) — `redis://h:6379` and
/// `redis://h:6379/`, `localhost` and `127.0.0.1`, two databases of one server.
/// [`from_clients`](RedlockBuilder::from_clients) does no I/O and only refuses the same
/// client twice.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct RedlockBuilder {
    inner: crate::redlock::RedlockBuilder,
}

impl RedlockBuilder {
    /// A builder with the documented defaults.
    pub const fn new() -> Self {
        RedlockBuilder {
            inner: crate::redlock::RedlockBuilder::new(),
        }
    }

    /// Bound on one attempt for [`Redlock::try_lock`]; see
    /// [`crate::redlock::RedlockBuilder::default_timeout`].
    pub fn default_timeout(self, timeout: Duration) -> Self {
        RedlockBuilder {
            inner: self.inner.default_timeout(timeout),
        }
    }

    /// Bound on establishing each node's connection; see
    /// [`crate::redlock::RedlockBuilder::connect_timeout`].
    pub fn connect_timeout(self, timeout: Duration) -> Self {
        RedlockBuilder {
            inner: self.inner.connect_timeout(timeout),
        }
    }

    /// What every key the Redlock writes on its nodes starts with; see
    /// [`crate::redlock::RedlockBuilder::key_prefix`]. Default: none.
    pub fn key_prefix(self, prefix: impl Into<String>) -> Self {
        RedlockBuilder {
            inner: self.inner.key_prefix(prefix),
        }
    }

    /// Trust this root certificate (PEM) for `rediss://` nodes.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_root_certificate(self, pem: impl Into<Vec<u8>>) -> Self {
        RedlockBuilder {
            inner: self.inner.tls_root_certificate(pem),
        }
    }

    /// Start a runtime thread and connect to every node in `urls` from it, refusing two
    /// URLs that reach one server (see [above](RedlockBuilder)); see
    /// [`crate::redlock::Redlock::open`].
    ///
    /// # Errors
    ///
    /// As [`crate::redlock::Redlock::open`] ([`Error::InvalidArgument`] for one server
    /// named twice); [`Error::Store`] when the runtime thread cannot be started.
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[track_caller]
    pub fn open(self, urls: &[&str]) -> Result<Redlock> {
        wait::enter("RedlockBuilder::open");
        let rt = Arc::new(Runtime::start().map_err(runtime_failed)?);
        let urls: Vec<String> = urls.iter().map(|u| (*u).to_owned()).collect();
        let builder = self.inner;
        // The connections spawn their tasks where they are created: on the runtime.
        let inner = rt.run("RedlockBuilder::open", async move {
            let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
            builder.open(&urls).await
        })?;
        Ok(Redlock {
            inner,
            rt,
            nodes: Arc::new([]),
        })
    }

    /// A Redlock over the connections of blocking `clients`; see
    /// [`crate::redlock::Redlock::from_clients`]. Each client's runtime thread keeps
    /// driving its connection; the Redlock runs on the first one's.
    ///
    /// # Errors
    ///
    /// As [`crate::redlock::Redlock::from_clients`].
    pub fn from_clients(self, clients: Vec<Client>) -> Result<Redlock> {
        let (clients, runtimes): (Vec<crate::Client>, Vec<Arc<Runtime>>) =
            clients.into_iter().map(Client::into_parts).unzip();
        let inner = self.inner.from_clients(clients)?;
        let rt = Arc::clone(&runtimes[0]); // from_clients refused an empty list
        Ok(Redlock {
            inner,
            rt,
            nodes: runtimes.into(),
        })
    }
}

impl Redlock {
    /// A [`RedlockBuilder`] with the documented defaults.
    pub const fn builder() -> RedlockBuilder {
        RedlockBuilder::new()
    }

    /// Start a runtime thread and connect to the Redis masters at `urls` with default
    /// settings, refusing two URLs that reach one server (see [`RedlockBuilder`]); see
    /// [`crate::redlock::Redlock::open`].
    ///
    /// # Errors
    ///
    /// As [`crate::redlock::Redlock::open`] ([`Error::InvalidArgument`] for one server
    /// named twice); [`Error::Store`] when the runtime thread cannot be started.
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[track_caller]
    pub fn open(urls: &[&str]) -> Result<Redlock> {
        RedlockBuilder::new().open(urls)
    }

    /// A Redlock over the connections of blocking Redis `clients`; see
    /// [`crate::redlock::Redlock::from_clients`].
    ///
    /// # Errors
    ///
    /// As [`crate::redlock::Redlock::from_clients`].
    pub fn from_clients(clients: Vec<Client>) -> Result<Redlock> {
        RedlockBuilder::new().from_clients(clients)
    }

    /// How many nodes there are.
    pub fn nodes(&self) -> usize {
        self.inner.nodes()
    }

    /// How many nodes must agree: N/2 + 1.
    pub fn quorum(&self) -> usize {
        self.inner.quorum()
    }

    /// Acquire `key` for `val` on a quorum of nodes, retrying under `retry`: the blocking
    /// form of [`crate::redlock::Redlock::lock`], with the same semantics (one round trip
    /// to every node per attempt, a failed attempt cleaned up on every node before the
    /// strategy is asked for a delay, no sleep after the last attempt).
    ///
    /// # Errors
    ///
    /// As [`crate::redlock::Redlock::lock`]: [`Error::InvalidArgument`],
    /// [`Error::NotObtained`], [`Error::Quorum`].
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)); a
    /// panic inside `retry` propagates to the caller.
    #[track_caller]
    pub fn lock(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
        timeout: Duration,
        retry: impl RetryStrategy,
    ) -> Result<RedlockLock> {
        let lock = self.rt.run(
            "Redlock::lock",
            self.inner.lock(key, val, expiration, timeout, retry),
        )?;
        Ok(self.held(lock))
    }

    /// One attempt to acquire `key` for `val`: the blocking form of
    /// [`crate::redlock::Redlock::try_lock`].
    ///
    /// # Errors
    ///
    /// As [`lock`](Redlock::lock).
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[track_caller]
    pub fn try_lock(&self, key: &str, val: &str, expiration: Duration) -> Result<RedlockLock> {
        let lock = self.rt.run(
            "Redlock::try_lock",
            self.inner.try_lock(key, val, expiration),
        )?;
        Ok(self.held(lock))
    }

    fn held(&self, lock: crate::redlock::RedlockLock) -> RedlockLock {
        RedlockLock {
            inner: Lock::new(lock.into_lock(), Arc::clone(&self.rt)),
            _nodes: Arc::clone(&self.nodes),
        }
    }
}

/// A lock held on a quorum of nodes: [`crate::redlock::RedlockLock`] with blocking
/// methods, a [`blocking::Lock`](Lock) underneath. It has no fencing token. Dropping it
/// does **not** release it.
#[must_use = "a RedlockLock dropped at once keeps its key until the key expires: bind it (`let lock = …`) and `unlock()` it when done"]
pub struct RedlockLock {
    /// The lock on the quorum store, on the Redlock's runtime thread.
    inner: Lock,
    /// Runtime threads that drive some nodes' connections (from clients).
    _nodes: Arc<[Arc<Runtime>]>,
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
    /// The locked key.
    pub fn key(&self) -> &str {
        self.inner.key()
    }

    /// The value this lock holds the key with (a secret).
    pub fn value(&self) -> &str {
        self.inner.value()
    }

    /// The expiration the lock was acquired with.
    pub fn expiration(&self) -> Duration {
        self.inner.expiration()
    }

    /// How much longer a quorum certainly holds the lock, computed locally; see
    /// [`crate::redlock::RedlockLock::valid_for`].
    pub fn valid_for(&self) -> Option<Duration> {
        self.inner.valid_for()
    }

    /// Whether this lock must be considered lost: `valid_for().is_none()`.
    pub fn is_lost(&self) -> bool {
        self.inner.is_lost()
    }

    /// Re-arm the expiration on every node that still holds this value; succeeds once a
    /// quorum did, and never releases on failure. See
    /// [`crate::redlock::RedlockLock::refresh`].
    ///
    /// # Errors
    ///
    /// As [`crate::redlock::RedlockLock::refresh`]: [`Error::NotHeld`],
    /// [`Error::Quorum`].
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[track_caller]
    pub fn refresh(&self) -> Result<()> {
        wait::enter("RedlockLock::refresh");
        self.inner.refresh()
    }

    /// How long a majority of nodes still holds the key for this value; see
    /// [`crate::redlock::RedlockLock::ttl`].
    ///
    /// # Errors
    ///
    /// As [`crate::redlock::RedlockLock::ttl`].
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[track_caller]
    pub fn ttl(&self) -> Result<Option<Duration>> {
        wait::enter("RedlockLock::ttl");
        self.inner.ttl()
    }

    /// Renew this lock in the background, on the runtime thread; see
    /// [`crate::redlock::RedlockLock::auto_refresh`]. Does not block.
    ///
    /// # Errors
    ///
    /// As [`crate::redlock::RedlockLock::auto_refresh`].
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

    /// Stop any auto-refresh, then release the key on every node; see
    /// [`crate::redlock::RedlockLock::unlock`].
    ///
    /// # Errors
    ///
    /// As [`crate::redlock::RedlockLock::unlock`]: [`Error::NotHeld`],
    /// [`Error::Quorum`].
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[track_caller]
    pub fn unlock(self) -> Result<()> {
        wait::enter("RedlockLock::unlock");
        // The nodes' runtime threads outlive the release.
        let RedlockLock { inner, _nodes } = self;
        inner.unlock()
    }

    /// Park until this lock must be considered lost; see
    /// [`crate::redlock::RedlockLock::lost`].
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[track_caller]
    pub fn wait_lost(&self) {
        wait::enter("RedlockLock::wait_lost");
        self.inner.wait_lost();
    }

    /// Park until this lock must be considered lost or `timeout` passes; `true` if lost.
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[track_caller]
    pub fn wait_lost_timeout(&self, timeout: Duration) -> bool {
        wait::enter("RedlockLock::wait_lost_timeout");
        self.inner.wait_lost_timeout(timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_redlock_types_are_send_sync() {
        fn assert<T: Send + Sync + 'static>() {}
        assert::<Redlock>();
        assert::<RedlockLock>();
        assert::<RedlockBuilder>();
    }

    #[test]
    fn only_redis_clients_make_nodes() {
        let err = Redlock::from_clients(vec![Client::memory()]).unwrap_err();
        assert!(err.is_invalid_argument(), "{err:?}");
        let err = Redlock::from_clients(Vec::new()).unwrap_err();
        assert!(err.is_invalid_argument(), "{err:?}");
    }
}
