//! Which Redis errors another attempt could fix: a leaf, so that the crate's error type
//! can ask it without depending on the store.

use redis::RedisError;

/// Whether another attempt could succeed where this one failed: connection-level
/// failures a retry (possibly after a reconnect) can fix, a server that is loading,
/// failing over or asks to try again, and a cluster redirect the store gave up following
/// (`MOVED`/`ASK` while the slot map settles after a failover or a resharding, or to a
/// node the cluster connection has no connection to: a master that died, until a
/// replica takes over).
/// Authentication, permission, wrong-type and script errors are not transient: retrying
/// cannot fix them.
pub(crate) fn is_transient(e: &RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
        return true;
    }
    if e.kind() == ErrorKind::ClusterConnectionNotFound {
        return true;
    }
    matches!(
        e.kind(),
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
                | ServerErrorKind::Moved
                | ServerErrorKind::Ask
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_transient_auth_and_script_errors_are_not() {
        let io: RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset").into();
        assert!(is_transient(&io));
        let auth: RedisError = (redis::ErrorKind::AuthenticationFailed, "bad password").into();
        assert!(!is_transient(&auth));
        let dead_node: RedisError = (redis::ErrorKind::ClusterConnectionNotFound, "gone").into();
        assert!(is_transient(&dead_node));
    }
}
