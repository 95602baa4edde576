//! Distributed lease locks: a lease on a key in a shared store, held by one process at a
//! time across many machines — to run a scheduled job once, lead a loop, or guard a
//! shared resource.
//!
//! * **Retry-strategy centric.** [`Client::lock`] takes a key, a value unique to the
//!   holder, an expiration, a per-attempt timeout and a [`RetryStrategy`]:
//!   [`FixedInterval`], jittered [`NonFixedInterval`], [`ExponentialBackoff`], [`NoRetry`],
//!   any `Iterator<Item = Duration>`, or your own.
//! * **Owner-checked everything.** Refresh, TTL, unlock and renewal act only while the
//!   key holds the lock's value; nothing ever re-creates a lost lock.
//! * **Fencing tokens.** Every acquisition of a key gets a token greater than all
//!   earlier ones ([`Lock::fencing_token`]), so the resource can reject a stale holder.
//! * **Renewal that reports.** [`Lock::auto_refresh`] renews in the background and sends
//!   the failure that ended it to the business code; [`Lock::lost`] fires before any other
//!   client could have taken the key.
//! * **Stores:** Redis (`redis://`, `rediss://` with the `tls` feature), Redis Sentinel
//!   and Redis Cluster (features `sentinel`, `cluster`), etcd (`etcd://h1:p1,h2:p2`,
//!   feature `etcd`), PostgreSQL lease rows (`postgres://`, feature `postgres`) and an
//!   embedded in-process store (`memory://`) with the same semantics. Bring your own: the
//!   [`store::Store`] trait is public ([`Client::from_store`]), and the `testing` feature
//!   publishes the conformance, fault and history cases every built-in store passes, and
//!   `SimStore`, a simulated store for tests of code that uses a lock. A lock waiting for a key wakes when the holder releases it (hand-off),
//!   within the bounds of its retry strategy; on etcd waiters queue in arrival order, and
//!   expirations count whole seconds (see `Client::open`).
//! * **Operable:** [`ClientBuilder::key_prefix`], [`Client::inspect`], [`Client::list`],
//!   [`Client::force_release`], `tracing` spans and events, metrics (feature `metrics`).
//! * **Redlock** over N independent Redis masters ([`redlock::Redlock`]): a lock that
//!   survives the loss of a minority of nodes, with the module docs saying plainly which
//!   timing assumptions it rests on and why it has no fencing token.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use leasehold::{Client, FixedInterval};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> leasehold::Result<()> {
//! let client = Client::open("memory://").await?; // or "redis://127.0.0.1:6379/"
//! let lock = client
//!     .lock(
//!         "nightly-report",
//!         &leasehold::random_value(),
//!         Duration::from_secs(30),                               // expiration
//!         Duration::from_millis(200),                            // timeout per attempt
//!         FixedInterval::new(Duration::from_millis(100), 20),    // retry strategy
//!     )
//!     .await?;
//! println!("holding {} with fencing token {}", lock.key(), lock.fencing_token());
//! lock.unlock().await?;
//! # Ok(()) }
//! ```
//!
//! The same request with named options instead of positions: [`Client::lock_request`].
//!
//! **Durations** are honoured to the millisecond, the precision every store keeps: a
//! sub-millisecond part is truncated (1.9 ms is 1 ms), and an expiration, interval or
//! timeout under 1 ms or over [`MAX_DURATION`] is an [`Error::InvalidArgument`] before any
//! I/O. A timeout may exceed the expiration (see [`Client::lock`]).
//!
//! # Blocking API
//!
//! For code without an async runtime, [`blocking`] has the same client, lock and
//! renewal without `.await` (all but what takes async closures or your own async
//! connection), driven by a background runtime thread (so renewal keeps going while the
//! calling thread works or sleeps):
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
//!     Duration::from_secs(10), Duration::from_secs(30), Duration::from_secs(1), 3,
//! )?;
//! println!("holding {} with fencing token {}", lock.key(), lock.fencing_token());
//! assert!(renewal.try_error().is_none());
//! lock.unlock()?;
//! # Ok::<(), leasehold::Error>(())
//! ```
//!
//! Its blocking methods panic inside an async runtime instead of stalling it.
//!
//! # What a lease lock promises, and what it cannot
//!
//! A lease lock guarantees that **at most one holder's lease is valid at a time**, as
//! seen by the store, while the store keeps its data and its clock runs steadily. It
//! cannot stop a holder that is *paused* (GC, swap, a stopped VM) from waking up after
//! its lease ran out and acting as if it still held it; it cannot survive a Redis
//! restart without persistence (the key is gone, another client can acquire at once) or
//! a failover to a replica that had not yet received the key. In each of these cases two
//! processes may believe they hold the lock for a while.
//!
//! What closes the gap is **fencing**: pass [`Lock::fencing_token`] to the resource and
//! have it refuse writes carrying a token lower than the highest it has seen. Inside the
//! process, check [`Lock::valid_for`] before a side effect, and abort work when
//! [`Lock::lost`] fires. [Fencing a resource](#fencing-a-resource) below does the resource
//! side for data kept in the same store, and shows the same protocol in SQL.
//!
//! The repository's `RELIABILITY.md` goes through each failure scenario (black-holed
//! links, paused servers, restarts with and without persistence, half-open connections,
//! dead holders) with the figures the test suite measured.
//!
//! # Fencing a resource
//!
//! Resource-side fencing is the part of the protocol that makes a lease lock safe even
//! when a holder is paused past its lease.
//!
//! A lease can run out while its holder is stalled (GC, swap, a stopped VM, a slow
//! network); the holder then wakes and writes as if it still held the lock, while a new
//! holder already does. The resource itself has to refuse the stale holder: every
//! access carries the holder's [fencing token](Lock::fencing_token), and the
//! resource refuses any token lower than the highest it has seen.
//!
//! For a resource stored in the same Redis (or memory store) as the lock,
//! [`Lock::fenced_get`] and [`Lock::fenced_set`] (and the client-level
//! [`Client::fenced_get`] and [`Client::fenced_set`]) do this in one atomic script.
//! **Reads are fenced too**: a read with token *t* raises the resource's highest token to
//! *t*, so a stale holder's write cannot land between a newer holder's read and write
//! (fencing writes alone would lose that update).
//!
//! ## One token, one holder
//!
//! A token is accepted when it is above the highest the resource has seen, or equal to
//! it **from the same holder**. Tokens rise with every acquisition — but a failover to a
//! replica that had not received the last acquisition (and its counter) hands the same
//! token to the next holder. The resource remembers who used its highest token (a SHA-1
//! digest of the holder's lock value, never the value) and refuses the same token from
//! anyone else, so it never accepts two holders under one token; the holder that used it
//! first keeps writing.
//!
//! The [`Lock`] forms know the holder. The client-level forms take a bare token and act
//! as an *anonymous* holder: an equal token is refused to them once a lock used it, and
//! accepted from any other anonymous access — two anonymous writers sharing a token
//! cannot be told apart. Prefer the `Lock` forms.
//!
//! ## The same in SQL
//!
//! Keep the highest token next to the data and make every statement conditional on it:
//!
//! ```sql
//! -- read, and claim the row for this token
//! UPDATE jobs SET fence = $token WHERE id = $id AND fence <= $token RETURNING state;
//! -- write
//! UPDATE jobs SET state = $state, fence = $token WHERE id = $id AND fence <= $token;
//! -- zero rows affected: a newer holder exists; abort
//! ```
//!
//! The highest token of a Redis resource and its holder's digest live at
//! `<resource>:token…` (in the same cluster slot), as `<token>:<digest>`; the resource
//! itself is a plain string, readable with `GET`. Tokens are compared exactly, as decimal
//! text, over the whole `u64` range.
//!
//! # One host at a time
//!
//! [`Client::run_exclusive`] acquires, renews every third of the expiration, aborts the
//! job when the lease is lost and releases when it is done — the scheduled-job case in
//! one call.
//!
//! # Scheduled jobs and leader loops (feature `schedule`)
//!
//! `schedule::Scheduler` runs cron (`"0 3 * * *"`, or 6 fields with seconds first) and
//! fixed-period jobs so that **every tick runs on exactly one host** among all the
//! schedulers sharing a store — even a host whose timer fires late, or that starts after
//! the run finished, does not run the tick again — with the overlap modes *allow*, *skip
//! if still running* and *delay if still running* enforced across hosts, runs aborted
//! when their lease is lost, and every failure reported. `Client::run_while_leader`
//! runs a loop on one node at a time and campaigns again after losing the lease. The
//! `schedule` module documents the design and its limits, and maps the options of other
//! schedulers (key prefix, lock duration, retries, singleton mode) onto it.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `tls` | off | `rediss://` URLs (rustls, ring provider), `etcds://` with `etcd`, `ClientBuilder::tls_root_certificate` |
//! | `backoff` | off | `BackoffAdapter` for strategies of the `backoff` crate (unmaintained, RUSTSEC-2025-0012) |
//! | `schedule` | off | `schedule` (exclusive cron and fixed-period jobs, every tick once across hosts) and `Client::run_while_leader`; adds `croner` and `jiff` |
//! | `cluster` | off | Redis Cluster: `Client::open_cluster`, `Client::from_cluster` |
//! | `sentinel` | off | a sentinel-managed Redis master: `Client::open_sentinel` |
//! | `metrics` | off | counters, histograms and a gauge through the `metrics` facade (names in the README) |
//! | `etcd` | off | the etcd store (`etcd://…`); adds `etcd-client` (tonic, prost), whose build compiles etcd's protobuf files with `protoc` and its well-known types (Debian/Ubuntu: `apt-get install protobuf-compiler libprotobuf-dev`) |
//! | `serde` | off | `Config` (module `config`): the client's settings (store, key prefix, timeouts, retry strategy, renewal) from TOML, YAML or any serde format; adds `serde` and `humantime` |
//! | `postgres` | off | the PostgreSQL store (`postgres://…`, `postgresql://…`): lease rows on the database's clock; adds `tokio-postgres` |
//! | `testing` | off | `testing`: the published test kit (conformance, fault and history cases for a store of your own; `SimStore`) |
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]

