//! etcd v3 (`etcd://[user:password@]h1:p1[,h2:p2…]`, feature `etcd`): consensus-backed leases, the
//! create revision as the fencing token, the value as the holder's identity (protocol v2),
//! and a fair wait in line behind the holder.
//!
//! The module: the store and its [`Store`] implementation here; the key layout in
//! [`keys`], the transactions in [`txn`], the wait in line in [`line`] and the session
//! its places live on in [`session`], leases in [`lease`], the members and which one an
//! operation runs on in [`members`], operators' tools and fenced access in [`admin`],
//! URLs in [`url`], failures and retries in [`errors`].
//!
//! # Keys
//!
//! For a lock `K` held or wanted by a value `v`, with `H` a 64-bit hash of `v` in 16
//! lowercase hex digits (the same in every process and build):
//!
//! | key | value | lease | what it is |
//! |---|---|---|---|
//! | `K \0 H` | `v` | the key's | `v`'s key in the lock's line (etcd's own mutex: the key with the lowest create revision holds the lock, once it has taken its turn) |
//! | `K \0 ~c H` | `client:seq` (hex), `client:seq:w` while the key waits in line | the same | the attempt that created `v`'s key |
//! | `K \0 ~a C` | `seq` (16 hex digits) | the client's abort lease | client `C`'s highest aborted attempt on `K` |
//! | `R \x01 token` | a record | none | fenced resource `R`: the highest token, a digest of its holder, the value |
//!
//! So a held key is two etcd keys, whatever the number of re-locks or cancelled attempts,
//! plus one abort record per client that ever cancelled an attempt on it (within the last
//! hour or two). Lock keys (and resource names) may not contain `\0`
//! ([`crate::Error::InvalidArgument`]): it ends the lock name. The line is the range
//! `[K\0 0, K\0 g)` (contender keys only).
//!
//! * **Token:** the holder's key's create revision — cluster-wide, strictly rising, never
//!   reused (it survives deletion, compaction and leader changes). The line is served in
//!   create-revision order, so tokens rise in grant order. They rise across all keys,
//!   not per key, and the first is above 1.
//! * **Owner checks:** the value is the holder's identity. Refresh, ttl and release act
//!   on `v`'s key if it holds `v`, is first in line and is not marked waiting (a key in
//!   line holds nothing until its waiter took its turn), whichever handle or client
//!   presents `v`.
//! * **Inspection:** the holder is the first key in line unless it is marked waiting
//!   (then nobody holds the lock); its digest is `H` (never the value), its time to live
//!   its lease's, in whole seconds.
//!
//! # Acquire, re-arm, release
//!
//! An acquire creates `v`'s key and its creator key in one transaction if the line is
//! empty. If `v`'s key is there and first, the acquire is a re-arm: the key's lease is
//! kept alive if it was granted the TTL asked for, else the key and its creator move to
//! a lease of that TTL (shorter or longer) and the old lease is revoked. Refresh does the
//! same. A release deletes `v`'s key and its creator if `v` holds the lock (a read, then a
//! delete comparing the key's create revision).
//!
//! # Aborts
//!
//! An abort of attempts of client `C` raises `K\0~aC` to the highest of their numbers
//! (never lowers it); every write of an attempt (create, queue, take its turn, move to
//! another lease) compares the record absent or below the attempt's number, so an
//! aborted attempt that arrives later is refused ([`Acquire::Refused`]) — and so is an
//! earlier attempt of `C` still in flight, whose caller tries again with a new number.
//! Then the abort deletes `v`'s key if its creator is one of the attempts: never a key
//! created by another attempt (a lock held before they began, another call's place in
//! line). Records live on a lease shared by the client's aborts (granted for two hours,
//! replaced hourly): TCP gives up on undelivered data well before.
//!
//! # The wait
//!
//! A miss puts `v`'s key in line (`EtcdStore::queues`), created by the attempt and marked
//! waiting: the call's place. It hangs on the client's session, a short lease kept alive
//! while the client has calls waiting ([`session`]), so the place of a client that
//! crashed or was cut off goes within the server's minimum TTL. A waiting `lock` call
//! watches its predecessor — the key just before its own — for deletion (released,
//! expired, withdrawn, or gone with its session), from the revision its attempt saw, so
//! no deletion is missed; it is woken (its [`Watch`]) and its next attempt takes its
//! turn if its key is first (one transaction moves the key and its creator to the lease
//! of the lock's expiration its call granted when it got in line, and drops the mark;
//! the lease is kept alive in the same round trip, or granted anew if it ran out) or
//! names the next predecessor. One deletion wakes one waiter: no herd. When the call ends without
//! the key, it withdraws its place (the abort of its attempts, one of which created it)
//! before it returns [`crate::Error::NotObtained`]. A client with `notify(false)` does
//! not queue: a miss leaves nothing, and waiters poll.
//!
//! # Leases
//!
//! A key that holds the lock hangs on an etcd lease of the lock's expiration in whole
//! seconds (rounded up, at least the server's minimum, which [`EtcdStore::open`]
//! measures): a refresh or re-lock to a shorter expiration also rounds up. A key waiting
//! in line hangs on its client's session lease. An attempt that may create a key first grants
//! a lease whose id is derived from the attempt's (a retry of the attempt finds it
//! granted); a lease that ends up holding nothing is revoked in the background. An
//! expired lease's keys go at the server's next expiry sweep (every 500 ms).

