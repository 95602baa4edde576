//! Leader loops: campaign for a key, run while holding it, campaign again after a loss.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::refresh::Policy;
use crate::{Client, Error, Lock, Result, RetryStrategy};

/// One term of leadership in [`Client::run_while_leader`]: what the leader's closure gets.
///
/// Cheap to clone; clones may move into tasks the leader spawns.
#[derive(Clone)]
pub struct Leadership {
    key: Arc<str>,
    token: u64,
    term: u32,
    previous_loss: Option<Error>,
    /// `true` once this term's lease is lost; closed when the term is over.
    lost: watch::Receiver<bool>,
}

impl fmt::Debug for Leadership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leadership")
            .field("key", &self.key)
            .field("fencing_token", &self.token)
            .field("term", &self.term)
            .field("previous_loss", &self.previous_loss)
            .finish()
    }
}

impl Leadership {
    /// The key led.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The fencing token of this term: strictly greater than that of every earlier term
    /// of any contender. Pass it to what the leader writes (see
    /// [fencing](crate#fencing-a-resource)), so that a leader that lost its lease while
    /// paused cannot write after its successor.
    pub fn fencing_token(&self) -> u64 {
        self.token
    }

    /// Which term of this [`run_while_leader`](Client::run_while_leader) call this is:
    /// 1 for the first, 2 after one loss, and so on.
    pub fn term(&self) -> u32 {
        self.term
    }

    /// Why this call's previous term ended, if this is not its first: the renewal error
    /// ([`Error::NotHeld`] when the key was taken or deleted, [`Error::MaxRetryExceeded`]
    /// when the store stopped answering) or [`Error::LeaseExpired`].
    pub fn previous_loss(&self) -> Option<&Error> {
        self.previous_loss.as_ref()
    }

    /// Resolves when this term's lease is lost — before another contender could take the
    /// key, given the lease's drift allowance, unless the key was deleted or taken behind
    /// the lease's back (then at the next renewal). `run_while_leader` drops the closure's
    /// future at that moment anyway; this is for tasks the leader spawned. Also resolves
    /// once the term is over, for a `Leadership` kept beyond it.
    ///
    /// # Errors
    ///
    /// None: it only waits. Why the term ended is logged, and handed to the next term
    /// as [`previous_loss`](Leadership::previous_loss).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes.
    pub async fn lost(&self) {
        let mut lost = self.lost.clone();
        let _ = lost.wait_for(|lost| *lost).await;
    }
}

