//! The blocking client and the runtime thread it owns.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::lock::Lock;
use super::runtime::{Runtime, runtime_failed};
use super::wait;
#[cfg(doc)]
use crate::Error;
use crate::{Result, RetryStrategy};

/// A synchronous lock client: [`crate::Client`] driven by a background runtime thread.
///
/// Cheap to clone, `Send + Sync + 'static`; clones share one runtime thread and one
/// connection. [`Lock`]s and [`AutoRefresh`](super::AutoRefresh)es keep both alive; when
/// the last client, lock and auto-refresh is dropped, the thread shuts down.
///
/// See the [module documentation](super) for the threading model.
#[derive(Clone)]
pub struct Client {
    pub(super) inner: crate::Client,
    pub(super) rt: Arc<Runtime>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The async client's Debug redacts credentials.
        fmt::Debug::fmt(&self.inner, f)
    }
}

/// Configures a blocking [`Client`] before it connects: [`crate::ClientBuilder`] with
/// blocking `open`.
///
/// ```
/// use std::time::Duration;
/// let client = leasehold::blocking::Client::builder()
///     .default_timeout(Duration::from_millis(500))
///     .open("memory://")?;
/// # Ok::<(), leasehold::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct ClientBuilder {
    inner: crate::ClientBuilder,
}

impl ClientBuilder {
    /// A builder with the documented defaults.
    pub const fn new() -> Self {
        ClientBuilder {
            inner: crate::ClientBuilder::new(),
        }
    }

    /// Bound on one round trip for [`Client::try_lock`]. Default:
    /// [`DEFAULT_TIMEOUT`](crate::Client::DEFAULT_TIMEOUT) (1 s). Validated (at least 1 ms, at
    /// most [`MAX_DURATION`](crate::MAX_DURATION)) when the client is built.
    pub fn default_timeout(self, timeout: Duration) -> Self {
        ClientBuilder {
            inner: self.inner.default_timeout(timeout),
        }
    }

    /// Bound on establishing (and re-establishing) a connection to Redis. Default:
    /// [`DEFAULT_CONNECT_TIMEOUT`](crate::Client::DEFAULT_CONNECT_TIMEOUT) (5 s). Validated like
    /// `default_timeout`.
    pub fn connect_timeout(self, timeout: Duration) -> Self {
        ClientBuilder {
            inner: self.inner.connect_timeout(timeout),
        }
    }

    /// Start every key this client writes with `prefix`; see
    /// [`crate::ClientBuilder::key_prefix`].
    pub fn key_prefix(self, prefix: impl Into<String>) -> Self {
        ClientBuilder {
            inner: self.inner.key_prefix(prefix),
        }
    }

    /// A label stored with every lock this client takes, for operators; see
    /// [`crate::ClientBuilder::holder_label`].
    pub fn holder_label(self, label: impl Into<String>) -> Self {
        ClientBuilder {
            inner: self.inner.holder_label(label),
        }
    }

    /// Whether waiters wake when a key is released or its holder's lease runs out; see
    /// [`crate::ClientBuilder::notify`].
    pub fn notify(self, on: bool) -> Self {
        ClientBuilder {
            inner: self.inner.notify(on),
        }
    }

    /// The Redis client for the subscriber connection of a client on your own
    /// connection; see [`crate::ClientBuilder::notifier`].
    pub fn notifier(self, client: redis::Client) -> Self {
        ClientBuilder {
            inner: self.inner.notifier(client),
        }
    }

    /// Wait for `replicas` replicas (at most `timeout`) after every acquire and refresh;
    /// see [`crate::ClientBuilder::min_replicas`].
    pub fn min_replicas(self, replicas: u32, timeout: Duration) -> Self {
        ClientBuilder {
            inner: self.inner.min_replicas(replicas, timeout),
        }
    }

    /// Trust this root certificate (PEM) for `rediss://`; see
    /// [`crate::ClientBuilder::tls_root_certificate`].
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_root_certificate(self, pem: impl Into<Vec<u8>>) -> Self {
        ClientBuilder {
            inner: self.inner.tls_root_certificate(pem),
        }
    }

    /// Start a runtime thread and open a client for `url` on it; see [`Client::open`].
    ///
    /// # Errors
    ///
    /// * [`Error::InvalidArgument`] for an unparsable URL, an unsupported scheme or a bad
    ///   duration set on the builder (before any I/O);
    /// * [`Error::Redis`] when the server cannot be reached, rejects the credentials or
    ///   is not a Redis server (the message names it, never the password);
    /// * a timeout ([`Error::is_timeout`]) when connecting took longer than the connect
    ///   timeout: on Redis an [`Error::Redis`] that names the server;
    /// * [`Error::Store`] when the runtime thread cannot be started.
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[track_caller]
    pub fn open(self, url: &str) -> Result<Client> {
        wait::enter("ClientBuilder::open");
        let rt = Arc::new(Runtime::start().map_err(runtime_failed)?);
        let (builder, url) = (self.inner, url.to_owned());
        // The connection manager spawns its tasks where it is created: on the runtime.
        let inner = rt.run(
            "ClientBuilder::open",
            async move { builder.open(&url).await },
        )?;
        Ok(Client { inner, rt })
    }

