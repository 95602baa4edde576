//! etcd v3 (`etcd://h1:p1[,h2:p2…]`, feature `etcd`): consensus-backed leases, the
//! create revision as the fencing token, and a fair wait in line behind the holder.
//!
//! # Keys
//!
//! A lock `K` is one etcd key per contender under `K`: `K \0 H(val)`, where `H` is a
//! 64-bit hash of the lock value in 16 hex digits, holding the value itself. The holder
//! is the contender with the **lowest create revision**; the others wait in line, in the
//! order they arrived (etcd's own mutex). Lock keys may not contain `\0`
//! ([`crate::Error::InvalidArgument`]): it ends the lock name.
//!
//! * **Token:** the holder's key's create revision — cluster-wide, strictly rising, never
//!   reused (it survives deletion, compaction and leader changes). A contender's create
//!   revision is fixed when it gets in line; the line is served in create-revision
//!   order, so tokens rise in grant order.
//! * **Owner checks:** refresh, ttl and release compare the value *and* the create
//!   revision (the lock's token) in a transaction: a stale handle never acts on a newer
//!   key of the same value.
//! * **Idempotent acquire:** the same value maps to the same contender key, so an
//!   attempt that finds its own key keeps its token (and re-arms it).
//!
//! # Leases
//!
//! Every key hangs on an etcd lease of the lock's expiration in whole seconds (rounded
//! up, at least the server's minimum, which [`EtcdStore::open`] measures). An acquire
//! attempt grants a lease whose id is derived from the attempt's id, then creates its key
//! on it. An attempt is therefore revocable by id: [`Store::abort`] revokes the leases of
//! the attempts it names. A late transaction of an aborted attempt then fails (its lease
//! is gone) and one that landed first is deleted with the lease: nothing is left behind.
//! Refresh is a keep-alive of the key's lease (a new lease when the expiration changes).
//!
//! # The wait
//!
//! A miss leaves the attempt's key in line ([`Store::queues`]). A waiting `lock` call
//! watches its predecessor — the contender just before it — for deletion (released,
//! expired or withdrawn), from the revision its attempt saw, so no deletion is missed; it
//! is woken (its [`Watch`]) and its next attempt finds it the holder or names the next
//! predecessor. One deletion wakes one waiter: no herd. While it waits, its lease is kept
//! alive. When its retry strategy runs out, the call withdraws its key (the abort of its
//! attempts) before it returns [`crate::Error::NotObtained`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client as etcd;
use etcd_client::{
    Compare, CompareOp, DeleteOptions, EventType, GetOptions, KeyValue, PutOptions, SortOrder,
    SortTarget, Txn, TxnOp, TxnOpResponse, WatchFilterType, WatchOptions,
};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::{Acquire, AttemptId, Fence, Fenced, Store};
use crate::error::StoreError;
use crate::wake::{Waiters, Watch};
use crate::{Error, Result};

/// The URL scheme of this store.
pub(crate) const SCHEME: &str = "etcd://";

const STORE: &str = "etcd";

/// Ends a lock name; what follows is the contender's hash.
const SEP: char = '\0';

/// Ends a fenced resource's name in its record's key (outside every lock's contender
/// range, which is `K\0 .. K\x01`).
const RESOURCE_SUFFIX: &str = "\u{1}token";

/// A waiter whose watch failed tries again after this long (and retries an attempt
/// meanwhile, under its strategy).
const REWATCH_PAUSE: Duration = Duration::from_millis(100);

/// How to open an etcd store.
#[derive(Clone)]
pub(crate) struct Options {
    pub(crate) connect_timeout: Duration,
}

pub(crate) struct EtcdStore {
    /// Boxed: the client is a few KiB, and every `Backend` would be as large.
    client: Box<etcd::Client>,
    /// The server's minimum lease TTL, in seconds.
    min_ttl: u64,
    /// The waiters of this client, by contender key.
    waiters: Arc<Waiters>,
    /// This client's places in line, by contender key: what a waiting call watches.
    places: Arc<Mutex<HashMap<String, watch::Sender<Place>>>>,
    /// The watching task of each contender key that has waiters.
    watching: Arc<Mutex<HashMap<String, AbortHandle>>>,
}

/// A place in line: the lease of our key, and the contender before it as of `revision`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Place {
    lease: i64,
    ttl: i64,
    predecessor: Vec<u8>,
    revision: i64,
}

