//! One tick on this host: claim it, apply the overlap mode across hosts, run the job
//! under its lease, report, release.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinError;
use tokio::time::Instant;

use super::claim::{Claim, claim};
use super::context::JobContext;
use super::job::Overlap;
use super::report::{Outcome, Report, Skip, panic_message};
use super::shared::{InFlight, JobEntry, Shared};
use super::timing::{Millis, from_millis};
use crate::refresh::Policy;
use crate::{Error, Lock, Result};

/// How often a tick waiting under `DelayIfStillRunning` retries the running lock.
pub(crate) const DELAY_POLL: Duration = Duration::from_millis(25);

/// Why a tick is fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fire {
    /// On time (within its grace): claim and run it.
    Due,
    /// Too late under `Misfire::Skip`: claim it, and if nobody else did, skip it as missed.
    Missed,
    /// Too late under `Misfire::RunOnce`: claim it, if the job ever ran, and run it.
    CatchUp,
}

/// Fire `tick` of `entry` on this host. `_inflight` counts it until it is done.
pub(crate) async fn fire(
    shared: Arc<Shared>,
    entry: Arc<JobEntry>,
    tick: Millis,
    how: Fire,
    _inflight: InFlight,
) {
    let tick = Tick {
        shared: &shared,
        entry: &entry,
        at: tick,
        catch_up: how == Fire::CatchUp,
    };
    let mut retry = shared.claim_retry();
    let claimed = claim(
        &shared.client,
        &entry.keys,
        tick.at,
        how == Fire::CatchUp,
        &mut *retry,
    )
    .await;
    let claim_token = match claimed {
        Ok(Claim::Won { token, .. }) if how == Fire::Missed => {
            return tick.report(Outcome::Skipped(Skip::Missed), Some(token));
        }
        Ok(Claim::Won { token, .. }) => token,
        Ok(Claim::Lost) => return tick.report(Outcome::ClaimedElsewhere, None),
        Ok(Claim::NoRecord) => {
            tracing::debug!(
                job = &*entry.name,
                tick = tick.at,
                "nothing to catch up: the job never ran on any host"
            );
            return;
        }
        Err(e) => return tick.report(Outcome::Error(e), None),
    };
    match entry.job.overlap {
        Overlap::Allow => tick.run(claim_token, None).await,
        Overlap::SkipIfStillRunning => match tick.take_running().await {
            Ok(lock) => tick.run(claim_token, Some(lock)).await,
            Err(e) if e.is_not_obtained() => {
                tick.report(Outcome::Skipped(Skip::StillRunning), Some(claim_token))
            }
            Err(e) => tick.report(Outcome::Error(e), Some(claim_token)),
        },
        Overlap::DelayIfStillRunning => {
            // This host's waiting ticks take turns in tick order (a fair mutex), and only
            // the one whose turn it is polls the running lock.
            let turn = match entry.turn.try_lock() {
                Ok(turn) => match tick.take_running().await {
                    // Nothing running anywhere, no earlier tick waiting here: run now.
                    Ok(lock) => return tick.run(claim_token, Some(lock)).await,
                    Err(e) if e.is_not_obtained() => Some(turn),
                    Err(e) => return tick.report(Outcome::Error(e), Some(claim_token)),
                },
                Err(_) => None,
            };
            let mut stopping = shared.stopping.subscribe();
            let waited = async {
                let turn = match turn {
                    Some(turn) => turn,
                    None => entry.turn.lock().await,
                };
                (turn, tick.wait_running().await)
            };
            tokio::select! {
                biased;
                () = stopped(&mut stopping) => {
                    tick.report(Outcome::Skipped(Skip::ShuttingDown), Some(claim_token));
                }
                (turn, lock) = waited => match lock {
                    Ok(lock) => {
                        tick.run(claim_token, Some(lock)).await;
                        drop(turn);
                    }
                    Err(e) => tick.report(Outcome::Error(e), Some(claim_token)),
                },
            }
        }
    }
}

/// A tick this host fired.
struct Tick<'a> {
    shared: &'a Shared,
    entry: &'a JobEntry,
    at: Millis,
    catch_up: bool,
}

