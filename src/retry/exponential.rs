//! Exponential backoff with a cap, equal jitter and limits on retries and total delay.

use std::time::Duration;

use super::rng::{LazyRng, duration_from_nanos};
use super::{RetryStrategy, check_delay};

/// Exponential backoff: `min_delay`, `min_delay * factor`, `min_delay * factor²`, … capped at
/// `max_delay`, with "equal jitter", for at most `max_retries` retries.
///
/// This is the policy users of `bsm/redislock` and `backon` expect. Defaults:
///
/// | setting | default | setter |
/// | --- | --- | --- |
/// | factor | [`DEFAULT_FACTOR`](Self::DEFAULT_FACTOR) (`2.0`) | [`with_factor`](Self::with_factor) |
/// | jitter | on (equal jitter) | [`without_jitter`](Self::without_jitter) |
/// | max retries | [`DEFAULT_MAX_RETRIES`](Self::DEFAULT_MAX_RETRIES) (`10`) | [`with_max_retries`](Self::with_max_retries), or [`with_retries`](Self::with_retries)`(min, max, n)` |
/// | max total delay | none | [`with_max_total_delay`](Self::with_max_total_delay) |
/// | random seed | from the OS | [`with_seed`](Self::with_seed) |
///
/// # Sequence
///
/// Without jitter the `k`-th delay (from 0) is `min(min_delay * factor^k, max_delay)`: the
/// sequence is non-decreasing and never exceeds `max_delay`. If `min_delay > max_delay`,
/// every delay is `max_delay`; a zero `min_delay` yields zero delays.
///
/// With jitter (the default), each delay `d` of that sequence is replaced by
/// `d / 2 + uniform[0, d / 2]` ("equal jitter"), i.e. a value drawn uniformly from
/// `[d / 2, d]` with nanosecond granularity: never longer than the un-jittered delay and never
/// shorter than half of it. The un-jittered sequence keeps growing regardless of the values
/// drawn. Randomness comes from a fast non-cryptographic generator seeded from the OS on first
/// use, as for [`NonFixedInterval`](crate::NonFixedInterval).
///
/// It gives up (returns `None`, and keeps doing so) after `max_retries` delays, or as soon as
/// the next delay would bring the sum of the delays yielded so far above the
/// [max total delay](Self::with_max_total_delay).
///
/// Never panics: all arithmetic saturates, including for [`Duration::MAX`], infinite or huge
/// factors and zero durations. A client refuses a first delay under 1 ms (with retries
/// left) when the strategy is used ([`RetryStrategy::validate`]): a zero `min_delay`
/// stays zero, a busy loop.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use leasehold::{ExponentialBackoff, RetryStrategy};
///
/// const BACKOFF: ExponentialBackoff =
///     ExponentialBackoff::new(Duration::from_millis(100), Duration::from_millis(500))
///         .without_jitter()
///         .with_max_retries(5);
///
/// let mut s = BACKOFF; // `const` builders: each use of BACKOFF is a fresh strategy
/// let delays: Vec<_> = std::iter::from_fn(|| s.next_delay()).collect();
/// let ms = Duration::from_millis;
/// assert_eq!(delays, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
/// ```
///
/// With jitter each delay lies in `[d / 2, d]`:
///
/// ```
/// use std::time::Duration;
/// use leasehold::{ExponentialBackoff, RetryStrategy};
///
/// let mut s = ExponentialBackoff::new(Duration::from_millis(100), Duration::from_secs(1))
///     .with_factor(3.0)
///     .with_max_total_delay(Duration::from_secs(2));
/// let first = s.next_delay().unwrap();
/// assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
/// let second = s.next_delay().unwrap();
/// assert!(second >= Duration::from_millis(150) && second <= Duration::from_millis(300));
/// ```
#[derive(Debug, Clone)]
pub struct ExponentialBackoff {
    min_delay: Duration,
    max_delay: Duration,
    factor: f32,
    jitter: bool,
    max_retries: u32,
    max_total_delay: Option<Duration>,
    rng: LazyRng,
    /// Retries handed out so far.
    attempts: u32,
    /// Un-jittered delay handed out last, `None` before the first one.
    current: Option<Duration>,
    /// Sum of the delays handed out so far (saturating).
    total: Duration,
    /// Set once `None` has been returned.
    exhausted: bool,
}

impl ExponentialBackoff {
    /// Default growth factor between consecutive delays: `2.0`.
    pub const DEFAULT_FACTOR: f32 = 2.0;

    /// Default number of retries: `10`.
    pub const DEFAULT_MAX_RETRIES: u32 = 10;