    /// Start a runtime thread and open a client on the Redis Cluster that `urls` belong
    /// to; see [`crate::Client::open_cluster`].
    ///
    /// # Errors
    ///
    /// As [`crate::Client::open_cluster`], and [`Error::InvalidArgument`] for a bad
    /// setting on the builder.
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    #[track_caller]
    pub fn open_cluster(self, urls: &[&str]) -> Result<Client> {
        let urls: Vec<String> = urls.iter().map(|u| (*u).to_owned()).collect();
        self.open_with("ClientBuilder::open_cluster", async move |builder| {
            let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
            builder.open_cluster(&urls).await
        })
    }

    /// Start a runtime thread and open a client on the master that the sentinels at
    /// `sentinels` call `master_name`; see [`crate::Client::open_sentinel`].
    ///
    /// # Errors
    ///
    /// As [`crate::Client::open_sentinel`], and [`Error::InvalidArgument`] for a bad
    /// setting on the builder.
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[cfg(feature = "sentinel")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sentinel")))]
    #[track_caller]
    pub fn open_sentinel(self, sentinels: &[&str], master_name: &str) -> Result<Client> {
        let sentinels: Vec<String> = sentinels.iter().map(|u| (*u).to_owned()).collect();
        let master_name = master_name.to_owned();
        self.open_with("ClientBuilder::open_sentinel", async move |builder| {
            let sentinels: Vec<&str> = sentinels.iter().map(String::as_str).collect();
            builder.open_sentinel(&sentinels, &master_name).await
        })
    }

    /// Start a runtime thread, and open the async client with `open` on it (the
    /// connection spawns its tasks where it is created: on the runtime).
    #[cfg(any(feature = "cluster", feature = "sentinel"))]
    #[track_caller]
    fn open_with(
        self,
        what: &str,
        open: impl AsyncFnOnce(crate::ClientBuilder) -> Result<crate::Client>,
    ) -> Result<Client> {
        wait::enter(what);
        let rt = Arc::new(Runtime::start().map_err(runtime_failed)?);
        let inner = rt.run(what, open(self.inner))?;
        Ok(Client { inner, rt })
    }

    /// Start a runtime thread for a client on a private in-process store that only its
    /// clones share; see [`Client::memory`].
    ///
    /// # Panics
    ///
    /// If `default_timeout` was set outside 1 ms ..= [`MAX_DURATION`](crate::MAX_DURATION),
    /// or if the runtime thread cannot be started.
    pub fn memory(self) -> Client {
        let rt = Runtime::start()
            .unwrap_or_else(|e| panic!("leasehold: cannot start the runtime thread: {e}"));
        Client {
            inner: self.inner.memory(),
            rt: Arc::new(rt),
        }
    }

    /// A client on `store`, a store of your own (see [`crate::store`]), with this
    /// builder's settings: the blocking form of [`crate::ClientBuilder::from_store`]. The
    /// store's futures run on the client's runtime thread.
    ///
    /// # Panics
    ///
    /// If `default_timeout` was set outside 1 ms ..= [`MAX_DURATION`](crate::MAX_DURATION),
    /// or if the runtime thread cannot be started.
    pub fn from_store(self, store: impl crate::store::Store) -> Client {
        let rt = Runtime::start()
            .unwrap_or_else(|e| panic!("leasehold: cannot start the runtime thread: {e}"));
        Client {
            inner: self.inner.from_store(store),
            rt: Arc::new(rt),
        }
    }
}

impl From<crate::ClientBuilder> for ClientBuilder {
    /// The blocking builder with the async builder's settings.
    fn from(inner: crate::ClientBuilder) -> Self {
        ClientBuilder { inner }
    }
}

impl Client {
    /// A [`ClientBuilder`] with the documented defaults.
    pub const fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// Start a runtime thread and open a client on it with default settings. The URL forms
    /// are those of [`crate::Client::open`]: `redis://…`, `rediss://…` (feature `tls`),
    /// `redis+unix://…`, `unix://…`, `memory://` and `memory://NAME`.
    ///
    /// The Redis connection reconnects by itself on the runtime thread, whatever the
    /// calling thread is doing.
    ///
    /// # Errors
    ///
    /// * [`Error::InvalidArgument`] for an unparsable URL or an unsupported scheme;
    /// * [`Error::Redis`] when the server cannot be reached, rejects the credentials or
    ///   is not a Redis server (the message names it, never the password);
    /// * a timeout ([`Error::is_timeout`]) when connecting took longer than the connect
    ///   timeout: on Redis an [`Error::Redis`] that names the server;
    /// * [`Error::Store`] when the runtime thread cannot be started.
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[track_caller]
    pub fn open(url: &str) -> Result<Client> {
        wait::enter("Client::open");
        ClientBuilder::new().open(url)
    }