mod admin;
mod errors;
mod keys;
mod lease;
mod line;
mod members;
mod session;
mod txn;
mod url;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use etcd_client as etcd;
use etcd_client::{GetOptions, KeyValue, Txn, TxnOpResponse, TxnResponse};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use self::errors::{Retry, failure, token, transient, unexpected};
use self::keys::{
    Keys, check_name, creator_of, creator_text, holding, is_waiting, last_in_line, stamp,
};
use self::lease::{keep_alive, lease_id};
use self::line::Turn;
use self::members::Members;
use self::session::Place;
use self::session::Sessions;
use self::txn::{
    acquire_txn, delete_txn, deleted_lease, found, gets, move_txn, past_guard, raise_record, reads,
};
use self::url::{Target, parse_url};
use super::{Acquire, AttemptId, Fence, Fenced, Inspected, Store};
use crate::wake::{Waiters, Watch};
use crate::{Error, Result};

/// The URL scheme of this store.
pub(crate) const SCHEME: &str = "etcd://";

/// etcd over TLS (feature `tls` too).
pub(crate) const TLS_SCHEME: &str = "etcds://";

const STORE: &str = "etcd";

/// Open an etcd store from `url` ([`SCHEME`] or [`TLS_SCHEME`]) as a client's backend.
pub(crate) async fn open(
    url: &str,
    options: &crate::store::Options,
) -> Result<(crate::store::Backend, String)> {
    let options = Options {
        connect_timeout: options.connect_timeout,
        queue: options.notify,
        #[cfg(feature = "tls")]
        tls_root_certificate: options.tls_root_certificate.clone(),
    };
    let (store, target) = EtcdStore::open(url, &options).await?;
    Ok((crate::store::Backend::Etcd(Box::new(store)), target))
}

/// How to open an etcd store.
#[derive(Clone)]
pub(crate) struct Options {
    pub(crate) connect_timeout: Duration,
    /// Whether a miss puts the caller in line (`ClientBuilder::notify`).
    pub(crate) queue: bool,
    /// The root certificate (PEM) for `etcds://` (`ClientBuilder::tls_root_certificate`);
    /// `None`: the platform's roots.
    #[cfg(feature = "tls")]
    pub(crate) tls_root_certificate: Option<Vec<u8>>,
}