    /// A backoff starting at `min_delay` and capped at `max_delay`, with factor `2`, equal
    /// jitter, at most 10 retries and no total-delay limit.
    #[must_use]
    pub const fn new(min_delay: Duration, max_delay: Duration) -> Self {
        Self {
            min_delay,
            max_delay,
            factor: Self::DEFAULT_FACTOR,
            jitter: true,
            max_retries: Self::DEFAULT_MAX_RETRIES,
            max_total_delay: None,
            rng: LazyRng::from_os(),
            attempts: 0,
            current: None,
            total: Duration::ZERO,
            exhausted: false,
        }
    }

    /// A backoff starting at `min_delay`, capped at `max_delay`, for at most
    /// `max_retries` retries: [`new`](Self::new) with
    /// [`with_max_retries`](Self::with_max_retries), in the shape of
    /// [`FixedInterval::new`](crate::FixedInterval::new)`(interval, max_retries)` and
    /// [`NonFixedInterval::new`](crate::NonFixedInterval::new)`(interval, max_retries)`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use leasehold::{ExponentialBackoff, NonFixedInterval, RetryStrategy};
    ///
    /// let ms = Duration::from_millis;
    /// // The same shape: delays, then how many retries.
    /// let _jittered = NonFixedInterval::new(ms(100), 5);
    /// let mut s = ExponentialBackoff::with_retries(ms(100), ms(2_000), 5).without_jitter();
    /// let delays: Vec<_> = std::iter::from_fn(|| s.next_delay()).collect();
    /// assert_eq!(delays, [ms(100), ms(200), ms(400), ms(800), ms(1_600)]);
    /// ```
    #[must_use]
    pub const fn with_retries(min_delay: Duration, max_delay: Duration, max_retries: u32) -> Self {
        Self::new(min_delay, max_delay).with_max_retries(max_retries)
    }

    /// Sets the growth factor between consecutive (un-jittered) delays.
    ///
    /// Values below `1.0` (including negative ones and `-inf`) are treated as `1.0`, i.e. a
    /// constant delay; NaN is treated as [`DEFAULT_FACTOR`](Self::DEFAULT_FACTOR). Huge or
    /// infinite factors are fine: the delay saturates at `max_delay`.
    #[must_use]
    pub const fn with_factor(mut self, factor: f32) -> Self {
        self.factor = if factor.is_nan() {
            Self::DEFAULT_FACTOR
        } else if factor < 1.0 {
            1.0
        } else {
            factor
        };
        self
    }

    /// Sets the maximum number of retries (delays yielded) before giving up. `0` means a
    /// single attempt, like [`NoRetry`](crate::NoRetry).
    #[must_use]
    pub const fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// Turns jitter off: the delays are exactly `min(min_delay * factor^k, max_delay)`.
    #[must_use]
    pub const fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }

    /// Gives up as soon as the next delay would bring the sum of the delays yielded so far
    /// above `max_total_delay` (a sum exactly equal to it is allowed).
    ///
    /// With jitter, the jittered delays are the ones summed.
    #[must_use]
    pub const fn with_max_total_delay(mut self, max_total_delay: Duration) -> Self {
        self.max_total_delay = Some(max_total_delay);
        self
    }

    /// Draws the jitter from a generator seeded with `seed` instead of the OS, for
    /// reproducible sequences (tests, simulations). Restarts the random sequence.
    #[must_use]
    pub const fn with_seed(mut self, seed: u64) -> Self {
        self.rng = LazyRng::seeded(seed);
        self
    }

    /// The un-jittered delay following `previous`.
    fn grow(&self, previous: Duration) -> Duration {
        if previous >= self.max_delay {
            return self.max_delay;
        }
        if self.factor == 1.0 {
            return previous;
        }
        let previous = previous.as_nanos();
        // `factor` is >= 1 and not NaN, so `scaled` is >= `previous` (up to rounding) or +inf;
        // the `as` cast saturates, and the clamp keeps the sequence monotone and capped.
        let scaled = previous as f64 * f64::from(self.factor);
        let nanos = (scaled as u128)
            .max(previous)
            .min(self.max_delay.as_nanos());
        duration_from_nanos(nanos)
    }
}

impl RetryStrategy for ExponentialBackoff {
    fn next_delay(&mut self) -> Option<Duration> {
        if self.exhausted || self.attempts >= self.max_retries {
            self.exhausted = true;
            return None;
        }
        let base = match self.current {
            None => self.min_delay.min(self.max_delay),
            Some(previous) => self.grow(previous),
        };
        let delay = if self.jitter {
            let n = base.as_nanos();
            let half = n / 2;
            duration_from_nanos(self.rng.uniform(half, n))
        } else {
            base
        };
        if let Some(limit) = self.max_total_delay {
            match self.total.checked_add(delay) {
                Some(total) if total <= limit => {}
                _ => {
                    self.exhausted = true;
                    return None;
                }
            }
        }
        self.total = self.total.saturating_add(delay);
        self.attempts += 1;
        self.current = Some(base);
        Some(delay)
    }