impl EtcdStore {
    /// Connect to the members named in `url` (`etcd://h1:p1[,h2:p2…]`) and measure the
    /// server's minimum lease TTL (a lease of 1 s is granted and revoked). Also returns
    /// where it points.
    pub(crate) async fn open(url: &str, options: &Options) -> Result<(EtcdStore, String)> {
        let endpoints = endpoints(url)?;
        let connect = etcd::ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout)
            // A dead member is noticed by HTTP/2 pings, not only by the next request.
            .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2))
            // A member cut off from its leader refuses at once instead of stalling.
            .with_require_leader(true);
        let client = tokio::time::timeout(
            options.connect_timeout,
            etcd::Client::connect(&endpoints, Some(connect)),
        )
        .await
        .map_err(|_| Error::Timeout)?
        .map_err(failure)?;
        // Any member that answers will do: a dead one is tried again on another.
        let min_ttl = within(options.connect_timeout, Retry::Transient, || {
            let mut lease = client.lease_client();
            async move {
                let granted = lease.grant(1, None).await.map_err(failure)?;
                let _ = lease.revoke(granted.id()).await;
                Ok(granted.ttl())
            }
        })
        .await?;
        let watching: Arc<Mutex<HashMap<String, AbortHandle>>> = Arc::default();
        let waiters = Arc::new(Waiters::with_idle({
            let watching = Arc::clone(&watching);
            move |contender| {
                if let Some(task) = watching.lock().remove(contender) {
                    task.abort();
                }
            }
        }));
        let store = EtcdStore {
            client: Box::new(client),
            min_ttl: u64::try_from(min_ttl).unwrap_or(1).max(1),
            waiters,
            places: Arc::default(),
            watching,
        };
        Ok((store, format!("etcd {}", endpoints.join(","))))
    }

    /// The lease TTL granted for `expiration`, in whole seconds.
    fn ttl(&self, expiration: Duration) -> i64 {
        let secs = expiration.as_secs() + u64::from(expiration.subsec_nanos() > 0);
        i64::try_from(secs.max(self.min_ttl)).unwrap_or(i64::MAX)
    }

    async fn grant_lease(&self, id: i64, ttl: i64) -> Result<i64> {
        let options = etcd::LeaseGrantOptions::new().with_id(id);
        let granted = match self.client.lease_client().grant(ttl, Some(options)).await {
            Ok(granted) => granted,
            // An earlier try of this attempt was granted: the lease is ours.
            Err(etcd::Error::GRpcStatus(status))
                if id != 0 && status.message().contains("lease already exists") =>
            {
                return Ok(id);
            }
            Err(e) => return Err(failure(e)),
        };
        if !granted.error().is_empty() {
            return Err(Error::Store(StoreError::new(
                STORE,
                true,
                format!("lease grant refused: {}", granted.error()),
            )));
        }
        Ok(granted.id())
    }

    /// Revoke `lease`; `Ok` if it is gone (also when it was gone already).
    async fn revoke(&self, lease: i64) -> Result<()> {
        match self.client.lease_client().revoke(lease).await {
            Ok(_) => Ok(()),
            Err(e) if lease_not_found(&e) => Ok(()),
            Err(e) => Err(failure(e)),
        }
    }

    /// Revoke a lease that holds no key of ours, in the background (best effort: it
    /// expires by itself otherwise).
    fn revoke_detached(&self, lease: i64) {
        if lease == 0 {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let mut leases = self.client.lease_client();
            runtime.spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), leases.revoke(lease)).await;
            });
        }
    }

    /// Keep `lease` alive once; `false` if it is gone.
    async fn keep_alive(&self, lease: i64) -> Result<bool> {
        keep_alive(&self.client, lease).await
    }

    /// The TTL `lease` was granted with, and how long it has left (whole seconds, rounded
    /// down); `None` if it is gone.
    async fn lease_ttl(&self, lease: i64) -> Result<Option<(i64, i64)>> {
        match self.client.lease_client().time_to_live(lease, None).await {
            Ok(lived) if lived.ttl() >= 0 => Ok(Some((lived.granted_ttl(), lived.ttl()))),
            Ok(_) => Ok(None),
            Err(e) if lease_not_found(&e) => Ok(None),
            Err(e) => Err(failure(e)),
        }
    }

    /// Re-arm `lease` to a full `ttl` if that is what it was granted with; `false` if it
    /// was granted another TTL or is gone (the key needs a new lease). `known`: this
    /// client granted it with that TTL.
    async fn rearm(&self, lease: i64, ttl: i64, known: bool) -> Result<bool> {
        if lease == 0 {
            return Ok(false);
        }
        if !known && !matches!(self.lease_ttl(lease).await?, Some((granted, _)) if granted == ttl) {
            return Ok(false);
        }
        self.keep_alive(lease).await
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let mut got = self
            .client
            .kv_client()
            .get(key, None)
            .await
            .map_err(failure)?;
        Ok(got.take_kvs().into_iter().next())
    }

    /// Get in line for `key` with `val` on `lease` (or find the place `val` has): one
    /// transaction.
    async fn place(&self, key: &str, contender: &str, val: &str, lease: i64) -> Result<Placed> {
        let (start, end) = range(key);
        let txn = Txn::new()
            .when([Compare::create_revision(contender, CompareOp::Equal, 0)])
            .and_then([
                TxnOp::put(contender, val, Some(PutOptions::new().with_lease(lease))),
                // Ours (the newest) and the one before it, if any.
                TxnOp::get(
                    start.clone(),
                    Some(
                        GetOptions::new()
                            .with_range(end.clone())
                            .with_sort(SortTarget::Create, SortOrder::Descend)
                            .with_limit(2)
                            .with_keys_only(),
                    ),
                ),
            ])
            .or_else([
                TxnOp::get(contender, None),
                // The whole line, in order.
                TxnOp::get(
                    start,
                    Some(
                        GetOptions::new()
                            .with_range(end)
                            .with_sort(SortTarget::Create, SortOrder::Ascend)
                            .with_keys_only(),
                    ),
                ),
            ]);
        let reply = self.client.kv_client().txn(txn).await.map_err(failure)?;
        let revision = reply.header().map_or(0, |h| h.revision());
        let mut gets = reply.op_responses().into_iter().filter_map(|r| match r {
            TxnOpResponse::Get(mut got) => Some(got.take_kvs()),
            _ => None,
        });
        if reply.succeeded() {
            let line = gets.next().unwrap_or_default();
            return Ok(Placed::Created {
                revision,
                predecessor: line.get(1).map(|kv| kv.key().to_vec()),
            });
        }
        Ok(found(reply, contender, val).unwrap_or(Placed::Other))
    }

    /// Our place in line if `val`'s key is there: a read-only transaction (served
    /// without a Raft write). `None`: not there (or another value's).
    async fn look(&self, key: &str, contender: &str, val: &str) -> Result<Option<Placed>> {
        let (start, end) = range(key);
        let txn = Txn::new().and_then([
            TxnOp::get(contender, None),
            TxnOp::get(
                start,
                Some(
                    GetOptions::new()
                        .with_range(end)
                        .with_sort(SortTarget::Create, SortOrder::Ascend)
                        .with_keys_only(),
                ),
            ),
        ]);
        let reply = self.client.kv_client().txn(txn).await.map_err(failure)?;
        Ok(found(reply, contender, val))
    }

    /// Move `val`'s key (created at `created`) onto `lease`; `false` if the key no longer
    /// holds `val` at that revision.
    async fn reattach(&self, contender: &str, val: &str, created: i64, lease: i64) -> Result<bool> {
        let txn = Txn::new()
            .when([
                Compare::value(contender, CompareOp::Equal, val),
                Compare::create_revision(contender, CompareOp::Equal, created),
            ])
            .and_then([TxnOp::put(
                contender,
                val,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let reply = self.client.kv_client().txn(txn).await.map_err(failure)?;
        Ok(reply.succeeded())
    }

    fn remember(&self, contender: &str, place: Place) {
        let mut places = self.places.lock();
        match places.get(contender) {
            Some(sender) => {
                sender.send_replace(place);
            }
            None => {
                places.insert(contender.to_owned(), watch::channel(place).0);
            }
        }
    }

    fn forget(&self, contender: &str) -> Option<Place> {
        let sender = self.places.lock().remove(contender)?;
        let place = sender.borrow().clone();
        Some(place)
    }

    async fn acquire_now(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
        attempt: AttemptId,
    ) -> Result<Acquire> {
        check_name("key", key)?;
        let ttl = self.ttl(expiration);
        let contender = contender(key, val);
        // A place in line this client already has for `val`: its lease, without a grant.
        let known = self
            .places
            .lock()
            .get(&contender)
            .map(|p| p.borrow().clone())
            .filter(|p| p.ttl == ttl && p.lease != 0)
            .map(|p| p.lease);
        let (mut lease, mut granted) = match known {
            Some(lease) => (lease, false),
            None => (self.grant_lease(lease_id(attempt), ttl).await?, true),
        };
        // In line already: a read (no Raft write) tells whether our turn came, and our
        // lease is re-armed at the same time (sent after this attempt started: if it is
        // our turn, the key is ours for a full TTL from now; if not, it keeps our place).
        let (looked, rearmed) = match granted {
            true => (None, false),
            false => {
                let (looked, kept) =
                    futures::future::join(self.look(key, &contender, val), self.keep_alive(lease))
                        .await;
                (looked?, kept?)
            }
        };
        let placed = match looked {
            Some(placed) => placed,
            None => match self.place(key, &contender, val, lease).await {
                // The remembered lease ran out: get in line afresh.
                Err(Error::Store(e)) if !granted && e.to_string().contains("lease not found") => {
                    self.forget(&contender);
                    lease = self.grant_lease(lease_id(attempt), ttl).await?;
                    granted = true;
                    self.place(key, &contender, val, lease).await?
                }
                placed => placed?,
            },
        };
        match placed {
            Placed::Created {
                revision,
                predecessor: None,
            } => {
                self.forget(&contender);
                // On our place's lease (kept alive while waiting): arm its full TTL now.
                if !granted && !self.keep_alive(lease).await? {
                    return Err(Error::Store(StoreError::new(
                        STORE,
                        true,
                        "the lease ran out during the attempt",
                    )));
                }
                Ok(Acquire::Acquired(token(revision)?))
            }
            Placed::Created {
                revision,
                predecessor: Some(predecessor),
            } => {
                self.remember(
                    &contender,
                    Place {
                        lease,
                        ttl,
                        predecessor,
                        revision,
                    },
                );
                Ok(Acquire::Held(None))
            }
            Placed::Other => {
                if granted {
                    self.revoke_detached(lease);
                }
                Ok(Acquire::Held(None))
            }
            Placed::Found {
                revision,
                predecessor: Some(predecessor),
                ours,
            } => {
                if granted && ours.lease() != lease {
                    self.revoke_detached(lease);
                }
                self.remember(
                    &contender,
                    Place {
                        lease: ours.lease(),
                        ttl,
                        predecessor,
                        revision,
                    },
                );
                Ok(Acquire::Held(None))
            }
            Placed::Found {
                predecessor: None,
                ours,
                ..
            } => {
                // Ours, and first in line: re-arm it to this attempt's expiration.
                self.forget(&contender);
                let created = ours.create_revision();
                // A lease of ours (this attempt's, or our place's) has the TTL we gave it.
                let known = ours.lease() == lease;
                if (known && rearmed) || self.rearm(ours.lease(), ttl, known).await? {
                    if granted && ours.lease() != lease {
                        self.revoke_detached(lease);
                    }
                    return Ok(Acquire::Acquired(token(created)?));
                }
                if !granted || ours.lease() == lease {
                    lease = self.grant_lease(lease_id(attempt), ttl).await?;
                }
                if !self.reattach(&contender, val, created, lease).await? {
                    self.revoke_detached(lease);
                    return Err(Error::Store(StoreError::new(
                        STORE,
                        true,
                        "the key changed during the attempt",
                    )));
                }
                self.revoke_detached(ours.lease());
                Ok(Acquire::Acquired(token(created)?))
            }
        }
    }

    /// `val`'s key of `key` if it holds `val` (and was created at `token`, if given).
    async fn held(&self, key: &str, val: &str, token: Option<u64>) -> Result<Option<KeyValue>> {
        let kv = self.get(&contender(key, val)).await?;
        Ok(kv.filter(|kv| {
            kv.value() == val.as_bytes()
                && token.is_none_or(|t| u64::try_from(kv.create_revision()) == Ok(t))
        }))
    }

    async fn refresh_now(
        &self,
        key: &str,
        val: &str,
        token: Option<u64>,
        expiration: Duration,
    ) -> Result<bool> {
        let ttl = self.ttl(expiration);
        let contender = contender(key, val);
        for _ in 0..3 {
            let Some(kv) = self.held(key, val, token).await? else {
                return Ok(false);
            };
            if self.rearm(kv.lease(), ttl, false).await? {
                // Kept alive, and the key is still on that lease: held until the new
                // deadline at least.
                let again = self.held(key, val, token).await?;
                match again {
                    Some(now) if now.lease() == kv.lease() => return Ok(true),
                    Some(_) => continue, // moved to another lease meanwhile
                    None => return Ok(false),
                }
            }
            // Another expiration (or a lease that is going): a new lease for the key.
            let lease = self.grant_lease(0, ttl).await?;
            if self
                .reattach(&contender, val, kv.create_revision(), lease)
                .await?
            {
                self.revoke_detached(kv.lease());
                return Ok(true);
            }
            self.revoke_detached(lease);
        }
        Ok(false)
    }

    async fn release_now(&self, key: &str, val: &str, token: Option<u64>) -> Result<bool> {
        let contender = contender(key, val);
        let mut when = vec![Compare::value(contender.as_str(), CompareOp::Equal, val)];
        if let Some(token) = token {
            when.push(Compare::create_revision(
                contender.as_str(),
                CompareOp::Equal,
                i64::try_from(token).unwrap_or(i64::MAX),
            ));
        }
        let txn = Txn::new().when(when).and_then([TxnOp::delete(
            contender.as_str(),
            Some(DeleteOptions::new().with_prev_key()),
        )]);
        let reply = self.client.kv_client().txn(txn).await.map_err(failure)?;
        if !reply.succeeded() {
            return Ok(false);
        }
        for op in reply.op_responses() {
            if let TxnOpResponse::Delete(deleted) = op {
                for kv in deleted.prev_kvs() {
                    self.revoke_detached(kv.lease());
                }
            }
        }
        Ok(true)
    }

    async fn pttl_now(&self, key: &str, val: &str, token: Option<u64>) -> Result<Option<Duration>> {
        let Some(kv) = self.held(key, val, token).await? else {
            return Ok(None);
        };
        if kv.lease() == 0 {
            return Ok(Some(Duration::MAX));
        }
        Ok(self
            .lease_ttl(kv.lease())
            .await?
            .map(|(_, left)| Duration::from_secs(left.max(0) as u64)))
    }

    async fn abort_now(
        &self,
        key: &str,
        val: &str,
        attempts: &[AttemptId],
        release: bool,
    ) -> Result<()> {
        let contender = contender(key, val);
        let current = self.get(&contender).await?;
        let ours = current.filter(|kv| kv.value() == val.as_bytes());
        // Without `release`, the key this client holds stays on its lease.
        let keep = ours.as_ref().filter(|_| !release).map(KeyValue::lease);
        let mut leases: Vec<i64> = attempts.iter().map(|a| lease_id(*a)).collect();
        if let Some(place) = self.forget(&contender) {
            leases.push(place.lease);
        }
        leases.retain(|l| Some(*l) != keep);
        leases.sort_unstable();
        leases.dedup();
        let revoked = futures::future::join_all(leases.iter().map(|l| self.revoke(*l))).await;
        revoked.into_iter().collect::<Result<Vec<()>>>()?;
        if let Some(kv) = ours.filter(|kv| release && !leases.contains(&kv.lease())) {
            let token = u64::try_from(kv.create_revision()).ok();
            self.release_now(key, val, token).await?;
        }
        Ok(())
    }

    async fn fenced_now(&self, access: &Fence<'_>) -> Result<Fenced> {
        check_name("resource", access.resource)?;
        let record_key = format!("{}{RESOURCE_SUFFIX}", access.resource);
        // The holder's digest, not its value: a lock value never rests in clear here.
        let holder = access
            .holder
            .map(|h| format!("{:016x}", value_hash(h.as_bytes())));
        loop {
            let current = self.get(&record_key).await?;
            let (record, mod_revision) = match &current {
                Some(kv) => (Record::decode(kv.value())?, kv.mod_revision()),
                None => (
                    Record {
                        highest: access.token,
                        holder: holder.clone(),
                        value: None,
                    },
                    0,
                ),
            };
            let same_holder = record.holder == holder;
            if access.token < record.highest || (access.token == record.highest && !same_holder) {
                return Ok(Err(record.highest));
            }
            let unchanged = current.is_some() && access.token == record.highest;
            if unchanged && access.write.is_none() {
                return Ok(Ok(record.value));
            }
            let next = Record {
                highest: access.token,
                holder: holder.clone(),
                value: match access.write {
                    Some(v) => Some(v.to_owned()),
                    None => record.value.clone(),
                },
            };
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    record_key.as_str(),
                    CompareOp::Equal,
                    mod_revision,
                )])
                .and_then([TxnOp::put(record_key.as_str(), next.encode(), None)]);
            let reply = self.client.kv_client().txn(txn).await.map_err(failure)?;
            if reply.succeeded() {
                return Ok(Ok(match access.write {
                    Some(_) => None,
                    None => next.value,
                }));
            }
            // Changed meanwhile: decide again on what is there now.
        }
    }

    /// Watch the predecessor of `contender` while it has waiters, and keep its lease
    /// alive.
    fn spawn_watcher(&self, contender: &str, place: watch::Receiver<Place>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let task = runtime.spawn(watch_line(
            (*self.client).clone(),
            Arc::clone(&self.waiters),
            contender.to_owned(),
            place,
        ));
        if let Some(previous) = self
            .watching
            .lock()
            .insert(contender.to_owned(), task.abort_handle())
        {
            previous.abort();
        }
    }
}

