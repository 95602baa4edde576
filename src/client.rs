//! The async client: opening a store and acquiring locks under a retry strategy.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::time::Instant;

use crate::args::{check_duration, check_key, check_value};
use crate::lease::{Attempted, Leases};
use crate::lock::Lock;
use crate::pause::{Last, Pause};
use crate::release::Attempts;
use crate::retry::{NoRetry, RetryStrategy};
use crate::store::memory::MemoryStore;
use crate::store::redis::{self as redis_store, RedisStore};
use crate::store::{self, Backend, Store};
use crate::telemetry;
use crate::{Error, Result};
use tracing::Instrument;

/// How many refused attempts in a row a `lock` call tries again at once (each refusal
/// needs another call of this client to abort an attempt on the key meanwhile).
const REFUSED_RETRIES: u32 = 3;

/// Default bound on one round trip for operations that take no timeout argument
/// ([`Client::try_lock`]): 1 second.
#[deprecated(note = "use `Client::DEFAULT_TIMEOUT`")]
pub const DEFAULT_TIMEOUT: Duration = Client::DEFAULT_TIMEOUT;

/// Default bound on establishing a connection to Redis: 5 seconds.
#[deprecated(note = "use `Client::DEFAULT_CONNECT_TIMEOUT`")]
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Client::DEFAULT_CONNECT_TIMEOUT;

/// A lock client: cheap to clone, `Send + Sync + 'static`; clones share one connection.
///
/// Open one per process (per store) and clone it wherever locks are taken.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    /// The store, and the leases this client holds on it.
    leases: Arc<Leases>,
    default_timeout: Duration,
    /// Whether waiters wake when a key is released or expires (`ClientBuilder::notify`).
    notify: bool,
    /// Where the client points, without credentials (for `Debug`).
    target: String,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("store", &self.inner.leases.backend().kind())
            .field("target", &self.inner.target)
            .field("default_timeout", &self.inner.default_timeout)
            .finish()
    }
}

/// Configures a [`Client`] before it connects.
///
/// ```
/// # async fn demo() -> leasehold::Result<()> {
/// use std::time::Duration;
/// let client = leasehold::Client::builder()
///     .default_timeout(Duration::from_millis(500))
///     .open("memory://")
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ClientBuilder {
    default_timeout: Duration,
    connect_timeout: Duration,
    notify: bool,
    notifier: Option<redis::Client>,
    key_prefix: String,
    holder_label: Option<String>,
    min_replicas: Option<(u32, Duration)>,
    #[cfg(feature = "tls")]
    tls_root_certificate: Option<Vec<u8>>,
}

