//! The values that cross the store interface: an attempt's identity, an acquire's
//! outcome, a lock as an operator sees it, and a fenced access.

use std::fmt;
use std::time::{Duration, SystemTime};

/// The identity of one acquire attempt: the client that sent it and its sequence number
/// there. Unique while the client lives (the client id is random); a client's attempts on
/// a key are numbered in the order they were sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttemptId {
    /// The client that sent the attempt (random per client).
    pub client: u64,
    /// The attempt's number in that client, rising.
    pub seq: u64,
}

impl fmt::Display for AttemptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}:{}", self.client, self.seq)
    }
}

/// Outcome of one acquire attempt that reached the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquire {
    /// The key now holds our value; the fencing token of this acquisition (for a re-arm
    /// by the value already holding it: the token it was acquired with).
    Acquired(u64),
    /// Another value holds the key, for this much longer if the store said (a waiter
    /// whose store does not notify expiries wakes for it by the clock).
    Held(Option<Duration>),
    /// An attempt of this client numbered up to this one was aborted before this one
    /// reached the store ([`Store::abort`](super::Store::abort)): it did nothing. The
    /// client tries again with a higher number.
    Refused,
}

/// A lock as an operator sees it ([`Store::inspect`](super::Store::inspect),
/// [`Store::list`](super::Store::list)): never the holder's value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Inspected {
    /// The key, as the store knows it (with the client's key prefix).
    pub key: String,
    /// Time left; `None`: no expiry (a key set by hand).
    pub ttl: Option<Duration>,
    /// The fencing token of the current acquisition.
    pub token: u64,
    /// A digest of the holder's value ([`holder_digest`](super::holder_digest)): the value
    /// itself is a secret.
    pub holder: String,
    /// The holder's label, if its client gave one.
    pub label: Option<String>,
    /// When the current acquisition was taken (the store's clock where it has one), if
    /// recorded.
    pub locked_at: Option<SystemTime>,
}

impl Inspected {
    /// A lock on `key` with fencing token `token`, held by `value` (only its digest is
    /// kept), that expires in `ttl`; no label or acquisition time (set the fields).
    pub fn new(key: impl Into<String>, ttl: Option<Duration>, token: u64, value: &str) -> Self {
        Inspected {
            key: key.into(),
            ttl,
            token,
            holder: super::holder_digest(value),
            label: None,
            locked_at: None,
        }
    }
}

/// One fenced access to a resource ([`Store::fenced`](super::Store::fenced)): accepted
/// when `token` is above the highest token the resource has seen, or equal to it and from
/// the same `holder` (a different holder under an equal token — possible after a
/// failover lost the counter — is refused). An accepted token becomes the highest.
/// `write: Some(v)` sets the resource's value; `None` reads it.
///
/// Its `Debug` shows the resource and the token, never the holder's value or the value written.
#[derive(Clone, Copy)]
#[non_exhaustive]
pub struct Fence<'a> {
    /// The resource's name, as the store knows it.
    pub resource: &'a str,
    /// The fencing token presented.
    pub token: u64,
    /// The lock value of the holder; `None` for an anonymous (client-level) access.
    pub holder: Option<&'a str>,
    /// The value to write; `None`: a read.
    pub write: Option<&'a str>,
}

impl<'a> Fence<'a> {
    /// A read (`write: None`) or write of `resource` under `token`, by `holder`.
    pub fn new(
        resource: &'a str,
        token: u64,
        holder: Option<&'a str>,
        write: Option<&'a str>,
    ) -> Self {
        Fence {
            resource,
            token,
            holder,
            write,
        }
    }
}

/// Outcome of a fenced access: `Ok` with the resource's value (for a read; `None`: never
/// written, or a write), or `Err` with the highest token seen, which made this access
/// stale.
pub type Fenced = std::result::Result<Option<String>, u64>;
