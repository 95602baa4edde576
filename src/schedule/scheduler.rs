//! The scheduler: one timer task per job that fires each tick on this host, and the
//! handle that stops it.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;

use super::claim::Keys;
use super::context::JobContext;
use super::job::{Job, Misfire};
use super::report::{JobOutput, REPORTS_CAPACITY, Report, Reports};
use super::run::{Fire, fire};
use super::shared::{JobEntry, JobFn, RetryFactory, Shared};
use super::timing::{Clock, Millis};
use crate::{Client, Error, FixedInterval, MAX_DURATION, Result, RetryStrategy};

/// Default [`Scheduler::key_prefix`]: `"leasehold:schedule:"`.
pub const DEFAULT_KEY_PREFIX: &str = "leasehold:schedule:";

/// Default [`Scheduler::claim_retry`]: every 25 ms, up to 200 times (5 s: longer than
/// the claim lock's lease with the default client timeout, 3 s, so a claim lock left by
/// a host that died mid-claim is waited out).
pub const DEFAULT_CLAIM_RETRY: FixedInterval = FixedInterval::new(Duration::from_millis(25), 200);

/// Runs jobs on a schedule, each tick on exactly one of the hosts whose schedulers share
/// the store. See the [module documentation](super) for how.
///
/// Build it, [`add`](Scheduler::add) jobs, then [`start`](Scheduler::start) it; the
/// returned [`SchedulerHandle`] stops it.
#[must_use = "a Scheduler runs nothing until `.start()` is called"]
pub struct Scheduler {
    client: Client,
    key_prefix: String,
    fire_delay: Duration,
    claim_retry: RetryFactory,
    clock: Clock,
    reports: broadcast::Sender<Report>,
    jobs: Mutex<Vec<(Job, JobFn)>>,
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let jobs: Vec<String> = self
            .jobs
            .lock()
            .iter()
            .map(|(j, _)| j.name.clone())
            .collect();
        f.debug_struct("Scheduler")
            .field("client", &self.client)
            .field("key_prefix", &self.key_prefix)
            .field("fire_delay", &self.fire_delay)
            .field("jobs", &jobs)
            .finish()
    }
}

impl Scheduler {
    /// A scheduler on `client`'s store (any store: Redis, `memory://`), with the
    /// documented defaults and no jobs.
    pub fn new(client: Client) -> Scheduler {
        let (reports, _) = broadcast::channel(REPORTS_CAPACITY);
        Scheduler {
            client,
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            fire_delay: Duration::ZERO,
            claim_retry: Arc::new(|| Box::new(DEFAULT_CLAIM_RETRY)),
            clock: Clock::System,
            reports,
            jobs: Mutex::new(Vec::new()),
        }
    }

    /// Prefix of every key the scheduler writes (`<prefix><job>:claim`, `:last`,
    /// `:running`). Schedulers that share jobs must use the same prefix; use different
    /// ones to keep applications apart on one store. Default: [`DEFAULT_KEY_PREFIX`].
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Scheduler {
        self.key_prefix = prefix.into();
        self
    }

    /// The retry strategy of each tick's claim (cloned per claim): how long to wait for
    /// the claim lock while another host holds it, and how often to retry a claim, or the
    /// taking of a running lock, after a timeout or a dropped connection. This is the
    /// seeds' *MaxRetries* / *RetryDelay*: `FixedInterval::new(retry_delay, max_retries)`.
    /// Default: [`DEFAULT_CLAIM_RETRY`].
    pub fn claim_retry<R>(mut self, retry: R) -> Scheduler
    where
        R: RetryStrategy + Clone + Sync + 'static,
    {
        self.claim_retry = Arc::new(move || Box::new(retry.clone()));
        self
    }

    /// Fire every tick this long after its scheduled instant on this host. A host with a
    /// delay claims only the ticks that hosts without one did not (a standby); keep it
    /// below [`Job::misfire_grace`], or its ticks count as missed. Default: zero.
    ///
    /// # Panics
    ///
    /// If `delay` exceeds [`MAX_DURATION`].
    pub fn fire_delay(mut self, delay: Duration) -> Scheduler {
        assert!(
            delay <= MAX_DURATION,
            "fire_delay: must be at most {} s",
            MAX_DURATION.as_secs()
        );
        self.fire_delay = delay;
        self
    }

    /// Use `clock` as the wall clock (tests on tokio's paused clock).
    #[cfg(test)]
    pub(crate) fn clock(mut self, clock: Clock) -> Scheduler {
        self.clock = clock;
        self
    }

    /// Register `job`, to be run by `run` on each tick this host gets.
    ///
    /// `run` is called once per run with the run's [`JobContext`]; its future may return
    /// `()` or a `Result` (see [`JobOutput`]). An error or a panic is reported
    /// ([`Outcome::Failed`](super::Outcome::Failed),
    /// [`Outcome::Panicked`](super::Outcome::Panicked) and a `tracing` event) and the
    /// scheduler goes on. Each run is a tokio task of its own.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for an empty or already registered name, a `period`
    /// outside 1 ms ..= [`MAX_DURATION`], `lock_at_most_for` under 3 ms (it is renewed
    /// every third), `lock_at_least_for` over `lock_at_most_for`, or a zero
    /// `misfire_grace`; a [`claim_retry`](Scheduler::claim_retry) strategy that
    /// [`RetryStrategy::validate`] refuses (an interval under 1 ms).
    pub fn add<F, Fut>(&self, job: Job, run: F) -> Result<()>
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: JobOutput,
    {
        job.validate()?;
        (self.claim_retry)().validate()?;
        let mut jobs = self.jobs.lock();
        if jobs.iter().any(|(j, _)| j.name == job.name) {
            return Err(Error::InvalidArgument(format!(
                "job name: {:?} is already registered",
                job.name
            )));
        }
        let run: JobFn = Arc::new(move |ctx| {
            let fut = run(ctx);
            Box::pin(async move { fut.await.into_result() })
        });
        jobs.push((job, run));
        Ok(())
    }