/// A builder's validated settings that belong to the client (not to its store).
struct Settings {
    default_timeout: Duration,
    notify: bool,
    key_prefix: Box<str>,
    holder_label: Box<str>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientBuilder {
    /// A builder with the documented defaults.
    pub const fn new() -> Self {
        ClientBuilder {
            default_timeout: Client::DEFAULT_TIMEOUT,
            connect_timeout: Client::DEFAULT_CONNECT_TIMEOUT,
            notify: true,
            notifier: None,
            key_prefix: String::new(),
            holder_label: None,
            min_replicas: None,
            #[cfg(feature = "tls")]
            tls_root_certificate: None,
        }
    }

    /// Bound on one round trip for operations without a timeout argument:
    /// [`Client::try_lock`], inspection ([`Client::inspect`], [`Client::list`],
    /// [`Client::force_release`]), client-level fenced access, `run_exclusive` and
    /// `run_while_leader` attempts, the detached aborts of `lock`, and the attempt timeout
    /// of a [`LockRequest`](crate::LockRequest) that names none. Default:
    /// [`Client::DEFAULT_TIMEOUT`] (1 s).
    /// Validated (at least 1 ms, at most [`MAX_DURATION`](crate::MAX_DURATION)) when the client is built.
    pub const fn default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// Bound on establishing (and re-establishing) a connection to Redis (to an etcd
    /// member: the first connection).
    /// Default: [`Client::DEFAULT_CONNECT_TIMEOUT`] (5 s). Validated like `default_timeout`.
    pub const fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Start every key this client writes with `prefix`: lock keys (and so their fence
    /// counters, records of aborted attempts and release channels, which are named after
    /// them) and fenced resources. [`Lock::key`] still returns the key as you named it.
    /// Default: none.
    ///
    /// Use it to share one store between applications or environments (`"billing:"`,
    /// `"staging:"`), and to confine a Redis ACL user to `~billing:*`. A prefix must not
    /// contain `{` or `}` ([`Error::InvalidArgument`] when the client is built): a key's
    /// hash tag is what keeps it and its companions in one Redis Cluster slot.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// A label stored with every lock this client takes, for operators:
    /// [`LockInfo::holder_label`](crate::LockInfo::holder_label) shows it, with
    /// [`LockInfo::locked_at`](crate::LockInfo::locked_at), in [`Client::inspect`],
    /// [`Client::list`] and the CLI. It is never a secret and never the lock's value
    /// (whoever knows a value can release its lock). Default: this host's name and the
    /// process id (`"web-3:4120"`). `""`: no label and no time are stored (the cheapest
    /// acquire: see BENCHMARKS.md). A re-lock by the same value keeps the label and time
    /// of the acquisition it re-arms.
    ///
    /// Validated when the client is built: at most 256 bytes ([`Error::InvalidArgument`]).
    pub fn holder_label(mut self, label: impl Into<String>) -> Self {
        self.holder_label = Some(label.into());
        self
    }

    /// Whether a `lock` call waiting for a key wakes as soon as the key is released or
    /// its holder's lease runs out, instead of sleeping out its retry strategy's delay.
    /// Default: on. The strategy still bounds the wait: an early wake is one more attempt
    /// within the same delay, and the total wait never exceeds the sum of the delays. One
    /// release wakes one waiter per client (the one that waited longest), not all.
    ///
    /// On Redis, a release publishes on a channel in the key's slot (`SPUBLISH` on a
    /// cluster) and each client keeps one subscriber connection, subscribed to the keys
    /// it is waiting for; a miss also reports the holder's remaining time to live, so a
    /// waiter wakes when the holder's key expires (which pub/sub cannot report). A client
    /// on your own connection ([`Client::from_connection`]) polls unless given a
    /// [`notifier`](ClientBuilder::notifier); so do clients of a sentinel-managed master
    /// and clients built from your own cluster connection (they still wake when the
    /// holder's key expires). `false`: waiters poll under their strategy, and releases
    /// publish nothing.
    ///
    /// On etcd (feature `etcd`) a miss puts the caller in line, and each waiter watches
    /// the key just before its own: waiters acquire in arrival order (see
    /// [`Client::open`]). `false`: a miss leaves nothing in the store, and waiters poll.
    pub const fn notify(mut self, on: bool) -> Self {
        self.notify = on;
        self
    }

    /// The Redis client to open the subscriber connection with, for a client built on
    /// your own connection ([`ClientBuilder::from_connection`]), which otherwise polls.
    /// It must lead to the same server.
    pub fn notifier(mut self, client: redis::Client) -> Self {
        self.notifier = Some(client);
        self
    }

    /// After every acquire and refresh, wait (at most `timeout`) until `replicas`
    /// replicas of the key's master acknowledged it — `WAIT replicas timeout`, in the
    /// same round trip, on the key's master (on a cluster, only that master). Default:
    /// off.
    ///
    /// A lease lock on a primary with replicas can be lost in a failover: a replica
    /// promoted before it received the acquisition knows nothing of it, and hands the key
    /// (with the same fencing token) to the next client. Waiting for `replicas`
    /// acknowledgements before handing out the lock narrows that window to failovers that
    /// lose every acknowledging replica too. Fewer acknowledgements in time are
    /// [`Error::NotReplicated`]: after an acquire, the key is released (owner-checked)
    /// before the error is returned; after a refresh, renewal ends with it and the lease
    /// is not extended. Each call's own `timeout` still bounds the whole round trip: make
    /// it longer than `timeout` here.
    ///
    /// Redis stores only (one server, sentinel, cluster); the memory store (it has no
    /// replicas) and etcd (Raft replicates every write before answering) ignore a valid
    /// setting. Validated (`replicas` ≥ 1, `timeout` 1 ms ..= [`MAX_DURATION`](crate::MAX_DURATION))
    /// when the client is built.
    pub const fn min_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.min_replicas = Some((replicas, timeout));
        self
    }

    /// Trust this root certificate (PEM) for `rediss://` and `etcds://` instead of the platform's
    /// root store — for a private CA. Default: the platform's roots.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_certificate = Some(pem.into());
        self
    }

    /// Check every setting as opening a client would, before any I/O.
    #[cfg(feature = "serde")]
    pub(crate) fn check(&self) -> Result<()> {
        self.settings().map(drop)
    }

    /// The validated settings: the client's, and how to open its store.
    fn settings(&self) -> Result<(Settings, store::Options)> {
        let default_timeout = check_duration("default_timeout", self.default_timeout)?;
        let connect_timeout = check_duration("connect_timeout", self.connect_timeout)?;
        let min_replicas = match self.min_replicas {
            None => None,
            Some((0, _)) => return Err(Error::invalid("min_replicas: must be at least 1")),
            Some((replicas, timeout)) => {
                Some((replicas, check_duration("min_replicas timeout", timeout)?))
            }
        };
        let options = store::Options {
            connect_timeout,
            notify: self.notify,
            #[cfg(feature = "tls")]
            tls_root_certificate: self.tls_root_certificate.clone(),
            redis: redis_store::Extra {
                min_replicas,
                notifier: self.notifier.clone(),
            },
        };
        if self.key_prefix.contains(['{', '}']) {
            return Err(Error::invalid(
                "key_prefix: must not contain `{` or `}` (it would change which part of a \
                 key Redis Cluster hashes)",
            ));
        }
        let holder_label = crate::label::holder_label(self.holder_label.as_deref())?;
        let settings = Settings {
            default_timeout,
            notify: self.notify,
            key_prefix: self.key_prefix.as_str().into(),
            holder_label,
        };
        Ok((settings, options))
    }

