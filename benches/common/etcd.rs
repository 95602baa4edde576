//! etcd (feature `etcd`): leasehold against etcd's own lock service, and the hand-off
//! of its fair wait.

use super::base::{EXPIRATION, TIMEOUT};
use leasehold::Client;

/// The expiration of every etcd lock here, in whole seconds.
pub const TTL: i64 = EXPIRATION.as_secs() as i64;

/// etcd's lock service (`v3lockpb.Lock`/`Unlock`, through etcd-client), the way it is
/// used for a lock that expires on its own: a lease per lock.
pub struct LockService {
    client: etcd_client::Client,
    /// A lease granted once, for the session pattern.
    session: i64,
}

impl LockService {
    pub async fn connect(endpoint: &str) -> LockService {
        let mut client = etcd_client::Client::connect([endpoint], None)
            .await
            .expect("etcd-client");
        // A session's lease lives as long as its client keeps it alive: an hour
        // stands in for the keep-alives.
        let session = client.lease_grant(3600, None).await.expect("lease").id();
        LockService { client, session }
    }

    /// A lease of [`TTL`], `Lock` on it, `Unlock`, revoke: the lease-per-lock
    /// equivalent of a leasehold lock (4 round trips).
    pub async fn lock_unlock_own_lease(&self, name: &str) {
        let mut c = self.client.clone();
        let lease = c.lease_grant(TTL, None).await.expect("grant").id();
        let options = etcd_client::LockOptions::new().with_lease(lease);
        let locked = c.lock(name, Some(options)).await.expect("lock");
        c.unlock(locked.key()).await.expect("unlock");
        c.lease_revoke(lease).await.expect("revoke");
    }

    /// `Lock` without a lease + `Unlock`: etcd-client's plain call. The server grants
    /// a 60 s session lease per call (never revoked: it expires), so each lock
    /// lasts at most 60 s.
    pub async fn lock_unlock_plain(&self, name: &str) {
        let mut c = self.client.clone();
        let locked = c.lock(name, None).await.expect("lock");
        c.unlock(locked.key()).await.expect("unlock");
    }

    /// `Lock` + `Unlock` on one lease granted up front (etcd's session pattern: every
    /// lock of the client shares one lease, 2 round trips).
    pub async fn lock_unlock_session(&self, name: &str) {
        let mut c = self.client.clone();
        let options = etcd_client::LockOptions::new().with_lease(self.session);
        let locked = c.lock(name, Some(options)).await.expect("lock");
        c.unlock(locked.key()).await.expect("unlock");
    }
}

/// leasehold on etcd: `try_lock` + `unlock` (a lease per lock: grant + txn, then an
/// owner-checked delete; the spent lease is revoked in the background).
pub async fn leasehold_lock_unlock(client: &Client, key: &str) {
    let lock = client
        .lock(key, "v", EXPIRATION, TIMEOUT, leasehold::NoRetry)
        .await
        .expect("lock");
    lock.unlock().await.expect("unlock");
}
