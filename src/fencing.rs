//! Fenced access to a resource kept in the lock's store: `Client::fenced_get`/`fenced_set`
//! and `Lock::fenced_get`/`fenced_set` (the protocol is documented at the crate root).

use std::fmt;

use crate::args::{check_key, check_value};
use crate::client::Client;
use crate::lease::fenced;
use crate::lock::Lock;
use crate::store::Fence;
use crate::{Error, Result};

/// The holder's lock value and the value written stay out of it.
impl fmt::Debug for Fence<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fence")
            .field("resource", &self.resource)
            .field("token", &self.token)
            .field("holder", &self.holder.map(|_| "<redacted>"))
            .field("write", &self.write.map(|_| "<redacted>"))
            .finish()
    }
}

fn check_resource(resource: &str) -> Result<()> {
    check_key(resource).map_err(|_| Error::invalid("resource: must not be empty"))
}

impl Client {
    /// Read the string `resource` as an anonymous holder of `token`, provided `token` is
    /// above the highest token the resource has seen, or equal to it and that was used
    /// anonymously too (see [One token, one holder](crate#one-token-one-holder));
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

    #[test]
    fn a_fence_shows_neither_the_holder_nor_the_value_written() {
        let shown = format!(
            "{:?}",
            Fence::new("row", 7, Some("holder-secret"), Some("value-secret"))
        );
        assert!(shown.contains("row") && shown.contains('7'), "{shown}");
        assert!(!shown.contains("secret"), "{shown}");
    }

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
