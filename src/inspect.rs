//! Operating locks: what an operator may see of them, and taking one away.

use std::fmt;
use std::time::{Duration, SystemTime};

#[cfg(doc)]
use crate::Error;
use crate::Result;
use crate::args::check_key;
use crate::client::Client;
use crate::store::{Inspected, Store};

/// A lock as an operator sees it: its key, how long it has left, its fencing token, and
/// an opaque digest of its holder — never the holder's value, which is a secret (whoever
/// knows it can refresh or release the lock). Returned by [`Client::inspect`] and
/// [`Client::list`].
#[derive(Clone, PartialEq, Eq)]
pub struct LockInfo {
    key: String,
    ttl: Option<Duration>,
    fencing_token: u64,
    holder: String,
    holder_label: Option<String>,
    locked_at: Option<SystemTime>,
}

impl LockInfo {
    /// The key, as this client names it (without its key prefix).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// How long the lock has left, as the store counts it (whole seconds, rounded down, on
    /// etcd); `None` if it has no expiry (set by hand: no lock of this library takes one
    /// without).
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// The fencing token of the lock's current acquisition.
    pub fn fencing_token(&self) -> u64 {
        self.fencing_token
    }

    /// An opaque digest of the holder's value (a SHA-1 on Redis, a 64-bit hash on etcd
    /// and in memory): equal for one holder, different for another. It does not reveal a
    /// value made by [`random_value`](crate::random_value) (128 random bits); a guessable
    /// value (a host name) could be recovered from it by trying candidates.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The label the holder's client stored with the lock
    /// ([`ClientBuilder::holder_label`](crate::ClientBuilder::holder_label): by default
    /// its host name and process id), if it stored one. Application text: escape it
    /// before printing it to a terminal.
    pub fn holder_label(&self) -> Option<&str> {
        self.holder_label.as_deref()
    }

    /// When the lock's current acquisition was made, if its holder stored a label (a
    /// re-lock by the same value keeps the first time). By the server's clock on Redis,
    /// the process's clock in memory, and the holder's clock on etcd (which has no clock
    /// to read; for a waiter that queued, when it joined the line).
    pub fn locked_at(&self) -> Option<SystemTime> {
        self.locked_at
    }
}

impl fmt::Debug for LockInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockInfo")
            .field("key", &self.key)
            .field("ttl", &self.ttl)
            .field("fencing_token", &self.fencing_token)
            .field("holder", &self.holder)
            .field("holder_label", &self.holder_label)
            .field("locked_at", &self.locked_at)
            .finish()
    }
}

impl Client {
    fn lock_info(&self, inspected: Inspected) -> LockInfo {
        LockInfo {
            key: self.user_key(&inspected.key).to_owned(),
            ttl: inspected.ttl,
            fencing_token: inspected.token,
            holder: inspected.holder,
            holder_label: inspected.label,
            locked_at: inspected.locked_at,
        }
    }