/// Our key and our place in line, from a transaction whose gets are our key and the
/// whole line in create-revision order; `None` if our key is not there with `val`.
fn found(reply: etcd::TxnResponse, contender: &str, val: &str) -> Option<Placed> {
    let revision = reply.header().map_or(0, |h| h.revision());
    let mut gets = reply.op_responses().into_iter().filter_map(|r| match r {
        TxnOpResponse::Get(mut got) => Some(got.take_kvs()),
        _ => None,
    });
    let ours = gets.next().unwrap_or_default().into_iter().next();
    let line = gets.next().unwrap_or_default();
    let ours = ours.filter(|kv| kv.value() == val.as_bytes())?;
    let at = line
        .iter()
        .position(|kv| kv.key() == contender.as_bytes())
        .unwrap_or(0);
    Some(Placed::Found {
        revision,
        predecessor: at.checked_sub(1).map(|i| line[i].key().to_vec()),
        ours,
    })
}

/// What one placing transaction found.
enum Placed {
    /// Our key was created at `revision`, behind `predecessor` if there is one.
    Created {
        revision: i64,
        predecessor: Option<Vec<u8>>,
    },
    /// Our key was there already, behind `predecessor` if there is one.
    Found {
        revision: i64,
        predecessor: Option<Vec<u8>>,
        ours: KeyValue,
    },
    /// The contender key holds another value (a hash collision): never ours.
    Other,
}

