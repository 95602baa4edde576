//! Redlock: one lock over N independent Redis masters, held while a majority of them
//! holds it — and what it cannot promise.
//!
//! ```no_run
//! use std::time::Duration;
//! use leasehold::{FixedInterval, redlock::Redlock};
//!
//! # async fn demo() -> leasehold::Result<()> {
//! let redlock = Redlock::open(&[
//!     "redis://10.0.0.1:6379",
//!     "redis://10.0.0.2:6379",
//!     "redis://10.0.0.3:6379",
//! ])
//! .await?;
//! let lock = redlock
//!     .lock(
//!         "nightly-report",
//!         &leasehold::random_value(),
//!         Duration::from_secs(30),                            // expiration
//!         Duration::from_millis(50),                          // timeout per attempt
//!         FixedInterval::new(Duration::from_millis(100), 20), // retry strategy
//!     )
//!     .await?;
//! let renewal = lock.auto_refresh(
//!     Duration::from_secs(10), Duration::from_secs(30), Duration::from_millis(50), 3,
//! )?;
//! tokio::select! {
//!     _ = lock.lost() => { /* stop: the lease may be gone */ }
//!     _ = async { /* the work */ } => {}
//! }
//! drop(renewal);
//! lock.unlock().await?;
//! # Ok(()) }
//! ```
//!
//! # How it works
//!
//! The nodes are N Redis servers that know nothing of each other (no replication, no
//! cluster); the quorum is N/2 + 1. Each node runs the scripts of the single-server store,
//! so every per-node operation is owner-checked and idempotent, and keeps its state
//! (token, creator, record of aborted attempts) as there.
//!
//! * **One round trip per attempt.** An attempt goes to every node at once and waits for
//!   every answer, bounded by its `timeout`: it costs the slowest node's round trip, not
//!   N round trips. A node that does not answer (a partition, a stalled connection) costs
//!   the whole `timeout`, so keep it small next to the expiration (tens of milliseconds
//!   for an expiration of seconds); a node that is down refuses at once. The attempt wins
//!   when a quorum granted it, and the key is then on every node that could take it.
//! * **Validity.** The lock is certainly held until *start of the attempt + expiration −
//!   drift* (drift = 1 % of the expiration + 2 ms, [`drift_allowance`](crate::drift_allowance)),
//!   so the time the attempt took is already subtracted: that is
//!   [`RedlockLock::valid_for`], and [`RedlockLock::lost`] fires when it runs out. A node's
//!   grant that arrives after that instant counts as a timeout, so an attempt that wins a
//!   quorum only after its validity is gone is a failure; an expiration too short to leave
//!   any validity (under 3 ms) is refused up front.
//! * **A failed attempt is cleaned up before the next one.** Before the retry strategy is
//!   asked for a delay, the attempt is aborted on every node that may have taken it:
//!   where a node granted it, its claim is retired (the key deleted unless another
//!   acquire of the same value holds it); where the node did not answer (it timed out:
//!   its write may land later), the single-server store's abort also makes the node
//!   refuse that attempt if it arrives afterwards — so a slow node cannot be left holding
//!   a key past the failed attempt. Nodes that answered "held by another value" need
//!   nothing, so contention costs no extra round trip. A same-value re-lock never deletes
//!   the lock it re-locks.
//! * **Waiting.** Between attempts a waiter sleeps its strategy's delay, cut short when
//!   the key is released or a majority of the nodes' keys have expired by the times to
//!   live they reported, as on one server ([`ClientBuilder::notify`]). Each node
//!   announces a release on the key's channel, and the Redlock opens one subscriber
//!   connection per node at its first wait; a waiter wakes when a quorum of nodes
//!   announced a release (one release, one waiter per Redlock: the one that waited
//!   longest). The strategy still bounds the wait: an early wake is one more attempt
//!   within the same delay, and the total wait never exceeds the sum of the delays.
//! * **Contention is not failure.** [`Error::NotObtained`] only when a majority of nodes
//!   answered that another value holds the key. Any other failure — nodes down, timed
//!   out, or answers split — is [`Error::Quorum`], which says how many nodes granted,
//!   held and failed, and carries each failed node's error (also traced at `debug`).
//! * **Refresh needs a quorum and never releases.** [`RedlockLock::refresh`] re-arms the
//!   key on every node that still holds this value and succeeds once a quorum did; the
//!   validity is recomputed from the refresh's own start. A refresh that misses the
//!   quorum is [`Error::Quorum`] ([`Error::NotHeld`] when a majority answered that the
//!   value does not hold the key) and releases nothing: the lock stays valid until its
//!   old validity runs out, and renewal ([`RedlockLock::auto_refresh`]) reports the
//!   failure on its channel. A node that lost the key (restarted, or down when the lock
//!   was taken) is not given it back: nothing ever re-creates a lost lock.
//! * **Unlock goes to every node.** It succeeds when a majority released the key.
//!
//! # What Redlock assumes
//!
//! Martin Kleppmann's critique ("How to do distributed locking", 2016): Redlock is only
//! safe under timing assumptions a real system does not keep — bounded network delay,
//! bounded process pauses and clocks that run at roughly the same rate. A holder paused
//! (GC, swapping, a stopped VM) after it checked its lease goes on writing after the
//! lease expired and another client took the lock; a Redis node whose clock jumps
//! forward expires the key early and grants it to a second client while the first holds a
//! quorum. Because Redlock offers no fencing token, the protected resource cannot tell
//! the two holders apart. *What it means for you:* if two holders at once would corrupt
//! data, Redlock alone does not protect you — use a store that gives fencing tokens (see
//! below) and have the resource check them. Redlock is sound for **efficiency** (avoid
//! doing work twice, where a rare duplicate is harmless), not for **correctness**.
//!
//! Salvatore Sanfilippo's (antirez) reply ("Is Redlock safe?", 2016): the algorithm
//! checks the time an attempt took, so delays *during* acquisition are accounted for; a
//! pause *after* acquisition breaks every lease-based lock, fenced or not; a resource
//! able to check a fencing token can as well check the lock's unique value with a
//! compare-and-set; and the clock problem is an operational one — Redis servers' clocks
//! must not jump. *What it means for you:* run the nodes on hosts whose clocks are slewed,
//! never stepped (NTP in slew mode, no manual changes); keep the expiration far above
//! network round trips and the pauses your process can suffer, and check
//! [`valid_for`](RedlockLock::valid_for) (or select on [`lost`](RedlockLock::lost))
//! right before each side effect; where the resource supports compare-and-set, make the
//! write conditional on the lock's unique [`value`](RedlockLock::value). And restart a
//! crashed node only after the longest expiration in use has passed, or run it with
//! `appendonly yes` and `appendfsync always`: a node that comes back empty at once can
//! hand a majority to a second client while the first still holds the lock.
//!
//! # Why there is no fencing token
//!
//! [`RedlockLock`] has no `fencing_token()`, so code that needs one does not compile.
//! Counters on independent nodes cannot give a token that rises with every acquisition
//! when node availability changes, because a node that missed acquisitions gives a lower
//! count later. With three nodes A, B, C: attempts that won A but lost the quorum push
//! A's counter to 5 while B and C stay at 1; client 1 then wins {A, B} (A = 6, B = 2,
//! token max = 6); A goes down; client 2 wins {B, C} (B = 3, C = 2, token 3). The later
//! holder has the lower token — a resource that trusts tokens would refuse the rightful
//! holder and accept the stale one. Sums and per-node vectors fail the same way.
//!
//! When you need fencing, use **one** Redis (or a Sentinel-managed master, or Redis
//! Cluster) with [`ClientBuilder::min_replicas`](crate::ClientBuilder::min_replicas):
//! its tokens come from one counter and rise strictly, and waiting for replicas narrows
//! (but does not close) the window in which a failover loses the lock. When a lock must
//! hold through failovers and pauses alike, use a consensus store such as etcd, whose
//! tokens come from a linearizable log.
//!
//! # Cancel safety, node by node
//!
//! Every async method says what a dropped future leaves behind. In short: a dropped
//! [`lock`](Redlock::lock) may leave its attempt in flight on every node; a detached
//! abort then goes to every node, refusing the attempt where it has not landed and
//! retiring its claim where it has (the key is deleted unless another acquire of the
//! value holds it). A dropped
//! [`refresh`](RedlockLock::refresh) may have re-armed some nodes and not others; the
//! validity is not extended. A dropped [`unlock`](RedlockLock::unlock) may have released
//! some nodes; the others keep the key until it expires.

