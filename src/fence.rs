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
//! [`Lock::fenced_get`] and [`Lock::fenced_set`] (and the client-level
//! [`Client::fenced_get`] and [`Client::fenced_set`]) do this in one atomic script.
//! **Reads are fenced too**: a read with token *t* raises the resource's highest token to
//! *t*, so a stale holder's write cannot land between a newer holder's read and write
//! (fencing writes alone would lose that update).
//!
//! # One token, one holder
//!
//! A token is accepted when it is above the highest the resource has seen, or equal to
//! it **from the same holder**. Tokens rise with every acquisition — but a failover to a
//! replica that had not received the last acquisition (and its counter) hands the same
//! token to the next holder. The resource remembers who used its highest token (a SHA-1
//! digest of the holder's lock value, never the value) and refuses the same token from
//! anyone else, so it never accepts two holders under one token; the holder that used it
//! first keeps writing.
//!
//! The [`Lock`] forms know the holder. The client-level forms take a bare token and act
//! as an *anonymous* holder: an equal token is refused to them once a lock used it, and
//! accepted from any other anonymous access — two anonymous writers sharing a token
//! cannot be told apart. Prefer the `Lock` forms.
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
//! The highest token of a Redis resource and its holder's digest live at
//! `<resource>:token…` (in the same cluster slot), as `<token>:<digest>`; the resource
//! itself is a plain string, readable with `GET`. Tokens are compared exactly, as decimal
//! text, over the whole `u64` range.

use crate::args::{check_key, check_value};
use crate::client::Client;
use crate::lease::fenced;
use crate::lock::Lock;
use crate::store::Fence;
use crate::{Error, Result};

fn check_resource(resource: &str) -> Result<()> {
    check_key(resource).map_err(|_| Error::invalid("resource: must not be empty"))
}

impl Client {
    /// Read the string `resource` as an anonymous holder of `token`, provided `token` is
    /// above the highest token the resource has seen, or equal to it and that was used
    /// anonymously too (see [the module docs](crate::fence#one-token-one-holder));
    /// `token` becomes its highest. `None`: the resource is unset.
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

    /// Set the string `resource` to `value` as an anonymous holder of `token`, provided
    /// `token` is above the highest token the resource has seen, or equal to it and that
    /// was used anonymously too; `token` becomes its highest.
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
        check_resource(resource)?;
        let resource = self.store_key(resource);
        let access = Fence {
            resource: &resource,
            token,
            holder: None,
            write,
        };
        fenced(self.backend(), &access, self.default_timeout()).await
    }
}

impl Lock {
    /// Read the string `resource` as this lock's holder, with its fencing token: provided
    /// the token is above the highest the resource has seen, or equal to it and used by
    /// this holder; the token becomes its highest. `None`: the resource is unset.
    /// Bounded by the lock's timeout.
    ///
    /// # Errors
    ///
    /// * [`Error::Fenced`] when a higher token was seen, or this token was used by
    ///   another holder: this holder was superseded;
    /// * [`Error::InvalidArgument`] for an empty `resource`, before any I/O;
    /// * [`Error::Timeout`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future may or may not have raised the resource's highest token.
    pub async fn fenced_get(&self, resource: &str) -> Result<Option<String>> {
        check_resource(resource)?;
        self.lease.fenced(resource, None, self.timeout()).await
    }

    /// Set the string `resource` to `value` as this lock's holder, with its fencing
    /// token: provided the token is above the highest the resource has seen, or equal to
    /// it and used by this holder; the token becomes its highest. Bounded by the lock's
    /// timeout.
    ///
    /// # Errors
    ///
    /// * [`Error::Fenced`] when a higher token was seen, or this token was used by
    ///   another holder: nothing was written;
    /// * [`Error::InvalidArgument`] for an empty `resource` or `value`, before any I/O;
    /// * [`Error::Timeout`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future may or may not have written the value.
    pub async fn fenced_set(&self, resource: &str, value: &str) -> Result<()> {
        check_resource(resource)?;
        check_value(value)?;
        self.lease
            .fenced(resource, Some(value), self.timeout())
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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

    #[tokio::test]
    async fn one_token_serves_one_holder() {
        let c = Client::memory();
        let a = c
            .try_lock("job", "a", Duration::from_secs(10))
            .await
            .unwrap();
        a.fenced_set("row", "from a").await.unwrap();
        a.fenced_set("row", "again").await.unwrap();
        let token = a.fencing_token();
        // Anonymous access with the token a used: refused.
        let err = c.fenced_set("row", "anon", token).await.unwrap_err();
        assert!(
            matches!(err, Error::Fenced { highest, .. } if highest == token),
            "{err:?}"
        );
        // A higher anonymous token wins; then a is stale.
        c.fenced_set("row", "anon", token + 1).await.unwrap();
        c.fenced_set("row", "anon again", token + 1).await.unwrap();
        assert!(a.fenced_get("row").await.unwrap_err().is_fenced());
    }
}