/// A waiter's watch: wake the waiter when its predecessor is deleted (or the watch
/// failed: then it retries under its strategy and the watch is set up again), and keep
/// its lease alive meanwhile. Ends when aborted (the last waiter left) or the place is
/// forgotten (the call acquired or withdrew).
async fn watch_line(
    client: etcd::Client,
    waiters: Arc<Waiters>,
    contender: String,
    mut place: watch::Receiver<Place>,
) {
    loop {
        let target = place.borrow_and_update().clone();
        let keep_every = Duration::from_secs(u64::try_from(target.ttl).unwrap_or(1)) / 3;
        let mut keep_alive_ticks = tokio::time::interval_at(
            tokio::time::Instant::now() + keep_every,
            keep_every.max(Duration::from_millis(100)),
        );
        let options = WatchOptions::new()
            .with_start_revision(target.revision + 1)
            .with_filters([WatchFilterType::NoPut]);
        let stream = client
            .watch_client()
            .watch(target.predecessor.clone(), Some(options))
            .await;
        let Ok(mut stream) = stream else {
            waiters.released(&contender);
            tokio::time::sleep(REWATCH_PAUSE).await;
            continue;
        };
        loop {
            tokio::select! {
                changed = place.changed() => {
                    if changed.is_err() {
                        return; // forgotten: acquired or withdrawn
                    }
                    break; // a new predecessor
                }
                message = stream.message() => {
                    match message {
                        Ok(Some(resp)) if !resp.canceled()
                            && !resp.events().iter().any(|e| e.event_type() == EventType::Delete) => {}
                        Ok(Some(resp)) if !resp.canceled() => {
                            // The predecessor is gone: the next attempt may hold the key.
                            waiters.released(&contender);
                            if place.changed().await.is_err() {
                                return;
                            }
                            break;
                        }
                        _ => {
                            // Lost (or cancelled by the server): retry, then watch again.
                            waiters.released(&contender);
                            tokio::time::sleep(REWATCH_PAUSE).await;
                            break;
                        }
                    }
                }
                _ = keep_alive_ticks.tick() => {
                    if !matches!(keep_alive(&client, target.lease).await, Ok(true)) {
                        // Our key went with its lease: the next attempt gets in line again.
                        waiters.released(&contender);
                    }
                }
            }
        }
    }
}