mod lock;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use lock::RedlockLock;

#[cfg(doc)]
use crate::Error;
use crate::args::check_duration;
use crate::redact::Redacted;
use crate::retry::{NoRetry, RetryStrategy};
use crate::store::Backend;
use crate::store::quorum::Quorum;
use crate::{Client, ClientBuilder, Result};

/// A lock client over N independent Redis masters; quorum = N/2 + 1. See the
/// [module docs](self) for the algorithm and its limits.
///
/// Cheap to clone, `Send + Sync + 'static`; clones share one connection per node.
#[derive(Clone)]
pub struct Redlock {
    client: Client,
    nodes: usize,
}

impl fmt::Debug for Redlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Targets carry no credentials.
        f.debug_struct("Redlock")
            .field("nodes", &self.client.target())
            .field("quorum", &self.quorum())
            .field("default_timeout", &self.client.default_timeout())
            .finish()
    }
}

/// Configures a [`Redlock`] before it connects: the settings of
/// [`ClientBuilder`] that apply to every node.
///
/// **Each node is a different server.** [`open`](RedlockBuilder::open) refuses, with
/// [`Error::InvalidArgument`] naming both URLs (never their passwords), two URLs that
/// reach one server, whatever their spelling: the same text is refused before any I/O;
/// then every node is asked its server's `run_id` (`INFO server`, a random id each
/// `redis-server` process draws at start), and two nodes that answer with the same one
/// are refused — `redis://h:6379` and `redis://h:6379/`, `localhost` and
/// `127.0.0.1`, or two database numbers of one server. One server counted twice could
/// make a "majority" on its own, and lose it in a restart while another client wins the
/// real majority. [`from_clients`](RedlockBuilder::from_clients) does no I/O and only
/// refuses the same client twice: make sure its clients reach different servers.
///
/// ```no_run
/// # async fn demo() -> leasehold::Result<()> {
/// use std::time::Duration;
/// let redlock = leasehold::redlock::Redlock::builder()
///     .default_timeout(Duration::from_millis(100))
///     .open(&["redis://10.0.0.1:6379", "redis://10.0.0.2:6379", "redis://10.0.0.3:6379"])
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct RedlockBuilder {
    /// How each node's connection is opened (with `connect_timeout`).
    inner: ClientBuilder,
    connect_timeout: Duration,
    default_timeout: Duration,
}

