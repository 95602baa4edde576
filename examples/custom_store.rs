//! A lock store of your own: the whole contract over a `HashMap`, in about 150 lines.
//!
//! Implement [`leasehold::store::Store`], open a client on it with
//! [`Client::from_store`], and everything works on it: retry strategies, renewal, fencing,
//! hand-off, the blocking facade. `tests/custom_store.rs` runs the published conformance
//! kit (`leasehold::testing`, feature `testing`) against this very store.
//!
//! ```text
//! cargo run --example custom_store
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use leasehold::store::{Acquire, AttemptId, Fence, Fenced, Inspected, Store, Waiters, Watch};
use leasehold::{Client, Result};
use tokio::time::Instant;

/// One lock: its holder's value, expiry, token, the attempt that created it, and what
/// operators see.
struct Lease {
    value: String,
    deadline: Instant,
    token: u64,
    creator: AttemptId,
    label: String,
    locked_at: SystemTime,
}

#[derive(Default)]
struct State {
    leases: HashMap<String, Lease>,
    /// Per key, the last token handed out: never removed, so tokens rise per key even
    /// after the lease is gone.
    counters: HashMap<String, u64>,
    /// Per key and client, the highest aborted attempt: one record each, however many
    /// attempts were aborted.
    aborted: HashMap<(String, u64), u64>,
    /// Fenced resources: the highest token seen, by whom, and the value.
    resources: HashMap<String, (u64, Option<String>, Option<String>)>,
}

impl State {
    /// The lease on `key` if `val` holds it now (owner check and expiry in one place).
    fn held(&mut self, key: &str, val: &str) -> Option<&mut Lease> {
        let now = Instant::now();
        self.leases
            .get_mut(key)
            .filter(|l| l.value == val && l.deadline > now)
    }
}

/// The store: a `HashMap` behind a mutex, on tokio's clock (so tests on a paused clock
/// work), waking waiters on every release.
#[derive(Clone, Default)]
pub struct HashMapStore {
    state: Arc<Mutex<State>>,
    waiters: Arc<Waiters>,
    /// For the documentation's negative example: release without the owner check.
    pub skip_owner_check: bool,
}

impl Store for HashMapStore {
    fn granularity(&self) -> Duration {
        Duration::from_millis(1)
    }

    async fn acquire(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
        attempt: AttemptId,
        label: &str,
        _timeout: Duration,
    ) -> Result<Acquire> {
        let mut s = self.state.lock().unwrap();
        let aborted = s.aborted.get(&(key.to_owned(), attempt.client));
        if aborted.is_some_and(|&seq| attempt.seq <= seq) {
            return Ok(Acquire::Refused);
        }
        let now = Instant::now();
        if let Some(lease) = s.leases.get_mut(key).filter(|l| l.deadline > now) {
            if lease.value != val {
                return Ok(Acquire::Held(Some(lease.deadline - now)));
            }
            lease.deadline = now + expiration; // the holder re-arms; same token
            return Ok(Acquire::Acquired(lease.token));
        }
        let counter = s.counters.entry(key.to_owned()).or_default();
        *counter += 1;
        let token = *counter;
        let lease = Lease {
            value: val.to_owned(),
            deadline: now + expiration,
            token,
            creator: attempt,
            label: label.to_owned(),
            locked_at: SystemTime::now(),
        };
        s.leases.insert(key.to_owned(), lease);
        Ok(Acquire::Acquired(token))
    }

    async fn refresh(&self, key: &str, val: &str, exp: Duration, _: Duration) -> Result<bool> {
        let mut s = self.state.lock().unwrap();
        Ok(s.held(key, val)
            .map(|l| l.deadline = Instant::now() + exp)
            .is_some())
    }

