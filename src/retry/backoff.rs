//! The adapter for strategies of the unmaintained `backoff` crate (feature `backoff`).

use std::time::Duration;

use super::RetryStrategy;

/// Makes any [`backoff::backoff::Backoff`] a [`RetryStrategy`], through its
/// `next_backoff()`.
///
/// Only available with the `backoff` cargo feature, which is **off by default**. The `backoff`
/// crate is unmaintained ([RUSTSEC-2025-0012](https://rustsec.org/advisories/RUSTSEC-2025-0012))
/// and pulls in `rand` 0.8 and the unmaintained `instant` crate; prefer [`ExponentialBackoff`](crate::ExponentialBackoff)
/// or a `backon` backoff (any `Iterator<Item = Duration> + Send` is a strategy). This adapter
/// exists to ease migrating code that already builds `backoff` policies.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use backoff::backoff::{Constant, Stop};
/// use leasehold::{BackoffAdapter, RetryStrategy};
///
/// let mut s = BackoffAdapter(Constant::new(Duration::from_millis(20)));
/// assert_eq!(s.next_delay(), Some(Duration::from_millis(20)));
///
/// let mut stop = BackoffAdapter::new(Stop {});
/// assert_eq!(stop.next_delay(), None);
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "backoff")))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct BackoffAdapter<B>(pub B);

impl<B> BackoffAdapter<B> {
    /// Wraps a `backoff` policy.
    #[must_use]
    pub const fn new(backoff: B) -> Self {
        Self(backoff)
    }

    /// Returns the wrapped `backoff` policy.
    #[must_use]
    pub fn into_inner(self) -> B {
        self.0
    }
}

impl<B> RetryStrategy for BackoffAdapter<B>
where
    B: backoff::backoff::Backoff + Send,
{
    #[inline]
    fn next_delay(&mut self) -> Option<Duration> {
        self.0.next_backoff()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn collect(s: &mut impl RetryStrategy, limit: usize) -> Vec<Duration> {
        std::iter::from_fn(|| s.next_delay()).take(limit).collect()
    }

    #[test]
    fn backoff_adapter() {
        use backoff::backoff::{Backoff, Constant, Stop, Zero};

        let mut s = BackoffAdapter(Constant::new(ms(20)));
        assert_eq!(vec![ms(20); 3], collect(&mut s, 3));
        assert_eq!(None, BackoffAdapter::new(Stop {}).next_delay());
        assert_eq!(Some(Duration::ZERO), BackoffAdapter(Zero {}).next_delay());

        let boxed: Box<dyn Backoff + Send> = Box::new(Constant::new(ms(1)));
        let mut s = BackoffAdapter::new(boxed);
        assert_eq!(Some(ms(1)), s.next_delay());

        let mut s = BackoffAdapter(
            backoff::ExponentialBackoffBuilder::new()
                .with_initial_interval(ms(100))
                .with_max_elapsed_time(None)
                .build(),
        );
        assert!(s.next_delay().is_some());
        let _inner: backoff::ExponentialBackoff = s.into_inner();
    }
}
