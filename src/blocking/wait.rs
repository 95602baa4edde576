//! The one place where a caller's thread parks.
//!
//! Every blocking method of the facade runs its work as a task on the client's runtime
//! thread and parks the caller here until the task's output arrives or a timeout passes.
//! Parking a thread that drives an async runtime would stall that runtime (and deadlock
//! it when the awaited work needs the very thread that is parked), so every function
//! here that parks first checks for a runtime context and panics instead.

use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use futures::FutureExt;
use tokio::runtime::Handle;

/// Why a wait ended without the task's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waited {
    /// The timeout passed first; the task was aborted.
    TimedOut,
    /// The runtime dropped the task without running it to the end (it is shutting down).
    Shutdown,
}

/// Whether the calling thread may park: it is not inside a tokio runtime context (an
/// async task, a `block_on`, a `spawn_blocking` closure, or the facade's own runtime
/// thread).
pub(crate) fn may_block() -> bool {
    Handle::try_current().is_err()
}

/// Panics with the facade's message unless the calling thread may park.
///
/// `what` names the method, e.g. `"Lock::refresh"`.
#[track_caller]
pub(crate) fn enter(what: &str) {
    if !may_block() {
        panic!(
            "leasehold::blocking::{what} called from inside an async runtime: it would park \
             a thread the runtime needs. Use the async API (`leasehold::Client`) in async \
             code, or call the blocking API from a plain thread with no runtime context"
        );
    }
}

/// Run `fut` on the runtime behind `rt` and park until it completes.
///
/// A panic inside `fut` is resumed on the caller's thread.
///
/// # Panics
///
/// Inside an async runtime (see [`enter`]).
#[track_caller]
pub(crate) fn block_on<F>(rt: &Handle, what: &str, fut: F) -> Result<F::Output, Waited>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    timeout(rt, what, fut, None)
}

/// Run `fut` on the runtime behind `rt` and park until it completes or `limit` passes;
/// on timeout the task is aborted (dropped on the runtime thread).
///
/// A panic inside `fut` is resumed on the caller's thread.
///
/// # Panics
///
/// Inside an async runtime (see [`enter`]).
#[track_caller]
pub(crate) fn timeout<F>(
    rt: &Handle,
    what: &str,
    fut: F,
    limit: Option<Duration>,
) -> Result<F::Output, Waited>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    enter(what);
    // Capacity 1 and a single send: the runtime side never blocks.
    let (tx, rx) = mpsc::sync_channel(1);
    let task = rt.spawn(async move {
        let output = AssertUnwindSafe(fut).catch_unwind().await;
        let _ = tx.send(output);
    });
    let received = match limit {
        None => rx.recv().map_err(|_| Waited::Shutdown),
        // `recv_timeout` falls back to an unbounded wait when `limit` overflows an Instant.
        Some(limit) => rx.recv_timeout(limit).map_err(|e| match e {
            RecvTimeoutError::Timeout => Waited::TimedOut,
            RecvTimeoutError::Disconnected => Waited::Shutdown,
        }),
    };
    match received {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(payload)) => panic::resume_unwind(payload),
        Err(waited) => {
            task.abort();
            Err(waited)
        }
    }
}

/// Park (at most `limit`) until the runtime thread has finished: it drops the sender of
/// `exited` as the last thing it does. `true` if it finished in time.
///
/// Only called where [`may_block`] holds.
pub(crate) fn thread_exit(exited: &mpsc::Receiver<()>, limit: Duration) -> bool {
    debug_assert!(may_block());
    matches!(
        exited.recv_timeout(limit),
        Err(RecvTimeoutError::Disconnected) | Ok(())
    )
}
