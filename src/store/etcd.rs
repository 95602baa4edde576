//! etcd v3 (`etcd://[user:password@]h1:p1[,h2:p2…]`, feature `etcd`): consensus-backed leases, the
//! create revision as the fencing token, a lock's claims as keys, and a fair wait in
//! line behind the holder.
//!
//! # Keys
//!
//! For a lock `K` held or wanted by a value `v`, with `H` a 64-bit hash of `v` in 16
//! lowercase hex digits (the same in every process and build):
//!
//! | key | value | lease | what it is |
//! |---|---|---|---|
//! | `K \0 H` | `v` | the incarnation's | `v`'s key in the lock's line (etcd's own mutex: the key with the lowest create revision holds the lock) |
//! | `K \0 ~c H \0 A` | `h` or `w` | the same | a *claim*: attempt `A` armed `v`'s key (`w`: while it waited in line) |
//! | `K \0 ~a A` | empty | an hour's | attempt `A` was aborted: refused if it arrives later |
//! | `R \x01 token` | a record | none | fenced resource `R`: the highest token, a digest of its holder, the value |
//!
//! Lock keys (and resource names) may not contain `\0` ([`crate::Error::InvalidArgument`]):
//! it ends the lock name. The line is the range `[K\0 0, K\0 g)` (contender keys only).
//!
//! * **Token:** the holder's key's create revision — cluster-wide, strictly rising, never
//!   reused (it survives deletion, compaction and leader changes). The line is served in
//!   create-revision order, so tokens rise in grant order. They rise across all keys,
//!   not per key, and the first is above 1.
//! * **Owner checks:** refresh and ttl compare the value *and* the create revision (the
//!   lock's token): a stale handle never acts on a newer incarnation of the same value.
//! * **Inspection:** the holder is the first key in line; its digest is `H` (never the
//!   value), its time to live its lease's, in whole seconds.
//!
//! # Claims
//!
//! Every attempt that armed `v`'s key is one of its claims, a key of its own on the key's
//! lease (so claims live and expire with the key, as the claims hash does on Redis). An
//! acquire writes the key and its claim in one transaction; a re-arm of a key `v` holds
//! adds its claim and re-arms the lease, never shortening it: a lease granted a TTL at
//! least the asked one is kept alive, else the key and its claims move to a longer lease.
//! A release deletes its claims and, in the same transaction, the key if no other claim
//! is left (one nested transaction per claim named, each comparing the ranges between
//! them empty: etcd's compares are ANDed, the nesting makes the OR; a release of more
//! than eight claims retires them first and deletes the key in a second transaction,
//! which compares the claims' range empty). An abort records its
//! attempts (an hour, on a lease shared by the client's aborts; every acquire compares
//! its record absent), retires their claims, and deletes the key if it holds `v` and no
//! claim is left.
//!
//! # The wait
//!
//! A miss puts `v`'s key in line ([`Store::queues`]) with a *waiting* claim (`w`) of the
//! attempt: the call's place. A waiting `lock` call watches its predecessor — the key
//! just before its own — for deletion (released, expired or withdrawn), from the revision
//! its attempt saw, so no deletion is missed; it is woken (its [`Watch`]) and its next
//! attempt finds its key first (one transaction: the claim of that attempt replaces the
//! waiting claim, and the lease is re-armed in parallel) or names the next predecessor.
//! One deletion wakes one waiter: no herd. While it waits, its key's lease is kept alive.
//! When the call ends without the key, it withdraws its place (the abort of its attempts)
//! before it returns [`crate::Error::NotObtained`]. A client with `notify(false)` does not
//! queue: a miss leaves nothing, and waiters poll.
//!
//! # Leases
//!
//! A key hangs on an etcd lease of the lock's expiration in whole seconds (rounded up, at
//! least the server's minimum, which [`EtcdStore::open`] measures). An attempt that may
//! create a key first grants a lease whose id is derived from the attempt's (a retry of
//! the attempt finds it granted); a lease that ends up holding nothing is revoked in the
//! background. An expired lease's keys go at the server's next expiry sweep (every
//! 500 ms).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use etcd_client as etcd;
use etcd_client::{
    Compare, CompareOp, DeleteOptions, EventType, GetOptions, KeyValue, LeaseTimeToLiveOptions,
    PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchFilterType,
    WatchOptions,
};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::{Acquire, AttemptId, Fence, Fenced, Inspected, Store};
use crate::error::StoreError;
use crate::wake::{Waiters, Watch};
use crate::{Error, Result};

/// The URL scheme of this store.
pub(crate) const SCHEME: &str = "etcd://";

/// etcd over TLS (feature `tls` too).
pub(crate) const TLS_SCHEME: &str = "etcds://";

/// The URL schemes of this store.
pub(crate) const SCHEMES: [&str; 2] = [SCHEME, TLS_SCHEME];

const STORE: &str = "etcd";

/// Ends a lock name; what follows is a contender's hash, or `~` and a companion key.
const SEP: char = '\0';

/// Ends a fenced resource's name in its record's key (outside every lock's keys, which
/// are `K\0 .. K\x01`).
const RESOURCE_SUFFIX: &str = "\u{1}token";

/// The value of a claim of an attempt that armed a key first in line.
const HOLDING: &str = "h";
/// The value of a claim of an attempt that put a key in line behind another.
const WAITING: &str = "w";

/// A waiter whose watch failed tries again after this long (and retries an attempt
/// meanwhile, under its strategy).
const REWATCH_PAUSE: Duration = Duration::from_millis(100);

/// How long an aborted attempt is refused, as on Redis: TCP gives up on undelivered data
/// well before that. The records' lease is granted for twice as long and used for new
/// records while it has at least this long left.
const ABORT_MEMORY: Duration = Duration::from_secs(3600);

/// A release naming up to this many claims is one transaction (a nested one per claim);
/// more (many same-value re-locks sharing one lease) take two.
const CHAIN_MAX: usize = 8;

/// Attempts recorded and retired per transaction by an abort.
const ABORT_CHUNK: usize = 32;

/// Locks listed per range request.
const LIST_PAGE: i64 = 512;

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
    client: etcd::Client,
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
}

/// A place in line: our key, its lease, the claim that keeps it in line, and the
/// contender before it as of `revision`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Place {
    lease: i64,
    /// The TTL `lease` was granted with.
    ttl: i64,
    /// Our key's create revision: its token once it is first.
    created: i64,
    /// The waiting claim that keeps the key in line, if this client made it.
    claim: Option<AttemptId>,
    predecessor: Vec<u8>,
    revision: i64,
}