pub(crate) struct EtcdStore {
    /// A client per member, and the member each operation runs on.
    members: Arc<Members>,
    /// The server's minimum lease TTL, in seconds.
    min_ttl: u64,
    /// Whether a miss puts the caller in line.
    queue: bool,
    /// The waiters of this client, by contender key.
    waiters: Arc<Waiters>,
    /// This client's places in line, by contender key: what a waiting call watches.
    places: Arc<Mutex<HashMap<String, watch::Sender<Place>>>>,
    /// The watching task of each contender key that has waiters.
    watching: Arc<Mutex<HashMap<String, AbortHandle>>>,
    /// The lease of this client's records of aborted attempts, and when it was granted.
    abort_lease: Mutex<Option<(i64, Instant)>>,
    /// The session this client's places in line live on.
    sessions: Arc<Sessions>,
}

impl EtcdStore {
    /// Connect to the members named in `url` (`etcd://h1:p1[,h2:p2…]`) and measure the
    /// server's minimum lease TTL (a lease of 1 s is granted and revoked). Also returns
    /// where it points.
    pub(crate) async fn open(url: &str, options: &Options) -> Result<(EtcdStore, String)> {
        let Target {
            endpoints,
            user,
            tls,
        } = parse_url(url)?;
        let mut connect = etcd::ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout)
            // A dead member is noticed by HTTP/2 pings, not only by the next request.
            .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2))
            // A member cut off from its leader refuses at once instead of stalling.
            .with_require_leader(true);
        #[cfg(feature = "tls")]
        if tls {
            let roots = match &options.tls_root_certificate {
                Some(pem) => {
                    etcd::TlsOptions::new().ca_certificate(etcd::Certificate::from_pem(pem))
                }
                None => etcd::TlsOptions::new().with_native_roots(),
            };
            connect = connect.with_tls(roots);
        }
        #[cfg(not(feature = "tls"))]
        let _ = tls; // refused by `parse_url`
        if let Some((name, password)) = user {
            // Authenticated on connect; a call refused for a stale token (etcd drops an
            // idle one after `--auth-token-ttl`, 5 minutes by default) was not executed,
            // so it is sent again once authenticated anew.
            connect = connect
                .with_user(name, password)
                .with_auto_token_refresh(true);
        }
        let members = Members::connect(&endpoints, connect, options.connect_timeout).await?;
        // Any member that answers will do; when none does, the error names each.
        let min_ttl = members
            .first_answer(options.connect_timeout, |client| async move {
                let mut lease = client.lease_client();
                let granted = lease.grant(1, None).await.map_err(failure)?;
                let _ = lease.revoke(granted.id()).await;
                Ok(granted.ttl())
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
            members,
            min_ttl: u64::try_from(min_ttl).unwrap_or(1).max(1),
            queue: options.queue,
            waiters,
            places: Arc::default(),
            watching,
            abort_lease: Mutex::new(None),
            sessions: Arc::default(),
        };
        Ok((store, format!("etcd {}", endpoints.join(","))))
    }

    /// The client of the member the running operation goes to.
    fn client(&self) -> etcd::Client {
        self.members.client()
    }

    fn kv(&self) -> etcd::KvClient {
        self.client().kv_client()
    }

    async fn get(&self, key: &str, options: Option<GetOptions>) -> Result<(i64, Vec<KeyValue>)> {
        let mut got = self.kv().get(key, options).await.map_err(failure)?;
        let revision = got.header().map_or(0, |h| h.revision());
        Ok((revision, got.take_kvs()))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.kv().txn(txn).await.map_err(failure)
    }
}

/// How a re-arm went.
enum Rearmed {
    /// The key's lease now runs the TTL asked for, from about now.
    Done,
    /// The attempt was aborted: nothing moved.
    Refused,
    /// The key changed (moved, released) meanwhile: look again.
    Changed,
}