/// Keep `lease` alive once (its expiry is now its TTL away); `false` if it is gone.
async fn keep_alive(client: &etcd::Client, lease: i64) -> Result<bool> {
    match client.lease_client().keep_alive(lease).await {
        Ok(_) => Ok(true),
        Err(etcd::Error::LeaseKeepAliveError(_)) => Ok(false),
        Err(e) if lease_not_found(&e) => Ok(false),
        Err(e) => Err(failure(e)),
    }
}

/// A fenced resource's record: the highest token, a digest of the holder that used it
/// (`None`: an anonymous access), the value.
struct Record {
    highest: u64,
    holder: Option<String>,
    value: Option<String>,
}

impl Record {
    /// `highest \n holder-flag holder \n value-flag value`.
    fn encode(&self) -> String {
        let holder = self
            .holder
            .as_deref()
            .map_or("-".to_owned(), |h| format!("+{h}"));
        let value = self
            .value
            .as_deref()
            .map_or("-".to_owned(), |v| format!("+{v}"));
        format!(
            "{}\n{}\n{}",
            self.highest,
            holder.len(),
            [holder, value].concat()
        )
    }

    fn decode(bytes: &[u8]) -> Result<Record> {
        let bad = || {
            Error::Store(StoreError::new(
                STORE,
                false,
                "not a fenced resource record",
            ))
        };
        let text = std::str::from_utf8(bytes).map_err(|_| bad())?;
        let mut parts = text.splitn(3, '\n');
        let highest = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let holder_len: usize = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let rest = parts.next().ok_or_else(bad)?;
        if rest.len() < holder_len || !rest.is_char_boundary(holder_len) {
            return Err(bad());
        }
        let (holder, value) = rest.split_at(holder_len);
        let field = |s: &str| s.strip_prefix('+').map(str::to_owned);
        Ok(Record {
            highest,
            holder: field(holder),
            value: field(value),
        })
    }
}