/// The etcd keys of one lock and one value.
struct Keys {
    /// The lock's name (its key, with the client's key prefix).
    name: String,
    /// `K\0H`: the value's key in the lock's line.
    contender: String,
    /// `K\0~cH\0`: the prefix of the value's claims.
    claims: String,
}

impl Keys {
    fn new(key: &str, val: &str) -> Keys {
        let hash = format!("{:016x}", value_hash(val.as_bytes()));
        Keys::of_hash(key, &hash)
    }

    fn of_hash(key: &str, hash: &str) -> Keys {
        Keys {
            name: key.to_owned(),
            contender: format!("{key}{SEP}{hash}"),
            claims: format!("{key}{SEP}~c{hash}{SEP}"),
        }
    }

    /// The claim of `attempt`.
    fn claim(&self, attempt: AttemptId) -> String {
        format!("{}{attempt}", self.claims)
    }

    /// The end of the claims' range.
    fn claims_end(&self) -> String {
        let mut end = self.claims.clone();
        end.pop();
        end.push('\u{1}');
        end
    }

    /// The record of aborted `attempt`.
    fn aborted(&self, attempt: AttemptId) -> String {
        format!("{}{SEP}~a{attempt}", self.name)
    }

    /// The line: `[K\0 0, K\0 g)`, every contender key of the lock and nothing else.
    fn line(&self) -> (String, String) {
        line(&self.name)
    }

    fn claims_range(&self) -> GetOptions {
        GetOptions::new().with_range(self.claims_end())
    }
}

fn line(name: &str) -> (String, String) {
    (format!("{name}{SEP}0"), format!("{name}{SEP}g"))
}

/// The line's first key (the holder), by create revision.
fn first_in_line(end: String) -> GetOptions {
    GetOptions::new()
        .with_range(end)
        .with_sort(SortTarget::Create, SortOrder::Ascend)
        .with_limit(1)
        .with_keys_only()
}

/// The last key of the line created at or before `revision` (`0`: any).
fn last_in_line(end: String, revision: i64, limit: i64) -> GetOptions {
    let options = GetOptions::new()
        .with_range(end)
        .with_sort(SortTarget::Create, SortOrder::Descend)
        .with_limit(limit)
        .with_keys_only();
    if revision > 0 {
        options.with_max_create_revision(revision)
    } else {
        options
    }
}

/// How a waiter's turn went.
enum Turn {
    /// Its key is first: the lock is ours.
    Mine,
    /// Still in line, behind `predecessor` as of `revision`.
    Waiting { predecessor: Vec<u8>, revision: i64 },
    /// The place is gone (or changed): acquire afresh.
    Gone,
    /// The attempt was aborted.
    Refused,
}

