//! Tick arithmetic: the instants at which a job's ticks fall, computed the same way on
//! every host, and the wall clock the scheduler reads them on.
//!
//! A tick is identified by its scheduled instant in whole milliseconds since the Unix
//! epoch. `Job::every(period)` ticks are the multiples of `period` since the epoch; cron
//! ticks are whole seconds in the job's time zone (UTC unless set), as croner resolves
//! them across daylight-saving changes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::{Error, Result};

/// Milliseconds since the Unix epoch (negative before it).
pub(crate) type Millis = i64;

/// `t` in milliseconds since the Unix epoch, rounded down.
pub(crate) fn to_millis(t: SystemTime) -> Millis {
    match t.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        // Before the epoch: round towards minus infinity.
        Err(e) => {
            let before = e.duration();
            let ms = i64::try_from(before.as_millis()).unwrap_or(i64::MAX);
            if before.subsec_nanos() % 1_000_000 == 0 {
                -ms
            } else {
                -ms - 1
            }
        }
    }
}

/// The instant `ms` milliseconds after the Unix epoch.
pub(crate) fn from_millis(ms: Millis) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// When a job's ticks fall.
#[derive(Debug, Clone)]
pub(crate) enum Schedule {
    /// Every multiple of `period_ms` since the Unix epoch.
    Every { period_ms: u64 },
    /// The instants a cron expression matches in a time zone.
    Cron {
        expr: String,
        cron: Box<Cron>,
        tz: TimeZone,
    },
}

