//! A held lock: owner-checked refresh, TTL, release, and the holder's own view of how
//! long the lease is still valid.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::lease::Lease;
use crate::{Error, Result};

/// A lock on a key, held by this process under its value.
///
/// Dropping a `Lock` does **not** release it: the key stays until it expires (or
/// until [`Lock::unlock`]). That is what a scheduled job that must run once per period
/// wants, and `Drop` never does I/O. Call [`Lock::unlock`] to hand the key over at once.
/// Dropping the last handle of a lock does stop its [auto-refresh](Lock::auto_refresh):
/// nobody could unlock the key any more.
///
/// Locking a key again under the value that already holds it (through the same client)
/// gives another handle on the same lease: what one handle confirms or loses, every
/// handle sees.
#[must_use = "a Lock dropped at once keeps its key until the key expires: bind it (`let lock = …`) and `unlock()` it when done"]
pub struct Lock {
    pub(crate) lease: Arc<Lease>,
    expiration: Duration,
    timeout: Duration,
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("key", &self.key())
            .field("value", &"<redacted>")
            .field("fencing_token", &self.fencing_token())
            .field("expiration", &self.expiration)
            .field("timeout", &self.timeout)
            .field("valid_for", &self.valid_for())
            .finish()
    }
}

impl Lock {
    pub(crate) fn new(lease: Arc<Lease>, expiration: Duration, timeout: Duration) -> Lock {
        Lock {
            lease,
            expiration,
            timeout,
        }
    }

    /// The locked key.
    pub fn key(&self) -> &str {
        self.lease.user_key()
    }

    /// The value this lock holds the key with. Treat it as a secret: whoever knows it
    /// can refresh or release the lock.
    pub fn value(&self) -> &str {
        self.lease.value()
    }

    /// The fencing token of this acquisition: strictly greater than the token of every
    /// earlier acquisition of this key. Pass it to the resource you protect and have the
    /// resource reject writes carrying a lower token than it has seen.
    pub fn fencing_token(&self) -> u64 {
        self.lease.token()
    }

    /// The expiration the lock was acquired with; [`refresh`](Lock::refresh) re-arms it.
    pub fn expiration(&self) -> Duration {
        self.expiration
    }

    /// The timeout the lock was acquired with: it bounds [`refresh`](Lock::refresh),
    /// [`ttl`](Lock::ttl), [`unlock`](Lock::unlock) and fenced access.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How much longer the lease is certainly held, computed locally without I/O;
    /// `None` once it may have lapsed or was confirmed lost.
    ///
    /// The lease counts from the instant the last *confirmed* acquire or refresh was
    /// *sent* (not answered), so network delay only ever shortens it:
    ///
    /// `valid_until = sent + expiration − (expiration / 100 + 2 ms)`
    ///
    /// The subtracted drift allowance covers clock-rate differences between this host
    /// and the server. The guarantee assumes this process is not paused for longer than
    /// the remaining validity between checking it and acting on it: use the
    /// [fencing token](Lock::fencing_token) to be safe even then.
    pub fn valid_for(&self) -> Option<Duration> {
        self.lease.valid_for()
    }

    /// Whether this lock must be considered lost: `valid_for().is_none()`, without
    /// borrowing a future (handy in a loop that later calls [`unlock`](Lock::unlock)).
    pub fn is_lost(&self) -> bool {
        self.lease.is_lost()
    }

    /// Resolves when this lock must be considered lost: a store confirmed that the key is
    /// gone or held by another value, or the validity deadline ([`valid_for`]) passed
    /// without a confirmed renewal — before any other client could acquire the key,
    /// given the drift allowance. Use it in `tokio::select!` to abort work.
    ///
    /// [`valid_for`]: Lock::valid_for
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes the lock.
    pub async fn lost(&self) {
        self.lease.lost().await
    }

    /// Re-arm the expiration the lock was acquired with, if this lock's value still
    /// holds the key. Bounded by the `timeout` the lock was acquired with.
    ///
    /// # Errors
    ///
    /// * [`Error::NotHeld`] when the key is gone or held by another value (it is left
    ///   untouched, and the lock counts as lost);
    /// * [`Error::NotReplicated`] when the client asks for
    ///   [`min_replicas`](crate::ClientBuilder::min_replicas) and fewer replicas
    ///   acknowledged the re-arm in time (the lease this holder computes is not extended);
    /// * [`Error::Timeout`] when the round trip exceeded the timeout;
    /// * [`Error::Redis`] on a connection or server error.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future may or may not re-arm the key; either way the lease this
    /// holder computes ([`valid_for`](Lock::valid_for)) is not extended.
    pub async fn refresh(&self) -> Result<()> {
        self.refresh_for(self.expiration).await
    }

