//! The random numbers behind jitter: a small fast generator, seeded lazily.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// `Duration::MAX` in nanoseconds (< 2^95).
pub(super) const MAX_NANOS: u128 = Duration::MAX.as_nanos();

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Converts nanoseconds to a `Duration`, saturating at `Duration::MAX`.
pub(super) fn duration_from_nanos(nanos: u128) -> Duration {
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
pub(crate) struct LazyRng {
    seed: Option<u64>,
    rng: Option<SmallRng>,
}

impl LazyRng {
    pub(crate) const fn from_os() -> Self {
        Self {
            seed: None,
            rng: None,
        }
    }

    pub(super) const fn seeded(seed: u64) -> Self {
        Self {
            seed: Some(seed),
            rng: None,
        }
    }

    /// A value drawn uniformly from `low..=high` (`low` if `high <= low`).
    pub(crate) fn uniform(&mut self, low: u128, high: u128) -> u128 {
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
}
