//! How long a lease is certainly held: the arithmetic every store's leases share (one
//! server, a quorum of them, etcd), with no dependency of its own.

use std::time::Duration;

use tokio::time::Instant;

/// The drift allowance subtracted from every lease, as in the Redlock algorithm:
/// 1% of the expiration (clock-rate difference between this host and the server) plus
/// 2 ms (timer granularity on both sides).
pub fn drift_allowance(expiration: Duration) -> Duration {
    expiration / 100 + Duration::from_millis(2)
}

/// The instant until which a lease re-armed at `sent` for `expiration` is certainly held.
pub(crate) fn valid_until(sent: Instant, expiration: Duration) -> Instant {
    sent + expiration.saturating_sub(drift_allowance(expiration))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_allowance_is_one_percent_plus_two_ms() {
        assert_eq!(
            drift_allowance(Duration::from_secs(10)),
            Duration::from_millis(102)
        );
        assert_eq!(
            drift_allowance(Duration::from_millis(1)),
            Duration::from_micros(2010)
        );
    }
}