    /// Open a client for `url`; see [`Client::open`] for the URL forms.
    ///
    /// # Errors
    ///
    /// * [`Error::InvalidArgument`] for an unparsable URL, an unsupported scheme or a bad
    ///   setting on the builder (before any I/O);
    /// * [`Error::Redis`] when the server cannot be reached, rejects the credentials (or
    ///   has a password the URL does not give: one `PING` checks it), or is not a Redis
    ///   server; the message names it (`host:port`, never the password);
    /// * [`Error::Store`] when no etcd member answers;
    /// * a timeout ([`Error::is_timeout`]) when connecting took longer than the connect
    ///   timeout: on Redis an [`Error::Redis`] that names the server.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future drops the half-open connection; nothing is written
    /// (on etcd, a 1 s lease granted to measure the server's minimum may be left to expire).
    pub async fn open(self, url: &str) -> Result<Client> {
        let (settings, options) = self.settings()?;
        let (backend, target) = store::open(url, &options).await?;
        Ok(Client::with_backend(backend, &settings, target))
    }

    /// A client on `store`, a store from outside the crate (see [`crate::store`]), with
    /// this builder's settings; see [`Client::from_store`]. Store options
    /// (`connect_timeout`, `min_replicas`, `notifier`, `tls_root_certificate`) are the
    /// store's own business here, and are not used.
    ///
    /// # Panics
    ///
    /// If a setting on the builder is invalid (what opening a client reports as
    /// [`Error::InvalidArgument`]): `default_timeout` or `connect_timeout` outside 1 ms
    /// ..= [`MAX_DURATION`](crate::MAX_DURATION), a `key_prefix` with braces, or a
    /// `min_replicas` of 0 replicas or with a timeout out of that range.
    pub fn from_store(self, store: impl store::Store) -> Client {
        let (settings, _) = self.settings().unwrap_or_else(|e| panic!("{e}"));
        Client::with_backend(
            Backend::Custom(store::Custom::new(store)),
            &settings,
            "custom store".to_owned(),
        )
    }

    /// Open a client on the Redis Cluster that `urls` belong to; see
    /// [`Client::open_cluster`].
    ///
    /// # Errors
    ///
    /// As [`Client::open_cluster`], and [`Error::InvalidArgument`] for a bad setting on the
    /// builder.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is written.
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub async fn open_cluster(self, urls: &[&str]) -> Result<Client> {
        let (settings, options) = self.settings()?;
        let options = redis_store::Options::new(&options);
        let (store, target) = RedisStore::open_cluster(urls, &options).await?;
        Ok(Client::with_backend(
            Backend::Redis(Arc::new(store)),
            &settings,
            target,
        ))
    }

    /// Build a client on a cluster connection you already have; see
    /// [`Client::from_cluster`].
    ///
    /// # Panics
    ///
    /// If a setting on the builder is invalid (what opening a client reports as
    /// [`Error::InvalidArgument`]): `default_timeout` or `connect_timeout` outside 1 ms
    /// ..= [`MAX_DURATION`](crate::MAX_DURATION), a `key_prefix` with braces, or a
    /// `min_replicas` of 0 replicas or with a timeout out of that range.
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub fn from_cluster(self, conn: redis::cluster_async::ClusterConnection) -> Client {
        let (settings, options) = self.settings().unwrap_or_else(|e| panic!("{e}"));
        let options = redis_store::Options::new(&options);
        Client::with_backend(
            Backend::Redis(Arc::new(RedisStore::from_cluster(conn, &options))),
            &settings,
            "redis cluster (user connection)".to_owned(),
        )
    }

    /// Open a client on the master that the sentinels at `sentinels` call `master_name`;
    /// see [`Client::open_sentinel`].
    ///
    /// # Errors
    ///
    /// As [`Client::open_sentinel`], and [`Error::InvalidArgument`] for a bad setting on
    /// the builder.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is written.
    #[cfg(feature = "sentinel")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sentinel")))]
    pub async fn open_sentinel(self, sentinels: &[&str], master_name: &str) -> Result<Client> {
        let (settings, options) = self.settings()?;
        let options = redis_store::Options::new(&options);
        let (store, target) = RedisStore::open_sentinel(sentinels, master_name, &options).await?;
        Ok(Client::with_backend(
            Backend::Redis(Arc::new(store)),
            &settings,
            target,
        ))
    }