impl Default for RedlockBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl RedlockBuilder {
    /// A builder with the documented defaults.
    pub const fn new() -> Self {
        RedlockBuilder {
            inner: ClientBuilder::new(),
            connect_timeout: crate::Client::DEFAULT_CONNECT_TIMEOUT,
            default_timeout: crate::Client::DEFAULT_TIMEOUT,
        }
    }

    /// Bound on one attempt for [`Redlock::try_lock`], and on the abort of an attempt
    /// given up on. Default: [`DEFAULT_TIMEOUT`](crate::Client::DEFAULT_TIMEOUT) (1 s). Validated
    /// (at least 1 ms, at most [`MAX_DURATION`](crate::MAX_DURATION)) when the Redlock is
    /// built.
    pub const fn default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// Bound on establishing (and re-establishing) each node's connection, and on
    /// asking it its server's `run_id` when the Redlock is opened. Default:
    /// [`DEFAULT_CONNECT_TIMEOUT`](crate::Client::DEFAULT_CONNECT_TIMEOUT) (5 s).
    pub const fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// What every key the Redlock writes on its nodes starts with; see
    /// [`ClientBuilder::key_prefix`]. Default: none.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.inner = self.inner.key_prefix(prefix);
        self
    }

    /// Trust this root certificate (PEM) for `rediss://` nodes; see
    /// [`ClientBuilder::tls_root_certificate`](crate::ClientBuilder::tls_root_certificate).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.inner = self.inner.tls_root_certificate(pem);
        self
    }

    /// Connect to every node in `urls` (at once), and make sure that no two of them are
    /// one server (see [above](RedlockBuilder)); see [`Redlock::open`].
    ///
    /// # Errors
    ///
    /// As [`Redlock::open`], and [`Error::InvalidArgument`] for a bad setting on the
    /// builder.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is written.
    pub async fn open(self, urls: &[&str]) -> Result<Redlock> {
        let default_timeout = check_duration("default_timeout", self.default_timeout)?;
        if urls.is_empty() {
            return Err(crate::Error::invalid(
                "urls: name at least one Redis master",
            ));
        }
        for (i, url) in urls.iter().enumerate() {
            if !crate::store::redis::SCHEMES
                .iter()
                .any(|s| url.starts_with(s))
            {
                return Err(crate::Error::invalid(
                    "urls: a Redlock node is a Redis server (redis://, rediss://, redis+unix://, unix://)",
                ));
            }
            if let Some(j) = urls[..i].iter().position(|other| other == url) {
                return Err(same_server(urls, j, i, "the same URL"));
            }
        }
        // Nodes announce releases (the release script publishes on the key's channel),
        // so that a waiting `lock` wakes when a majority of them did.
        let node = self
            .inner
            .connect_timeout(self.connect_timeout)
            .notify(true);
        let opening = urls.iter().map(|url| node.clone().open(url));
        let clients = futures::future::try_join_all(opening).await?;
        refuse_one_server_twice(urls, &clients, self.connect_timeout).await?;
        build(clients, default_timeout)
    }

    /// A Redlock over the Redis connections of `clients` (each opened with its own
    /// settings: credentials, TLS, timeouts), with this builder's default timeout; see
    /// [`Redlock::from_clients`].
    ///
    /// # Errors
    ///
    /// As [`Redlock::from_clients`], and [`Error::InvalidArgument`] for a bad default
    /// timeout on the builder.
    pub fn from_clients(self, clients: Vec<Client>) -> Result<Redlock> {
        let default_timeout = check_duration("default_timeout", self.default_timeout)?;
        build(clients, default_timeout)
    }
}