impl EtcdStore {
    async fn acquire_now(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
        attempt: AttemptId,
        label: &str,
    ) -> Result<Acquire> {
        check_name("key", key)?;
        // One stamp per attempt: what its creator key holds, in line or holding.
        let stamp = stamp(label);
        let ttl = self.lease_secs(expiration);
        let keys = Keys::new(key, val);
        if let Some(place) = self.place_of(&keys.contender) {
            match self.turn(&keys, val, &place, attempt, ttl).await? {
                Turn::Mine => {
                    self.forget(&keys.contender);
                    return Ok(Acquire::Acquired(token(place.created)?));
                }
                Turn::Waiting {
                    predecessor,
                    revision,
                    hold,
                    hold_ttl,
                } => {
                    self.remember(
                        &keys.contender,
                        Place {
                            predecessor,
                            revision,
                            hold,
                            hold_ttl,
                            ..place
                        },
                    );
                    return Ok(Acquire::Held(None));
                }
                Turn::Refused => return Ok(Acquire::Refused),
                // Acquire afresh. The place stays remembered (and watched) until the
                // attempt below replaces it or the call ends.
                Turn::Gone => {}
            }
        }
        let lease = self.grant_lease(lease_id(attempt), ttl).await?;
        // A miss puts the key in line on this client's session: the one in use, else
        // one granted after a miss without it (and the transaction sent again).
        let mut session = if self.queue {
            self.sessions.live()
        } else {
            None
        };
        loop {
            let line_lease = session.as_ref().map(|s| s.lease);
            let reply = self
                .txn(acquire_txn(&keys, val, attempt, &stamp, lease, line_lease))
                .await?;
            let Some((revision, reply)) = past_guard(&reply)? else {
                self.revoke_detached([lease]);
                return Ok(Acquire::Refused);
            };
            if reply.succeeded() {
                self.forget(&keys.contender);
                return Ok(Acquire::Acquired(token(revision)?));
            }
            let mut responses = reply.op_responses();
            if let Some(line_lease) = line_lease {
                let Some(TxnOpResponse::Txn(inner)) = responses.pop() else {
                    return Err(unexpected());
                };
                if inner.succeeded() {
                    // In line behind the last key before ours. The attempt's lease holds
                    // nothing: the key takes its turn on it.
                    let line = gets(&inner).pop().unwrap_or_default();
                    let Some(predecessor) = line.get(1) else {
                        return Err(unexpected());
                    };
                    self.remember(
                        &keys.contender,
                        Place {
                            lease: line_lease,
                            hold: lease,
                            hold_ttl: ttl,
                            creator: Some(creator_text(attempt, &stamp).into_bytes()),
                            created: revision,
                            predecessor: predecessor.key().to_vec(),
                            revision,
                        },
                    );
                    return Ok(Acquire::Held(None));
                }
                responses = inner.op_responses();
            }
            let found = found(responses)?;
            let first = found.first.as_ref().map(|kv| kv.key().to_vec());
            let creator = found.creator;
            let Some(ours) = found.ours.filter(|kv| kv.value() == val.as_bytes()) else {
                if self.queue && session.is_none() {
                    session = Some(self.session().await?);
                    continue;
                }
                // Another value holds the key (or our hash's key holds another value).
                self.revoke_detached([lease]);
                return Ok(Acquire::Held(None));
            };
            let created = ours.create_revision();
            if first.as_deref() == Some(keys.contender.as_bytes()) {
                // Ours, and first in line: a re-arm, to exactly this expiration (or the
                // turn of a key that waits, put in line by another call).
                let rearmed = self
                    .rearm(
                        &keys,
                        val,
                        &ours,
                        creator.as_ref(),
                        ttl,
                        Some(attempt),
                        Some(lease),
                    )
                    .await?;
                self.forget(&keys.contender);
                return self.rearmed(rearmed, created);
            }
            // Ours, waiting in line (an earlier try of this attempt, or another call's).
            // The attempt's lease holds nothing: the key takes its turn on it.
            if self.queue {
                let (start, end) = keys.line();
                let (revision, before) = self
                    .get(&start, Some(last_in_line(end, created - 1, 1)))
                    .await?;
                if let Some(predecessor) = before.first() {
                    self.remember(
                        &keys.contender,
                        Place {
                            lease: ours.lease(),
                            hold: lease,
                            hold_ttl: ttl,
                            creator: creator.map(|c| holding(c.value())),
                            created,
                            predecessor: predecessor.key().to_vec(),
                            revision,
                        },
                    );
                    return Ok(Acquire::Held(None));
                }
            }
            if ours.lease() != lease {
                self.revoke_detached([lease]);
            }
            return Ok(Acquire::Held(None));
        }
    }