    /// Build a client on a connection you already have; see [`Client::from_connection`].
    ///
    /// # Panics
    ///
    /// If a setting on the builder is invalid (what opening a client reports as
    /// [`Error::InvalidArgument`]): `default_timeout` or `connect_timeout` outside 1 ms
    /// ..= [`MAX_DURATION`](crate::MAX_DURATION), a `key_prefix` with braces, or a
    /// `min_replicas` of 0 replicas or with a timeout out of that range.
    pub fn from_connection(self, conn: ConnectionManager) -> Client {
        let (settings, options) = self.settings().unwrap_or_else(|e| panic!("{e}"));
        let options = redis_store::Options::new(&options);
        Client::with_backend(
            Backend::Redis(Arc::new(RedisStore::from_connection(conn, &options))),
            &settings,
            "redis (user connection)".to_owned(),
        )
    }

    /// A client on a private in-process store that only its clones share; see
    /// [`Client::memory`].
    ///
    /// # Panics
    ///
    /// If a setting on the builder is invalid (what opening a client reports as
    /// [`Error::InvalidArgument`]): `default_timeout` or `connect_timeout` outside 1 ms
    /// ..= [`MAX_DURATION`](crate::MAX_DURATION), a `key_prefix` with braces, or a
    /// `min_replicas` of 0 replicas or with a timeout out of that range.
    pub fn memory(self) -> Client {
        let (settings, _) = self.settings().unwrap_or_else(|e| panic!("{e}"));
        Client::with_backend(
            Backend::Memory(MemoryStore::new()),
            &settings,
            "memory (private)".to_owned(),
        )
    }
}

impl Client {
    /// Default bound on one round trip for operations that take no timeout argument
    /// ([`Client::try_lock`], see [`ClientBuilder::default_timeout`]): 1 second.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

    /// Default bound on establishing a connection to a store (see
    /// [`ClientBuilder::connect_timeout`]): 5 seconds.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

    /// A [`ClientBuilder`] with the documented defaults.
    pub const fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// Open a client with default settings.
    ///
    /// * `redis://[user:password@]host[:port][/db]` — one Redis server;
    /// * `rediss://…` — the same over TLS (feature `tls`);
    /// * `redis+unix:///path/to/socket` or `unix:///path/to/socket`;
    /// * `memory://` or `memory://NAME` — the embedded in-process store. Every client
    ///   opened on the same URL in one process shares the same store, as clients of one
    ///   server would. For a store private to one client, use [`Client::memory`].
    /// * `etcd://[user:password@]host:port[,host:port…]` — etcd v3, any members of one
    ///   cluster (feature `etcd`; plain HTTP/2). With credentials the client
    ///   authenticates on connect and again whenever etcd's token goes stale;
    ///   percent-encode `@ : / , %` in them. See below.
    /// * `etcds://[user:password@]host:port[,host:port…]` — the same over TLS (features
    ///   `etcd` and `tls`), verified against the platform's roots or
    ///   `ClientBuilder::tls_root_certificate`.
    ///
    /// For Redis Cluster see `Client::open_cluster` (feature `cluster`); for a
    /// sentinel-managed master, `Client::open_sentinel` (feature `sentinel`).
    ///
    /// # etcd
    ///
    /// A lock is a key under the lock name (`KEY\0` and a hash of the value) holding the
    /// value, on an etcd lease; its [fencing token](Lock::fencing_token) is that key's
    /// **create revision** — strictly rising across every key of the cluster and every
    /// leader change, never reused. The value is the holder's identity, as on Redis: the
    /// key records the attempt that created it (one companion key on the same lease), an
    /// abort deletes only what its attempts created, and owner checks compare the value
    /// (and that the key is first in line) in a transaction. Writes go through Raft: a lock survives the loss of any minority
    /// of members, and a leader election within the call's `timeout` (operations retry
    /// inside it). What differs from the other stores:
    ///
    /// * **Whole seconds.** etcd leases count whole seconds and have a server minimum (at
    ///   least 1 s; `3/2 ×` the election timeout, rounded up). An expiration is rounded
    ///   **up** to that: 50 ms is granted as 1 s, 1.5 s as 2 s. [`Lock::expiration`]
    ///   reports what was granted, and [`Lock::valid_for`] and [`Lock::lost`] count from
    ///   it; [`Lock::ttl`] and [`LockInfo::ttl`](crate::LockInfo::ttl) report whole
    ///   seconds, rounded down. An expired key goes at the server's next expiry sweep
    ///   (every 500 ms): up to 0.5 s after its lease ran out.
    /// * **A fair wait.** A miss leaves the caller's key in line behind the holder (etcd's
    ///   own mutex: the lowest create revision holds). While `lock` waits, its key's lease
    ///   is kept alive and it watches the key just before its own; that key's deletion
    ///   (release, expiry, a waiter giving up) wakes it at once, and one deletion wakes one
    ///   waiter. Waiters acquire in arrival order, with no herd. The retry strategy still
    ///   bounds the wait exactly as on the other stores; when it runs out, `lock` withdraws
    ///   the caller's key (one more round trip) and returns [`Error::NotObtained`]. With
    ///   [`ClientBuilder::notify`]`(false)` a miss leaves nothing, and waiters poll.
    /// * **Tokens** are revisions of the whole cluster: they rise across all keys, not per
    ///   key, and start above 1.
    /// * **Keys** may not contain `\0` ([`Error::InvalidArgument`]); failures are
    ///   [`Error::Store`] (never [`Error::Redis`]), transient ones marked so.
    ///   [`ClientBuilder::min_replicas`] does not apply (every write is replicated by Raft
    ///   before it is answered).
    ///
    /// The Redis connection is one multiplexed connection that reconnects by itself
    /// after a dropped connection or a server restart (pausing at most 100 ms between
    /// tries), and is replaced by a fresh one after three calls in a row timed out on it
    /// (calls the caller cancelled do not count): a half-open connection, whose peer
    /// vanished without a reset, would otherwise stay silent for minutes.
    ///
    /// # Errors
    ///
    /// * [`Error::InvalidArgument`] for an unparsable URL or an unsupported scheme;
    /// * [`Error::Redis`] when the server cannot be reached, rejects the credentials (or
    ///   has a password the URL does not give: one `PING` checks it), or is not a Redis
    ///   server; the message names it (`host:port`, never the password);
    /// * [`Error::Store`] when no etcd member answers;
    /// * a timeout ([`Error::is_timeout`]) when connecting took longer than the connect
    ///   timeout: on Redis an [`Error::Redis`] that names the server.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is written to the store (on etcd, a 1 s lease granted to
    /// measure the server's minimum may be left to expire).
    pub async fn open(url: &str) -> Result<Client> {
        ClientBuilder::new().open(url).await
    }

