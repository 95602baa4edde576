//! Run a job on exactly one host: acquire, renew while it runs, abort it if the lease is
//! lost, release when it is done.

use std::time::Duration;

use crate::client::Client;
use crate::refresh::Policy;
use crate::retry::RetryStrategy;
use crate::{Error, Result};

impl Client {
    /// Run `job` while holding `key`, on one host at a time.
    ///
    /// Acquires `key` with a fresh [`random_value`](crate::random_value) under `retry`
    /// (each attempt bounded by the client's default timeout), renews it every third of
    /// `expiration` while `job` runs, and releases it when `job` is done. `job` receives
    /// the [fencing token](crate::Lock::fencing_token) of this acquisition: pass it to what
    /// the job writes. If the lease is lost while `job` runs — the store says the key is
    /// gone or held by another value, or the lease's validity runs out without a
    /// confirmed renewal (renewal gave up, or cannot reach the store) — `job` is dropped
    /// at its next await point and the loss is returned. A renewal that gave up does not
    /// stop `job` at once: the lease it already has is still valid, and `job` runs until
    /// that validity ends — before any other host could take the key.
    ///
    /// The scheduler modes of cron-style job runners map onto `retry`:
    /// * *skip if still running* (elsewhere): [`NoRetry`](crate::NoRetry) — a held key is
    ///   [`Error::NotObtained`] and the run is skipped;
    /// * *delay if still running*: a strategy that waits, such as
    ///   [`FixedInterval`](crate::FixedInterval).
    ///
    /// ```
    /// # async fn demo() -> leasehold::Result<()> {
    /// use std::time::Duration;
    /// let client = leasehold::Client::open("memory://").await?;
    /// match client
    ///     .run_exclusive("nightly-report", Duration::from_secs(30), leasehold::NoRetry, |token| async move {
    ///         // ... the job; fence its writes with `token` ...
    ///         token
    ///     })
    ///     .await
    /// {
    ///     Ok(token) => println!("ran under token {token}"),
    ///     Err(e) if e.is_not_obtained() => println!("another host is running it; skipped"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// * [`Error::InvalidArgument`] for an empty `key` or an `expiration` under 3 ms
    ///   (it is split into renewal intervals) or over [`MAX_DURATION`](crate::MAX_DURATION);
    /// * from acquiring: [`Error::NotObtained`], [`Error::NotReplicated`],
    ///   [`Error::Timeout`], [`Error::Redis`], [`Error::Store`];
    /// * the loss that aborted `job`: [`Error::NotHeld`], [`Error::MaxRetryExceeded`] or
    ///   another renewal error, or [`Error::LeaseExpired`] when the lease ran out while
    ///   renewal was still trying.
    ///
    /// Once `job` has finished, its output is returned even if the release then fails
    /// (the key expires by itself).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops `job` and stops renewal; the key is left to expire
    /// (and if acquisition was in flight, `lock`'s cancel safety applies).
    pub async fn run_exclusive<F, Fut, T>(
        &self,
        key: &str,
        expiration: Duration,
        retry: impl RetryStrategy,
        job: F,
    ) -> Result<T>
    where
        F: FnOnce(u64) -> Fut,
        Fut: Future<Output = T>,
    {
        let timeout = self.default_timeout();
        let policy = Policy::for_lease(expiration, timeout)?;
        let lock = self
            .lock(key, &crate::random_value(), expiration, timeout, retry)
            .await?;
        let mut renewal = lock.renew(&policy)?;
        let outcome = tokio::select! {
            // A job that finished is reported as such, even if the lease lapsed just now.
            biased;
            output = job(lock.fencing_token()) => Ok(output),
            () = lock.lost() => Err(renewal.try_error().unwrap_or(Error::LeaseExpired)),
        };
        match outcome {
            Ok(output) => {
                let _ = lock.unlock().await; // stops renewal first
                Ok(output)
            }
            Err(loss) => {
                renewal.stop().await;
                Err(loss)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FixedInterval, NoRetry};

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn runs_the_job_under_a_renewed_lock_and_releases_it() {
        let c = Client::memory();
        let out = c
            .run_exclusive("job", 300 * MS, NoRetry, |token| {
                let c = c.clone();
                async move {
                    // Ten expirations long: only renewal keeps others out.
                    for _ in 0..30 {
                        tokio::time::sleep(100 * MS).await;
                        assert!(
                            c.try_lock("job", "rival", MS * 10)
                                .await
                                .unwrap_err()
                                .is_not_obtained()
                        );
                    }
                    token
                }
            })
            .await
            .unwrap();
        assert_eq!(out, 1);
        let next = c.try_lock("job", "next", 300 * MS).await.expect("released");
        assert_eq!(next.fencing_token(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn skips_when_held_and_waits_with_a_retry_strategy() {
        let c = Client::memory();
        let _held = c.try_lock("job", "other", 200 * MS).await.unwrap();
        let skipped = c
            .run_exclusive("job", 300 * MS, NoRetry, |_| async {})
            .await;
        assert!(skipped.unwrap_err().is_not_obtained());
        let started = tokio::time::Instant::now();
        c.run_exclusive(
            "job",
            300 * MS,
            FixedInterval::new(50 * MS, 10),
            |_| async {},
        )
        .await
        .expect("ran once the other holder's lease expired");
        assert!(started.elapsed() >= 200 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_lease_aborts_the_job_and_is_reported() {
        let c = Client::memory();
        let thief = c.clone();
        let err = c
            .run_exclusive("job", 300 * MS, NoRetry, |_| async move {
                // Someone else takes the key behind the job's back.
                assert!(
                    thief
                        .release_behind_the_back("job", &current_value(&thief).await)
                        .await
                );
                let _stolen = thief.try_lock("job", "thief", 10 * 300 * MS).await.unwrap();
                tokio::time::sleep(Duration::from_secs(3600)).await;
                unreachable!("the job is aborted when the lease is lost");
            })
            .await
            .unwrap_err();
        assert!(err.is_not_held(), "{err:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn expirations_too_short_to_renew_are_invalid() {
        let c = Client::memory();
        let err = c
            .run_exclusive("job", 2 * MS, NoRetry, |_| async {})
            .await
            .unwrap_err();
        assert!(err.is_invalid_argument(), "{err:?}");
    }

    /// The value `run_exclusive` chose (random): find it through the memory store.
    async fn current_value(c: &Client) -> String {
        match c.backend() {
            crate::store::Backend::Memory(m) => m.value_of("job").expect("held"),
            _ => unreachable!("a memory client"),
        }
    }
}
