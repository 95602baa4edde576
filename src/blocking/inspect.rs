//! Inspection from plain threads: [`crate::Client::inspect`], [`crate::Client::list`] and
//! [`crate::Client::force_release`] without `.await`.

use super::Client;
#[cfg(doc)]
use crate::Error;
use crate::{LockInfo, Result};

impl Client {
    /// The lock on `key`, if one is held: the blocking form of [`crate::Client::inspect`].
    ///
    /// # Errors
    ///
    /// * [`Error::InvalidArgument`] for an empty `key`, before any I/O;
    /// * [`Error::Timeout`], [`Error::Redis`] or [`Error::Store`] when the store failed.
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[track_caller]
    pub fn inspect(&self, key: &str) -> Result<Option<LockInfo>> {
        self.rt.run("Client::inspect", self.inner.inspect(key))
    }

    /// Every lock held whose key starts with `prefix`, sorted by key: the blocking form
    /// of [`crate::Client::list`].
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`], [`Error::Redis`] or [`Error::Store`] when the store failed.
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[track_caller]
    pub fn list(&self, prefix: &str) -> Result<Vec<LockInfo>> {
        self.rt.run("Client::list", self.inner.list(prefix))
    }

    /// Delete the lock on `key`, whoever holds it: the blocking form of
    /// [`crate::Client::force_release`]. `false` when no lock was there. Deletes only the
    /// acquisition it found, and is never sent again once it may have reached the store.
    ///
    /// # Errors
    ///
    /// * [`Error::InvalidArgument`] for an empty `key`, before any I/O;
    /// * [`Error::Indeterminate`] when the connection failed after the delete went out:
    ///   it may or may not have deleted the lock;
    /// * [`Error::Timeout`], [`Error::Redis`] or [`Error::Store`] when the store failed.
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[track_caller]
    pub fn force_release(&self, key: &str) -> Result<bool> {
        self.rt
            .run("Client::force_release", self.inner.force_release(key))
    }

    /// Delete the lock on `key` only while it is the acquisition with fencing token
    /// `token`: the blocking form of [`crate::Client::force_release_if`]. `false` when no
    /// lock was there or it has another token.
    ///
    /// # Errors
    ///
    /// As [`force_release`](Client::force_release).
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[track_caller]
    pub fn force_release_if(&self, key: &str, token: u64) -> Result<bool> {
        self.rt.run(
            "Client::force_release_if",
            self.inner.force_release_if(key, token),
        )
    }
}
