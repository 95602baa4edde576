//! Exclusive scheduled jobs: cron and fixed-period jobs whose every tick runs on exactly
//! one host among all the schedulers that share a store. (Feature `schedule`.)
//!
//! DOCS-PLACEHOLDER

mod claim;
mod context;
mod job;
mod report;
mod run;
mod scheduler;
mod timing;

#[doc(no_inline)]
pub use crate::Leadership;
pub use context::JobContext;
pub use job::{DEFAULT_LOCK_AT_MOST_FOR, DEFAULT_MISFIRE_GRACE, Job, Misfire, Overlap};
pub use report::{JobOutput, Outcome, Report, Reports, Skip};
pub use scheduler::{DEFAULT_CLAIM_RETRY, DEFAULT_KEY_PREFIX, Scheduler, SchedulerHandle};
#[cfg(test)]
mod tests;
