//! How a store may differ where the contract lets it, read from its granularity.

use std::time::Duration;

/// How a store differs where the contract lets it, as the cases read it from the store's
/// capability query ([`Client::granularity`](crate::Client::granularity)).
///
/// A store that grants whole seconds (granularity of 1 s or more, as etcd's leases) rounds
/// a 50 ms expiration up to what it grants (`Lock::expiration()` says what), counts
/// `ttl()` in whole seconds rounded down, and may keep an expired key a little longer
/// (etcd deletes expired leases in a sweep every 500 ms): the cases wait out the granted
/// expiration plus [`expiry_lag`](Traits::expiry_lag) there. Every other store is
/// checked to the millisecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traits {
    /// Expirations are granted in whole seconds (rounded up: `Lock::expiration()` says
    /// what was granted) and `ttl()` counts whole seconds, rounded down.
    pub whole_seconds: bool,
    /// How long an expired key may still be in the store before the store deletes it:
    /// 700 ms on a store of whole seconds ([`Traits::WHOLE_SECONDS`]), 20 ms otherwise
    /// ([`Traits::MILLISECONDS`]).
    pub expiry_lag: Duration,
}

impl Traits {
    /// A store of milliseconds (Redis, Redis Cluster, Sentinel, memory).
    pub const MILLISECONDS: Traits = Traits {
        whole_seconds: false,
        expiry_lag: Duration::from_millis(20),
    };

    /// A store of whole seconds (etcd: leases of whole seconds, deleted by the server's
    /// expiry sweep every 500 ms after they ran out).
    pub const WHOLE_SECONDS: Traits = Traits {
        whole_seconds: true,
        expiry_lag: Duration::from_millis(700),
    };

    /// The traits of a store of `granularity` (the finest expiration it grants, as
    /// `Client::granularity()` reports it): whole seconds from 1 s up.
    pub fn of(granularity: Duration) -> Traits {
        if granularity >= Duration::from_secs(1) {
            Traits::WHOLE_SECONDS
        } else {
            Traits::MILLISECONDS
        }
    }

    /// `ttl` is more than `lo`: to the whole second below `lo` on a store that counts
    /// whole seconds (rounded down).
    pub fn above(&self, ttl: Duration, lo: Duration) -> bool {
        if self.whole_seconds {
            ttl >= Duration::from_secs(lo.as_secs())
        } else {
            ttl > lo
        }
    }

    /// How long to wait after acquiring a lock of `granted` expiration
    /// (`Lock::expiration()`) for it to be gone from the store surely: `short` (what a
    /// case waits on a store of milliseconds, a little over the expiration), or the
    /// granted expiration and the expiry lag on a store of whole seconds.
    pub fn outlive(&self, granted: Duration, short: Duration) -> Duration {
        if self.whole_seconds {
            granted + self.expiry_lag
        } else {
            short
        }
    }

    /// An expiration that `ttl()` can tell from a shorter one: `d`, or at least 3 s on a
    /// store of whole seconds.
    pub fn distinct(&self, d: Duration) -> Duration {
        if self.whole_seconds {
            d.max(Duration::from_secs(3))
        } else {
            d
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granularity_of_a_second_or_more_is_whole_seconds() {
        assert_eq!(Traits::of(Duration::from_millis(1)), Traits::MILLISECONDS);
        assert_eq!(Traits::of(Duration::from_millis(999)), Traits::MILLISECONDS);
        assert_eq!(Traits::of(Duration::from_secs(1)), Traits::WHOLE_SECONDS);
        assert_eq!(Traits::of(Duration::from_secs(5)), Traits::WHOLE_SECONDS);
    }
}
