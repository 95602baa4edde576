//! The async client: opening a store and acquiring locks under a retry strategy.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::backend::memory::MemoryBackend;
use crate::backend::redis::RedisBackend;
use crate::backend::{Acquire, Backend};
use crate::lock::Lock;
use crate::retry::{NoRetry, RetryStrategy};
use crate::{Error, Result};

/// The longest expiration, interval or timeout accepted: 10 years. Anything longer is
/// almost certainly a unit mistake, and it keeps every deadline computation in range.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// Default bound on one round trip for operations that take no timeout argument
/// ([`Client::try_lock`]): 1 second.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// Default bound on establishing a connection to Redis: 5 seconds.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A lock client: cheap to clone, `Send + Sync + 'static`; clones share one connection.
///
/// Open one per process (per store) and clone it wherever locks are taken.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<ClientInner>,
}

pub(crate) struct ClientInner {
    pub(crate) backend: Backend,
    default_timeout: Duration,
    /// Where the client points, without credentials (for `Debug`).
    target: String,
    /// Owner-checked releases of attempts that may have landed after their caller gave
    /// up (cancelled or timed out), by key and value. A later `lock` of the same key and
    /// value from this client skips a release not sent yet, and waits for one in flight,
    /// so a release never undoes a fresh acquisition.
    pending_releases: Mutex<HashMap<(String, String), Releases>>,
    /// Number of releases in `pending_releases`, so that `lock` skips the mutex and the
    /// hashing when there are none (the common case).
    pending_count: AtomicUsize,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("backend", &self.inner.backend.kind())
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
    #[cfg(feature = "tls")]
    tls_root_certificate: Option<Vec<u8>>,
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
            default_timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            #[cfg(feature = "tls")]
            tls_root_certificate: None,
        }
    }

    /// Bound on one round trip for [`Client::try_lock`]. Default: [`DEFAULT_TIMEOUT`] (1 s).
    /// Validated (at least 1 ms, at most [`MAX_DURATION`]) when the client is built.
    pub const fn default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// Bound on establishing (and re-establishing) a connection to Redis.
    /// Default: [`DEFAULT_CONNECT_TIMEOUT`] (5 s). Validated like `default_timeout`.
    pub const fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Trust this root certificate (PEM) for `rediss://` instead of the platform's
    /// root store — for a private CA. Default: the platform's roots.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_certificate = Some(pem.into());
        self
    }

    /// Open a client for `url`; see [`Client::open`] for the URL forms.
    ///
    /// # Errors
    ///
    /// * [`Error::InvalidArgument`] for an unparsable URL, an unsupported scheme or a bad
    ///   duration set on the builder (before any I/O);
    /// * [`Error::Redis`] when the server cannot be reached or rejects the credentials.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future drops the half-open connection; nothing is written.
    pub async fn open(self, url: &str) -> Result<Client> {
        let default_timeout = check_duration("default_timeout", self.default_timeout)?;
        let connect_timeout = check_duration("connect_timeout", self.connect_timeout)?;
        if let Some(name) = url.strip_prefix("memory://") {
            return Ok(Client::with_backend(
                Backend::Memory(MemoryBackend::named(name)),
                default_timeout,
                format!("memory://{name}"),
            ));
        }
        let scheme_ok = ["redis://", "rediss://", "redis+unix://", "unix://"]
            .iter()
            .any(|s| url.starts_with(s));
        if !scheme_ok {
            return Err(Error::invalid(
                "url: expected redis://, rediss://, redis+unix://, unix:// or memory://",
            ));
        }
        // redis-rs' own messages may quote the URL (and its password): use ours.
        let client = self.redis_client(url).map_err(|e| match e.kind() {
            redis::ErrorKind::InvalidClientConfig if url.starts_with("rediss://") => {
                Error::invalid("url: rediss:// needs the `tls` feature of leasehold")
            }
            _ => Error::invalid("url: not a valid Redis URL"),
        })?;
        let target = describe(client.get_connection_info());
        // One direct attempt first: the manager retries its first connection with
        // backoff for seconds, while a wrong password or an untrusted certificate
        // should be reported at once.
        let probe = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(connect_timeout));
        drop(
            client
                .get_multiplexed_async_connection_with_config(&probe)
                .await?,
        );
        // No response timeout underneath (redis-rs defaults to 500 ms): every call is
        // bounded by the caller's own `timeout`, which may well be longer.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(None);
        let conn = ConnectionManager::new_with_config(client.clone(), config.clone()).await?;
        Ok(Client::with_backend(
            Backend::Redis(RedisBackend::new(conn, client, config)),
            default_timeout,
            target,
        ))
    }

    fn redis_client(&self, url: &str) -> redis::RedisResult<redis::Client> {
        #[cfg(feature = "tls")]
        if let Some(pem) = &self.tls_root_certificate {
            let certs = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            };
            return redis::Client::build_with_tls(url, certs);
        }
        redis::Client::open(url)
    }

    /// Build a client on a connection you already have; see [`Client::from_connection`].
    ///
    /// # Panics
    ///
    /// If `default_timeout` was set outside 1 ms ..= [`MAX_DURATION`].
    pub fn from_connection(self, conn: ConnectionManager) -> Client {
        let default_timeout = check_duration("default_timeout", self.default_timeout)
            .unwrap_or_else(|e| panic!("{e}"));
        Client::with_backend(
            Backend::Redis(RedisBackend::from_connection(conn)),
            default_timeout,
            "redis (user connection)".to_owned(),
        )
    }

    /// A client on a private in-process store that only its clones share; see
    /// [`Client::memory`].
    ///
    /// # Panics
    ///
    /// If `default_timeout` was set outside 1 ms ..= [`MAX_DURATION`].
    pub fn memory(self) -> Client {
        let default_timeout = check_duration("default_timeout", self.default_timeout)
            .unwrap_or_else(|e| panic!("{e}"));
        Client::with_backend(
            Backend::Memory(MemoryBackend::new()),
            default_timeout,
            "memory (private)".to_owned(),
        )
    }
}

