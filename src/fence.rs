//! Resource-side fencing: the part of the protocol that makes a lease lock safe even
//! when a holder is paused past its lease.
//!
//! A lease can run out while its holder is stalled (GC, swap, a stopped VM, a slow
//! network); the holder then wakes and writes as if it still held the lock, while a new
//! holder already does. The resource itself has to refuse the stale holder: every
//! access carries the holder's [fencing token](crate::Lock::fencing_token), and the
//! resource refuses any token lower than the highest it has seen.
//!
//! For a resource stored in the same Redis (or memory store) as the lock,
//! [`Client::fenced_get`] and [`Client::fenced_set`] (and their [`Lock`] shorthands) do
//! this in one atomic script. **Reads are fenced too**: a read with token *t* raises the
//! resource's highest token to *t*, so a stale holder's write cannot land between a newer
//! holder's read and write (fencing writes alone would lose that update).
//!
//! # The same in SQL
//!
//! Keep the highest token next to the data and make every statement conditional on it:
//!
//! ```sql
//! -- read, and claim the row for this token
//! UPDATE jobs SET fence = $token WHERE id = $id AND fence <= $token RETURNING state;
//! -- write
//! UPDATE jobs SET state = $state, fence = $token WHERE id = $id AND fence <= $token;
//! -- zero rows affected: a newer holder exists; abort
//! ```
//!
//! The highest token of a Redis resource lives at `<resource>:token…` (in the same
//! cluster slot); the resource itself is a plain string, readable with `GET`.

use crate::client::{Client, check_key, check_value};
use crate::lock::Lock;
use crate::{Error, Result};

impl Client {
    /// Read the string `resource`, provided `token` is at least the highest token the
    /// resource has seen; `token` becomes its highest. `None`: the resource is unset.
    ///
    /// # Errors
    ///
    /// * [`Error::Fenced`] when a higher token was seen: this holder was superseded;
    /// * [`Error::InvalidArgument`] for an empty `resource`, before any I/O;
    /// * [`Error::Timeout`] after the client's default timeout; [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future may or may not have raised the resource's highest token.
    pub async fn fenced_get(&self, resource: &str, token: u64) -> Result<Option<String>> {
        self.fenced(resource, token, None).await
    }

    /// Set the string `resource` to `value`, provided `token` is at least the highest
    /// token the resource has seen; `token` becomes its highest.
    ///
    /// # Errors
    ///
    /// * [`Error::Fenced`] when a higher token was seen: nothing was written;
    /// * [`Error::InvalidArgument`] for an empty `resource` or `value`, before any I/O;
    /// * [`Error::Timeout`] after the client's default timeout; [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future may or may not have written the value.
    pub async fn fenced_set(&self, resource: &str, value: &str, token: u64) -> Result<()> {
        check_value(value)?;
        self.fenced(resource, token, Some(value)).await.map(drop)
    }

    async fn fenced(
        &self,
        resource: &str,
        token: u64,
        write: Option<&str>,
    ) -> Result<Option<String>> {
        check_key(resource).map_err(|_| Error::invalid("resource: must not be empty"))?;
        let outcome = self
            .inner
            .backend
            .fenced(resource, token, write, self.default_timeout())
            .await?;
        outcome.map_err(|highest| Error::Fenced { token, highest })
    }
}

impl Lock {
    /// [`Client::fenced_get`] with this lock's fencing token.
    ///
    /// # Errors
    ///
    /// As [`Client::fenced_get`].
    ///
    /// # Cancel safety
    ///
    /// As [`Client::fenced_get`].
    pub async fn fenced_get(&self, resource: &str) -> Result<Option<String>> {
        self.shared
            .client
            .fenced_get(resource, self.fencing_token())
            .await
    }

    /// [`Client::fenced_set`] with this lock's fencing token.
    ///
    /// # Errors
    ///
    /// As [`Client::fenced_set`].
    ///
    /// # Cancel safety
    ///
    /// As [`Client::fenced_set`].
    pub async fn fenced_set(&self, resource: &str, value: &str) -> Result<()> {
        self.shared
            .client
            .fenced_set(resource, value, self.fencing_token())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stale_tokens_are_refused_and_reads_raise_the_fence() {
        let c = Client::memory();
        assert_eq!(c.fenced_get("row", 1).await.unwrap(), None);
        c.fenced_set("row", "a", 1).await.unwrap();
        assert_eq!(c.fenced_get("row", 1).await.unwrap().as_deref(), Some("a"));
        // A newer holder reads: the old one can no longer write.
        assert_eq!(c.fenced_get("row", 2).await.unwrap().as_deref(), Some("a"));
        let err = c.fenced_set("row", "stale", 1).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Fenced {
                    token: 1,
                    highest: 2
                }
            ),
            "{err:?}"
        );
        assert_eq!(c.fenced_get("row", 2).await.unwrap().as_deref(), Some("a"));
        assert!(
            c.fenced_set("", "v", 3)
                .await
                .unwrap_err()
                .is_invalid_argument()
        );
        assert!(
            c.fenced_set("row", "", 3)
                .await
                .unwrap_err()
                .is_invalid_argument()
        );
    }
}
