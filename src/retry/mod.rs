//! Retry strategies: how long to wait before the next attempt to take a lock.
//!
//! A [`RetryStrategy`] is asked for a delay after every failed attempt; it returns
//! `Some(delay)` to try again after that delay, or `None` to give up.
//!
//! | Strategy | Delays |
//! | --- | --- |
//! | [`NoRetry`] | none: a single attempt |
//! | [`FixedInterval`] | `max_retries` times the same interval |
//! | [`NonFixedInterval`] | `max_retries` delays drawn uniformly from `[interval/2, interval*3/2]` |
//! | [`ExponentialBackoff`] | `min_delay`, `min_delay * factor`, … capped at `max_delay`, with optional jitter, `max_retries` times |
//! | any `Iterator<Item = Duration> + Send` | whatever the iterator yields, until it ends |
//!
//! The three take their settings in one shape, delays first and the number of retries
//! last: `FixedInterval::new(interval, max_retries)`,
//! `NonFixedInterval::new(interval, max_retries)` and
//! [`ExponentialBackoff::with_retries`]`(min_delay, max_delay, max_retries)`
//! (`ExponentialBackoff::new(min_delay, max_delay)` keeps its default of 10 retries).
//!
//! Their constructors are `const fn` and accept any value; a client checks the strategy
//! when it is used ([`RetryStrategy::validate`]): an interval under 1 ms with retries
//! left is an [`Error::InvalidArgument`](crate::Error::InvalidArgument) before any I/O,
//! as a zero interval would retry in a busy loop.
//!
//! Because every `Iterator<Item = Duration> + Send` is a `RetryStrategy`, the backoffs of
//! crates such as `backon` or `tokio-retry`, and plain std iterators, plug in unchanged.
//! For that same reason the strategies of this module do **not** implement [`Iterator`]
//! themselves: they implement `RetryStrategy` directly.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use leasehold::{ExponentialBackoff, FixedInterval, RetryStrategy};
//!
//! let mut fixed = FixedInterval::new(Duration::from_millis(50), 2);
//! assert_eq!(fixed.next_delay(), Some(Duration::from_millis(50)));
//! assert_eq!(fixed.next_delay(), Some(Duration::from_millis(50)));
//! assert_eq!(fixed.next_delay(), None);
//!
//! // A plain iterator is a strategy too.
//! let mut custom = [Duration::from_millis(10), Duration::from_millis(30)].into_iter();
//! assert_eq!(custom.next_delay(), Some(Duration::from_millis(10)));
//!
//! // Strategies can be boxed to choose one at run time.
//! let mut boxed: Box<dyn RetryStrategy> =
//!     Box::new(ExponentialBackoff::new(Duration::from_millis(10), Duration::from_secs(1)));
//! assert!(boxed.next_delay().is_some());
//! ```

use std::time::Duration;

#[cfg(feature = "backoff")]
mod backoff;
mod exponential;
mod fixed;
pub(crate) mod rng;

#[cfg(feature = "backoff")]
#[cfg_attr(docsrs, doc(cfg(feature = "backoff")))]
pub use backoff::BackoffAdapter;
pub use exponential::ExponentialBackoff;
pub use fixed::{FixedInterval, NoRetry, NonFixedInterval};

/// Decides the delay before the next lock attempt.
///
/// Implemented by the strategies of this module, by every
/// `I: Iterator<Item = Duration> + Send` (so `backon` / `tokio-retry` backoffs and std
/// iterators plug in unchanged), and by `Box<dyn RetryStrategy>` and
/// `&mut dyn RetryStrategy` (also with `+ Send` / `+ Sync` in the object type).
///
/// There is no blanket impl for `&mut S` or `Box<S>` over every `S: RetryStrategy`: it would
/// overlap with the iterator impl (std already makes `&mut I` and `Box<I>` iterators).
/// Coerce to `&mut dyn RetryStrategy` or `Box<dyn RetryStrategy>` instead.
///
/// Once a strategy has returned `None` the caller should stop asking; the strategies of this
/// module keep returning `None`.
///
/// # Examples
///
/// A custom strategy:
///
/// ```
/// use std::time::Duration;
/// use leasehold::RetryStrategy;
///
/// /// Waits 10 ms, 20 ms, 30 ms, … up to 5 tries.
/// struct Linear {
///     tries: u32,
/// }
///
/// impl RetryStrategy for Linear {
///     fn next_delay(&mut self) -> Option<Duration> {
///         if self.tries == 5 {
///             return None;
///         }
///         self.tries += 1;
///         Some(Duration::from_millis(10) * self.tries)
///     }
/// }
///
/// let mut s = Linear { tries: 0 };
/// assert_eq!(s.next_delay(), Some(Duration::from_millis(10)));
/// assert_eq!(s.next_delay(), Some(Duration::from_millis(20)));
/// ```
///
/// An iterator used as a strategy:
///
/// ```
/// use std::time::Duration;
/// use leasehold::RetryStrategy;
///
/// fn attempts(mut strategy: impl RetryStrategy) -> usize {
///     let mut n = 1;
///     while strategy.next_delay().is_some() {
///         n += 1;
///     }
///     n
/// }
///
/// assert_eq!(attempts(std::iter::repeat(Duration::from_millis(5)).take(3)), 4);
/// ```
pub trait RetryStrategy: Send {
    /// Delay before the next attempt, or `None` to give up.
    fn next_delay(&mut self) -> Option<Duration>;

