//! The runtime thread a blocking client owns: a tokio `current_thread` runtime on a
//! thread of its own, until the last handle to it is dropped.

use std::future::Future;
use std::io;
use std::sync::{Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use tokio::sync::oneshot;

use super::wait;
use crate::{Error, Result};

/// Name of the thread that runs a blocking client's runtime.
pub const RUNTIME_THREAD_NAME: &str = "leasehold-runtime";

/// How long the runtime thread waits, once told to stop, for work on tokio's blocking
/// pool (a DNS lookup) before it exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// How long dropping the last handle waits for the runtime thread to exit; after that
/// the thread is left to finish on its own. Comfortably above [`SHUTDOWN_GRACE`].
const JOIN_LIMIT: Duration = Duration::from_secs(2);

/// The runtime thread could not be started (the OS refused a thread): not a store
/// failure, but reported the same way.
pub(crate) fn runtime_failed(e: io::Error) -> Error {
    Error::Store(
        crate::StoreError::new(
            "runtime",
            false,
            "cannot start the leasehold-runtime thread",
        )
        .with_source(e),
    )
}

/// A tokio `current_thread` runtime running on its own named thread until the last
/// handle to it is dropped. All of the facade's async work is spawned onto it.
pub(crate) struct Runtime {
    handle: tokio::runtime::Handle,
    /// Dropping (or firing) it lets the thread's `block_on` return.
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    /// Disconnected once the thread has shut the runtime down.
    exited: Mutex<mpsc::Receiver<()>>,
}

impl Runtime {
    /// Build the runtime here (nothing blocks) and hand it to a new thread that drives it.
    pub(crate) fn start() -> io::Result<Runtime> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (exited_tx, exited_rx) = mpsc::channel::<()>();
        let (rt_tx, rt_rx) = mpsc::sync_channel::<tokio::runtime::Runtime>(1);
        let thread = thread::Builder::new()
            .name(RUNTIME_THREAD_NAME.to_owned())
            .spawn(move || {
                // Declared first, dropped last: signals that the runtime is gone.
                let _exited = exited_tx;
                let Ok(rt) = rt_rx.recv() else { return };
                rt.block_on(async {
                    // Ok(()) or Err(RecvError): either way, every handle is gone.
                    let _ = stop_rx.await;
                });
                // Tasks still on the runtime (renewals, reconnects) are dropped here.
                rt.shutdown_timeout(SHUTDOWN_GRACE);
            });
        let thread = match thread {
            Ok(thread) => thread,
            Err(e) => {
                // Dropping a runtime may block; this never does.
                rt.shutdown_background();
                return Err(e);
            }
        };
        rt_tx
            .send(rt)
            .expect("the runtime thread waits for its runtime");
        Ok(Runtime {
            handle,
            stop: Some(stop_tx),
            thread: Some(thread),
            exited: Mutex::new(exited_rx),
        })
    }

    /// The runtime's handle, for spawning without parking.
    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// Run `fut` with this runtime entered and park until its result arrives.
    #[track_caller]
    pub(crate) fn run<T, F>(&self, what: &str, fut: F) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        wait::block_on(&self.handle, what, fut)
    }
}

impl Drop for Runtime {
    /// Tell the thread to stop, then wait (bounded) until it has exited, unless this
    /// thread may not block: inside an async runtime, or on the runtime thread itself.
    /// Then the thread is left to exit on its own, which it does promptly.
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(thread) = self.thread.take() else {
            return;
        };
        if thread.thread().id() == thread::current().id() || !wait::may_block() {
            return;
        }
        let exited = self.exited.get_mut().unwrap_or_else(|e| e.into_inner());
        if wait::thread_exit(exited, JOIN_LIMIT) {
            // The thread has done everything but return: joining is immediate.
            let _ = thread.join();
        }
    }
}
