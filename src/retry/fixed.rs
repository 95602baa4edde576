//! Strategies with a set number of retries: none, a fixed interval, a jittered interval.

use std::time::Duration;

use super::rng::{LazyRng, MAX_NANOS, duration_from_nanos};
use super::{RetryStrategy, check_delay};

/// Never retries: the lock is attempted exactly once.
///
/// # Examples
///
/// ```
/// use leasehold::{NoRetry, RetryStrategy};
///
/// let mut s = NoRetry;
/// assert_eq!(s.next_delay(), None);
/// assert_eq!(s.next_delay(), None);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct NoRetry;

impl RetryStrategy for NoRetry {
    #[inline]
    fn next_delay(&mut self) -> Option<Duration> {
        None
    }
}

/// Retries `max_retries` times, always after the same interval.
///
/// Yields exactly `max_retries` delays, each equal to `interval`, then `None` forever.
/// With `max_retries == 0` it behaves like [`NoRetry`].
///
/// The constructor is `const fn` and accepts any interval; a client refuses an
/// `interval` under 1 ms (with retries left) when the strategy is used, with
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) before any I/O
/// ([`RetryStrategy::validate`]): it would retry in a busy loop.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use leasehold::{FixedInterval, RetryStrategy};
///
/// let mut s = FixedInterval::new(Duration::from_millis(100), 3);
/// assert_eq!(s.next_delay(), Some(Duration::from_millis(100)));
/// assert_eq!(s.next_delay(), Some(Duration::from_millis(100)));
/// assert_eq!(s.next_delay(), Some(Duration::from_millis(100)));
/// assert_eq!(s.next_delay(), None);
/// assert_eq!(s.next_delay(), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FixedInterval {
    interval: Duration,
    remaining: u32,
}

impl FixedInterval {
    /// A strategy that yields `interval` exactly `max_retries` times.
    #[must_use]
    pub const fn new(interval: Duration, max_retries: u32) -> Self {
        Self {
            interval,
            remaining: max_retries,
        }
    }
}

impl RetryStrategy for FixedInterval {
    fn next_delay(&mut self) -> Option<Duration> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        Some(self.interval)
    }

    /// Refuses an `interval` under 1 ms while retries are left (a busy loop).
    fn validate(&self) -> crate::Result<()> {
        check_delay(
            "FixedInterval",
            "interval",
            self.interval,
            self.remaining > 0,
        )
    }
}

/// Retries `max_retries` times after a random delay around `interval`.
///
/// Each delay is drawn uniformly, with nanosecond granularity, from the inclusive range
/// `[interval / 2, interval * 3 / 2]`, so the mean delay is `interval`. Randomising the delay
/// keeps clients that failed at the same moment from retrying in lock-step.
///
/// Never panics: `interval * 3 / 2` saturates at [`Duration::MAX`] (so for intervals above
/// `Duration::MAX * 2 / 3` the range is cut at the top and the mean is below `interval`), and
/// [`Duration::ZERO`] yields zero delays. A client refuses an `interval` under 1 ms (with
/// retries left) when the strategy is used, as for [`FixedInterval`].
///
/// The random numbers come from a fast non-cryptographic generator ([`SmallRng`](rand::rngs::SmallRng)), seeded from
/// the operating system the first time a delay is drawn (or, if the OS generator fails, from
/// the clock), so independent copies made with [`Clone`] *before* first use draw independent
/// sequences. Use [`with_seed`](Self::with_seed) for a reproducible sequence.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use leasehold::{NonFixedInterval, RetryStrategy};
///
/// let mut s = NonFixedInterval::new(Duration::from_millis(100), 2);
/// for _ in 0..2 {
///     let d = s.next_delay().unwrap();
///     assert!(d >= Duration::from_millis(50) && d <= Duration::from_millis(150));
/// }
/// assert_eq!(s.next_delay(), None);
///
/// // Reproducible with a seed.
/// let a = NonFixedInterval::new(Duration::from_secs(1), 5).with_seed(7);
/// let mut b = a.clone();
/// let mut a = a;
/// assert_eq!(a.next_delay(), b.next_delay());
/// ```
#[derive(Debug, Clone)]
pub struct NonFixedInterval {
    interval: Duration,
    remaining: u32,
    rng: LazyRng,
}

impl NonFixedInterval {
    /// A strategy that yields `max_retries` random delays in `[interval/2, interval*3/2]`.
    #[must_use]
    pub const fn new(interval: Duration, max_retries: u32) -> Self {
        Self {
            interval,
            remaining: max_retries,
            rng: LazyRng::from_os(),
        }
    }

    /// Draws the delays from a generator seeded with `seed` instead of the OS, for
    /// reproducible sequences (tests, simulations). Restarts the random sequence.
    #[must_use]
    pub const fn with_seed(mut self, seed: u64) -> Self {
        self.rng = LazyRng::seeded(seed);
        self
    }
}