    /// Refuses a first delay (`min_delay`, or `max_delay` if smaller) under 1 ms while
    /// retries are left: a zero one stays zero, a busy loop.
    fn validate(&self) -> crate::Result<()> {
        let retries_left = !self.exhausted && self.attempts < self.max_retries;
        let (setting, first) = if self.max_delay < self.min_delay {
            ("max_delay", self.max_delay)
        } else {
            ("min_delay", self.min_delay)
        };
        check_delay("ExponentialBackoff", setting, first, retries_left)
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
    fn exponential_exact_sequence_without_jitter() {
        let mut s = ExponentialBackoff::new(ms(100), ms(1000))
            .without_jitter()
            .with_max_retries(6);
        assert_eq!(Some(ms(100)), s.next_delay());
        assert_eq!(Some(ms(200)), s.next_delay());
        assert_eq!(Some(ms(400)), s.next_delay());
        assert_eq!(Some(ms(800)), s.next_delay());
        assert_eq!(Some(ms(1000)), s.next_delay());
        assert_eq!(Some(ms(1000)), s.next_delay());
        assert_eq!(None, s.next_delay());
        assert_eq!(None, s.next_delay());
    }

    #[test]
    fn with_retries_is_new_with_max_retries() {
        let delays = |s: ExponentialBackoff| collect(&mut s.without_jitter(), 100);
        assert_eq!(
            delays(ExponentialBackoff::with_retries(ms(10), ms(50), 4)),
            delays(ExponentialBackoff::new(ms(10), ms(50)).with_max_retries(4))
        );
        assert_eq!(
            delays(ExponentialBackoff::with_retries(ms(10), ms(50), 4)),
            [ms(10), ms(20), ms(40), ms(50)]
        );
        const CONST: ExponentialBackoff = ExponentialBackoff::with_retries(ms(1), ms(2), 0);
        assert_eq!(delays(CONST), []);
    }

    #[test]
    fn a_first_delay_under_a_millisecond_is_refused_while_retries_are_left() {
        for (s, setting) in [
            (
                ExponentialBackoff::new(Duration::ZERO, ms(100)),
                "min_delay",
            ),
            (
                ExponentialBackoff::new(ms(100), Duration::ZERO),
                "max_delay",
            ),
            (
                ExponentialBackoff::new(Duration::from_micros(500), ms(100)),
                "min_delay",
            ),
        ] {
            let err = s.validate().unwrap_err();
            assert!(err.is_invalid_argument(), "{err:?}");
            assert!(
                err.to_string().contains(&format!(
                    "ExponentialBackoff's {setting} must be at least 1 ms"
                )),
                "{err}"
            );
        }
        ExponentialBackoff::with_retries(Duration::ZERO, Duration::ZERO, 0)
            .validate()
            .unwrap();
        ExponentialBackoff::new(ms(1), ms(1)).validate().unwrap();
    }

    #[test]
    fn exponential_default_max_retries_is_ten() {
        let mut s = ExponentialBackoff::new(ms(1), ms(10)).without_jitter();
        assert_eq!(
            vec![
                ms(1),
                ms(2),
                ms(4),
                ms(8),
                ms(10),
                ms(10),
                ms(10),
                ms(10),
                ms(10),
                ms(10)
            ],
            collect(&mut s, 100)
        );
        assert_eq!(None, s.next_delay());
    }

    #[test]
    fn exponential_factor_three_and_fractional() {
        let mut s = ExponentialBackoff::new(ms(10), ms(1000))
            .with_factor(3.0)
            .without_jitter()
            .with_max_retries(5);
        assert_eq!(
            vec![ms(10), ms(30), ms(90), ms(270), ms(810)],
            collect(&mut s, 10)
        );

        let mut s = ExponentialBackoff::new(ms(100), ms(1000))
            .with_factor(1.5)
            .without_jitter()
            .with_max_retries(4);
        assert_eq!(
            vec![
                ms(100),
                ms(150),
                ms(225),
                ms(337) + Duration::from_micros(500)
            ],
            collect(&mut s, 10)
        );
    }

    #[test]
    fn exponential_factor_below_one_is_constant_and_nan_is_default() {
        for factor in [0.5, 0.0, -3.0, f32::NEG_INFINITY, 1.0] {
            let mut s = ExponentialBackoff::new(ms(100), ms(1000))
                .with_factor(factor)
                .without_jitter()
                .with_max_retries(3);
            assert_eq!(vec![ms(100); 3], collect(&mut s, 10), "factor {factor}");
        }
        let mut s = ExponentialBackoff::new(ms(100), ms(1000))
            .with_factor(f32::NAN)
            .without_jitter()
            .with_max_retries(3);
        assert_eq!(vec![ms(100), ms(200), ms(400)], collect(&mut s, 10));
    }

    #[test]
    fn exponential_infinite_factor_saturates_at_max() {
        let mut s = ExponentialBackoff::new(ms(1), ms(50))
            .with_factor(f32::INFINITY)
            .without_jitter()
            .with_max_retries(3);
        assert_eq!(vec![ms(1), ms(50), ms(50)], collect(&mut s, 10));

        let mut s = ExponentialBackoff::new(ms(1), Duration::MAX)
            .with_factor(f32::MAX)
            .without_jitter()
            .with_max_retries(3);
        assert_eq!(
            vec![ms(1), Duration::MAX, Duration::MAX],
            collect(&mut s, 10)
        );
    }

    #[test]
    fn exponential_min_above_max_is_capped() {
        let mut s = ExponentialBackoff::new(ms(500), ms(100))
            .without_jitter()
            .with_max_retries(3);
        assert_eq!(vec![ms(100); 3], collect(&mut s, 10));
    }

    #[test]
    fn exponential_zero_and_max_durations() {
        let mut s = ExponentialBackoff::new(Duration::ZERO, ms(100)).with_max_retries(3);
        assert_eq!(vec![Duration::ZERO; 3], collect(&mut s, 10));

        let mut s = ExponentialBackoff::new(Duration::MAX, Duration::MAX)
            .without_jitter()
            .with_max_retries(3);
        assert_eq!(vec![Duration::MAX; 3], collect(&mut s, 10));

        let mut s = ExponentialBackoff::new(Duration::MAX, Duration::MAX)
            .with_seed(9)
            .with_max_retries(3);
        for d in collect(&mut s, 10) {
            assert!(d >= Duration::MAX / 2);
        }
    }

    #[test]
    fn exponential_zero_retries() {
        let mut s = ExponentialBackoff::new(ms(1), ms(2)).with_max_retries(0);
        assert_eq!(None, s.next_delay());
    }

    #[test]
    fn exponential_max_total_delay() {
        // 100 + 200 + 400 = 700; + 800 = 1500 > 1000.
        let mut s = ExponentialBackoff::new(ms(100), ms(10_000))
            .without_jitter()
            .with_max_total_delay(ms(1000));
        assert_eq!(vec![ms(100), ms(200), ms(400)], collect(&mut s, 100));
        assert_eq!(None, s.next_delay());

        // A sum exactly equal to the limit is allowed.
        let mut s = ExponentialBackoff::new(ms(100), ms(10_000))
            .without_jitter()
            .with_max_total_delay(ms(700));
        assert_eq!(vec![ms(100), ms(200), ms(400)], collect(&mut s, 100));

        // Limit below the first delay: no retry at all.
        let mut s = ExponentialBackoff::new(ms(100), ms(10_000)).with_max_total_delay(ms(10));
        assert_eq!(None, s.next_delay());

        // Overflowing sums stop instead of panicking.
        let mut s = ExponentialBackoff::new(Duration::MAX, Duration::MAX)
            .without_jitter()
            .with_max_total_delay(Duration::MAX);
        assert_eq!(vec![Duration::MAX], collect(&mut s, 100));
    }

    #[test]
    fn exponential_jitter_within_half_to_full() {
        let mut jittered = ExponentialBackoff::new(ms(10), ms(5000))
            .with_seed(11)
            .with_max_retries(1000);
        let mut plain = jittered.clone().without_jitter();
        let mut seen_different = false;
        for _ in 0..1000 {
            let (j, d) = (jittered.next_delay().unwrap(), plain.next_delay().unwrap());
            assert!(j >= d / 2 && j <= d, "{j:?} not in [{:?}, {d:?}]", d / 2);
            seen_different |= j != d;
        }
        assert!(seen_different);
        assert_eq!(None, jittered.next_delay());
    }

    #[test]
    fn exponential_seed_is_reproducible_and_builder_is_const() {
        const S: ExponentialBackoff = ExponentialBackoff::new(ms(10), ms(1000))
            .with_factor(2.5)
            .with_max_retries(8)
            .with_max_total_delay(Duration::from_secs(60))
            .with_seed(123);
        let (mut a, mut b) = (S, S);
        assert_eq!(collect(&mut a, 20), collect(&mut b, 20));
    }
}