impl Schedule {
    /// A fixed-period schedule; `period` is truncated to whole milliseconds.
    pub(crate) fn every(period: Duration) -> Schedule {
        Schedule::Every {
            period_ms: u64::try_from(period.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// A cron schedule in UTC: 5 fields (minute granularity) or 6 with seconds first.
    pub(crate) fn cron(expr: &str) -> Result<Schedule> {
        let fields = expr.split_whitespace().count();
        if !(expr.trim_start().starts_with('@') || fields == 5 || fields == 6) {
            return Err(Error::InvalidArgument(format!(
                "cron: expected 5 fields, or 6 with seconds first (got {fields} in {expr:?})"
            )));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| Error::InvalidArgument(format!("cron: {expr:?}: {e}")))?;
        Ok(Schedule::Cron {
            expr: expr.to_owned(),
            cron: Box::new(cron),
            tz: TimeZone::UTC,
        })
    }

    /// This cron schedule evaluated in `tz`: an IANA name ("Europe/Berlin", read from the
    /// system's tz database) or a POSIX TZ string ("CET-1CEST,M3.5.0,M10.5.0/3").
    pub(crate) fn in_time_zone(self, tz: &str) -> Result<Schedule> {
        match self {
            Schedule::Every { .. } => Err(Error::InvalidArgument(
                "time zone: only cron jobs have one (`every` ticks are anchored at the Unix epoch)"
                    .to_owned(),
            )),
            Schedule::Cron { expr, cron, .. } => {
                let tz = parse_time_zone(tz)?;
                Ok(Schedule::Cron { expr, cron, tz })
            }
        }
    }

    /// The first tick strictly after `t`, or `None` if there is none (a cron expression
    /// that never matches again, or the end of representable time).
    pub(crate) fn next_after(&self, t: Millis) -> Option<Millis> {
        match self {
            Schedule::Every { period_ms } => {
                let p = i64::try_from(*period_ms).ok()?;
                t.div_euclid(p).checked_add(1)?.checked_mul(p)
            }
            Schedule::Cron { cron, tz, .. } => {
                let zoned = Timestamp::from_millisecond(t).ok()?.to_zoned(tz.clone());
                let next = cron.find_next_occurrence(&zoned, false).ok()?;
                Some(next.timestamp().as_millisecond())
            }
        }
    }

    /// The last tick at or before `t`, if any.
    pub(crate) fn at_or_before(&self, t: Millis) -> Option<Millis> {
        match self {
            Schedule::Every { period_ms } => {
                let p = i64::try_from(*period_ms).ok()?;
                t.div_euclid(p).checked_mul(p)
            }
            Schedule::Cron { cron, tz, .. } => {
                let zoned = Timestamp::from_millisecond(t).ok()?.to_zoned(tz.clone());
                let previous = cron.find_previous_occurrence(&zoned, true).ok()?;
                let ms = previous.timestamp().as_millisecond();
                // croner compares whole seconds: never return a tick after `t`.
                (ms <= t).then_some(ms)
            }
        }
    }

    pub(crate) fn period_ms(&self) -> Option<u64> {
        match self {
            Schedule::Every { period_ms } => Some(*period_ms),
            Schedule::Cron { .. } => None,
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Schedule::Every { period_ms } => format!("every {period_ms} ms"),
            Schedule::Cron { expr, tz, .. } => match tz.iana_name() {
                Some(name) => format!("cron {expr:?} in {name}"),
                None => format!("cron {expr:?} in {tz:?}"),
            },
        }
    }
}

fn parse_time_zone(name: &str) -> Result<TimeZone> {
    if name.eq_ignore_ascii_case("UTC") {
        return Ok(TimeZone::UTC);
    }
    TimeZone::get(name)
        .or_else(|_| TimeZone::posix(name))
        .map_err(|e| {
            Error::InvalidArgument(format!(
                "time zone: {name:?} is neither a known IANA name nor a POSIX TZ string ({e})"
            ))
        })
}

/// The wall clock a scheduler reads. `System` in production; `Tokio` follows tokio's
/// (pausable) clock from a fixed wall-clock origin, for tests on the paused clock.
#[derive(Debug, Clone)]
pub(crate) enum Clock {
    System,
    #[cfg_attr(not(test), allow(dead_code))]
    Tokio {
        origin: SystemTime,
        started: tokio::time::Instant,
    },
}

/// Longest single sleep towards a wall-clock instant: the clock is read again after it,
/// so a wall clock that was stepped (NTP, an operator) is followed within this bound.
const MAX_SLEEP: Duration = Duration::from_secs(1);

impl Clock {
    #[cfg(test)]
    pub(crate) fn tokio(origin: SystemTime) -> Clock {
        Clock::Tokio {
            origin,
            started: tokio::time::Instant::now(),
        }
    }

    pub(crate) fn now(&self) -> SystemTime {
        match self {
            Clock::System => SystemTime::now(),
            Clock::Tokio { origin, started } => *origin + started.elapsed(),
        }
    }

    pub(crate) fn now_millis(&self) -> Millis {
        to_millis(self.now())
    }

    /// Sleep until the wall clock reads `t` (milliseconds since the epoch) or later.
    pub(crate) async fn sleep_until(&self, t: Millis) {
        loop {
            let now = self.now_millis();
            if now >= t {
                return;
            }
            let left = Duration::from_millis((t - now).unsigned_abs());
            let step = match self {
                Clock::System => left.min(MAX_SLEEP),
                Clock::Tokio { .. } => left,
            };
            tokio::time::sleep(step).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-03-29 00:00:00 UTC, the day Central Europe springs forward (02:00 → 03:00 local).
    const SPRING_2026_UTC_MIDNIGHT: Millis = 1_774_742_400_000;
    /// 2026-10-25 00:00:00 UTC, the day Central Europe falls back (03:00 → 02:00 local).
    const FALL_2026_UTC_MIDNIGHT: Millis = 1_792_886_400_000;
    const HOUR: Millis = 3_600_000;
    const CET: &str = "CET-1CEST,M3.5.0,M10.5.0/3";

    fn ticks(s: &Schedule, from: Millis, n: usize) -> Vec<Millis> {
        let mut t = from;
        (0..n)
            .map(|_| {
                t = s.next_after(t).unwrap();
                t
            })
            .collect()
    }

    #[test]
    fn millis_round_trip_and_round_down() {
        for ms in [0, 1, 1_700_000_000_123, -1, -1_500] {
            assert_eq!(to_millis(from_millis(ms)), ms);
        }
        let t = UNIX_EPOCH + Duration::from_micros(1_999);
        assert_eq!(to_millis(t), 1);
        let t = UNIX_EPOCH - Duration::from_micros(1_001);
        assert_eq!(to_millis(t), -2);
    }

    #[test]
    fn every_ticks_lie_on_a_grid_anchored_at_the_epoch() {
        let s = Schedule::every(Duration::from_millis(7_000));
        // 1_699_999_994_000 = 242_857_142 × 7 s: whatever instant a host starts at in the
        // 7 s before the next tick, it computes the same ticks.
        for start in [1_699_999_994_000, 1_699_999_994_001, 1_700_000_000_999] {
            assert_eq!(
                ticks(&s, start, 3),
                [1_700_000_001_000, 1_700_000_008_000, 1_700_000_015_000]
            );
        }
        // Strictly after, and at-or-before.
        assert_eq!(s.next_after(1_700_000_001_000), Some(1_700_000_008_000));
        assert_eq!(s.at_or_before(1_700_000_001_000), Some(1_700_000_001_000));
        assert_eq!(s.at_or_before(1_700_000_007_999), Some(1_700_000_001_000));
        // Sub-millisecond periods are truncated, and the grid holds before the epoch too.
        let s = Schedule::every(Duration::from_micros(250_900));
        assert_eq!(s.period_ms(), Some(250));
        assert_eq!(s.at_or_before(-1), Some(-250));
        assert_eq!(s.next_after(-250), Some(0));
    }

    #[test]
    fn five_fields_are_minutes_six_fields_lead_with_seconds() {
        let t0 = 1_700_000_000_000; // 2023-11-14 22:13:20 UTC
        let five = Schedule::cron("*/15 * * * *").unwrap();
        assert_eq!(
            ticks(&five, t0, 3),
            [t0 + 100_000, t0 + 1_000_000, t0 + 1_900_000] // 22:15, 22:30, 22:45
        );
        let six = Schedule::cron("*/15 * * * * *").unwrap();
        assert_eq!(
            ticks(&six, t0, 3),
            [t0 + 10_000, t0 + 25_000, t0 + 40_000] // :30, :45, :00 seconds
        );
        let six = Schedule::cron("30 0 3 * * *").unwrap(); // 03:00:30 daily
        let next = six.next_after(t0).unwrap();
        assert_eq!(next, 1_700_017_230_000); // 2023-11-15 03:00:30 UTC
        assert_eq!(six.at_or_before(next + 999), Some(next));
        assert_eq!(six.at_or_before(next - 1), Some(next - 86_400_000));
    }

    #[test]
    fn bad_expressions_and_zones_are_invalid_arguments() {
        for expr in [
            "",
            "* * * *",
            "* * * * * * *",
            "61 * * * *",
            "* * * * * * 2030",
            "x",
        ] {
            let err = Schedule::cron(expr).unwrap_err();
            assert!(err.is_invalid_argument(), "{expr:?}: {err:?}");
        }
        assert!(Schedule::cron("@hourly").is_ok());
        let err = Schedule::cron("0 3 * * *")
            .unwrap()
            .in_time_zone("Not/AZone")
            .unwrap_err();
        assert!(err.is_invalid_argument(), "{err:?}");
        let err = Schedule::every(Duration::from_secs(1))
            .in_time_zone("UTC")
            .unwrap_err();
        assert!(err.is_invalid_argument(), "{err:?}");
    }

    #[test]
    fn a_daily_job_in_the_spring_forward_gap_runs_once_just_after_it() {
        // 02:30 local does not exist on 2026-03-29 in Central Europe: croner runs the job
        // at the first instant after the gap (03:00 CEST = 01:00 UTC), once.
        let s = Schedule::cron("30 2 * * *")
            .unwrap()
            .in_time_zone(CET)
            .unwrap();
        let day_before = SPRING_2026_UTC_MIDNIGHT - 24 * HOUR;
        assert_eq!(
            ticks(&s, day_before, 3),
            [
                day_before + HOUR + HOUR / 2,    // 28 Mar 02:30 CET = 01:30 UTC
                SPRING_2026_UTC_MIDNIGHT + HOUR, // 29 Mar 03:00 CEST = 01:00 UTC
                SPRING_2026_UTC_MIDNIGHT + 24 * HOUR + HOUR / 2, // 30 Mar 02:30 CEST = 00:30 UTC
            ]
        );
    }

    #[test]
    fn a_daily_job_in_the_repeated_hour_runs_once_an_hourly_one_twice() {
        // 02:30 local happens twice on 2026-10-25 (CEST, then CET): a fixed-time job runs
        // at the first pass only; an hourly wildcard job runs at both.
        let daily = Schedule::cron("30 2 * * *")
            .unwrap()
            .in_time_zone(CET)
            .unwrap();
        let midnight = FALL_2026_UTC_MIDNIGHT;
        let got = ticks(&daily, midnight - 2 * HOUR, 2);
        assert_eq!(
            got,
            [
                midnight + HOUR / 2,                    // 02:30 CEST = 00:30 UTC
                midnight + 24 * HOUR + HOUR + HOUR / 2, // 26 Oct 02:30 CET = 01:30 UTC
            ]
        );
        let hourly = Schedule::cron("30 * * * *")
            .unwrap()
            .in_time_zone(CET)
            .unwrap();
        assert_eq!(
            ticks(&hourly, midnight - HOUR, 4),
            [
                midnight - HOUR / 2,            // 01:30 CEST
                midnight + HOUR / 2,            // 02:30 CEST
                midnight + HOUR + HOUR / 2,     // 02:30 CET (the repeated hour)
                midnight + 2 * HOUR + HOUR / 2, // 03:30 CET
            ]
        );
    }

    #[test]
    fn iana_names_resolve_from_the_system_database() {
        let berlin = Schedule::cron("0 3 * * *")
            .unwrap()
            .in_time_zone("Europe/Berlin")
            .unwrap();
        let posix = Schedule::cron("0 3 * * *")
            .unwrap()
            .in_time_zone(CET)
            .unwrap();
        let from = SPRING_2026_UTC_MIDNIGHT - 3 * 24 * HOUR;
        assert_eq!(ticks(&berlin, from, 6), ticks(&posix, from, 6));
        assert!(
            berlin.describe().contains("Europe/Berlin"),
            "{}",
            berlin.describe()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_test_clock_follows_tokio_time_and_sleeps_to_wall_instants() {
        let origin = from_millis(1_700_000_000_250);
        let clock = Clock::tokio(origin);
        assert_eq!(clock.now_millis(), 1_700_000_000_250);
        let started = tokio::time::Instant::now();
        clock.sleep_until(1_700_000_001_000).await;
        assert_eq!(started.elapsed(), Duration::from_millis(750));
        assert_eq!(clock.now_millis(), 1_700_000_001_000);
        clock.sleep_until(0).await; // in the past: at once
        assert_eq!(started.elapsed(), Duration::from_millis(750));
    }
}