    /// Check the strategy's settings before it is used: `lock` (and everything that
    /// locks through it: `run_exclusive`, `run_while_leader`, Redlock, the blocking
    /// client, and `Scheduler::add` for the claim retry of feature `schedule`) calls it
    /// once, before any I/O, and returns its error.
    ///
    /// The strategies of this module refuse an interval (or `ExponentialBackoff`'s
    /// `min_delay` or `max_delay`) under 1 ms while they have retries left: such a
    /// strategy retries in a busy loop against the store. Their constructors are
    /// `const fn` and cannot fail, so the check happens here, where the strategy is
    /// used.
    ///
    /// Default: accepted. Iterators (and so `backon` / `tokio-retry` strategies) are
    /// not checked: their delays are theirs to choose. A wrapper around another
    /// strategy should forward to it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) naming the setting.
    fn validate(&self) -> crate::Result<()> {
        Ok(())
    }
}

impl<I> RetryStrategy for I
where
    I: Iterator<Item = Duration> + Send,
{
    #[inline]
    fn next_delay(&mut self) -> Option<Duration> {
        self.next()
    }
}

/// The check of [`RetryStrategy::validate`] for a delay setting: at least 1 ms while
/// the strategy has retries left.
fn check_delay(
    strategy: &str,
    setting: &str,
    delay: Duration,
    retries_left: bool,
) -> crate::Result<()> {
    if retries_left && delay < Duration::from_millis(1) {
        return Err(crate::Error::invalid(format!(
            "retry: {strategy}'s {setting} must be at least 1 ms (got {delay:?}): a shorter \
             one retries in a busy loop"
        )));
    }
    Ok(())
}

/// `Box<dyn …>` and `&mut dyn …` for every combination of extra auto traits a user might
/// spell out in the object type (`dyn RetryStrategy + Send` is a distinct type from
/// `dyn RetryStrategy`, even though `Send` is already a supertrait).
macro_rules! impl_for_dyn {
    ($($object:ty),* $(,)?) => {
        $(
            impl RetryStrategy for Box<$object> {
                #[inline]
                fn next_delay(&mut self) -> Option<Duration> {
                    (**self).next_delay()
                }

                fn validate(&self) -> crate::Result<()> {
                    (**self).validate()
                }
            }

            impl RetryStrategy for &mut $object {
                #[inline]
                fn next_delay(&mut self) -> Option<Duration> {
                    (**self).next_delay()
                }

                fn validate(&self) -> crate::Result<()> {
                    (**self).validate()
                }
            }
        )*
    };
}

impl_for_dyn!(
    dyn RetryStrategy + '_,
    dyn RetryStrategy + Send + '_,
    dyn RetryStrategy + Sync + '_,
    dyn RetryStrategy + Send + Sync + '_,
);

#[cfg(test)]
mod tests {
    use super::*;

    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn collect(s: &mut impl RetryStrategy, limit: usize) -> Vec<Duration> {
        std::iter::from_fn(|| s.next_delay()).take(limit).collect()
    }

    fn assert_send<T: Send>() {}

    #[test]
    fn strategies_are_send() {
        assert_send::<NoRetry>();
        assert_send::<FixedInterval>();
        assert_send::<NonFixedInterval>();
        assert_send::<ExponentialBackoff>();
        assert_send::<Box<dyn RetryStrategy>>();
    }

