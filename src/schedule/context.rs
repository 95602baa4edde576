//! What a run of a job knows about itself.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;

/// Handed to each run of a job: which tick it is, the fencing token to pass to what it
/// writes, and a way to learn that its lease is gone.
///
/// Cheap to clone; clones may move into tasks the job spawns.
#[derive(Clone)]
pub struct JobContext {
    pub(crate) job: Arc<str>,
    pub(crate) scheduled_for: SystemTime,
    pub(crate) token: u64,
    pub(crate) catch_up: bool,
    /// `true` once the run's lease is lost; closed when the run has ended.
    pub(crate) lost: watch::Receiver<bool>,
}

impl fmt::Debug for JobContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobContext")
            .field("job", &self.job)
            .field("scheduled_for", &self.scheduled_for)
            .field("fencing_token", &self.token)
            .field("catch_up", &self.catch_up)
            .finish()
    }
}

impl JobContext {
    /// The job's name.
    pub fn job(&self) -> &str {
        &self.job
    }

    /// The tick this run is for: the instant it was scheduled for, the same on every
    /// host. A delayed or catch-up run starts later than this.
    pub fn scheduled_for(&self) -> SystemTime {
        self.scheduled_for
    }

    /// The fencing token of this run: strictly greater than that of every earlier run of
    /// the job, on any host. Pass it to the resource the job writes and have the resource
    /// refuse lower tokens (see [fencing](crate#fencing-a-resource)): that keeps a run
    /// that lost its lease while paused from writing after a newer run.
    ///
    /// With [`Overlap::SkipIfStillRunning`](super::Overlap::SkipIfStillRunning) and
    /// [`Overlap::DelayIfStillRunning`](super::Overlap::DelayIfStillRunning) it is the
    /// running lock's token; with [`Overlap::Allow`](super::Overlap::Allow), the token of
    /// the tick's claim (it rises with every claimed tick of the job).
    pub fn fencing_token(&self) -> u64 {
        self.token
    }

    /// Whether this run is a [`Misfire::RunOnce`](super::Misfire::RunOnce) catch-up of a
    /// tick that no host ran while it was due.
    pub fn is_catch_up(&self) -> bool {
        self.catch_up
    }

    /// Resolves when this run's lease is lost, before another host could take the
    /// running lock (given the lease's drift allowance). The scheduler drops the job's
    /// future at that moment anyway; this is for tasks the job spawned, and for
    /// `select!`s that want to clean up first. Also resolves once the run has ended (its
    /// lease released), for a context kept beyond it. Never resolves during an
    /// [`Overlap::Allow`](super::Overlap::Allow) run, which has no lease.
    ///
    /// # Errors
    ///
    /// None: it only waits.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes.
    pub async fn lost(&self) {
        let mut lost = self.lost.clone();
        // `Err`: the run ended and its lease was released.
        let _ = lost.wait_for(|lost| *lost).await;
    }
}
