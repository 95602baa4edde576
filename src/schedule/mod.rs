//! Exclusive scheduled jobs: cron and fixed-period jobs whose every tick runs on exactly
//! one host among all the schedulers that share a store, with overlap modes that hold
//! across hosts. (Feature `schedule`.)
//!
//! ```
//! use std::time::Duration;
//! use leasehold::Client;
//! use leasehold::schedule::{Job, JobContext, Overlap, Scheduler};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> leasehold::Result<()> {
//! let client = Client::open("memory://docs").await?;         // or "redis://…": any store
//! let scheduler = Scheduler::new(client);
//! let mut reports = scheduler.subscribe();                    // what happened to each tick
//! scheduler.add(
//!     Job::every("heartbeat", Duration::from_millis(100))     // or Job::cron(name, "0 3 * * *")?
//!         .overlap(Overlap::SkipIfStillRunning)
//!         .lock_at_most_for(Duration::from_secs(10)),
//!     |ctx: JobContext| async move {
//!         // Fence the job's writes with ctx.fencing_token(); abort if ctx.lost() fires.
//!         println!("tick {:?}, token {}", ctx.scheduled_for(), ctx.fencing_token());
//!         Ok::<_, std::io::Error>(())                         // or (): see JobOutput
//!     },
//! )?;
//! let running = scheduler.start();                            // firing stops when dropped
//! let report = reports.recv().await.expect("a report");
//! assert!(report.ran());
//! running.shutdown().await;                                   // stop firing, wait for runs
//! # Ok(()) }
//! ```
//!
//! Start the same scheduler (same job names, schedules and options, same
//! [`key_prefix`](Scheduler::key_prefix)) on every host: each tick runs on one of them.
//! For loops that must run on one node at a time rather than on a schedule, see
//! [`Client::run_while_leader`](crate::Client::run_while_leader).
//!
//! # Ticks
//!
//! A tick is identified by its **scheduled instant** (whole milliseconds since the Unix
//! epoch), which every host computes alike: [`Job::every`] ticks lie on a grid anchored
//! at the epoch (`every(1 min)` ticks at each full minute, whenever a host started), and
//! [`Job::cron`] ticks are whole seconds in the job's time zone — UTC unless
//! [`Job::in_time_zone`] names one, never each host's local zone, which may differ.
//!
//! Each host's scheduler sleeps until a tick (plus its [`fire_delay`](Scheduler::fire_delay))
//! on its own wall clock and *fires* it: it tries to claim the tick, and the host that
//! claims it decides the tick's fate — runs it, or skips it — once for all hosts.
//!
//! # Every tick exactly once: the claim
//!
//! A lock held only while the job runs — the design of the schedulers this crate grew
//! from — does not stop a host whose timer fires a little later from running the tick
//! again once the first run has finished (ShedLock's users answer that with a guessed
//! `lockAtLeastFor`). Here the claim outlives the run: each job has a **record of the
//! last claimed tick** (`<prefix><job>:last`), and a tick is claimed by advancing it:
//!
//! 1. take the job's *claim lock* (`<prefix><job>:claim`, a lease of three times the
//!    client's timeout, waited for under [`claim_retry`](Scheduler::claim_retry)); its
//!    fencing token is *t*;
//! 2. read the record with the claim lock's [`fenced_get`](crate::Lock::fenced_get) — which
//!    also raises the record's highest token to *t*, and records this holder as its user
//!    (a token repeated by a failover is refused to anyone else);
//! 3. if it holds this tick or a later one, the tick is someone else's
//!    ([`Outcome::ClaimedElsewhere`]); otherwise write this tick with the claim lock's
//!    [`fenced_set`](crate::Lock::fenced_set): the tick is this host's;
//! 4. release the claim lock.
//!
//! The record only moves forward, and never expires, so a host that fires a tick late —
//! 300 ms, or an hour — finds it claimed, however long ago the run finished: no lease has
//! to outlive the tick's window, and nothing has to be guessed. If a claimer stalls
//! (GC, swap, network) until its claim lock lapses and another host claims meanwhile,
//! the stalled claimer's write is refused by fencing ([`Error::Fenced`](crate::Error::Fenced))
//! because the other host's read raised the record's token above its own; a claim whose
//! reply was lost is retried with the same claim id and recognised. So each tick is
//! claimed **at most once**, on any store, without assumptions about clocks.
//!
//! *Why not a lock per tick* (`<job>:<tick>`, expiring after the tick's window)? Every
//! lock key has a fencing counter that must survive the key — one counter per tick,
//! forever. And the window would have to cover every host's lateness, which is a guess
//! again.
//!
//! It is **exactly once** when some host fires each tick before any host claims a later
//! one — that is, while at least one host is up and hosts' clocks and timers agree within
//! a period. The limits:
//!
//! * *Order.* Claims only move forward: a tick fired after a later tick was claimed is
//!   not run (a host more than a period behind can never run an old tick twice, but it
//!   cannot run it once either if a faster host already moved on).
//! * *Crashes.* A host that dies between claiming a tick and running it loses that tick:
//!   claims are at-most-once. A run that crashes midway is not retried.
//! * *Store failures.* The record is data in the store: a Redis restart without
//!   persistence, or a failover to a replica that had not received the latest record,
//!   rolls it back, and a tick claimed just before may be claimed — and run — again.
//!   The fencing counters roll back with it, so tokens may repeat across such an event.
//!   Keep the store persistent and replicated synchronously enough for your needs.
//!
//! # Overlap across hosts
//!
//! [`Overlap`] is applied by the host that claimed the tick, against a **running lock**
//! (`<prefix><job>:running`) held for the whole run on whichever host runs it, renewed
//! every third of [`lock_at_most_for`](Job::lock_at_most_for), and released when the run
//! ends (or [`lock_at_least_for`](Job::lock_at_least_for) after it started, if later):
//!
//! * [`Overlap::Allow`] runs every tick; runs take no running lock and may overlap.
//! * [`Overlap::SkipIfStillRunning`] runs the tick only if it can take the running lock
//!   at once; otherwise an earlier run is still running somewhere, and the tick is
//!   skipped ([`Skip::StillRunning`]).
//! * [`Overlap::DelayIfStillRunning`] waits for the running lock (polling it every
//!   25 ms; this host's waiting ticks take turns in tick order), so the tick runs as soon
//!   as the earlier run ends, wherever it ran. Across hosts the order is not tick order:
//!   the first poll to find the lock free wins, so a tick fired while an earlier one
//!   waits on another host can run first, and a tick still waiting when its host shuts
//!   down is reported [`Skip::ShuttingDown`].
//!
//! A run whose running lock is lost — its renewal found the key gone or taken, gave up,
//! or its validity ran out first — is **aborted**: its future is dropped at its next
//! await point and [`Outcome::LeaseLost`] is reported. The running lock is a lease, with
//! a lease's limits: a host paused past its lease may still act after another run
//! started — pass [`JobContext::fencing_token`] to what the job writes.
//!
//! # Missed ticks
//!
//! A tick is *due* for [`Job::misfire_grace`] (default 60 s) after its instant, or until
//! the next tick, whichever is first. A tick that no host fired while it was due — all
//! hosts were down, or stalled — is *missed*; [`Job::misfire`] decides: [`Misfire::Skip`]
//! (the default) leaves it, [`Misfire::RunOnce`] runs the latest missed tick once as soon
//! as a scheduler notices (at start-up, or on waking up late), folding older ones into
//! it. A scheduler starting up fires the latest tick if it is still due: if another host
//! already ran it, the claim says so.
//!
//! # Failures are reported, never swallowed
//!
//! Each tick this host fired produces a [`Report`]: to every [`Reports`] subscription
//! ([`Scheduler::subscribe`], [`SchedulerHandle::subscribe`]), as the job's
//! [`last_report`](SchedulerHandle::last_report), and as a `tracing` event (target
//! `leasehold::schedule::report`; `warn` for failures, lost leases, missed ticks and store
//! errors, `error` for panics). A job that returns an error or panics, or a store that
//! fails, never stops the scheduler: the next tick fires as usual.
//!
//! # Keys in the store
//!
//! | key | what | lifetime |
//! |---|---|---|
//! | `<prefix><job>:claim` | claim lock, held for the two round trips of a claim | its lease |
//! | `<prefix><job>:last` | record of the last claimed tick: `"<tick ms> <previous tick ms or -> <claim id>"` (plus its fence key) | permanent |
//! | `<prefix><job>:running` | running lock (`SkipIfStillRunning`, `DelayIfStillRunning`) | the run, renewed |
//!
//! plus the fencing counters of the two locks. `<prefix>` is [`DEFAULT_KEY_PREFIX`]
//! unless set. The record of a job that was renamed or retired stays: delete it by hand.
//!
//! # Coming from the seeds' schedulers
//!
//! | their option | here |
//! |---|---|
//! | distributed-cron `ModeDefault` | [`Overlap::Allow`] (the default) |
//! | `ModeSkipIfStillRunning` | [`Overlap::SkipIfStillRunning`] — across hosts, not only in one process |
//! | `ModeDelayIfStillRunning` | [`Overlap::DelayIfStillRunning`] |
//! | `KeyPrefix` | [`Scheduler::key_prefix`] |
//! | `LockDuration` (renewed at 2/3) | [`Job::lock_at_most_for`] (renewed every third of it) |
//! | `MaxRetries`, `RetryDelay` | [`Scheduler::claim_retry`]`(FixedInterval::new(retry_delay, max_retries))` |
//! | `SingletonMode()` | [`Overlap::SkipIfStillRunning`], which holds across hosts too |
//! | ShedLock `lockAtMostFor` / `lockAtLeastFor` | [`Job::lock_at_most_for`] / [`Job::lock_at_least_for`] — the latter no longer needed to stop re-runs |
//! | yago `RunLoopWithLock(fn, WithLockKey(k), WithInterval(d))` | [`Client::run_while_leader`](crate::Client::run_while_leader)`(k, expiration, retry, \|l\| async { loop { fn(); sleep(d).await } })` |
//!
//! ```
//! use std::time::Duration;
//! use leasehold::{Client, FixedInterval};
//! use leasehold::schedule::{Job, Overlap, Scheduler};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> leasehold::Result<()> {
//! // go.fork.vn: KeyPrefix "myapp_scheduler:", LockDuration 60 s, MaxRetries 5,
//! // RetryDelay 200 ms; Every(5).Minutes().SingletonMode().Do(task)
//! let client = Client::open("memory://").await?; // "redis://127.0.0.1:6379/"
//! let scheduler = Scheduler::new(client)
//!     .key_prefix("myapp_scheduler:")
//!     .claim_retry(FixedInterval::new(Duration::from_millis(200), 5));
//! scheduler.add(
//!     Job::every("task", Duration::from_secs(5 * 60))
//!         .lock_at_most_for(Duration::from_secs(60))
//!         .overlap(Overlap::SkipIfStillRunning),
//!     |_ctx| async { /* task */ },
//! )?;
//! let running = scheduler.start();
//! # running.shutdown().await;
//! # Ok(()) }
//! ```

mod claim;
mod context;
mod job;
mod report;
mod run;
mod scheduler;
mod shared;
mod timing;

// `Leadership` is documented at the crate root (`leasehold::Leadership`, the argument of
// `Client::run_while_leader`); this path stays for code written against it.
#[doc(hidden)]
pub use crate::Leadership;
pub use context::JobContext;
pub use job::{DEFAULT_LOCK_AT_MOST_FOR, DEFAULT_MISFIRE_GRACE, Job, Misfire, Overlap};
pub use report::{JobOutput, Outcome, Report, Reports, Skip};
pub use scheduler::{DEFAULT_CLAIM_RETRY, DEFAULT_KEY_PREFIX, Scheduler, SchedulerHandle};
#[cfg(test)]
mod tests;
