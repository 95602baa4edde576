//! The lease a holder has on a key, as this process knows it without asking the store:
//! until when it is certainly held, whether it was lost, and the renewal task keeping it.
//!
//! A client keeps one [`Lease`] per key and value it holds ([`Leases`]): every [`Lock`]
//! handle of that key and value — the first acquisition and every same-value re-acquire
//! of the same incarnation (same fencing token) — shares it, because the value is the
//! holder's identity and the store holds one key with one expiration. Whatever any handle
//! confirms (an acquire, a refresh) sets that one lease's validity, shorter or longer, as
//! the store set the key's expiration: the write sent last wins, as it did on the store,
//! so no handle believes it holds past the key's expiration. Unlocking through one handle
//! ends it for all.
//!
//! [`Lock`]: crate::Lock

use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::hash::{FastHash, Identity};
use crate::store::{Acquire, AttemptId, Backend, Fence, Store};
use crate::telemetry;
use crate::validity::valid_until;
use crate::{Error, Result};
use tracing::Instrument;

/// A client's store, and the leases the client holds on it by key and value.
pub(crate) struct Leases {
    backend: Backend,
    /// What every key this client writes starts with (`ClientBuilder::key_prefix`).
    prefix: Box<str>,
    /// Stored with every acquisition (`ClientBuilder::holder_label`; `""`: none).
    label: Box<str>,
    /// Random per client: names its acquire attempts (with `next_attempt`).
    client_id: u64,
    /// Numbers the client's acquire attempts and refreshes in the order they are sent:
    /// a lease takes the validity of the last write sent that was confirmed.
    next_attempt: AtomicU64,
    hasher: FastHash,
    table: Mutex<Table>,
}

/// The leases held, and the acquire attempts in flight, by [`Pair`] hash. A lease leaves
/// lazily: dropping one costs nothing here, and dead entries are swept once as many
/// leases were added since the last sweep as the table holds (O(1) per lease).
#[derive(Default)]
struct Table {
    /// One lease per hash.
    leases: HashMap<u64, Weak<Lease>, Identity>,
    /// Leases whose hash is taken in `leases` by a lease of another pair (rare).
    crowded: Vec<Weak<Lease>>,
    added_since_sweep: usize,
    /// The write numbers of the acquire attempts in flight.
    in_flight: BTreeSet<u64>,
    /// While attempts are in flight: for each pair (by hash) released since the oldest of
    /// them was sent, the number of its last release. A grant of an attempt sent before
    /// that release may have been deleted by it, and is not believed (the call tries
    /// again at once). Empty whenever no attempt is in flight: a release then precedes
    /// every later attempt.
    releases: HashMap<u64, u64, Identity>,
}

impl Table {
    /// The lease of `pair`, if one is alive.
    fn find(&self, pair: Pair<'_>) -> Option<Arc<Lease>> {
        match self.leases.get(&pair.hash).and_then(Weak::upgrade) {
            Some(lease) if pair.is(&lease) => Some(lease),
            Some(_) => self
                .crowded
                .iter()
                .filter_map(Weak::upgrade)
                .find(|lease| pair.is(lease)),
            None => None,
        }
    }

    /// Add `lease` for `pair`, in place of any lease of the pair before it.
    fn add(&mut self, pair: Pair<'_>, lease: &Arc<Lease>) {
        let weak = Arc::downgrade(lease);
        match self.leases.get(&pair.hash).and_then(Weak::upgrade) {
            Some(other) if !pair.is(&other) => {
                self.crowded
                    .retain(|w| w.upgrade().is_some_and(|l| !pair.is(&l)));
                self.crowded.push(weak);
            }
            _ => {
                self.leases.insert(pair.hash, weak);
            }
        }
        self.added_since_sweep += 1;
        if self.added_since_sweep >= self.leases.len().max(64) {
            self.added_since_sweep = 0;
            self.leases.retain(|_, w| w.strong_count() > 0);
            self.crowded.retain(|w| w.strong_count() > 0);
        }
    }
}

