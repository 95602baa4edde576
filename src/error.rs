//! The error type of every fallible operation.

use std::fmt;
use std::sync::Arc;

/// Everything that can go wrong when taking, keeping or releasing a lock.
///
/// The variants keep *contention* ([`Error::NotObtained`]) apart from *failure*
/// ([`Error::Redis`], [`Error::Timeout`]): a server that cannot be reached is never
/// reported as "someone else holds the lock".
///
/// Errors never carry lock values or credentials, so they are safe to log.
#[non_exhaustive]
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Every attempt found the key held by another value.
    #[error("lock not obtained: the key is held by another owner")]
    NotObtained,
    /// `refresh`, `unlock`, `ttl` or a renewal found the key gone or owned by another value.
    /// The key was left untouched.
    #[error("lock not held: the key expired or is owned by another value")]
    NotHeld,
    /// Auto-refresh gave up after `max_retry` consecutive renewals that timed out or hit
    /// a dropped connection.
    ///
    /// A unit variant, as the contract has it (code matches `Error::MaxRetryExceeded`):
    /// each failed renewal, with its cause, is a `leasehold.renewal` tracing event.
    #[error("lock renewal failed: maximum number of consecutive retries exceeded")]
    MaxRetryExceeded,
    /// The lease ran out without a confirmed renewal, while renewal was still trying
    /// ([`Client::run_exclusive`](crate::Client::run_exclusive) aborted the job).
    #[error("lock lease expired without a confirmed renewal")]
    LeaseExpired,
    /// A round trip exceeded its timeout and no attempt was left. (A client's first
    /// connection that times out at `open` is an [`Error::Redis`] naming the server;
    /// [`Error::is_timeout`] is true for both.)
    ///
    /// A unit variant, as the contract has it: a timed-out round trip has no cause
    /// beyond "no answer in time". While a server is unreachable the connection keeps
    /// reconnecting underneath, and a call waits for it until its own timeout — so a
    /// `lock` against a server that went down ends in `Timeout`. `open` connects at
    /// once and reports the refusal, naming the server (`host:port`, never a password).
    #[error("lock operation timed out")]
    Timeout,
    /// Bad input, rejected before any I/O. The message names the argument.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A connection or server error of Redis (not contention).
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),
    /// A connection or server error of a store other than Redis, or a reply no store
    /// should give (not contention). [`StoreError::is_transient`] tells whether another
    /// attempt could succeed.
    #[error(transparent)]
    Store(StoreError),
    /// Fewer replicas than `ClientBuilder::min_replicas` asked for acknowledged an acquire
    /// or a refresh in time: a failover could lose it. After an acquire, the lock was
    /// released (owner-checked); after a refresh, renewal ends with this error and the
    /// lease is not extended.
    #[error("lock write reached {acked} of {wanted} replicas in time")]
    NotReplicated {
        /// Replicas that acknowledged.
        acked: u32,
        /// Replicas asked for.
        wanted: u32,
    },
    /// [Redlock](crate::redlock): the nodes did not agree. Not enough of them granted
    /// (acquire), re-armed (refresh) or released (unlock) the key, and not a majority of
    /// them answered that another value holds it — some failed, or the answers split.
    /// Never reported as contention ([`Error::NotObtained`], [`Error::NotHeld`]): those
    /// need a majority saying so.
    ///
    /// Transient ([`Error::is_transient`]) unless the nodes that failed with errors
    /// retrying cannot fix leave fewer than a quorum.
    #[error(
        "redlock: no quorum of {quorum}/{nodes} nodes ({granted} agreed, {held} answered the key is not ours, {failed} failed)",
        quorum = (.granted + .held + .failed) / 2 + 1,
        nodes = .granted + .held + .failed
    )]
    Quorum {
        /// Nodes that granted the key (acquire), re-armed it (refresh), released it
        /// (unlock), held it (ttl) or completed an abort.
        granted: u32,
        /// Nodes that answered that another value holds the key (acquire) or that this
        /// value does not hold it (refresh, unlock, ttl).
        held: u32,
        /// Nodes that failed: timed out (or answered after the lease's validity was
        /// gone), or a connection or server error.
        failed: u32,
        /// Each failed node's index (in the order the nodes were given) and its error.
        errors: Vec<(usize, Error)>,
    },
    /// A write that must not be carried out twice went out, and the connection failed
    /// before its answer came back: it may or may not have been carried out. It was not
    /// sent again — a second run could report [`Error::NotHeld`] for an unlock that
    /// succeeded, or delete a lock taken since. Only an unlock
    /// ([`Lock::unlock`](crate::Lock::unlock)) and a forced release
    /// ([`Client::force_release`](crate::Client::force_release),
    /// [`force_release_if`](crate::Client::force_release_if)) end this way: every other
    /// write is idempotent, and is sent again instead. [`inspect`](crate::Client::inspect)
    /// tells where the key stands now. Carries the failure that cut the answer off.
    ///
    /// Not transient ([`Error::is_transient`]): the same call again is not the safe next
    /// step (a forced release tried again deletes whoever holds the key by then). A write
    /// that timed out is just as undecided, and is [`Error::Timeout`].
    #[error(
        "outcome unknown: the connection failed after the write went out, and it was not sent again: {0}"
    )]
    Indeterminate(#[source] Box<Error>),
    /// A fenced resource refused this fencing token: it has already seen a higher one,
    /// so this holder's lease was superseded. Nothing was read or written.
    #[error("stale fencing token {token}: the resource has already seen token {highest}")]
    Fenced {
        /// The token that was refused.
        token: u64,
        /// The highest token the resource has seen.
        highest: u64,
    },
}

