//! etcd leases: a key's expiration, in whole seconds.

use std::time::Duration;

use etcd_client as etcd;
use etcd_client::LeaseTimeToLiveOptions;
use tokio::time::Instant;

use super::EtcdStore;
use super::errors::{failure, transient};
use super::keys::mix;
use crate::Result;
use crate::store::AttemptId;

use crate::store::ABORT_MEMORY;

impl EtcdStore {
    /// The lease TTL granted for `expiration`, in whole seconds (rounded up, at least the
    /// server's minimum).
    pub(super) fn lease_secs(&self, expiration: Duration) -> i64 {
        let secs = expiration.as_secs() + u64::from(expiration.subsec_nanos() > 0);
        i64::try_from(secs.max(self.min_ttl)).unwrap_or(i64::MAX)
    }

    /// Grant a lease of `ttl` seconds, with id `id` (`0`: the server picks one). A lease
    /// `id` that exists already was granted by an earlier try of the same attempt.
    pub(super) async fn grant_lease(&self, id: i64, ttl: i64) -> Result<i64> {
        let options = etcd::LeaseGrantOptions::new().with_id(id);
        let granted = match self.client().lease_client().grant(ttl, Some(options)).await {
            Ok(granted) => granted,
            Err(etcd::Error::GRpcStatus(status))
                if id != 0 && status.message().contains("lease already exists") =>
            {
                return Ok(id);
            }
            Err(e) => return Err(failure(e)),
        };
        if !granted.error().is_empty() {
            return Err(transient(format!(
                "lease grant refused: {}",
                granted.error()
            )));
        }
        Ok(granted.id())
    }

    /// Revoke `leases` (holding nothing of ours any more) in the background: best
    /// effort, they expire by themselves otherwise.
    pub(super) fn revoke_detached(&self, leases: impl IntoIterator<Item = i64>) {
        let leases: Vec<i64> = leases.into_iter().filter(|l| *l != 0).collect();
        if leases.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let client = self.client().lease_client();
            runtime.spawn(async move {
                let revoke = |lease: i64| {
                    let mut client = client.clone();
                    async move {
                        let _ = tokio::time::timeout(Duration::from_secs(5), client.revoke(lease))
                            .await;
                    }
                };
                futures::future::join_all(leases.into_iter().map(revoke)).await;
            });
        }
    }

    /// The TTL `lease` was granted with, how long it has left (whole seconds, rounded
    /// down), and whether `key` is attached to it; `None` if it is gone.
    pub(super) async fn lease_info(
        &self,
        lease: i64,
        key: Option<&str>,
    ) -> Result<Option<(i64, i64, bool)>> {
        let options = key.map(|_| LeaseTimeToLiveOptions::new().with_keys());
        match self
            .client()
            .lease_client()
            .time_to_live(lease, options)
            .await
        {
            Ok(lived) if lived.ttl() >= 0 => {
                let attached = key.is_some_and(|k| lived.keys().iter().any(|a| a == k.as_bytes()));
                Ok(Some((lived.granted_ttl(), lived.ttl(), attached)))
            }
            Ok(_) => Ok(None),
            Err(e) if lease_not_found(&e) => Ok(None),
            Err(e) => Err(failure(e)),
        }
    }

    /// The lease of the records of aborted attempts: granted for twice
    /// [`ABORT_MEMORY`], used while it has at least that long left.
    pub(super) async fn abort_lease(&self, renew: bool) -> Result<i64> {
        let now = Instant::now();
        if !renew
            && let Some((lease, granted)) = *self.abort_lease.lock()
            && now.duration_since(granted) < ABORT_MEMORY
        {
            return Ok(lease);
        }
        let ttl = i64::try_from(2 * ABORT_MEMORY.as_secs()).unwrap_or(i64::MAX);
        let lease = self.grant_lease(0, ttl).await?;
        *self.abort_lease.lock() = Some((lease, now));
        Ok(lease)
    }
}

/// Keep `lease` alive once (its expiry is now its TTL away); `false` if it is gone.
pub(super) async fn keep_alive(client: &etcd::Client, lease: i64) -> Result<bool> {
    match client.lease_client().keep_alive(lease).await {
        Ok(_) => Ok(true),
        Err(e) if lease_not_found(&e) => Ok(false),
        Err(e) => Err(failure(e)),
    }
}

/// The lease id of an acquire attempt: positive, non-zero, derived from the attempt id
/// (so that a retry of the attempt, and its abort, can name it).
pub(super) fn lease_id(attempt: AttemptId) -> i64 {
    let id = mix(attempt.client ^ mix(attempt.seq)) >> 1;
    id.max(1) as i64
}

pub(super) fn lease_not_found(e: &etcd::Error) -> bool {
    match e {
        etcd::Error::GRpcStatus(status) => status.message().contains("lease not found"),
        etcd::Error::LeaseKeepAliveError(msg) => msg.contains("lease not found"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ids_are_positive_and_differ_per_attempt() {
        let ids: std::collections::HashSet<i64> = (0..1000)
            .map(|seq| lease_id(AttemptId { client: 7, seq }))
            .collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| *id > 0));
    }
}
