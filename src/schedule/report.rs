//! What happened to each tick on this host: a [`Report`] per tick, on a channel the user
//! subscribes to ([`Reports`]) and as the job's last report, with a `tracing` event each.

use std::fmt;
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

use super::timing::to_millis;
use crate::Error;

/// The outcome of one tick of a job, as this host saw it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Outcome {
    /// This host ran the tick and the job returned success (`()` or `Ok(_)`).
    Completed,
    /// This host ran the tick and the job returned an error: its `Display` (alternate
    /// form, so an `anyhow` error shows its chain).
    Failed(String),
    /// This host ran the tick and the job panicked: the panic message. The scheduler
    /// goes on.
    Panicked(String),
    /// The run's lease was lost while it ran (its renewal failed, or its validity ran out
    /// first); the job was aborted — its future dropped — at its next await point. The
    /// error says why ([`Error::NotHeld`], [`Error::MaxRetryExceeded`],
    /// [`Error::LeaseExpired`], …).
    LeaseLost(Error),
    /// Another host claimed this tick (or this tick was already decided): it runs, ran,
    /// or was skipped there. Not an error.
    ClaimedElsewhere,
    /// This host claimed the tick and decided not to run it.
    Skipped(Skip),
    /// A store error: this host could not claim the tick, or could not take the running
    /// lock for it. The tick may still run on another host.
    Error(Error),
}

/// Why a tick this host claimed did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Skip {
    /// [`Overlap::SkipIfStillRunning`](super::Overlap::SkipIfStillRunning): an earlier run
    /// of the job was still running (on this host or another).
    StillRunning,
    /// No host fired the tick within its [`misfire_grace`](super::Job::misfire_grace)
    /// and the policy is [`Misfire::Skip`](super::Misfire::Skip).
    Missed,
    /// The scheduler was shut down while the tick waited for an earlier run to end
    /// ([`Overlap::DelayIfStillRunning`](super::Overlap::DelayIfStillRunning)).
    ShuttingDown,
}

/// One tick of one job, as this host saw it. Sent to every [`Reports`] subscriber and
/// kept as the job's [last report](super::SchedulerHandle::last_report).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Report {
    /// The job's name.
    pub job: String,
    /// The tick: the instant it was scheduled for (its identity on every host).
    pub scheduled_for: SystemTime,
    /// What happened.
    pub outcome: Outcome,
    /// The fencing token the run got (or the claim's, for a skip this host decided);
    /// `None` when this host did not claim the tick.
    pub fencing_token: Option<u64>,
    /// When the run started (wall clock), if this host ran the tick.
    pub started_at: Option<SystemTime>,
    /// How long the run took, if this host ran the tick.
    pub run_time: Option<Duration>,
    /// Whether this run was a [`Misfire::RunOnce`](super::Misfire::RunOnce) catch-up of
    /// a missed tick.
    pub catch_up: bool,
}

impl Report {
    /// Whether this host ran the tick (whatever the run's outcome).
    pub fn ran(&self) -> bool {
        matches!(
            self.outcome,
            Outcome::Completed | Outcome::Failed(_) | Outcome::Panicked(_) | Outcome::LeaseLost(_)
        )
    }

