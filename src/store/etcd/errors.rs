//! How the store's calls fail, and which failures are tried again within a call's
//! timeout.

use etcd_client as etcd;

use super::STORE;
use crate::error::StoreError;
use crate::{Error, Result};

/// Which failures of an operation may be tried again within its timeout.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Retry {
    /// Any transient failure: the operation is idempotent (acquire, refresh, abort,
    /// reads, fenced access). An acquire is not run again on another member after a
    /// try that may have reached its member without an answer
    /// ([`Members::within_once`](super::members::Members::within_once)).
    Transient,
    /// Only a failure that says the request was never carried out: no connection to
    /// the member could be made, or it was refused for want of a leader (not proposed).
    /// A release or forced release whose answer was lost may have deleted the key, and
    /// trying it again would report `NotHeld` (or delete the next holder).
    Unsent,
}

/// Whether `e` may be tried again under `retry`.
pub(super) fn retryable(e: &StoreError, retry: Retry) -> bool {
    e.is_transient() && (retry == Retry::Transient || unsent(e))
}

/// Whether `e` says the request was never carried out: no connection could be made, or
/// the member refused it for want of a leader.
pub(super) fn unsent(e: &StoreError) -> bool {
    let message = e.to_string();
    message.contains("no leader") || message.contains("connect error")
}

pub(super) fn token(revision: i64) -> Result<u64> {
    u64::try_from(revision)
        .ok()
        .filter(|t| *t > 0)
        .ok_or_else(|| Error::Store(StoreError::new(STORE, false, "no revision in the reply")))
}

/// A write that is not sent again (under [`Retry::Unsent`]) failed in a way that says
/// it may have been carried out: its outcome is unknown.
pub(super) fn indeterminate(e: StoreError) -> Error {
    Error::Indeterminate(Box::new(Error::Store(e)))
}

pub(super) fn transient(message: impl Into<String>) -> Error {
    Error::Store(StoreError::new(STORE, true, message))
}

pub(super) fn unexpected() -> Error {
    Error::Store(StoreError::new(
        STORE,
        false,
        "unexpected transaction reply",
    ))
}

/// An etcd client error as ours: transient when another attempt could succeed (the
/// connection, a leader election, a timeout on the server).
pub(super) fn failure(e: etcd::Error) -> Error {
    // gRPC codes: 1 cancelled, 4 deadline exceeded, 8 resource exhausted, 10 aborted,
    // 14 unavailable (etcd: no leader, leader changed, request timed out).
    let transient = match &e {
        etcd::Error::TransportError(_) | etcd::Error::IoError(_) => true,
        etcd::Error::GRpcStatus(status) => {
            matches!(status.code() as i32, 1 | 4 | 8 | 10 | 14)
                || status.message().contains("leader")
                || status.message().contains("timed out")
                // 2 unknown, made by the client rather than sent by the server: the
                // connection broke mid-call (tonic's "transport error", with the I/O
                // error as its source).
                || (status.code() as i32 == 2 && std::error::Error::source(status).is_some())
        }
        etcd::Error::WatchError(_) | etcd::Error::LeaseKeepAliveError(_) => true,
        _ => false,
    };
    let message = match &e {
        etcd::Error::GRpcStatus(status) => status.message().to_owned(),
        other => other.to_string(),
    };
    Error::Store(StoreError::new(STORE, transient, message).with_source(e))
}