    #[test]
    // `repeat().take()` on purpose: that exact adapter type is the one users pass.
    #[allow(clippy::manual_repeat_n)]
    fn iterator_blanket_impl() {
        let mut s = std::iter::repeat(ms(7)).take(2);
        assert_eq!(Some(ms(7)), s.next_delay());
        assert_eq!(Some(ms(7)), s.next_delay());
        assert_eq!(None, s.next_delay());

        let mut s = vec![ms(1), ms(2)].into_iter();
        assert_eq!(vec![ms(1), ms(2)], collect(&mut s, 10));

        let mut s = std::iter::repeat_n(ms(8), 1);
        assert_eq!(Some(ms(8)), s.next_delay());
        assert_eq!(None, s.next_delay());
    }

    /// `FixedInterval::new(Duration::ZERO, 3)` used to be accepted and retried in a busy
    /// loop: now the client refuses it before any attempt.
    #[tokio::test]
    async fn a_client_refuses_a_busy_loop_strategy_before_any_attempt() {
        const SEC: Duration = Duration::from_secs(1);
        let client = crate::Client::memory();
        let refused = |err: crate::Error| {
            assert!(err.is_invalid_argument(), "{err:?}");
            assert!(err.to_string().contains("busy loop"), "{err}");
        };
        let busy: [Box<dyn RetryStrategy + Send + Sync>; 3] = [
            Box::new(FixedInterval::new(Duration::ZERO, 3)),
            Box::new(NonFixedInterval::new(Duration::from_micros(100), 3)),
            Box::new(ExponentialBackoff::new(Duration::ZERO, SEC)),
        ];
        for retry in busy {
            // A free key: no attempt was made, so it stays free.
            refused(client.lock("free", "v", SEC, SEC, retry).await.unwrap_err());
            assert_eq!(client.inspect("free").await.unwrap(), None);
        }
        // Through `&mut dyn`, as `run_while_leader` passes it.
        let mut fixed = FixedInterval::new(Duration::ZERO, 3);
        let retry: &mut dyn RetryStrategy = &mut fixed;
        refused(client.lock("free", "v", SEC, SEC, retry).await.unwrap_err());
        assert_eq!(client.inspect("free").await.unwrap(), None);

        // Negative controls: 1 ms, no retry left, and iterators are accepted.
        let lock = client
            .lock("free", "v", SEC, SEC, FixedInterval::new(ms(1), 3))
            .await
            .unwrap();
        lock.unlock().await.unwrap();
        let lock = client
            .lock("free", "v", SEC, SEC, FixedInterval::new(Duration::ZERO, 0))
            .await
            .unwrap();
        lock.unlock().await.unwrap();
        let lock = client
            .lock(
                "free",
                "v",
                SEC,
                SEC,
                std::iter::repeat_n(Duration::ZERO, 2),
            )
            .await
            .unwrap();
        lock.unlock().await.unwrap();
    }

    #[cfg(feature = "schedule")]
    #[tokio::test]
    async fn a_scheduler_refuses_a_busy_loop_claim_retry() {
        use crate::schedule::{Job, Scheduler};
        let job = || Job::every("job", Duration::from_secs(1));
        let busy = Scheduler::new(crate::Client::memory())
            .claim_retry(FixedInterval::new(Duration::ZERO, 3));
        let err = busy.add(job(), |_| async {}).unwrap_err();
        assert!(err.is_invalid_argument(), "{err:?}");
        let fine = Scheduler::new(crate::Client::memory());
        fine.add(job(), |_| async {}).unwrap();
    }

    #[test]
    fn dyn_impls() {
        let mut boxed: Box<dyn RetryStrategy> = Box::new(FixedInterval::new(ms(3), 1));
        assert_eq!(Some(ms(3)), boxed.next_delay());
        assert_eq!(None, boxed.next_delay());

        let mut boxed: Box<dyn RetryStrategy + Send + Sync> = Box::new(NoRetry);
        assert_eq!(None, boxed.next_delay());

        fn first(mut s: impl RetryStrategy) -> Option<Duration> {
            s.next_delay()
        }
        let mut fixed = FixedInterval::new(ms(4), 2);
        assert_eq!(Some(ms(4)), first(&mut fixed as &mut dyn RetryStrategy));
        // The borrowed strategy kept its progress.
        assert_eq!(Some(ms(4)), fixed.next_delay());
        assert_eq!(None, fixed.next_delay());
    }
}