    /// The answer of an acquire that re-armed the key created at `created`.
    fn rearmed(&self, rearmed: Rearmed, created: i64) -> Result<Acquire> {
        match rearmed {
            Rearmed::Done => Ok(Acquire::Acquired(token(created)?)),
            Rearmed::Refused => Ok(Acquire::Refused),
            Rearmed::Changed => Err(transient("the key changed during the attempt")),
        }
    }

    /// Re-arm `val`'s key `ours` (with its `creator`, as read) to exactly `ttl`: its
    /// lease kept alive if it was granted `ttl`, else the key moved to a lease of `ttl`
    /// (`spare`, granted `ttl` already, or a new one) and its old lease revoked. A move
    /// by an `attempt` is refused if the attempt was aborted. `spare` is revoked when the
    /// re-arm is done without it or refused; after [`Rearmed::Changed`] it is kept for
    /// the retry of its attempt (else it expires, or the attempt's abort revokes it).
    #[allow(clippy::too_many_arguments)]
    async fn rearm(
        &self,
        keys: &Keys,
        val: &str,
        ours: &KeyValue,
        creator: Option<&KeyValue>,
        ttl: i64,
        attempt: Option<AttemptId>,
        spare: Option<i64>,
    ) -> Result<Rearmed> {
        let current = ours.lease();
        // A key waiting in line moves to a lease of its own whatever its TTL: the one it
        // waits on is a session's, shared with other places in line.
        let waiting = creator.is_some_and(|c| is_waiting(c.value()));
        if current == 0 && !waiting {
            // No lease (set by hand): no expiry to re-arm.
            self.revoke_detached(spare);
            return Ok(Rearmed::Done);
        }
        if !waiting {
            let (info, kept) = futures::future::join(
                self.lease_info(current, None),
                keep_alive(&self.client(), current),
            )
            .await;
            match info? {
                Some((granted, _, _)) if granted == ttl => {
                    self.revoke_detached(spare.filter(|l| *l != current));
                    return Ok(if kept? {
                        Rearmed::Done
                    } else {
                        Rearmed::Changed
                    });
                }
                Some(_) => {}
                // Gone: the caller looks again. `spare` stays: a retry of the attempt
                // that granted it finds it granted (a revoke racing that retry would
                // fail it).
                None => return Ok(Rearmed::Changed),
            }
        }
        let lease = match spare {
            Some(lease) => lease,
            None => self.grant_lease(0, ttl).await?,
        };
        let reply = self
            .txn(move_txn(keys, val, ours, creator, lease, attempt))
            .await?;
        let moved = match attempt {
            Some(_) => match past_guard(&reply)? {
                Some((_, inner)) => inner.succeeded(),
                None => {
                    self.revoke_detached([lease]);
                    return Ok(Rearmed::Refused);
                }
            },
            None => reply.succeeded(),
        };
        if !moved {
            if spare.is_none() {
                self.revoke_detached([lease]);
            }
            return Ok(Rearmed::Changed);
        }
        if !waiting {
            self.revoke_detached([current]);
        }
        // The new lease was granted before the move: its TTL runs from now on.
        Ok(match keep_alive(&self.client(), lease).await? {
            true => Rearmed::Done,
            false => Rearmed::Changed,
        })
    }

    /// `val`'s key of `key` and its creator if `val` holds the lock (its key is first in
    /// line).
    async fn held(&self, keys: &Keys, val: &str) -> Result<Option<(KeyValue, Option<KeyValue>)>> {
        let reply = self.txn(Txn::new().and_then(reads(keys))).await?;
        Ok(found(reply.op_responses())?.held(keys, val))
    }

