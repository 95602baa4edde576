//! Redlock over N independent servers against rslock's multi-server `LockManager`.

use std::sync::Arc;
use std::time::Duration;

use leasehold::Client;
use leasehold::redlock::Redlock;

use super::base::EXPIRATION;

/// Per-attempt timeout of the Redlock contenders (every node answers well within it).
pub const REDLOCK_TIMEOUT: Duration = Duration::from_millis(200);

/// The retry delay given to rslock under contention: it sleeps a uniformly random whole
/// number of milliseconds in `0..5`, mean 2 ms — the mean of the strategies leasehold
/// runs with (`contention::Strategy::INTERVAL`).
pub const RSLOCK_RETRY_DELAY: Duration = Duration::from_millis(5);

/// One uncontended lock + unlock over N servers, or over one as the baseline.
#[derive(Clone)]
pub enum QuorumContender {
    /// leasehold on one Redis server: the baseline of the Redlock goal.
    Single(Client),
    /// `Redlock::try_lock` + `RedlockLock::unlock` over `n` servers.
    Redlock(Redlock, usize),
    /// rslock 0.10 `LockManager::lock` + `unlock` over the same `n` servers.
    Rslock(Arc<rslock::LockManager>, usize),
}

impl QuorumContender {
    pub fn id(&self) -> String {
        match self {
            QuorumContender::Single(_) => "leasehold_single".to_owned(),
            QuorumContender::Redlock(_, n) => format!("redlock_{n}"),
            QuorumContender::Rslock(_, n) => format!("rslock_{n}"),
        }
    }

    /// leasehold on the first server, then Redlock and rslock over the first 3 and over
    /// all 5 of `urls`.
    pub async fn all(urls: &[String]) -> Vec<QuorumContender> {
        let mut all = vec![QuorumContender::Single(
            Client::open(&urls[0]).await.expect("leasehold client"),
        )];
        for n in [3, 5] {
            all.push(QuorumContender::Redlock(redlock(&urls[..n]).await, n));
            all.push(QuorumContender::Rslock(
                Arc::new(rslock::LockManager::new(urls[..n].to_vec())),
                n,
            ));
        }
        all
    }

    /// Acquire `key` for `val` (uncontended: must succeed), then release it.
    pub async fn lock_unlock(&self, key: &str, val: &str) {
        match self {
            QuorumContender::Single(c) => {
                let lock = c.try_lock(key, val, EXPIRATION).await.expect("try_lock");
                lock.unlock().await.expect("unlock");
            }
            QuorumContender::Redlock(r, _) => {
                let lock = r.try_lock(key, val, EXPIRATION).await.expect("redlock");
                lock.unlock().await.expect("unlock");
            }
            QuorumContender::Rslock(manager, _) => {
                let lock = manager
                    .lock(key.as_bytes(), EXPIRATION)
                    .await
                    .expect("rslock lock");
                manager.unlock(&lock).await;
            }
        }
    }
}

/// A Redlock over `urls`, with [`REDLOCK_TIMEOUT`] as its default timeout.
pub async fn redlock(urls: &[String]) -> Redlock {
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    Redlock::builder()
        .default_timeout(REDLOCK_TIMEOUT)
        .open(&urls)
        .await
        .expect("redlock")
}

/// An rslock `LockManager` over `urls` that retries without end under contention.
pub fn rslock_contender(urls: &[String]) -> Arc<rslock::LockManager> {
    let mut manager = rslock::LockManager::new(urls.to_vec());
    manager.set_retry(u32::MAX, RSLOCK_RETRY_DELAY);
    Arc::new(manager)
}