/// An acquire attempt in flight, until its answer is read or its future dropped.
struct InFlight<'a> {
    leases: &'a Leases,
    seq: u64,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut table = self.leases.table.lock();
        table.in_flight.remove(&self.seq);
        if table.in_flight.is_empty() {
            table.releases.clear();
        }
    }
}

/// How one acquire attempt went.
pub(crate) enum Attempted {
    /// The key is ours: the lease.
    Granted(Arc<Lease>),
    /// Another value holds the key (for this much longer, if the store said).
    Held(Option<Duration>),
    /// The store refused the attempt: an earlier attempt of this client was aborted
    /// meanwhile (nothing was done; another attempt is not refused).
    Refused,
}

/// A key and value, with the hash under which a client keeps their lease. No `Debug`:
/// the value is a secret.
#[derive(Clone, Copy)]
pub(crate) struct Pair<'a> {
    pub(crate) key: &'a str,
    pub(crate) val: &'a str,
    hash: u64,
}

impl Pair<'_> {
    fn is(&self, lease: &Lease) -> bool {
        lease.key() == self.key && lease.value() == self.val
    }
}

impl Leases {
    pub(crate) fn new(backend: Backend, prefix: &str, label: &str) -> Self {
        let mut id = [0u8; 8];
        // A clock-derived id would do as well: it only has to differ between clients.
        if getrandom::fill(&mut id).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            id = (nanos ^ u64::from(std::process::id())).to_le_bytes();
        }
        Leases {
            backend,
            prefix: prefix.into(),
            label: label.into(),
            client_id: u64::from_le_bytes(id),
            next_attempt: AtomicU64::new(1),
            hasher: FastHash::new(),
            table: Mutex::default(),
        }
    }

    /// `key` and `val` with their hash in this client's table.
    pub(crate) fn pair<'a>(&self, key: &'a str, val: &'a str) -> Pair<'a> {
        Pair {
            key,
            val,
            hash: self.hasher.hash_one((key, val)),
        }
    }

    pub(crate) fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The label stored with this client's acquisitions (`""`: none).
    pub(crate) fn holder_label(&self) -> &str {
        &self.label
    }

    /// `key` as the store knows it: with the client's key prefix.
    pub(crate) fn store_key<'a>(&self, key: &'a str) -> std::borrow::Cow<'a, str> {
        if self.prefix.is_empty() {
            key.into()
        } else {
            [&*self.prefix, key].concat().into()
        }
    }

    /// `key` as the caller named it: without the client's key prefix.
    pub(crate) fn user_key<'a>(&self, key: &'a str) -> &'a str {
        &key[self.prefix.len()..]
    }

    /// A fresh attempt id.
    pub(crate) fn next_attempt(&self) -> AttemptId {
        AttemptId {
            client: self.client_id,
            seq: self.next_write(),
        }
    }

    /// The number of a write about to be sent (an acquire attempt or a refresh).
    fn next_write(&self) -> u64 {
        self.next_attempt.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether an abort of attempts on `key` for `val` may undo what they created, and if
    /// so, marks it as a release about to be sent: not while this client holds a lease
    /// of the pair (a same-value lock joined what they created: it is that lock now).
    pub(crate) fn may_undo(&self, key: &str, val: &str) -> bool {
        let pair = self.pair(key, val);
        let held = self.table.lock().find(pair);
        if held.is_some_and(|lease| !lease.is_lost()) {
            return false;
        }
        self.releasing(pair);
        true
    }

    /// A release of `pair` is about to be sent.
    fn releasing(&self, pair: Pair<'_>) {
        let order = self.next_write();
        let mut table = self.table.lock();
        let Some(&oldest) = table.in_flight.first() else {
            return; // every later attempt is sent after it
        };
        let mark = table.releases.entry(pair.hash).or_default();
        *mark = (*mark).max(order);
        if table.releases.len() > 2 * table.in_flight.len() + 16 {
            // Marks older than every attempt in flight can refuse none of them.
            table.releases.retain(|_, mark| *mark > oldest);
        }
    }

    /// Whether a release of `pair` was sent after write number `order` (an attempt still
    /// in flight).
    fn released_after(&self, pair: Pair<'_>, order: u64) -> bool {
        self.table
            .lock()
            .releases
            .get(&pair.hash)
            .is_some_and(|mark| *mark > order)
    }

    /// The store deleted `key` held by `val` on this client's behalf (an abort deleted
    /// what an attempt created): every handle of that lease knows it is lost.
    pub(crate) fn released(&self, key: &str, val: &str) {
        let lease = self.table.lock().find(self.pair(key, val));
        if let Some(lease) = lease {
            lease.mark_lost();
        }
    }

    /// One acquire attempt of `key` for `val`, sent at `sent`: the lease if the store
    /// granted it.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        pair: Pair<'_>,
        expiration: Duration,
        attempt: AttemptId,
        timeout: Duration,
        sent: Instant,
    ) -> Result<Attempted> {
        let until = valid_until(sent, expiration);
        // A same-value re-acquire may shorten the key (it re-arms to its own
        // expiration) whether or not its answer comes back: the lease held counts on no
        // more from now on.
        let held = {
            let mut table = self.table.lock();
            table.in_flight.insert(attempt.seq);
            table.find(pair)
        };
        let _in_flight = InFlight {
            leases: self,
            seq: attempt.seq,
        };
        if let Some(held) = held {
            held.expect(until);
        }
        let acquired = self
            .backend
            .acquire(
                pair.key,
                pair.val,
                expiration,
                attempt,
                &self.label,
                timeout,
            )
            .await?;
        Ok(match acquired {
            // Granted before a release of this client deleted it (the attempt re-armed a
            // key an unlock then deleted): not believed; the next attempt tells.
            Acquire::Acquired(_) if self.released_after(pair, attempt.seq) => Attempted::Refused,
            Acquire::Acquired(token) => {
                Attempted::Granted(self.hold(pair, token, until, attempt.seq))
            }
            Acquire::Held(ttl) => Attempted::Held(ttl),
            Acquire::Refused => Attempted::Refused,
        })
    }

    /// The lease of `pair` after write number `order` was granted `token`, arming the
    /// key until `until`: the lease already held if it has that token (a same-value
    /// re-acquire, which re-armed the key to its own expiration), else a new one (an
    /// earlier lease with another token is over: its incarnation expired or was released,
    /// and the key was taken afresh).
    fn hold(
        self: &Arc<Self>,
        pair: Pair<'_>,
        token: u64,
        until: Instant,
        order: u64,
    ) -> Arc<Lease> {
        let mut table = self.table.lock();
        if let Some(held) = table.find(pair) {
            if held.token == token && held.confirm(order, until) {
                return held;
            }
            held.mark_lost(); // superseded
        }
        let lease = Arc::new(Lease {
            leases: Arc::clone(self),
            key_value: [pair.key, pair.val].concat().into(),
            key_len: pair.key.len(),
            token,
            state: Mutex::new(State {
                valid_until: until,
                order,
                lost: false,
            }),
            changed: Notify::new(),
            renewal: Mutex::new(None),
        });
        table.add(pair, &lease);
        telemetry::held(self.backend.kind(), 1.0);
        lease
    }
}