    async fn refresh_now(&self, key: &str, val: &str, expiration: Duration) -> Result<bool> {
        check_name("key", key)?;
        let ttl = self.lease_secs(expiration);
        let keys = Keys::new(key, val);
        for _ in 0..3 {
            let Some((ours, creator)) = self.held(&keys, val).await? else {
                return Ok(false);
            };
            match self
                .rearm(&keys, val, &ours, creator.as_ref(), ttl, None, None)
                .await?
            {
                Rearmed::Done => return Ok(true),
                Rearmed::Refused => return Err(unexpected()),
                // Moved to another lease, or going: look again.
                Rearmed::Changed => {}
            }
        }
        Err(transient("the key kept changing leases"))
    }

    /// Delete `val`'s key, created at `created`, and its creator, if still so.
    async fn delete_ours(&self, keys: &Keys, val: &str, created: i64) -> Result<bool> {
        let reply = self.txn(delete_txn(keys, val, created, None)).await?;
        if !reply.succeeded() {
            return Ok(false); // released (or replaced) meanwhile
        }
        self.revoke_detached(deleted_lease(&reply));
        Ok(true)
    }

    async fn pttl_now(&self, key: &str, val: &str) -> Result<Option<Duration>> {
        check_name("key", key)?;
        let keys = Keys::new(key, val);
        for _ in 0..3 {
            let Some((ours, _)) = self.held(&keys, val).await? else {
                return Ok(None);
            };
            if ours.lease() == 0 {
                return Ok(Some(Duration::MAX));
            }
            if let Some((_, left, _)) = self.lease_info(ours.lease(), None).await? {
                return Ok(Some(Duration::from_secs(left.max(0) as u64)));
            }
            // The lease went: the key moved to another, or goes with it.
        }
        Ok(None)
    }

    async fn abort_now(
        &self,
        key: &str,
        val: &str,
        attempts: &[AttemptId],
        undo: bool,
    ) -> Result<bool> {
        check_name("key", key)?;
        let keys = Keys::new(key, val);
        // One record per client: its highest aborted attempt.
        let mut highest: BTreeMap<u64, u64> = BTreeMap::new();
        for a in attempts {
            let seq = highest.entry(a.client).or_default();
            *seq = (*seq).max(a.seq);
        }
        if highest.is_empty() {
            return Ok(false);
        }
        let mut records = self.abort_lease(false).await?;
        let mut reads = Vec::new();
        for (client, seq) in highest {
            let mut renewed = false;
            let reply = loop {
                let txn = raise_record(
                    &keys.aborted(client),
                    seq,
                    records,
                    vec![txn::get(&keys.contender), txn::get(&keys.creator)],
                );
                match self.txn(txn).await {
                    // The records' lease is gone (a restored backup, a long outage):
                    // grant another one.
                    Err(Error::Store(e))
                        if !renewed && e.to_string().contains("lease not found") =>
                    {
                        renewed = true;
                        records = self.abort_lease(true).await?;
                    }
                    reply => break reply?,
                }
            };
            reads = gets(&reply);
        }
        // From here on no aborted attempt can write: delete the key if one created it
        // (with `undo`).
        let mut deleted = false;
        // The lease of the deleted key, to revoke.
        let mut freed = None;
        let mut kept = None;
        for _ in 0..3 {
            let mut read = reads.into_iter();
            let ours = read.next().unwrap_or_default().into_iter().next();
            let creator = read.next().unwrap_or_default().into_iter().next();
            let Some(ours) = ours.filter(|kv| kv.value() == val.as_bytes()) else {
                break;
            };
            let ours_created = creator
                .as_ref()
                .and_then(|c| creator_of(c.value()))
                .is_some_and(|c| attempts.contains(&c));
            if !(undo && ours_created) {
                kept = Some(ours.lease());
                break;
            }
            // A key waiting in line is on its client's session: the lease stays.
            let waiting = creator.as_ref().is_some_and(|c| is_waiting(c.value()));
            let creator = creator.map(|c| c.value().to_vec());
            let reply = self
                .txn(delete_txn(
                    &keys,
                    val,
                    ours.create_revision(),
                    creator.as_deref(),
                ))
                .await?;
            if reply.succeeded() {
                deleted = true;
                freed = deleted_lease(&reply).filter(|_| !waiting);
                break;
            }
            // Released, or created anew, meanwhile: look again.
            let reply = self
                .txn(Txn::new().and_then([txn::get(&keys.contender), txn::get(&keys.creator)]))
                .await?;
            reads = gets(&reply);
        }
        if kept.is_none() {
            // Deleted, or no key of ours: the place in line, if any, is gone.
            self.forget(&keys.contender);
        }
        // The attempts' own leases hold nothing now, unless one is the lease of the key
        // that stays.
        let leases = attempts
            .iter()
            .map(|a| lease_id(*a))
            .chain(freed)
            .filter(|l| Some(*l) != kept);
        self.revoke_detached(leases);
        Ok(deleted)
    }
}