impl Store for EtcdStore {
    fn grant(&self, expiration: Duration) -> Result<Duration> {
        Ok(Duration::from_secs(self.ttl(expiration) as u64))
    }

    async fn acquire(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
        attempt: AttemptId,
        timeout: Duration,
    ) -> Result<Acquire> {
        within(timeout, Retry::Transient, || {
            self.acquire_now(key, val, expiration, attempt)
        })
        .await
    }

    async fn refresh(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
        timeout: Duration,
    ) -> Result<bool> {
        within(timeout, Retry::Transient, || {
            self.refresh_now(key, val, None, expiration)
        })
        .await
    }

    async fn refresh_owned(
        &self,
        key: &str,
        val: &str,
        token: u64,
        expiration: Duration,
        timeout: Duration,
    ) -> Result<bool> {
        within(timeout, Retry::Transient, || {
            self.refresh_now(key, val, Some(token), expiration)
        })
        .await
    }

    async fn release(&self, key: &str, val: &str, timeout: Duration) -> Result<bool> {
        within(timeout, Retry::Unsent, || self.release_now(key, val, None)).await
    }

    async fn release_owned(
        &self,
        key: &str,
        val: &str,
        token: u64,
        timeout: Duration,
    ) -> Result<bool> {
        within(timeout, Retry::Unsent, || {
            self.release_now(key, val, Some(token))
        })
        .await
    }