    async fn release(&self, key: &str, val: &str, _timeout: Duration) -> Result<bool> {
        let mut s = self.state.lock().unwrap();
        let ours = self.skip_owner_check || s.held(key, val).is_some();
        let released = ours && s.leases.remove(key).is_some();
        drop(s);
        if released {
            self.waiters.released(key);
        }
        Ok(released)
    }

    async fn abort(
        &self,
        key: &str,
        val: &str,
        attempts: &[AttemptId],
        undo: bool,
        _timeout: Duration,
    ) -> Result<bool> {
        let mut s = self.state.lock().unwrap();
        for a in attempts {
            let highest = s.aborted.entry((key.to_owned(), a.client)).or_default();
            *highest = (*highest).max(a.seq);
        }
        let created = s
            .held(key, val)
            .is_some_and(|l| attempts.contains(&l.creator));
        let deleted = undo && created && s.leases.remove(key).is_some();
        drop(s);
        if deleted {
            self.waiters.released(key);
        }
        Ok(deleted)
    }

    async fn ttl(&self, key: &str, val: &str, _timeout: Duration) -> Result<Option<Duration>> {
        let mut s = self.state.lock().unwrap();
        Ok(s.held(key, val).map(|l| l.deadline - Instant::now()))
    }

    async fn force_release(&self, key: &str, only: Option<u64>, _: Duration) -> Result<bool> {
        let mut s = self.state.lock().unwrap();
        let now = Instant::now();
        let there = s.leases.get(key).filter(|l| l.deadline > now);
        let matches = there.is_some_and(|l| only.is_none_or(|t| t == l.token));
        let deleted = matches && s.leases.remove(key).is_some();
        drop(s);
        if deleted {
            self.waiters.released(key);
        }
        Ok(deleted)
    }

    async fn inspect(&self, key: &str, _timeout: Duration) -> Result<Option<Inspected>> {
        Ok(self
            .list(key, Duration::ZERO)
            .await?
            .into_iter()
            .find(|i| i.key == key))
    }

    async fn list(&self, prefix: &str, _timeout: Duration) -> Result<Vec<Inspected>> {
        let s = self.state.lock().unwrap();
        let now = Instant::now();
        let mut found: Vec<Inspected> = (s.leases.iter())
            .filter(|(k, l)| k.starts_with(prefix) && l.deadline > now)
            .map(|(k, l)| {
                let mut i = Inspected::new(k, Some(l.deadline - now), l.token, &l.value);
                i.label = (!l.label.is_empty()).then(|| l.label.clone());
                i.locked_at = Some(l.locked_at);
                i
            })
            .collect();
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    async fn fenced(&self, access: &Fence<'_>, _timeout: Duration) -> Result<Fenced> {
        let mut s = self.state.lock().unwrap();
        let holder = access.holder.map(str::to_owned);
        let (highest, by, value) = s.resources.entry(access.resource.to_owned()).or_insert((
            access.token,
            holder.clone(),
            None,
        ));
        if access.token < *highest || (access.token == *highest && *by != holder) {
            return Ok(Err(*highest));
        }
        (*highest, *by) = (access.token, holder);
        Ok(Ok(match access.write {
            Some(v) => value.replace(v.to_owned()).and(None),
            None => value.clone(),
        }))
    }

    fn watch(&self, key: &str) -> Option<Watch> {
        Some(self.waiters.watch(key).0)
    }
}

#[allow(dead_code)]
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let client = Client::from_store(HashMapStore::default());
    let lock = client
        .try_lock("nightly-report", "host-a", Duration::from_secs(30))
        .await?;
    println!("held with fencing token {}", lock.fencing_token());
    let rival = client
        .try_lock("nightly-report", "host-b", Duration::from_secs(30))
        .await;
    println!("a rival: {}", rival.unwrap_err());
    lock.unlock().await?;
    println!("released; the rival now gets token {}", {
        let next = client
            .try_lock("nightly-report", "host-b", Duration::from_secs(30))
            .await?;
        next.fencing_token()
    });
    Ok(())
}