    /// Open a client on a Redis Cluster: `urls` name one or more of its nodes
    /// (`redis://host:port`, or `rediss://` with the `tls` feature); the rest of the
    /// cluster is discovered from them.
    ///
    /// Every key the client writes for a lock (its fence counter, its record of aborted
    /// attempts) and for a fenced resource hashes to the lock key's (or resource's) slot,
    /// so every script runs on one node; keys with and without hash tags work alike. The
    /// connection follows the cluster through resharding (`MOVED`, `ASK`, `TRYAGAIN`) and
    /// reloads scripts on a node that does not know them yet (`NOSCRIPT`). A call is sent
    /// again (up to 5 times, with waits of 10–100 ms, within its `timeout`) after an
    /// answer that says it did not run; after a connection lost while it was out, only
    /// if it is idempotent — never an unlock or a forced release, which then end in
    /// [`Error::Indeterminate`]. redis-rs' own retries are off: they would send any call
    /// again.
    ///
    /// ```no_run
    /// # async fn demo() -> leasehold::Result<()> {
    /// let client = leasehold::Client::open_cluster(&[
    ///     "redis://10.0.0.1:7000",
    ///     "redis://10.0.0.2:7000",
    /// ])
    /// .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// * [`Error::InvalidArgument`] for no URL, or one that is not `redis://`/`rediss://`;
    /// * [`Error::Redis`] when no node can be reached or the cluster is not serving;
    /// * a timeout ([`Error::is_timeout`]) when connecting took longer than the connect
    ///   timeout: on Redis an [`Error::Redis`] that names the server.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is written to the store.
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub async fn open_cluster(urls: &[&str]) -> Result<Client> {
        ClientBuilder::new().open_cluster(urls).await
    }

    /// A client on a redis-rs cluster connection you already have. Its own response
    /// timeouts and retries apply on top of each call's `timeout`.
    ///
    /// Build it with `ClusterClientBuilder::retries(0)`, as
    /// [`open_cluster`](Client::open_cluster) does: leasehold follows `MOVED`/`ASK` and
    /// tries again itself what is safe to send twice. redis-rs' own retries send any call
    /// again after the connection it was out on broke, so a release whose answer was lost
    /// may run twice and report [`Error::NotHeld`] (a forced release still deletes only
    /// the acquisition it found: see [`Client::force_release`]).
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub fn from_cluster(conn: redis::cluster_async::ClusterConnection) -> Client {
        ClientBuilder::new().from_cluster(conn)
    }