    async fn abort(
        &self,
        key: &str,
        val: &str,
        attempts: &[AttemptId],
        release: bool,
        timeout: Duration,
    ) -> Result<()> {
        within(timeout, Retry::Transient, || {
            self.abort_now(key, val, attempts, release)
        })
        .await
    }

    async fn pttl(&self, key: &str, val: &str, timeout: Duration) -> Result<Option<Duration>> {
        within(timeout, Retry::Transient, || self.pttl_now(key, val, None)).await
    }

    async fn pttl_owned(
        &self,
        key: &str,
        val: &str,
        token: u64,
        timeout: Duration,
    ) -> Result<Option<Duration>> {
        within(timeout, Retry::Transient, || {
            self.pttl_now(key, val, Some(token))
        })
        .await
    }

    async fn fenced(&self, access: &Fence<'_>, timeout: Duration) -> Result<Fenced> {
        within(timeout, Retry::Transient, || self.fenced_now(access)).await
    }

    /// The waiter `val` of `key` waits for its predecessor's deletion.
    fn watch_waiter(&self, key: &str, val: &str) -> Option<Watch> {
        let contender = contender(key, val);
        let (watch, first) = self.waiters.watch(&contender);
        if first {
            let place = self
                .places
                .lock()
                .get(&contender)
                .map(watch::Sender::subscribe);
            if let Some(place) = place {
                self.spawn_watcher(&contender, place);
            }
        }
        Some(watch)
    }

    fn queues(&self) -> bool {
        true
    }
}

/// Which failures of an operation may be tried again within its timeout.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Any transient failure: the operation is idempotent (acquire, refresh, abort,
    /// reads, fenced access).
    Transient,
    /// Only a failure that says the request was never carried out: no connection to
    /// the member could be made, or it was refused for want of a leader (not proposed).
    /// A release whose answer was lost may have deleted the key, and trying it again
    /// would report `NotHeld`.
    Unsent,
}

/// Run `op` within `timeout`, trying again after the failures `retry` allows (a leader
/// election, a member that went away: the balanced channel moves to another member),
/// pausing 10 ms, doubling up to 100 ms. The caller's `timeout` stays the bound on
/// everything.
async fn within<T, F, Fut>(timeout: Duration, retry: Retry, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let retrying = async {
        let mut pause = Duration::from_millis(10);
        loop {
            match op().await {
                Err(Error::Store(e)) if retryable(&e, retry) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                done => return done,
            }
        }
    };
    tokio::time::timeout(timeout, retrying)
        .await
        .map_err(|_| Error::Timeout)?
}

fn retryable(e: &StoreError, retry: Retry) -> bool {
    let unsent = || {
        let message = e.to_string();
        message.contains("no leader") || message.contains("connect error")
    };
    e.is_transient() && (retry == Retry::Transient || unsent())
}