impl Client {
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
    ///
    /// The Redis connection is one multiplexed connection that reconnects by itself
    /// after a dropped connection or a server restart, and is replaced by a fresh one
    /// after three calls in a row timed out on it (calls the caller cancelled do not
    /// count): a half-open connection, whose peer vanished without a reset, would
    /// otherwise stay silent for minutes.
    ///
    /// # Errors
    ///
    /// * [`Error::InvalidArgument`] for an unparsable URL or an unsupported scheme;
    /// * [`Error::Redis`] when the server cannot be reached or rejects the credentials.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is written to the store.
    pub async fn open(url: &str) -> Result<Client> {
        ClientBuilder::new().open(url).await
    }

    /// A client on a redis-rs connection you already have (your own TLS, auth, pool
    /// settings or sentinel resolution). Clones of the manager share its connection.
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

    fn with_backend(backend: Backend, default_timeout: Duration, target: String) -> Client {
        Client {
            inner: Arc::new(ClientInner {
                backend,
                default_timeout,
                target,
                pending_releases: Mutex::new(HashMap::new()),
                pending_count: AtomicUsize::new(0),
            }),
        }
    }

    /// Acquire `key` for `val`, retrying under `retry` while another value holds it.
    ///
    /// Each attempt is one round trip bounded by `timeout`. Between attempts the strategy
    /// decides the delay; when it returns `None` the last attempt's outcome is returned —
    /// there is no sleep after the last attempt. Acquisition is idempotent: if `val`
    /// already holds `key` (an earlier attempt that timed out may have landed), the
    /// expiration is re-armed and the existing fencing token is kept.
    ///
    /// `val` must be unique to this holder; [`random_value`](crate::random_value) makes one.
    ///
    /// # Errors
    ///
    /// * [`Error::InvalidArgument`] before any I/O: empty `key` or `val`; `expiration`
    ///   or `timeout` under 1 ms or over [`MAX_DURATION`];
    /// * [`Error::NotObtained`] when the last attempt found another value holding the key;
    /// * [`Error::Timeout`] when the last attempt exceeded `timeout`;
    /// * [`Error::Redis`] when the last attempt failed on the connection or the server.
    ///   Errors that retrying cannot fix (authentication, permissions, wrong type,
    ///   script errors) end the attempts at once.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future while an attempt may have landed (its reply had not arrived)
    /// sends a detached owner-checked release of `key`/`val` on the client's connection,
    /// so the lock does not linger as an orphan. The same happens when `lock` returns an
    /// error after an attempt that timed out or lost its connection. The release is
    /// owner-checked: it never deletes another value's lock. A later `lock` of the same
    /// key **and value** through the same client skips that release if it was not sent
    /// yet (its own acquire re-arms whatever landed), or first waits for the answer to
    /// one in flight — within the attempt's `timeout`; an attempt that cannot wait long
    /// enough ends as [`Error::Timeout`] without sending anything. Without a tokio
    /// runtime to run it on, the key is left to expire.
    ///
    /// One case remains: a release sent on a connection that then stalls, is replaced
    /// (see [`Client::open`]) and delivers much later could still land after a new lock
    /// of the same key and value. Use a fresh [`random_value`](crate::random_value) per
    /// `lock` call where that matters.
    pub async fn lock(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
        timeout: Duration,
        mut retry: impl RetryStrategy,
    ) -> Result<Lock> {
        check_key(key)?;
        check_value(val)?;
        let expiration = check_duration("expiration", expiration)?;
        let timeout = check_duration("timeout", timeout)?;
        let ttl_ms = expiration.as_millis() as u64;

        let mut orphan = OrphanGuard {
            client: self,
            key,
            val,
            armed: false,
        };
        loop {
            let sent = Instant::now();
            let deadline = sent + timeout;
            let error = match self.settle_detached_releases(key, val, deadline).await {
                // An earlier release of this key and value is still unanswered: sending
                // now could be undone by it. Nothing was sent.
                Settled::Unanswered => Error::Timeout,
                settled => {
                    // Only this attempt's own outcome can disarm the guard: an earlier
                    // attempt that timed out may have landed and stays covered, and so
                    // does whatever a skipped release was to clean up.
                    let covered = orphan.armed || settled == Settled::Skipped;
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left < Duration::from_millis(1) {
                        orphan.armed = covered;
                        Error::Timeout // the wait used the attempt's time; nothing sent
                    } else {
                        orphan.armed = true;
                        match self.inner.backend.acquire(key, val, ttl_ms, left).await {
                            Ok(Acquire::Acquired(token)) => {
                                orphan.armed = false;
                                return Ok(Lock::new(
                                    self.clone(),
                                    key,
                                    val,
                                    token,
                                    expiration,
                                    timeout,
                                    sent,
                                ));
                            }
                            Ok(Acquire::Held) => {
                                // Another value holds the key: nothing of ours is on it.
                                orphan.armed = false;
                                Error::NotObtained
                            }
                            Err(e) if !e.is_transient() => {
                                // Rejected by the server: this attempt did not run.
                                orphan.armed = covered;
                                return Err(e);
                            }
                            // A timeout or a dropped connection: the attempt may have
                            // landed; the guard stays armed until a later attempt tells.
                            Err(e) => e,
                        }
                    }
                }
            };
            match retry.next_delay() {
                Some(delay) => tokio::time::sleep(delay).await,
                None => return Err(error),
            }
        }
    }