    /// Re-arm the key to exactly `expiration` from now (instead of the expiration the
    /// lock was acquired with), if this lock's value still holds it — shorter or longer
    /// (as bsm's refresh does: a 1 h lock refreshed to 60 s expires 60 s after the last
    /// refresh, so a crashed holder does not block everyone for the hour). The value is
    /// the holder's identity: every handle of the value in this client counts its
    /// [`valid_for`](Lock::valid_for) from the shortened lease at once (from when the
    /// refresh was sent: an answer that never came may have shortened the key all the
    /// same). Bounded by the lock's timeout.
    ///
    /// # Errors
    ///
    /// * [`Error::InvalidArgument`] for an `expiration` under 1 ms or over
    ///   [`MAX_DURATION`](crate::MAX_DURATION) (or one the store cannot grant), before any
    ///   I/O;
    /// * as [`refresh`](Lock::refresh) otherwise.
    ///
    /// # Cancel safety
    ///
    /// As [`refresh`](Lock::refresh).
    pub async fn refresh_for(&self, expiration: Duration) -> Result<()> {
        let expiration = crate::args::check_duration("expiration", expiration)?;
        let expiration = crate::store::Store::grant(self.lease.backend(), expiration)?;
        let refreshed = self.lease.refresh(expiration, self.timeout).await;
        if matches!(refreshed, Err(Error::NotHeld)) {
            self.lease.mark_lost();
        }
        refreshed
    }

    /// The key's remaining time to live on the store, or `None` if this lock's value no
    /// longer holds it. Bounded by the lock's timeout.
    ///
    /// # Errors
    ///
    /// * [`Error::Timeout`] when the round trip exceeded the timeout;
    /// * [`Error::Redis`] on a connection or server error.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn ttl(&self) -> Result<Option<Duration>> {
        self.lease.ttl(self.timeout).await
    }

    /// Stop any auto-refresh of this lock, then release it if this lock's value still
    /// holds the key. Renewal is stopped (its task gone) before the release is sent, so
    /// no renewal can land after it.
    ///
    /// # Errors
    ///
    /// * [`Error::NotHeld`] when the key was already gone or held by another value (it
    ///   is left untouched);
    /// * [`Error::Indeterminate`] when the connection failed after the release went out:
    ///   it may or may not have deleted the key;
    /// * [`Error::Timeout`] when the round trip exceeded the lock's timeout;
    /// * [`Error::Redis`] on a connection or server error.
    ///
    /// On `Indeterminate`, `Timeout` or `Redis` the key may still be held: it expires by
    /// itself.
    ///
    /// A release is sent once: never again after it may have reached the store (a second
    /// one would find the key gone and report `NotHeld` for a release that succeeded).
    /// It is sent again only after an answer that says it did not run (a cluster's
    /// redirect, `TRYAGAIN`, `CLUSTERDOWN`, a server loading or demoted) or when no
    /// connection could be made — so `NotHeld` always means the key was not this lock's
    /// when the release ran.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future after renewal was stopped leaves the key to expire
    /// (or released, if the release was already sent). Either way the lease is over
    /// for every handle of it (same-value re-locks share it) from the moment the release
    /// is sent: none of them goes on believing in a key the release may delete.
    pub async fn unlock(self) -> Result<()> {
        self.lease.release(self.timeout).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Client;
    use tokio::time::Instant;

    #[test]
    fn lock_is_send_sync() {
        fn assert<T: Send + Sync>() {}
        assert::<Lock>();
    }

    #[tokio::test(start_paused = true)]
    async fn validity_runs_out_on_the_paused_clock() {
        let client = Client::memory();
        let lock = client
            .try_lock("k", "v", Duration::from_millis(1000))
            .await
            .unwrap();
        // 1000 ms − (10 ms + 2 ms)
        assert_eq!(lock.valid_for(), Some(Duration::from_millis(988)));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(lock.valid_for(), Some(Duration::from_millis(488)));
        lock.refresh().await.unwrap();
        assert_eq!(lock.valid_for(), Some(Duration::from_millis(988)));
        let started = Instant::now();
        lock.lost().await;
        assert_eq!(started.elapsed(), Duration::from_millis(988));
        assert_eq!(lock.valid_for(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_lost_follows_extensions_and_wakes_on_loss() {
        let client = Client::memory();
        let lock = client
            .try_lock("k", "v", Duration::from_millis(1000))
            .await
            .unwrap();
        let started = Instant::now();
        let waiter = async {
            lock.lost().await;
            started.elapsed()
        };
        let driver = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            // Valid until 500 + 988 ms now: the waiter must not fire at 988 ms.
            lock.refresh().await.unwrap();
            tokio::time::sleep(Duration::from_millis(700)).await;
            assert!(lock.valid_for().is_some());
            assert!(client.release_behind_the_back("k", "v").await);
            assert!(lock.refresh().await.unwrap_err().is_not_held());
        };
        let (elapsed, ()) = tokio::join!(waiter, driver);
        assert_eq!(elapsed, Duration::from_millis(1200));
    }

    #[tokio::test(start_paused = true)]
    async fn lost_fires_at_once_on_confirmed_loss() {
        let client = Client::memory();
        let lock = client
            .try_lock("k", "v", Duration::from_secs(10))
            .await
            .unwrap();
        // Another owner takes over after expiry would be impossible here; release it
        // behind the lock's back instead.
        assert!(client.release_behind_the_back("k", "v").await);
        assert!(lock.refresh().await.unwrap_err().is_not_held());
        let started = Instant::now();
        lock.lost().await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(lock.valid_for(), None);
    }
}