/// [`Error::InvalidArgument`] naming `urls[earlier]` and `urls[later]` (without their
/// credentials): they reach the same server, which `how` says how it was found.
fn same_server(urls: &[&str], earlier: usize, later: usize, how: &str) -> crate::Error {
    crate::Error::invalid(format!(
        "urls: urls[{earlier}] ({}) and urls[{later}] ({}) are {how}: a Redlock's nodes \
         must be independent Redis masters",
        Redacted(urls[earlier]),
        Redacted(urls[later]),
    ))
}

/// Ask every node its server's `run_id` (at once, each bounded by `timeout`) and refuse
/// two that answer with the same one: however their URLs spell them (`localhost` and
/// `127.0.0.1`, with or without a trailing `/`, another database number), they are one
/// server, which alone could make a "majority".
async fn refuse_one_server_twice(
    urls: &[&str],
    clients: &[Client],
    timeout: Duration,
) -> Result<()> {
    let asking = clients.iter().map(|client| async move {
        match client.backend() {
            Backend::Redis(store) => store.server_id(timeout).await,
            _ => Err(crate::Error::invalid(
                "urls: a Redlock node is a Redis server",
            )),
        }
    });
    let ids = futures::future::try_join_all(asking).await?;
    for (later, id) in ids.iter().enumerate() {
        if let Some(earlier) = ids[..later].iter().position(|other| other == id) {
            return Err(same_server(
                urls,
                earlier,
                later,
                "one server (the same run_id)",
            ));
        }
    }
    Ok(())
}