    /// Start a runtime thread and open a client on a Redis Cluster with default settings;
    /// see [`crate::Client::open_cluster`].
    ///
    /// # Errors
    ///
    /// As [`crate::Client::open_cluster`].
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    #[track_caller]
    pub fn open_cluster(urls: &[&str]) -> Result<Client> {
        ClientBuilder::new().open_cluster(urls)
    }

    /// Start a runtime thread and open a client on a sentinel-managed master with
    /// default settings; see [`crate::Client::open_sentinel`].
    ///
    /// # Errors
    ///
    /// As [`crate::Client::open_sentinel`].
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[cfg(feature = "sentinel")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sentinel")))]
    #[track_caller]
    pub fn open_sentinel(sentinels: &[&str], master_name: &str) -> Result<Client> {
        ClientBuilder::new().open_sentinel(sentinels, master_name)
    }

    /// Start a runtime thread for a client on a fresh, private in-process store, shared
    /// only by its clones: ideal for unit tests. Does not block, so it may also be called
    /// inside an async runtime (but the client's blocking methods may not).
    ///
    /// # Panics
    ///
    /// If the runtime thread cannot be started.
    pub fn memory() -> Client {
        ClientBuilder::new().memory()
    }

    /// A client on `store`, a store of your own (see [`crate::store`]): the blocking form
    /// of [`crate::Client::from_store`], with default settings.
    ///
    /// # Panics
    ///
    /// If the runtime thread cannot be started.
    pub fn from_store(store: impl crate::store::Store) -> Client {
        ClientBuilder::new().from_store(store)
    }

    /// Acquire `key` for `val`, retrying under `retry` while another value holds it: the
    /// blocking form of [`crate::Client::lock`], with the same semantics (idempotent
    /// acquire, one round trip per attempt bounded by `timeout`, no sleep after the last
    /// attempt, an owner-checked release of an attempt that may have landed when this
    /// call gives up).
    ///
    /// The strategy is asked for its delays on the calling thread (with the client's
    /// runtime entered).
    ///
    /// # Errors
    ///
    /// * [`Error::InvalidArgument`] before any I/O: empty `key` or `val`; `expiration`
    ///   or `timeout` under 1 ms or over [`MAX_DURATION`](crate::MAX_DURATION);
    /// * [`Error::NotObtained`] when the last attempt found another value holding the key;
    /// * [`Error::NotReplicated`] when fewer replicas than `min_replicas` asked for
    ///   acknowledged the acquisition in time (it was released; not retried);
    /// * [`Error::Timeout`] when the last attempt exceeded `timeout`;
    /// * [`Error::Redis`] when the last attempt failed on the connection or the server.
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
    ) -> Result<Lock> {
        let lock = self.rt.run(
            "Client::lock",
            self.inner.lock(key, val, expiration, timeout, retry),
        )?;
        Ok(Lock::new(lock, Arc::clone(&self.rt)))
    }

    /// One attempt to acquire `key` for `val`, bounded by the client's default timeout
    /// ([`ClientBuilder::default_timeout`]): the blocking form of
    /// [`crate::Client::try_lock`].
    ///
    /// # Errors
    ///
    /// As [`lock`](Client::lock): [`Error::InvalidArgument`], [`Error::NotObtained`],
    /// [`Error::NotReplicated`], [`Error::Timeout`], [`Error::Redis`].
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[track_caller]
    pub fn try_lock(&self, key: &str, val: &str, expiration: Duration) -> Result<Lock> {
        let lock = self.rt.run(
            "Client::try_lock",
            self.inner.try_lock(key, val, expiration),
        )?;
        Ok(Lock::new(lock, Arc::clone(&self.rt)))
    }

    /// The async client and the runtime thread it lives on.
    pub(super) fn into_parts(self) -> (crate::Client, Arc<Runtime>) {
        (self.inner, self.rt)
    }

    /// Read the fenced `resource` with `token`: the blocking form of
    /// [`crate::Client::fenced_get`].
    ///
    /// # Errors
    ///
    /// As [`crate::Client::fenced_get`].
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[track_caller]
    pub fn fenced_get(&self, resource: &str, token: u64) -> Result<Option<String>> {
        self.rt
            .run("Client::fenced_get", self.inner.fenced_get(resource, token))
    }

    /// The bound on one round trip for operations without a timeout argument; see
    /// [`crate::ClientBuilder::default_timeout`].
    pub fn default_timeout(&self) -> Duration {
        self.inner.default_timeout()
    }

    /// The finest expiration the store grants; see [`crate::Client::granularity`].
    pub fn granularity(&self) -> Duration {
        self.inner.granularity()
    }

    /// Write the fenced `resource` with `token`: the blocking form of
    /// [`crate::Client::fenced_set`].
    ///
    /// # Errors
    ///
    /// As [`crate::Client::fenced_set`].
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[track_caller]
    pub fn fenced_set(&self, resource: &str, value: &str, token: u64) -> Result<()> {
        self.rt.run(
            "Client::fenced_set",
            self.inner.fenced_set(resource, value, token),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_is_clone_send_sync_static() {
        fn assert<T: Clone + Send + Sync + 'static>() {}
        assert::<Client>();
        assert::<ClientBuilder>();
    }
}
