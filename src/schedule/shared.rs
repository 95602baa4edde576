//! What a started scheduler's timer tasks, tick tasks and handle share: the client, the
//! clock, the reports, the registered jobs and the count of ticks in flight.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::{Notify, broadcast, watch};

use super::claim::Keys;
use super::context::JobContext;
use super::job::Job;
use super::report::Report;
use super::timing::Clock;
use crate::{Client, Result, RetryStrategy};

/// A job's run function, type-erased.
pub(crate) type JobFn =
    Arc<dyn Fn(JobContext) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Makes a fresh retry strategy for each claim.
pub(super) type RetryFactory = Arc<dyn Fn() -> Box<dyn RetryStrategy + Send> + Send + Sync>;

/// What the timer tasks, the tick tasks and the handle share.
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) clock: Clock,
    pub(crate) fire_delay: Duration,
    pub(crate) claim_retry: RetryFactory,
    pub(crate) reports: broadcast::Sender<Report>,
    pub(crate) last: Mutex<HashMap<String, Report>>,
    /// `true` once firing stopped.
    pub(crate) stopping: watch::Sender<bool>,
    pub(super) inflight: AtomicUsize,
    pub(super) idle: Notify,
}

impl Shared {
    pub(crate) fn claim_retry(&self) -> Box<dyn RetryStrategy + Send> {
        (self.claim_retry)()
    }

    /// Publish a report: `tracing` event, last report of the job, subscribers.
    pub(crate) fn report(&self, report: Report) {
        report.trace();
        self.last.lock().insert(report.job.clone(), report.clone());
        let _ = self.reports.send(report); // no subscriber: dropped
    }

    /// Count a tick in flight until the guard is dropped.
    pub(super) fn enter(self: &Arc<Self>) -> InFlight {
        self.inflight.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(self))
    }

    pub(super) async fn wait_idle(&self) {
        loop {
            let idle = self.idle.notified();
            let mut idle = std::pin::pin!(idle);
            idle.as_mut().enable();
            if self.inflight.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }
}

/// A tick in flight on this host.
pub(crate) struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.inflight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// A registered job, as its tasks see it.
pub(crate) struct JobEntry {
    pub(crate) name: Arc<str>,
    pub(crate) keys: Keys,
    pub(crate) job: Job,
    pub(crate) run: JobFn,
    /// Turns of this host's waiting runs under `DelayIfStillRunning` (a fair mutex: they
    /// start in tick order here, and only the first of them polls the running lock).
    pub(crate) turn: tokio::sync::Mutex<()>,
}