    /// Emit the `tracing` event for this report: `debug` for a completed run, `trace`
    /// for a tick claimed elsewhere, `info` for a skip while still running, `warn` for a
    /// missed tick, a failed run, a lost lease or a store error, `error` for a panic.
    pub(crate) fn trace(&self) {
        let job = self.job.as_str();
        let tick = to_millis(self.scheduled_for);
        let token = self.fencing_token;
        match &self.outcome {
            Outcome::Completed => tracing::debug!(
                job,
                tick,
                token,
                run_time_ms = self.run_time.map(|d| d.as_millis() as u64),
                "scheduled job completed"
            ),
            Outcome::ClaimedElsewhere => {
                tracing::trace!(job, tick, "tick claimed by another host")
            }
            Outcome::Skipped(Skip::StillRunning) => {
                tracing::info!(job, tick, "tick skipped: an earlier run is still running")
            }
            Outcome::Skipped(skip) => tracing::warn!(job, tick, ?skip, "tick skipped"),
            Outcome::Failed(error) => {
                tracing::warn!(
                    job,
                    tick,
                    token,
                    error = error.as_str(),
                    "scheduled job failed"
                )
            }
            Outcome::Panicked(panic) => {
                tracing::error!(
                    job,
                    tick,
                    token,
                    panic = panic.as_str(),
                    "scheduled job panicked"
                )
            }
            Outcome::LeaseLost(error) => tracing::warn!(
                job, tick, token, error = %error,
                "scheduled job aborted: its lease was lost"
            ),
            Outcome::Error(error) => {
                tracing::warn!(job, tick, error = %error, "tick not run: store error")
            }
        }
    }
}

/// A subscription to the [`Report`]s of a scheduler, from
/// [`Scheduler::subscribe`](super::Scheduler::subscribe) or
/// [`SchedulerHandle::subscribe`](super::SchedulerHandle::subscribe).
///
/// It buffers up to 1024 reports; a subscriber that falls further behind loses the
/// oldest ones and [`missed`](Reports::missed) counts them. Nothing is buffered for
/// nobody: reports sent while no subscription exists are dropped (the job's
/// [last report](super::SchedulerHandle::last_report) is kept regardless).
pub struct Reports {
    rx: broadcast::Receiver<Report>,
    missed: u64,
}

impl fmt::Debug for Reports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reports")
            .field("pending", &self.rx.len())
            .field("missed", &self.missed)
            .finish()
    }
}

pub(crate) const REPORTS_CAPACITY: usize = 1024;

impl Reports {
    pub(crate) fn new(rx: broadcast::Receiver<Report>) -> Reports {
        Reports { rx, missed: 0 }
    }

    /// The next report; `None` once the scheduler is gone (shut down, its handle dropped
    /// and its last run ended) and every report was taken.
    ///
    /// # Errors
    ///
    /// None: reports lost by falling behind are skipped and counted in
    /// [`missed`](Reports::missed).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a report not returned stays for the next call.
    pub async fn recv(&mut self) -> Option<Report> {
        loop {
            match self.rx.recv().await {
                Ok(report) => return Some(report),
                Err(broadcast::error::RecvError::Lagged(n)) => self.missed += n,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The next report if one is waiting; never blocks.
    pub fn try_recv(&mut self) -> Option<Report> {
        loop {
            match self.rx.try_recv() {
                Ok(report) => return Some(report),
                Err(broadcast::error::TryRecvError::Lagged(n)) => self.missed += n,
                Err(_) => return None,
            }
        }
    }

    /// How many reports this subscriber lost by falling more than 1024 behind.
    pub fn missed(&self) -> u64 {
        self.missed
    }
}

/// What a job's future may return: `()` (always a success) or a `Result` whose error is
/// reported as [`Outcome::Failed`] with its `Display`.
///
/// ```
/// use leasehold::schedule::JobOutput;
///
/// assert_eq!(().into_result(), Ok(()));
/// let failed: Result<u32, std::io::Error> = Err(std::io::Error::other("disk full"));
/// assert_eq!(failed.into_result(), Err("disk full".to_owned()));
/// ```
pub trait JobOutput {
    /// `Ok(())` for a success, `Err(message)` for a failure.
    fn into_result(self) -> Result<(), String>;
}

impl JobOutput for () {
    fn into_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<T, E: fmt::Display> JobOutput for Result<T, E> {
    fn into_result(self) -> Result<(), String> {
        self.map(drop).map_err(|e| format!("{e:#}"))
    }
}

/// The message of a panic payload, as `std` prints it.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_owned()
    }
}
