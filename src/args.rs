//! Validation of arguments, before any I/O.

use std::time::Duration;

use crate::{Error, Result};

/// The longest expiration, interval or timeout accepted: 10 years of 365.25 days
/// (3652.5 days, what humantime reads as `"10years"` in a configuration file). Anything
/// longer is almost certainly a unit mistake, and it keeps every deadline computation in
/// range.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 31_557_600);

pub(crate) fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid("key: must not be empty"));
    }
    Ok(())
}

pub(crate) fn check_value(val: &str) -> Result<()> {
    if val.is_empty() {
        return Err(Error::invalid("val: must not be empty"));
    }
    Ok(())
}

/// At least 1 ms and at most [`MAX_DURATION`]; truncated to whole milliseconds (the
/// precision every store honours: Redis counts milliseconds).
pub(crate) fn check_duration(name: &str, d: Duration) -> Result<Duration> {
    if d < Duration::from_millis(1) {
        return Err(Error::invalid(format!(
            "{name}: must be at least 1 ms (got {d:?})"
        )));
    }
    if d > MAX_DURATION {
        return Err(Error::invalid(format!(
            "{name}: must be at most {} s (got {d:?})",
            MAX_DURATION.as_secs()
        )));
    }
    Ok(Duration::from_millis(d.as_millis() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_checked_and_truncated_to_milliseconds() {
        assert!(check_duration("expiration", Duration::ZERO).is_err());
        assert!(check_duration("expiration", Duration::from_micros(999)).is_err());
        assert!(check_duration("expiration", Duration::MAX).is_err());
        assert_eq!(
            check_duration("expiration", Duration::from_micros(1_999)).unwrap(),
            Duration::from_millis(1)
        );
        let Err(Error::InvalidArgument(msg)) = check_duration("interval", Duration::ZERO) else {
            panic!("expected InvalidArgument");
        };
        assert!(msg.starts_with("interval"), "{msg}");
    }

    #[test]
    fn ten_years_are_allowed_as_humantime_counts_them() {
        let ten_years = humantime_years(10);
        assert_eq!(ten_years, MAX_DURATION);
        assert!(check_duration("expiration", ten_years).is_ok());
        assert!(check_duration("expiration", ten_years + Duration::from_secs(1)).is_err());
    }

    /// A year as humantime (and so a configuration file) counts it: 365.25 days.
    fn humantime_years(n: u64) -> Duration {
        Duration::from_secs(n * 365 * 86_400 + n * 86_400 / 4)
    }
}