/// The Redlock over the Redis stores of `clients`.
fn build(clients: Vec<Client>, default_timeout: Duration) -> Result<Redlock> {
    let mut nodes = Vec::with_capacity(clients.len());
    let mut targets = Vec::with_capacity(clients.len());
    for client in &clients {
        match client.backend() {
            Backend::Redis(store) => nodes.push(Arc::clone(store)),
            _ => {
                return Err(crate::Error::invalid(
                    "clients: a Redlock node is a Redis client (not memory://, not another Redlock)",
                ));
            }
        }
        targets.push(client.target().to_owned());
    }
    // Every node's keys start with the same prefix: the Redlock writes them so.
    let prefix = clients.first().map(|c| c.store_key("").into_owned());
    let prefix = prefix.unwrap_or_default();
    if clients.iter().any(|c| c.store_key("") != prefix) {
        return Err(crate::Error::invalid(
            "clients: the nodes' clients must have the same key prefix",
        ));
    }
    let count = nodes.len();
    let quorum = Quorum::new(nodes)?;
    let target = format!("[{}]", targets.join(", "));
    let label = clients.first().map_or("", Client::holder_label);
    let client = Client::with_store(
        Backend::Redlock(Box::new(quorum)),
        default_timeout,
        &prefix,
        label,
        target,
    );
    Ok(Redlock {
        client,
        nodes: count,
    })
}

impl Redlock {
    /// A [`RedlockBuilder`] with the documented defaults.
    pub const fn builder() -> RedlockBuilder {
        RedlockBuilder::new()
    }

    /// Connect to the Redis masters at `urls` (`redis://…`, `rediss://…` with the `tls`
    /// feature, `redis+unix://…`, `unix://…`), all at once, with default settings. They
    /// must be independent servers — not replicas of each other, not nodes of one cluster
    /// — and there should be an odd number of them, 3 or 5: with N nodes, Redlock stays
    /// available while N/2 + 1 answer.
    ///
    /// Two URLs that reach the same server are refused, however they are spelled: each
    /// node is asked its server's `run_id` (`INFO server`), and no two may answer with
    /// the same one (see [`RedlockBuilder`]). The nodes' users need the `INFO` command.
    ///
    /// # Errors
    ///
    /// * [`Error::InvalidArgument`], before any I/O, for no URL, a URL that is not a
    ///   Redis URL, or the same URL twice; after connecting, for two URLs whose servers
    ///   report the same `run_id` (one server, spelled twice). The message names both
    ///   URLs, without their passwords;
    /// * [`Error::Redis`] (or [`Error::Timeout`]) when a node cannot be reached, rejects
    ///   the credentials or refuses `INFO` (`NOPERM`): every node must be reachable when
    ///   the Redlock is opened (use [`from_clients`](Redlock::from_clients) to start
    ///   with some of them down).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is written.
    pub async fn open(urls: &[&str]) -> Result<Redlock> {
        RedlockBuilder::new().open(urls).await
    }

    /// A Redlock over the connections of `clients`, Redis clients opened with
    /// [`Client::open`] or [`ClientBuilder`] (their own credentials, TLS, connect
    /// timeouts; Sentinel and Cluster clients count as one node each). The Redlock shares
    /// their connections. Its own default timeout is
    /// [`DEFAULT_TIMEOUT`](crate::Client::DEFAULT_TIMEOUT); see
    /// [`RedlockBuilder::from_clients`] to set it.
    ///
    /// Waiters wake on a release when a quorum of the clients announce releases
    /// ([`ClientBuilder::notify`], on by default; a client on your own connection needs
    /// a [`notifier`](ClientBuilder::notifier)); otherwise they pause as their strategy
    /// says.
    ///
    /// It does no I/O, so it cannot ask the servers who they are: unlike
    /// [`open`](Redlock::open), it only refuses the same client twice, not two clients
    /// that reach one server. Make sure they reach different servers.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for no client, a client that is not a Redis client
    /// (`memory://`), or the same client (or a clone of it) twice.
    pub fn from_clients(clients: Vec<Client>) -> Result<Redlock> {
        RedlockBuilder::new().from_clients(clients)
    }

    /// How many nodes there are.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// How many nodes must agree: N/2 + 1.
    pub fn quorum(&self) -> usize {
        self.nodes / 2 + 1
    }

    /// The bound on one attempt for [`try_lock`](Redlock::try_lock).
    pub fn default_timeout(&self) -> Duration {
        self.client.default_timeout()
    }