    /// One attempt to acquire `key` for `val`: [`lock`](Client::lock) with [`NoRetry`],
    /// bounded by the client's default timeout ([`ClientBuilder::default_timeout`]).
    ///
    /// # Errors
    ///
    /// As [`lock`](Client::lock): [`Error::InvalidArgument`], [`Error::NotObtained`],
    /// [`Error::Timeout`], [`Error::Redis`].
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

    /// Make sure no detached release of `key`/`val` can land after an acquire sent now:
    /// skip those not sent yet (the acquire re-arms whatever landed: same value), and
    /// wait until `deadline` for the answers to those in flight.
    async fn settle_detached_releases(&self, key: &str, val: &str, deadline: Instant) -> Settled {
        if self.inner.pending_count.load(Ordering::SeqCst) == 0 {
            return Settled::Clear;
        }
        let releases = self
            .inner
            .pending_releases
            .lock()
            .get(&(key.to_owned(), val.to_owned()))
            .cloned()
            .unwrap_or_default();
        let mut settled = Settled::Clear;
        for release in releases {
            if release.skip() {
                settled = Settled::Skipped;
                continue;
            }
            let mut done = release.done.clone();
            // `changed` fails once the releasing task is gone (its sender dropped).
            if tokio::time::timeout_at(deadline, done.changed())
                .await
                .is_ok()
            {
                continue;
            }
            return Settled::Unanswered;
        }
        settled
    }