    /// The lock on `key`, if one is held: its time to live, fencing token and holder's
    /// digest. Bounded by the client's default timeout.
    ///
    /// ```
    /// # async fn demo() -> leasehold::Result<()> {
    /// use std::time::Duration;
    /// let client = leasehold::Client::open("memory://").await?;
    /// let lock = client.try_lock("nightly-report", "secret", Duration::from_secs(30)).await?;
    /// let info = client.inspect("nightly-report").await?.expect("held");
    /// assert_eq!(info.fencing_token(), lock.fencing_token());
    /// assert_ne!(info.holder(), "secret");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// * [`Error::InvalidArgument`] for an empty `key`, before any I/O;
    /// * [`Error::Timeout`], [`Error::Redis`] or [`Error::Store`] when the store failed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn inspect(&self, key: &str) -> Result<Option<LockInfo>> {
        check_key(key)?;
        let key = self.store_key(key);
        let inspected = self.backend().inspect(&key, self.default_timeout()).await?;
        Ok(inspected.map(|i| self.lock_info(i)))
    }

    /// Every lock held whose key starts with `prefix` (under the client's key prefix),
    /// sorted by key. The store is walked in steps (`SCAN` on Redis: never `KEYS`, which
    /// would block the server; on a cluster, every master; on etcd, ranges of 512 keys,
    /// keys only), each step bounded by the client's default timeout; a lock taken or
    /// released during the walk may or may not be in the list.
    ///
    /// Other applications' keys sharing the store never make it fail: keys that are not
    /// locks of this library are left out, and so are keys it cannot read — a key that
    /// is not UTF-8 (every key of this library is), or one a Redis ACL user may not
    /// access (`SCAN` shows it every key).
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`], [`Error::Redis`] or [`Error::Store`] when the store failed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn list(&self, prefix: &str) -> Result<Vec<LockInfo>> {
        let prefix = self.store_key(prefix);
        let locks = self.backend().list(&prefix, self.default_timeout()).await?;
        Ok(locks.into_iter().map(|i| self.lock_info(i)).collect())
    }

    /// Delete the lock on `key`, whoever holds it: an operator's tool for a lock whose
    /// holder is gone and that must not wait out its expiration. `false` when no lock was
    /// there. Waiters are woken as by an unlock.
    ///
    /// The holder is not told: its next refresh or renewal finds the key gone
    /// ([`Error::NotHeld`]), and until then it may go on working. Its fencing token stays
    /// the highest the key has issued, so a resource it fenced refuses only older tokens;
    /// the next holder's token is higher. Bounded by the client's default timeout.
    ///
    /// It deletes the acquisition it found, never one taken since: the holder is read,
    /// then the key deleted only while that acquisition still holds it (on Redis,
    /// `false` if it ended in between; etcd reads again and deletes the new holder, up
    /// to three times). The delete is sent once: never again after it may have reached
    /// the store, only after an answer that says it did not run, or when no connection
    /// could be made.
    ///
    /// # Errors
    ///
    /// * [`Error::InvalidArgument`] for an empty `key`, before any I/O;
    /// * [`Error::Indeterminate`] when the connection failed after the delete went out:
    ///   it may or may not have deleted the lock (calling again would delete whoever
    ///   holds the key by then: [`inspect`](Client::inspect) it, then use
    ///   [`force_release_if`](Client::force_release_if));
    /// * [`Error::Timeout`], [`Error::Redis`] or [`Error::Store`] when the store failed.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future may or may not have deleted the lock (never another).
    pub async fn force_release(&self, key: &str) -> Result<bool> {
        check_key(key)?;
        let key = self.store_key(key);
        self.backend()
            .force_release(&key, None, self.default_timeout())
            .await
    }

    /// [`force_release`](Client::force_release) only while the lock on `key` is the
    /// acquisition with fencing token `token` (as [`LockInfo::fencing_token`] showed
    /// it): checked and deleted in one step on the store, so a lock taken since by
    /// anyone else — even under the same value — is never deleted. `false` when no lock
    /// was there or it has another token.
    ///
    /// ```
    /// # async fn demo() -> leasehold::Result<()> {
    /// let client = leasehold::Client::open("memory://").await?;
    /// if let Some(info) = client.inspect("nightly-report").await? {
    ///     // ... an operator decides on `info` ...
    ///     if !client.force_release_if(info.key(), info.fencing_token()).await? {
    ///         println!("it changed hands meanwhile; nothing released");
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`force_release`](Client::force_release).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future may or may not have deleted that lock (never another).
    pub async fn force_release_if(&self, key: &str, token: u64) -> Result<bool> {
        check_key(key)?;
        let key = self.store_key(key);
        self.backend()
            .force_release(&key, Some(token), self.default_timeout())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn locks_are_listed_with_their_token_and_a_digest_never_the_value() {
        let c = Client::builder().key_prefix("app:").memory();
        let a = c
            .try_lock("jobs:a", "secret-a", Duration::from_secs(30))
            .await
            .unwrap();
        let _b = c
            .try_lock("jobs:b", "secret-b", Duration::from_secs(30))
            .await
            .unwrap();
        let _other = c
            .try_lock("other", "v", Duration::from_secs(30))
            .await
            .unwrap();
        let listed = c.list("jobs:").await.unwrap();
        let keys: Vec<&str> = listed.iter().map(LockInfo::key).collect();
        assert_eq!(keys, ["jobs:a", "jobs:b"]);
        assert_eq!(listed[0].fencing_token(), a.fencing_token());
        assert_ne!(listed[0].holder(), listed[1].holder());
        assert!(!format!("{listed:?}").contains("secret"));
        assert!(c.force_release("jobs:a").await.unwrap());
        assert_eq!(c.inspect("jobs:a").await.unwrap(), None);
        assert!(!c.force_release("jobs:a").await.unwrap());
        assert!(a.refresh().await.unwrap_err().is_not_held());
        assert!(c.inspect("").await.unwrap_err().is_invalid_argument());
    }
}
