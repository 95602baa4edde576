//! Leader loops on the calling thread: campaign for a key, run while holding it,
//! campaign again after a loss.

use std::fmt;
use std::time::Duration;

use super::client::Client;
use super::lock::Lock;
use crate::refresh::Policy;
use crate::{Error, Result, RetryStrategy};

/// One term of leadership in [`Client::run_while_leader`]: what the leader's closure
/// gets, the blocking form of [`crate::Leadership`].
pub struct Leadership<'a> {
    lock: &'a Lock,
    term: u32,
    previous_loss: Option<Error>,
}

impl fmt::Debug for Leadership<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leadership")
            .field("key", &self.key())
            .field("fencing_token", &self.fencing_token())
            .field("term", &self.term)
            .field("previous_loss", &self.previous_loss)
            .finish()
    }
}

impl Leadership<'_> {
    /// The key led.
    pub fn key(&self) -> &str {
        self.lock.key()
    }

    /// The fencing token of this term: strictly greater than that of every earlier term
    /// of any contender; pass it to what the leader writes.
    pub fn fencing_token(&self) -> u64 {
        self.lock.fencing_token()
    }

    /// Which term of this call this is: 1 for the first, 2 after one loss, and so on.
    pub fn term(&self) -> u32 {
        self.term
    }

    /// Why this call's previous term ended, if this is not its first; see
    /// [`crate::Leadership::previous_loss`].
    pub fn previous_loss(&self) -> Option<&Error> {
        self.previous_loss.as_ref()
    }

    /// Whether this term's lease must be considered lost (computed locally, no I/O):
    /// check it between steps of the loop and return when it is.
    pub fn is_lost(&self) -> bool {
        self.lock.is_lost()
    }

    /// How much longer this term's lease is certainly held; `None` once it may have
    /// lapsed. See [`Lock::valid_for`].
    pub fn valid_for(&self) -> Option<Duration> {
        self.lock.valid_for()
    }

    /// Park until the lease is lost or `timeout` passes; `true` if it is lost. A leader
    /// that waits for work can wait on this instead of sleeping.
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    #[track_caller]
    pub fn wait_lost_timeout(&self, timeout: Duration) -> bool {
        self.lock.wait_lost_timeout(timeout)
    }
}

impl Client {
    /// Lead `key` on the calling thread: campaign until this process holds it, call
    /// `lead` while it does, campaign again after a loss. The blocking form of
    /// [`crate::Client::run_while_leader`], with the same campaigning (`retry` is one
    /// budget for the whole call), renewal (every third of `expiration`, on the runtime
    /// thread) and terms.
    ///
    /// **The difference from the async form:** a running closure cannot be stopped from
    /// outside, so a loss does not interrupt `lead`. It should check
    /// [`Leadership::is_lost`] between steps (or wait on
    /// [`wait_lost_timeout`](Leadership::wait_lost_timeout)) and return when the lease
    /// is gone. When `lead` returns, the lease decides what that means: still held — the
    /// output is returned and the key released; lost — the output is dropped, as the
    /// async form drops the term's future, and a new campaign starts, after which `lead`
    /// is called again with the next term.
    ///
    /// ```
    /// use std::time::Duration;
    /// let client = leasehold::blocking::Client::open("memory://")?; // or "redis://…"
    /// let rounds = client.run_while_leader(
    ///     "indexer-leader",
    ///     Duration::from_secs(10),
    ///     std::iter::repeat(Duration::from_millis(500)), // campaign forever
    ///     |leadership| {
    ///         let mut rounds = 0;
    ///         while rounds < 3 && !leadership.is_lost() {
    ///             // ... one round of the loop, fenced with leadership.fencing_token() ...
    ///             rounds += 1;
    ///         }
    ///         rounds
    ///     },
    /// )?;
    /// assert_eq!(rounds, 3);
    /// # Ok::<(), leasehold::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// * [`Error::InvalidArgument`] for an empty `key` or an `expiration` under 3 ms
    ///   or over [`MAX_DURATION`](crate::MAX_DURATION), before any I/O;
    /// * from a campaign whose `retry` budget ran out: [`Error::NotObtained`] (another
    ///   contender led throughout), [`Error::Timeout`], [`Error::Redis`] or
    ///   [`Error::Store`]; an error that retrying cannot fix ends the call at once, as
    ///   does [`Error::NotReplicated`].
    ///
    /// Losing the lease is not an error of the call: it campaigns again.
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    /// A panic in `lead` propagates; the key is left to expire.
    #[track_caller]
    pub fn run_while_leader<T>(
        &self,
        key: &str,
        expiration: Duration,
        mut retry: impl RetryStrategy,
        mut lead: impl FnMut(&Leadership<'_>) -> T,
    ) -> Result<T> {
        if key.is_empty() {
            return Err(Error::invalid("key: must not be empty"));
        }
        let timeout = self.default_timeout();
        let policy = Policy::for_lease(expiration, timeout)?;
        let mut term = 0;
        let mut previous_loss = None;
        loop {
            let retry: &mut (dyn RetryStrategy + '_) = &mut retry;
            let lock = self.lock(key, &crate::random_value(), expiration, timeout, retry)?;
            term += 1;
            let mut renewal = lock.renew(&policy)?;
            let output = lead(&Leadership {
                lock: &lock,
                term,
                previous_loss: previous_loss.take(),
            });
            if !lock.is_lost() {
                let _ = lock.unlock(); // stops renewal first
                return Ok(output);
            }
            let loss = renewal.try_error().unwrap_or(Error::LeaseExpired);
            tracing::warn!(
                key,
                token = lock.fencing_token(),
                term,
                error = %loss,
                "leadership lost; campaigning again"
            );
            renewal.stop();
            // Frees the key at once if only the local validity lapsed.
            let _ = lock.unlock();
            previous_loss = Some(loss);
        }
    }
}