    /// Open a client on the Redis master that the sentinels at `sentinels`
    /// (`redis://host:port` each) monitor as `master_name`, and follow it through
    /// failovers: when the master stops answering as a master (connection refused or
    /// dropped, `READONLY` after it was demoted, or three calls in a row timed out), the
    /// next call asks the sentinels again and connects to the master they name.
    ///
    /// During a failover calls fail (`Error::Redis` or `Error::Timeout`) until the
    /// sentinels have promoted a replica; a retry strategy rides it out. A failover can
    /// lose a lock the old master had not replicated: see
    /// [`ClientBuilder::min_replicas`].
    ///
    /// ```no_run
    /// # async fn demo() -> leasehold::Result<()> {
    /// let client = leasehold::Client::open_sentinel(
    ///     &["redis://10.0.0.1:26379", "redis://10.0.0.2:26379", "redis://10.0.0.3:26379"],
    ///     "mymaster",
    /// )
    /// .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// * [`Error::InvalidArgument`] for no sentinel, an empty `master_name`, or a URL
    ///   that is not `redis://`/`rediss://`;
    /// * [`Error::Redis`] when no sentinel answers, none knows `master_name`, or the
    ///   master cannot be reached;
    /// * [`Error::Timeout`] when asking the sentinels took longer than the connect
    ///   timeout.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is written to the store.
    #[cfg(feature = "sentinel")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sentinel")))]
    pub async fn open_sentinel(sentinels: &[&str], master_name: &str) -> Result<Client> {
        ClientBuilder::new()
            .open_sentinel(sentinels, master_name)
            .await
    }

    /// A client on a redis-rs connection you already have (your own TLS, auth, pool
    /// settings). Clones of the manager share its connection.
    ///
    /// The manager's own response timeout (redis-rs defaults to 500 ms) bounds every
    /// round trip too, on top of the `timeout` you pass to [`lock`](Client::lock); it is
    /// reported as [`Error::Timeout`]. Build it with
    /// `ConnectionManagerConfig::new().set_response_timeout(None)` to let your timeouts
    /// alone decide. A user's connection is never replaced (unlike one built by
    /// [`Client::open`], which is after three timed-out calls in a row).
    pub fn from_connection(conn: ConnectionManager) -> Client {
        ClientBuilder::new().from_connection(conn)
    }

    /// A client on a fresh, private in-process store, shared only by its clones: ideal
    /// for unit tests, which then cannot see each other's keys.
    pub fn memory() -> Client {
        ClientBuilder::new().memory()
    }

    /// A client on `store`, a store of your own: anything that implements
    /// [`store::Store`](crate::store::Store) (see the module for its obligations, and the
    /// `testing` feature for the kit that checks them). Everything the client offers —
    /// retry strategies, renewal, fencing helpers, hand-off when the store notifies, the
    /// blocking facade — works on it. Default settings; [`ClientBuilder::from_store`] for
    /// others.
    pub fn from_store(store: impl store::Store) -> Client {
        ClientBuilder::new().from_store(store)
    }

    fn with_backend(backend: Backend, settings: &Settings, target: String) -> Client {
        Client {
            inner: Arc::new(ClientInner {
                leases: Arc::new(Leases::new(
                    backend,
                    &settings.key_prefix,
                    &settings.holder_label,
                )),
                default_timeout: settings.default_timeout,
                notify: settings.notify,
                target,
            }),
        }
    }

    /// A client on `backend` with these settings (a Redlock over the stores of other
    /// clients). Its pauses end early when the store says (a holder's lease ran out).
    pub(crate) fn with_store(
        backend: Backend,
        default_timeout: Duration,
        key_prefix: &str,
        holder_label: &str,
        target: String,
    ) -> Client {
        let settings = Settings {
            default_timeout,
            notify: true,
            key_prefix: key_prefix.into(),
            holder_label: holder_label.into(),
        };
        Client::with_backend(backend, &settings, target)
    }

    /// The label stored with this client's locks (`""`: none).
    pub(crate) fn holder_label(&self) -> &str {
        self.inner.leases.holder_label()
    }

    /// Where the client points, without credentials.
    pub(crate) fn target(&self) -> &str {
        &self.inner.target
    }

    /// The store this client talks to.
    pub(crate) fn backend(&self) -> &Backend {
        self.inner.leases.backend()
    }

