//! A job's definition: its schedule, how its runs may overlap across hosts, how long a
//! run's lease lasts, and what happens to ticks that no host fired in time.

use std::time::{Duration, SystemTime};

use super::timing::{Schedule, from_millis, to_millis};
use crate::{Error, MAX_DURATION, Result};

/// Default [`Job::lock_at_most_for`]: 30 seconds.
pub const DEFAULT_LOCK_AT_MOST_FOR: Duration = Duration::from_secs(30);

/// Default [`Job::misfire_grace`]: 60 seconds.
pub const DEFAULT_MISFIRE_GRACE: Duration = Duration::from_secs(60);

/// How the runs of one job may overlap — **across all hosts** sharing the store, not only
/// inside one process.
///
/// These are the task modes of the cron schedulers this crate grew from (Default /
/// SkipIfStillRunning / DelayIfStillRunning). `SkipIfStillRunning` and
/// `DelayIfStillRunning` hold a *running* lock (`<prefix><job>:running`) for the whole
/// run, renewed every third of [`Job::lock_at_most_for`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Overlap {
    /// Run every tick, even while an earlier run is still going (the seeds' *Default*
    /// mode). Runs take no running lock: [`JobContext::lost`](super::JobContext::lost)
    /// never fires during a run, and the run's fencing token is its tick's claim token.
    #[default]
    Allow,
    /// Skip a tick while an earlier run of the job is still running on any host (gocron's
    /// *singleton mode*, ShedLock's behaviour). The skip is reported as
    /// [`Skip::StillRunning`](super::Skip::StillRunning).
    SkipIfStillRunning,
    /// Run the tick as soon as the earlier run ends, wherever it runs. Ticks that keep
    /// arriving while runs last longer than the period pile up (as the seeds warn);
    /// waiting ticks are abandoned on shutdown and reported as
    /// [`Skip::ShuttingDown`](super::Skip::ShuttingDown).
    DelayIfStillRunning,
}

/// What to do about a tick that no host fired while it was due — all hosts were down,
/// paused or too late by more than [`Job::misfire_grace`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Misfire {
    /// Skip it. A scheduler that starts late does not look back; a running scheduler
    /// that wakes up too late for a tick reports it as [`Skip::Missed`](super::Skip::Missed)
    /// (once, on the host that decides it).
    #[default]
    Skip,
    /// Run the latest missed tick once, as soon as a scheduler notices it (at start-up
    /// or on waking up late); older missed ticks are folded into that one run
    /// ([`JobContext::is_catch_up`](super::JobContext::is_catch_up) tells). A job that has
    /// never run on any host has missed nothing.
    RunOnce,
}

/// A scheduled job: a name, a schedule and its options. Register it with
/// [`Scheduler::add`](super::Scheduler::add).
///
/// The **name** identifies the job across hosts: every host that registers a job of the
/// same name (with the same schedule and options) shares its ticks, and each tick runs on
/// one of them. Its keys in the store are `<prefix><name>:claim`, `<prefix><name>:last`
/// and `<prefix><name>:running`.
///
/// ```
/// use std::time::Duration;
/// use leasehold::schedule::{Job, Misfire, Overlap};
///
/// let nightly = Job::cron("nightly-report", "0 3 * * *")?      // 03:00 every day
///     .in_time_zone("Europe/Berlin")?                         // default: UTC
///     .overlap(Overlap::SkipIfStillRunning)
///     .lock_at_most_for(Duration::from_secs(600))
///     .misfire(Misfire::RunOnce);
/// let heartbeat = Job::every("heartbeat", Duration::from_secs(10)); // :00, :10, :20, …
/// # let _ = (nightly, heartbeat);
/// # Ok::<(), leasehold::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Job {
    pub(crate) name: String,
    pub(crate) schedule: Schedule,
    pub(crate) overlap: Overlap,
    pub(crate) lock_at_most_for: Duration,
    pub(crate) lock_at_least_for: Duration,
    pub(crate) misfire: Misfire,
    pub(crate) misfire_grace: Duration,
}

