//! A blocking facade over the async API, for code that does not run an async runtime.
//!
//! [`Client`], [`Lock`] and [`AutoRefresh`] have the names and semantics of their async
//! counterparts ([`crate::Client`], [`crate::Lock`], [`crate::AutoRefresh`]), without
//! `.await`; so do [`Redlock`] and [`RedlockLock`] ([`crate::redlock`]). They wrap the
//! async types: every lock operation is the async one. [`Client::run_exclusive`] and
//! `Client::run_while_leader` (feature `schedule`) run plain closures under a renewed
//! lock, which check whether the lease is lost between steps (a closure cannot be
//! stopped from outside); the scheduler is async only.
//!
//! ```
//! use std::time::Duration;
//! use leasehold::{FixedInterval, blocking::Client};
//!
//! let client = Client::open("memory://")?; // or "redis://127.0.0.1:6379/"
//! let lock = client.lock(
//!     "nightly-report",
//!     &leasehold::random_value(),
//!     Duration::from_secs(30),                            // expiration
//!     Duration::from_millis(200),                         // timeout per attempt
//!     FixedInterval::new(Duration::from_millis(100), 20), // retry strategy
//! )?;
//! let mut renewal = lock.auto_refresh(
//!     Duration::from_secs(10), // interval
//!     Duration::from_secs(30), // expiration
//!     Duration::from_secs(1),  // timeout per renewal
//!     3,                       // max_retry
//! )?;
//! // Work; renewal goes on in the background, even while this thread sleeps.
//! std::thread::sleep(Duration::from_millis(50));
//! assert!(renewal.try_error().is_none());
//! lock.unlock()?; // also stops the renewal
//! assert!(renewal.error_timeout(Duration::from_secs(1)).is_none());
//! # Ok::<(), leasehold::Error>(())
//! ```
//!
//! # Threading model
//!
//! Each client opened with [`Client::open`] or [`Client::memory`] starts one thread,
//! named `leasehold-runtime` ([`RUNTIME_THREAD_NAME`]), which drives a tokio
//! `current_thread` runtime for as long as the client is in use. The Redis connection,
//! its reconnects and every [`Lock::auto_refresh`] run there, so renewal goes on while
//! the calling thread computes, sleeps or waits on I/O. A blocking method polls its
//! async counterpart on the calling thread with that runtime entered, parking the thread
//! until the runtime thread signals progress: a memory-store call completes without any
//! thread hand-off, a Redis call pays only its round trip's wake-ups. A retry strategy
//! therefore runs on the calling thread.
//!
//! Clones of a client share its thread and connection; locks and auto-refresh handles
//! keep them alive. Dropping the last of them stops the thread: the drop waits (at most
//! about two seconds, normally microseconds) until the thread has exited. Drops never
//! wait inside an async runtime or on the runtime thread itself; the thread then exits
//! on its own.
//!
//! # Panics
//!
//! A method that parks the calling thread panics when called from inside a tokio
//! runtime context (`tokio::runtime::Handle::try_current()` succeeds): in an async task
//! or `block_on`, where parking would stall (or deadlock) that runtime — and, since the
//! context is set there too, inside `tokio::task::spawn_blocking`. Use the async API in
//! async code; call the blocking API from plain threads. Each such method says so under
//! `# Panics`. Methods that never park — [`Client::memory`], [`Lock::auto_refresh`],
//! [`AutoRefresh::try_error`], the accessors, and every `Drop` — work anywhere.

mod client;
mod exclusive;
mod inspect;
#[cfg(feature = "schedule")]
mod leader;
mod lock;
mod redlock;
mod refresh;
mod request;
mod runtime;
mod wait;

pub use client::{Client, ClientBuilder};
#[cfg(feature = "schedule")]
#[cfg_attr(docsrs, doc(cfg(feature = "schedule")))]
pub use leader::Leadership;
pub use lock::Lock;
pub use redlock::{Redlock, RedlockBuilder, RedlockLock};
pub use refresh::AutoRefresh;
pub use request::LockRequest;
pub use runtime::RUNTIME_THREAD_NAME;
