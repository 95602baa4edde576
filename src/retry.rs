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
//! | [`ExponentialBackoff`] | `min_delay`, `min_delay * factor`, … capped at `max_delay`, with optional jitter |
//! | any `Iterator<Item = Duration> + Send` | whatever the iterator yields, until it ends |
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

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

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
            }

            impl RetryStrategy for &mut $object {
                #[inline]
                fn next_delay(&mut self) -> Option<Duration> {
                    (**self).next_delay()
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
}

/// Retries `max_retries` times after a random delay around `interval`.
///
/// Each delay is drawn uniformly, with nanosecond granularity, from the inclusive range
/// `[interval / 2, interval * 3 / 2]`, so the mean delay is `interval`. Randomising the delay
/// keeps clients that failed at the same moment from retrying in lock-step.
///
/// Never panics: `interval * 3 / 2` saturates at [`Duration::MAX`] (so for intervals above
/// `Duration::MAX * 2 / 3` the range is cut at the top and the mean is below `interval`), and
/// [`Duration::ZERO`] yields zero delays.
///
/// The random numbers come from a fast non-cryptographic generator ([`SmallRng`]), seeded from
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
}

/// Exponential backoff: `min_delay`, `min_delay * factor`, `min_delay * factor²`, … capped at
/// `max_delay`, with "equal jitter", for at most `max_retries` retries.
///
/// This is the policy users of `bsm/redislock` and `backon` expect. Defaults:
///
/// | setting | default | setter |
/// | --- | --- | --- |
/// | factor | [`DEFAULT_FACTOR`](Self::DEFAULT_FACTOR) (`2.0`) | [`with_factor`](Self::with_factor) |
/// | jitter | on (equal jitter) | [`without_jitter`](Self::without_jitter) |
/// | max retries | [`DEFAULT_MAX_RETRIES`](Self::DEFAULT_MAX_RETRIES) (`10`) | [`with_max_retries`](Self::with_max_retries) |
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
/// use, as for [`NonFixedInterval`].
///
/// It gives up (returns `None`, and keeps doing so) after `max_retries` delays, or as soon as
/// the next delay would bring the sum of the delays yielded so far above the
/// [max total delay](Self::with_max_total_delay).
///
/// Never panics: all arithmetic saturates, including for [`Duration::MAX`], infinite or huge
/// factors and zero durations.
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
    /// single attempt, like [`NoRetry`].
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
}

/// Makes any [`backoff::backoff::Backoff`] a [`RetryStrategy`], through its
/// `next_backoff()`.
///
/// Only available with the `backoff` cargo feature, which is **off by default**. The `backoff`
/// crate is unmaintained ([RUSTSEC-2025-0012](https://rustsec.org/advisories/RUSTSEC-2025-0012))
/// and pulls in `rand` 0.8 and the unmaintained `instant` crate; prefer [`ExponentialBackoff`]
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
#[cfg(feature = "backoff")]
#[cfg_attr(docsrs, doc(cfg(feature = "backoff")))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct BackoffAdapter<B>(pub B);

#[cfg(feature = "backoff")]
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

#[cfg(feature = "backoff")]
impl<B> RetryStrategy for BackoffAdapter<B>
where
    B: backoff::backoff::Backoff + Send,
{
    #[inline]
    fn next_delay(&mut self) -> Option<Duration> {
        self.0.next_backoff()
    }
}

/// `Duration::MAX` in nanoseconds (< 2^95).
const MAX_NANOS: u128 = Duration::MAX.as_nanos();

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Converts nanoseconds to a `Duration`, saturating at `Duration::MAX`.
fn duration_from_nanos(nanos: u128) -> Duration {
    if nanos >= MAX_NANOS {
        return Duration::MAX;
    }
    // nanos < MAX_NANOS, so the seconds fit in a u64 and the remainder in a u32.
    Duration::new(
        (nanos / NANOS_PER_SEC) as u64,
        (nanos % NANOS_PER_SEC) as u32,
    )
}

/// A [`SmallRng`] created on first use, from a fixed seed or from the OS.
///
/// Creating it lazily keeps the strategies' constructors `const` and makes copies of an
/// unused strategy draw independent sequences.
#[derive(Debug, Clone)]
struct LazyRng {
    seed: Option<u64>,
    rng: Option<SmallRng>,
}

impl LazyRng {
    const fn from_os() -> Self {
        Self {
            seed: None,
            rng: None,
        }
    }

    const fn seeded(seed: u64) -> Self {
        Self {
            seed: Some(seed),
            rng: None,
        }
    }

    /// A value drawn uniformly from `low..=high` (`low` if `high <= low`).
    fn uniform(&mut self, low: u128, high: u128) -> u128 {
        if high <= low {
            return low;
        }
        let seed = self.seed;
        self.rng
            .get_or_insert_with(|| match seed {
                Some(seed) => SmallRng::seed_from_u64(seed),
                None => SmallRng::try_from_os_rng()
                    .unwrap_or_else(|_| SmallRng::seed_from_u64(fallback_seed())),
            })
            .random_range(low..=high)
    }
}

/// A seed for when the OS generator is unavailable: never panics, differs between calls.
/// Jitter only needs to decorrelate clients, not to be unpredictable.
fn fallback_seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = DefaultHasher::new();
    SystemTime::now().hash(&mut hasher);
    std::thread::current().id().hash(&mut hasher);
    std::process::id().hash(&mut hasher);
    COUNTER.fetch_add(1, Ordering::Relaxed).hash(&mut hasher);
    hasher.finish()
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

    #[test]
    fn duration_from_nanos_saturates() {
        assert_eq!(Duration::ZERO, duration_from_nanos(0));
        assert_eq!(Duration::new(1, 5), duration_from_nanos(1_000_000_005));
        assert_eq!(Duration::MAX, duration_from_nanos(MAX_NANOS));
        assert_eq!(Duration::MAX, duration_from_nanos(u128::MAX));
        assert_eq!(
            Duration::MAX - Duration::from_nanos(1),
            duration_from_nanos(MAX_NANOS - 1)
        );
    }

    #[test]
    fn fallback_seed_differs() {
        assert_ne!(fallback_seed(), fallback_seed());
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

    #[cfg(feature = "backoff")]
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