impl Job {
    fn new(name: String, schedule: Schedule) -> Job {
        Job {
            name,
            schedule,
            overlap: Overlap::Allow,
            lock_at_most_for: DEFAULT_LOCK_AT_MOST_FOR,
            lock_at_least_for: Duration::ZERO,
            misfire: Misfire::Skip,
            misfire_grace: DEFAULT_MISFIRE_GRACE,
        }
    }

    /// A job whose ticks are the instants `expr` matches, in UTC unless
    /// [`in_time_zone`](Job::in_time_zone) says otherwise.
    ///
    /// `expr` has 5 fields (`minute hour day-of-month month day-of-week`, POSIX/Vixie
    /// cron) or 6 with **seconds first**; `@hourly`, `@daily` etc. work too, and so do
    /// croner's extensions (`L`, `W`, `#`). Day-of-month and day-of-week combine with OR,
    /// as in Vixie cron.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `expr` does not parse or has another number of
    /// fields. The name is checked by [`Scheduler::add`](super::Scheduler::add).
    pub fn cron(name: impl Into<String>, expr: &str) -> Result<Job> {
        Ok(Job::new(name.into(), Schedule::cron(expr)?))
    }

    /// A job that ticks every `period` (whole milliseconds), on a grid anchored at the
    /// Unix epoch: the ticks are the instants `k × period` since 1970-01-01 00:00:00 UTC,
    /// so every host computes the same ticks whenever it started. `every(1 min)` ticks at
    /// each full minute, `every(10 s)` at :00, :10, :20, …
    ///
    /// `period` is checked by [`Scheduler::add`](super::Scheduler::add) (at least 1 ms,
    /// at most [`MAX_DURATION`]).
    pub fn every(name: impl Into<String>, period: Duration) -> Job {
        Job::new(name.into(), Schedule::every(period))
    }

    /// Evaluate this cron job in `tz`: an IANA name (`"Europe/Berlin"`, from the system's
    /// tz database), a POSIX TZ string (`"CET-1CEST,M3.5.0,M10.5.0/3"`) or `"UTC"`.
    ///
    /// Across a daylight-saving change, croner's rules apply: a fixed time that falls in
    /// the spring-forward gap runs once, at the first instant after the gap; a fixed time
    /// in the repeated hour of a fall-back runs once, at its first pass; wildcard fields
    /// (`30 * * * *`) run in both passes. Every host must use the same zone — which is why
    /// the default is UTC and not each host's local zone.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for an unknown zone, or for an [`every`](Job::every) job.
    pub fn in_time_zone(mut self, tz: &str) -> Result<Job> {
        self.schedule = self.schedule.in_time_zone(tz)?;
        Ok(self)
    }

    /// How runs of this job may overlap across hosts. Default: [`Overlap::Allow`].
    pub fn overlap(mut self, overlap: Overlap) -> Job {
        self.overlap = overlap;
        self
    }

    /// The lease of a run's running lock ([`Overlap::SkipIfStillRunning`],
    /// [`Overlap::DelayIfStillRunning`]): renewed every third of it while the run lasts;
    /// if a host dies mid-run, other hosts may run the job again this long after its last
    /// renewal at the latest. A run whose lease is lost is aborted. Default:
    /// [`DEFAULT_LOCK_AT_MOST_FOR`] (30 s); at least 3 ms.
    pub fn lock_at_most_for(mut self, lease: Duration) -> Job {
        self.lock_at_most_for = lease;
        self
    }

    /// Keep the running lock at least this long after the run started, even if the run
    /// finished sooner: no other run of the job starts on any host before then (with
    /// [`Overlap::SkipIfStillRunning`], ticks in that time are skipped). Not needed to stop
    /// a late host from re-running a tick — the tick claim does that. Default: zero; at
    /// most [`lock_at_most_for`](Job::lock_at_most_for).
    pub fn lock_at_least_for(mut self, hold: Duration) -> Job {
        self.lock_at_least_for = hold;
        self
    }

    /// What to do about ticks no host fired while they were due. Default: [`Misfire::Skip`].
    pub fn misfire(mut self, misfire: Misfire) -> Job {
        self.misfire = misfire;
        self
    }