impl Store for EtcdStore {
    fn granularity(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn grant(&self, expiration: Duration) -> Result<Duration> {
        Ok(Duration::from_secs(self.lease_secs(expiration) as u64))
    }

    async fn acquire(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
        attempt: AttemptId,
        label: &str,
        timeout: Duration,
    ) -> Result<Acquire> {
        // An attempt abandoned on a silent member is not sent again under its number:
        // refused, it stays among the attempts its call aborts (a copy arriving late is
        // refused then), and the next attempt goes to another member.
        self.members
            .within_once(timeout, Acquire::Refused, || {
                self.acquire_now(key, val, expiration, attempt, label)
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
        self.members
            .within(timeout, Retry::Transient, || {
                self.refresh_now(key, val, expiration)
            })
            .await
    }

    async fn release(&self, key: &str, val: &str, timeout: Duration) -> Result<bool> {
        check_name("key", key)?;
        let deadline = Instant::now() + timeout;
        let keys = Keys::new(key, val);
        // Which key is ours: a read, tried again on another member if need be.
        let held = self
            .members
            .within_until(deadline, Retry::Transient, || self.held(&keys, val))
            .await?;
        let Some((ours, _)) = held else {
            return Ok(false);
        };
        // Still first: every key created after it is behind it. The delete goes to the
        // member that answered the read, and is not sent again once it may have
        // arrived: a delete whose answer was lost, tried again, would find nothing and
        // report `NotHeld`.
        self.members
            .within_until(deadline, Retry::Unsent, || {
                self.delete_ours(&keys, val, ours.create_revision())
            })
            .await
    }

    async fn abort(
        &self,
        key: &str,
        val: &str,
        attempts: &[AttemptId],
        undo: bool,
        timeout: Duration,
    ) -> Result<bool> {
        self.members
            .within(timeout, Retry::Transient, || {
                self.abort_now(key, val, attempts, undo)
            })
            .await
    }

    async fn ttl(&self, key: &str, val: &str, timeout: Duration) -> Result<Option<Duration>> {
        self.members
            .within(timeout, Retry::Transient, || self.pttl_now(key, val))
            .await
    }

    async fn force_release(&self, key: &str, only: Option<u64>, timeout: Duration) -> Result<bool> {
        self.force_release_within(key, only, timeout).await
    }

    async fn inspect(&self, key: &str, timeout: Duration) -> Result<Option<Inspected>> {
        self.members
            .within(timeout, Retry::Transient, || self.inspect_now(key))
            .await
    }

    async fn list(&self, prefix: &str, timeout: Duration) -> Result<Vec<Inspected>> {
        self.list_now(prefix, timeout).await
    }

    async fn fenced(&self, access: &Fence<'_>, timeout: Duration) -> Result<Fenced> {
        self.members
            .within(timeout, Retry::Transient, || self.fenced_now(access))
            .await
    }
}

impl EtcdStore {
    /// The waiter `val` of `key` waits for its predecessor's deletion.
    pub(crate) fn watch_waiter(&self, key: &str, val: &str) -> Option<Watch> {
        self.wait_in_line(key, val)
    }

    /// Whether a miss puts the caller in line (its place must be withdrawn).
    pub(crate) fn queues(&self) -> bool {
        self.queue
    }
}
