//! Property tests for the retry strategies (`leasehold::RetryStrategy` and friends).

use std::collections::HashSet;
use std::time::Duration;

use leasehold::{ExponentialBackoff, FixedInterval, NoRetry, NonFixedInterval, RetryStrategy};
use proptest::prelude::*;

/// Never drain more than this many delays from one strategy (counts go up to `u32::MAX`).
const MAX_TAKE: usize = 2_000;

/// Samples for the mean check: the std-dev of the mean of `[I/2, 3I/2]` uniform draws is
/// `I / sqrt(12 * 20_000) ≈ 0.2% of I`, so 2% is a ~10-sigma band: no flaky failures.
const MEAN_SAMPLES: usize = 20_000;
const MEAN_TOLERANCE: f64 = 0.02;

const MAX_NANOS: u128 = Duration::MAX.as_nanos();

/// Up to `limit` delays, stopping at the first `None`.
fn drain(strategy: &mut impl RetryStrategy, limit: usize) -> Vec<Duration> {
    std::iter::from_fn(|| strategy.next_delay())
        .take(limit)
        .collect()
}

/// `Ok` if `samples` delays from `strategy` average to `interval` within `tolerance`
/// (relative), `Err` with the reason otherwise.
fn check_mean(
    strategy: &mut impl RetryStrategy,
    interval: Duration,
    samples: usize,
    tolerance: f64,
) -> Result<(), String> {
    let mut sum: u128 = 0;
    for i in 0..samples {
        let delay = strategy
            .next_delay()
            .ok_or_else(|| format!("gave up after {i} of {samples} delays"))?;
        sum += delay.as_nanos();
    }
    let mean = sum as f64 / samples as f64;
    let target = interval.as_nanos() as f64;
    let error = (mean - target).abs() / target;
    if error <= tolerance {
        Ok(())
    } else {
        Err(format!(
            "mean {mean:.0} ns is {:.2}% away from {target:.0} ns (tolerance {:.2}%)",
            error * 100.0,
            tolerance * 100.0
        ))
    }
}

/// `Ok` if `samples` delays from `strategy` are not all equal.
fn check_varies(strategy: &mut impl RetryStrategy, samples: usize) -> Result<(), String> {
    let distinct: HashSet<Duration> = drain(strategy, samples).into_iter().collect();
    if distinct.len() > 1 {
        Ok(())
    } else {
        Err(format!(
            "{samples} delays took only {} value(s): {distinct:?}",
            distinct.len()
        ))
    }
}

/// Negative control: a "non-fixed" strategy that always waits half the interval.
struct AlwaysHalf(Duration);

impl RetryStrategy for AlwaysHalf {
    fn next_delay(&mut self) -> Option<Duration> {
        Some(self.0 / 2)
    }
}

/// Durations with the edge values mixed in.
fn durations() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::from_nanos(1)),
        Just(Duration::from_nanos(3)),
        Just(Duration::MAX),
        Just(Duration::MAX - Duration::from_nanos(1)),
        Just(Duration::MAX / 2),
        Just(Duration::MAX / 3 * 2),
        Just(Duration::from_secs(u64::MAX)),
        (0u64..=86_400_000).prop_map(Duration::from_millis),
        any::<u64>().prop_map(Duration::from_nanos),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

/// Retry counts, including the extremes (never drained past `MAX_TAKE`).
fn counts() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1),
        Just(u32::MAX),
        Just(u32::MAX - 1),
        0u32..300,
        any::<u32>(),
    ]
}

/// Growth factors, including NaN, infinities, negatives and huge values.
fn factors() -> impl Strategy<Value = f32> {
    prop_oneof![
        Just(f32::NAN),
        Just(f32::INFINITY),
        Just(f32::NEG_INFINITY),
        Just(0.0f32),
        Just(-1.0f32),
        Just(1.0f32),
        Just(2.0f32),
        Just(f32::MAX),
        Just(f32::MIN_POSITIVE),
        1.0f32..10.0,
        any::<f32>(),
    ]
}