    /// Send an owner-checked release of `key`/`val` from a detached task. Called from
    /// `Drop`, so it never blocks; without a runtime the key is left to expire.
    pub(crate) fn spawn_release(&self, key: &str, val: &str, timeout: Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (done_tx, done_rx) = watch::channel(());
        let release = Arc::new(DetachedRelease {
            state: AtomicU8::new(WAITING),
            done: done_rx,
        });
        let entry = (key.to_owned(), val.to_owned());
        {
            let mut pending = self.inner.pending_releases.lock();
            let releases = pending.entry(entry.clone()).or_default();
            for older in releases.iter() {
                // The new release does the same job: one not sent yet is redundant.
                older.skip();
            }
            releases.push(Arc::clone(&release));
            self.inner.pending_count.fetch_add(1, Ordering::SeqCst);
        }
        // Unregisters the release however the task ends, even if the runtime drops it
        // unrun (it is shutting down), then signals `done`.
        let registration = Registration {
            client: self.clone(),
            entry,
            release,
            _done: done_tx,
        };
        runtime.spawn(async move {
            if registration.release.send() {
                let (key, val) = &registration.entry;
                let _ = registration
                    .client
                    .inner
                    .backend
                    .release(key, val, timeout)
                    .await;
            }
            drop(registration);
        });
    }
}

/// The detached releases of one key and value, oldest first.
type Releases = Vec<Arc<DetachedRelease>>;

/// Whether a detached release stands in the way of an acquire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    /// None was pending.
    Clear,
    /// One not sent yet was skipped: its job (releasing an attempt that may have landed)
    /// passes to the attempt that skipped it.
    Skipped,
    /// One in flight is still unanswered.
    Unanswered,
}

/// A pending release's entry in the client's table, removed when dropped.
struct Registration {
    client: Client,
    entry: (String, String),
    release: Arc<DetachedRelease>,
    /// Dropped last: waiters see `done` only once the entry is gone.
    _done: watch::Sender<()>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let inner = &self.client.inner;
        let mut pending = inner.pending_releases.lock();
        if let Some(releases) = pending.get_mut(&self.entry) {
            if let Some(at) = releases.iter().position(|r| Arc::ptr_eq(r, &self.release)) {
                releases.swap_remove(at);
                inner.pending_count.fetch_sub(1, Ordering::SeqCst);
            }
            if releases.is_empty() {
                pending.remove(&self.entry);
            }
        }
    }
}

#[cfg(test)]
impl Client {
    /// Release `key` held by `val` behind its `Lock`'s back (a test playing someone
    /// else); `true` if it was held by `val`.
    pub(crate) async fn release_behind_the_back(&self, key: &str, val: &str) -> bool {
        self.inner
            .backend
            .release(key, val, Duration::from_secs(1))
            .await
            .expect("the release got an answer")
    }
}