impl Tick<'_> {
    fn report(&self, outcome: Outcome, token: Option<u64>) {
        self.report_run(outcome, token, None);
    }

    fn report_run(
        &self,
        outcome: Outcome,
        token: Option<u64>,
        run: Option<(std::time::SystemTime, Duration)>,
    ) {
        self.shared.report(Report {
            job: self.entry.name.to_string(),
            scheduled_for: from_millis(self.at),
            outcome,
            fencing_token: token,
            started_at: run.map(|(at, _)| at),
            run_time: run.map(|(_, took)| took),
            catch_up: self.catch_up,
        });
    }

    /// One try at the running lock (retried only after a timeout or a dropped
    /// connection, under the claim strategy): `NotObtained` while a run is running.
    async fn take_running(&self) -> Result<Lock> {
        let client = &self.shared.client;
        let mut retry = self.shared.claim_retry();
        loop {
            let taken = client
                .try_lock(
                    &self.entry.keys.running,
                    &crate::random_value(),
                    self.entry.job.lock_at_most_for,
                )
                .await;
            match taken {
                Err(e) if e.is_transient() && !e.is_not_obtained() => match retry.next_delay() {
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => return Err(e),
                },
                taken => return taken,
            }
        }
    }

    /// Wait for the running lock as long as it takes (the earlier run ends, or its lease
    /// expires if its host died).
    async fn wait_running(&self) -> Result<Lock> {
        let client = &self.shared.client;
        client
            .lock(
                &self.entry.keys.running,
                &crate::random_value(),
                self.entry.job.lock_at_most_for,
                client.default_timeout(),
                std::iter::repeat(DELAY_POLL),
            )
            .await
    }

    /// Run the job under `lease` (none for `Allow`), report, release.
    async fn run(&self, claim_token: u64, lease: Option<Lock>) {
        let job = &self.entry.job;
        let token = lease.as_ref().map_or(claim_token, Lock::fencing_token);
        let mut renewal = match &lease {
            None => None,
            Some(lock) => {
                let timeout = self.shared.client.default_timeout();
                let renewal = Policy::for_lease(job.lock_at_most_for, timeout)
                    .and_then(|policy| lock.renew(&policy));
                match renewal {
                    Ok(renewal) => Some(renewal),
                    Err(e) => return self.report(Outcome::Error(e), Some(token)),
                }
            }
        };
        let (lost_tx, lost_rx) = watch::channel(false);
        let ctx = JobContext {
            job: Arc::clone(&self.entry.name),
            scheduled_for: from_millis(self.at),
            token,
            catch_up: self.catch_up,
            lost: lost_rx,
        };
        let started_at = self.shared.clock.now();
        let started = Instant::now();
        // The job's own task: a panic is caught at its boundary, and aborting it drops
        // the job's future.
        let run = Arc::clone(&self.entry.run);
        let mut task = tokio::spawn(async move { run(ctx).await });
        let outcome = match &lease {
            None => joined(task.await),
            Some(lock) => tokio::select! {
                // A run that finished is reported as such, even if its lease lapsed
                // just now.
                biased;
                done = &mut task => joined(done),
                () = lock.lost() => {
                    let _ = lost_tx.send(true);
                    task.abort();
                    let _ = (&mut task).await;
                    let why = renewal
                        .as_mut()
                        .and_then(|r| r.try_error())
                        .unwrap_or(Error::LeaseExpired);
                    Outcome::LeaseLost(why)
                }
            },
        };
        drop(lost_tx);
        let lost = matches!(outcome, Outcome::LeaseLost(_));
        self.report_run(outcome, Some(token), Some((started_at, started.elapsed())));

        let Some(lock) = lease else { return };
        if lost {
            if let Some(renewal) = renewal {
                renewal.stop().await;
            }
            // If the key still holds our value (the lease only lapsed locally), free it.
            let _ = lock.unlock().await;
            return;
        }
        let hold_until = started + job.lock_at_least_for;
        if Instant::now() < hold_until {
            // Keep the lock until `lock_at_least_for` is up, without renewing: its last
            // renewal armed `lock_at_most_for` ≥ `lock_at_least_for` from a later instant.
            if let Some(renewal) = renewal {
                renewal.stop().await;
            }
            tokio::spawn(async move {
                tokio::time::sleep_until(hold_until).await;
                let _ = lock.unlock().await;
            });
        } else {
            let _ = lock.unlock().await; // stops renewal first
        }
    }
}

/// Resolves once the scheduler stops firing (the guard the wait returns is not `Send`).
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stopping| *stopping).await;
}

/// The outcome of a finished run task.
fn joined(done: std::result::Result<std::result::Result<(), String>, JoinError>) -> Outcome {
    match done {
        Ok(Ok(())) => Outcome::Completed,
        Ok(Err(message)) => Outcome::Failed(message),
        Err(e) if e.is_panic() => Outcome::Panicked(panic_message(&*e.into_panic())),
        Err(_) => {
            Outcome::Failed("the run's task was cancelled: the runtime is shutting down".into())
        }
    }
}