/// The factor `with_factor` documents it uses.
fn effective_factor(factor: f32) -> f64 {
    if factor.is_nan() {
        f64::from(ExponentialBackoff::DEFAULT_FACTOR)
    } else {
        f64::from(factor.max(1.0))
    }
}

/// `[interval / 2, min(interval * 3 / 2, Duration::MAX)]` in nanoseconds.
fn non_fixed_bounds(interval: Duration) -> (u128, u128) {
    let n = interval.as_nanos();
    (n / 2, (n * 3 / 2).min(MAX_NANOS))
}

/// The sequence of an `ExponentialBackoff` with these settings, jitter off, no total limit.
fn plain_backoff(min: Duration, max: Duration, factor: f32, retries: u32) -> ExponentialBackoff {
    ExponentialBackoff::new(min, max)
        .with_factor(factor)
        .with_max_retries(retries)
        .without_jitter()
}

#[test]
fn mean_checker_accepts_non_fixed_interval() {
    for interval in [
        Duration::from_millis(1),
        Duration::from_millis(100),
        Duration::from_secs(30),
    ] {
        let mut s = NonFixedInterval::new(interval, MEAN_SAMPLES as u32).with_seed(0x5EED);
        check_mean(&mut s, interval, MEAN_SAMPLES, MEAN_TOLERANCE).unwrap();
    }
}

#[test]
fn mean_checker_rejects_broken_strategies() {
    let interval = Duration::from_millis(100);
    // Always interval / 2: mean 50% off.
    let err = check_mean(
        &mut AlwaysHalf(interval),
        interval,
        MEAN_SAMPLES,
        MEAN_TOLERANCE,
    );
    assert!(err.is_err(), "always-half strategy passed the mean check");
    // The same thing written as an iterator.
    let mut half = std::iter::repeat(interval / 2);
    assert!(check_mean(&mut half, interval, MEAN_SAMPLES, MEAN_TOLERANCE).is_err());
    // Just outside the tolerance.
    let mut slightly_long = std::iter::repeat(interval.mul_f64(1.025));
    assert!(check_mean(&mut slightly_long, interval, MEAN_SAMPLES, MEAN_TOLERANCE).is_err());
    // Uniform over the wrong range [I/2, I] (mean 0.75 I).
    let mut wrong_range = NonFixedInterval::new(interval / 4 * 3, MEAN_SAMPLES as u32).with_seed(1);
    assert!(check_mean(&mut wrong_range, interval, MEAN_SAMPLES, MEAN_TOLERANCE).is_err());
    // Giving up early is reported too.
    let mut short = NonFixedInterval::new(interval, 10).with_seed(2);
    assert!(check_mean(&mut short, interval, MEAN_SAMPLES, MEAN_TOLERANCE).is_err());
}

#[test]
fn variation_checker_rejects_fixed_delays() {
    let interval = Duration::from_millis(100);
    assert!(check_varies(&mut FixedInterval::new(interval, 1_000), 1_000).is_err());
    assert!(check_varies(&mut AlwaysHalf(interval), 1_000).is_err());
    check_varies(&mut NonFixedInterval::new(interval, 1_000), 1_000).unwrap();
}

