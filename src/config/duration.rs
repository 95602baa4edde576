//! Durations in configuration files: `"250ms"`, `"30s"`, `"1m 30s"` (humantime's units,
//! from `ns` to `y`) or an integer number of milliseconds; checked like the builder's
//! (at least 1 ms, at most [`MAX_DURATION`]). Written back in humantime's form.
//!
//! Used as `#[serde(with = "duration")]`, and `#[serde(with = "duration::option")]` for
//! an optional field.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Unexpected, Visitor};
use serde::ser::Serializer;

use crate::MAX_DURATION;

/// What a duration looks like, for error messages.
const EXPECTED: &str =
    "a duration such as \"250ms\", \"30s\" or \"1m 30s\", or an integer number of milliseconds";

pub(crate) fn serialize<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_duration(*d))
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    deserializer.deserialize_any(DurationVisitor)
}

/// The same for an `Option<Duration>` field (with `#[serde(default)]`: absent is `None`).
pub(crate) mod option {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        d: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serialize(d, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        deserializer.deserialize_option(OptionVisitor)
    }

    struct OptionVisitor;

    impl<'de> Visitor<'de> for OptionVisitor {
        type Value = Option<Duration>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(EXPECTED)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}

struct DurationVisitor;

impl<'de> Visitor<'de> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECTED)
    }

    fn visit_u64<E: de::Error>(self, ms: u64) -> Result<Duration, E> {
        checked(Duration::from_millis(ms))
    }

    fn visit_i64<E: de::Error>(self, ms: i64) -> Result<Duration, E> {
        match u64::try_from(ms) {
            Ok(ms) => self.visit_u64(ms),
            Err(_) => Err(E::invalid_value(Unexpected::Signed(ms), &self)),
        }
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
        checked(parse(s).map_err(E::custom)?)
    }
}

/// `s` as humantime reads it, with our wording around humantime's reason.
pub(crate) fn parse(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration \"{s}\" ({e}): expected {EXPECTED}"))
}

/// The builder's bounds, checked as the file is read.
fn checked<E: de::Error>(d: Duration) -> Result<Duration, E> {
    if d < Duration::from_millis(1) {
        return Err(E::custom(format_args!(
            "invalid duration {}: must be at least 1ms",
            Shown(d)
        )));
    }
    if d > MAX_DURATION {
        return Err(E::custom(format_args!(
            "invalid duration {}: must be at most {}",
            Shown(d),
            humantime::format_duration(MAX_DURATION)
        )));
    }
    Ok(d)
}

/// A duration in an error message: `0s`, `250ms`, `1m 30s`.
struct Shown(Duration);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_zero() {
            f.write_str("0s")
        } else {
            write!(f, "{}", humantime::format_duration(self.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::IntoDeserializer;
    use serde::de::value::Error;

    fn from_str(s: &str) -> Result<Duration, Error> {
        deserialize(s.into_deserializer())
    }

    fn from_ms(ms: i64) -> Result<Duration, Error> {
        deserialize(ms.into_deserializer())
    }

    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn strings_in_humantime_units() {
        assert_eq!(from_str("250ms").unwrap(), ms(250));
        assert_eq!(from_str("30s").unwrap(), ms(30_000));
        assert_eq!(from_str("1m 30s").unwrap(), ms(90_000));
        assert_eq!(from_str("1m30s").unwrap(), ms(90_000));
        assert_eq!(from_str(" 2h ").unwrap(), ms(7_200_000));
        assert_eq!(from_str("1500us").unwrap(), Duration::from_micros(1500));
    }

    /// The documented bound, as written: humantime's year is 365.25 days, and
    /// `"10years"` used to exceed a bound of 3650 days.
    #[test]
    fn ten_years_as_written_are_allowed() {
        assert_eq!(from_str("10years").unwrap(), MAX_DURATION);
        assert_eq!(from_str("10y").unwrap(), MAX_DURATION);
        assert_eq!(
            from_ms(MAX_DURATION.as_millis() as i64).unwrap(),
            MAX_DURATION
        );
    }

    #[test]
    fn integers_are_milliseconds() {
        assert_eq!(from_ms(1).unwrap(), ms(1));
        assert_eq!(from_ms(30_000).unwrap(), ms(30_000));
        let unsigned: Result<Duration, Error> = deserialize(30_000u64.into_deserializer());
        assert_eq!(unsigned.unwrap(), ms(30_000));
    }

    #[test]
    fn out_of_bounds_and_malformed_durations_are_refused() {
        let msg = |r: Result<Duration, Error>| r.unwrap_err().to_string();
        assert_eq!(msg(from_ms(0)), "invalid duration 0s: must be at least 1ms");
        assert_eq!(
            msg(from_str("0ms")),
            "invalid duration 0s: must be at least 1ms"
        );
        assert_eq!(
            msg(from_str("999us")),
            "invalid duration 999us: must be at least 1ms"
        );
        assert!(msg(from_ms(-5)).starts_with("invalid value: integer `-5`, expected a duration"));
        assert!(
            msg(from_str("11years")).contains("must be at most 10years"),
            "{}",
            msg(from_str("11years"))
        );
        assert!(msg(from_str("10years 1s")).contains("must be at most 10years"));
        let bad = msg(from_str("fast"));
        assert!(bad.starts_with("invalid duration \"fast\""), "{bad}");
        assert!(bad.contains("\"250ms\""), "{bad}");
        let unitless = msg(from_str("250"));
        assert!(unitless.contains("time unit needed"), "{unitless}");
        let float: Result<Duration, Error> = deserialize(1.5f64.into_deserializer());
        assert!(msg(float).starts_with("invalid type: floating point `1.5`, expected a duration"));
    }

    #[test]
    fn written_back_in_humantime_form() {
        #[derive(serde::Serialize)]
        struct W {
            #[serde(with = "super")]
            d: Duration,
        }
        let written = |d: Duration| toml::to_string(&W { d }).unwrap();
        assert_eq!(written(ms(250)), "d = \"250ms\"\n");
        assert_eq!(written(ms(90_000)), "d = \"1m 30s\"\n");
        assert_eq!(written(ms(3_723_004)), "d = \"1h 2m 3s 4ms\"\n");
        assert_eq!(from_str("1h 2m 3s 4ms").unwrap(), ms(3_723_004));
    }
}