    /// Acquire `key` for `val` on a quorum of nodes, retrying under `retry` while that
    /// fails.
    ///
    /// Each attempt goes to every node at once and waits for their answers, bounded by
    /// `timeout` (and by the validity it could give: a grant later than *expiration −
    /// drift* after the attempt started counts as a timeout); it wins when a quorum
    /// granted it. A failed attempt is
    /// aborted on every node that may have taken it before the strategy is asked for a
    /// delay (see the [module docs](self#how-it-works)). When the strategy returns `None`
    /// the last attempt's outcome is returned, with no sleep after it. Acquisition is
    /// idempotent: a node that already holds `key` for `val` re-arms it.
    ///
    /// `val` must be unique to this holder; [`random_value`](crate::random_value) makes
    /// one.
    ///
    /// # Errors
    ///
    /// * [`Error::InvalidArgument`] before any I/O: empty `key` or `val`; `expiration`
    ///   under 3 ms (no validity would be left after the drift allowance) or over
    ///   [`MAX_DURATION`](crate::MAX_DURATION); `timeout` under 1 ms or over
    ///   `MAX_DURATION`;
    /// * [`Error::NotObtained`] when, in the last attempt, a majority of nodes answered
    ///   that another value holds the key;
    /// * [`Error::Quorum`] when the last attempt won no quorum for any other reason
    ///   (nodes down or timed out, answers split, grants after the validity was gone),
    ///   with the counts and each failed node's error. Attempts stop at once when the
    ///   nodes that failed with errors retrying cannot fix (authentication, permissions)
    ///   leave fewer than a quorum.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future may leave its attempt in flight on every node. A detached
    /// abort then goes to every node, on the nodes' connections (retried for up to five
    /// minutes where a node does not answer): where the attempt has not arrived yet, the
    /// node refuses it when it does (for an hour); where it landed, its claim is retired
    /// and the key deleted unless another acquire of `val` holds it — a lock this
    /// Redlock holds under `val` survives, as with [`Client::lock`]. Without a tokio
    /// runtime to run the abort on, the keys are left to expire.
    pub async fn lock(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
        timeout: Duration,
        retry: impl RetryStrategy,
    ) -> Result<RedlockLock> {
        let lock = self
            .client
            .lock(key, val, expiration, timeout, retry)
            .await?;
        Ok(RedlockLock::new(lock))
    }

    /// One attempt to acquire `key` for `val`: [`lock`](Redlock::lock) with [`NoRetry`],
    /// bounded by the default timeout ([`RedlockBuilder::default_timeout`]).
    ///
    /// # Errors
    ///
    /// As [`lock`](Redlock::lock): [`Error::InvalidArgument`], [`Error::NotObtained`],
    /// [`Error::Quorum`].
    ///
    /// # Cancel safety
    ///
    /// As [`lock`](Redlock::lock).
    pub async fn try_lock(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
    ) -> Result<RedlockLock> {
        self.lock(key, val, expiration, self.default_timeout(), NoRetry)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redlock_types_are_send_sync() {
        fn assert<T: Clone + Send + Sync + 'static>() {}
        assert::<Redlock>();
        assert::<RedlockBuilder>();
        fn assert_lock<T: Send + Sync>() {}
        assert_lock::<RedlockLock>();
    }

    #[tokio::test]
    async fn only_redis_clients_make_nodes() {
        let err = Redlock::from_clients(vec![Client::memory()]).unwrap_err();
        assert!(err.is_invalid_argument(), "{err:?}");
        let err = Redlock::from_clients(Vec::new()).unwrap_err();
        assert!(err.is_invalid_argument(), "{err:?}");
        for urls in [
            &[][..],
            &["memory://"][..],
            &["redis://127.0.0.1:1/", "redis://127.0.0.1:1/"][..],
        ] {
            let err = Redlock::open(urls).await.unwrap_err();
            assert!(err.is_invalid_argument(), "{urls:?}: {err:?}");
        }
        let err = Redlock::builder()
            .default_timeout(Duration::ZERO)
            .from_clients(Vec::new())
            .unwrap_err();
        assert!(err.is_invalid_argument(), "{err:?}");
    }
}