/// What the reads of an acquire found.
struct Found {
    revision: i64,
    ours: Option<KeyValue>,
    claims: Vec<KeyValue>,
    aborted: bool,
    first: Option<KeyValue>,
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
            client,
            min_ttl: u64::try_from(min_ttl).unwrap_or(1).max(1),
            queue: options.queue,
            waiters,
            places: Arc::default(),
            watching,
            abort_lease: Mutex::new(None),
        };
        Ok((store, format!("etcd {}", endpoints.join(","))))
    }

    fn kv(&self) -> etcd::KvClient {
        self.client.kv_client()
    }

    /// The lease TTL granted for `expiration`, in whole seconds.
    fn ttl(&self, expiration: Duration) -> i64 {
        let secs = expiration.as_secs() + u64::from(expiration.subsec_nanos() > 0);
        i64::try_from(secs.max(self.min_ttl)).unwrap_or(i64::MAX)
    }

    /// Grant a lease of `ttl` seconds, with id `id` (`0`: the server picks one). A lease
    /// `id` that exists already was granted by an earlier try of the same attempt.
    async fn grant_lease(&self, id: i64, ttl: i64) -> Result<i64> {
        let options = etcd::LeaseGrantOptions::new().with_id(id);
        let granted = match self.client.lease_client().grant(ttl, Some(options)).await {
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
    fn revoke_detached(&self, leases: impl IntoIterator<Item = i64>) {
        let leases: Vec<i64> = leases.into_iter().filter(|l| *l != 0).collect();
        if leases.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let client = self.client.lease_client();
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
    async fn lease_info(&self, lease: i64, key: Option<&str>) -> Result<Option<(i64, i64, bool)>> {
        let options = key.map(|_| LeaseTimeToLiveOptions::new().with_keys());
        match self
            .client
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

    async fn get(&self, key: &str, options: Option<GetOptions>) -> Result<(i64, Vec<KeyValue>)> {
        let mut got = self.kv().get(key, options).await.map_err(failure)?;
        let revision = got.header().map_or(0, |h| h.revision());
        Ok((revision, got.take_kvs()))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.kv().txn(txn).await.map_err(failure)
    }

    fn place_of(&self, contender: &str) -> Option<Place> {
        self.places
            .lock()
            .get(contender)
            .map(|sender| sender.borrow().clone())
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

    /// Forget the place in line of `contender`: its watcher ends.
    fn forget(&self, contender: &str) {
        self.places.lock().remove(contender);
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
        let keys = Keys::new(key, val);
        if let Some(place) = self.place_of(&keys.contender) {
            match self.turn(&keys, val, &place, attempt).await? {
                Turn::Mine => {
                    self.forget(&keys.contender);
                    if place.ttl < ttl {
                        // The place's lease is shorter than this call asks for.
                        self.extend(&keys, val, place.created, ttl, attempt).await?;
                    }
                    return Ok(Acquire::Acquired(token(place.created)?));
                }
                Turn::Waiting {
                    predecessor,
                    revision,
                } => {
                    self.remember(
                        &keys.contender,
                        Place {
                            predecessor,
                            revision,
                            ..place
                        },
                    );
                    return Ok(Acquire::Held(None));
                }
                Turn::Refused => return Err(aborted()),
                // Acquire afresh. The place stays remembered (and watched) until the
                // attempt below replaces it or the call ends.
                Turn::Gone => {}
            }
        }
        let lease = self.grant_lease(lease_id(attempt), ttl).await?;
        let reply = self
            .txn(self.acquire_txn(&keys, val, attempt, lease))
            .await?;
        let revision = reply.header().map_or(0, |h| h.revision());
        if reply.succeeded() {
            self.forget(&keys.contender);
            return Ok(Acquire::Acquired(token(revision)?));
        }
        let mut responses = reply.op_responses();
        if self.queue {
            let Some(TxnOpResponse::Txn(inner)) = responses.pop() else {
                return Err(unexpected());
            };
            if inner.succeeded() {
                // In line behind the last key before ours.
                let line = gets(&inner).pop().unwrap_or_default();
                let Some(predecessor) = line.get(1) else {
                    return Err(unexpected());
                };
                self.remember(
                    &keys.contender,
                    Place {
                        lease,
                        ttl,
                        created: revision,
                        claim: Some(attempt),
                        predecessor: predecessor.key().to_vec(),
                        revision,
                    },
                );
                return Ok(Acquire::Held(None));
            }
            responses = inner.op_responses();
        }
        let found = found(revision, responses)?;
        if found.aborted {
            self.revoke_detached([lease]);
            return Err(aborted());
        }
        let ours = found
            .ours
            .as_ref()
            .filter(|kv| kv.value() == val.as_bytes());
        let Some(ours) = ours else {
            // Another value holds the key (or our hash's key holds another value).
            self.revoke_detached([lease]);
            return Ok(Acquire::Held(None));
        };
        let created = ours.create_revision();
        let first = found.first.as_ref().map(KeyValue::key);
        if first == Some(keys.contender.as_bytes()) {
            // Ours, and first in line: a re-arm, with this attempt's claim.
            let acquired = self.rearm(&keys, val, &found, ttl, attempt, lease).await?;
            self.forget(&keys.contender);
            return Ok(acquired);
        }
        // Ours, waiting in line (an earlier try of this attempt, or another call's).
        if ours.lease() != lease {
            self.revoke_detached([lease]);
        }
        if self.queue {
            let claim = keys.claim(attempt);
            let mine = found.claims.iter().any(|c| c.key() == claim.as_bytes());
            let (revision, before) = self
                .get(
                    &keys.line().0,
                    Some(last_in_line(keys.line().1, created - 1, 1)),
                )
                .await?;
            if let Some(predecessor) = before.first() {
                self.remember(
                    &keys.contender,
                    Place {
                        lease: ours.lease(),
                        ttl,
                        created,
                        claim: mine.then_some(attempt),
                        predecessor: predecessor.key().to_vec(),
                        revision,
                    },
                );
            }
        }
        Ok(Acquire::Held(None))
    }

    /// The transaction of an acquire on `lease`: create `val`'s key with this attempt's
    /// claim if the line is empty; else (on a store that queues) put it in line with a
    /// waiting claim; else read what is there.
    fn acquire_txn(&self, keys: &Keys, val: &str, attempt: AttemptId, lease: i64) -> Txn {
        let (start, end) = keys.line();
        let on_lease = || Some(PutOptions::new().with_lease(lease));
        let absent = || {
            vec![
                Compare::create_revision(keys.contender.as_str(), CompareOp::Equal, 0),
                Compare::create_revision(keys.aborted(attempt), CompareOp::Equal, 0),
            ]
        };
        let create = |claim: &str| {
            vec![
                TxnOp::put(keys.contender.as_str(), val, on_lease()),
                TxnOp::put(keys.claim(attempt), claim, on_lease()),
            ]
        };
        let reads = vec![
            TxnOp::get(keys.contender.as_str(), None),
            TxnOp::get(keys.claims.as_str(), Some(keys.claims_range())),
            TxnOp::get(
                keys.aborted(attempt),
                Some(GetOptions::new().with_count_only()),
            ),
            TxnOp::get(start.as_str(), Some(first_in_line(end.clone()))),
        ];
        let mut when = absent();
        when.push(
            Compare::create_revision(start.as_str(), CompareOp::Equal, 0).with_range(end.as_str()),
        );
        let otherwise = if self.queue {
            let mut queued = create(WAITING);
            queued.push(TxnOp::get(start.as_str(), Some(last_in_line(end, 0, 2))));
            vec![TxnOp::txn(
                Txn::new().when(absent()).and_then(queued).or_else(reads),
            )]
        } else {
            reads
        };
        Txn::new()
            .when(when)
            .and_then(create(HOLDING))
            .or_else(otherwise)
    }

    /// A waiter's next attempt: its key first in line takes the lock (this attempt's
    /// claim replaces the waiting one, and the place's lease is re-armed at the same
    /// time); else it names the key now before ours.
    async fn turn(
        &self,
        keys: &Keys,
        val: &str,
        place: &Place,
        attempt: AttemptId,
    ) -> Result<Turn> {
        let (start, end) = keys.line();
        let contender = keys.contender.as_str();
        let mut take = vec![TxnOp::put(
            keys.claim(attempt),
            HOLDING,
            Some(PutOptions::new().with_lease(place.lease)),
        )];
        if let Some(claim) = place.claim {
            take.push(TxnOp::delete(keys.claim(claim), None));
        }
        let txn = Txn::new()
            .when([
                Compare::value(contender, CompareOp::Equal, val),
                Compare::create_revision(contender, CompareOp::Equal, place.created),
                Compare::lease(contender, CompareOp::Equal, place.lease),
                // No key before ours: every key in line was created at or after ours.
                Compare::create_revision(start.as_str(), CompareOp::Greater, place.created - 1)
                    .with_range(end.as_str()),
                Compare::create_revision(keys.aborted(attempt), CompareOp::Equal, 0),
            ])
            .and_then(take)
            .or_else([
                TxnOp::get(contender, None),
                TxnOp::get(
                    start.as_str(),
                    Some(last_in_line(end, place.created - 1, 1)),
                ),
                TxnOp::get(
                    keys.aborted(attempt),
                    Some(GetOptions::new().with_count_only()),
                ),
            ]);
        // The lease is re-armed while the transaction runs: both are sent after the
        // attempt started, so the key is ours for its full TTL from then on.
        let (reply, kept) =
            futures::future::join(self.txn(txn), keep_alive(&self.client, place.lease)).await;
        let reply = reply?;
        if reply.succeeded() {
            return match kept? {
                true => Ok(Turn::Mine),
                false => Err(transient("the lease ran out during the attempt")),
            };
        }
        let revision = reply.header().map_or(0, |h| h.revision());
        let mut responses = gets(&reply).into_iter();
        let ours = responses.next().unwrap_or_default();
        let before = responses.next().unwrap_or_default();
        if count(&reply, 2) > 0 {
            return Ok(Turn::Refused);
        }
        let same = ours.first().is_some_and(|kv| {
            kv.value() == val.as_bytes()
                && kv.create_revision() == place.created
                && kv.lease() == place.lease
        });
        match before.first() {
            Some(predecessor) if same => Ok(Turn::Waiting {
                predecessor: predecessor.key().to_vec(),
                revision,
            }),
            _ => Ok(Turn::Gone),
        }
    }

    /// Re-arm `val`'s key, first in line (as `found` read it), with `attempt`'s claim:
    /// its lease kept alive if it was granted at least `ttl`, else the key and its claims
    /// moved to `lease` (this attempt's, granted `ttl`). Waiting claims are dropped: the
    /// key is held now.
    async fn rearm(
        &self,
        keys: &Keys,
        val: &str,
        found: &Found,
        ttl: i64,
        attempt: AttemptId,
        lease: i64,
    ) -> Result<Acquire> {
        let Some(ours) = &found.ours else {
            return Err(unexpected());
        };
        let created = ours.create_revision();
        let current = ours.lease();
        let granted = match current {
            // No lease (set by hand): no expiry to re-arm.
            0 => i64::MAX,
            _ => match self.lease_info(current, None).await? {
                Some((granted, _, _)) => granted,
                None => return Err(transient("the key's lease ran out during the attempt")),
            },
        };
        if granted < ttl {
            if !self
                .move_key(
                    keys,
                    val,
                    ours,
                    &found.claims,
                    found.revision,
                    lease,
                    Some(attempt),
                )
                .await?
            {
                return Err(transient("the key changed during the attempt"));
            }
            self.revoke_detached([current]);
            return Ok(Acquire::Acquired(token(created)?));
        }
        let contender = keys.contender.as_str();
        let mut then = vec![TxnOp::put(
            keys.claim(attempt),
            HOLDING,
            (current != 0).then(|| PutOptions::new().with_lease(current)),
        )];
        let claim = keys.claim(attempt);
        for waiting in &found.claims {
            if waiting.value() == WAITING.as_bytes() && waiting.key() != claim.as_bytes() {
                then.push(TxnOp::delete(waiting.key(), None));
            }
        }
        let txn = Txn::new()
            .when([
                Compare::value(contender, CompareOp::Equal, val),
                Compare::create_revision(contender, CompareOp::Equal, created),
                Compare::lease(contender, CompareOp::Equal, current),
                Compare::create_revision(keys.aborted(attempt), CompareOp::Equal, 0),
            ])
            .and_then(then);
        let kept = async {
            match current {
                0 => Ok(true),
                _ => keep_alive(&self.client, current).await,
            }
        };
        let (reply, kept) = futures::future::join(self.txn(txn), kept).await;
        if !reply?.succeeded() || !kept? {
            return Err(transient("the key changed during the attempt"));
        }
        if lease != current {
            self.revoke_detached([lease]);
        }
        Ok(Acquire::Acquired(token(created)?))
    }

    /// Move `val`'s key `ours` and its `claims` (read at `revision`) to `lease`, adding
    /// the claim of `attempt` (dropping waiting ones then), unless anything changed since;
    /// then re-arm `lease` (so that the move never shortens the key). `false`: changed.
    #[allow(clippy::too_many_arguments)]
    async fn move_key(
        &self,
        keys: &Keys,
        val: &str,
        ours: &KeyValue,
        claims: &[KeyValue],
        revision: i64,
        lease: i64,
        attempt: Option<AttemptId>,
    ) -> Result<bool> {
        let contender = keys.contender.as_str();
        let on_lease = || Some(PutOptions::new().with_lease(lease));
        let mut when = vec![
            Compare::value(contender, CompareOp::Equal, val),
            Compare::create_revision(contender, CompareOp::Equal, ours.create_revision()),
            Compare::lease(contender, CompareOp::Equal, ours.lease()),
            // No claim added or changed since they were read ...
            Compare::mod_revision(keys.claims.as_str(), CompareOp::Less, revision + 1)
                .with_range(keys.claims_end()),
        ];
        let mut then = vec![TxnOp::put(contender, val, on_lease())];
        let added = attempt.map(|a| keys.claim(a));
        for claim in claims {
            // ... nor retired (a put would bring it back).
            when.push(Compare::create_revision(
                claim.key(),
                CompareOp::Equal,
                claim.create_revision(),
            ));
            if added
                .as_deref()
                .is_some_and(|a| a.as_bytes() == claim.key())
            {
                continue;
            }
            if attempt.is_some() && claim.value() == WAITING.as_bytes() {
                then.push(TxnOp::delete(claim.key(), None));
            } else {
                then.push(TxnOp::put(claim.key(), claim.value(), on_lease()));
            }
        }
        if let (Some(claim), Some(attempt)) = (added, attempt) {
            when.push(Compare::create_revision(
                keys.aborted(attempt),
                CompareOp::Equal,
                0,
            ));
            then.push(TxnOp::put(claim, HOLDING, on_lease()));
        }
        if !self
            .txn(Txn::new().when(when).and_then(then))
            .await?
            .succeeded()
        {
            return Ok(false);
        }
        keep_alive(&self.client, lease).await
    }

    /// After a waiter's turn: its key, on the place's lease, needs a longer one.
    async fn extend(
        &self,
        keys: &Keys,
        val: &str,
        created: i64,
        ttl: i64,
        attempt: AttemptId,
    ) -> Result<()> {
        let lease = self.grant_lease(lease_id(attempt), ttl).await?;
        for _ in 0..3 {
            let txn = Txn::new().and_then([
                TxnOp::get(keys.contender.as_str(), None),
                TxnOp::get(keys.claims.as_str(), Some(keys.claims_range())),
            ]);
            let reply = self.txn(txn).await?;
            let revision = reply.header().map_or(0, |h| h.revision());
            let mut read = gets(&reply).into_iter();
            let ours = read.next().unwrap_or_default().into_iter().next();
            let claims = read.next().unwrap_or_default();
            let Some(ours) =
                ours.filter(|kv| kv.value() == val.as_bytes() && kv.create_revision() == created)
            else {
                return Err(transient("the key changed during the attempt"));
            };
            if ours.lease() == lease {
                return Ok(());
            }
            if self
                .move_key(keys, val, &ours, &claims, revision, lease, None)
                .await?
            {
                self.revoke_detached([ours.lease()]);
                return Ok(());
            }
        }
        Err(transient("the key changed during the attempt"))
    }

    /// `val`'s key of `key` if it holds `val` and was created at `token`.
    async fn held(&self, keys: &Keys, val: &str, token: u64) -> Result<Option<KeyValue>> {
        let (_, kvs) = self.get(&keys.contender, None).await?;
        Ok(kvs.into_iter().next().filter(|kv| {
            kv.value() == val.as_bytes() && u64::try_from(kv.create_revision()) == Ok(token)
        }))
    }

    async fn refresh_now(
        &self,
        key: &str,
        val: &str,
        token: u64,
        expiration: Duration,
    ) -> Result<bool> {
        check_name("key", key)?;
        let ttl = self.ttl(expiration);
        let keys = Keys::new(key, val);
        for _ in 0..3 {
            let Some(ours) = self.held(&keys, val, token).await? else {
                return Ok(false);
            };
            let current = ours.lease();
            if current == 0 {
                return Ok(true); // no expiry to re-arm
            }
            if !keep_alive(&self.client, current).await? {
                continue; // moved to another lease, or going
            }
            // Re-armed; and the key still on that lease afterwards: held at least until
            // then + the lease's TTL.
            match self.lease_info(current, Some(&keys.contender)).await? {
                Some((granted, _, true)) if granted >= ttl => return Ok(true),
                Some((_, _, true)) => {}
                _ => continue,
            }
            // A longer expiration than the key's lease: a new lease for the key.
            let lease = self.grant_lease(0, ttl).await?;
            let (revision, claims) = self.get(&keys.claims, Some(keys.claims_range())).await?;
            if self
                .move_key(&keys, val, &ours, &claims, revision, lease, None)
                .await?
            {
                self.revoke_detached([current]);
                return Ok(true);
            }
            self.revoke_detached([lease]);
        }
        Err(transient("the key kept changing leases"))
    }

    async fn release_now(&self, key: &str, val: &str, claims: &[AttemptId]) -> Result<bool> {
        check_name("key", key)?;
        let keys = Keys::new(key, val);
        let mut named: Vec<String> = claims.iter().map(|c| keys.claim(*c)).collect();
        named.sort_unstable();
        named.dedup();
        if named.is_empty() {
            return Ok(false);
        }
        if named.len() <= CHAIN_MAX {
            let reply = self.txn(release_chain(&keys, val, &named, 0)).await?;
            let (mine, deleted) = released(&reply);
            if let Some(lease) = deleted {
                self.revoke_detached([lease]);
            }
            return Ok(mine);
        }
        // Many claims: retire them, then delete the key if none is left.
        let mut mine = false;
        let mut created = None;
        for chunk in named.chunks(ABORT_CHUNK) {
            let mut ops: Vec<TxnOp> = chunk
                .iter()
                .map(|c| TxnOp::delete(c.as_str(), None))
                .collect();
            ops.push(TxnOp::get(keys.contender.as_str(), None));
            let reply = self
                .txn(
                    Txn::new()
                        .when([Compare::value(
                            keys.contender.as_str(),
                            CompareOp::Equal,
                            val,
                        )])
                        .and_then(ops),
                )
                .await?;
            if !reply.succeeded() {
                return Ok(mine);
            }
            mine |= deleted_count(&reply) > 0;
            created = gets(&reply)
                .pop()
                .and_then(|kvs| kvs.first().map(KeyValue::create_revision));
        }
        if let (true, Some(created)) = (mine, created) {
            let reply = self
                .txn(delete_if_unclaimed(&keys, val, Some(created), &[]))
                .await?;
            if let Some(lease) = released(&reply).1 {
                self.revoke_detached([lease]);
            }
        }
        Ok(mine)
    }

    async fn pttl_now(&self, key: &str, val: &str, token: u64) -> Result<Option<Duration>> {
        check_name("key", key)?;
        let keys = Keys::new(key, val);
        for _ in 0..3 {
            let Some(ours) = self.held(&keys, val, token).await? else {
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

    /// The lease of the records of aborted attempts: granted for twice
    /// [`ABORT_MEMORY`], used while it has at least that long left.
    async fn abort_lease(&self, renew: bool) -> Result<i64> {
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

    async fn abort_now(&self, key: &str, val: &str, attempts: &[AttemptId]) -> Result<()> {
        check_name("key", key)?;
        let keys = Keys::new(key, val);
        let mut attempts = attempts.to_vec();
        attempts.sort_unstable_by_key(|a| (a.client, a.seq));
        attempts.dedup();
        if attempts.is_empty() {
            return Ok(());
        }
        let mut records = self.abort_lease(false).await?;
        let chunks: Vec<&[AttemptId]> = attempts.chunks(ABORT_CHUNK).collect();
        let mut kept = None;
        let mut deleted = None;
        for (i, chunk) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            let mut tries = 0;
            let reply = loop {
                let txn = abort_txn(&keys, val, chunk, records, last);
                match self.txn(txn).await {
                    // The records' lease is gone (a restored backup, a long outage):
                    // grant another one.
                    Err(Error::Store(e))
                        if tries == 0 && e.to_string().contains("lease not found") =>
                    {
                        tries += 1;
                        records = self.abort_lease(true).await?;
                    }
                    reply => break reply?,
                }
            };
            if last {
                if reply.succeeded() {
                    deleted = released(&reply).1;
                } else {
                    kept = gets(&reply)
                        .pop()
                        .and_then(|kvs| kvs.into_iter().next())
                        .filter(|kv| kv.value() == val.as_bytes());
                }
            }
        }
        let place = self.place_of(&keys.contender);
        if deleted.is_some()
            || place.is_some_and(|p| p.claim.is_some_and(|c| attempts.contains(&c)))
        {
            self.forget(&keys.contender);
        }
        // The attempts' own leases hold nothing now, unless one is the lease of the key
        // that stays.
        let keep = kept.as_ref().map(KeyValue::lease);
        let leases = attempts
            .iter()
            .map(|a| lease_id(*a))
            .chain(deleted)
            .filter(|l| Some(*l) != keep);
        self.revoke_detached(leases);
        Ok(())
    }

    async fn force_release_now(&self, key: &str, only: Option<u64>) -> Result<bool> {
        check_name("key", key)?;
        let (start, end) = line(key);
        for _ in 0..3 {
            let (_, first) = self.get(&start, Some(first_in_line(end.clone()))).await?;
            let Some(holder) = first.into_iter().next() else {
                return Ok(false);
            };
            let Some(hash) = contender_hash(key, holder.key()) else {
                return Ok(false);
            };
            if only.is_some_and(|t| u64::try_from(holder.create_revision()).ok() != Some(t)) {
                return Ok(false);
            }
            let keys = Keys::of_hash(key, hash);
            let txn = Txn::new()
                .when([Compare::create_revision(
                    holder.key(),
                    CompareOp::Equal,
                    holder.create_revision(),
                )])
                .and_then([
                    TxnOp::delete(holder.key(), None),
                    TxnOp::delete(
                        keys.claims.as_str(),
                        Some(DeleteOptions::new().with_range(keys.claims_end())),
                    ),
                ]);
            if self.txn(txn).await?.succeeded() {
                self.revoke_detached([holder.lease()]);
                return Ok(true);
            }
        }
        Err(transient("the lock kept changing hands"))
    }

    /// The lock of `name` whose holder is `holder` (a contender key), as an operator sees
    /// it; `None` if its lease is gone.
    async fn inspected(&self, name: &str, holder: &KeyValue) -> Result<Option<Inspected>> {
        let Some(hash) = contender_hash(name, holder.key()) else {
            return Ok(None);
        };
        let ttl = match holder.lease() {
            0 => None,
            lease => match self.lease_info(lease, None).await? {
                Some((_, left, _)) => Some(Duration::from_secs(left.max(0) as u64)),
                None => return Ok(None),
            },
        };
        Ok(Some(Inspected {
            key: name.to_owned(),
            ttl,
            token: token(holder.create_revision())?,
            holder: hash.to_owned(),
        }))
    }

    async fn inspect_now(&self, key: &str) -> Result<Option<Inspected>> {
        check_name("key", key)?;
        let (start, end) = line(key);
        let (_, first) = self.get(&start, Some(first_in_line(end))).await?;
        match first.first() {
            Some(holder) => self.inspected(key, holder).await,
            None => Ok(None),
        }
    }

    async fn list_now(&self, prefix: &str, timeout: Duration) -> Result<Vec<Inspected>> {
        // Every key under the prefix, a page at a time (keys only): the first of each
        // lock's line holds it.
        let end = prefix_end(prefix.as_bytes());
        let mut from = if prefix.is_empty() {
            vec![0]
        } else {
            prefix.as_bytes().to_vec()
        };
        let mut holders: BTreeMap<String, KeyValue> = BTreeMap::new();
        loop {
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(LIST_PAGE)
                .with_keys_only();
            let mut page = within(timeout, Retry::Transient, || {
                let mut kv = self.kv();
                let (from, options) = (from.clone(), options.clone());
                async move { kv.get(from, Some(options)).await.map_err(failure) }
            })
            .await?;
            let more = page.more();
            let kvs = page.take_kvs();
            for kv in &kvs {
                let Some(name) = lock_name(kv.key()) else {
                    continue;
                };
                let earlier = holders
                    .get(name)
                    .is_some_and(|h| h.create_revision() < kv.create_revision());
                if !earlier {
                    holders.insert(name.to_owned(), kv.clone());
                }
            }
            match kvs.last() {
                Some(last) if more => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        let mut locks = Vec::with_capacity(holders.len());
        let holders: Vec<(String, KeyValue)> = holders.into_iter().collect();
        // A few at a time: a listing must not crowd out the locks' own traffic.
        for batch in holders.chunks(64) {
            let inspected = futures::future::join_all(batch.iter().map(|(name, holder)| {
                within(timeout, Retry::Transient, || self.inspected(name, holder))
            }))
            .await;
            for lock in inspected {
                locks.extend(lock?);
            }
        }
        Ok(locks)
    }

    async fn fenced_now(&self, access: &Fence<'_>) -> Result<Fenced> {
        check_name("resource", access.resource)?;
        let record_key = format!("{}{RESOURCE_SUFFIX}", access.resource);
        // The holder's digest, not its value: a lock value never rests in clear here.
        let holder = access
            .holder
            .map(|h| format!("{:016x}", value_hash(h.as_bytes())));
        loop {
            let (_, current) = self.get(&record_key, None).await?;
            let current = current.into_iter().next();
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
            if self.txn(txn).await?.succeeded() {
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
            self.client.clone(),
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

/// The reads of an acquire that found a key there: ours, our claims, the record of this
/// attempt's abort, the first in line.
fn found(revision: i64, responses: Vec<TxnOpResponse>) -> Result<Found> {
    let mut ours = None;
    let mut claims = Vec::new();
    let mut aborted = false;
    let mut first = None;
    for (i, response) in responses.into_iter().enumerate() {
        let TxnOpResponse::Get(mut got) = response else {
            return Err(unexpected());
        };
        match i {
            0 => ours = got.take_kvs().into_iter().next(),
            1 => claims = got.take_kvs(),
            2 => aborted = got.count() > 0,
            _ => first = got.take_kvs().into_iter().next(),
        }
    }
    Ok(Found {
        revision,
        ours,
        claims,
        aborted,
        first,
    })
}

/// The key-value lists of a transaction's gets, in order.
fn gets(reply: &TxnResponse) -> Vec<Vec<KeyValue>> {
    reply
        .op_responses()
        .into_iter()
        .filter_map(|r| match r {
            TxnOpResponse::Get(mut got) => Some(got.take_kvs()),
            _ => None,
        })
        .collect()
}

/// The count of a transaction's `n`th operation, if a get.
fn count(reply: &TxnResponse, n: usize) -> i64 {
    match reply.op_responses().into_iter().nth(n) {
        Some(TxnOpResponse::Get(got)) => got.count(),
        _ => 0,
    }
}

/// How many keys a transaction's deletes deleted.
fn deleted_count(reply: &TxnResponse) -> i64 {
    reply
        .op_responses()
        .into_iter()
        .map(|r| match r {
            TxnOpResponse::Delete(deleted) => deleted.deleted(),
            _ => 0,
        })
        .sum()
}

/// The ranges of `val`'s claims other than `named` (sorted): each compared empty.
fn others_unclaimed(keys: &Keys, named: &[String]) -> Vec<Compare> {
    let mut compares = Vec::with_capacity(named.len() + 1);
    let mut from = keys.claims.clone();
    for claim in named {
        if from.as_str() < claim.as_str() {
            compares.push(
                Compare::create_revision(from.as_str(), CompareOp::Equal, 0)
                    .with_range(claim.as_str()),
            );
        }
        from = format!("{claim}{SEP}");
    }
    compares
        .push(Compare::create_revision(from, CompareOp::Equal, 0).with_range(keys.claims_end()));
    compares
}

/// Delete `val`'s key (and its claims' range) if it holds `val` (created at `created`,
/// if given) and no claim but `named` is left.
fn delete_if_unclaimed(keys: &Keys, val: &str, created: Option<i64>, named: &[String]) -> Txn {
    let contender = keys.contender.as_str();
    let mut when = vec![Compare::value(contender, CompareOp::Equal, val)];
    if let Some(created) = created {
        when.push(Compare::create_revision(
            contender,
            CompareOp::Equal,
            created,
        ));
    }
    when.extend(others_unclaimed(keys, named));
    Txn::new().when(when).and_then(delete_all(keys))
}

/// Delete `val`'s key, with its previous value (for its lease), and every claim of it.
fn delete_all(keys: &Keys) -> Vec<TxnOp> {
    vec![
        TxnOp::delete(
            keys.contender.as_str(),
            Some(DeleteOptions::new().with_prev_key()),
        ),
        TxnOp::delete(
            keys.claims.as_str(),
            Some(DeleteOptions::new().with_range(keys.claims_end())),
        ),
    ]
}

/// A release of claims `named` (sorted, distinct): level `i` deletes the key if it holds
/// `val`, claim `i` is there and no other claim is; else it tries level `i + 1`; the last
/// one's `else` retires the named claims (the key stays: another claim keeps it, or none
/// of the named held it).
fn release_chain(keys: &Keys, val: &str, named: &[String], i: usize) -> Txn {
    let mut when = vec![
        Compare::value(keys.contender.as_str(), CompareOp::Equal, val),
        Compare::create_revision(named[i].as_str(), CompareOp::Greater, 0),
    ];
    when.extend(others_unclaimed(keys, named));
    let otherwise = if i + 1 < named.len() {
        vec![TxnOp::txn(release_chain(keys, val, named, i + 1))]
    } else {
        named
            .iter()
            .map(|c| TxnOp::delete(c.as_str(), None))
            .collect()
    };
    Txn::new()
        .when(when)
        .and_then(delete_all(keys))
        .or_else(otherwise)
}

/// What a release chain (or a delete of [`delete_all`]) did: whether any named claim was
/// there, and the lease of the key if it was deleted.
fn released(reply: &TxnResponse) -> (bool, Option<i64>) {
    let responses = reply.op_responses();
    if reply.succeeded() {
        let lease = responses.iter().find_map(|r| match r {
            TxnOpResponse::Delete(deleted) => deleted.prev_kvs().first().map(KeyValue::lease),
            _ => None,
        });
        return (true, lease);
    }
    match responses.first() {
        Some(TxnOpResponse::Txn(inner)) => released(inner),
        _ => (deleted_count(reply) > 0, None),
    }
}

/// One chunk of an abort: record `attempts` (on the `records` lease) and retire their
/// claims; the `last` chunk also deletes `val`'s key if no claim is left (else reads it).
fn abort_txn(keys: &Keys, val: &str, attempts: &[AttemptId], records: i64, last: bool) -> Txn {
    let named: Vec<String> = {
        let mut named: Vec<String> = attempts.iter().map(|a| keys.claim(*a)).collect();
        named.sort_unstable();
        named
    };
    let record = |a: &AttemptId| {
        TxnOp::put(
            keys.aborted(*a),
            "",
            Some(PutOptions::new().with_lease(records)),
        )
    };
    let mut retire: Vec<TxnOp> = attempts.iter().map(record).collect();
    retire.extend(named.iter().map(|c| TxnOp::delete(c.as_str(), None)));
    if !last {
        return Txn::new().and_then(retire);
    }
    retire.push(TxnOp::get(keys.contender.as_str(), None));
    let mut delete: Vec<TxnOp> = attempts.iter().map(record).collect();
    delete.extend(delete_all(keys));
    let mut when = vec![Compare::value(
        keys.contender.as_str(),
        CompareOp::Equal,
        val,
    )];
    when.extend(others_unclaimed(keys, &named));
    Txn::new().when(when).and_then(delete).or_else(retire)
}

/// The hash of a contender key of lock `name`, if `key` is one.
fn contender_hash<'a>(name: &str, key: &'a [u8]) -> Option<&'a str> {
    let hash = key.strip_prefix(name.as_bytes())?.strip_prefix(&[0u8])?;
    let hash = std::str::from_utf8(hash).ok()?;
    (hash.len() == 16 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then_some(hash)
}

/// The lock name of a contender key, if `key` is one.
fn lock_name(key: &[u8]) -> Option<&str> {
    let at = key.iter().position(|b| *b == 0)?;
    let name = std::str::from_utf8(&key[..at]).ok()?;
    contender_hash(name, key).map(|_| name)
}

/// The end of the range of keys starting with `prefix` (`\0`: to the end of the keyspace).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
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
            Instant::now() + keep_every,
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
        token: u64,
        expiration: Duration,
        timeout: Duration,
    ) -> Result<bool> {
        within(timeout, Retry::Transient, || {
            self.refresh_now(key, val, token, expiration)
        })
        .await
    }

    async fn release(
        &self,
        key: &str,
        val: &str,
        claims: &[AttemptId],
        timeout: Duration,
    ) -> Result<bool> {
        within(timeout, Retry::Unsent, || {
            self.release_now(key, val, claims)
        })
        .await
    }

    async fn abort(
        &self,
        key: &str,
        val: &str,
        attempts: &[AttemptId],
        timeout: Duration,
    ) -> Result<()> {
        within(timeout, Retry::Transient, || {
            self.abort_now(key, val, attempts)
        })
        .await
    }

    async fn pttl(
        &self,
        key: &str,
        val: &str,
        token: u64,
        timeout: Duration,
    ) -> Result<Option<Duration>> {
        within(timeout, Retry::Transient, || self.pttl_now(key, val, token)).await
    }

    async fn force_release(&self, key: &str, only: Option<u64>, timeout: Duration) -> Result<bool> {
        // A delete whose answer was lost must not be tried again: the retry would find
        // the next contender at the head of the line and delete it too.
        within(timeout, Retry::Unsent, || self.force_release_now(key, only)).await
    }

    async fn inspect(&self, key: &str, timeout: Duration) -> Result<Option<Inspected>> {
        within(timeout, Retry::Transient, || self.inspect_now(key)).await
    }

    async fn list(&self, prefix: &str, timeout: Duration) -> Result<Vec<Inspected>> {
        self.list_now(prefix, timeout).await
    }

    async fn fenced(&self, access: &Fence<'_>, timeout: Duration) -> Result<Fenced> {
        within(timeout, Retry::Transient, || self.fenced_now(access)).await
    }

    /// The waiter `val` of `key` waits for its predecessor's deletion.
    fn watch_waiter(&self, key: &str, val: &str) -> Option<Watch> {
        if !self.queue {
            return None;
        }
        let contender = Keys::new(key, val).contender;
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
        self.queue
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
    /// A release whose answer was lost may have retired its claims, and trying it again
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

/// What an `etcd://` URL names: the members' endpoints and the credentials, if any.
struct Target {
    endpoints: Vec<String>,
    /// User name and password (percent-decoded).
    user: Option<(String, String)>,
    /// `etcds://`: TLS to every member.
    tls: bool,
}

/// `etcd://[user:password@]h1:p1[,h2:p2…]` → `["http://h1:p1", …]` and the credentials;
/// `etcds://…` → `https://…`. Messages never quote the URL: it may hold a password.
fn parse_url(url: &str) -> Result<Target> {
    const EXPECTED: &str = "url: expected etcd://[user:password@]host:port[,host:port…] \
                            or etcds://… (percent-encode @ : / , % in the user name and \
                            password)";
    let (rest, tls) = match (url.strip_prefix(SCHEME), url.strip_prefix(TLS_SCHEME)) {
        (Some(rest), _) => (rest, false),
        (None, Some(rest)) => (rest, true),
        (None, None) => return Err(Error::invalid(EXPECTED)),
    };
    if tls && !cfg!(feature = "tls") {
        return Err(Error::invalid(
            "url: etcds:// needs the `tls` feature (TLS to etcd)",
        ));
    }
    let http = if tls { "https" } else { "http" };
    let (user, hosts) = match rest.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let (name, password) = userinfo
                .split_once(':')
                .ok_or_else(|| Error::invalid(format!("{EXPECTED}: a user needs a password")))?;
            let name = percent_decode(name).ok_or_else(|| Error::invalid(EXPECTED))?;
            let password = percent_decode(password).ok_or_else(|| Error::invalid(EXPECTED))?;
            if name.is_empty() || password.is_empty() {
                return Err(Error::invalid(format!(
                    "{EXPECTED}: an empty user name or password"
                )));
            }
            (Some((name, password)), hosts)
        }
        None => (None, rest),
    };
    let endpoints: Vec<String> = hosts
        .trim_end_matches('/')
        .split(',')
        .map(|h| {
            let valid = !h.is_empty()
                && !h.contains(['/', '@', '?', '#', ' '])
                && h.rsplit_once(':').is_some_and(|(host, port)| {
                    !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
                });
            if valid {
                Ok(format!("{http}://{h}"))
            } else {
                Err(Error::invalid(EXPECTED))
            }
        })
        .collect::<Result<_>>()?;
    Ok(Target {
        endpoints,
        user,
        tls,
    })
}

/// `%XX` escapes decoded; `None` for a malformed escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

fn check_name(what: &str, name: &str) -> Result<()> {
    if name.contains(SEP) {
        return Err(Error::invalid(format!(
            "{what}: must not contain \\0 on etcd (it ends the lock name in etcd's keys)"
        )));
    }
    Ok(())
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
/// (so that a retry of the attempt, and its abort, can name it).
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

fn transient(message: impl Into<String>) -> Error {
    Error::Store(StoreError::new(STORE, true, message))
}

fn unexpected() -> Error {
    Error::Store(StoreError::new(
        STORE,
        false,
        "unexpected transaction reply",
    ))
}

/// Only an attempt its caller gave up on is ever aborted: nobody reads this.
fn aborted() -> Error {
    Error::Store(StoreError::new(
        STORE,
        false,
        "the acquire attempt was aborted",
    ))
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

    const ATTEMPT: AttemptId = AttemptId { client: 7, seq: 3 };

    #[test]
    fn urls_name_members_and_credentials() {
        let t = parse_url("etcd://a:1,127.0.0.1:2379").unwrap();
        assert_eq!(t.endpoints, ["http://a:1", "http://127.0.0.1:2379"]);
        assert_eq!(t.user, None);
        let t = parse_url("etcd://app:p%40ss%3Aw%2Cd@a:1,b:2/").unwrap();
        assert_eq!(t.endpoints, ["http://a:1", "http://b:2"]);
        assert_eq!(t.user, Some(("app".to_owned(), "p@ss:w,d".to_owned())));
        // A raw @ in the password still splits at the last one.
        let t = parse_url("etcd://app:p@ss@a:1").unwrap();
        assert_eq!(t.user, Some(("app".to_owned(), "p@ss".to_owned())));
        match parse_url("etcds://app:secret@a:1,b:2") {
            Ok(t) => {
                assert!(cfg!(feature = "tls") && t.tls);
                assert_eq!(t.endpoints, ["https://a:1", "https://b:2"]);
            }
            Err(e) => {
                assert!(!cfg!(feature = "tls") && e.is_invalid_argument());
                assert!(!e.to_string().contains("secret"), "{e}");
            }
        }
        for bad in [
            "etcd://",
            "etcd://a",
            "etcd://a:0",
            "etcd://a:x",
            "etcd://a:1,",
            "etcd://u@a:1",
            "etcd://:secret@a:1",
            "etcd://u:@a:1",
            "etcd://u:secret%zz@a:1",
            "etcd://u:secret%+f@a:1",
            "etcd://u:secret@",
            "etcs://a:1",
        ] {
            let err = parse_url(bad).err().expect(bad);
            assert!(err.is_invalid_argument(), "{bad}");
            assert!(!err.to_string().contains("secret"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_locks_line_holds_its_contenders_only() {
        let keys = Keys::new("a", "x");
        let (start, end) = keys.line();
        for val in ["x", "y", "a-long-value"] {
            let c = Keys::new("a", val).contender;
            assert!(c >= start && c < end, "{c:?}");
            assert_eq!(c.len(), "a".len() + 1 + 16);
            assert_eq!(lock_name(c.as_bytes()), Some("a"));
            assert_eq!(contender_hash("a", c.as_bytes()).map(str::len), Some(16));
        }
        // Companion keys sort outside the line and are no contenders.
        let claim = keys.claim(ATTEMPT);
        let aborted = keys.aborted(ATTEMPT);
        let record = format!("a{RESOURCE_SUFFIX}");
        for other in [&claim, &aborted, &record] {
            assert!(other.as_str() < start.as_str() || other.as_str() >= end.as_str());
            assert_eq!(lock_name(other.as_bytes()), None, "{other:?}");
        }
        assert!(claim.starts_with(&keys.claims) && claim < keys.claims_end());
        // Another lock whose name extends this one is outside the range.
        let other = Keys::new("a\u{1}b", "x").contender;
        assert!(other >= end);
        assert_eq!(Keys::new("k", "v").contender, Keys::new("k", "v").contender);
    }

    #[test]
    fn the_ranges_between_named_claims_cover_every_other_claim() {
        let keys = Keys::new("k", "v");
        let a = AttemptId { client: 1, seq: 9 };
        let b = AttemptId { client: 1, seq: 10 };
        let mut named = vec![keys.claim(a), keys.claim(b)];
        named.sort_unstable();
        let gaps = others_unclaimed(&keys, &named);
        assert_eq!(gaps.len(), 3);
        assert_eq!(others_unclaimed(&keys, &[]).len(), 1);
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"app:"), b"app;");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b""), b"\0");
        assert_eq!(prefix_end(b"\xff"), b"\0");
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
