//! The one place where a caller's thread parks.
//!
//! Every blocking method of the facade polls its async counterpart on the caller's
//! thread, with the client's runtime entered (the connection, timers and renewals live on
//! the runtime thread), and parks the caller here between polls.
//! Parking a thread that drives an async runtime would stall that runtime (and deadlock
//! it when the awaited work needs the very thread that is parked), so every function
//! here that parks first checks for a runtime context and panics instead.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::Duration;

use tokio::runtime::Handle;

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

/// Run `fut` to completion on the calling thread, parking it between polls.
///
/// The runtime behind `rt` is entered while `fut` runs, so everything it needs from a
/// runtime — the Redis connection's task, timers, spawned renewals — lives on the
/// runtime thread, which wakes this thread when there is progress. A call that never
/// waits on I/O (the memory store) completes in its first poll, with no thread hand-off
/// at all; a Redis call costs the two wake-ups of its round trip and nothing more.
///
/// A panic inside `fut` propagates to the caller.
///
/// # Panics
///
/// Inside an async runtime (see [`enter`]).
#[track_caller]
pub(crate) fn block_on<F: Future>(rt: &Handle, what: &str, fut: F) -> F::Output {
    enter(what);
    let _runtime = rt.enter();
    park_on(fut)
}

/// [`block_on`], but for at most `limit`: `None` when it passed first (then `fut` is
/// dropped here).
///
/// # Panics
///
/// Inside an async runtime (see [`enter`]); and a panic inside `fut` propagates.
#[track_caller]
pub(crate) fn timeout<F: Future>(
    rt: &Handle,
    what: &str,
    fut: F,
    limit: Duration,
) -> Option<F::Output> {
    enter(what);
    let _runtime = rt.enter();
    park_on(tokio::time::timeout(limit, fut)).ok()
}

/// Poll `fut` on this thread until it is ready, parking the thread in between.
fn park_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(thread::Thread);

    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }

    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(output) = fut.as_mut().poll(&mut cx) {
            return output;
        }
        // A stale unpark token only costs one more poll.
        thread::park();
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