proptest! {
    #[test]
    fn fixed_interval_yields_exactly_max_retries_equal_delays(
        interval in durations(),
        retries in 0u32..500,
    ) {
        let mut s = FixedInterval::new(interval, retries);
        prop_assert_eq!(drain(&mut s, MAX_TAKE), vec![interval; retries as usize]);
        for _ in 0..3 {
            prop_assert_eq!(s.next_delay(), None);
        }
    }

    #[test]
    fn fixed_interval_any_count(interval in durations(), retries in counts()) {
        let mut s = FixedInterval::new(interval, retries);
        let delays = drain(&mut s, MAX_TAKE);
        prop_assert_eq!(delays.len(), (retries as usize).min(MAX_TAKE));
        prop_assert!(delays.iter().all(|d| *d == interval));
        if (retries as usize) <= MAX_TAKE {
            prop_assert_eq!(s.next_delay(), None);
        }
    }

    #[test]
    fn no_retry_never_yields(calls in 1usize..50) {
        let mut s = NoRetry;
        prop_assert!(drain(&mut s, calls).is_empty());
    }

    #[test]
    fn non_fixed_interval_count_and_bounds(
        interval in durations(),
        retries in 0u32..300,
        seed in any::<u64>(),
    ) {
        let mut s = NonFixedInterval::new(interval, retries).with_seed(seed);
        let delays = drain(&mut s, MAX_TAKE);
        prop_assert_eq!(delays.len(), retries as usize);
        let (low, high) = non_fixed_bounds(interval);
        for d in &delays {
            prop_assert!(
                (low..=high).contains(&d.as_nanos()),
                "{:?} outside [{} ns, {} ns]", d, low, high
            );
        }
        prop_assert_eq!(s.next_delay(), None);
        prop_assert_eq!(s.next_delay(), None);
    }

    #[test]
    fn non_fixed_interval_any_count_os_seeded(interval in durations(), retries in counts()) {
        let mut s = NonFixedInterval::new(interval, retries);
        let delays = drain(&mut s, MAX_TAKE);
        prop_assert_eq!(delays.len(), (retries as usize).min(MAX_TAKE));
        let (low, high) = non_fixed_bounds(interval);
        prop_assert!(delays.iter().all(|d| (low..=high).contains(&d.as_nanos())));
    }

    #[test]
    fn non_fixed_interval_varies(
        interval in durations().prop_filter("non-zero", |d| !d.is_zero()),
        seed in any::<u64>(),
    ) {
        let mut s = NonFixedInterval::new(interval, 200).with_seed(seed);
        prop_assert!(check_varies(&mut s, 200).is_ok());
    }

    #[test]
    fn exponential_without_jitter_is_monotone_capped_and_counted(
        min in durations(),
        max in durations(),
        factor in factors(),
        retries in 0u32..300,
    ) {
        let mut s = plain_backoff(min, max, factor, retries);
        let delays = drain(&mut s, MAX_TAKE);
        prop_assert_eq!(delays.len(), retries as usize);
        prop_assert_eq!(s.next_delay(), None);
        prop_assert_eq!(s.next_delay(), None);
        if let Some(first) = delays.first() {
            prop_assert_eq!(*first, min.min(max));
        }
        prop_assert!(delays.iter().all(|d| *d <= max));
        let f = effective_factor(factor);
        for pair in delays.windows(2) {
            let (prev, next) = (pair[0], pair[1]);
            prop_assert!(prev <= next, "not monotone: {:?} then {:?}", prev, next);
            // next == min(prev * factor, max), up to float rounding (0 stays 0, even for an
            // infinite factor).
            let expected = if prev.is_zero() {
                0.0
            } else {
                (prev.as_nanos() as f64 * f).min(max.as_nanos() as f64)
            };
            let got = next.as_nanos() as f64;
            prop_assert!(
                (got - expected).abs() <= expected * 1e-9 + 1.0,
                "{:?} * {} -> {:?}, expected {} ns", prev, f, next, expected
            );
        }
    }

    #[test]
    fn exponential_any_count(
        min in durations(),
        max in durations(),
        factor in factors(),
        retries in counts(),
        jitter in any::<bool>(),
    ) {
        let mut s = ExponentialBackoff::new(min, max)
            .with_factor(factor)
            .with_max_retries(retries);
        if !jitter {
            s = s.without_jitter();
        }
        let delays = drain(&mut s, MAX_TAKE);
        prop_assert_eq!(delays.len(), (retries as usize).min(MAX_TAKE));
        prop_assert!(delays.iter().all(|d| *d <= max));
        if (retries as usize) <= MAX_TAKE {
            prop_assert_eq!(s.next_delay(), None);
        }
    }

    #[test]
    fn exponential_jitter_within_half_to_full(
        min in durations(),
        max in durations(),
        factor in factors(),
        retries in 0u32..300,
        seed in any::<u64>(),
    ) {
        let jittered = ExponentialBackoff::new(min, max)
            .with_factor(factor)
            .with_max_retries(retries)
            .with_seed(seed);
        let mut plain = jittered.clone().without_jitter();
        let mut jittered = jittered;
        let delays = drain(&mut jittered, MAX_TAKE);
        let bases = drain(&mut plain, MAX_TAKE);
        prop_assert_eq!(delays.len(), retries as usize);
        prop_assert_eq!(bases.len(), retries as usize);
        for (d, base) in delays.iter().zip(&bases) {
            prop_assert!(
                d.as_nanos() >= base.as_nanos() / 2 && d <= base,
                "{:?} outside [{:?}/2, {:?}]", d, base, base
            );
        }
        prop_assert_eq!(jittered.next_delay(), None);
    }

    #[test]
    fn exponential_max_total_delay(
        min in durations(),
        max in durations(),
        factor in factors(),
        limit in durations(),
        retries in 0u32..300,
        jitter in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut s = ExponentialBackoff::new(min, max)
            .with_factor(factor)
            .with_max_retries(retries)
            .with_max_total_delay(limit)
            .with_seed(seed);
        if !jitter {
            s = s.without_jitter();
        }
        let delays = drain(&mut s, MAX_TAKE);
        let sum: u128 = delays.iter().map(Duration::as_nanos).sum();
        prop_assert!(sum <= limit.as_nanos(), "sum {} ns > limit {:?}", sum, limit);
        prop_assert!(delays.len() <= retries as usize);
        prop_assert_eq!(s.next_delay(), None);
        if !jitter {
            // A prefix of the unlimited sequence, stopped only when the next one would overflow
            // the limit (or at max_retries).
            let full = drain(&mut plain_backoff(min, max, factor, retries), MAX_TAKE);
            prop_assert_eq!(&delays[..], &full[..delays.len()]);
            if let Some(next) = full.get(delays.len()) {
                prop_assert!(sum + next.as_nanos() > limit.as_nanos());
            }
        }
    }

    #[test]
    // `repeat().take()` on purpose: that exact adapter type is the one users pass.
    #[allow(clippy::manual_repeat_n)]
    fn iterator_repeat_take_is_a_strategy(d in durations(), n in 0usize..500) {
        let mut s = std::iter::repeat(d).take(n);
        prop_assert_eq!(drain(&mut s, MAX_TAKE), vec![d; n]);
        prop_assert_eq!(s.next_delay(), None);

        let mut s = std::iter::repeat_n(d, n);
        prop_assert_eq!(drain(&mut s, MAX_TAKE), vec![d; n]);
        prop_assert_eq!(s.next_delay(), None);
    }

    #[test]
    fn iterator_vec_into_iter_is_a_strategy(v in prop::collection::vec(durations(), 0..50)) {
        let mut s = v.clone().into_iter();
        prop_assert_eq!(drain(&mut s, MAX_TAKE), v.clone());
        prop_assert_eq!(s.next_delay(), None);

        // Also through a trait object.
        let mut boxed: Box<dyn RetryStrategy> = Box::new(v.clone().into_iter());
        prop_assert_eq!(drain(&mut boxed, MAX_TAKE), v);
        prop_assert_eq!(boxed.next_delay(), None);
    }
}

proptest! {
    // 20_000 draws per case: fewer cases keep the suite fast.
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn non_fixed_interval_mean_is_interval(
        interval in prop_oneof![
            (1u64..=86_400_000).prop_map(Duration::from_millis),
            // Up to Duration::MAX * 2 / 3, where interval * 3 / 2 does not saturate.
            (1u64..=u64::MAX / 2).prop_map(Duration::from_secs),
        ],
        seed in any::<u64>(),
    ) {
        let mut s = NonFixedInterval::new(interval, MEAN_SAMPLES as u32).with_seed(seed);
        if let Err(e) = check_mean(&mut s, interval, MEAN_SAMPLES, MEAN_TOLERANCE) {
            return Err(TestCaseError::fail(e));
        }
        // The same check rejects the broken strategy for the same interval.
        prop_assert!(
            check_mean(&mut AlwaysHalf(interval), interval, MEAN_SAMPLES, MEAN_TOLERANCE).is_err()
        );
    }
}