impl Error {
    /// The lock is held by someone else ([`Error::NotObtained`]).
    pub fn is_not_obtained(&self) -> bool {
        matches!(self, Error::NotObtained)
    }

    /// The lock is no longer held by this owner ([`Error::NotHeld`]).
    pub fn is_not_held(&self) -> bool {
        matches!(self, Error::NotHeld)
    }

    /// Renewal gave up after too many consecutive failures ([`Error::MaxRetryExceeded`]).
    pub fn is_max_retry_exceeded(&self) -> bool {
        matches!(self, Error::MaxRetryExceeded)
    }

    /// The lease ran out without a confirmed renewal ([`Error::LeaseExpired`]).
    pub fn is_lease_expired(&self) -> bool {
        matches!(self, Error::LeaseExpired)
    }

    /// A round trip timed out ([`Error::Timeout`]), or a first connection did (an
    /// [`Error::Redis`] I/O error of kind `TimedOut` that names the server).
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::Timeout => true,
            // A first connection that timed out, naming the server.
            Error::Redis(e) => e.is_timeout(),
            _ => false,
        }
    }

    /// The input was rejected before any I/O ([`Error::InvalidArgument`]).
    pub fn is_invalid_argument(&self) -> bool {
        matches!(self, Error::InvalidArgument(_))
    }

    /// Too few replicas acknowledged a write ([`Error::NotReplicated`]).
    pub fn is_not_replicated(&self) -> bool {
        matches!(self, Error::NotReplicated { .. })
    }

    /// [Redlock](crate::redlock)'s nodes did not agree ([`Error::Quorum`]).
    pub fn is_quorum(&self) -> bool {
        matches!(self, Error::Quorum { .. })
    }

    /// A fenced resource refused a stale fencing token ([`Error::Fenced`]).
    pub fn is_fenced(&self) -> bool {
        matches!(self, Error::Fenced { .. })
    }

    /// A write that must not run twice may or may not have run: its answer was lost
    /// ([`Error::Indeterminate`]).
    pub fn is_indeterminate(&self) -> bool {
        matches!(self, Error::Indeterminate(_))
    }

    /// A connection or server error of Redis ([`Error::Redis`]).
    pub fn is_redis(&self) -> bool {
        matches!(self, Error::Redis(_))
    }

    /// A connection or server error of another store ([`Error::Store`]).
    pub fn is_store(&self) -> bool {
        matches!(self, Error::Store(_))
    }

    /// Whether another attempt could succeed where this one failed: contention,
    /// timeouts and connection-level failures (dropped connection, server loading,
    /// failover in progress). Authentication, permission, wrong-type and script
    /// errors are not transient: retrying cannot fix them.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::NotObtained | Error::Timeout => true,
            // Each store classifies its own failures.
            Error::Redis(e) => crate::store::redis::transient::is_transient(e),
            Error::Store(e) => e.is_transient(),
            // Worth another attempt while a quorum could still answer.
            Error::Quorum {
                granted,
                held,
                failed,
                errors,
            } => {
                let nodes = (granted + held + failed) as usize;
                let lost_for_good = errors.iter().filter(|(_, e)| !e.is_transient()).count();
                nodes - lost_for_good > nodes / 2
            }
            _ => false,
        }
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }
}

