//! What a case runs on: [`AsyncStore`], [`BlockingStore`], and [`bounded`].

use std::any::Any;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::{Client, blocking};

/// A store for one async case: a client, and whatever keeps the store alive (a server
/// process the test started, say) until the case ends. A [`Client`] converts into one.
pub struct AsyncStore {
    /// The client the case runs on.
    pub client: Client,
    keep: Option<Box<dyn Any + Send + Sync>>,
}

impl AsyncStore {
    /// A store for a case: `client`, keeping nothing else alive.
    pub fn new(client: Client) -> AsyncStore {
        AsyncStore { client, keep: None }
    }

    /// Keeps `guard` alive until the case ends; it is dropped after the client.
    pub fn keep_alive(mut self, guard: impl Any + Send + Sync) -> AsyncStore {
        self.keep = Some(Box::new(guard));
        self
    }
}

impl From<Client> for AsyncStore {
    fn from(client: Client) -> AsyncStore {
        AsyncStore::new(client)
    }
}

impl fmt::Debug for AsyncStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncStore")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

/// A store for one blocking case: a client, a way to open a second, independent client on
/// the same store (its own runtime thread and connection, the same key prefix), and
/// whatever keeps the store alive.
pub struct BlockingStore {
    /// The client the case runs on (the first `open()`).
    pub client: blocking::Client,
    open: Box<dyn Fn() -> blocking::Client + Send + Sync>,
    keep: Option<Box<dyn Any + Send + Sync>>,
}

impl BlockingStore {
    /// A store whose clients `open` opens: called once now for
    /// [`client`](BlockingStore::client), and again for each
    /// [`second_client`](BlockingStore::second_client). Every client it opens must reach
    /// the same store, under the same key prefix.
    pub fn new(open: impl Fn() -> blocking::Client + Send + Sync + 'static) -> BlockingStore {
        BlockingStore {
            client: open(),
            open: Box::new(open),
            keep: None,
        }
    }

    /// Keeps `guard` alive until the case ends; it is dropped after the clients.
    pub fn keep_alive(mut self, guard: impl Any + Send + Sync) -> BlockingStore {
        self.keep = Some(Box::new(guard));
        self
    }

    /// Another client on the same store.
    pub fn second_client(&self) -> blocking::Client {
        (self.open)()
    }
}

impl fmt::Debug for BlockingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingStore")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

/// Runs `f` on a thread of its own and returns what it returns; a panic inside `f` is
/// resumed here.
///
/// # Panics
///
/// If `f` panics, or does not finish within `limit` (the thread is then left running).
pub fn bounded<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(panic::catch_unwind(AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(value)) => value,
        Ok(Err(payload)) => panic::resume_unwind(payload),
        Err(_) => panic!("the test did not finish within {limit:?}"),
    }
}
