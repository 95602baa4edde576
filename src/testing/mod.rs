//! The published test kit (feature `testing`): prove a store of your own keeps the lock
//! contract, and test your own code that uses a lock, without a server.
//!
//! * [`conformance`]: every case of the conformance suite the built-in stores pass, async
//!   and blocking, called with a factory for your store (or through its macro).
//! * [`faults`]: fault cases driven by hooks your harness provides (restart the store, cut
//!   the client off, lose a reply after the write ran); a case whose hook is absent skips
//!   itself, saying so.
//! * [`history`]: the exclusion and fencing history checker, with its negative control.
//! * [`SimStore`]: a deterministic simulated store on tokio's paused clock, where a test
//!   expires a lease, lets another holder steal a key, partitions the client, or loses a
//!   reply.
//!
//! The crate's own stores run this same kit in its test suite, and so does
//! `examples/custom_store.rs` (a store over a `HashMap`, in `tests/custom_store.rs`).
//!
//! # A wrong store fails, naming the broken promise
//!
//! Take that example store and drop the owner check from its `release` — the classic
//! distributed-lock bug, an unlock that deletes whatever holds the key:
//!
//! ```ignore
//! async fn release(&self, key: &str, val: &str, _timeout: Duration) -> Result<bool> {
//!     let mut s = self.state.lock().unwrap();
//!     Ok(s.leases.remove(key).is_some()) // no `held(key, val)` check
//! }
//! ```
//!
//! The conformance case `unlock_releases_and_a_stale_unlock_is_not_held` lets a lock
//! expire, lets another value take the key, and unlocks through the expired handle. On the
//! wrong store it fails with:
//!
//! ```text
//! unlock by a non-owner succeeded: owner check broken: ()
//! ```
//!
//! (`tests/custom_store.rs` checks exactly this, with the right store as its control.)
//! Each case's docs start with the promise it checks; each assertion names it.

pub mod conformance;
pub mod faults;
pub mod history;
mod sim;

pub use sim::SimStore;