/// A failure of a store other than Redis: which store, whether another attempt could
/// succeed, what happened, and the underlying error if there is one.
#[derive(Debug, Clone)]
pub struct StoreError {
    store: &'static str,
    transient: bool,
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    /// A failure of `store` (its name: `"etcd"`, `"dynamodb"`, …): `transient` when another
    /// attempt could succeed (a dropped connection, a leader election in progress), not
    /// when it never could (bad credentials, a permission, a protocol error). The message
    /// must not carry a lock value or a password.
    pub fn new(store: &'static str, transient: bool, message: impl Into<String>) -> Self {
        StoreError {
            store,
            transient,
            message: message.into(),
            source: None,
        }
    }

    /// The underlying error, reported by [`std::error::Error::source`].
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// The store that failed: `"etcd"`, `"redis"`, …
    pub fn store(&self) -> &'static str {
        self.store
    }

    /// Whether another attempt could succeed (a connection failure, a leader election in
    /// progress) rather than never (a permission or protocol error).
    pub fn is_transient(&self) -> bool {
        self.transient
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error: {}", self.store, self.message)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

/// Crate-wide result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_send_sync_static() {
        fn assert<T: Send + Sync + 'static>() {}
        assert::<Error>();
    }

    #[test]
    fn helpers_match_their_variant() {
        assert!(Error::NotObtained.is_not_obtained());
        assert!(Error::NotHeld.is_not_held());
        assert!(Error::MaxRetryExceeded.is_max_retry_exceeded());
        assert!(Error::Timeout.is_timeout());
        assert!(Error::invalid("key").is_invalid_argument());
        assert!(
            Error::Fenced {
                token: 1,
                highest: 2
            }
            .is_fenced()
        );
        assert!(!Error::NotHeld.is_not_obtained());
        assert!(Error::NotObtained.is_transient());
        assert!(!Error::NotHeld.is_transient());
        assert!(!Error::invalid("x").is_transient());
        let lost: redis::RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset").into();
        let unknown = Error::Indeterminate(Box::new(Error::Redis(lost)));
        assert!(unknown.is_indeterminate() && !unknown.is_redis());
        assert!(!unknown.is_transient(), "the same call again is not safe");
        assert!(std::error::Error::source(&unknown).is_some());
        assert!(!Error::Timeout.is_indeterminate());
    }

    #[test]
    fn a_quorum_error_is_transient_while_a_quorum_could_still_answer() {
        let quorum = |errors: Vec<Error>| Error::Quorum {
            granted: 1,
            held: 1,
            failed: errors.len() as u32,
            errors: errors.into_iter().enumerate().collect(),
        };
        let auth = || Error::Redis((redis::ErrorKind::AuthenticationFailed, "no").into());
        // 5 nodes, quorum 3.
        assert!(quorum(vec![Error::Timeout, Error::Timeout, Error::Timeout]).is_transient());
        assert!(quorum(vec![auth(), auth(), Error::Timeout]).is_transient());
        assert!(!quorum(vec![auth(), auth(), auth()]).is_transient());
        let e = quorum(vec![Error::Timeout, auth(), Error::Timeout]);
        assert!(e.is_quorum() && !e.is_not_obtained());
        assert_eq!(
            e.to_string(),
            "redlock: no quorum of 3/5 nodes (1 agreed, 1 answered the key is not ours, 3 failed)"
        );
    }

    #[test]
    fn store_errors_say_which_store_and_whether_to_retry() {
        let e = Error::Store(StoreError::new("etcd", true, "no leader"));
        assert!(e.is_store() && e.is_transient());
        assert_eq!(e.to_string(), "etcd error: no leader");
        let e = Error::Store(StoreError::new("etcd", false, "permission denied"));
        assert!(!e.is_transient());
    }
}