/// A lease on a key, shared by every [`Lock`](crate::Lock) handle of one key and value.
pub(crate) struct Lease {
    leases: Arc<Leases>,
    /// The key followed by the value, in one allocation.
    key_value: Box<str>,
    key_len: usize,
    token: u64,
    /// Every change (extended, lost) is followed by a wake-up of `changed`.
    state: Mutex<State>,
    /// Wakes [`Lease::lost`] waiters when `state` changed. Part of the lease's own
    /// allocation: a lock costs no channel.
    changed: Notify,
    /// The running auto-refresh task, if any; unlocking stops it first, and it ends
    /// when the last handle of the lease is dropped.
    renewal: Mutex<Option<Renewal>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    /// The lease is certainly held until this instant (monotonic clock).
    valid_until: Instant,
    /// The number of the write that set `valid_until` (see [`Leases::next_write`]).
    order: u64,
    /// A store confirmed the key is gone or owned by someone else, or it was unlocked.
    lost: bool,
}

/// A running renewal task: its id (so that only its own handle stops it) and the task.
pub(crate) struct Renewal {
    pub(crate) id: u64,
    pub(crate) task: JoinHandle<()>,
}

impl Renewal {
    /// Stop the task and wait until it is gone: nothing it sent can follow this.
    pub(crate) async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

impl Lease {
    /// The key as the store knows it (with the client's key prefix).
    pub(crate) fn key(&self) -> &str {
        &self.key_value[..self.key_len]
    }