    /// How long after its scheduled instant a tick is still *due*: a host that fires it
    /// later than this (its timer or process was held up, or it just started) treats it
    /// as missed and applies the [`misfire`](Job::misfire) policy. A tick stops being due
    /// anyway when the next one is. Measured on each host's own clock. Default:
    /// [`DEFAULT_MISFIRE_GRACE`] (60 s); at least 1 ms.
    pub fn misfire_grace(mut self, grace: Duration) -> Job {
        self.misfire_grace = grace;
        self
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The first tick of this job strictly after `t`, if it has one: what every host
    /// computes as the next tick.
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use leasehold::schedule::Job;
    ///
    /// let job = Job::every("report", Duration::from_secs(60));
    /// let t = UNIX_EPOCH + Duration::from_secs(1_700_000_030);
    /// assert_eq!(job.next_after(t), Some(UNIX_EPOCH + Duration::from_secs(1_700_000_040)));
    /// ```
    pub fn next_after(&self, t: SystemTime) -> Option<SystemTime> {
        self.schedule.next_after(to_millis(t)).map(from_millis)
    }

    /// Every argument check, before anything is registered.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.name.is_empty() {
            return Err(Error::InvalidArgument("job name: must not be empty".into()));
        }
        if let Some(period_ms) = self.schedule.period_ms() {
            if period_ms == 0 {
                return Err(Error::InvalidArgument(
                    "period: must be at least 1 ms".into(),
                ));
            }
            if Duration::from_millis(period_ms) > MAX_DURATION {
                return Err(Error::InvalidArgument(format!(
                    "period: must be at most {} s",
                    MAX_DURATION.as_secs()
                )));
            }
        }
        check_range(
            "lock_at_most_for",
            self.lock_at_most_for,
            Duration::from_millis(3),
        )?;
        if self.lock_at_least_for > self.lock_at_most_for {
            return Err(Error::InvalidArgument(format!(
                "lock_at_least_for: must not exceed lock_at_most_for (got {:?} > {:?})",
                self.lock_at_least_for, self.lock_at_most_for
            )));
        }
        check_range(
            "misfire_grace",
            self.misfire_grace,
            Duration::from_millis(1),
        )?;
        Ok(())
    }
}

fn check_range(name: &str, d: Duration, min: Duration) -> Result<()> {
    if d < min {
        return Err(Error::InvalidArgument(format!(
            "{name}: must be at least {min:?} (got {d:?})"
        )));
    }
    if d > MAX_DURATION {
        return Err(Error::InvalidArgument(format!(
            "{name}: must be at most {} s (got {d:?})",
            MAX_DURATION.as_secs()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(job: Job, argument: &str) {
        match job.validate() {
            Err(Error::InvalidArgument(msg)) => assert!(msg.starts_with(argument), "{msg}"),
            other => panic!("expected InvalidArgument for {argument}, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_documented_ones() {
        let job = Job::every("j", Duration::from_secs(1));
        assert_eq!(job.overlap, Overlap::Allow);
        assert_eq!(job.lock_at_most_for, DEFAULT_LOCK_AT_MOST_FOR);
        assert_eq!(job.lock_at_least_for, Duration::ZERO);
        assert_eq!(job.misfire, Misfire::Skip);
        assert_eq!(job.misfire_grace, DEFAULT_MISFIRE_GRACE);
        job.validate().unwrap();
    }

    #[test]
    fn arguments_are_checked() {
        let every = |d| Job::every("j", d);
        let ms = Duration::from_millis;
        invalid(Job::every("", ms(10)), "job name");
        invalid(every(ms(0)), "period");
        invalid(every(Duration::from_micros(999)), "period");
        invalid(every(MAX_DURATION + ms(1)), "period");
        invalid(every(ms(10)).lock_at_most_for(ms(2)), "lock_at_most_for");
        invalid(
            every(ms(10))
                .lock_at_most_for(ms(10))
                .lock_at_least_for(ms(11)),
            "lock_at_least_for",
        );
        invalid(every(ms(10)).misfire_grace(ms(0)), "misfire_grace");
        every(ms(1))
            .lock_at_most_for(ms(3))
            .lock_at_least_for(ms(3))
            .misfire_grace(ms(1))
            .validate()
            .unwrap();
    }
}