    /// `key` as the store knows it: with the client's key prefix.
    pub(crate) fn store_key<'a>(&self, key: &'a str) -> std::borrow::Cow<'a, str> {
        self.inner.leases.store_key(key)
    }

    /// `key` as the caller named it: without the client's key prefix.
    pub(crate) fn user_key<'a>(&self, key: &'a str) -> &'a str {
        self.inner.leases.user_key(key)
    }

    /// Acquire `key` for `val`, retrying under `retry` while another value holds it.
    ///
    /// Each attempt is one round trip bounded by `timeout`. Between attempts the strategy
    /// decides the delay; when it returns `None` the last attempt's outcome is returned —
    /// there is no sleep after the last attempt. Acquisition is idempotent: if `val`
    /// already holds `key` (an earlier attempt that timed out may have landed), the
    /// expiration is re-armed and the existing fencing token is kept.
    ///
    /// **Hand-off.** A call that found the key held does not sleep out the whole delay
    /// when the key becomes free earlier: it wakes for one more attempt as soon as the
    /// holder releases the key (the store notifies it: Redis pub/sub, or in process) or
    /// the holder's lease runs out (the miss reported the holder's remaining time). The
    /// strategy still bounds the wait: an early wake is an extra attempt within the same
    /// delay (a miss goes back to waiting until that delay's end), `next_delay()` is asked
    /// only when a delay has run out, the total time waited never exceeds the sum of the
    /// strategy's delays, and no attempt follows its `None`. One release wakes one waiter
    /// per client — the one that has waited longest — not all of them. Turn it off with
    /// [`ClientBuilder::notify`].
    ///
    /// `val` must be unique to this holder; [`random_value`](crate::random_value) makes one.
    /// An attempt's `timeout` may exceed `expiration`: the lease then counts from when the
    /// attempt was sent, so a slow answer can arrive with little or none of the lease
    /// left — check [`Lock::valid_for`] before relying on it.
    ///
    /// # Errors
    ///
    /// * [`Error::InvalidArgument`] before any I/O: empty `key` or `val`; `expiration`
    ///   or `timeout` under 1 ms or over [`MAX_DURATION`](crate::MAX_DURATION); a
    ///   `retry` strategy that [`RetryStrategy::validate`] refuses (an interval under
    ///   1 ms: a busy loop);
    /// * [`Error::NotObtained`] when the last attempt found another value holding the key;
    /// * [`Error::NotReplicated`] when the client asks for
    ///   [`min_replicas`](ClientBuilder::min_replicas) and fewer replicas acknowledged the
    ///   acquisition in time (it was released before this error is returned; not retried);
    /// * [`Error::Timeout`] when the last attempt exceeded `timeout`;
    /// * [`Error::Redis`] when the last attempt failed on the connection or the server
    ///   ([`Error::Store`] on etcd). Errors that retrying cannot fix (authentication,
    ///   permissions, wrong type, script errors) end the attempts at once.
    ///
    /// # Cancel safety
    ///
    /// An attempt that got no answer — the future was dropped while it was in flight, or
    /// it timed out or lost its connection — may still reach the store, even much later.
    /// When `lock` ends (or is dropped) with such attempts behind it, it sends a detached
    /// owner-checked **abort** naming them:
    ///
    /// * the store refuses any of them that arrives afterwards (one record per key and
    ///   client, the highest attempt number aborted, kept an hour after the last abort:
    ///   TCP gives up on undelivered data well before that), so an attempt stalled on a
    ///   connection the client replaced never creates a lock later;
    /// * the key is deleted only when it holds `val`, one of the aborted attempts created
    ///   it and (on Redis and memory) one of them armed it last. So the abort removes
    ///   what those attempts created, and never a lock held before they began: a
    ///   same-value re-lock that is given up on never deletes the lock it re-locks. When
    ///   this call ends holding the key, or a [`Lock`] of the value in this client holds
    ///   it, its attempts are only refused, never undone.
    ///
    /// On etcd, a call waiting in line has a place there (its key, created by the attempt
    /// that put it in line) even after answered misses: the abort names that attempt too,
    /// so a dropped `lock` withdraws its place the same way, and a `lock` that ends with
    /// `NotObtained` has withdrawn it before it returns.
    ///
    /// Without a tokio runtime to run the abort on, what an attempt may have created
    /// stays until it expires.
    pub async fn lock(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
        timeout: Duration,
        retry: impl RetryStrategy,
    ) -> Result<Lock> {
        check_key(key)?;
        check_value(val)?;
        let expiration = check_duration("expiration", expiration)?;
        let expiration = self.backend().grant(expiration)?;
        let timeout = check_duration("timeout", timeout)?;
        retry.validate()?;
        let store = self.backend().kind();
        let span = telemetry::lock_span(store, key);
        let mut attempts = 0;
        if !telemetry::observed(&span) {
            // Nobody listens: not even a clock read.
            return self
                .lock_attempts(key, val, expiration, timeout, retry, &mut attempts)
                .await;
        }
        let started = Instant::now();
        let locked = self
            .lock_attempts(key, val, expiration, timeout, retry, &mut attempts)
            .instrument(span.clone())
            .await;
        let outcome = match &locked {
            Ok(_) => telemetry::Outcome::Acquired,
            Err(e) if e.is_not_obtained() => telemetry::Outcome::NotObtained,
            Err(_) => telemetry::Outcome::Error,
        };
        let token = locked.as_ref().ok().map(Lock::fencing_token);
        let waited = started.elapsed();
        telemetry::lock_ended(&span, store, key, outcome, attempts, waited, token);
        locked
    }

    /// The attempts of [`lock`](Client::lock), counted in `count`.
    async fn lock_attempts(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
        timeout: Duration,
        retry: impl RetryStrategy,
        count: &mut u32,
    ) -> Result<Lock> {
        let leases = &self.inner.leases;
        let key = &*leases.store_key(key);
        let pair = leases.pair(key, val);
        let mut attempts = Attempts::new(leases, key, val, self.inner.default_timeout);
        let mut pause = Pause::new(retry, self.inner.notify);
        // Attempts refused because an earlier one of this client was aborted meanwhile
        // (another call's, in flight): tried again at once, a few times.
        let mut refused = 0;
        loop {
            let sent = Instant::now();
            let attempt = leases.next_attempt();
            attempts.sending(attempt);
            *count += 1;
            let (error, last) = match leases
                .acquire(pair, expiration, attempt, timeout, sent)
                .await
            {
                Ok(Attempted::Granted(lease)) => {
                    attempts.granted();
                    // Earlier attempts without an answer are aborted, detached: the
                    // claim of this one keeps the key.
                    return Ok(Lock::new(lease, expiration, timeout));
                }
                Ok(Attempted::Held(ttl)) => {
                    // On a store that queues (etcd), the miss left this call's place in
                    // line: withdrawn when the call ends without the key.
                    attempts.missed(self.backend().queues());
                    (Error::NotObtained, Last::Missed(ttl))
                }
                // Refused, or a grant not believed (it may have created the key a
                // release then deleted): it stays among the attempts this call aborts
                // unless it ends holding the key. The next attempt has a higher number.
                Ok(Attempted::Refused) if refused < REFUSED_RETRIES => {
                    refused += 1;
                    continue;
                }
                Ok(Attempted::Refused) => (Error::NotObtained, Last::Missed(None)),
                Err(e @ Error::NotReplicated { .. }) => {
                    // Not handed out: aborted before the error is returned (the key is
                    // deleted if this call's attempt created it).
                    attempts.abort_now(timeout).await;
                    return Err(e);
                }
                Err(e) if !e.is_transient() => {
                    // Rejected by the server: this attempt did not run.
                    attempts.answered();
                    return Err(e);
                }
                // A timeout or a dropped connection: the attempt may land.
                Err(e) => (e, Last::Failed),
            };
            attempts.failed(timeout).await;
            if !pause
                .wait(last, || self.backend().watch_waiter(key, val))
                .await
            {
                // No attempt follows: a place in line is withdrawn before the caller
                // hears `NotObtained`, so that it cannot come first afterwards.
                attempts.withdraw().await;
                return Err(error);
            }
        }
    }

    /// One attempt to acquire `key` for `val`: [`lock`](Client::lock) with [`NoRetry`],
    /// bounded by the client's default timeout ([`ClientBuilder::default_timeout`]).
    ///
    /// # Errors
    ///
    /// As [`lock`](Client::lock): [`Error::InvalidArgument`], [`Error::NotObtained`],
    /// [`Error::NotReplicated`], [`Error::Timeout`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// As [`lock`](Client::lock).
    pub async fn try_lock(&self, key: &str, val: &str, expiration: Duration) -> Result<Lock> {
        self.lock(key, val, expiration, self.inner.default_timeout, NoRetry)
            .await
    }

    /// The bound on one round trip for operations without a timeout argument.
    pub fn default_timeout(&self) -> Duration {
        self.inner.default_timeout
    }

    /// The finest expiration the store grants ([`Store::granularity`]): 1 ms on memory
    /// and Redis, 1 s on etcd, whose leases are whole seconds (expirations are rounded up
    /// to it; [`Lock::expiration`] says what was granted).
    pub fn granularity(&self) -> Duration {
        self.backend().granularity()
    }
}