/// `etcd://h1:p1[,h2:p2…]` → `["http://h1:p1", …]`.
fn endpoints(url: &str) -> Result<Vec<String>> {
    let hosts = url
        .strip_prefix(SCHEME)
        .ok_or_else(|| Error::invalid("url: expected etcd://host:port[,host:port…]"))?
        .trim_end_matches('/');
    let endpoints: Vec<String> = hosts
        .split(',')
        .map(|h| {
            let valid = !h.is_empty()
                && !h.contains(['/', '@', '?', '#', ' '])
                && h.rsplit_once(':').is_some_and(|(host, port)| {
                    !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
                });
            if valid {
                Ok(format!("http://{h}"))
            } else {
                Err(Error::invalid(
                    "url: expected etcd://host:port[,host:port…] (TLS and credentials are not supported)",
                ))
            }
        })
        .collect::<Result<_>>()?;
    Ok(endpoints)
}

fn check_name(what: &str, name: &str) -> Result<()> {
    if name.contains(SEP) {
        return Err(Error::invalid(format!(
            "{what}: must not contain \\0 on etcd (it ends the lock name in etcd's keys)"
        )));
    }
    Ok(())
}

/// `key \0 H(val)`: `val`'s contender key for `key`.
fn contender(key: &str, val: &str) -> String {
    format!("{key}{SEP}{:016x}", value_hash(val.as_bytes()))
}

/// The range `[key\0, key\x01)` holding every contender of `key`.
fn range(key: &str) -> (String, String) {
    (format!("{key}{SEP}"), format!("{key}\u{1}"))
}

/// FNV-1a, finalised: the same in every process and every build.
fn value_hash(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    mix(hash)
}

/// The splitmix64 finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The lease id of an acquire attempt: positive, non-zero, derived from the attempt id
/// (so that an abort can name it).
fn lease_id(attempt: AttemptId) -> i64 {
    let id = mix(attempt.client ^ mix(attempt.seq)) >> 1;
    id.max(1) as i64
}

fn token(revision: i64) -> Result<u64> {
    u64::try_from(revision)
        .ok()
        .filter(|t| *t > 0)
        .ok_or_else(|| Error::Store(StoreError::new(STORE, false, "no revision in the reply")))
}

fn lease_not_found(e: &etcd::Error) -> bool {
    match e {
        etcd::Error::GRpcStatus(status) => status.message().contains("lease not found"),
        etcd::Error::LeaseKeepAliveError(msg) => msg.contains("lease not found"),
        _ => false,
    }
}

/// An etcd client error as ours: transient when another attempt could succeed (the
/// connection, a leader election, a timeout on the server).
fn failure(e: etcd::Error) -> Error {
    // gRPC codes: 1 cancelled, 4 deadline exceeded, 8 resource exhausted, 10 aborted,
    // 14 unavailable (etcd: no leader, leader changed, request timed out).
    let transient = match &e {
        etcd::Error::TransportError(_) | etcd::Error::IoError(_) => true,
        etcd::Error::GRpcStatus(status) => {
            matches!(status.code() as i32, 1 | 4 | 8 | 10 | 14)
                || status.message().contains("leader")
                || status.message().contains("timed out")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_members() {
        assert_eq!(
            endpoints("etcd://a:1,127.0.0.1:2379").unwrap(),
            ["http://a:1", "http://127.0.0.1:2379"]
        );
        for bad in [
            "etcd://",
            "etcd://a",
            "etcd://a:0",
            "etcd://a:x",
            "etcd://u:p@a:1",
            "etcd://a:1,",
        ] {
            assert!(endpoints(bad).unwrap_err().is_invalid_argument(), "{bad}");
        }
    }

    #[test]
    fn contenders_of_a_key_sort_inside_its_range_only() {
        let (start, end) = range("a");
        for val in ["x", "y", "a-long-value"] {
            let c = contender("a", val);
            assert!(c.as_str() >= start.as_str() && c.as_str() < end.as_str());
            assert_eq!(c.len(), "a".len() + 1 + 16);
        }
        // Another lock whose name extends this one is outside the range.
        let other = contender("a\u{1}b", "x");
        assert!(other.as_str() >= end.as_str());
        let record = format!("a{RESOURCE_SUFFIX}");
        assert!(record.as_str() >= end.as_str());
        assert_eq!(contender("k", "v"), contender("k", "v"), "stable");
    }

    #[test]
    fn lease_ids_are_positive_and_differ_per_attempt() {
        let ids: std::collections::HashSet<i64> = (0..1000)
            .map(|seq| lease_id(AttemptId { client: 7, seq }))
            .collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| *id > 0));
    }

    #[test]
    fn records_round_trip() {
        for (holder, value) in [
            (None, None),
            (Some("h\n+x"), Some("v\nw")),
            (Some(""), Some("")),
        ] {
            let r = Record {
                highest: 42,
                holder: holder.map(str::to_owned),
                value: value.map(str::to_owned),
            };
            let back = Record::decode(r.encode().as_bytes()).unwrap();
            assert_eq!(back.highest, 42);
            assert_eq!(back.holder.as_deref(), holder);
            assert_eq!(back.value.as_deref(), value);
        }
    }
}