    /// Subscribe to the [`Report`]s of this scheduler's ticks, before it starts.
    pub fn subscribe(&self) -> Reports {
        Reports::new(self.reports.subscribe())
    }

    /// Start firing: one timer task per job on the current tokio runtime. A tick that is
    /// still due when the scheduler starts (within its
    /// [`misfire_grace`](Job::misfire_grace)) is fired at once; with
    /// [`Misfire::RunOnce`], so is the latest tick no host ran.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn start(self) -> SchedulerHandle {
        let (stopping, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            client: self.client,
            clock: self.clock,
            fire_delay: self.fire_delay,
            claim_retry: self.claim_retry,
            reports: self.reports,
            last: Mutex::new(HashMap::new()),
            stopping,
            inflight: AtomicUsize::new(0),
            idle: Notify::new(),
        });
        let jobs = std::mem::take(&mut *self.jobs.lock());
        let tickers = jobs
            .into_iter()
            .map(|(job, run)| {
                let entry = Arc::new(JobEntry {
                    name: Arc::from(job.name.as_str()),
                    keys: Keys::new(&self.key_prefix, &job.name),
                    job,
                    run,
                    turn: tokio::sync::Mutex::new(()),
                });
                tokio::spawn(ticker(Arc::clone(&shared), entry))
            })
            .collect();
        SchedulerHandle { shared, tickers }
    }
}

/// A started [`Scheduler`]. Dropping it stops firing (runs in flight go on, detached, and
/// release their locks when they end); [`shutdown`](SchedulerHandle::shutdown) also waits
/// for them.
#[must_use = "dropping the handle stops the scheduler firing"]
pub struct SchedulerHandle {
    shared: Arc<Shared>,
    tickers: Vec<JoinHandle<()>>,
}

impl fmt::Debug for SchedulerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchedulerHandle")
            .field("jobs", &self.tickers.len())
            .field("in_flight", &self.in_flight())
            .field("firing", &!*self.shared.stopping.borrow())
            .finish()
    }
}

impl SchedulerHandle {
    /// Stop firing, then wait until every tick this host had fired is done: claims in
    /// progress finish (a tick they win still runs), running jobs run to their end and
    /// release their locks. Ticks waiting for an earlier run
    /// ([`Overlap::DelayIfStillRunning`](super::Overlap::DelayIfStillRunning)) are
    /// abandoned and reported as [`Skip::ShuttingDown`](super::Skip::ShuttingDown). A
    /// running lock kept for [`lock_at_least_for`](Job::lock_at_least_for) is left to be
    /// released when that time is up.
    ///
    /// # Errors
    ///
    /// None: how each run ended is in its [`Report`].
    ///
    /// # Cancel safety
    ///
    /// Firing stops as soon as the future is first polled (or dropped); dropping it
    /// later only stops waiting: the runs go on, detached.
    pub async fn shutdown(mut self) {
        self.stop_firing();
        for ticker in std::mem::take(&mut self.tickers) {
            let _ = ticker.await;
        }
        self.shared.wait_idle().await;
    }

    /// Subscribe to the [`Report`]s of ticks from now on.
    pub fn subscribe(&self) -> Reports {
        Reports::new(self.shared.reports.subscribe())
    }

    /// The last report of `job` on this host, if it had one.
    pub fn last_report(&self, job: &str) -> Option<Report> {
        self.shared.last.lock().get(job).cloned()
    }

    /// How many ticks this host has in flight: being claimed, waiting for an earlier
    /// run, or running.
    pub fn in_flight(&self) -> usize {
        self.shared.inflight.load(Ordering::SeqCst)
    }

    fn stop_firing(&mut self) {
        self.shared.stopping.send_replace(true);
        for ticker in &self.tickers {
            ticker.abort();
        }
    }
}

impl Drop for SchedulerHandle {
    fn drop(&mut self) {
        self.stop_firing();
    }
}

fn millis(d: Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The timer of one job: sleeps until each tick (plus the fire delay) and fires it.
async fn ticker(shared: Arc<Shared>, entry: Arc<JobEntry>) {
    let delay = millis(shared.fire_delay);
    let grace = millis(entry.job.misfire_grace);
    let mut last: Option<Millis> = None;
    loop {
        // The instant this host fires ticks for: its clock, less its fire delay.
        let now = shared.clock.now_millis().saturating_sub(delay);
        if let Some(tick) = entry.job.schedule.at_or_before(now)
            && last.is_none_or(|last| tick > last)
        {
            let late = now - tick > grace;
            let fired = match (late, entry.job.misfire) {
                (false, _) => Some(Fire::Due),
                (true, Misfire::RunOnce) => Some(Fire::CatchUp),
                // A scheduler that starts late does not look back.
                (true, Misfire::Skip) if last.is_none() => None,
                (true, Misfire::Skip) => Some(Fire::Missed),
            };
            if let Some(how) = fired {
                let inflight = shared.enter();
                tokio::spawn(fire(
                    Arc::clone(&shared),
                    Arc::clone(&entry),
                    tick,
                    how,
                    inflight,
                ));
            }
            last = Some(tick);
        }
        let Some(next) = entry.job.schedule.next_after(now) else {
            tracing::warn!(
                job = &*entry.name,
                schedule = entry.job.schedule.describe(),
                "the job has no further ticks: it stops firing"
            );
            return;
        };
        shared.clock.sleep_until(next.saturating_add(delay)).await;
    }
}