    /// The key as the caller named it.
    pub(crate) fn user_key(&self) -> &str {
        self.leases.user_key(self.key())
    }

    pub(crate) fn value(&self) -> &str {
        &self.key_value[self.key_len..]
    }

    pub(crate) fn token(&self) -> u64 {
        self.token
    }

    pub(crate) fn backend(&self) -> &Backend {
        &self.leases.backend
    }

    /// How much longer the lease is certainly held; `None` once it may have lapsed or
    /// was confirmed lost.
    pub(crate) fn valid_for(&self) -> Option<Duration> {
        let state = *self.state.lock();
        if state.lost {
            return None;
        }
        let left = state.valid_until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Whether the lease must be considered lost (confirmed, or its validity ran out).
    pub(crate) fn is_lost(&self) -> bool {
        self.valid_for().is_none()
    }

    /// Resolves once the lease is confirmed lost or its validity deadline passes.
    pub(crate) async fn lost(&self) {
        loop {
            // Registered before the state is read, so that a change made after the read
            // (`notify_waiters` wakes only registered waiters) is not missed.
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            let state = *self.state.lock();
            if state.lost || Instant::now() >= state.valid_until {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(state.valid_until) => {}
                _ = changed => {}
            }
        }
    }

    /// Write number `order`, which armed the key until `until`, was confirmed: unless a
    /// later write was confirmed already, the store holds the key until then — sooner or
    /// later than before (a write sets the expiration it was given). `false` if the lease
    /// was already lost: a lost lease stays lost.
    fn confirm(&self, order: u64, until: Instant) -> bool {
        let changed = {
            let mut state = self.state.lock();
            if state.lost {
                return false;
            }
            let change = order > state.order && until != state.valid_until;
            if order > state.order {
                state.order = order;
                state.valid_until = until;
            }
            change
        };
        if changed {
            self.changed.notify_waiters();
        }
        true
    }

    /// A write that sets the key's expiration so that it lasts at least until `until` is
    /// about to be sent: until it is confirmed, the lease counts on no more than that
    /// (if its answer is lost, the key may have been shortened all the same).
    fn expect(&self, until: Instant) {
        let changed = {
            let mut state = self.state.lock();
            let change = !state.lost && until < state.valid_until;
            if change {
                state.valid_until = until;
            }
            change
        };
        if changed {
            self.changed.notify_waiters();
        }
    }

    /// The store confirmed the lease's key is gone or held by another value (or
    /// another incarnation superseded it): the lease is over.
    pub(crate) fn mark_lost(&self) {
        if self.end() {
            telemetry::lost(self.backend().kind(), self.user_key(), self.token);
        }
    }

    /// The lease is over (lost, or unlocked); `true` if it was not already.
    fn end(&self) -> bool {
        let newly = !std::mem::replace(&mut self.state.lock().lost, true);
        if newly {
            self.changed.notify_waiters();
        }
        newly
    }

    /// One owner-checked refresh to exactly `expiration` (shorter or longer), bounded by
    /// `timeout`; once confirmed, every handle of the lease counts its validity from it. `NotHeld` is returned without marking the lease lost: the caller does
    /// that (after reporting it, for renewal).
    pub(crate) async fn refresh(&self, expiration: Duration, timeout: Duration) -> Result<()> {
        let span = telemetry::op_span(
            self.backend().kind(),
            "refresh",
            self.user_key(),
            self.token,
        );
        if span.is_disabled() {
            return self.refresh_in(expiration, timeout).await;
        }
        self.refresh_in(expiration, timeout).instrument(span).await
    }

    async fn refresh_in(&self, expiration: Duration, timeout: Duration) -> Result<()> {
        let order = self.leases.next_write();
        let sent = Instant::now();
        let until = valid_until(sent, expiration);
        self.expect(until);
        let refreshed = self
            .backend()
            .refresh(self.key(), self.value(), expiration, timeout)
            .await?;
        if !refreshed {
            return Err(Error::NotHeld);
        }
        self.confirm(order, until);
        Ok(())
    }

    /// The key's remaining time to live; `None` (and the lease is lost) if this value no
    /// longer holds it.
    pub(crate) async fn ttl(&self, timeout: Duration) -> Result<Option<Duration>> {
        let ttl = self
            .backend()
            .ttl(self.key(), self.value(), timeout)
            .await?;
        if ttl.is_none() {
            self.mark_lost();
        }
        Ok(ttl)
    }

    /// Stop renewal, then delete the key if the lease's value holds it (any handle of
    /// the value, in any client, releases it); the lease is over either way. It is over before the
    /// release is sent: once the release may land, no handle of the lease may go on
    /// believing in it (whether or not the caller waits for the answer).
    pub(crate) async fn release(&self, timeout: Duration) -> Result<()> {
        let span = telemetry::op_span(self.backend().kind(), "unlock", self.user_key(), self.token);
        if span.is_disabled() {
            return self.release_in(timeout).await;
        }
        self.release_in(timeout).instrument(span).await
    }

    async fn release_in(&self, timeout: Duration) -> Result<()> {
        let renewal = self.renewal.lock().take();
        if let Some(renewal) = renewal {
            renewal.stop().await;
        }
        self.end();
        self.leases
            .releasing(self.leases.pair(self.key(), self.value()));
        let released = self
            .backend()
            .release(self.key(), self.value(), timeout)
            .await;
        if released? {
            Ok(())
        } else {
            Err(Error::NotHeld)
        }
    }

    /// Fenced access with this lease's token, as its holder.
    pub(crate) async fn fenced(
        &self,
        resource: &str,
        write: Option<&str>,
        timeout: Duration,
    ) -> Result<Option<String>> {
        let resource = self.leases.store_key(resource);
        let access = Fence {
            resource: &resource,
            token: self.token,
            holder: Some(self.value()),
            write,
        };
        fenced(self.backend(), &access, timeout).await
    }

    /// Install `renewal` as the lease's renewal task, stopping the one before it.
    pub(crate) fn set_renewal(&self, renewal: Renewal) {
        if let Some(previous) = self.renewal.lock().replace(renewal) {
            previous.task.abort();
        }
    }

    /// The renewal task `id`, if it is still the lease's.
    pub(crate) fn take_renewal(&self, id: u64) -> Option<Renewal> {
        let mut slot = self.renewal.lock();
        if slot.as_ref().is_some_and(|r| r.id == id) {
            slot.take()
        } else {
            None
        }
    }

    /// Whether renewal task `id` is the lease's and still running.
    pub(crate) fn renewing(&self, id: u64) -> bool {
        self.renewal
            .lock()
            .as_ref()
            .is_some_and(|r| r.id == id && !r.task.is_finished())
    }

    #[cfg(test)]
    pub(crate) fn has_renewal(&self) -> bool {
        self.renewal.lock().is_some()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // The last handle is gone: nobody can unlock the key or read the renewal's
        // failure any more, so renewal ends and the key expires by itself.
        if let Some(renewal) = self.renewal.get_mut().take() {
            renewal.task.abort();
        }
        telemetry::held(self.backend().kind(), -1.0);
    }
}

/// One fenced access, mapping a refusal to [`Error::Fenced`].
pub(crate) async fn fenced(
    backend: &Backend,
    access: &Fence<'_>,
    timeout: Duration,
) -> Result<Option<String>> {
    let outcome = backend.fenced(access, timeout).await?;
    outcome.map_err(|highest| Error::Fenced {
        token: access.token,
        highest,
    })
}