#[cfg(test)]
impl Client {
    /// Release `key` behind its `Lock`'s back (a test playing someone else); `true` if
    /// `val` held it.
    pub(crate) async fn release_behind_the_back(&self, key: &str, val: &str) -> bool {
        let held = match self.backend() {
            Backend::Memory(m) => m.value_of(key).as_deref() == Some(val),
            _ => true,
        };
        held && self.force_release(key).await.expect("answered")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_is_clone_send_sync_static() {
        fn assert<T: Clone + Send + Sync + 'static>() {}
        assert::<Client>();
    }

    #[tokio::test(start_paused = true)]
    async fn same_value_relocks_share_one_lease() {
        let client = Client::memory();
        let first = client
            .try_lock("k", "v", Duration::from_secs(10))
            .await
            .unwrap();
        let again = client
            .try_lock("k", "v", Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(again.fencing_token(), first.fencing_token());
        // A re-lock re-arms to its own expiration, shorter too: every handle follows.
        assert!(first.valid_for().unwrap() < Duration::from_secs(1));
        assert_eq!(
            client.inspect("k").await.unwrap().unwrap().ttl(),
            Some(Duration::from_secs(1))
        );
        tokio::time::advance(Duration::from_millis(500)).await;
        let renewed = client
            .try_lock("k", "v", Duration::from_secs(10))
            .await
            .unwrap();
        // Confirmed through a third handle: every handle sees the longer lease.
        assert!(first.valid_for().unwrap() > Duration::from_secs(9));
        drop(renewed);
        again.unlock().await.unwrap();
        assert_eq!(first.valid_for(), None, "unlocked through the other handle");
        // A fresh acquisition is a fresh lease.
        let next = client
            .try_lock("k", "v", Duration::from_secs(10))
            .await
            .unwrap();
        assert!(next.fencing_token() > first.fencing_token());
        assert_eq!(first.valid_for(), None);
    }
}
