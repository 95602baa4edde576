//! Run a job on exactly one host, on the calling thread: acquire, renew on the runtime
//! thread while it runs, release when it is done.

use std::time::Duration;

use super::client::Client;
use super::lock::Lock;
use crate::refresh::Policy;
use crate::{Error, Result, RetryStrategy};

impl Client {
    /// Run `job` on the calling thread while holding `key`, on one host at a time:
    /// [`crate::Client::run_exclusive`] for synchronous code.
    ///
    /// Acquires `key` with a fresh [`random_value`](crate::random_value) under `retry`
    /// (each attempt bounded by the client's default timeout), renews it every third of
    /// `expiration` on the runtime thread while `job` runs, and releases it when `job`
    /// returns. `job` gets the held [`Lock`]: pass
    /// [`fencing_token`](Lock::fencing_token) to what it writes.
    ///
    /// **The difference from the async form:** a running closure cannot be stopped from
    /// outside, so a lost lease does not abort `job` (the async form drops its future at
    /// the loss). It should check [`Lock::is_lost`] (or [`valid_for`](Lock::valid_for))
    /// between steps and stop when the lease is gone, and fence its writes. If the lease
    /// was lost by the time `job` returns, its output is dropped and the loss is
    /// returned — the job may have gone on well past the loss, so it did not run
    /// exclusively to its end. (The async form returns the output of a job that finished
    /// before the loss was noticed.)
    ///
    /// ```
    /// use std::time::Duration;
    /// let client = leasehold::blocking::Client::open("memory://")?;
    /// match client.run_exclusive("nightly-report", Duration::from_secs(30), leasehold::NoRetry, |lock| {
    ///     // ... the job, checking `lock.is_lost()` between steps; fence its writes ...
    ///     lock.fencing_token()
    /// }) {
    ///     Ok(token) => println!("ran under token {token}"),
    ///     Err(e) if e.is_not_obtained() => println!("another host is running it; skipped"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok::<(), leasehold::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// * [`Error::InvalidArgument`] for an empty `key` or an `expiration` under 3 ms
    ///   or over [`MAX_DURATION`](crate::MAX_DURATION);
    /// * from acquiring: [`Error::NotObtained`], [`Error::NotReplicated`],
    ///   [`Error::Timeout`], [`Error::Redis`], [`Error::Store`];
    /// * the loss, when the lease was lost while `job` ran: [`Error::NotHeld`],
    ///   [`Error::MaxRetryExceeded`] or another renewal error, or [`Error::LeaseExpired`]
    ///   when the lease ran out while renewal was still trying.
    ///
    /// Once `job` has returned under a lease still held, its output is returned even if
    /// the release then fails (the key expires by itself).
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see the [module docs](super#panics)).
    /// A panic in `job` propagates; dropping the handles on the way stops renewal, and
    /// the key is left to expire.
    #[track_caller]
    pub fn run_exclusive<T>(
        &self,
        key: &str,
        expiration: Duration,
        retry: impl RetryStrategy,
        job: impl FnOnce(&Lock) -> T,
    ) -> Result<T> {
        let timeout = self.default_timeout();
        let policy = Policy::for_lease(expiration, timeout)?;
        let lock = self.lock(key, &crate::random_value(), expiration, timeout, retry)?;
        let mut renewal = lock.renew(&policy)?;
        // A panic in `job` drops `renewal` (its task stops) and `lock` (the key expires).
        let output = job(&lock);
        if lock.is_lost() {
            let loss = renewal.try_error().unwrap_or(Error::LeaseExpired);
            renewal.stop();
            return Err(loss);
        }
        let _ = lock.unlock(); // stops renewal first
        Ok(output)
    }
}