impl Client {
    /// Lead `key`: campaign until this process holds it, run `lead` while it does, and
    /// when the lease is lost, drop `lead`'s future and campaign again. Returns `lead`'s
    /// output once a term's future completes, after releasing the key. This is the
    /// seeds' `RunLoopWithLock` (and an election in the etcd sense): the loop body runs on
    /// one node at a time.
    ///
    /// * **Campaigning**: each campaign is a [`lock`](Client::lock) of `key` with a fresh
    ///   [`random_value`](crate::random_value), `expiration`, the client's default
    ///   timeout per attempt, and `retry` for the delays between attempts.
    /// * **Leading**: the lease is renewed every third of `expiration` (each renewal
    ///   bounded by the default timeout, three timed-out renewals in a row end it). It is
    ///   lost when a renewal finds the key gone or taken ([`Error::NotHeld`]), when
    ///   renewal gives up, or when its validity runs out before a renewal is confirmed.
    /// * **After a loss** the future `lead` returned is dropped at once, the loss is
    ///   logged (`tracing` warning), the key is released if it still holds this term's
    ///   value, and a new campaign starts. `lead` is then **called again** — that is why
    ///   it is `FnMut`: a new term gets a new future, built from a new [`Leadership`]
    ///   whose [`term`](Leadership::term) is one higher and whose
    ///   [`previous_loss`](Leadership::previous_loss) says why the last one ended. State
    ///   the closure captures survives across terms; state inside the future does not, so
    ///   keep what a term must resume from in the store (fenced with the token).
    /// * **`retry` is one budget for the whole call**, shared by all its campaigns: every
    ///   delay any campaign waits is drawn from it. The first attempt of each campaign
    ///   (the first one, and the one right after a loss) is made without asking it. When
    ///   it gives up while another contender leads, the call returns
    ///   [`Error::NotObtained`] — even if this process led before. To campaign forever,
    ///   pass an endless strategy such as `std::iter::repeat(Duration::from_millis(500))`;
    ///   to give each campaign a fresh budget, call `run_while_leader` in a loop of your
    ///   own.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> leasehold::Result<()> {
    /// let client = leasehold::Client::open("memory://").await?; // or "redis://…"
    /// let (term, rounds) = client
    ///     .run_while_leader(
    ///         "indexer-leader",
    ///         Duration::from_secs(10),                        // lease, renewed every 3.3 s
    ///         std::iter::repeat(Duration::from_millis(500)),  // campaign forever
    ///         |leadership| async move {
    ///             let token = leadership.fencing_token();     // fence the loop's writes
    ///             let mut rounds = 0;
    ///             while rounds < 3 {
    ///                 // ... one round of the loop ...
    ///                 tokio::time::sleep(Duration::from_millis(10)).await;
    ///                 rounds += 1;
    ///             }
    ///             let _ = token;
    ///             (leadership.term(), rounds)                 // done: release and return
    ///         },
    ///     )
    ///     .await?;
    /// assert_eq!((term, rounds), (1, 3));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// * [`Error::InvalidArgument`] for an empty `key` or an `expiration` under 3 ms (it
    ///   is split into renewal intervals) or over [`MAX_DURATION`](crate::MAX_DURATION);
    /// * from a campaign whose `retry` budget ran out: [`Error::NotObtained`] (another
    ///   contender led throughout), [`Error::Timeout`] or [`Error::Redis`]; an error that
    ///   retrying cannot fix (authentication, permissions) ends the call at once, as does
    ///   [`Error::NotReplicated`] (with [`min_replicas`](crate::ClientBuilder::min_replicas)).
    ///
    /// Losing the lease is not an error of the call: it campaigns again.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops the current term's future and stops renewal; the key is
    /// released in a detached task (owner-checked) if a tokio runtime is still running,
    /// and otherwise left to expire. A campaign in flight follows
    /// [`lock`](Client::lock)'s cancel safety.
    pub async fn run_while_leader<F, Fut, T>(
        &self,
        key: &str,
        expiration: Duration,
        mut retry: impl RetryStrategy,
        mut lead: F,
    ) -> Result<T>
    where
        F: FnMut(Leadership) -> Fut,
        Fut: Future<Output = T>,
    {
        if key.is_empty() {
            return Err(Error::InvalidArgument("key: must not be empty".into()));
        }
        let timeout = self.default_timeout();
        let policy = Policy::for_lease(expiration, timeout)?;
        let key: Arc<str> = Arc::from(key);
        let mut term = 0;
        let mut previous_loss = None;
        loop {
            let retry: &mut (dyn RetryStrategy + '_) = &mut retry;
            let lock = self
                .lock(&key, &crate::random_value(), expiration, timeout, retry)
                .await?;
            term += 1;
            let held = ReleaseOnDrop(Some(lock));
            let lock = held.lock();
            let mut renewal = lock.renew(&policy)?;
            let (lost_tx, lost_rx) = watch::channel(false);
            let leadership = Leadership {
                key: Arc::clone(&key),
                token: lock.fencing_token(),
                term,
                previous_loss: previous_loss.take(),
                lost: lost_rx,
            };
            tracing::debug!(
                key = &*key,
                token = lock.fencing_token(),
                term,
                "became leader"
            );
            let ended = tokio::select! {
                // A term whose future completed is reported as such, even if its lease
                // lapsed just now.
                biased;
                output = lead(leadership) => Ok(output),
                () = lock.lost() => Err(renewal.try_error().unwrap_or(Error::LeaseExpired)),
            };
            match ended {
                Ok(output) => {
                    drop(lost_tx);
                    let _ = held.into_inner().unlock().await; // stops renewal first
                    return Ok(output);
                }
                Err(loss) => {
                    let _ = lost_tx.send(true);
                    tracing::warn!(
                        key = &*key,
                        token = lock.fencing_token(),
                        term,
                        error = %loss,
                        "leadership lost; campaigning again"
                    );
                    renewal.stop().await;
                    // Frees the key at once if only the local validity lapsed.
                    let _ = held.into_inner().unlock().await;
                    previous_loss = Some(loss);
                }
            }
        }
    }
}

/// Holds a leader's lock; if dropped while still holding it (the call was cancelled),
/// releases it in a detached task.
struct ReleaseOnDrop(Option<Lock>);

impl ReleaseOnDrop {
    fn lock(&self) -> &Lock {
        self.0.as_ref().expect("held until taken")
    }

    fn into_inner(mut self) -> Lock {
        self.0.take().expect("held until taken")
    }
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        if let Some(lock) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = lock.unlock().await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MAX_DURATION, NoRetry};

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn leadership_is_send_sync() {
        fn assert<T: Send + Sync + Clone>() {}
        assert::<Leadership>();
    }

    #[tokio::test(start_paused = true)]
    async fn leads_until_the_closure_completes_then_releases() {
        let c = Client::memory();
        let (term, token) = c
            .run_while_leader("k", 300 * MS, NoRetry, |l| {
                let c = c.clone();
                async move {
                    for _ in 0..30 {
                        tokio::time::sleep(100 * MS).await;
                        let rival = c.try_lock("k", "rival", 10 * MS).await;
                        assert!(rival.unwrap_err().is_not_obtained(), "renewed throughout");
                    }
                    (l.term(), l.fencing_token())
                }
            })
            .await
            .unwrap();
        assert_eq!((term, token), (1, 1));
        let next = c.try_lock("k", "next", 300 * MS).await.expect("released");
        assert_eq!(next.fencing_token(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_retry_budget_is_shared_by_all_campaigns() {
        let c = Client::memory();
        let _held = c
            .try_lock("k", "other", Duration::from_secs(60))
            .await
            .unwrap();
        let started = tokio::time::Instant::now();
        let err = c
            .run_while_leader("k", 300 * MS, [100 * MS, 100 * MS].into_iter(), |_| async {
            })
            .await
            .unwrap_err();
        assert!(err.is_not_obtained(), "{err:?}");
        assert_eq!(started.elapsed(), 200 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn arguments_are_checked() {
        let c = Client::memory();
        for (key, expiration) in [("", 300 * MS), ("k", 2 * MS), ("k", MAX_DURATION + MS)] {
            let err = c
                .run_while_leader(key, expiration, NoRetry, |_| async {})
                .await
                .unwrap_err();
            assert!(err.is_invalid_argument(), "{err:?}");
        }
    }
}