impl RetryStrategy for NonFixedInterval {
    fn next_delay(&mut self) -> Option<Duration> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let n = self.interval.as_nanos();
        // n <= MAX_NANOS < 2^95, so n * 3 cannot overflow u128.
        let low = n / 2;
        let high = (n * 3 / 2).min(MAX_NANOS);
        Some(duration_from_nanos(self.rng.uniform(low, high)))
    }

    /// Refuses an `interval` under 1 ms while retries are left (a busy loop).
    fn validate(&self) -> crate::Result<()> {
        check_delay(
            "NonFixedInterval",
            "interval",
            self.interval,
            self.remaining > 0,
        )
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
    fn no_retry_never_retries() {
        let mut s = NoRetry;
        assert_eq!(None, s.next_delay());
        assert_eq!(None, s.next_delay());
    }

    #[test]
    fn fixed_interval_exact_sequence() {
        let mut s = FixedInterval::new(ms(100), 3);
        assert_eq!(Some(ms(100)), s.next_delay());
        assert_eq!(Some(ms(100)), s.next_delay());
        assert_eq!(Some(ms(100)), s.next_delay());
        assert_eq!(None, s.next_delay());
        assert_eq!(None, s.next_delay());
    }

    #[test]
    fn fixed_interval_zero_retries_and_edge_durations() {
        assert_eq!(None, FixedInterval::new(ms(100), 0).next_delay());
        let mut s = FixedInterval::new(Duration::MAX, 1);
        assert_eq!(Some(Duration::MAX), s.next_delay());
        assert_eq!(None, s.next_delay());
        let mut s = FixedInterval::new(Duration::ZERO, 2);
        assert_eq!(vec![Duration::ZERO; 2], collect(&mut s, 10));
    }

    #[test]
    fn intervals_under_a_millisecond_are_refused_while_retries_are_left() {
        for (strategy, name) in [
            (
                &FixedInterval::new(Duration::ZERO, 3) as &dyn RetryStrategy,
                "FixedInterval",
            ),
            (
                &FixedInterval::new(Duration::from_micros(999), 1),
                "FixedInterval",
            ),
            (
                &NonFixedInterval::new(Duration::ZERO, 3),
                "NonFixedInterval",
            ),
        ] {
            let err = strategy.validate().unwrap_err();
            assert!(err.is_invalid_argument(), "{err:?}");
            assert!(
                err.to_string()
                    .contains(&format!("{name}'s interval must be at least 1 ms")),
                "{err}"
            );
        }
        // No retry left: no delay is ever used.
        FixedInterval::new(Duration::ZERO, 0).validate().unwrap();
        NonFixedInterval::new(Duration::ZERO, 0).validate().unwrap();
        FixedInterval::new(ms(1), 3).validate().unwrap();
        NonFixedInterval::new(ms(1), 3).validate().unwrap();
        NoRetry.validate().unwrap();
    }

    #[test]
    fn fixed_interval_is_const() {
        const S: FixedInterval = FixedInterval::new(ms(5), 1);
        let mut s = S;
        assert_eq!(Some(ms(5)), s.next_delay());
        assert_eq!(None, s.next_delay());
    }

    #[test]
    fn non_fixed_interval_count_and_range() {
        let mut s = NonFixedInterval::new(ms(100), 50).with_seed(1);
        let delays = collect(&mut s, 100);
        assert_eq!(50, delays.len());
        assert!(delays.iter().all(|d| (ms(50)..=ms(150)).contains(d)));
        assert_eq!(None, s.next_delay());
        assert_eq!(None, s.next_delay());
    }

    #[test]
    fn non_fixed_interval_varies() {
        let delays = collect(&mut NonFixedInterval::new(ms(100), 20).with_seed(2), 20);
        assert!(delays.iter().any(|d| *d != delays[0]), "{delays:?}");
    }

    #[test]
    fn non_fixed_interval_os_seeded_varies() {
        let delays = collect(&mut NonFixedInterval::new(ms(100), 20), 20);
        assert!(delays.iter().any(|d| *d != delays[0]), "{delays:?}");
    }

    #[test]
    fn non_fixed_interval_seed_is_reproducible() {
        let a = collect(&mut NonFixedInterval::new(ms(100), 10).with_seed(42), 10);
        let b = collect(&mut NonFixedInterval::new(ms(100), 10).with_seed(42), 10);
        let c = collect(&mut NonFixedInterval::new(ms(100), 10).with_seed(43), 10);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn non_fixed_interval_edges() {
        let mut s = NonFixedInterval::new(Duration::ZERO, 3);
        assert_eq!(vec![Duration::ZERO; 3], collect(&mut s, 10));

        let mut s = NonFixedInterval::new(Duration::MAX, 100).with_seed(3);
        for d in collect(&mut s, 200) {
            assert!(d >= Duration::MAX / 2);
        }

        // 1 ns: the range is [0 ns, 1 ns].
        let mut s = NonFixedInterval::new(Duration::from_nanos(1), 100).with_seed(4);
        let delays = collect(&mut s, 100);
        assert!(delays.iter().all(|d| d.as_nanos() <= 1));
        assert!(delays.contains(&Duration::ZERO));
        assert!(delays.contains(&Duration::from_nanos(1)));
    }

    #[test]
    fn non_fixed_interval_reaches_both_bounds() {
        // 4 ns: range [2, 6] ns, 5 values; 1000 draws hit every one.
        let mut s = NonFixedInterval::new(Duration::from_nanos(4), 1000).with_seed(5);
        let delays = collect(&mut s, 1000);
        for n in 2..=6 {
            assert!(
                delays.contains(&Duration::from_nanos(n)),
                "{n} ns never drawn"
            );
        }
    }
}
