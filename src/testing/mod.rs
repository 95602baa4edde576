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
//! The crate's own stores run this same kit in its test suite.

pub mod conformance;
pub mod faults;
pub mod history;
mod sim;

pub use sim::SimStore;