mod args;
pub mod blocking;
mod client;
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub mod config;
mod error;
mod exclusive;
/// Empty: fencing is documented at the crate root ([Fencing a resource](crate#fencing-a-resource))
/// and done by [`Lock::fenced_get`] and [`Lock::fenced_set`].
#[deprecated(
    note = "an empty module: see the crate docs' \"Fencing a resource\" and `Lock::fenced_get`/`fenced_set`"
)]
#[doc(hidden)]
pub mod fence {}
mod fencing;
mod hash;
mod inspect;
mod label;
#[cfg(feature = "schedule")]
mod leader;
mod lease;
mod lock;
mod pause;
mod redact;
pub mod redlock;
mod refresh;
mod release;
mod request;
pub mod retry;
#[cfg(feature = "schedule")]
#[cfg_attr(docsrs, doc(cfg(feature = "schedule")))]
pub mod schedule;
pub mod store;
mod telemetry;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
mod validity;
mod wake;

/// The redis-rs crate this crate is built on, re-exported so that
/// [`Client::from_connection`], [`ClientBuilder::notifier`] and [`Error::Redis`] are used
/// with the very same version (a second `redis` in your `Cargo.toml` may resolve to
/// another one, whose types do not match).
pub use redis;

pub use args::MAX_DURATION;
#[allow(deprecated)]
pub use client::{Client, ClientBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT};
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub use config::settings::Config;
pub use error::{Error, Result, StoreError};
pub use inspect::LockInfo;
#[cfg(feature = "schedule")]
#[cfg_attr(docsrs, doc(cfg(feature = "schedule")))]
pub use leader::Leadership;
pub use lock::Lock;
#[allow(deprecated)]
pub use refresh::{AutoRefresh, DEFAULT_MAX_RETRY};
#[allow(deprecated)]
pub use request::{DEFAULT_EXPIRATION, LockRequest};
#[cfg(feature = "backoff")]
#[cfg_attr(docsrs, doc(cfg(feature = "backoff")))]
pub use retry::BackoffAdapter;
pub use retry::{ExponentialBackoff, FixedInterval, NoRetry, NonFixedInterval, RetryStrategy};
pub use validity::drift_allowance;

/// Internals the in-tree benchmarks share with the crate. Not part of the API: no
/// stability promise.
#[doc(hidden)]
pub mod __private {
    /// Redis key names as the store writes them.
    pub mod redis_keys {
        pub use crate::store::redis::keys::Companions;
    }
}

/// A fresh lock value: 128 random bits from the operating system's generator, as 32
/// lowercase hex characters. Use it when the holder has no natural unique value.
///
/// # Panics
///
/// If the operating system's random generator fails (it practically never does).
pub fn random_value() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random generator failed");
    let mut s = String::with_capacity(32);
    for b in bytes {
        use std::fmt::Write;
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_values_are_128_bit_hex_and_distinct() {
        let a = super::random_value();
        let b = super::random_value();
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
    }
}