/// A detached owner-checked release: `WAITING` until its task sends it (`SENDING`), or
/// `SKIPPED` by a later `lock` of the same key and value before that.
pub(crate) struct DetachedRelease {
    state: AtomicU8,
    /// Closed when the releasing task is done (answered, timed out or skipped).
    done: watch::Receiver<()>,
}

const WAITING: u8 = 0;
const SENDING: u8 = 1;
const SKIPPED: u8 = 2;

impl DetachedRelease {
    /// Claim the release for sending; `false` if it was skipped.
    fn send(&self) -> bool {
        self.state
            .compare_exchange(WAITING, SENDING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Skip the release unless it is already being sent; `true` if it will never be sent.
    fn skip(&self) -> bool {
        match self
            .state
            .compare_exchange(WAITING, SKIPPED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(state) => state == SKIPPED,
        }
    }
}

/// Releases an attempt that may have landed if `lock` is dropped or gives up while armed.
struct OrphanGuard<'a> {
    client: &'a Client,
    key: &'a str,
    val: &'a str,
    armed: bool,
}

impl Drop for OrphanGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            // One round trip is enough for a release; bound it like an acquire.
            self.client
                .spawn_release(self.key, self.val, self.client.inner.default_timeout);
        }
    }
}

/// `host:port/db` or the socket path, without credentials.
fn describe(info: &redis::ConnectionInfo) -> String {
    format!("{}/{}", info.addr(), info.redis_settings().db())
}

pub(crate) fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid("key: must not be empty"));
    }
    Ok(())
}

pub(crate) fn check_value(val: &str) -> Result<()> {
    if val.is_empty() {
        return Err(Error::invalid("val: must not be empty"));
    }
    Ok(())
}

/// At least 1 ms and at most [`MAX_DURATION`]; truncated to whole milliseconds.
pub(crate) fn check_duration(name: &str, d: Duration) -> Result<Duration> {
    if d < Duration::from_millis(1) {
        return Err(Error::invalid(format!(
            "{name}: must be at least 1 ms (got {d:?})"
        )));
    }
    if d > MAX_DURATION {
        return Err(Error::invalid(format!(
            "{name}: must be at most {} s (got {d:?})",
            MAX_DURATION.as_secs()
        )));
    }
    Ok(Duration::from_millis(d.as_millis() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_is_clone_send_sync_static() {
        fn assert<T: Clone + Send + Sync + 'static>() {}
        assert::<Client>();
    }

    /// Re-review finding: a release task the runtime drops unrun (it is shutting down)
    /// must still leave the table.
    #[test]
    fn a_release_dropped_unrun_leaves_no_bookkeeping_behind() {
        let client = Client::memory();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        {
            let _entered = rt.enter();
            client.spawn_release("k", "v", Duration::from_secs(1));
        }
        assert_eq!(client.inner.pending_count.load(Ordering::SeqCst), 1);
        drop(rt);
        assert_eq!(client.inner.pending_count.load(Ordering::SeqCst), 0);
        assert!(client.inner.pending_releases.lock().is_empty());
    }

    #[test]
    fn durations_are_checked_and_truncated_to_milliseconds() {
        assert!(check_duration("expiration", Duration::ZERO).is_err());
        assert!(check_duration("expiration", Duration::from_micros(999)).is_err());
        assert!(check_duration("expiration", Duration::MAX).is_err());
        assert_eq!(
            check_duration("expiration", Duration::from_micros(1_999)).unwrap(),
            Duration::from_millis(1)
        );
        let Err(Error::InvalidArgument(msg)) = check_duration("interval", Duration::ZERO) else {
            panic!("expected InvalidArgument");
        };
        assert!(msg.starts_with("interval"), "{msg}");
    }
}
