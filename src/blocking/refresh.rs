//! The blocking renewal handle.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

#[cfg(doc)]
use super::Lock;
use super::runtime::Runtime;
use super::wait;
use crate::Error;

/// Renews a lock in the background, on the client's runtime thread, until stopped, and
/// reports why it ended if it ended on a failure: [`crate::AutoRefresh`] with blocking
/// methods. Returned by [`Lock::auto_refresh`].
///
/// Dropping it stops renewal (it does not unlock) without blocking. It keeps its
/// client's runtime thread alive.
#[must_use = "dropping an AutoRefresh stops the renewal at once: bind it (`let renewal = …`) \
              for as long as the lock must be kept"]
pub struct AutoRefresh {
    /// `None` once stopped.
    pub(super) inner: Option<crate::AutoRefresh>,
    pub(super) rt: Arc<Runtime>,
}

impl fmt::Debug for AutoRefresh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Some(inner) => fmt::Debug::fmt(inner, f),
            None => f
                .debug_struct("AutoRefresh")
                .field("running", &false)
                .finish_non_exhaustive(),
        }
    }
}

impl AutoRefresh {
    /// The failure that ended renewal, if there is one and it was not taken yet.
    /// Never blocks (so it may be called anywhere): `None` while renewal runs fine, after
    /// a clean stop, and after the failure was taken once.
    pub fn try_error(&mut self) -> Option<Error> {
        self.inner.as_mut()?.try_error()
    }

    /// Park until the failure that ends renewal arrives. `None` once renewal ended
    /// cleanly ([`Lock::unlock`], a newer `auto_refresh` of the lock) or the failure was
    /// taken.
    ///
    /// While renewal runs fine this does not return: prefer
    /// [`error_timeout`](AutoRefresh::error_timeout) or [`try_error`](AutoRefresh::try_error).
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[track_caller]
    pub fn error(&mut self) -> Option<Error> {
        self.wait_error("AutoRefresh::error", None)
    }

    /// Park until the failure that ends renewal arrives or `timeout` passes. `None` when
    /// the timeout passed with renewal running fine, once renewal ended cleanly, or when
    /// the failure was already taken.
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[track_caller]
    pub fn error_timeout(&mut self, timeout: Duration) -> Option<Error> {
        self.wait_error("AutoRefresh::error_timeout", Some(timeout))
    }

    /// Why renewal gave up, once it was reported as [`Error::MaxRetryExceeded`]: the
    /// error of the last failed renewal; see [`crate::AutoRefresh::cause`].
    pub fn cause(&self) -> Option<&Error> {
        self.inner.as_ref()?.cause()
    }

    /// Whether the renewal task is still running.
    pub fn is_running(&self) -> bool {
        self.inner.as_ref().is_some_and(|r| r.is_running())
    }

    /// Stop renewing; returns when the renewal task is gone, so no renewal is sent after
    /// it. Does not unlock.
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[track_caller]
    pub fn stop(mut self) {
        wait::enter("AutoRefresh::stop");
        if let Some(inner) = self.inner.take() {
            wait::block_on(self.rt.handle(), "AutoRefresh::stop", inner.stop());
        }
    }

    #[track_caller]
    fn wait_error(&mut self, what: &str, timeout: Option<Duration>) -> Option<Error> {
        wait::enter(what);
        let inner = self.inner.as_mut()?;
        match timeout {
            None => wait::block_on(self.rt.handle(), what, inner.error()),
            // `error` is cancel safe: a failure arriving after the timeout stays queued.
            Some(timeout) => wait::timeout(self.rt.handle(), what, inner.error(), timeout)?,
        }
    }
}
